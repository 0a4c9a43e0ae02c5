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
#include "bora/quant/weight_type.hpp"

#ifndef BORA_OPS_KERNELS_SHARED_CONSTANTS_
#define BORA_OPS_KERNELS_SHARED_CONSTANTS_
namespace bora {
namespace ops {
namespace kernels {
// Rows of weights matmul dequantizes at once; its caller provides a scratch of this many rows.
constexpr int64_t kMatmulTileRows = 4;
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

HWY_BEFORE_NAMESPACE();
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
        for (int64_t k = 0; k < tile_rows; ++k) yt[k] = DotKernel(rows[k], xt, n);
      }
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
HWY_AFTER_NAMESPACE();

#endif  // BORA_OPS_KERNELS_INL_H_ toggle
