// Why this file exists: weight rows stored as floats (F32, F16, BF16): decoding a row to f32 and
// dotting one with f32 activations. Such rows gain nothing from int8 activations, so the fast path
// sends them here too (implementation.hpp). Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>

#include "bora/quant/bf16.hpp"
#include "bora/quant/f16.hpp"

#if defined(BORA_OPS_FLOAT_WEIGHTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_FLOAT_WEIGHTS_INL_H_
#undef BORA_OPS_FLOAT_WEIGHTS_INL_H_
#else
#define BORA_OPS_FLOAT_WEIGHTS_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/target-inl.h"
#include "bora/ops/vector-inl.h"

BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// F32 rows may sit at any byte offset in a hostile file, so they are copied, never cast.
inline void CopyF32Row(const uint8_t* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

inline void DecodeHalfRow(const uint8_t* src, float* dst, int64_t n, bool is_bf16) {
  const FullF32 df;
  const hn::Rebind<uint16_t, FullF32> du16;
  const hn::Rebind<uint32_t, FullF32> du32;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const uint16_t* halves = reinterpret_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (is_bf16) {
    for (; i + lanes <= n; i += lanes) {
      const auto wide = hn::PromoteTo(du32, hn::LoadU(du16, halves + i));
      hn::StoreU(hn::BitCast(df, hn::ShiftLeft<16>(wide)), df, dst + i);
    }
    for (; i < n; ++i) dst[i] = quant::bf16_to_f32(quant::load_u16_le(src + 2 * i));
  } else {
    for (; i + lanes <= n; i += lanes) {
      hn::StoreU(HalfBitsToF32(df, hn::PromoteTo(du32, hn::LoadU(du16, halves + i))), df, dst + i);
    }
    for (; i < n; ++i) dst[i] = quant::load_f16(src + 2 * i);
  }
}

HWY_INLINE float HalfRowDot(const uint8_t* row, const float* x, int64_t n, bool is_bf16) {
  // Decoding in chunks through a small stack buffer keeps the code shared with DecodeHalfRow.
  constexpr int64_t kChunk = 256;
  HWY_ALIGN float chunk_values[kChunk];
  float total = 0.0f;
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t count = (n - i < kChunk) ? n - i : kChunk;
    DecodeHalfRow(row + 2 * i, chunk_values, count, is_bf16);
    total += DotKernel(chunk_values, x + i, count);
  }
  return total;
}

HWY_INLINE float F32RowDot(const uint8_t* row, const float* x, int64_t n) {
  if (reinterpret_cast<uintptr_t>(row) % alignof(float) == 0) {
    return DotKernel(reinterpret_cast<const float*>(row), x, n);
  }
  constexpr int64_t kChunk = 256;
  HWY_ALIGN float chunk_values[kChunk];
  float total = 0.0f;
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t count = (n - i < kChunk) ? n - i : kChunk;
    CopyF32Row(row + 4 * i, chunk_values, count);
    total += DotKernel(chunk_values, x + i, count);
  }
  return total;
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_FLOAT_WEIGHTS_INL_H_ toggle
