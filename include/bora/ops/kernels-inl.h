// Why this file exists: the SIMD bodies of every function in ops.hpp, written once with Highway and
// compiled once per CPU target by implementation.hpp (foreach_target.h re-includes this file, hence
// the toggle guard instead of a plain include guard). Nothing here is called directly: ops.hpp's
// functions dispatch to the best target the CPU supports.

// Headers that are not per-target keep ordinary include guards and are included once, outside the
// toggle.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bora/quant/dequantize.hpp"
#include "bora/quant/q8_activations.hpp"
#include "bora/quant/weight_type.hpp"

#ifndef BORA_OPS_KERNELS_SHARED_CONSTANTS_
#define BORA_OPS_KERNELS_SHARED_CONSTANTS_
namespace bora {
namespace ops {
namespace kernels {
// Rows of weights matmul_f32 dequantizes at once; its caller provides a scratch of this many rows.
constexpr int64_t kMatmulTileRows = 4;
// Tokens the VNNI prefill kernel packs at once (two 512-bit registers of 16), the fewest tokens for
// which it beats the row-at-a-time kernel, and the scratch it needs for rows of n values.
constexpr int64_t kPrefillTokens = 32;
constexpr int64_t kPrefillMinTokens = 8;
inline int64_t prefill_scratch_bytes(int64_t n) { return kPrefillTokens * n + 4 * (n / 32) * kPrefillTokens * 4; }
// The decode kernels' scratch for rows of n values: the Q4_0 window layout of two activation levels
// (low and high nibble copies, 18 bytes per 32 values each).
inline int64_t decode_scratch_bytes(int64_t n) { return 2 * 2 * (n / 32) * 18; }
}  // namespace kernels
}  // namespace ops
}  // namespace bora
#endif

#if defined(BORA_OPS_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_KERNELS_INL_H_
#undef BORA_OPS_KERNELS_INL_H_
#else
#define BORA_OPS_KERNELS_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

// VNNI (vpdpbusd) is part of every x86 target from AVX3_DL up (Highway only selects it on CPUs with
// VNNI), but Highway 1.0.3 names only "avxvnni" in that target's attributes, so the EVEX form's
// feature is added to the target's own string. It must be one string: Clang keeps only one target
// attribute per function, so a second push of "avx512vnni" alone would be ignored. Repeating a
// feature that a newer Highway already names (AVX3_ZEN4, AVX3_SPR, ...) is harmless.
#undef BORA_OPS_BEFORE_NAMESPACE
#undef BORA_OPS_AFTER_NAMESPACE
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL && defined(HWY_TARGET_STR)
#define BORA_OPS_BEFORE_NAMESPACE() \
  HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR ",avx512vnni") static_assert(true, "requires a semicolon")
#define BORA_OPS_AFTER_NAMESPACE() HWY_POP_ATTRIBUTES static_assert(true, "requires a semicolon")
#else
#define BORA_OPS_BEFORE_NAMESPACE() HWY_BEFORE_NAMESPACE()
#define BORA_OPS_AFTER_NAMESPACE() HWY_AFTER_NAMESPACE()
#endif

BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Elementwise kernels use full vectors. Block decoders use at most 16 float lanes so that a vector
// never straddles a 16-value sub-block (the finest scale granularity, Q6_K's) on any target.
using FullF32 = hn::ScalableTag<float>;
using BlockF32 = hn::CappedTag<float, 16>;

inline const char* TargetNameKernel() { return hwy::TargetName(HWY_TARGET); }

// ---- small vector kernels ----------------------------------------------------------------------

inline float DotKernel(const float* a, const float* b, int64_t n) {
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d), sum2 = hn::Zero(d), sum3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    sum0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), sum0);
    sum1 = hn::MulAdd(hn::LoadU(d, a + i + lanes), hn::LoadU(d, b + i + lanes), sum1);
    sum2 = hn::MulAdd(hn::LoadU(d, a + i + 2 * lanes), hn::LoadU(d, b + i + 2 * lanes), sum2);
    sum3 = hn::MulAdd(hn::LoadU(d, a + i + 3 * lanes), hn::LoadU(d, b + i + 3 * lanes), sum3);
  }
  for (; i + lanes <= n; i += lanes) sum0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), sum0);
  sum0 = hn::Add(hn::Add(sum0, sum1), hn::Add(sum2, sum3));
  float total = hn::GetLane(hn::SumOfLanes(d, sum0));
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

inline void AxpyKernel(float alpha, const float* x, float* y, int64_t n) {
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto va = hn::Set(d, alpha);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(hn::MulAdd(va, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

inline void ScaleKernel(float* x, float alpha, int64_t n) {
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto va = hn::Set(d, alpha);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::Mul(hn::LoadU(d, x + i), va), d, x + i);
  for (; i < n; ++i) x[i] *= alpha;
}

inline void RmsNormKernel(const float* x, const float* weight, float eps, int64_t n, float* y) {
  if (n <= 0) return;
  const float mean_square = DotKernel(x, x, n) / static_cast<float>(n);
  const float inverse_rms = 1.0f / std::sqrt(mean_square + eps);
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto vinv = hn::Set(d, inverse_rms);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto normalized = hn::Mul(hn::LoadU(d, x + i), vinv);
    hn::StoreU(hn::Mul(normalized, hn::LoadU(d, weight + i)), d, y + i);
  }
  for (; i < n; ++i) y[i] = (x[i] * inverse_rms) * weight[i];
}

inline void SoftmaxKernel(float* x, int64_t n) {
  if (n <= 0) return;
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  float max_value = x[0];
  int64_t i = 0;
  if (n >= lanes) {
    auto vmax = hn::LoadU(d, x);
    for (i = lanes; i + lanes <= n; i += lanes) vmax = hn::Max(vmax, hn::LoadU(d, x + i));
    max_value = hn::GetLane(hn::MaxOfLanes(d, vmax));
  }
  for (; i < n; ++i) max_value = std::fmax(max_value, x[i]);

  // hn::Exp returns exactly 0 below -104, so masked (-inf) entries vanish as they should.
  const auto vmax = hn::Set(d, max_value);
  auto vsum = hn::Zero(d);
  for (i = 0; i + lanes <= n; i += lanes) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vmax));
    vsum = hn::Add(vsum, e);
    hn::StoreU(e, d, x + i);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  ScaleKernel(x, 1.0f / sum, n);
}

inline void SiluMulKernel(float* gate, const float* up, int64_t n) {
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto one = hn::Set(d, 1.0f);
  // hn::Exp is only valid up to +104; exp(88) is already ~1.7e38, where silu has reached 0 anyway.
  const auto exp_limit = hn::Set(d, 88.0f);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto g = hn::LoadU(d, gate + i);
    const auto e = hn::Exp(d, hn::Min(hn::Neg(g), exp_limit));
    const auto silu = hn::Div(g, hn::Add(one, e));
    hn::StoreU(hn::Mul(silu, hn::LoadU(d, up + i)), d, gate + i);
  }
  for (; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(std::fmin(-gate[i], 88.0f))) * up[i];
}

// ---- half precision ----------------------------------------------------------------------------
// Integer-only conversions (same algorithm as quant/f16.hpp): Highway 1.0.3's emulated f16
// Promote/Demote on targets without F16C truncate and mishandle inf/NaN, and these are exact
// everywhere and independent of denormal-flushing modes.

template <class DF>
HWY_INLINE hn::Vec<DF> HalfBitsToF32(DF df, hn::Vec<hn::Rebind<uint32_t, DF>> half) {
  const hn::Rebind<uint32_t, DF> du;
  const hn::Rebind<int32_t, DF> di;
  const auto sign = hn::ShiftLeft<16>(hn::And(half, hn::Set(du, 0x8000u)));
  const auto magnitude = hn::And(half, hn::Set(du, 0x7FFFu));
  const auto rebias = hn::Set(du, 0x38000000u);  // (127 - 15) << 23
  const auto normal = hn::Add(hn::ShiftLeft<13>(magnitude), rebias);
  const auto inf_nan = hn::Add(normal, rebias);  // exponent 31 becomes 255
  const auto subnormal = hn::BitCast(
      du, hn::Mul(hn::ConvertTo(df, hn::BitCast(di, magnitude)), hn::Set(df, 1.0f / 16777216.0f)));
  const auto mag_i = hn::BitCast(di, magnitude);
  auto bits = hn::IfThenElse(hn::RebindMask(du, hn::Lt(mag_i, hn::Set(di, 0x400))), subnormal, normal);
  bits = hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, 0x7BFF))), inf_nan, bits);
  return hn::BitCast(df, hn::Or(bits, sign));
}

template <class DF>
HWY_INLINE hn::Vec<hn::Rebind<int32_t, DF>> F32ToHalfBits(DF df, hn::Vec<DF> v) {
  const hn::Rebind<uint32_t, DF> du;
  const hn::Rebind<int32_t, DF> di;
  const auto bits = hn::BitCast(du, v);
  const auto sign = hn::ShiftRight<16>(hn::And(bits, hn::Set(du, 0x80000000u)));
  const auto magnitude = hn::And(bits, hn::Set(du, 0x7FFFFFFFu));
  const auto mag_i = hn::BitCast(di, magnitude);
  const auto odd = hn::And(hn::ShiftRight<13>(magnitude), hn::Set(du, 1u));
  const auto normal = hn::ShiftRight<13>(hn::Add(hn::Add(magnitude, hn::Set(du, 0xC8000FFFu)), odd));
  const auto shifted = hn::Add(hn::BitCast(df, magnitude), hn::Set(df, 0.5f));
  const auto subnormal = hn::Sub(hn::BitCast(du, shifted), hn::Set(du, 0x3F000000u));
  const auto nan = hn::Or(hn::Set(du, 0x7E00u), hn::And(hn::ShiftRight<13>(magnitude), hn::Set(du, 0x3FFu)));
  const auto inf_or_nan =
      hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, 0x7F800000))), nan, hn::Set(du, 0x7C00u));
  auto result = hn::IfThenElse(hn::RebindMask(du, hn::Lt(mag_i, hn::Set(di, 0x38800000))), subnormal, normal);
  result = hn::IfThenElse(hn::RebindMask(du, hn::Gt(mag_i, hn::Set(di, 0x477FEFFF))), inf_or_nan, result);
  return hn::BitCast(di, hn::Or(result, sign));
}

inline void F16ToF32Kernel(const uint16_t* x, float* y, int64_t n) {
  const FullF32 df;
  const hn::Rebind<uint16_t, FullF32> du16;
  const hn::Rebind<uint32_t, FullF32> du32;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(HalfBitsToF32(df, hn::PromoteTo(du32, hn::LoadU(du16, x + i))), df, y + i);
  }
  for (; i < n; ++i) y[i] = quant::f16_to_f32(x[i]);
}

inline void F32ToF16Kernel(const float* x, uint16_t* y, int64_t n) {
  const FullF32 df;
  const hn::Rebind<uint16_t, FullF32> du16;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(hn::DemoteTo(du16, F32ToHalfBits(df, hn::LoadU(df, x + i))), du16, y + i);
  }
  for (; i < n; ++i) y[i] = quant::f32_to_f16(x[i]);
}

// ---- block decoders ------------------------------------------------------------------------------
// Each writes one block's values as floats, exactly as the scalar reference in quant/ does (every
// product is exact in f32, so the SIMD and scalar results are bit-identical).

template <class DF>
HWY_INLINE hn::Vec<DF> BytesToFloat(DF df, const uint8_t* p) {
  const hn::Rebind<uint8_t, DF> du8;
  const hn::Rebind<int32_t, DF> di;
  return hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(du8, p)));
}

struct Q8_0Decoder {
  static constexpr int kElements = 32;
  static constexpr int kBytes = 34;
  static HWY_INLINE void Decode(const uint8_t* block, float* HWY_RESTRICT out) {
    const BlockF32 df;
    const hn::Rebind<int8_t, BlockF32> di8;
    const hn::Rebind<int32_t, BlockF32> di;
    const size_t lanes = hn::Lanes(df);
    const auto d = hn::Set(df, quant::load_f16(block));
    const int8_t* q = reinterpret_cast<const int8_t*>(block + 2);
    for (size_t i = 0; i < 32; i += lanes) {
      const auto values = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(di8, q + i)));
      hn::Store(hn::Mul(d, values), df, out + i);
    }
  }
};

struct Q4_0Decoder {
  static constexpr int kElements = 32;
  static constexpr int kBytes = 18;
  static HWY_INLINE void Decode(const uint8_t* block, float* HWY_RESTRICT out) {
    const BlockF32 df;
    const hn::Rebind<uint8_t, BlockF32> du8;
    const hn::Rebind<int32_t, BlockF32> di;
    const size_t lanes = hn::Lanes(df);
    const auto d = hn::Set(df, quant::load_f16(block));
    const auto eight = hn::Set(di, 8);
    const auto low_mask = hn::Set(di, 15);
    const uint8_t* qs = block + 2;
    for (size_t j = 0; j < 16; j += lanes) {
      const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, qs + j));
      const auto low = hn::Sub(hn::And(bytes, low_mask), eight);
      const auto high = hn::Sub(hn::ShiftRight<4>(bytes), eight);
      hn::Store(hn::Mul(d, hn::ConvertTo(df, low)), df, out + j);
      hn::Store(hn::Mul(d, hn::ConvertTo(df, high)), df, out + 16 + j);
    }
  }
};

// Q4_K and Q5_K share the sub-block arithmetic: value = (d*sc) * q - (dmin*m), written as one
// fused multiply-add; both products are exact, so the single rounding matches the scalar code.
template <bool kHasHighBit>
struct KQuantDecoder {
  static constexpr int kElements = 256;
  static constexpr int kBytes = kHasHighBit ? 176 : 144;
  static HWY_INLINE void Decode(const uint8_t* block, float* HWY_RESTRICT out) {
    const BlockF32 df;
    const hn::Rebind<uint8_t, BlockF32> du8;
    const hn::Rebind<int32_t, BlockF32> di;
    const size_t lanes = hn::Lanes(df);
    const float d = quant::load_f16(block);
    const float dmin = quant::load_f16(block + 2);
    const uint8_t* scales = block + 4;
    const uint8_t* qh = block + 16;
    const uint8_t* qs = block + (kHasHighBit ? 48 : 16);
    const auto low_mask = hn::Set(di, 15);
    const auto one = hn::Set(di, 1);
    for (int chunk = 0; chunk < 4; ++chunk) {
      int sc_low = 0, m_low = 0, sc_high = 0, m_high = 0;
      quant::unpack_k_scale_min(scales, 2 * chunk, &sc_low, &m_low);
      quant::unpack_k_scale_min(scales, 2 * chunk + 1, &sc_high, &m_high);
      const auto step_low = hn::Set(df, d * static_cast<float>(sc_low));
      const auto offset_low = hn::Set(df, dmin * static_cast<float>(m_low));
      const auto step_high = hn::Set(df, d * static_cast<float>(sc_high));
      const auto offset_high = hn::Set(df, dmin * static_cast<float>(m_high));
      const uint8_t* bytes = qs + 32 * chunk;
      float* out_low = out + 64 * chunk;
      float* out_high = out_low + 32;
      for (size_t l = 0; l < 32; l += lanes) {
        const auto packed = hn::PromoteTo(di, hn::LoadU(du8, bytes + l));
        auto low = hn::And(packed, low_mask);
        auto high = hn::ShiftRight<4>(packed);
        if (kHasHighBit) {
          const auto high_bits = hn::PromoteTo(di, hn::LoadU(du8, qh + l));
          low = hn::Or(low, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(high_bits, 2 * chunk), one)));
          high = hn::Or(high, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(high_bits, 2 * chunk + 1), one)));
        }
        hn::Store(hn::MulSub(step_low, hn::ConvertTo(df, low), offset_low), df, out_low + l);
        hn::Store(hn::MulSub(step_high, hn::ConvertTo(df, high), offset_high), df, out_high + l);
      }
    }
  }
};

struct Q6_KDecoder {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 210;
  static HWY_INLINE void Decode(const uint8_t* block, float* HWY_RESTRICT out) {
    const BlockF32 df;
    const hn::Rebind<uint8_t, BlockF32> du8;
    const hn::Rebind<int32_t, BlockF32> di;
    const size_t lanes = hn::Lanes(df);
    const float d = quant::load_f16(block + 208);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
    const auto low_mask = hn::Set(di, 15);
    const auto two_bits = hn::Set(di, 3);
    const auto bias = hn::Set(di, 32);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = block + 64 * half;
      const uint8_t* qh = block + 128 + 32 * half;
      for (int k = 0; k < 4; ++k) {
        const uint8_t* low_bytes = ql + 32 * (k % 2);
        for (size_t l = 0; l < 32; l += lanes) {
          const auto packed = hn::PromoteTo(di, hn::LoadU(du8, low_bytes + l));
          const auto low = (k < 2) ? hn::And(packed, low_mask) : hn::ShiftRight<4>(packed);
          const auto high_bits = hn::PromoteTo(di, hn::LoadU(du8, qh + l));
          const auto high = hn::And(hn::ShiftRightSame(high_bits, 2 * k), two_bits);
          const auto q = hn::Sub(hn::Or(low, hn::ShiftLeft<4>(high)), bias);
          const int sub_block = 8 * half + 2 * k + static_cast<int>(l / 16);
          const auto step = hn::Set(df, d * static_cast<float>(scales[sub_block]));
          hn::Store(hn::Mul(step, hn::ConvertTo(df, q)), df, out + 128 * half + 32 * k + l);
        }
      }
    }
  }
};

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

template <class Decoder>
HWY_INLINE void DecodeBlockRow(const uint8_t* src, float* dst, int64_t n) {
  HWY_ALIGN float block_values[Decoder::kElements];
  const int64_t blocks = n / Decoder::kElements;
  for (int64_t b = 0; b < blocks; ++b) {
    Decoder::Decode(src + b * Decoder::kBytes, block_values);
    std::memcpy(dst + b * Decoder::kElements, block_values, sizeof(block_values));
  }
}

// SIMD dequantization of one row (n a whole number of blocks).
inline void DequantizeRowKernel(WeightType type, const uint8_t* src, float* dst, int64_t n) {
  switch (type) {
    case WeightType::kF32: CopyF32Row(src, dst, n); return;
    case WeightType::kF16: DecodeHalfRow(src, dst, n, false); return;
    case WeightType::kBF16: DecodeHalfRow(src, dst, n, true); return;
    case WeightType::kQ8_0: DecodeBlockRow<Q8_0Decoder>(src, dst, n); return;
    case WeightType::kQ4_0: DecodeBlockRow<Q4_0Decoder>(src, dst, n); return;
    case WeightType::kQ4_K: DecodeBlockRow<KQuantDecoder<false>>(src, dst, n); return;
    case WeightType::kQ5_K: DecodeBlockRow<KQuantDecoder<true>>(src, dst, n); return;
    case WeightType::kQ6_K: DecodeBlockRow<Q6_KDecoder>(src, dst, n); return;
  }
}

// ---- matrix x vector -----------------------------------------------------------------------------

// One row of a block-quantized matrix dotted with x: each block is decoded into an L1-resident
// scratch array and immediately consumed, so the weights are read exactly once.
template <class Decoder>
HWY_INLINE float BlockRowDot(const uint8_t* row, const float* x, int64_t n) {
  const BlockF32 df;
  const size_t lanes = hn::Lanes(df);
  HWY_ALIGN float block_values[Decoder::kElements];
  auto sum0 = hn::Zero(df), sum1 = hn::Zero(df);
  const int64_t blocks = n / Decoder::kElements;
  for (int64_t b = 0; b < blocks; ++b) {
    Decoder::Decode(row + b * Decoder::kBytes, block_values);
    const float* xb = x + b * Decoder::kElements;
    size_t i = 0;
    for (; i + 2 * lanes <= static_cast<size_t>(Decoder::kElements); i += 2 * lanes) {
      sum0 = hn::MulAdd(hn::Load(df, block_values + i), hn::LoadU(df, xb + i), sum0);
      sum1 = hn::MulAdd(hn::Load(df, block_values + i + lanes), hn::LoadU(df, xb + i + lanes), sum1);
    }
    for (; i < static_cast<size_t>(Decoder::kElements); i += lanes) {
      sum0 = hn::MulAdd(hn::Load(df, block_values + i), hn::LoadU(df, xb + i), sum0);
    }
  }
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(sum0, sum1)));
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

inline float RowDotKernel(WeightType type, const uint8_t* row, const float* x, int64_t n) {
  switch (type) {
    case WeightType::kF32: return F32RowDot(row, x, n);
    case WeightType::kF16: return HalfRowDot(row, x, n, false);
    case WeightType::kBF16: return HalfRowDot(row, x, n, true);
    case WeightType::kQ8_0: return BlockRowDot<Q8_0Decoder>(row, x, n);
    case WeightType::kQ4_0: return BlockRowDot<Q4_0Decoder>(row, x, n);
    case WeightType::kQ4_K: return BlockRowDot<KQuantDecoder<false>>(row, x, n);
    case WeightType::kQ5_K: return BlockRowDot<KQuantDecoder<true>>(row, x, n);
    case WeightType::kQ6_K: return BlockRowDot<Q6_KDecoder>(row, x, n);
  }
  return 0.0f;
}

template <class RowDot>
HWY_INLINE void MatvecRows(const RowDot& row_dot, const uint8_t* data, uint64_t row_bytes,
                           const float* x, float* y, int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) y[r] = row_dot(data + static_cast<uint64_t>(r) * row_bytes, x);
}

inline void MatvecKernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                         const float* x, float* y, int64_t row_begin, int64_t row_end) {
  // The switch sits outside the row loop so each loop is specialized for one block format.
  switch (type) {
    case WeightType::kF32:
      MatvecRows([n](const uint8_t* row, const float* v) { return F32RowDot(row, v, n); }, data,
                 row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kF16:
      MatvecRows([n](const uint8_t* row, const float* v) { return HalfRowDot(row, v, n, false); },
                 data, row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kBF16:
      MatvecRows([n](const uint8_t* row, const float* v) { return HalfRowDot(row, v, n, true); },
                 data, row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kQ8_0:
      MatvecRows([n](const uint8_t* row, const float* v) { return BlockRowDot<Q8_0Decoder>(row, v, n); },
                 data, row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kQ4_0:
      MatvecRows([n](const uint8_t* row, const float* v) { return BlockRowDot<Q4_0Decoder>(row, v, n); },
                 data, row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kQ4_K:
      MatvecRows(
          [n](const uint8_t* row, const float* v) { return BlockRowDot<KQuantDecoder<false>>(row, v, n); },
          data, row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kQ5_K:
      MatvecRows(
          [n](const uint8_t* row, const float* v) { return BlockRowDot<KQuantDecoder<true>>(row, v, n); },
          data, row_bytes, x, y, row_begin, row_end);
      return;
    case WeightType::kQ6_K:
      MatvecRows([n](const uint8_t* row, const float* v) { return BlockRowDot<Q6_KDecoder>(row, v, n); },
                 data, row_bytes, x, y, row_begin, row_end);
      return;
  }
}

// ---- matrix x several tokens ---------------------------------------------------------------------

// Dots four weight rows with one token at once: each activation vector is loaded once for four
// multiply-adds, and the four rows stay in L1/L2 while every token streams past them.
HWY_INLINE void Dot4Rows(const float* w0, const float* w1, const float* w2, const float* w3,
                         const float* x, int64_t n, float* out) {
  const FullF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d), sum2 = hn::Zero(d), sum3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto xv = hn::LoadU(d, x + i);
    sum0 = hn::MulAdd(hn::LoadU(d, w0 + i), xv, sum0);
    sum1 = hn::MulAdd(hn::LoadU(d, w1 + i), xv, sum1);
    sum2 = hn::MulAdd(hn::LoadU(d, w2 + i), xv, sum2);
    sum3 = hn::MulAdd(hn::LoadU(d, w3 + i), xv, sum3);
  }
  out[0] = hn::GetLane(hn::SumOfLanes(d, sum0));
  out[1] = hn::GetLane(hn::SumOfLanes(d, sum1));
  out[2] = hn::GetLane(hn::SumOfLanes(d, sum2));
  out[3] = hn::GetLane(hn::SumOfLanes(d, sum3));
  for (; i < n; ++i) {
    out[0] += w0[i] * x[i];
    out[1] += w1[i] * x[i];
    out[2] += w2[i] * x[i];
    out[3] += w3[i] * x[i];
  }
}

using kernels::kMatmulTileRows;

// `scratch` holds kMatmulTileRows * n floats: each weight row is dequantized once per call and
// reused for every token.
inline void MatmulKernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                         const float* x, int64_t n_tokens, float* y, int64_t y_stride,
                         int64_t row_begin, int64_t row_end, float* scratch) {
  for (int64_t r = row_begin; r < row_end; r += kMatmulTileRows) {
    const int64_t tile_rows = (row_end - r < kMatmulTileRows) ? row_end - r : kMatmulTileRows;
    const float* rows[kMatmulTileRows];
    for (int64_t k = 0; k < tile_rows; ++k) {
      float* dst = scratch + k * n;
      DequantizeRowKernel(type, data + static_cast<uint64_t>(r + k) * row_bytes, dst, n);
      rows[k] = dst;
    }
    for (int64_t t = 0; t < n_tokens; ++t) {
      const float* xt = x + t * n;
      float* yt = y + t * y_stride + r;
      if (tile_rows == kMatmulTileRows) {
        Dot4Rows(rows[0], rows[1], rows[2], rows[3], xt, n, yt);
      } else {
        // A partial tile repeats its last row: every row is summed in exactly the same order
        // wherever a thread's row range happens to start or end, so results are bit-identical
        // for any thread count.
        float partial[kMatmulTileRows];
        const float* last = rows[tile_rows - 1];
        Dot4Rows(rows[0], tile_rows > 1 ? rows[1] : last, tile_rows > 2 ? rows[2] : last, last, xt, n, partial);
        for (int64_t k = 0; k < tile_rows; ++k) yt[k] = partial[k];
      }
    }
  }
}

// ---- int8 activation fast path -------------------------------------------------------------------
// Activations arrive quantized (quant/q8_activations.hpp: 32 int8 per f32 scale). Per block of 32
// the integer dot product of weight quants and activation quants is exact; it is then scaled by
// the weight scale times the activation scale in f32. x86 targets from AVX2 up use u8 x s8
// multiply-adds (VNNI's vpdpbusd from AVX3_DL up); every other target the portable path below.

inline void QuantizeRowQ8Kernel(const float* x, int64_t n, uint8_t* out) {
  // 16-lane pieces so that each 16-value half's sum falls out of one vector.
  const hn::CappedTag<float, 16> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const size_t lanes = hn::Lanes(df);
  int8_t* q = reinterpret_cast<int8_t*>(out);
  float* d = reinterpret_cast<float*>(out + n);
  float* d_sum = d + n / 32;
  float* d_sum16 = d_sum + n / 32;
  const auto high = hn::Set(di, 127);
  const auto low = hn::Set(di, -127);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    auto vmax = hn::Zero(df);
    for (size_t i = 0; i < 32; i += lanes) vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, xb + i)));
    const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const float scale = amax / 127.0f;
    const auto inverse = hn::Set(df, amax > 0.0f ? 1.0f / scale : 0.0f);
    int32_t half_sums[2] = {0, 0};
    for (int half = 0; half < 2; ++half) {
      auto vsum = hn::Zero(di);
      for (size_t i = 16 * static_cast<size_t>(half); i < 16 * static_cast<size_t>(half) + 16; i += lanes) {
        const auto qi = hn::Min(hn::Max(hn::NearestInt(hn::Mul(hn::LoadU(df, xb + i), inverse)), low), high);
        vsum = hn::Add(vsum, qi);
        hn::StoreU(hn::DemoteTo(di8, qi), di8, q + 32 * b + static_cast<int64_t>(i));
      }
      half_sums[half] = hn::GetLane(hn::SumOfLanes(di, vsum));
    }
    d[b] = scale;
    d_sum[b] = scale * static_cast<float>(half_sums[0] + half_sums[1]);
    d_sum16[2 * b] = scale * static_cast<float>(half_sums[0]);
    d_sum16[2 * b + 1] = scale * static_cast<float>(half_sums[1]);
  }
}

// The same float operations as quant::quantize_activation_residual_q8, except that a compiler may fuse
// the multiply and subtract of the rest, so a value can land one fine step away from the reference.
inline void QuantizeResidualQ8Kernel(const float* x, const uint8_t* hi, int64_t n, uint8_t* lo) {
  const hn::CappedTag<float, 16> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<int8_t, decltype(df)> di8;
  const size_t lanes = hn::Lanes(df);
  const quant::Q8ActivationRow first = quant::q8_activation_view(hi, n);
  int8_t* q = reinterpret_cast<int8_t*>(lo);
  float* d = reinterpret_cast<float*>(lo + n);
  float* d_sum = d + n / 32;
  float* d_sum16 = d_sum + n / 32;
  const auto high = hn::Set(di, 127);
  const auto low = hn::Set(di, -127);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float scale = first.d[b] / 256.0f;
    const auto coarse = hn::Set(df, first.d[b]);
    const auto inverse = hn::Set(df, scale > 0.0f ? 256.0f / first.d[b] : 0.0f);
    int32_t half_sums[2] = {0, 0};
    for (int half = 0; half < 2; ++half) {
      auto vsum = hn::Zero(di);
      for (size_t i = 16 * static_cast<size_t>(half); i < 16 * static_cast<size_t>(half) + 16; i += lanes) {
        const int64_t at = 32 * b + static_cast<int64_t>(i);
        const auto kept = hn::Mul(coarse, hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(di8, first.q + at))));
        const auto rest = hn::Sub(hn::LoadU(df, x + at), kept);
        const auto qi = hn::Min(hn::Max(hn::NearestInt(hn::Mul(rest, inverse)), low), high);
        vsum = hn::Add(vsum, qi);
        hn::StoreU(hn::DemoteTo(di8, qi), di8, q + at);
      }
      half_sums[half] = hn::GetLane(hn::SumOfLanes(di, vsum));
    }
    d[b] = scale;
    d_sum[b] = scale * static_cast<float>(half_sums[0] + half_sums[1]);
    d_sum16[2 * b] = scale * static_cast<float>(half_sums[0]);
    d_sum16[2 * b + 1] = scale * static_cast<float>(half_sums[1]);
  }
}

// -- portable path: weights decoded to int8, products widened to int16 and summed pairwise.

HWY_INLINE int32_t DotI8(const int8_t* a, const int8_t* b, int count) {
  const hn::CappedTag<int16_t, 16> d16;
  const hn::Rebind<int8_t, decltype(d16)> d8;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  const int lanes = static_cast<int>(hn::Lanes(d16));
  for (int i = 0; i < count; i += lanes) {
    const auto va = hn::PromoteTo(d16, hn::LoadU(d8, a + i));
    const auto vb = hn::PromoteTo(d16, hn::LoadU(d8, b + i));
    sum0 = hn::ReorderWidenMulAccumulate(d32, va, vb, sum0, sum1);
  }
  return hn::GetLane(hn::SumOfLanes(d32, hn::RearrangeToOddPlusEven(sum0, sum1)));
}

template <int T>
HWY_INLINE void PortableRowDotQ8(WeightType type, const uint8_t* row, int64_t n,
                                 const quant::Q8ActivationRow* x, float* out) {
  for (int t = 0; t < T; ++t) out[t] = 0.0f;
  HWY_ALIGN int8_t w[256];
  switch (type) {
    case WeightType::kQ8_0:
    case WeightType::kQ4_0: {
      const bool is_q8 = type == WeightType::kQ8_0;
      const int block_bytes = is_q8 ? 34 : 18;
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint8_t* block = row + b * block_bytes;
        const float dw = quant::load_f16(block);
        if (is_q8) {
          std::memcpy(w, block + 2, 32);
        } else {
          for (int j = 0; j < 16; ++j) {
            w[j] = static_cast<int8_t>((block[2 + j] & 15) - 8);
            w[j + 16] = static_cast<int8_t>((block[2 + j] >> 4) - 8);
          }
        }
        for (int t = 0; t < T; ++t) {
          out[t] += dw * x[t].d[b] * static_cast<float>(DotI8(w, x[t].q + 32 * b, 32));
        }
      }
      return;
    }
    case WeightType::kQ4_K:
    case WeightType::kQ5_K: {
      const bool has_high_bit = type == WeightType::kQ5_K;
      const int block_bytes = has_high_bit ? 176 : 144;
      for (int64_t s = 0; s < n / 256; ++s) {
        const uint8_t* block = row + s * block_bytes;
        const float d = quant::load_f16(block);
        const float dmin = quant::load_f16(block + 2);
        uint8_t sc[8], m[8];
        quant::unpack_k_scales_mins(block + 4, sc, m);
        const uint8_t* qh = block + 16;
        const uint8_t* qs = block + (has_high_bit ? 48 : 16);
        for (int j = 0; j < 8; ++j) {
          for (int l = 0; l < 32; ++l) {
            int q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
            if (has_high_bit) q |= ((qh[l] >> j) & 1) << 4;
            w[32 * j + l] = static_cast<int8_t>(q);
          }
        }
        for (int t = 0; t < T; ++t) {
          for (int j = 0; j < 8; ++j) {
            const int64_t b = 8 * s + j;
            const int32_t dot = DotI8(w + 32 * j, x[t].q + 32 * b, 32);
            out[t] += d * static_cast<float>(sc[j]) * x[t].d[b] * static_cast<float>(dot) -
                      dmin * static_cast<float>(m[j]) * x[t].d_sum[b];
          }
        }
      }
      return;
    }
    case WeightType::kQ6_K: {
      for (int64_t s = 0; s < n / 256; ++s) {
        const uint8_t* block = row + s * 210;
        const float d = quant::load_f16(block + 208);
        const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
        for (int i = 0; i < 256; ++i) w[i] = static_cast<int8_t>(quant::q6_k_quant(block, i) - 32);
        for (int t = 0; t < T; ++t) {
          for (int j = 0; j < 8; ++j) {
            const int64_t b = 8 * s + j;
            const int32_t dot = scales[2 * j] * DotI8(w + 32 * j, x[t].q + 32 * b, 16) +
                                scales[2 * j + 1] * DotI8(w + 32 * j + 16, x[t].q + 32 * b + 16, 16);
            out[t] += d * x[t].d[b] * static_cast<float>(dot);
          }
        }
      }
      return;
    }
    default:
      return;  // float weights never reach here (implementation.hpp routes them to the f32 path)
  }
}

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define BORA_KERNELS_X86_INT8 1
// GCC 12's intrinsics leave "don't care" lanes as self-initialized variables, which -O3 reports
// as maybe-uninitialized when the intrinsic headers were first included outside Highway's own
// diagnostic guard (e.g. by simdjson). Highway silences the same warning in its x86 headers. Clang
// has no such warning (and would reject its name under -Werror).
HWY_DIAGNOSTICS(push)
#if !HWY_COMPILER_CLANG
HWY_DIAGNOSTICS_OFF(disable : 4701, ignored "-Wmaybe-uninitialized")
#endif

// Sums of four adjacent u8 x s8 products per 32-bit lane. u <= 128 and |s| <= 127, so the 16-bit
// pair sums of maddubs (at most 2 * 128 * 127) never saturate.
HWY_INLINE __m256i X86DotU8S8(__m256i u, __m256i s) {
#if HWY_TARGET <= HWY_AVX3_DL
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

// Signed x signed through the u8 x s8 instruction: |w| times s carrying w's sign.
HWY_INLINE __m256i X86DotS8S8(__m256i w, __m256i s) {
  return X86DotU8S8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(s, w));
}

HWY_INLINE float X86Sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

HWY_INLINE float X86Half(const uint8_t* p) {
#if defined(HWY_DISABLE_F16C)
  return quant::load_f16(p);
#else
  return _cvtsh_ss(quant::load_u16_le(p));
#endif
}

HWY_INLINE __m256i X86Load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

HWY_INLINE __m256 X86Accumulate(__m256i sums, __m256 scale, __m256 acc) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
}

// Blocks are processed two at a time into separate accumulators so that consecutive multiply-adds
// do not wait on each other (one chain would bound a single-token matvec by FMA latency). Loops over
// the T tokens are fully unrolled so the accumulators live in registers.
template <int T>
HWY_INLINE void X86BlockQ8_0(const uint8_t* row, int64_t b, const quant::Q8ActivationRow* x, __m256 (&sums)[T]) {
  const uint8_t* block = row + 34 * b;
  const float dw = X86Half(block);
  const __m256i w = X86Load32(block + 2);
  const __m256i w_abs = _mm256_sign_epi8(w, w);
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) {
    const __m256i xs = _mm256_sign_epi8(X86Load32(x[t].q + 32 * b), w);
    sums[t] = X86Accumulate(X86DotU8S8(w_abs, xs), _mm256_set1_ps(dw * x[t].d[b]), sums[t]);
  }
}

template <int T>
HWY_INLINE void X86RowDotQ8_0(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  __m256 even[T], odd[T];
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) even[t] = odd[t] = _mm256_setzero_ps();
  const int64_t blocks = n / 32;
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    X86BlockQ8_0<T>(row, b, x, even);
    X86BlockQ8_0<T>(row, b + 1, x, odd);
  }
  if (b < blocks) X86BlockQ8_0<T>(row, b, x, even);
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) out[t] = X86Sum(_mm256_add_ps(even[t], odd[t]));
}

// Q4_0: nibbles 0..15 as unsigned; the "- 8" is applied through the activation block sums.
template <int T>
HWY_INLINE void X86BlockQ4_0(const uint8_t* row, int64_t b, const quant::Q8ActivationRow* x, __m256 (&sums)[T],
                             float (&offset)[T]) {
  const uint8_t* block = row + 18 * b;
  const float dw = X86Half(block);
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  const __m256i w = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(15));
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) {
    sums[t] = X86Accumulate(X86DotU8S8(w, X86Load32(x[t].q + 32 * b)), _mm256_set1_ps(dw * x[t].d[b]), sums[t]);
    offset[t] += dw * x[t].d_sum[b];
  }
}

template <int T>
HWY_INLINE void X86RowDotQ4_0(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  __m256 even[T], odd[T];
  float offset[T];
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) {
    even[t] = odd[t] = _mm256_setzero_ps();
    offset[t] = 0.0f;
  }
  const int64_t blocks = n / 32;
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    X86BlockQ4_0<T>(row, b, x, even, offset);
    X86BlockQ4_0<T>(row, b + 1, x, odd, offset);
  }
  if (b < blocks) X86BlockQ4_0<T>(row, b, x, even, offset);
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) out[t] = X86Sum(_mm256_add_ps(even[t], odd[t])) - 8.0f * offset[t];
}

// Q4_K / Q5_K: per 64 values one 32-byte load gives two sub-blocks (low and high nibbles); the
// per-sub-block scales d*sc*dx come from one 8-lane vector per super-block, the mins term
// dmin*m*(dx*sum q) is one multiply-add per super-block.
template <int T, bool kHasHighBit>
HWY_INLINE void X86RowDotKQuant(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  constexpr int kBlockBytes = kHasHighBit ? 176 : 144;
  __m256 acc_low[T], acc_high[T], acc_min[T];
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) acc_low[t] = acc_high[t] = acc_min[t] = _mm256_setzero_ps();
  const __m256i low_mask = _mm256_set1_epi8(15);
  const __m256i one = _mm256_set1_epi8(1);
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * kBlockBytes;
    const float d = X86Half(block);
    const float dmin = X86Half(block + 2);
    uint32_t words[4];  // kept in registers: byte stores reloaded as a vector would stall forwarding
    quant::unpack_k_scales_mins_words(block + 4, words);
    const __m128i packed = _mm_setr_epi32(static_cast<int>(words[0]), static_cast<int>(words[1]),
                                          static_cast<int>(words[2]), static_cast<int>(words[3]));
    const __m256 scales = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed)));
    const __m256 mins =
        _mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(packed, 8))));
    __m256 step[T];
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) {
      step[t] = _mm256_mul_ps(scales, _mm256_loadu_ps(x[t].d + 8 * s));
      acc_min[t] = _mm256_fmadd_ps(mins, _mm256_loadu_ps(x[t].d_sum + 8 * s), acc_min[t]);
    }
    const uint8_t* qs = block + (kHasHighBit ? 48 : 16);
    __m256i high_bits = _mm256_setzero_si256();
    if (kHasHighBit) high_bits = X86Load32(block + 16);
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = X86Load32(qs + 32 * c);
      __m256i low = _mm256_and_si256(packed, low_mask);
      __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
      if (kHasHighBit) {
        const __m256i bit_low = _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * c)), one);
        const __m256i bit_high = _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * c + 1)), one);
        low = _mm256_or_si256(low, _mm256_slli_epi16(bit_low, 4));
        high = _mm256_or_si256(high, _mm256_slli_epi16(bit_high, 4));
      }
      const __m256i index_low = _mm256_set1_epi32(2 * c), index_high = _mm256_set1_epi32(2 * c + 1);
      HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) {
        const int8_t* xq = x[t].q + 256 * s + 64 * c;
        acc_low[t] = X86Accumulate(X86DotU8S8(low, X86Load32(xq)), _mm256_permutevar8x32_ps(step[t], index_low), acc_low[t]);
        acc_high[t] = X86Accumulate(X86DotU8S8(high, X86Load32(xq + 32)),
                                    _mm256_permutevar8x32_ps(step[t], index_high), acc_high[t]);
      }
    }
  }
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) out[t] = X86Sum(_mm256_sub_ps(_mm256_add_ps(acc_low[t], acc_high[t]), acc_min[t]));
}

// Q6_K: q - 32 is signed (-32..31); its 16-value sub-blocks have their own scales, so the eight
// 32-bit partial sums of a 32-value group are scaled by [s0 x4, s1 x4].
template <int T>
HWY_INLINE void X86RowDotQ6_K(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  __m256 acc[2][T];
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
  const __m256i low_mask = _mm256_set1_epi8(15);
  const __m256i two_bits = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * 210;
    const __m256 d = _mm256_set1_ps(X86Half(block + 208));
    const __m128i scales8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192));
    const __m256 scales_half[2] = {
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scales8))),
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(scales8, 8)))),
    };
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = X86Load32(block + 64 * h);
      const __m256i ql1 = X86Load32(block + 64 * h + 32);
      const __m256i qh = X86Load32(block + 128 + 32 * h);
      for (int k = 0; k < 4; ++k) {
        const __m256i ql = (k % 2 == 0) ? ql0 : ql1;
        const __m256i low = (k < 2) ? _mm256_and_si256(ql, low_mask)
                                    : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low_mask);
        const __m256i high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), two_bits);
        const __m256i w = _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)), bias);
        const __m256i w_abs = _mm256_sign_epi8(w, w);
        const __m256i pair_index = _mm256_setr_epi32(2 * k, 2 * k, 2 * k, 2 * k, 2 * k + 1, 2 * k + 1, 2 * k + 1, 2 * k + 1);
        const __m256 pair_scales = _mm256_permutevar8x32_ps(scales_half[h], pair_index);
        const int64_t b = 8 * s + 4 * h + k;
        HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) {
          const __m256i xs = _mm256_sign_epi8(X86Load32(x[t].q + 32 * b), w);
          acc[k % 2][t] = X86Accumulate(X86DotU8S8(w_abs, xs), _mm256_mul_ps(pair_scales, _mm256_set1_ps(x[t].d[b])),
                                        acc[k % 2][t]);
        }
      }
    }
  }
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) out[t] = X86Sum(_mm256_add_ps(acc[0][t], acc[1][t]));
}

#endif  // x86 with AVX2

#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL
#define BORA_KERNELS_X86_VNNI 1

// Prefill with VNNI. kPrefillTokens tokens are packed transposed: for every block of 32 values and
// every group of four values, 32 tokens x 4 bytes (two 512-bit registers of 16 tokens). Four weight
// bytes broadcast to all lanes then meet 16 tokens in one vpdpbusd and each block's integer sum
// lands one token per lane, so no horizontal additions are needed; R weight rows share every
// activation load. Weights are decoded to unsigned bytes u with, per 16-value half, a scale s and
// an offset o such that the block's contribution is sum_half s * dx * sum(u * q) - o * dx * sum(q).
using kernels::kPrefillTokens;

struct PackedTokens {
  const uint8_t* q;         // [block][group of 4][token][4]
  const float* d;           // [block][token]
  const float* d_sum;       // [block][token]  d * sum of q over the block
  const float* d_sum_low;   // [block][token]  ... over its first 16 values
  const float* d_sum_high;  // [block][token]  ... over its last 16 values
};

HWY_INLINE PackedTokens PackTokens(const uint8_t* xq, int64_t xq_stride, int64_t count, int64_t n, uint8_t* scratch) {
  const int64_t blocks = n / 32;
  float* d = reinterpret_cast<float*>(scratch + kPrefillTokens * n);
  float* d_sum = d + kPrefillTokens * blocks;
  float* d_sum_low = d_sum + kPrefillTokens * blocks;
  float* d_sum_high = d_sum_low + kPrefillTokens * blocks;
  for (int64_t t = 0; t < kPrefillTokens; ++t) {
    if (t >= count) {  // padding lanes: zero quants and scales contribute nothing
      for (int64_t b = 0; b < blocks; ++b) {
        for (int g = 0; g < 8; ++g) std::memset(scratch + ((b * 8 + g) * kPrefillTokens + t) * 4, 0, 4);
        d[b * kPrefillTokens + t] = d_sum[b * kPrefillTokens + t] = 0.0f;
        d_sum_low[b * kPrefillTokens + t] = d_sum_high[b * kPrefillTokens + t] = 0.0f;
      }
      continue;
    }
    const quant::Q8ActivationRow x = quant::q8_activation_view(xq + t * xq_stride, n);
    for (int64_t b = 0; b < blocks; ++b) {
      const int8_t* q = x.q + 32 * b;
      for (int g = 0; g < 8; ++g) std::memcpy(scratch + ((b * 8 + g) * kPrefillTokens + t) * 4, q + 4 * g, 4);
      d[b * kPrefillTokens + t] = x.d[b];
      d_sum[b * kPrefillTokens + t] = x.d_sum[b];
      d_sum_low[b * kPrefillTokens + t] = x.d_sum16[2 * b];
      d_sum_high[b * kPrefillTokens + t] = x.d_sum16[2 * b + 1];
    }
  }
  return {scratch, d, d_sum, d_sum_low, d_sum_high};
}

// One decoded super-block of one row: unsigned bytes plus scale and offset per 16-value half.
struct DecodedWeights {
  HWY_ALIGN uint8_t u[256];
  float scale[16];
  float offset[16];
};

struct VnniQ8_0 {
  static constexpr int kValues = 32, kBytes = 34;
  static constexpr bool kSplitHalves = false;
  // u = w + 128 (as bytes: w ^ 0x80), so the offset is 128 * d.
  static HWY_INLINE void Decode(const uint8_t* block, DecodedWeights* out) {
    const float d = X86Half(block);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out->u), _mm256_xor_si256(X86Load32(block + 2), _mm256_set1_epi8(-128)));
    out->scale[0] = d;
    out->offset[0] = 128.0f * d;
  }
};

struct VnniQ4_0 {
  static constexpr int kValues = 32, kBytes = 18;
  static constexpr bool kSplitHalves = false;
  static HWY_INLINE void Decode(const uint8_t* block, DecodedWeights* out) {
    const float d = X86Half(block);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(15));
    _mm256_store_si256(reinterpret_cast<__m256i*>(out->u), u);
    out->scale[0] = d;
    out->offset[0] = 8.0f * d;
  }
};

template <bool kHasHighBit>
struct VnniKQuant {
  static constexpr int kValues = 256, kBytes = kHasHighBit ? 176 : 144;
  static constexpr bool kSplitHalves = false;
  static HWY_INLINE void Decode(const uint8_t* block, DecodedWeights* out) {
    const float d = X86Half(block);
    const float dmin = X86Half(block + 2);
    uint32_t words[4];
    quant::unpack_k_scales_mins_words(block + 4, words);
    for (int j = 0; j < 8; ++j) {
      const uint32_t sc = (words[j / 4] >> (8 * (j % 4))) & 0xFF;
      const uint32_t m = (words[2 + j / 4] >> (8 * (j % 4))) & 0xFF;
      out->scale[2 * j] = d * static_cast<float>(sc);
      out->offset[2 * j] = dmin * static_cast<float>(m);
    }
    const __m256i low_mask = _mm256_set1_epi8(15);
    const __m256i one = _mm256_set1_epi8(1);
    const uint8_t* qs = block + (kHasHighBit ? 48 : 16);
    __m256i high_bits = _mm256_setzero_si256();
    if (kHasHighBit) high_bits = X86Load32(block + 16);
    for (int c = 0; c < 4; ++c) {
      const __m256i packed = X86Load32(qs + 32 * c);
      __m256i low = _mm256_and_si256(packed, low_mask);
      __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
      if (kHasHighBit) {
        const __m256i bit_low = _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * c)), one);
        const __m256i bit_high = _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * c + 1)), one);
        low = _mm256_or_si256(low, _mm256_slli_epi16(bit_low, 4));
        high = _mm256_or_si256(high, _mm256_slli_epi16(bit_high, 4));
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(out->u + 64 * c), low);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out->u + 64 * c + 32), high);
    }
  }
};

struct VnniQ6_K {
  static constexpr int kValues = 256, kBytes = 210;
  static constexpr bool kSplitHalves = true;
  // u = q in 0..63; the "- 32" is the offset 32 * scale of each 16-value half.
  static HWY_INLINE void Decode(const uint8_t* block, DecodedWeights* out) {
    const float d = X86Half(block + 208);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
    for (int i = 0; i < 16; ++i) {
      out->scale[i] = d * static_cast<float>(scales[i]);
      out->offset[i] = 32.0f * out->scale[i];
    }
    const __m256i low_mask = _mm256_set1_epi8(15);
    const __m256i two_bits = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = X86Load32(block + 64 * h);
      const __m256i ql1 = X86Load32(block + 64 * h + 32);
      const __m256i qh = X86Load32(block + 128 + 32 * h);
      for (int k = 0; k < 4; ++k) {
        const __m256i ql = (k % 2 == 0) ? ql0 : ql1;
        const __m256i low = (k < 2) ? _mm256_and_si256(ql, low_mask)
                                    : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low_mask);
        const __m256i high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), two_bits);
        _mm256_store_si256(reinterpret_cast<__m256i*>(out->u + 128 * h + 32 * k),
                           _mm256_or_si256(low, _mm256_slli_epi16(high, 4)));
      }
    }
  }
};

// Integer sums of R rows x 32 tokens over `groups` groups of four values starting at `group`.
template <int R>
HWY_INLINE void VnniGroupSums(const DecodedWeights* w, int value_offset, const uint8_t* xb, int group, int groups,
                              __m512i (&sums)[R][2]) {
  HWY_UNROLL(4)
  for (int r = 0; r < R; ++r) sums[r][0] = sums[r][1] = _mm512_setzero_si512();
  for (int g = group; g < group + groups; ++g) {
    const __m512i x0 = _mm512_loadu_si512(xb + g * 128);
    const __m512i x1 = _mm512_loadu_si512(xb + g * 128 + 64);
    HWY_UNROLL(4)
    for (int r = 0; r < R; ++r) {
      int32_t four;
      std::memcpy(&four, w[r].u + value_offset + 4 * g, 4);
      const __m512i wb = _mm512_set1_epi32(four);
      sums[r][0] = _mm512_dpbusd_epi32(sums[r][0], wb, x0);
      sums[r][1] = _mm512_dpbusd_epi32(sums[r][1], wb, x1);
    }
  }
}

template <int R>
HWY_INLINE void VnniScale(const DecodedWeights* w, int half_index, const __m512i (&sums)[R][2], const float* d,
                          const float* d_sum, __m512 (&acc)[R][2]) {
  const __m512 dx0 = _mm512_loadu_ps(d), dx1 = _mm512_loadu_ps(d + 16);
  const __m512 ds0 = _mm512_loadu_ps(d_sum), ds1 = _mm512_loadu_ps(d_sum + 16);
  HWY_UNROLL(4)
  for (int r = 0; r < R; ++r) {
    const __m512 s = _mm512_set1_ps(w[r].scale[half_index]);
    const __m512 o = _mm512_set1_ps(w[r].offset[half_index]);
    acc[r][0] = _mm512_fnmadd_ps(o, ds0, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[r][0]), _mm512_mul_ps(s, dx0), acc[r][0]));
    acc[r][1] = _mm512_fnmadd_ps(o, ds1, _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[r][1]), _mm512_mul_ps(s, dx1), acc[r][1]));
  }
}

// R consecutive rows starting at `row` against the packed tokens; out[r][t].
template <class Decoder, int R>
HWY_INLINE void VnniRows(const uint8_t* data, uint64_t row_bytes, int64_t row, int64_t n, const PackedTokens& p,
                         float (*out)[kPrefillTokens]) {
  __m512 acc[R][2];
  HWY_UNROLL(4)
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  DecodedWeights w[R];
  constexpr int kBlocksPerSuper = Decoder::kValues / 32;
  const int64_t supers = n / Decoder::kValues;
  for (int64_t s = 0; s < supers; ++s) {
    HWY_UNROLL(4)
    for (int r = 0; r < R; ++r) {
      Decoder::Decode(data + static_cast<uint64_t>(row + r) * row_bytes + static_cast<uint64_t>(s * Decoder::kBytes), &w[r]);
    }
    for (int j = 0; j < kBlocksPerSuper; ++j) {
      const int64_t b = s * kBlocksPerSuper + j;
      const uint8_t* xb = p.q + b * 8 * 4 * kPrefillTokens;
      const float* d = p.d + b * kPrefillTokens;
      __m512i sums[R][2];
      if (Decoder::kSplitHalves) {
        VnniGroupSums<R>(w, 32 * j, xb, 0, 4, sums);
        VnniScale<R>(w, 2 * j, sums, d, p.d_sum_low + b * kPrefillTokens, acc);
        VnniGroupSums<R>(w, 32 * j, xb, 4, 4, sums);
        VnniScale<R>(w, 2 * j + 1, sums, d, p.d_sum_high + b * kPrefillTokens, acc);
      } else {
        VnniGroupSums<R>(w, 32 * j, xb, 0, 8, sums);
        VnniScale<R>(w, 2 * j, sums, d, p.d_sum + b * kPrefillTokens, acc);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(out[r], acc[r][0]);
    _mm512_storeu_ps(out[r] + 16, acc[r][1]);
  }
}

template <class Decoder>
HWY_INLINE void VnniMatmul(const uint8_t* data, uint64_t row_bytes, int64_t n, const PackedTokens& p,
                           int64_t count, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  constexpr int kRows = 4;
  float out[kRows][kPrefillTokens];
  for (int64_t r = row_begin; r < row_end; r += kRows) {
    const int64_t rows = (row_end - r < kRows) ? row_end - r : kRows;
    switch (rows) {
      case 4: VnniRows<Decoder, 4>(data, row_bytes, r, n, p, out); break;
      case 3: VnniRows<Decoder, 3>(data, row_bytes, r, n, p, out); break;
      case 2: VnniRows<Decoder, 2>(data, row_bytes, r, n, p, out); break;
      default: VnniRows<Decoder, 1>(data, row_bytes, r, n, p, out); break;
    }
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t t = 0; t < count; ++t) y[t * y_stride + r + k] = out[k][t];
    }
  }
}

// Decode (one token) with 512-bit VNNI: one vpdpbusd covers 64 values. Lanes 0-7 of its result
// belong to the first 32 values and 8-15 to the next (for Q6_K: four lanes per 16 values), so the
// f32 scales are brought to the same lanes with one permute and applied with one multiply-add.
// Formats with per-block f16 scales gather 16 of them at once; offset terms are accumulated once
// per 16 blocks (or per super-block) as vectors.

// Prefetches `bytes` of weights `distance` bytes ahead. The address may lie past the row (prefetches
// never fault), hence integer arithmetic rather than pointer arithmetic.
HWY_INLINE void X86PrefetchAhead(const uint8_t* p, int bytes, int distance) {
  const uintptr_t ahead = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(distance);
  for (int line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(ahead + static_cast<uintptr_t>(line)), _MM_HINT_T0);
}

// [first x 8 | first + 1 x 8]: pairs of consecutive f32 scales spread over a 512-bit result.
HWY_INLINE __m512i X512PairIndex(int first) {
  return _mm512_add_epi32(_mm512_set1_epi32(first),
                          _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
}

// f16 scales at the start of 16 consecutive blocks of kBytes bytes (lanes outside `lanes` are 0
// and their memory is not touched).
template <int kBytes>
HWY_INLINE __m512 X512BlockScales(const uint8_t* first_block, __mmask16 lanes) {
  const __m512i offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(kBytes));
  const __m512i raw = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), lanes, offsets, first_block, 1);
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
}

// Byte indices and lane masks that pick the f16 scales (first two bytes) of 16 consecutive
// kBytes-byte blocks out of 128-byte windows: a few byte permutes instead of a gather, which
// measured as the bottleneck of the Q4_0 / Q8_0 decode kernels (~16 cycles per group).
template <int kBytes>
struct GroupScaleWindows {
  static constexpr int kCount = (15 * kBytes + 1) / 128 + 1;
  uint8_t index[kCount][64] = {};
  uint64_t lanes[kCount] = {};
  bool needs_second_half[kCount] = {};
  constexpr GroupScaleWindows() {
    for (int j = 0; j < 32; ++j) {
      const int offset = kBytes * (j / 2) + j % 2;
      const int window = offset / 128;
      index[window][j] = static_cast<uint8_t>(offset % 128);
      lanes[window] |= uint64_t{1} << j;
      if (offset % 128 >= 64) needs_second_half[window] = true;
    }
  }
  // Bytes read from the group's start.
  constexpr int extent() const { return 128 * (kCount - 1) + (needs_second_half[kCount - 1] ? 128 : 64); }
};

// The 16 block scales of a whole group as f32; reads GroupScaleWindows<kBytes>().extent() bytes.
template <int kBytes>
HWY_INLINE __m512 X512GroupScales(const uint8_t* first_block) {
  static constexpr GroupScaleWindows<kBytes> kWindows{};
  __m512i halves = _mm512_setzero_si512();
  for (int w = 0; w < GroupScaleWindows<kBytes>::kCount; ++w) {
    const __m512i low = _mm512_loadu_si512(first_block + 128 * w);
    const __m512i high = kWindows.needs_second_half[w] ? _mm512_loadu_si512(first_block + 128 * w + 64) : low;
    const __m512i picked = _mm512_permutex2var_epi8(low, _mm512_loadu_si512(kWindows.index[w]), high);
    halves = _mm512_mask_blend_epi8(static_cast<__mmask64>(kWindows.lanes[w]), halves, picked);
  }
  return _mm512_cvtph_ps(_mm512_castsi512_si256(halves));
}
static_assert(GroupScaleWindows<18>().extent() <= 18 * 18, "Q4_0: whole groups with 2 blocks after them");
static_assert(GroupScaleWindows<34>().extent() <= 16 * 34, "Q8_0: reads stay inside the group");

// The unsigned bytes of one or two consecutive Q8_0 / Q4_0 blocks as 64 values in natural order.
// Q4_0: the 64 bytes from a block pair's start hold both blocks' 16 nibble bytes (offsets 2 and
// 20); one byte permute lays them out as [qs0 | qs0 | qs1 | qs1] and one variable shift plus mask
// gives [low0 | high0 | low1 | high1]. Q8_0: w + 128 (w ^ 0x80), whose offset is 128 * d.
template <bool kIsQ8>
HWY_INLINE __m512i X512LegacyPair(const uint8_t* block, bool single, bool near_end, __m512i permute) {
  if (kIsQ8) {
    (void)near_end;
    (void)permute;
    const __m256i first = X86Load32(block + 2);
    const __m512i both = single ? _mm512_castsi256_si512(first)
                                : _mm512_inserti64x4(_mm512_castsi256_si512(first), X86Load32(block + 36), 1);
    return _mm512_xor_si512(both, _mm512_set1_epi8(-128));
  }
  const __m512i shifts = _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                           0x0004000400040004LL, 0x0004000400040004LL);
  __m512i ordered;
  if (!near_end) {
    ordered = _mm512_permutexvar_epi8(permute, _mm512_loadu_si512(block));
  } else {
    // Within 64 bytes of the row's end (maybe the mapping's): read exactly the nibble bytes. (A
    // masked 64-byte load would be as safe, but is several times slower on some cores.)
    const __m128i first = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i second = single ? _mm_setzero_si128() : _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 20));
    const __m256i low = _mm256_set_m128i(first, first), high = _mm256_set_m128i(second, second);
    ordered = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
  }
  return _mm512_and_si512(_mm512_srlv_epi16(ordered, shifts), _mm512_set1_epi8(15));
}

// Integer sums of 4-byte groups of u (unsigned weights) times the activations at `offset`. With two
// levels the second level's scale is exactly the first's / 256 (quant::quantize_activation_residual_q8),
// so 256 * hi + lo is the activation in units of the second level's scale, and both levels cost one
// extra product over weights decoded once. No overflow: |256 * hi + lo| per lane < 2^26.
template <int kLevels>
HWY_INLINE __m512i X512DotLevels(__m512i u, const quant::Q8ActivationRow* x, int64_t offset, bool single = false) {
  auto load = [&](const int8_t* p) {
    return single ? _mm512_inserti64x4(_mm512_setzero_si512(), X86Load32(p), 0) : _mm512_loadu_si512(p);
  };
  __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, load(x[0].q + offset));
  if (kLevels == 2) sums = _mm512_dpbusd_epi32(_mm512_slli_epi32(sums, 8), u, load(x[1].q + offset));
  return sums;
}

// The activation scales a kernel multiplies integer sums by: the last level's (see X512DotLevels).
template <int kLevels>
HWY_INLINE const float* X512LevelScales(const quant::Q8ActivationRow* x) { return x[kLevels - 1].d; }

// Prefetches 256 blocks ahead: without it, Q4_0's 36-byte block pairs stream from memory at half speed
// whenever they straddle cache lines unluckily (measured: 12 vs 22 GB/s on one core), and Q8_0 rows
// of 4096 values stream at 25-30 instead of 31-39 GB/s.
template <int kBytes, bool kIsQ8, int kLevels>
HWY_INLINE float X512RowDotLegacy(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x) {
  const __m512i permute = _mm512_set_epi8(35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
                                          35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
                                          17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2,
                                          17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  __m512 offset = _mm512_setzero_ps();
  const int64_t blocks = n / 32;
  for (int64_t b = 0; b < blocks; b += 16) {
    const int count = static_cast<int>(blocks - b < 16 ? blocks - b : 16);
    const __mmask16 lanes = static_cast<__mmask16>((1u << count) - 1u);
    const uint8_t* first = row + b * kBytes;
    X86PrefetchAhead(first, 16 * kBytes, 256 * kBytes);
    // Whole groups take their scales from plain loads; the last, or one whose loads would pass the
    // row's end, gathers exactly the bytes it needs.
    const bool windows_fit = count == 16 && (kIsQ8 || blocks - b >= 18);
    const __m512 dw = windows_fit ? X512GroupScales<kBytes>(first) : X512BlockScales<kBytes>(first, lanes);
    const bool full = count == 16;  // masked loads only for a row's last partial group
    auto load = [&](const float* p) { return full ? _mm512_loadu_ps(p + b) : _mm512_maskz_loadu_ps(lanes, p + b); };
    const __m512 dx = load(X512LevelScales<kLevels>(x));
    const __m512 ds = kLevels == 2 ? _mm512_add_ps(load(x[0].d_sum), load(x[1].d_sum)) : load(x[0].d_sum);
    const __m512 step = _mm512_mul_ps(dw, dx);
    offset = _mm512_fmadd_ps(dw, ds, offset);
    const int64_t xq = 32 * b;
    // A 64-byte read from a pair's start stays inside the row while 4 blocks (72 bytes) remain.
    const int64_t left = blocks - b;
    int p = 0;
    for (; p + 8 <= count; p += 8) {  // four pairs into four accumulators
      const __m512i u0 = X512LegacyPair<kIsQ8>(first + p * kBytes, false, left - p < 4, permute);
      const __m512i u1 = X512LegacyPair<kIsQ8>(first + (p + 2) * kBytes, false, left - p - 2 < 4, permute);
      const __m512i u2 = X512LegacyPair<kIsQ8>(first + (p + 4) * kBytes, false, left - p - 4 < 4, permute);
      const __m512i u3 = X512LegacyPair<kIsQ8>(first + (p + 6) * kBytes, false, left - p - 6 < 4, permute);
      const __m512i sums0 = X512DotLevels<kLevels>(u0, x, xq + 32 * p);
      const __m512i sums1 = X512DotLevels<kLevels>(u1, x, xq + 32 * (p + 2));
      const __m512i sums2 = X512DotLevels<kLevels>(u2, x, xq + 32 * (p + 4));
      const __m512i sums3 = X512DotLevels<kLevels>(u3, x, xq + 32 * (p + 6));
      acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums0), _mm512_permutexvar_ps(X512PairIndex(p), step), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums1), _mm512_permutexvar_ps(X512PairIndex(p + 2), step), acc1);
      acc2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums2), _mm512_permutexvar_ps(X512PairIndex(p + 4), step), acc2);
      acc3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums3), _mm512_permutexvar_ps(X512PairIndex(p + 6), step), acc3);
    }
    for (; p + 4 <= count; p += 4) {  // two pairs into two accumulators
      const __m512i u0 = X512LegacyPair<kIsQ8>(first + p * kBytes, false, left - p < 4, permute);
      const __m512i u1 = X512LegacyPair<kIsQ8>(first + (p + 2) * kBytes, false, left - p - 2 < 4, permute);
      const __m512i sums0 = X512DotLevels<kLevels>(u0, x, xq + 32 * p);
      const __m512i sums1 = X512DotLevels<kLevels>(u1, x, xq + 32 * (p + 2));
      acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums0), _mm512_permutexvar_ps(X512PairIndex(p), step), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums1), _mm512_permutexvar_ps(X512PairIndex(p + 2), step), acc1);
    }
    for (; p < count; p += 2) {
      const bool single = p + 1 == count;  // an odd last block: the second half's activations are zero
      const __m512i u = X512LegacyPair<kIsQ8>(first + p * kBytes, single, left - p < 4, permute);
      const __m512i sums = X512DotLevels<kLevels>(u, x, xq + 32 * p, single);
      acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_permutexvar_ps(X512PairIndex(p), step), acc0);
    }
  }
  const float offset_scale = kIsQ8 ? 128.0f : 8.0f;
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3))) -
         offset_scale * _mm512_reduce_add_ps(offset);
}

// How far ahead the K-quant kernels prefetch, in bytes: like X512RowDotLegacy's, it makes their speed
// independent of row alignment. 6 KiB (about as far as the legacy kernels' 256 blocks) measured ~5-8%
// faster than 2 KiB per token on the Q4_K_M 7B file at one thread (per weight class, three alternating
// rounds; 4 KiB in between, 8 KiB no better), and no slower at two.
constexpr int kKQuantPrefetchDistance = 6144;

// The eight 6-bit scales and eight mins of a Q4_K / Q5_K super-block as 16 bytes
// [scale 0..7 | min 0..7], unpacked with vector masks (same rule as quant::unpack_k_scales_mins) from
// the super-block's first 16 bytes (d, dmin, then the 12 packed bytes), read with one vector load:
// assembling the 12 bytes through scalar registers cost a quarter of the kernel's time.
HWY_INLINE __m128i X86KScalesMins(__m128i head) {
  const __m128i v = _mm_srli_si128(head, 4);                                 // [w0, w1, w2, 0]
  const __m128i low6 = _mm_and_si128(v, _mm_set1_epi32(0x3F3F3F3F));        // [sc 0..3, m 0..3]
  const __m128i w2 = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 2, 2, 2));
  const __m128i low4 = _mm_and_si128(_mm_srlv_epi32(w2, _mm_setr_epi32(0, 4, 0, 4)), _mm_set1_epi32(0x0F0F0F0F));
  const __m128i top2 = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(v, 6), _mm_set1_epi32(0x03030303)), 4);
  const __m128i high = _mm_or_si128(low4, top2);                             // [sc 4..7, m 4..7]
  return _mm_unpacklo_epi32(low6, high) /* [sc0-3, sc4-7, m0-3, m4-7] */;
}

// Like X512DotLevels, for weights whose two 32-value halves meet activations at `first` and `second`.
template <int kLevels>
HWY_INLINE __m512i X512DotLevelsSplit(__m512i u, const quant::Q8ActivationRow* x, int64_t first, int64_t second) {
  auto load = [&](const int8_t* q) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(X86Load32(q + first)), X86Load32(q + second), 1);
  };
  __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, load(x[0].q));
  if (kLevels == 2) sums = _mm512_dpbusd_epi32(_mm512_slli_epi32(sums, 8), u, load(x[1].q));
  return sums;
}

// 64 bytes of quants hold two 64-value chunks: their low nibbles are values [0, 32) of each chunk and
// their high nibbles values [32, 64). So one full load, one mask and one shift give two vectors of
// two sub-blocks each, and the activations are fetched to match in 32-byte halves (with the one-vector
// scale unpacking below, 1.3-1.5x faster per row from L2 than decoding 32 bytes per chunk with
// broadcasts and variable shifts). Q5_K's fifth bit of value j in sub-block k is bit k of qh[j], added
// with a byte test and a masked add.
//
// Chunks c and c + 1 (sub-blocks 2c .. 2c + 3) of the super-block whose activations start at xq.
// A function rather than a loop body so that the accumulators stay in registers (GCC kept an
// indexed accumulator array in memory when it did not unroll the loop).
template <bool kHasHighBit, int kLevels>
HWY_INLINE void X512KQuantChunkPair(const uint8_t* qs, __m512i high_bits, int c, const quant::Q8ActivationRow* x,
                                    int64_t xq, __m512 step, __m512& acc_low, __m512& acc_high) {
  const __m512i low_mask = _mm512_set1_epi8(15);
  const __m512i packed = _mm512_loadu_si512(qs + 32 * c);
  __m512i low = _mm512_and_si512(packed, low_mask);                          // sub-blocks 2c, 2c + 2
  __m512i high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low_mask);  // sub-blocks 2c + 1, 2c + 3
  if (kHasHighBit) {
    const __m512i fifth_bit = _mm512_set1_epi8(16);
    const __m512i low_bit = _mm512_inserti64x4(_mm512_set1_epi8(static_cast<char>(1 << (2 * c))),
                                               _mm256_set1_epi8(static_cast<char>(1 << (2 * c + 2))), 1);
    // Bit 4 of a nibble is clear, so a masked add of 16 sets it.
    low = _mm512_mask_add_epi8(low, _mm512_test_epi8_mask(high_bits, low_bit), low, fifth_bit);
    high = _mm512_mask_add_epi8(high, _mm512_test_epi8_mask(high_bits, _mm512_add_epi8(low_bit, low_bit)), high,
                                fifth_bit);
  }
  const __m512i sums_low = X512DotLevelsSplit<kLevels>(low, x, xq + 64 * c, xq + 64 * c + 64);
  const __m512i sums_high = X512DotLevelsSplit<kLevels>(high, x, xq + 64 * c + 32, xq + 64 * c + 96);
  // [2c x 8 | 2c + 2 x 8] and [2c + 1 x 8 | 2c + 3 x 8]: the scales of the sub-blocks in each vector.
  const __m512i low_index = _mm512_add_epi32(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2),
                                             _mm512_set1_epi32(2 * c));
  const __m512i high_index = _mm512_add_epi32(low_index, _mm512_set1_epi32(1));
  acc_low = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums_low), _mm512_permutexvar_ps(low_index, step), acc_low);
  acc_high = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums_high), _mm512_permutexvar_ps(high_index, step), acc_high);
}

template <bool kHasHighBit, int kLevels>
HWY_INLINE float X512RowDotKQuant(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x) {
  constexpr int kBlockBytes = kHasHighBit ? 176 : 144;
  const __m512i halves = X512PairIndex(0);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512 mins_acc = _mm512_setzero_ps();  // upper eight lanes: dmin * m * dx * sum(q)
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * kBlockBytes;
    X86PrefetchAhead(block, kBlockBytes, kKQuantPrefetchDistance);
    const __m128i head = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block));
    const __m512 d_dmin = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_cvtph_ps(head)));
    const __m512 scales_mins = _mm512_mul_ps(d_dmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(X86KScalesMins(head))));
    const __m256 d_sum = kLevels == 2 ? _mm256_add_ps(_mm256_loadu_ps(x[0].d_sum + 8 * s), _mm256_loadu_ps(x[1].d_sum + 8 * s))
                                      : _mm256_loadu_ps(x[0].d_sum + 8 * s);
    const __m512 activation =
        _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(X512LevelScales<kLevels>(x) + 8 * s)), d_sum, 1);
    const __m512 step = _mm512_mul_ps(scales_mins, activation);  // [d*sc*dx | dmin*m*dx*sum q]
    mins_acc = _mm512_add_ps(mins_acc, step);                      // lower lanes are ignored below
    const uint8_t* qs = block + (kHasHighBit ? 48 : 16);
    __m512i high_bits = _mm512_setzero_si512();
    if (kHasHighBit) high_bits = _mm512_broadcast_i64x4(X86Load32(block + 16));
    X512KQuantChunkPair<kHasHighBit, kLevels>(qs, high_bits, 0, x, 256 * s, step, acc[0], acc[1]);
    X512KQuantChunkPair<kHasHighBit, kLevels>(qs, high_bits, 2, x, 256 * s, step, acc[2], acc[3]);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) - X86Sum(_mm512_extractf32x8_ps(mins_acc, 1));
}

template <int kLevels>
HWY_INLINE float X512RowDotQ6_K(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x) {
  const __m512i low_mask = _mm512_set1_epi8(15);
  const __m512i high_mask = _mm512_set1_epi8(0x30);
  // Per 16-bit lane: shift the first 32 bytes by a, the last 32 by b.
  const __m512i shift_left_4_2 = _mm512_setr_epi64(0x0004000400040004LL, 0x0004000400040004LL, 0x0004000400040004LL,
                                                   0x0004000400040004LL, 0x0002000200020002LL, 0x0002000200020002LL,
                                                   0x0002000200020002LL, 0x0002000200020002LL);
  const __m512i shift_right_0_2 = _mm512_setr_epi64(0, 0, 0, 0, 0x0002000200020002LL, 0x0002000200020002LL,
                                                    0x0002000200020002LL, 0x0002000200020002LL);
  const __m512i duplicate = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  __m512i quarter_index[4];
  for (int k = 0; k < 4; ++k) {
    quarter_index[k] = _mm512_add_epi32(_mm512_set1_epi32(4 * k),
                                        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3));
  }
  __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512 offset = _mm512_setzero_ps();
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * 210;
    X86PrefetchAhead(block, 210, kKQuantPrefetchDistance);
    const __m512 d = _mm512_set1_ps(X86Half(block + 208));
    const __m512 scales = _mm512_mul_ps(
        d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 192)))));
    const __m512 d_sum16 = kLevels == 2 ? _mm512_add_ps(_mm512_loadu_ps(x[0].d_sum16 + 16 * s), _mm512_loadu_ps(x[1].d_sum16 + 16 * s))
                                        : _mm512_loadu_ps(x[0].d_sum16 + 16 * s);
    offset = _mm512_fmadd_ps(scales, d_sum16, offset);
    const __m512 dx = _mm512_castps256_ps512(_mm256_loadu_ps(X512LevelScales<kLevels>(x) + 8 * s));
    const __m512 step = _mm512_mul_ps(scales, _mm512_permutexvar_ps(duplicate, dx));
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(block + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(X86Load32(block + 128 + 32 * h));
      const __m512i u_first = _mm512_or_si512(_mm512_and_si512(ql, low_mask),
                                              _mm512_and_si512(_mm512_sllv_epi16(qh, shift_left_4_2), high_mask));
      const __m512i u_second = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low_mask),
                                               _mm512_and_si512(_mm512_srlv_epi16(qh, shift_right_0_2), high_mask));
      const int64_t xq = 256 * s + 128 * h;
      const __m512i sums_first = X512DotLevels<kLevels>(u_first, x, xq);
      const __m512i sums_second = X512DotLevels<kLevels>(u_second, x, xq + 64);
      acc[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums_first), _mm512_permutexvar_ps(quarter_index[2 * h], step), acc[0]);
      acc[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums_second), _mm512_permutexvar_ps(quarter_index[2 * h + 1], step),
                               acc[1]);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) - 32.0f * _mm512_reduce_add_ps(offset);
}

// Q4_0 rows of a multiple of 1024 values (Mistral's 4096 and 14336) are read as raw 64-byte windows
// instead of block pairs: with the activations laid out in the blocks' own 18-byte geometry (zero
// opposite each f16 scale, then the 16 values the low nibbles meet; a second copy for the high
// nibbles), one load, one mask and one shift decode 3.6 blocks. Every 4-byte lane of vpdpbusd then
// lies in a single block (a scale's two bytes start at an even offset), so both nibble halves go into
// one sum and one permute of 32 blocks' scales completes it: about half the decode work of the
// pair kernel, which shuffles every pair into natural order.
constexpr int64_t kQ4_0WindowValues = 1024;  // 32 blocks, 576 bytes, nine 64-byte windows

struct Q4_0WindowLayout {
  int16_t source[576] = {};    // value index (within 1024) a byte's low nibble meets; -1 opposite a scale
  int32_t block[9][16] = {};   // the block (0-31) that lane j of window w falls in
  constexpr Q4_0WindowLayout() {
    for (int i = 0; i < 576; ++i) source[i] = static_cast<int16_t>(i % 18 < 2 ? -1 : 32 * (i / 18) + i % 18 - 2);
    for (int w = 0; w < 9; ++w)
      for (int j = 0; j < 16; ++j) block[w][j] = (64 * w + 4 * j) / 18;
  }
};
constexpr Q4_0WindowLayout kQ4_0WindowLayout{};

// The activations of one level in the window layout: n / 32 * 18 bytes for the low nibbles, as many
// for the high ones (value + 16).
HWY_INLINE void LayOutActivationsQ4_0(const int8_t* q, int64_t n, int8_t* low, int8_t* high) {
  for (int64_t period = 0; period < n / kQ4_0WindowValues; ++period) {
    const int8_t* values = q + kQ4_0WindowValues * period;
    int8_t* l = low + 576 * period;
    int8_t* h = high + 576 * period;
    for (int i = 0; i < 576; ++i) {
      const int source = kQ4_0WindowLayout.source[i];
      l[i] = source < 0 ? int8_t{0} : values[source];
      h[i] = source < 0 ? int8_t{0} : values[source + 16];
    }
  }
}

// Window w of the period at `first`, whose laid-out activations start at byte `offset`.
template <int kLevels>
HWY_INLINE void X512Q4_0Window(const uint8_t* first, int w, const int8_t* const* low, const int8_t* const* high,
                               int64_t offset, __m512 step_first16, __m512 step_last16, __m512& acc) {
  const __m512i nibble = _mm512_set1_epi8(15);
  const __m512i raw = _mm512_loadu_si512(first + 64 * w);
  const __m512i lo = _mm512_and_si512(raw, nibble);
  const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
  const int64_t at = offset + 64 * w;
  __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(low[0] + at));
  sums = _mm512_dpbusd_epi32(sums, hi, _mm512_loadu_si512(high[0] + at));
  if (kLevels == 2) {  // as X512DotLevels: 256 * first level + second, in the second level's units
    sums = _mm512_dpbusd_epi32(_mm512_slli_epi32(sums, 8), lo, _mm512_loadu_si512(low[1] + at));
    sums = _mm512_dpbusd_epi32(sums, hi, _mm512_loadu_si512(high[1] + at));
  }
  const __m512 step = _mm512_permutex2var_ps(step_first16, _mm512_loadu_si512(kQ4_0WindowLayout.block[w]), step_last16);
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), step, acc);
}

template <int kLevels>
HWY_INLINE float X512RowDotQ4_0Windows(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x,
                                       const int8_t* const* low, const int8_t* const* high) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps();
  __m512 offset = _mm512_setzero_ps();
  const int64_t blocks = n / 32;
  for (int64_t b = 0; b < blocks; b += 32) {
    const uint8_t* first = row + b * 18;
    X86PrefetchAhead(first, 576, 256 * 18);
    // The second group's scale windows reach 36 bytes past the period: gathered in the row's last one.
    const __m512 dw_first16 = X512GroupScales<18>(first);
    const __m512 dw_last16 = blocks - b >= 34 ? X512GroupScales<18>(first + 16 * 18)
                                              : X512BlockScales<18>(first + 16 * 18, static_cast<__mmask16>(0xFFFF));
    const float* dx = X512LevelScales<kLevels>(x) + b;
    auto d_sum = [&](int64_t at) {
      return kLevels == 2 ? _mm512_add_ps(_mm512_loadu_ps(x[0].d_sum + at), _mm512_loadu_ps(x[1].d_sum + at))
                          : _mm512_loadu_ps(x[0].d_sum + at);
    };
    offset = _mm512_fmadd_ps(dw_first16, d_sum(b), offset);
    offset = _mm512_fmadd_ps(dw_last16, d_sum(b + 16), offset);
    const __m512 step_first16 = _mm512_mul_ps(dw_first16, _mm512_loadu_ps(dx));
    const __m512 step_last16 = _mm512_mul_ps(dw_last16, _mm512_loadu_ps(dx + 16));
    const int64_t at = b * 18;
    X512Q4_0Window<kLevels>(first, 0, low, high, at, step_first16, step_last16, acc0);
    X512Q4_0Window<kLevels>(first, 1, low, high, at, step_first16, step_last16, acc1);
    X512Q4_0Window<kLevels>(first, 2, low, high, at, step_first16, step_last16, acc2);
    X512Q4_0Window<kLevels>(first, 3, low, high, at, step_first16, step_last16, acc0);
    X512Q4_0Window<kLevels>(first, 4, low, high, at, step_first16, step_last16, acc1);
    X512Q4_0Window<kLevels>(first, 5, low, high, at, step_first16, step_last16, acc2);
    X512Q4_0Window<kLevels>(first, 6, low, high, at, step_first16, step_last16, acc0);
    X512Q4_0Window<kLevels>(first, 7, low, high, at, step_first16, step_last16, acc1);
    X512Q4_0Window<kLevels>(first, 8, low, high, at, step_first16, step_last16, acc2);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, _mm512_add_ps(acc1, acc2))) - 8.0f * _mm512_reduce_add_ps(offset);
}

// y[r] for rows [row_begin, row_end) with the window kernel when it applies (returns false otherwise);
// `scratch` holds kernels::decode_scratch_bytes(n) bytes, or is null.
template <int kLevels>
HWY_INLINE bool MatvecQ4_0Windows(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                                  const quant::Q8ActivationRow* x, float* y, int64_t row_begin, int64_t row_end,
                                  uint8_t* scratch_bytes) {
  if (type != WeightType::kQ4_0 || n % kQ4_0WindowValues != 0 || scratch_bytes == nullptr) return false;
  const size_t level_bytes = static_cast<size_t>(n / 32 * 18);
  int8_t* scratch = reinterpret_cast<int8_t*>(scratch_bytes);
  const int8_t* low[2] = {};
  const int8_t* high[2] = {};
  for (int level = 0; level < kLevels; ++level) {
    int8_t* l = scratch + 2 * level * level_bytes;
    LayOutActivationsQ4_0(x[level].q, n, l, l + level_bytes);
    low[level] = l;
    high[level] = l + level_bytes;
  }
  for (int64_t r = row_begin; r < row_end; ++r)
    y[r] = X512RowDotQ4_0Windows<kLevels>(data + static_cast<uint64_t>(r) * row_bytes, n, x, low, high);
  return true;
}

// out[0] = dot(row, activations in kLevels levels), for the types with a 512-bit VNNI kernel.
template <int kLevels>
HWY_INLINE bool X512RowDot(WeightType type, const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  switch (type) {
    case WeightType::kQ8_0: out[0] = X512RowDotLegacy<34, true, kLevels>(row, n, x); return true;
    case WeightType::kQ4_0: out[0] = X512RowDotLegacy<18, false, kLevels>(row, n, x); return true;
    case WeightType::kQ4_K: out[0] = X512RowDotKQuant<false, kLevels>(row, n, x); return true;
    case WeightType::kQ5_K: out[0] = X512RowDotKQuant<true, kLevels>(row, n, x); return true;
    case WeightType::kQ6_K: out[0] = X512RowDotQ6_K<kLevels>(row, n, x); return true;
    default: return false;
  }
}

#endif  // x86 with VNNI

// Dots one weight row with T quantized activation rows.
template <int T>
HWY_INLINE void RowDotQ8(WeightType type, const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x,
                         float* out) {
#ifdef BORA_KERNELS_X86_VNNI
  if (T == 1 && X512RowDot<1>(type, row, n, x, out)) return;
#endif
#ifdef BORA_KERNELS_X86_INT8
  switch (type) {
    case WeightType::kQ8_0: X86RowDotQ8_0<T>(row, n, x, out); return;
    case WeightType::kQ4_0: X86RowDotQ4_0<T>(row, n, x, out); return;
    case WeightType::kQ4_K: X86RowDotKQuant<T, false>(row, n, x, out); return;
    case WeightType::kQ5_K: X86RowDotKQuant<T, true>(row, n, x, out); return;
    case WeightType::kQ6_K: X86RowDotQ6_K<T>(row, n, x, out); return;
    default: break;
  }
#endif
  PortableRowDotQ8<T>(type, row, n, x, out);
}

template <int T>
HWY_INLINE void MatvecQ8Rows(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                             const quant::Q8ActivationRow* x, float* const* y, int64_t row_begin, int64_t row_end) {
  float out[T];
  for (int64_t r = row_begin; r < row_end; ++r) {
    RowDotQ8<T>(type, data + static_cast<uint64_t>(r) * row_bytes, n, x, out);
    for (int t = 0; t < T; ++t) y[t][r] = out[t];
  }
}

// Quantized weight types only (implementation.hpp sends float weights to the f32 kernels).
// `scratch`: kernels::decode_scratch_bytes(n) bytes for kernels that lay the activations out anew, or null.
inline void MatvecQ8Kernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                           const uint8_t* xq, float* y, int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  const quant::Q8ActivationRow x = quant::q8_activation_view(xq, n);
#ifdef BORA_KERNELS_X86_VNNI
  if (MatvecQ4_0Windows<1>(type, data, row_bytes, n, &x, y, row_begin, row_end, scratch)) return;
#else
  (void)scratch;
#endif
  MatvecQ8Rows<1>(type, data, row_bytes, n, &x, &y, row_begin, row_end);
}

// y[r] = dot(row r, hi) + dot(row r, lo) for activations quantized in two levels. With VNNI one pass
// decodes each weight block once for both levels; elsewhere the second pass reads the row from L1.
// Either way near-exact activations cost compute but no extra memory traffic.
inline void MatvecQ8TwoLevelKernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                                   const uint8_t* xq_hi, const uint8_t* xq_lo, float* y, int64_t row_begin,
                                   int64_t row_end, uint8_t* scratch) {
  const quant::Q8ActivationRow x[2] = {quant::q8_activation_view(xq_hi, n), quant::q8_activation_view(xq_lo, n)};
#ifdef BORA_KERNELS_X86_VNNI
  if (MatvecQ4_0Windows<2>(type, data, row_bytes, n, x, y, row_begin, row_end, scratch)) return;
#else
  (void)scratch;
#endif
  float out[2];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = data + static_cast<uint64_t>(r) * row_bytes;
#ifdef BORA_KERNELS_X86_VNNI
    if (X512RowDot<2>(type, row, n, x, &y[r])) continue;
#endif
    RowDotQ8<1>(type, row, n, &x[0], &out[0]);
    RowDotQ8<1>(type, row, n, &x[1], &out[1]);
    y[r] = out[0] + out[1];
  }
}

// Rows in tiles that stay in L2 while groups of four tokens stream past them; inside a tile each
// weight block is decoded once per four tokens. With VNNI, kPrefillTokens tokens at a time are
// packed into `scratch` (kernels::prefill_scratch_bytes(n) bytes) and swept over all rows.
inline void MatmulQ8Kernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                           const uint8_t* xq, int64_t n_tokens, float* y, int64_t y_stride,
                           int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  const int64_t xq_stride = quant::q8_activation_row_bytes(n);
#ifdef BORA_KERNELS_X86_VNNI
  if (scratch != nullptr && n_tokens >= kernels::kPrefillMinTokens) {
    for (int64_t t = 0; t < n_tokens; t += kPrefillTokens) {
      const int64_t count = (n_tokens - t < kPrefillTokens) ? n_tokens - t : kPrefillTokens;
      const PackedTokens packed = PackTokens(xq + t * xq_stride, xq_stride, count, n, scratch);
      float* yt = y + t * y_stride;
      switch (type) {
        case WeightType::kQ8_0: VnniMatmul<VnniQ8_0>(data, row_bytes, n, packed, count, yt, y_stride, row_begin, row_end); break;
        case WeightType::kQ4_0: VnniMatmul<VnniQ4_0>(data, row_bytes, n, packed, count, yt, y_stride, row_begin, row_end); break;
        case WeightType::kQ4_K: VnniMatmul<VnniKQuant<false>>(data, row_bytes, n, packed, count, yt, y_stride, row_begin, row_end); break;
        case WeightType::kQ5_K: VnniMatmul<VnniKQuant<true>>(data, row_bytes, n, packed, count, yt, y_stride, row_begin, row_end); break;
        case WeightType::kQ6_K: VnniMatmul<VnniQ6_K>(data, row_bytes, n, packed, count, yt, y_stride, row_begin, row_end); break;
        default: break;
      }
    }
    return;
  }
#else
  (void)scratch;
#endif
  constexpr int kTokens = 4;
  constexpr int64_t kTileRows = 16;
  for (int64_t tile = row_begin; tile < row_end; tile += kTileRows) {
    const int64_t tile_end = (row_end - tile < kTileRows) ? row_end : tile + kTileRows;
    int64_t t = 0;
    for (; t + kTokens <= n_tokens; t += kTokens) {
      quant::Q8ActivationRow x[kTokens];
      float* rows_out[kTokens];
      for (int k = 0; k < kTokens; ++k) {
        x[k] = quant::q8_activation_view(xq + (t + k) * xq_stride, n);
        rows_out[k] = y + (t + k) * y_stride;
      }
      MatvecQ8Rows<kTokens>(type, data, row_bytes, n, x, rows_out, tile, tile_end);
    }
    for (; t < n_tokens; ++t) {
      const quant::Q8ActivationRow x = quant::q8_activation_view(xq + t * xq_stride, n);
      float* row_out = y + t * y_stride;
      MatvecQ8Rows<1>(type, data, row_bytes, n, &x, &row_out, tile, tile_end);
    }
  }
}

#ifdef BORA_KERNELS_X86_VNNI
#undef BORA_KERNELS_X86_VNNI
#endif
#ifdef BORA_KERNELS_X86_INT8
#undef BORA_KERNELS_X86_INT8
HWY_DIAGNOSTICS(pop)
#endif

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_KERNELS_INL_H_ toggle
