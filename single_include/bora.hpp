// bora 0.1.0 -- single-header edition.
// GENERATED FILE, DO NOT EDIT: written by tools/amalgamate.py from include/bora/ (edit those headers
// and run `python3 tools/amalgamate.py`; CI runs `--check` and fails when this file is stale).
//
// Use: in exactly one .cpp, `#define BORA_IMPLEMENTATION` before `#include "bora.hpp"`; every
// other file includes it plainly. Link Highway and simdjson (-lhwy -lsimdjson -pthread).
// The implementation re-includes this file once per SIMD target (Highway's foreach_target.h),
// so: keep its directory on the include path (-I), or define BORA_SINGLE_HEADER_PATH to the
// name under which it can be included; and never give it #pragma once.

#ifndef BORA_SINGLE_HEADER_PATH
#define BORA_SINGLE_HEADER_PATH "bora.hpp"
#define BORA_SINGLE_HEADER_DEFAULT_PATH
#endif

#if defined(BORA_SINGLE_HEADER_KERNEL_PASS)
// Kernel pass: the implementation below re-included this file; only bora/ops/kernels-inl.h is seen.
// ---- begin bora/ops/kernels-inl.h --------------------------------------------------------------------
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
// ---- end bora/ops/kernels-inl.h ----------------------------------------------------------------------
#else  // !BORA_SINGLE_HEADER_KERNEL_PASS
// ---- begin bora/bora.hpp -----------------------------------------------------------------------------
// Why this file exists: the one header users include. Define BORA_IMPLEMENTATION in exactly one
// .cpp before including it, so the SIMD kernels for every target are compiled once.
#ifndef BORA_BORA_HPP
#define BORA_BORA_HPP

#define BORA_VERSION_MAJOR 0
#define BORA_VERSION_MINOR 1
#define BORA_VERSION_PATCH 0

// ---- begin bora/base/expected.hpp --------------------------------------------------------------------
// Why this file exists: bora reports every failure as a value (no exceptions required), so the
// library builds with -fno-exceptions and a broken file can never take the host program down.
#ifndef BORA_BASE_EXPECTED_HPP
#define BORA_BASE_EXPECTED_HPP

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

namespace bora {

enum class ErrorCode {
  kIo,               // the operating system refused (open, stat, mmap)
  kFormat,           // the bytes do not follow the file format
  kUnsupported,      // valid, but something bora does not implement (a type, an architecture)
  kMissing,          // a required tensor or key is absent
  kShape,            // a tensor's shape disagrees with the configuration
  kInvalidArgument,  // the caller asked for something impossible
  kContextFull,      // no room left in the KV cache
  kCancelled,        // a progress or abort callback said stop
};

inline const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kIo: return "io";
    case ErrorCode::kFormat: return "format";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kMissing: return "missing";
    case ErrorCode::kShape: return "shape";
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kContextFull: return "context full";
    case ErrorCode::kCancelled: return "cancelled";
  }
  return "unknown";
}

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  ErrorCode code() const { return code_; }
  const char* message() const { return message_.c_str(); }
  const std::string& str() const { return message_; }

 private:
  ErrorCode code_;
  std::string message_;
};

#if defined(__GNUC__) || defined(__clang__)
#define BORA_PRINTF_LIKE(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define BORA_PRINTF_LIKE(fmt_index, first_arg)
#endif

// printf-style construction, so messages can name the file, tensor, key and offset cheaply.
inline Error make_error(ErrorCode code, const char* fmt, ...) BORA_PRINTF_LIKE(2, 3);
inline Error make_error(ErrorCode code, const char* fmt, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof(buffer), fmt, args);
  va_end(args);
  return Error(code, buffer);
}

[[noreturn]] inline void fatal_bad_access(const Error& error) {
  std::fprintf(stderr, "bora: value() called on an error: %s\n", error.message());
  std::abort();
}

// A value or an Error. Accessing the value of an error aborts with the message (there is no
// exception to throw); check `if (!result)` first.
template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : has_value_(true) { new (&storage_.value) T(std::move(value)); }
  Expected(Error error) : has_value_(false) { new (&storage_.error) Error(std::move(error)); }
  Expected(const Expected& other) : has_value_(other.has_value_) {
    if (has_value_) new (&storage_.value) T(other.storage_.value);
    else new (&storage_.error) Error(other.storage_.error);
  }
  Expected(Expected&& other) noexcept : has_value_(other.has_value_) {
    if (has_value_) new (&storage_.value) T(std::move(other.storage_.value));
    else new (&storage_.error) Error(std::move(other.storage_.error));
  }
  Expected& operator=(Expected other) noexcept {
    destroy();
    has_value_ = other.has_value_;
    if (has_value_) new (&storage_.value) T(std::move(other.storage_.value));
    else new (&storage_.error) Error(std::move(other.storage_.error));
    return *this;
  }
  ~Expected() { destroy(); }

  bool has_value() const { return has_value_; }
  explicit operator bool() const { return has_value_; }

  T& value() & { if (!has_value_) fatal_bad_access(storage_.error); return storage_.value; }
  const T& value() const& { if (!has_value_) fatal_bad_access(storage_.error); return storage_.value; }
  T&& value() && { if (!has_value_) fatal_bad_access(storage_.error); return std::move(storage_.value); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return storage_.error; }

 private:
  void destroy() {
    if (has_value_) storage_.value.~T();
    else storage_.error.~Error();
  }
  union Storage {
    Storage() {}
    ~Storage() {}
    T value;
    Error error;
  } storage_;
  bool has_value_;
};

// Success or an Error, for operations that return nothing.
template <>
class [[nodiscard]] Expected<void> {
 public:
  Expected() = default;
  Expected(Error error) : error_(std::move(error)), ok_(false) {}
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_{ErrorCode::kInvalidArgument, ""};
  bool ok_ = true;
};

using Status = Expected<void>;

}  // namespace bora

// Propagates an error from an expression returning Expected<...> or Status.
#define BORA_RETURN_IF_ERROR(expr)               \
  do {                                           \
    auto bora_status_ = (expr);                  \
    if (!bora_status_) return bora_status_.error(); \
  } while (0)

#endif  // BORA_BASE_EXPECTED_HPP
// ---- end bora/base/expected.hpp ----------------------------------------------------------------------
// ---- begin bora/base/mapped_file.hpp -----------------------------------------------------------------
// Why this file exists: model files are gigabytes; mapping them read-only lets tensors be views into
// the page cache (zero copy, opened in milliseconds) on POSIX and Windows alike.
#ifndef BORA_BASE_MAPPED_FILE_HPP
#define BORA_BASE_MAPPED_FILE_HPP

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>


#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace bora {

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { swap(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  static Expected<MappedFile> open(const std::string& path) {
    MappedFile file;
    file.path_ = path;
#if defined(_WIN32)
    HANDLE handle = CreateFileA(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                                FILE_ATTRIBUTE_NORMAL, nullptr);
    if (handle == INVALID_HANDLE_VALUE) return make_error(ErrorCode::kIo, "%s: cannot open", path.c_str());
    LARGE_INTEGER size;
    if (!GetFileSizeEx(handle, &size)) {
      CloseHandle(handle);
      return make_error(ErrorCode::kIo, "%s: cannot read its size", path.c_str());
    }
    file.size_ = static_cast<uint64_t>(size.QuadPart);
    if (file.size_ > 0) {
      HANDLE mapping = CreateFileMappingA(handle, nullptr, PAGE_READONLY, 0, 0, nullptr);
      if (mapping == nullptr) {
        CloseHandle(handle);
        return make_error(ErrorCode::kIo, "%s: cannot map", path.c_str());
      }
      file.data_ = static_cast<const uint8_t*>(MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0));
      CloseHandle(mapping);
      if (file.data_ == nullptr) {
        CloseHandle(handle);
        return make_error(ErrorCode::kIo, "%s: cannot map", path.c_str());
      }
    }
    CloseHandle(handle);
#else
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return make_error(ErrorCode::kIo, "%s: cannot open: %s", path.c_str(), std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return make_error(ErrorCode::kIo, "%s: not a regular file", path.c_str());
    }
    file.size_ = static_cast<uint64_t>(st.st_size);
    if (file.size_ > 0) {
      void* address = mmap(nullptr, file.size_, PROT_READ, MAP_SHARED, fd, 0);
      if (address == MAP_FAILED) {
        ::close(fd);
        return make_error(ErrorCode::kIo, "%s: cannot map: %s", path.c_str(), std::strerror(errno));
      }
      file.data_ = static_cast<const uint8_t*>(address);
    }
    ::close(fd);
#endif
    return file;
  }

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void swap(MappedFile& other) {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
  }
  void release() {
    if (data_ == nullptr) return;
#if defined(_WIN32)
    UnmapViewOfFile(data_);
#else
    munmap(const_cast<uint8_t*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

}  // namespace bora

#endif  // BORA_BASE_MAPPED_FILE_HPP
// ---- end bora/base/mapped_file.hpp -------------------------------------------------------------------
// ---- begin bora/base/thread_pool.hpp -----------------------------------------------------------------
// Why this file exists: decoding calls hundreds of small parallel loops per token, so threads must be
// created once and woken cheaply; Highway 1.0.3 has no pool, and the result must not depend on the
// thread count (work is split by output rows, each computed by exactly one thread the same way).
#ifndef BORA_BASE_THREAD_POOL_HPP
#define BORA_BASE_THREAD_POOL_HPP

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace bora {

class ThreadPool {
 public:
  // `n_threads` counts the calling thread: 1 means "run everything on the caller", no workers.
  explicit ThreadPool(int n_threads = 1) {
    if (n_threads < 1) n_threads = 1;
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  int size() const { return n_threads_; }

  // Calls body(begin, end, thread_index) on contiguous, disjoint parts of [0, n) — one part per
  // thread — and returns when all are done. No allocation: the body is passed by pointer.
  // `max_threads` (0 = all) lets one pool serve both the prefill and the decode thread counts.
  template <class Body>
  void parallel_for(int64_t n, const Body& body, int max_threads = 0) {
    if (n <= 0) return;
    int threads = n_threads_;
    if (max_threads > 0 && max_threads < threads) threads = max_threads;
    const int parts = static_cast<int>(n < threads ? n : threads);
    if (parts == 1) {
      body(int64_t{0}, n, 0);
      return;
    }
    job_.context = &body;
    job_.invoke = [](const void* context, int64_t begin, int64_t end, int thread) {
      (*static_cast<const Body*>(context))(begin, end, thread);
    };
    job_.n = n;
    job_.parts = parts;
    // Every worker acknowledges every job (even with no part of it), so none can lag into the next.
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    run_part(0);
    // Workers finish within microseconds on balanced loops: spin first, then yield.
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin > 4096) std::this_thread::yield();
    }
  }

 private:
  struct Job {
    const void* context = nullptr;
    void (*invoke)(const void*, int64_t, int64_t, int) = nullptr;
    int64_t n = 0;
    int parts = 0;
  };

  void run_part(int part) {
    const int64_t begin = job_.n * part / job_.parts;
    const int64_t end = job_.n * (part + 1) / job_.parts;
    job_.invoke(job_.context, begin, end, part);
  }

  void worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      // Spin briefly for the next job (the next matmul of the same token follows at once),
      // then sleep on the condition variable so idle sessions cost no CPU.
      uint64_t now = generation_.load(std::memory_order_acquire);
      for (int spin = 0; now == seen && spin < 20000; ++spin) {
        now = generation_.load(std::memory_order_acquire);
      }
      if (now == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        now = generation_.load(std::memory_order_acquire);
      }
      seen = now;
      if (stopping_) return;
      if (index < job_.parts) run_part(index);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  Job job_;
  bool stopping_ = false;
};

}  // namespace bora

#endif  // BORA_BASE_THREAD_POOL_HPP
// ---- end bora/base/thread_pool.hpp -------------------------------------------------------------------
// ---- begin bora/io/gguf.hpp --------------------------------------------------------------------------
// Why this file exists: GGUF is how quantized Mistral/Mixtral models ship; this reader maps one file,
// checks every count, length and offset in it against the file size, and exposes metadata and
// zero-copy tensor views, so a truncated or hostile file yields an error naming what is wrong.
#ifndef BORA_IO_GGUF_HPP
#define BORA_IO_GGUF_HPP

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

// ---- begin bora/io/tensor_view.hpp -------------------------------------------------------------------
// Why this file exists: every reader (GGUF, safetensors) hands the model the same thing, a typed,
// shaped window onto bytes it does not own, so the model never cares which file format it came from.
#ifndef BORA_IO_TENSOR_VIEW_HPP
#define BORA_IO_TENSOR_VIEW_HPP

#include <cstdint>
#include <string>

// ---- begin bora/quant/weight_type.hpp ----------------------------------------------------------------
// Why this file exists: one table of the weight encodings bora reads (ggml's numbering, shared by
// GGUF and by our safetensors loader), so every layer agrees on block sizes and byte counts.
#ifndef BORA_QUANT_WEIGHT_TYPE_HPP
#define BORA_QUANT_WEIGHT_TYPE_HPP

#include <cstdint>

namespace bora {

// Values are ggml's type ids, as stored in GGUF tensor infos.
enum class WeightType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct WeightTypeInfo {
  const char* name;
  uint32_t block_elements;  // values per block
  uint32_t block_bytes;     // bytes per block
};

// Returns false for ggml types bora does not implement.
inline bool weight_type_from_ggml(uint32_t ggml_type, WeightType* out) {
  switch (ggml_type) {
    case 0: case 1: case 2: case 8: case 12: case 13: case 14: case 30:
      *out = static_cast<WeightType>(ggml_type);
      return true;
    default:
      return false;
  }
}

inline WeightTypeInfo weight_type_info(WeightType type) {
  switch (type) {
    case WeightType::kF32: return {"F32", 1, 4};
    case WeightType::kF16: return {"F16", 1, 2};
    case WeightType::kBF16: return {"BF16", 1, 2};
    case WeightType::kQ8_0: return {"Q8_0", 32, 34};
    case WeightType::kQ4_0: return {"Q4_0", 32, 18};
    case WeightType::kQ4_K: return {"Q4_K", 256, 144};
    case WeightType::kQ5_K: return {"Q5_K", 256, 176};
    case WeightType::kQ6_K: return {"Q6_K", 256, 210};
  }
  return {"?", 1, 0};
}

inline const char* weight_type_name(WeightType type) { return weight_type_info(type).name; }

// Bytes of one row of `elements` values; false when `elements` is not a whole number of blocks.
inline bool weight_row_bytes(WeightType type, uint64_t elements, uint64_t* bytes) {
  const WeightTypeInfo info = weight_type_info(type);
  if (info.block_bytes == 0 || elements % info.block_elements != 0) return false;
  *bytes = elements / info.block_elements * info.block_bytes;
  return true;
}

}  // namespace bora

#endif  // BORA_QUANT_WEIGHT_TYPE_HPP
// ---- end bora/quant/weight_type.hpp ------------------------------------------------------------------

namespace bora {

// Dimensions follow ggml: ne[0] is the innermost (row length = input features of a matrix),
// so a torch/safetensors [out, in] matrix has ne = {in, out, 1, 1}. Unused dims are 1.
struct TensorView {
  std::string name;
  WeightType type = WeightType::kF32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  const uint8_t* data = nullptr;  // points into a mapped file (or a buffer the loader owns)
  uint64_t bytes = 0;

  int64_t row_length() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  int64_t elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const {
    uint64_t b = 0;
    weight_row_bytes(type, static_cast<uint64_t>(ne[0]), &b);
    return b;
  }
  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes(); }
  bool valid() const { return data != nullptr; }
};

}  // namespace bora

#endif  // BORA_IO_TENSOR_VIEW_HPP
// ---- end bora/io/tensor_view.hpp ---------------------------------------------------------------------

namespace bora {

// Overflow-checked arithmetic for sizes read from files (shared by the io/ readers).
namespace io_detail {

inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

inline bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  if (b > std::numeric_limits<uint64_t>::max() - a) return false;
  *out = a + b;
  return true;
}

// Element count of a shape, refusing anything that does not fit a signed 64-bit count.
inline bool checked_elements(const int64_t* ne, int n_dims, uint64_t* out) {
  uint64_t total = 1;
  for (int i = 0; i < n_dims; ++i) {
    if (ne[i] < 0 || !checked_mul(total, static_cast<uint64_t>(ne[i]), &total)) return false;
  }
  if (total > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  *out = total;
  return true;
}

// Explicit little-endian loads: GGUF and safetensors are little-endian on every host.
inline uint64_t load_le(const uint8_t* p, int n_bytes) {
  uint64_t v = 0;
  for (int i = n_bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint32_t load_le_u32(const uint8_t* p) { return static_cast<uint32_t>(load_le(p, 4)); }
inline uint64_t load_le_u64(const uint8_t* p) { return load_le(p, 8); }

}  // namespace io_detail

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

inline bool gguf_type_is_known(uint32_t id) { return id <= 12; }

inline const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kU8: return "u8";
    case GgufType::kI8: return "i8";
    case GgufType::kU16: return "u16";
    case GgufType::kI16: return "i16";
    case GgufType::kU32: return "u32";
    case GgufType::kI32: return "i32";
    case GgufType::kF32: return "f32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kU64: return "u64";
    case GgufType::kI64: return "i64";
    case GgufType::kF64: return "f64";
  }
  return "unknown";
}

// Bytes of one value of a fixed-size type; 0 for strings and arrays (variable length).
inline uint64_t gguf_scalar_bytes(GgufType type) {
  switch (type) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    case GgufType::kU64: case GgufType::kI64: case GgufType::kF64: return 8;
    case GgufType::kString: case GgufType::kArray: return 0;
  }
  return 0;
}

inline bool gguf_type_is_integer(GgufType type) {
  switch (type) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kU16: case GgufType::kI16:
    case GgufType::kU32: case GgufType::kI32: case GgufType::kU64: case GgufType::kI64: return true;
    default: return false;
  }
}

inline bool gguf_type_is_signed(GgufType type) {
  return type == GgufType::kI8 || type == GgufType::kI16 || type == GgufType::kI32 ||
         type == GgufType::kI64;
}

// ggml's names for its type ids, so "unsupported type" errors say which type the file used.
inline const char* ggml_type_name(uint32_t id) {
  static const char* const kNames[] = {
      "F32", "F16", "Q4_0", "Q4_1", "Q4_2(removed)", "Q4_3(removed)", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
      "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
  if (id < sizeof(kNames) / sizeof(kNames[0])) return kNames[id];
  return "unknown";
}

// One metadata value. Scalars: `raw` points at the little-endian bytes. Strings: `raw` points at the
// UTF-8 bytes (raw_bytes = length, no terminator). Arrays: element type and count, and `raw` spans
// all encoded elements (strings inside are u64-length-prefixed, nested arrays are fully encoded).
// `raw` points into the file's bytes, which the GgufFile keeps alive.
struct GgufValue {
  GgufType type = GgufType::kU8;
  GgufType array_type = GgufType::kU8;  // meaningful only when type == kArray
  uint64_t array_count = 0;
  const uint8_t* raw = nullptr;
  uint64_t raw_bytes = 0;

  bool is_array() const { return type == GgufType::kArray; }
  std::string_view string_view() const {  // only for type == kString
    return std::string_view(reinterpret_cast<const char*>(raw), static_cast<size_t>(raw_bytes));
  }
};

namespace gguf_detail {

constexpr uint64_t kMinKvBytes = 8 + 4 + 1;          // empty key, type, smallest value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims, type, offset (0 dims)
constexpr int kMaxArrayDepth = 8;
constexpr int kMaxDims = 4;

// Reads GGUF primitives, reporting where the file ended if a read does not fit.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  uint64_t offset() const { return offset_; }
  uint64_t remaining() const { return size_ - offset_; }
  const uint8_t* here() const { return data_ + offset_; }

  Status need(uint64_t bytes, const char* what, std::string_view subject) const {
    if (bytes > remaining()) {
      const char* quote = subject.empty() ? "" : "'";
      return make_error(ErrorCode::kFormat,
                        "%s: file is truncated: it ends at byte offset %" PRIu64 " while reading %s%s%.*s%s "
                        "(%" PRIu64 " bytes needed)",
                        file_.c_str(), size_, what, quote, static_cast<int>(subject.size()), subject.data(), quote,
                        bytes);
    }
    return {};
  }
  Status read_u32(uint32_t* out, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(4, what, subject));
    *out = io_detail::load_le_u32(here());
    offset_ += 4;
    return {};
  }
  Status read_u64(uint64_t* out, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(8, what, subject));
    *out = io_detail::load_le_u64(here());
    offset_ += 8;
    return {};
  }
  Status skip(uint64_t bytes, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(bytes, what, subject));
    offset_ += bytes;
    return {};
  }
  // A GGUF string: u64 length, then that many bytes.
  Status read_string(std::string_view* out, const char* what, std::string_view subject = {}) {
    uint64_t length = 0;
    const uint64_t length_offset = offset_;
    BORA_RETURN_IF_ERROR(read_u64(&length, what, subject));
    if (length > remaining()) {
      return make_error(ErrorCode::kFormat,
                        "%s: string length %" PRIu64 " at byte offset %" PRIu64
                        " runs past the end of the file (size %" PRIu64 ") while reading %s%s%.*s%s",
                        file_.c_str(), length, length_offset, size_, what, subject.empty() ? "" : "'",
                        static_cast<int>(subject.size()), subject.data(), subject.empty() ? "" : "'");
    }
    *out = std::string_view(reinterpret_cast<const char*>(here()), static_cast<size_t>(length));
    offset_ += length;
    return {};
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  const std::string& file_;
  uint64_t offset_ = 0;
};

// Skips over an array's elements (already past its element type and count), validating nested ones.
inline Status skip_array_elements(Cursor& cursor, GgufType element_type, uint64_t count, int depth,
                                  const std::string& file, std::string_view key) {
  const int key_len = static_cast<int>(key.size());
  if (element_type == GgufType::kString) {
    if (count > cursor.remaining() / 8) {
      return make_error(ErrorCode::kFormat,
                        "%s: metadata key '%.*s': array of %" PRIu64 " strings cannot fit in the %" PRIu64
                        " bytes left after byte offset %" PRIu64,
                        file.c_str(), key_len, key.data(), count, cursor.remaining(), cursor.offset());
    }
    for (uint64_t i = 0; i < count; ++i) {
      std::string_view ignored;
      BORA_RETURN_IF_ERROR(cursor.read_string(&ignored, "a string element of metadata key ", key));
    }
    return {};
  }
  if (element_type == GgufType::kArray) {
    if (depth >= kMaxArrayDepth) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s': arrays nested deeper than %d levels",
                        file.c_str(), key_len, key.data(), kMaxArrayDepth);
    }
    if (count > cursor.remaining() / 12) {
      return make_error(ErrorCode::kFormat,
                        "%s: metadata key '%.*s': array of %" PRIu64 " arrays cannot fit in the %" PRIu64
                        " bytes left after byte offset %" PRIu64,
                        file.c_str(), key_len, key.data(), count, cursor.remaining(), cursor.offset());
    }
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t type_offset = cursor.offset();
      uint32_t inner_type_id = 0;
      uint64_t inner_count = 0;
      BORA_RETURN_IF_ERROR(cursor.read_u32(&inner_type_id, "a nested array type of metadata key ", key));
      if (!gguf_type_is_known(inner_type_id)) {
        return make_error(ErrorCode::kFormat,
                          "%s: metadata key '%.*s': nested array has unknown element type %u at byte offset %" PRIu64,
                          file.c_str(), key_len, key.data(), inner_type_id, type_offset);
      }
      BORA_RETURN_IF_ERROR(cursor.read_u64(&inner_count, "a nested array count of metadata key ", key));
      BORA_RETURN_IF_ERROR(
          skip_array_elements(cursor, static_cast<GgufType>(inner_type_id), inner_count, depth + 1, file, key));
    }
    return {};
  }
  uint64_t bytes = 0;
  if (!io_detail::checked_mul(count, gguf_scalar_bytes(element_type), &bytes) || bytes > cursor.remaining()) {
    return make_error(ErrorCode::kFormat,
                      "%s: metadata key '%.*s': array of %" PRIu64 " %s values runs past the end of the file "
                      "(%" PRIu64 " bytes left after byte offset %" PRIu64 ")",
                      file.c_str(), key_len, key.data(), count, gguf_type_name(element_type), cursor.remaining(),
                      cursor.offset());
  }
  return cursor.skip(bytes, "array elements of metadata key ", key);
}

inline double load_scalar_as_double(GgufType type, const uint8_t* p) {
  switch (type) {
    case GgufType::kF32: {
      const uint32_t bits = io_detail::load_le_u32(p);
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case GgufType::kF64: {
      const uint64_t bits = io_detail::load_le_u64(p);
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
    default: return 0.0;
  }
}

// Integer scalar of any width, as a sign flag plus magnitude-preserving 64-bit pieces.
struct IntegerValue {
  bool negative = false;
  uint64_t as_unsigned = 0;  // valid when !negative
  int64_t as_signed = 0;     // valid when negative, or when as_unsigned fits
};

inline IntegerValue load_integer(GgufType type, const uint8_t* p) {
  IntegerValue v;
  const uint64_t width = gguf_scalar_bytes(type);
  uint64_t bits = io_detail::load_le(p, static_cast<int>(width));
  if (gguf_type_is_signed(type)) {
    const uint64_t sign_bit = uint64_t{1} << (width * 8 - 1);
    int64_t value;
    if (width < 8 && (bits & sign_bit)) bits |= ~((sign_bit << 1) - 1);  // sign-extend
    std::memcpy(&value, &bits, 8);
    v.negative = value < 0;
    v.as_signed = value;
    v.as_unsigned = v.negative ? 0 : static_cast<uint64_t>(value);
  } else {
    v.as_unsigned = bits;
    v.as_signed = bits <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? static_cast<int64_t>(bits) : 0;
  }
  return v;
}

}  // namespace gguf_detail

class GgufFile {
 public:
  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // Maps the file read-only and parses it; tensor views point into the mapping, which lives as
  // long as this object (moving the object does not move the mapping).
  static Expected<GgufFile> open(const std::string& path) {
    Expected<MappedFile> mapped = MappedFile::open(path);
    if (!mapped) return mapped.error();
    auto mapping = std::make_unique<MappedFile>(std::move(mapped.value()));
    Expected<GgufFile> parsed = parse(mapping->data(), mapping->size(), path);
    if (!parsed) return parsed.error();
    parsed->mapping_ = std::move(mapping);
    return parsed;
  }

  // Parses bytes the caller keeps alive for the lifetime of the result (tests, in-memory files).
  static Expected<GgufFile> parse(const uint8_t* data, uint64_t size, std::string name) {
    GgufFile file;
    file.name_ = std::move(name);
    file.data_ = data;
    file.file_size_ = size;
    if (data == nullptr && size != 0) {
      return make_error(ErrorCode::kInvalidArgument, "%s: null data with size %" PRIu64, file.name_.c_str(), size);
    }
    BORA_RETURN_IF_ERROR(file.parse_all());
    return file;
  }

  uint32_t version() const { return version_; }
  const std::string& name() const { return name_; }
  uint64_t file_size() const { return file_size_; }
  const uint8_t* data() const { return data_; }  // the whole file's bytes
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // where the tensor data section starts

  const GgufValue* find(std::string_view key) const {
    auto it = key_index_.find(std::string(key));
    return it == key_index_.end() ? nullptr : &values_[it->second];
  }

  Expected<uint64_t> get_uint(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (!gguf_type_is_integer(v->type)) return wrong_type(key, *v, "an integer");
    const gguf_detail::IntegerValue i = gguf_detail::load_integer(v->type, v->raw);
    if (i.negative) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' is %" PRId64 ", expected a non-negative integer",
                        name_.c_str(), static_cast<int>(key.size()), key.data(), i.as_signed);
    }
    return i.as_unsigned;
  }

  Expected<int64_t> get_int(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (!gguf_type_is_integer(v->type)) return wrong_type(key, *v, "an integer");
    const gguf_detail::IntegerValue i = gguf_detail::load_integer(v->type, v->raw);
    if (!i.negative && i.as_unsigned > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' is %" PRIu64 ", too large for a signed 64-bit integer",
                        name_.c_str(), static_cast<int>(key.size()), key.data(), i.as_unsigned);
    }
    return i.as_signed;
  }

  Expected<double> get_float(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type == GgufType::kF32 || v->type == GgufType::kF64) return gguf_detail::load_scalar_as_double(v->type, v->raw);
    if (gguf_type_is_integer(v->type)) {
      const gguf_detail::IntegerValue i = gguf_detail::load_integer(v->type, v->raw);
      return i.negative ? static_cast<double>(i.as_signed) : static_cast<double>(i.as_unsigned);
    }
    return wrong_type(key, *v, "a number");
  }

  Expected<bool> get_bool(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kBool) return wrong_type(key, *v, "bool");
    return v->raw[0] != 0;
  }

  Expected<std::string> get_string(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kString) return wrong_type(key, *v, "string");
    return std::string(v->string_view());
  }

  Expected<std::vector<std::string>> get_string_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kArray || v->array_type != GgufType::kString) return wrong_type(key, *v, "array of string");
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(v->array_count));  // validated at parse: count * 8 <= raw_bytes
    const uint8_t* p = v->raw;
    for (uint64_t i = 0; i < v->array_count; ++i) {  // lengths were validated when the file was parsed
      const uint64_t length = io_detail::load_le_u64(p);
      out.emplace_back(reinterpret_cast<const char*>(p + 8), static_cast<size_t>(length));
      p += 8 + length;
    }
    return out;
  }

  Expected<std::vector<float>> get_f32_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kArray || (v->array_type != GgufType::kF32 && v->array_type != GgufType::kF64)) {
      return wrong_type(key, *v, "array of f32");
    }
    const uint64_t width = gguf_scalar_bytes(v->array_type);
    std::vector<float> out(static_cast<size_t>(v->array_count));
    for (uint64_t i = 0; i < v->array_count; ++i) {
      out[i] = static_cast<float>(gguf_detail::load_scalar_as_double(v->array_type, v->raw + i * width));
    }
    return out;
  }

  Expected<std::vector<int32_t>> get_i32_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kArray || !gguf_type_is_integer(v->array_type)) {
      return wrong_type(key, *v, "array of integers");
    }
    const uint64_t width = gguf_scalar_bytes(v->array_type);
    std::vector<int32_t> out(static_cast<size_t>(v->array_count));
    for (uint64_t i = 0; i < v->array_count; ++i) {
      const gguf_detail::IntegerValue e = gguf_detail::load_integer(v->array_type, v->raw + i * width);
      const bool fits = e.negative ? e.as_signed >= std::numeric_limits<int32_t>::min()
                                   : e.as_unsigned <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
      if (!fits) {
        return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s': element %" PRIu64 " does not fit in i32",
                          name_.c_str(), static_cast<int>(key.size()), key.data(), i);
      }
      out[i] = static_cast<int32_t>(e.negative ? e.as_signed : static_cast<int64_t>(e.as_unsigned));
    }
    return out;
  }

  const std::vector<std::string>& keys() const { return keys_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }

  const TensorView* find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

 private:
  GgufFile() = default;

  Error missing(std::string_view key) const {
    return make_error(ErrorCode::kMissing, "%s: metadata key '%.*s' is missing", name_.c_str(),
                      static_cast<int>(key.size()), key.data());
  }
  Error wrong_type(std::string_view key, const GgufValue& v, const char* expected) const {
    if (v.type == GgufType::kArray) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' has type array of %s, expected %s", name_.c_str(),
                        static_cast<int>(key.size()), key.data(), gguf_type_name(v.array_type), expected);
    }
    return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' has type %s, expected %s", name_.c_str(),
                      static_cast<int>(key.size()), key.data(), gguf_type_name(v.type), expected);
  }

  Status parse_all() {
    const char* file = name_.c_str();
    gguf_detail::Cursor cursor(data_, file_size_, name_);
    if (file_size_ < 4 || std::memcmp(data_, "GGUF", 4) != 0) {
      return make_error(ErrorCode::kFormat, "%s: not a GGUF file (the first 4 bytes are not \"GGUF\")", file);
    }
    BORA_RETURN_IF_ERROR(cursor.skip(4, "the magic"));
    BORA_RETURN_IF_ERROR(cursor.read_u32(&version_, "the GGUF version"));
    if (version_ == 1) {
      return make_error(ErrorCode::kUnsupported, "%s: GGUF version 1 is not supported (only versions 2 and 3); "
                        "re-convert the model with a current converter", file);
    }
    if (version_ != 2 && version_ != 3) {
      if ((version_ & 0xFFFFu) == 0 && version_ != 0) {
        return make_error(ErrorCode::kUnsupported, "%s: GGUF version field 0x%08x looks big-endian; only "
                          "little-endian GGUF is supported", file, version_);
      }
      return make_error(ErrorCode::kUnsupported, "%s: GGUF version %u is not supported (only versions 2 and 3)",
                        file, version_);
    }
    uint64_t n_tensors = 0, n_kv = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u64(&n_tensors, "the tensor count"));
    BORA_RETURN_IF_ERROR(cursor.read_u64(&n_kv, "the metadata key/value count"));
    // Counts are checked against the bytes that could hold them before anything is reserved.
    if (n_kv > cursor.remaining() / gguf_detail::kMinKvBytes) {
      return make_error(ErrorCode::kFormat, "%s: metadata count %" PRIu64 " is absurd: %" PRIu64
                        " bytes after the header cannot hold that many key/value pairs (or the file is truncated)", file, n_kv, cursor.remaining());
    }
    if (n_tensors > cursor.remaining() / gguf_detail::kMinTensorInfoBytes ||
        n_kv * gguf_detail::kMinKvBytes + n_tensors * gguf_detail::kMinTensorInfoBytes > cursor.remaining()) {
      return make_error(ErrorCode::kFormat, "%s: tensor count %" PRIu64 " is absurd: %" PRIu64
                        " bytes after the header cannot hold that many tensor infos (and %" PRIu64 " metadata entries)",
                        file, n_tensors, cursor.remaining(), n_kv);
    }

    keys_.reserve(static_cast<size_t>(n_kv));
    values_.reserve(static_cast<size_t>(n_kv));
    for (uint64_t i = 0; i < n_kv; ++i) BORA_RETURN_IF_ERROR(parse_kv(cursor, i));

    alignment_ = 32;
    if (const GgufValue* a = find("general.alignment")) {
      if (!gguf_type_is_integer(a->type)) {
        return make_error(ErrorCode::kFormat, "%s: metadata key 'general.alignment' has type %s, expected u32", file,
                          gguf_type_name(a->type));
      }
      const gguf_detail::IntegerValue value = gguf_detail::load_integer(a->type, a->raw);
      if (value.negative || value.as_unsigned == 0 || value.as_unsigned > (uint64_t{1} << 30) ||
          (value.as_unsigned & (value.as_unsigned - 1)) != 0) {
        return make_error(ErrorCode::kFormat, "%s: metadata key 'general.alignment' is %" PRId64
                          ", expected a power of two from 1 to 2^30", file,
                          value.negative ? value.as_signed : static_cast<int64_t>(value.as_unsigned));
      }
      alignment_ = static_cast<uint32_t>(value.as_unsigned);
    }

    // Re-check the tensor count against what the metadata left.
    if (n_tensors > cursor.remaining() / gguf_detail::kMinTensorInfoBytes) {
      return make_error(ErrorCode::kFormat, "%s: tensor count %" PRIu64 " is absurd: only %" PRIu64
                        " bytes remain after the metadata at byte offset %" PRIu64 " (or the file is truncated)", file, n_tensors,
                        cursor.remaining(), cursor.offset());
    }
    tensors_.reserve(static_cast<size_t>(n_tensors));
    std::vector<uint64_t> offsets;
    offsets.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) BORA_RETURN_IF_ERROR(parse_tensor_info(cursor, i, &offsets));

    const uint64_t infos_end = cursor.offset();
    data_offset_ = infos_end + (alignment_ - infos_end % alignment_) % alignment_;  // infos_end <= size < 2^63
    for (size_t i = 0; i < tensors_.size(); ++i) BORA_RETURN_IF_ERROR(place_tensor(tensors_[i], offsets[i]));
    return {};
  }

  Status parse_kv(gguf_detail::Cursor& cursor, uint64_t index) {
    const char* file = name_.c_str();
    const uint64_t entry_offset = cursor.offset();
    std::string_view key;
    char what[96];
    std::snprintf(what, sizeof(what), "the key of metadata entry %" PRIu64, index);
    BORA_RETURN_IF_ERROR(cursor.read_string(&key, what));
    const int key_len = static_cast<int>(key.size());
    if (key_index_.count(std::string(key)) != 0) {
      return make_error(ErrorCode::kFormat, "%s: duplicate metadata key '%.*s' at byte offset %" PRIu64, file, key_len,
                        key.data(), entry_offset);
    }
    uint32_t type_id = 0;
    const uint64_t type_offset = cursor.offset();
    BORA_RETURN_IF_ERROR(cursor.read_u32(&type_id, "the value type of metadata key ", key));
    if (!gguf_type_is_known(type_id)) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' has unknown value type %u at byte offset %" PRIu64,
                        file, key_len, key.data(), type_id, type_offset);
    }
    GgufValue value;
    value.type = static_cast<GgufType>(type_id);
    if (value.type == GgufType::kString) {
      std::string_view text;
      BORA_RETURN_IF_ERROR(cursor.read_string(&text, "the string value of metadata key ", key));
      value.raw = reinterpret_cast<const uint8_t*>(text.data());
      value.raw_bytes = text.size();
    } else if (value.type == GgufType::kArray) {
      uint32_t element_type_id = 0;
      const uint64_t element_type_offset = cursor.offset();
      BORA_RETURN_IF_ERROR(cursor.read_u32(&element_type_id, "the array element type of metadata key ", key));
      if (!gguf_type_is_known(element_type_id)) {
        return make_error(ErrorCode::kFormat,
                          "%s: metadata key '%.*s' is an array of unknown element type %u at byte offset %" PRIu64, file,
                          key_len, key.data(), element_type_id, element_type_offset);
      }
      value.array_type = static_cast<GgufType>(element_type_id);
      BORA_RETURN_IF_ERROR(cursor.read_u64(&value.array_count, "the array length of metadata key ", key));
      const uint64_t start = cursor.offset();
      value.raw = cursor.here();
      BORA_RETURN_IF_ERROR(
          gguf_detail::skip_array_elements(cursor, value.array_type, value.array_count, 1, name_, key));
      value.raw_bytes = cursor.offset() - start;
    } else {
      const uint64_t bytes = gguf_scalar_bytes(value.type);
      value.raw = cursor.here();
      value.raw_bytes = bytes;
      BORA_RETURN_IF_ERROR(cursor.skip(bytes, "the value of metadata key ", key));
    }
    key_index_.emplace(std::string(key), values_.size());
    keys_.emplace_back(key);
    values_.push_back(value);
    return {};
  }

  Status parse_tensor_info(gguf_detail::Cursor& cursor, uint64_t index, std::vector<uint64_t>* offsets) {
    const char* file = name_.c_str();
    const uint64_t info_offset = cursor.offset();
    std::string_view name;
    char what[96];
    std::snprintf(what, sizeof(what), "the name of tensor info %" PRIu64, index);
    BORA_RETURN_IF_ERROR(cursor.read_string(&name, what));
    const int name_len = static_cast<int>(name.size());
    if (tensor_index_.count(std::string(name)) != 0) {
      return make_error(ErrorCode::kFormat, "%s: duplicate tensor name '%.*s' (tensor info %" PRIu64
                        " at byte offset %" PRIu64 ")", file, name_len, name.data(), index, info_offset);
    }
    TensorView view;
    view.name = std::string(name);
    uint32_t n_dims = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u32(&n_dims, "the dimension count of tensor ", name));
    if (n_dims > static_cast<uint32_t>(gguf_detail::kMaxDims)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' has %u dimensions (at most %d are supported)", file,
                        name_len, name.data(), n_dims, gguf_detail::kMaxDims);
    }
    view.n_dims = static_cast<int>(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t extent = 0;
      BORA_RETURN_IF_ERROR(cursor.read_u64(&extent, "a dimension of tensor ", name));
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' dimension %u is %" PRIu64 ", too large", file, name_len,
                          name.data(), d, extent);
      }
      view.ne[d] = static_cast<int64_t>(extent);
    }
    uint64_t elements = 0;
    if (!io_detail::checked_elements(view.ne, view.n_dims, &elements)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' has an element count that overflows 64 bits", file,
                        name_len, name.data());
    }
    uint32_t ggml_type = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u32(&ggml_type, "the type of tensor ", name));
    if (!weight_type_from_ggml(ggml_type, &view.type)) {
      return make_error(ErrorCode::kUnsupported, "%s: tensor '%.*s' has ggml type %u (%s), which bora does not support",
                        file, name_len, name.data(), ggml_type, ggml_type_name(ggml_type));
    }
    uint64_t row_bytes = 0;
    const WeightTypeInfo info = weight_type_info(view.type);
    if (!weight_row_bytes(view.type, static_cast<uint64_t>(view.ne[0]), &row_bytes)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' of type %s has rows of %" PRId64
                        " values, not a multiple of the block size %u", file, name_len, name.data(), info.name,
                        view.ne[0], info.block_elements);
    }
    const uint64_t rows = view.ne[0] == 0 ? 0 : elements / static_cast<uint64_t>(view.ne[0]);
    if (!io_detail::checked_mul(row_bytes, rows, &view.bytes)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' byte size overflows 64 bits", file, name_len, name.data());
    }
    uint64_t offset = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u64(&offset, "the data offset of tensor ", name));
    tensor_index_.emplace(view.name, tensors_.size());
    tensors_.push_back(std::move(view));
    offsets->push_back(offset);
    return {};
  }

  Status place_tensor(TensorView& view, uint64_t offset) {
    const char* file = name_.c_str();
    if (offset % alignment_ != 0) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%s' data offset %" PRIu64 " is not a multiple of the alignment %u",
                        file, view.name.c_str(), offset, alignment_);
    }
    uint64_t begin = 0, end = 0;
    if (!io_detail::checked_add(data_offset_, offset, &begin) || !io_detail::checked_add(begin, view.bytes, &end) ||
        end > file_size_) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%s' data (%" PRIu64 " bytes at offset %" PRIu64
                        " into the data section, which starts at byte offset %" PRIu64 ") lies outside the file "
                        "(size %" PRIu64 ")", file, view.name.c_str(), view.bytes, offset, data_offset_, file_size_);
    }
    view.data = data_ + begin;
    return {};
  }

  std::string name_;
  const uint8_t* data_ = nullptr;
  uint64_t file_size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::vector<GgufValue> values_;
  std::unordered_map<std::string, size_t> key_index_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  std::unique_ptr<MappedFile> mapping_;  // null for parse(); owns the bytes for open()
};

}  // namespace bora

#endif  // BORA_IO_GGUF_HPP
// ---- end bora/io/gguf.hpp ----------------------------------------------------------------------------
// ---- begin bora/io/json_config.hpp -------------------------------------------------------------------
// Why this file exists: a model's sizes come from one of three places (Mistral's params.json,
// Hugging Face's config.json, GGUF metadata); each is read here into the one ModelConfig, with the
// defaults each ecosystem applies, and checked so absurd sizes never reach an allocation.
#ifndef BORA_IO_JSON_CONFIG_HPP
#define BORA_IO_JSON_CONFIG_HPP

#include <simdjson.h>

#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

// ---- begin bora/model/config.hpp ---------------------------------------------------------------------
// Why this file exists: the sizes of a model (layers, widths, heads, window, experts) are runtime
// values read from the file; this is the one struct every format's reader fills in.
#ifndef BORA_MODEL_CONFIG_HPP
#define BORA_MODEL_CONFIG_HPP

#include <cstdint>
#include <string>

namespace bora {

// How RoPE pairs the dimensions of a head: Mistral's reference and GGUF rotate adjacent pairs
// (2i, 2i+1); Hugging Face checkpoints permute q/k rows so that rotate-half pairs (i, i + d/2)
// compute the same function. Using the matching pairing keeps HF weights zero-copy.
enum class RopePairing { kAdjacent, kHalfSplit };

struct ModelConfig {
  std::string architecture;  // "llama" (GGUF), "mistral"/"mixtral" (HF), "mistral" (params.json)
  int64_t dim = 0;           // embedding width
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t hidden_dim = 0;    // FFN width (per expert for MoE)
  int64_t vocab_size = 0;
  int64_t context_length = 0;  // trained context, 0 when the file does not say
  int64_t sliding_window = 0;  // 0 = no window
  int64_t n_experts = 0;       // 0 = dense
  int64_t n_experts_used = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopePairing rope_pairing = RopePairing::kAdjacent;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
};

}  // namespace bora

#endif  // BORA_MODEL_CONFIG_HPP
// ---- end bora/model/config.hpp -----------------------------------------------------------------------

namespace bora {

// Limits far above any real Mistral-family model, low enough that sizes derived from them
// (dim * vocab, layers * window * heads...) cannot overflow 64 bits.
struct ConfigLimits {
  static constexpr int64_t kMaxDim = int64_t{1} << 20;
  static constexpr int64_t kMaxLayers = 4096;
  static constexpr int64_t kMaxHeads = int64_t{1} << 16;
  static constexpr int64_t kMaxVocab = int64_t{1} << 24;
  static constexpr int64_t kMaxContext = int64_t{1} << 30;
  static constexpr int64_t kMaxExperts = 4096;
};

// Checks the sizes every format shares; `name` is the file named in the error.
inline Status validate_model_config(const ModelConfig& c, const std::string& name) {
  const char* file = name.c_str();
  auto in_range = [&](int64_t value, int64_t low, int64_t high, const char* what) -> Status {
    if (value < low || value >= high) {
      return make_error(ErrorCode::kFormat, "%s: %s is %" PRId64 ", expected %" PRId64 " <= %s < %" PRId64, file, what,
                        value, low, what, high);
    }
    return {};
  };
  BORA_RETURN_IF_ERROR(in_range(c.dim, 1, ConfigLimits::kMaxDim, "dim"));
  BORA_RETURN_IF_ERROR(in_range(c.n_layers, 1, ConfigLimits::kMaxLayers, "n_layers"));
  BORA_RETURN_IF_ERROR(in_range(c.n_heads, 1, ConfigLimits::kMaxHeads, "n_heads"));
  BORA_RETURN_IF_ERROR(in_range(c.n_kv_heads, 1, ConfigLimits::kMaxHeads, "n_kv_heads"));
  BORA_RETURN_IF_ERROR(in_range(c.head_dim, 2, ConfigLimits::kMaxDim, "head_dim"));
  BORA_RETURN_IF_ERROR(in_range(c.hidden_dim, 1, ConfigLimits::kMaxDim, "hidden_dim"));
  BORA_RETURN_IF_ERROR(in_range(c.vocab_size, 1, ConfigLimits::kMaxVocab, "vocab_size"));
  BORA_RETURN_IF_ERROR(in_range(c.context_length, 0, ConfigLimits::kMaxContext, "context_length"));
  BORA_RETURN_IF_ERROR(in_range(c.sliding_window, 0, ConfigLimits::kMaxContext, "sliding_window"));
  BORA_RETURN_IF_ERROR(in_range(c.n_experts, 0, ConfigLimits::kMaxExperts, "n_experts"));
  if (c.n_heads % c.n_kv_heads != 0) {
    return make_error(ErrorCode::kFormat, "%s: n_heads (%" PRId64 ") is not a multiple of n_kv_heads (%" PRId64 ")",
                      file, c.n_heads, c.n_kv_heads);
  }
  if (c.head_dim % 2 != 0) {
    return make_error(ErrorCode::kFormat, "%s: head_dim is %" PRId64 ", but RoPE needs an even head_dim", file,
                      c.head_dim);
  }
  if (c.n_heads * c.head_dim >= ConfigLimits::kMaxDim) {
    return make_error(ErrorCode::kFormat, "%s: n_heads * head_dim = %" PRId64 " is absurdly large", file,
                      c.n_heads * c.head_dim);
  }
  if (c.n_experts == 0 && c.n_experts_used != 0) {
    return make_error(ErrorCode::kFormat, "%s: %" PRId64 " experts used per token, but the model has no experts", file,
                      c.n_experts_used);
  }
  if (c.n_experts > 0 && (c.n_experts_used < 1 || c.n_experts_used > c.n_experts)) {
    return make_error(ErrorCode::kFormat, "%s: experts used per token is %" PRId64 ", expected 1..%" PRId64, file,
                      c.n_experts_used, c.n_experts);
  }
  if (!(c.norm_eps > 0.0f) || !(c.norm_eps < 1.0f)) {
    return make_error(ErrorCode::kFormat, "%s: norm_eps is %g, expected 0 < norm_eps < 1", file,
                      static_cast<double>(c.norm_eps));
  }
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta)) {
    return make_error(ErrorCode::kFormat, "%s: rope_theta is %g, expected a positive finite number", file,
                      static_cast<double>(c.rope_theta));
  }
  return {};
}

namespace config_detail {

inline const char* json_type_name(simdjson::dom::element_type type) {
  switch (type) {
    case simdjson::dom::element_type::ARRAY: return "an array";
    case simdjson::dom::element_type::OBJECT: return "an object";
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64: return "an integer";
    case simdjson::dom::element_type::DOUBLE: return "a floating-point number";
    case simdjson::dom::element_type::STRING: return "a string";
    case simdjson::dom::element_type::BOOL: return "a boolean";
    case simdjson::dom::element_type::NULL_VALUE: return "null";
  }
  return "unknown";
}

// Typed access to the keys of one JSON object; absent and null both count as "not given".
class JsonFields {
 public:
  JsonFields(simdjson::dom::object object, const std::string& file, const char* prefix = "")
      : object_(object), file_(file), prefix_(prefix) {}

  // Present at all, even as null.
  bool present(const char* key) const {
    simdjson::dom::element element;
    return object_.at_key(key).get(element) == simdjson::SUCCESS;
  }
  // Present and not null.
  bool has(const char* key) const {
    simdjson::dom::element element;
    return object_.at_key(key).get(element) == simdjson::SUCCESS && !element.is_null();
  }

  // Sets *out only when the key is present and not null; a required key must be present.
  Status get_int(const char* key, int64_t* out, bool required) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return missing_or_ok(key, required);
    return to_int(key, element, out);
  }
  Status get_double(const char* key, double* out, bool required) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return missing_or_ok(key, required);
    double value = 0.0;
    if (element.get_double().get(value) != simdjson::SUCCESS) return wrong_type(key, element, "a number");
    *out = value;
    return {};
  }
  Status get_string(const char* key, std::string* out, bool required) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return missing_or_ok(key, required);
    std::string_view value;
    if (element.get_string().get(value) != simdjson::SUCCESS) return wrong_type(key, element, "a string");
    *out = std::string(value);
    return {};
  }
  // Token ids may be a single integer or (newer configs) a list; the first entry is used.
  Status get_token_id(const char* key, int32_t* out) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return {};
    simdjson::dom::array list;
    if (element.get_array().get(list) == simdjson::SUCCESS) {
      if (list.size() == 0) return {};
      element = *list.begin();
    }
    int64_t value = 0;
    BORA_RETURN_IF_ERROR(to_int(key, element, &value));
    if (value < 0 || value >= ConfigLimits::kMaxVocab) {
      return make_error(ErrorCode::kFormat, "%s: key '%s%s' is %" PRId64 ", not a valid token id", file_.c_str(),
                        prefix_, key, value);
    }
    *out = static_cast<int32_t>(value);
    return {};
  }
  // The first entry of a list of strings (HF "architectures"); leaves *out alone when absent.
  Status get_first_string(const char* key, std::string* out) const {
    simdjson::dom::element element;
    if (!lookup(key, &element)) return {};
    simdjson::dom::array list;
    if (element.get_array().get(list) != simdjson::SUCCESS) return wrong_type(key, element, "an array of strings");
    if (list.size() == 0) return {};
    std::string_view value;
    if ((*list.begin()).get_string().get(value) != simdjson::SUCCESS) {
      return wrong_type(key, *list.begin(), "an array of strings");
    }
    *out = std::string(value);
    return {};
  }
  // *found is false when the key is absent or null.
  Status get_object(const char* key, simdjson::dom::object* out, bool* found) const {
    simdjson::dom::element element;
    *found = lookup(key, &element);
    if (!*found) return {};
    if (element.get_object().get(*out) != simdjson::SUCCESS) return wrong_type(key, element, "an object");
    return {};
  }

 private:
  bool lookup(const char* key, simdjson::dom::element* element) const {
    if (object_.at_key(key).get(*element) != simdjson::SUCCESS) return false;
    return !element->is_null();
  }
  Status missing_or_ok(const char* key, bool required) const {
    if (!required) return {};
    return make_error(ErrorCode::kMissing, "%s: required key '%s%s' is missing or null", file_.c_str(), prefix_, key);
  }
  Status wrong_type(const char* key, simdjson::dom::element element, const char* expected) const {
    return make_error(ErrorCode::kFormat, "%s: key '%s%s' is %s, expected %s", file_.c_str(), prefix_, key,
                      json_type_name(element.type()), expected);
  }
  Status to_int(const char* key, simdjson::dom::element element, int64_t* out) const {
    int64_t value = 0;
    double real = 0.0;
    if (element.get_int64().get(value) == simdjson::SUCCESS) {
      *out = value;
      return {};
    }
    // Some exporters write integers as 4096.0; accept those when exact.
    if (element.type() == simdjson::dom::element_type::DOUBLE && element.get_double().get(real) == simdjson::SUCCESS &&
        std::fabs(real) < 9007199254740992.0 && std::floor(real) == real) {
      *out = static_cast<int64_t>(real);
      return {};
    }
    if (element.type() == simdjson::dom::element_type::UINT64) {
      return make_error(ErrorCode::kFormat, "%s: key '%s%s' is an integer too large for 64-bit signed", file_.c_str(),
                        prefix_, key);
    }
    return wrong_type(key, element, "an integer");
  }

  simdjson::dom::object object_;
  const std::string& file_;
  const char* prefix_;
};

// Parses `json` and hands its top-level object to `fill`. The parser must outlive the object,
// so both live here.
template <class Fill>
Expected<ModelConfig> parse_json_object(std::string_view json, const std::string& name, Fill fill) {
  simdjson::padded_string padded(json.data(), json.size());
  if (padded.data() == nullptr) return make_error(ErrorCode::kIo, "%s: out of memory copying the JSON", name.c_str());
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::error_code parse_error = parser.parse(padded).get(root);
  if (parse_error != simdjson::SUCCESS) {
    return make_error(ErrorCode::kFormat, "%s: malformed JSON: %s", name.c_str(), simdjson::error_message(parse_error));
  }
  simdjson::dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return make_error(ErrorCode::kFormat, "%s: the top level is %s, expected a JSON object", name.c_str(),
                      json_type_name(root.type()));
  }
  ModelConfig config;
  BORA_RETURN_IF_ERROR(fill(JsonFields(object, name), &config));
  BORA_RETURN_IF_ERROR(validate_model_config(config, name));
  return config;
}

inline Status default_head_dim(ModelConfig* c, const std::string& name, const char* dim_key, const char* heads_key) {
  if (c->n_heads <= 0 || c->dim <= 0 || c->dim % c->n_heads != 0) {
    return make_error(ErrorCode::kFormat, "%s: head_dim is not given and %s (%" PRId64 ") is not a multiple of %s (%" PRId64 ")",
                      name.c_str(), dim_key, c->dim, heads_key, c->n_heads);
  }
  c->head_dim = c->dim / c->n_heads;
  return {};
}

}  // namespace config_detail

// Hugging Face config.json (MistralForCausalLM / MixtralForCausalLM). HF permutes q/k rows for
// rotate-half RoPE, hence kHalfSplit. Defaults follow transformers' MistralConfig / MixtralConfig:
// an absent sliding_window means 4096 for "mistral" and none for "mixtral"; null means none.
inline Expected<ModelConfig> parse_hf_config(std::string_view json, const std::string& name_for_errors) {
  return config_detail::parse_json_object(
      json, name_for_errors, [&](const config_detail::JsonFields& f, ModelConfig* c) -> Status {
        const std::string& name = name_for_errors;
        std::string model_type;
        BORA_RETURN_IF_ERROR(f.get_string("model_type", &model_type, false));
        if (model_type.empty()) {  // fall back to the class name in "architectures"
          std::string class_name;
          BORA_RETURN_IF_ERROR(f.get_first_string("architectures", &class_name));
          if (class_name == "MistralForCausalLM") model_type = "mistral";
          if (class_name == "MixtralForCausalLM") model_type = "mixtral";
          if (class_name == "LlamaForCausalLM") model_type = "llama";
          if (model_type.empty()) model_type = class_name.empty() ? "(none)" : class_name;
        }
        if (model_type != "mistral" && model_type != "mixtral" && model_type != "llama") {
          return make_error(ErrorCode::kUnsupported, "%s: model_type '%s' is not supported (mistral, mixtral, llama)",
                            name.c_str(), model_type.c_str());
        }
        BORA_RETURN_IF_ERROR(f.get_int("hidden_size", &c->dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("num_hidden_layers", &c->n_layers, true));
        BORA_RETURN_IF_ERROR(f.get_int("num_attention_heads", &c->n_heads, true));
        c->n_kv_heads = c->n_heads;
        BORA_RETURN_IF_ERROR(f.get_int("num_key_value_heads", &c->n_kv_heads, false));
        BORA_RETURN_IF_ERROR(f.get_int("intermediate_size", &c->hidden_dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, true));
        if (f.has("head_dim")) {
          BORA_RETURN_IF_ERROR(f.get_int("head_dim", &c->head_dim, true));
        } else {
          BORA_RETURN_IF_ERROR(config_detail::default_head_dim(c, name, "hidden_size", "num_attention_heads"));
        }
        double eps = 1e-6, theta = model_type == "mixtral" ? 1e6 : 1e4;
        BORA_RETURN_IF_ERROR(f.get_double("rms_norm_eps", &eps, false));
        BORA_RETURN_IF_ERROR(f.get_double("rope_theta", &theta, false));
        c->norm_eps = static_cast<float>(eps);
        c->rope_theta = static_cast<float>(theta);
        c->sliding_window = 0;
        if (model_type == "mistral" && !f.present("sliding_window")) {
          // Absent (not null) means transformers' default window.
          c->sliding_window = 4096;
        }
        BORA_RETURN_IF_ERROR(f.get_int("sliding_window", &c->sliding_window, false));
        BORA_RETURN_IF_ERROR(f.get_int("max_position_embeddings", &c->context_length, false));
        BORA_RETURN_IF_ERROR(f.get_int("num_local_experts", &c->n_experts, false));
        BORA_RETURN_IF_ERROR(f.get_int("num_experts_per_tok", &c->n_experts_used, false));
        if (c->n_experts == 0) c->n_experts_used = 0;  // dense configs may still carry a top-k default
        BORA_RETURN_IF_ERROR(f.get_token_id("bos_token_id", &c->bos_id));
        BORA_RETURN_IF_ERROR(f.get_token_id("eos_token_id", &c->eos_id));
        c->architecture = c->n_experts > 0 ? "mixtral" : model_type;
        c->rope_pairing = RopePairing::kHalfSplit;
        return {};
      });
}

// Mistral's params.json (REFERENCE.md §1). Without rope_theta, the 2023 dense code used 1e4 and
// the 2024 code 1e6; a file carrying sliding_window is the 2023 (v0.1) style.
inline Expected<ModelConfig> parse_mistral_params(std::string_view json, const std::string& name_for_errors) {
  return config_detail::parse_json_object(
      json, name_for_errors, [&](const config_detail::JsonFields& f, ModelConfig* c) -> Status {
        const std::string& name = name_for_errors;
        BORA_RETURN_IF_ERROR(f.get_int("dim", &c->dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("n_layers", &c->n_layers, true));
        BORA_RETURN_IF_ERROR(f.get_int("n_heads", &c->n_heads, true));
        c->n_kv_heads = c->n_heads;
        BORA_RETURN_IF_ERROR(f.get_int("n_kv_heads", &c->n_kv_heads, false));
        if (f.has("head_dim")) {
          BORA_RETURN_IF_ERROR(f.get_int("head_dim", &c->head_dim, true));
        } else {
          BORA_RETURN_IF_ERROR(config_detail::default_head_dim(c, name, "dim", "n_heads"));
        }
        BORA_RETURN_IF_ERROR(f.get_int("hidden_dim", &c->hidden_dim, true));
        BORA_RETURN_IF_ERROR(f.get_int("vocab_size", &c->vocab_size, true));
        double eps = 1e-5;
        BORA_RETURN_IF_ERROR(f.get_double("norm_eps", &eps, true));
        c->norm_eps = static_cast<float>(eps);
        const bool has_window = f.has("sliding_window");
        c->sliding_window = 0;
        BORA_RETURN_IF_ERROR(f.get_int("sliding_window", &c->sliding_window, false));
        double theta = has_window ? 1e4 : 1e6;
        BORA_RETURN_IF_ERROR(f.get_double("rope_theta", &theta, false));
        c->rope_theta = static_cast<float>(theta);
        simdjson::dom::object moe;
        bool has_moe = false;
        BORA_RETURN_IF_ERROR(f.get_object("moe", &moe, &has_moe));
        if (has_moe) {
          const config_detail::JsonFields moe_fields(moe, name, "moe.");
          BORA_RETURN_IF_ERROR(moe_fields.get_int("num_experts", &c->n_experts, true));
          BORA_RETURN_IF_ERROR(moe_fields.get_int("num_experts_per_tok", &c->n_experts_used, true));
        }
        BORA_RETURN_IF_ERROR(f.get_int("max_seq_len", &c->context_length, false));
        c->architecture = c->n_experts > 0 ? "mixtral" : "mistral";
        c->rope_pairing = RopePairing::kAdjacent;
        return {};
      });
}

// GGUF metadata written by llama.cpp's converter for Mistral/Mixtral (architecture "llama"; the
// keys are prefixed with the architecture name).
inline Expected<ModelConfig> config_from_gguf(const GgufFile& gguf) {
  const char* file = gguf.name().c_str();
  Expected<std::string> arch = gguf.get_string("general.architecture");
  if (!arch) return arch.error();
  if (*arch != "llama" && *arch != "mistral") {
    return make_error(ErrorCode::kUnsupported,
                      "%s: general.architecture is '%s'; bora reads 'llama' (Mistral/Mixtral GGUF files)", file,
                      arch->c_str());
  }
  const std::string prefix = *arch + ".";
  ModelConfig c;
  c.architecture = *arch;
  c.rope_pairing = RopePairing::kAdjacent;

  // Required and optional integer keys, each read as a non-negative count.
  auto read_count = [&](const char* suffix, int64_t* out, bool required) -> Status {
    const std::string key = prefix + suffix;
    if (gguf.find(key) == nullptr) {
      if (required) return make_error(ErrorCode::kMissing, "%s: metadata key '%s' is missing", file, key.c_str());
      return {};
    }
    Expected<uint64_t> value = gguf.get_uint(key);
    if (!value) return value.error();
    if (*value > static_cast<uint64_t>(ConfigLimits::kMaxContext)) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%s' is %" PRIu64 ", absurdly large", file, key.c_str(),
                        *value);
    }
    *out = static_cast<int64_t>(*value);
    return {};
  };
  auto read_real = [&](const char* suffix, float* out) -> Status {
    const std::string key = prefix + suffix;
    if (gguf.find(key) == nullptr) return {};
    Expected<double> value = gguf.get_float(key);
    if (!value) return value.error();
    *out = static_cast<float>(*value);
    return {};
  };

  BORA_RETURN_IF_ERROR(read_count("embedding_length", &c.dim, true));
  BORA_RETURN_IF_ERROR(read_count("block_count", &c.n_layers, true));
  BORA_RETURN_IF_ERROR(read_count("feed_forward_length", &c.hidden_dim, true));
  BORA_RETURN_IF_ERROR(read_count("attention.head_count", &c.n_heads, true));
  c.n_kv_heads = c.n_heads;
  BORA_RETURN_IF_ERROR(read_count("attention.head_count_kv", &c.n_kv_heads, false));
  c.norm_eps = 1e-5f;
  BORA_RETURN_IF_ERROR(read_real("attention.layer_norm_rms_epsilon", &c.norm_eps));
  c.rope_theta = 10000.0f;
  BORA_RETURN_IF_ERROR(read_real("rope.freq_base", &c.rope_theta));
  BORA_RETURN_IF_ERROR(read_count("context_length", &c.context_length, false));
  BORA_RETURN_IF_ERROR(read_count("attention.sliding_window", &c.sliding_window, false));
  BORA_RETURN_IF_ERROR(read_count("expert_count", &c.n_experts, false));
  BORA_RETURN_IF_ERROR(read_count("expert_used_count", &c.n_experts_used, false));

  // head_dim: attention.key_length if given, else the RoPE width, else dim / heads.
  int64_t key_length = 0, rope_dims = 0;
  BORA_RETURN_IF_ERROR(read_count("attention.key_length", &key_length, false));
  BORA_RETURN_IF_ERROR(read_count("rope.dimension_count", &rope_dims, false));
  if (key_length > 0) {
    c.head_dim = key_length;
  } else if (rope_dims > 0) {
    c.head_dim = rope_dims;
  } else {
    BORA_RETURN_IF_ERROR(config_detail::default_head_dim(&c, gguf.name(), (prefix + "embedding_length").c_str(),
                                                         (prefix + "attention.head_count").c_str()));
  }
  if (rope_dims > 0 && rope_dims != c.head_dim) {
    return make_error(ErrorCode::kUnsupported, "%s: %srope.dimension_count is %" PRId64 " but head_dim is %" PRId64
                      "; partial rotary embeddings are not supported", file, prefix.c_str(), rope_dims, c.head_dim);
  }

  // Vocabulary: explicit key, else the token list, else the embedding's row count.
  BORA_RETURN_IF_ERROR(read_count("vocab_size", &c.vocab_size, false));
  if (c.vocab_size == 0) {
    const GgufValue* tokens = gguf.find("tokenizer.ggml.tokens");
    if (tokens != nullptr && tokens->is_array()) {
      c.vocab_size = static_cast<int64_t>(tokens->array_count);
    } else if (const TensorView* embedding = gguf.find_tensor("token_embd.weight")) {
      c.vocab_size = embedding->ne[1];
    }
  }
  if (c.vocab_size == 0) {
    return make_error(ErrorCode::kMissing, "%s: cannot tell the vocabulary size (no %svocab_size, no "
                      "tokenizer.ggml.tokens, no token_embd.weight)", file, prefix.c_str());
  }

  auto read_token = [&](const char* key, int32_t* out) -> Status {
    if (gguf.find(key) == nullptr) return {};
    Expected<int64_t> value = gguf.get_int(key);
    if (!value) return value.error();
    if (*value < 0 || *value >= c.vocab_size) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%s' is %" PRId64 ", outside the vocabulary of %" PRId64,
                        file, key, *value, c.vocab_size);
    }
    *out = static_cast<int32_t>(*value);
    return {};
  };
  BORA_RETURN_IF_ERROR(read_token("tokenizer.ggml.bos_token_id", &c.bos_id));
  BORA_RETURN_IF_ERROR(read_token("tokenizer.ggml.eos_token_id", &c.eos_id));

  BORA_RETURN_IF_ERROR(validate_model_config(c, gguf.name()));
  return c;
}

}  // namespace bora

#endif  // BORA_IO_JSON_CONFIG_HPP
// ---- end bora/io/json_config.hpp ---------------------------------------------------------------------
// ---- begin bora/io/model_files.hpp -------------------------------------------------------------------
// Why this file exists: "a model" is a .gguf file, a Hugging Face folder (config.json plus one or
// more .safetensors shards) or a Mistral folder (params.json plus consolidated*.safetensors); this
// opens whichever it is, keeps every file mapped, and answers "where is tensor X" across all of them.
#ifndef BORA_IO_MODEL_FILES_HPP
#define BORA_IO_MODEL_FILES_HPP

#include <simdjson.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

// ---- begin bora/io/safetensors.hpp -------------------------------------------------------------------
// Why this file exists: Mistral's consolidated checkpoints and Hugging Face models ship as
// .safetensors (a JSON header, then raw tensors); this maps one file, checks the header against the
// file size, and exposes the F32/F16/BF16 tensors as zero-copy views.
#ifndef BORA_IO_SAFETENSORS_HPP
#define BORA_IO_SAFETENSORS_HPP

#include <simdjson.h>

#include <cinttypes>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>


namespace bora {

class SafetensorsFile {
 public:
  // The format's own limit (real headers are kilobytes; Mixtral 8x7B's is ~100 KB).
  static constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Maps the file; tensor views point into the mapping, which lives (and stays put) as long as
  // this object, even when the object is moved.
  static Expected<SafetensorsFile> open(const std::string& path) {
    Expected<MappedFile> mapped = MappedFile::open(path);
    if (!mapped) return mapped.error();
    auto mapping = std::make_unique<MappedFile>(std::move(mapped.value()));
    Expected<SafetensorsFile> parsed = parse(mapping->data(), mapping->size(), path);
    if (!parsed) return parsed.error();
    parsed->mapping_ = std::move(mapping);
    return parsed;
  }

  // Parses bytes the caller keeps alive for the lifetime of the result.
  static Expected<SafetensorsFile> parse(const uint8_t* data, uint64_t size, std::string name) {
    SafetensorsFile file;
    file.name_ = std::move(name);
    file.data_ = data;
    file.file_size_ = size;
    if (data == nullptr && size != 0) {
      return make_error(ErrorCode::kInvalidArgument, "%s: null data with size %" PRIu64, file.name_.c_str(), size);
    }
    BORA_RETURN_IF_ERROR(file.parse_header());
    return file;
  }

  const std::string& name() const { return name_; }
  uint64_t file_size() const { return file_size_; }
  const uint8_t* data() const { return data_; }  // the whole file's bytes
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }

 private:
  SafetensorsFile() = default;

  static bool weight_type_from_dtype(std::string_view dtype, WeightType* out) {
    if (dtype == "F32") *out = WeightType::kF32;
    else if (dtype == "F16") *out = WeightType::kF16;
    else if (dtype == "BF16") *out = WeightType::kBF16;
    else return false;
    return true;
  }

  Status parse_header() {
    const char* file = name_.c_str();
    if (file_size_ < 8) {
      return make_error(ErrorCode::kFormat, "%s: %" PRIu64 " bytes is too small for a safetensors file (8-byte header "
                        "length missing)", file, file_size_);
    }
    const uint64_t header_bytes = io_detail::load_le_u64(data_);
    if (header_bytes > file_size_ - 8) {
      return make_error(ErrorCode::kFormat, "%s: header length %" PRIu64 " runs past the end of the file (size %" PRIu64
                        ")", file, header_bytes, file_size_);
    }
    if (header_bytes < 2 || header_bytes > kMaxHeaderBytes) {
      return make_error(ErrorCode::kFormat, "%s: header length %" PRIu64 " is not sane (expected 2..%" PRIu64 ")", file,
                        header_bytes, kMaxHeaderBytes);
    }
    data_offset_ = 8 + header_bytes;
    const uint64_t data_bytes = file_size_ - data_offset_;

    simdjson::padded_string header(reinterpret_cast<const char*>(data_ + 8), static_cast<size_t>(header_bytes));
    if (header.data() == nullptr) return make_error(ErrorCode::kIo, "%s: out of memory copying the header", file);
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    const simdjson::error_code parse_error = parser.parse(header).get(root);
    if (parse_error != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: header is malformed JSON: %s", file,
                        simdjson::error_message(parse_error));
    }
    simdjson::dom::object entries;
    if (root.get_object().get(entries) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: header is not a JSON object", file);
    }
    tensors_.reserve(entries.size());
    for (simdjson::dom::key_value_pair entry : entries) {
      if (entry.key == "__metadata__") continue;
      BORA_RETURN_IF_ERROR(parse_tensor(entry.key, entry.value, data_bytes));
    }
    return {};
  }

  Status parse_tensor(std::string_view name, simdjson::dom::element description, uint64_t data_bytes) {
    const char* file = name_.c_str();
    const int name_len = static_cast<int>(name.size());
    if (index_.count(std::string(name)) != 0) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' appears twice in the header", file, name_len, name.data());
    }
    simdjson::dom::object fields;
    if (description.get_object().get(fields) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': its description is not a JSON object", file, name_len,
                        name.data());
    }
    TensorView view;
    view.name = std::string(name);

    std::string_view dtype;
    if (fields.at_key("dtype").get_string().get(dtype) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': 'dtype' is missing or not a string", file, name_len,
                        name.data());
    }
    if (!weight_type_from_dtype(dtype, &view.type)) {
      return make_error(ErrorCode::kUnsupported, "%s: tensor '%.*s' has dtype %.*s; bora reads F32, F16 and BF16", file,
                        name_len, name.data(), static_cast<int>(dtype.size()), dtype.data());
    }

    simdjson::dom::array shape;
    if (fields.at_key("shape").get_array().get(shape) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': 'shape' is missing or not an array", file, name_len,
                        name.data());
    }
    const size_t n_dims = shape.size();
    if (n_dims > 4) {
      return make_error(ErrorCode::kUnsupported, "%s: tensor '%.*s' has %zu dimensions (at most 4 are supported)", file,
                        name_len, name.data(), n_dims);
    }
    // Torch order is outermost first; ggml's ne[0] is the innermost, so the shape is reversed.
    view.n_dims = static_cast<int>(n_dims);
    size_t d = 0;
    for (simdjson::dom::element extent_element : shape) {
      int64_t extent = 0;
      if (extent_element.get_int64().get(extent) != simdjson::SUCCESS || extent < 0) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': shape entry %zu is not a non-negative integer", file,
                          name_len, name.data(), d);
      }
      view.ne[n_dims - 1 - d] = extent;
      ++d;
    }
    uint64_t elements = 0, bytes = 0;
    if (!io_detail::checked_elements(view.ne, view.n_dims, &elements) ||
        !io_detail::checked_mul(elements, weight_type_info(view.type).block_bytes, &bytes)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': its shape overflows 64 bits", file, name_len,
                        name.data());
    }
    view.bytes = bytes;

    simdjson::dom::array offsets;
    uint64_t range[2] = {0, 0};
    if (fields.at_key("data_offsets").get_array().get(offsets) != simdjson::SUCCESS || offsets.size() != 2) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': 'data_offsets' is missing or not [begin, end]", file,
                        name_len, name.data());
    }
    int i = 0;
    for (simdjson::dom::element offset_element : offsets) {
      if (offset_element.get_uint64().get(range[i]) != simdjson::SUCCESS) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': data_offsets[%d] is not a non-negative integer", file,
                          name_len, name.data(), i);
      }
      ++i;
    }
    if (range[0] > range[1] || range[1] > data_bytes) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] lie outside the %" PRIu64 "-byte data section (file byte offset %" PRIu64 " onward)", file,
                        name_len, name.data(), range[0], range[1], data_bytes, data_offset_);
    }
    if (range[1] - range[0] != bytes) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                        " bytes, but a %.*s tensor of that shape needs %" PRIu64, file, name_len, name.data(), range[0],
                        range[1], range[1] - range[0], static_cast<int>(dtype.size()), dtype.data(), bytes);
    }
    view.data = data_ + data_offset_ + range[0];
    index_.emplace(view.name, tensors_.size());
    tensors_.push_back(std::move(view));
    return {};
  }

  std::string name_;
  const uint8_t* data_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::unique_ptr<MappedFile> mapping_;  // null for parse(); owns the bytes for open()
};

}  // namespace bora

#endif  // BORA_IO_SAFETENSORS_HPP
// ---- end bora/io/safetensors.hpp ---------------------------------------------------------------------

namespace bora {

enum class ModelFormat { kGguf, kHuggingFace, kConsolidated };

inline const char* model_format_name(ModelFormat format) {
  switch (format) {
    case ModelFormat::kGguf: return "GGUF";
    case ModelFormat::kHuggingFace: return "Hugging Face safetensors";
    case ModelFormat::kConsolidated: return "Mistral consolidated safetensors";
  }
  return "unknown";
}

namespace model_files_detail {

// Small JSON files (configs, shard indexes) are read whole; anything bigger is not such a file.
constexpr uint64_t kMaxJsonFileBytes = uint64_t{64} << 20;

inline Expected<std::string> read_small_file(const std::string& path) {
  Expected<MappedFile> mapped = MappedFile::open(path);
  if (!mapped) return mapped.error();
  if (mapped->size() > kMaxJsonFileBytes) {
    return make_error(ErrorCode::kFormat, "%s: %" PRIu64 " bytes is too large for a JSON configuration file",
                      path.c_str(), mapped->size());
  }
  if (mapped->size() == 0) return std::string();
  return std::string(reinterpret_cast<const char*>(mapped->data()), static_cast<size_t>(mapped->size()));
}

inline std::string join_path(const std::string& folder, const std::string& file) {
  if (folder.empty()) return file;
  const char last = folder.back();
  if (last == '/' || last == '\\') return folder + file;
  return folder + "/" + file;
}

inline bool is_regular_file(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec) && !ec;
}

inline bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// A shard name from an index file must be a plain file name inside the model folder.
inline bool is_plain_file_name(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  return name.find('/') == std::string_view::npos && name.find('\\') == std::string_view::npos &&
         name.find('\0') == std::string_view::npos;
}

}  // namespace model_files_detail

class ModelFiles {
 public:
  ModelFiles(ModelFiles&&) noexcept = default;
  ModelFiles& operator=(ModelFiles&&) noexcept = default;
  ModelFiles(const ModelFiles&) = delete;
  ModelFiles& operator=(const ModelFiles&) = delete;

  // `path` is a .gguf file or a model folder (a config.json / params.json inside one also works).
  static Expected<ModelFiles> open(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
      return make_error(ErrorCode::kIo, "%s: no such file or folder", path.c_str());
    }
    if (fs::is_directory(status)) return open_folder(path);
    const std::string file_name = fs::path(path).filename().string();
    if (file_name == "config.json" || file_name == "params.json") {
      return open_folder(fs::path(path).parent_path().string());
    }
    if (model_files_detail::ends_with(file_name, ".safetensors")) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: a .safetensors file has no model configuration; open the folder that holds it with "
                        "config.json or params.json", path.c_str());
    }
    return open_gguf(path);
  }

  ModelFormat format() const { return format_; }
  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }

  const TensorView* find_tensor(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : it->second;
  }

  // In file order (shard by shard).
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> names;
    if (gguf_) {
      for (const TensorView& t : gguf_->tensors()) names.push_back(t.name);
    }
    for (const SafetensorsFile& shard : shards_) {
      for (const TensorView& t : shard.tensors()) names.push_back(t.name);
    }
    return names;
  }

  const GgufFile* gguf() const { return gguf_.get(); }
  const std::vector<SafetensorsFile>& safetensors_files() const { return shards_; }

  uint64_t total_bytes() const {
    uint64_t total = gguf_ ? gguf_->file_size() : 0;
    for (const SafetensorsFile& shard : shards_) total += shard.file_size();
    return total;
  }

 private:
  ModelFiles() = default;

  static Expected<ModelFiles> open_gguf(const std::string& path) {
    Expected<GgufFile> gguf = GgufFile::open(path);
    if (!gguf) return gguf.error();
    ModelFiles model;
    model.format_ = ModelFormat::kGguf;
    model.path_ = path;
    model.gguf_ = std::make_unique<GgufFile>(std::move(gguf.value()));
    Expected<ModelConfig> config = config_from_gguf(*model.gguf_);
    if (!config) return config.error();
    model.config_ = std::move(config.value());
    for (const TensorView& t : model.gguf_->tensors()) model.index_.emplace(t.name, &t);
    return model;
  }

  static Expected<ModelFiles> open_folder(const std::string& folder) {
    using model_files_detail::is_regular_file;
    using model_files_detail::join_path;
    const std::string hf_config = join_path(folder, "config.json");
    const std::string hf_index = join_path(folder, "model.safetensors.index.json");
    const std::string hf_single = join_path(folder, "model.safetensors");
    const std::string params = join_path(folder, "params.json");
    const bool has_hf_weights = is_regular_file(hf_index) || is_regular_file(hf_single);
    if (is_regular_file(hf_config) && has_hf_weights) return open_hugging_face(folder);
    if (is_regular_file(params)) return open_consolidated(folder);
    if (is_regular_file(hf_config)) {
      return make_error(ErrorCode::kMissing, "%s: has config.json but neither model.safetensors nor "
                        "model.safetensors.index.json (PyTorch .bin checkpoints are not supported)", folder.c_str());
    }
    return make_error(ErrorCode::kMissing, "%s: not a model folder (no config.json or params.json)", folder.c_str());
  }

  static Expected<ModelFiles> open_hugging_face(const std::string& folder) {
    using model_files_detail::join_path;
    ModelFiles model;
    model.format_ = ModelFormat::kHuggingFace;
    model.path_ = folder;
    const std::string config_path = join_path(folder, "config.json");
    Expected<std::string> config_text = model_files_detail::read_small_file(config_path);
    if (!config_text) return config_text.error();
    Expected<ModelConfig> config = parse_hf_config(*config_text, config_path);
    if (!config) return config.error();
    model.config_ = std::move(config.value());

    const std::string index_path = join_path(folder, "model.safetensors.index.json");
    if (!model_files_detail::is_regular_file(index_path)) {
      BORA_RETURN_IF_ERROR(model.add_shard(join_path(folder, "model.safetensors")));
      BORA_RETURN_IF_ERROR(model.build_index());
      return model;
    }
    // Sharded: the index maps each tensor to its shard; each shard is opened once.
    std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard file
    std::vector<std::string> shard_files;
    BORA_RETURN_IF_ERROR(read_weight_map(index_path, &weight_map, &shard_files));
    for (const std::string& shard : shard_files) BORA_RETURN_IF_ERROR(model.add_shard(join_path(folder, shard)));
    BORA_RETURN_IF_ERROR(model.build_index());
    for (const auto& entry : weight_map) {
      const TensorView* view = model.find_tensor(entry.first);
      if (view == nullptr || !model.shard_holds(join_path(folder, entry.second), view)) {
        return make_error(ErrorCode::kMissing, "%s: tensor '%s' is listed in shard '%s', which does not contain it",
                          index_path.c_str(), entry.first.c_str(), entry.second.c_str());
      }
    }
    return model;
  }

  static Status read_weight_map(const std::string& index_path, std::vector<std::pair<std::string, std::string>>* map,
                                std::vector<std::string>* shard_files) {
    Expected<std::string> text = model_files_detail::read_small_file(index_path);
    if (!text) return text.error();
    const char* file = index_path.c_str();
    simdjson::padded_string padded(text->data(), text->size());
    if (padded.data() == nullptr) return make_error(ErrorCode::kIo, "%s: out of memory", file);
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    const simdjson::error_code parse_error = parser.parse(padded).get(root);
    if (parse_error != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: malformed JSON: %s", file, simdjson::error_message(parse_error));
    }
    simdjson::dom::object weight_map;
    if (root.at_key("weight_map").get_object().get(weight_map) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: key 'weight_map' is missing or not an object", file);
    }
    for (simdjson::dom::key_value_pair entry : weight_map) {
      std::string_view shard;
      if (entry.value.get_string().get(shard) != simdjson::SUCCESS) {
        return make_error(ErrorCode::kFormat, "%s: weight_map entry '%.*s' is not a file name string", file,
                          static_cast<int>(entry.key.size()), entry.key.data());
      }
      if (!model_files_detail::is_plain_file_name(shard)) {
        return make_error(ErrorCode::kFormat, "%s: weight_map entry '%.*s' names '%.*s', not a plain file name in the "
                          "model folder", file, static_cast<int>(entry.key.size()), entry.key.data(),
                          static_cast<int>(shard.size()), shard.data());
      }
      map->emplace_back(std::string(entry.key), std::string(shard));
      if (std::find(shard_files->begin(), shard_files->end(), shard) == shard_files->end()) {
        shard_files->emplace_back(shard);
      }
    }
    if (shard_files->empty()) return make_error(ErrorCode::kFormat, "%s: weight_map is empty", file);
    return {};
  }

  static Expected<ModelFiles> open_consolidated(const std::string& folder) {
    using model_files_detail::join_path;
    ModelFiles model;
    model.format_ = ModelFormat::kConsolidated;
    model.path_ = folder;
    const std::string params_path = join_path(folder, "params.json");
    Expected<std::string> params_text = model_files_detail::read_small_file(params_path);
    if (!params_text) return params_text.error();
    Expected<ModelConfig> config = parse_mistral_params(*params_text, params_path);
    if (!config) return config.error();
    model.config_ = std::move(config.value());

    // consolidated.safetensors, or consolidated.00.safetensors, consolidated.01.safetensors, ...
    std::vector<std::string> shard_names;
    std::error_code ec;
    std::filesystem::directory_iterator it(folder, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (name.compare(0, 12, "consolidated") == 0 && model_files_detail::ends_with(name, ".safetensors") &&
          model_files_detail::is_regular_file(it->path().string())) {
        shard_names.push_back(name);
      }
    }
    if (ec) return make_error(ErrorCode::kIo, "%s: cannot list the folder: %s", folder.c_str(), ec.message().c_str());
    if (shard_names.empty()) {
      return make_error(ErrorCode::kMissing, "%s: has params.json but no consolidated*.safetensors (PyTorch .pth "
                        "checkpoints are not supported)", folder.c_str());
    }
    std::sort(shard_names.begin(), shard_names.end());
    for (const std::string& name : shard_names) BORA_RETURN_IF_ERROR(model.add_shard(join_path(folder, name)));
    BORA_RETURN_IF_ERROR(model.build_index());
    return model;
  }

  Status add_shard(const std::string& path) {
    Expected<SafetensorsFile> shard = SafetensorsFile::open(path);
    if (!shard) return shard.error();
    shards_.push_back(std::move(shard.value()));
    return {};
  }

  // Called once all shards are in place: the pointers stored here point into each shard's tensor
  // vector, whose storage survives moves of the shard and of this object.
  Status build_index() {
    index_.clear();
    for (const SafetensorsFile& shard : shards_) {
      for (const TensorView& t : shard.tensors()) {
        if (!index_.emplace(t.name, &t).second) {
          return make_error(ErrorCode::kFormat, "%s: tensor '%s' also appears in another shard", shard.name().c_str(),
                            t.name.c_str());
        }
      }
    }
    return {};
  }

  bool shard_holds(const std::string& shard_path, const TensorView* view) const {
    for (const SafetensorsFile& shard : shards_) {
      if (shard.name() == shard_path) return shard.find_tensor(view->name) == view;
    }
    return false;
  }

  ModelFormat format_ = ModelFormat::kGguf;
  ModelConfig config_;
  std::string path_;
  std::unique_ptr<GgufFile> gguf_;
  std::vector<SafetensorsFile> shards_;
  std::unordered_map<std::string, const TensorView*> index_;
};

}  // namespace bora

#endif  // BORA_IO_MODEL_FILES_HPP
// ---- end bora/io/model_files.hpp ---------------------------------------------------------------------
// ---- begin bora/model/presets.hpp --------------------------------------------------------------------
// Why this file exists: the ready-made compositions users name (bora::Mistral7B, bora::Mixtral8x7B)
// and load_any(), which reads the file and picks the right one for tools that take any model.
#ifndef BORA_MODEL_PRESETS_HPP
#define BORA_MODEL_PRESETS_HPP

#include <memory>
#include <string>

// ---- begin bora/model/transformer.hpp ----------------------------------------------------------------
// Why this file exists: the model itself. Transformer<Attention, KvCache, FeedForward> composes the
// policies into Mistral's block (RMSNorm -> attention -> residual -> RMSNorm -> FFN -> residual);
// Model is the type-erased face that sessions and tools hold, so they need not be templates.
#ifndef BORA_MODEL_TRANSFORMER_HPP
#define BORA_MODEL_TRANSFORMER_HPP

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- begin bora/model/attention.hpp ------------------------------------------------------------------
// Why this file exists: the attention policy — grouped-query attention over the rolling KV cache,
// with the mask rule (sliding window or plain causal) as a compile-time choice.
#ifndef BORA_MODEL_ATTENTION_HPP
#define BORA_MODEL_ATTENTION_HPP

#include <cmath>
#include <cstdint>
#include <type_traits>

// ---- begin bora/ops/ops.hpp --------------------------------------------------------------------------
// Why this file exists: the SIMD boundary. Everything above it (policies, the transformer) calls these
// plain functions; their bodies are Highway kernels compiled for every target in the one translation
// unit that defines BORA_IMPLEMENTATION (see implementation.hpp) and chosen at run time.
#ifndef BORA_OPS_OPS_HPP
#define BORA_OPS_OPS_HPP

#include <cstdint>


namespace bora {
namespace ops {

// ---- weight x activation products -------------------------------------------------------------
// `w` is a matrix of w.rows() rows of w.row_length() values in any WeightType. Rows
// [row_begin, row_end) are computed, so callers split work across threads by rows.

// Exact path (f32 activations; weights dequantized on the fly): y[r] = dot(w.row(r), x).
void matvec_f32(const TensorView& w, const float* x, float* y, int64_t row_begin, int64_t row_end);

// Exact path, several tokens: y[t * y_stride + r] = dot(w.row(r), x + t * w.row_length()).
void matmul_f32(const TensorView& w, const float* x, int64_t n_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end);

// ---- small vector kernels ----------------------------------------------------------------------
float dot(const float* a, const float* b, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);  // y += alpha * x
void scale(float* x, float alpha, int64_t n);                  // x *= alpha
// y = x / sqrt(mean(x^2) + eps) * weight  (y may equal x)
void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* y);
// In-place softmax over n values.
void softmax(float* x, int64_t n);
// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);
// Rotates n_heads consecutive heads of head_dim values at absolute position `position`.
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t position, float theta, RopePairing pairing);
void f32_to_f16(const float* x, uint16_t* y, int64_t n);
void f16_to_f32(const uint16_t* x, float* y, int64_t n);

// Name of the SIMD target chosen at run time (for logs and benchmarks).
const char* simd_target_name();

}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_OPS_HPP
// ---- end bora/ops/ops.hpp ----------------------------------------------------------------------------

namespace bora {

// Mask policies. SlidingWindow honours the window the file declares (Mistral 7B v0.1), using the
// W-key rule: query i sees keys i-W+1 .. i, as the reference's rolling-cache decode, xformers and
// HF do. CausalAttention ignores any window (Mixtral, Mistral v0.2+). A runtime setting in
// ContextParams can still override or turn off the window of a SlidingWindow model.
struct SlidingWindow {
  static constexpr bool kUsesFileWindow = true;
};
struct CausalAttention {
  static constexpr bool kUsesFileWindow = false;
};

// What one attention call sees: a chunk of n tokens at positions first_position.., their roped
// queries and keys and their values, and the cache holding earlier positions.
struct AttentionChunk {
  int64_t layer = 0;
  int64_t first_position = 0;
  int64_t n_tokens = 0;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t window = 0;          // 0 = none
  const float* q = nullptr;    // [n_tokens][n_heads * head_dim]
  const float* k = nullptr;    // [n_tokens][n_kv_heads * head_dim]
  const float* v = nullptr;    // [n_tokens][n_kv_heads * head_dim]
  float* out = nullptr;        // [n_tokens][n_heads * head_dim]
  float* thread_scratch = nullptr;  // per thread: scratch_floats_per_thread() floats
  int64_t scratch_per_thread = 0;
  int max_threads = 0;
};

template <class Mask>
struct GroupedQueryAttention {
  static_assert(std::is_same<Mask, SlidingWindow>::value || std::is_same<Mask, CausalAttention>::value,
                "GroupedQueryAttention<Mask>: Mask must be bora::SlidingWindow or bora::CausalAttention");
  using mask = Mask;

  // Scratch one thread needs: scores for every head of a group over the longest key range, plus
  // one widened key and value.
  static int64_t scratch_floats_per_thread(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                           int64_t max_keys) {
    return (n_heads / n_kv_heads) * max_keys + 2 * head_dim;
  }

  // Each work item is (token, kv head): the kv head's keys and values are read once for all the
  // query heads that share it.
  template <class Cache>
  static void forward(const AttentionChunk& c, const Cache& cache, ThreadPool& pool) {
    const int64_t group = c.n_heads / c.n_kv_heads;
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    pool.parallel_for(c.n_tokens * c.n_kv_heads, [&](int64_t begin, int64_t end, int thread) {
      float* scores = c.thread_scratch + thread * c.scratch_per_thread;
      float* key_buffer = scores + (c.scratch_per_thread - 2 * c.head_dim);
      float* value_buffer = key_buffer + c.head_dim;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t t = item / c.n_kv_heads, g = item % c.n_kv_heads;
        const int64_t position = c.first_position + t;
        const int64_t lowest = c.window > 0 && position - c.window + 1 > 0 ? position - c.window + 1 : 0;
        const int64_t n_keys = position - lowest + 1;
        // Keys before the chunk come from the cache (not yet overwritten by this chunk); keys of
        // the chunk itself come from its fresh k/v rows.
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t key_position = lowest + j;
          const float* key =
              key_position < c.first_position
                  ? cache.key(c.layer, key_position, g * c.head_dim, c.head_dim, key_buffer)
                  : c.k + (key_position - c.first_position) * kv_dim + g * c.head_dim;
          for (int64_t h = 0; h < group; ++h) {
            const float* query = c.q + t * q_dim + (g * group + h) * c.head_dim;
            scores[h * n_keys + j] = ops::dot(query, key, c.head_dim) * scale;
          }
        }
        for (int64_t h = 0; h < group; ++h) {
          ops::softmax(scores + h * n_keys, n_keys);
          float* out = c.out + t * q_dim + (g * group + h) * c.head_dim;
          for (int64_t i = 0; i < c.head_dim; ++i) out[i] = 0.0f;
        }
        for (int64_t j = 0; j < n_keys; ++j) {
          const int64_t key_position = lowest + j;
          const float* value =
              key_position < c.first_position
                  ? cache.value(c.layer, key_position, g * c.head_dim, c.head_dim, value_buffer)
                  : c.v + (key_position - c.first_position) * kv_dim + g * c.head_dim;
          for (int64_t h = 0; h < group; ++h) {
            float* out = c.out + t * q_dim + (g * group + h) * c.head_dim;
            ops::axpy(scores[h * n_keys + j], value, out, c.head_dim);
          }
        }
      }
    }, c.max_threads);
  }
};

}  // namespace bora

#endif  // BORA_MODEL_ATTENTION_HPP
// ---- end bora/model/attention.hpp --------------------------------------------------------------------
// ---- begin bora/model/feed_forward.hpp ---------------------------------------------------------------
// Why this file exists: the feed-forward policies — a dense SwiGLU (Mistral 7B) and a sparse
// mixture of experts whose router sends each token to k of E SwiGLU experts (Mixtral).
#ifndef BORA_MODEL_FEED_FORWARD_HPP
#define BORA_MODEL_FEED_FORWARD_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

// ---- begin bora/model/linear.hpp ---------------------------------------------------------------------
// Why this file exists: every weight product in the forward pass goes through one function that
// splits output rows across the thread pool, so threading and kernel choice live in one place.
#ifndef BORA_MODEL_LINEAR_HPP
#define BORA_MODEL_LINEAR_HPP

#include <cstdint>


namespace bora {

// y[t][r] = dot(w.row(r), x[t]) for n_tokens rows of x (row length w.row_length()), y rows of
// w.rows() values. Rows are split across threads; each row is computed by one thread, in the same
// order whatever the thread count, so results do not depend on it.
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const float* x, int64_t n_tokens,
                   float* y) {
  const int64_t rows = w.rows();
  // Small chunks of rows per task keep the threads balanced without splitting blocks of work.
  pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
    if (n_tokens == 1) ops::matvec_f32(w, x, y, begin, end);
    else ops::matmul_f32(w, x, n_tokens, y, rows, begin, end);
  }, max_threads);
}

}  // namespace bora

#endif  // BORA_MODEL_LINEAR_HPP
// ---- end bora/model/linear.hpp -----------------------------------------------------------------------
// ---- begin bora/model/weights.hpp --------------------------------------------------------------------
// Why this file exists: the three file layouts (GGUF, Hugging Face, Mistral consolidated) name the
// same tensors differently and stack Mixtral's experts differently; this binds them all to one
// struct of views, checking every shape against the configuration, so the forward pass has one shape.
#ifndef BORA_MODEL_WEIGHTS_HPP
#define BORA_MODEL_WEIGHTS_HPP

#include <cstdint>
#include <string>
#include <vector>

// ---- begin bora/quant/dequantize.hpp -----------------------------------------------------------------
// Why this file exists: one entry point that turns a row of any WeightType into floats — the plain
// scalar reference that tests hold every SIMD kernel to, and a fallback for cold paths (embeddings).
#ifndef BORA_QUANT_DEQUANTIZE_HPP
#define BORA_QUANT_DEQUANTIZE_HPP

#include <cstdint>
#include <cstring>

// ---- begin bora/quant/bf16.hpp -----------------------------------------------------------------------
// Why this file exists: bfloat16 is how Mistral ships its safetensors and a GGUF weight type; it is
// the upper half of an f32, so widening is exact and narrowing must round like torch does.
#ifndef BORA_QUANT_BF16_HPP
#define BORA_QUANT_BF16_HPP

#include <cstdint>

// ---- begin bora/quant/f16.hpp ------------------------------------------------------------------------
// Why this file exists: IEEE half precision appears in every ggml block (scales) and as a weight and
// KV-cache type; one exact scalar conversion is the reference every SIMD path is tested against.
#ifndef BORA_QUANT_F16_HPP
#define BORA_QUANT_F16_HPP

#include <cstdint>
#include <cstring>

namespace bora {
namespace quant {

// Block fields are little-endian and may sit at any address inside a mapped file, so they are read
// byte-wise (no casts to wider pointers, which would be misaligned UB).
inline uint16_t load_u16_le(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (static_cast<uint16_t>(p[1]) << 8));
}

inline void store_u16_le(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xFF);
  p[1] = static_cast<uint8_t>(v >> 8);
}

inline float f32_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t bits_from_f32(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Exact: every half value (including subnormals, infinities and NaN payloads) is a float.
inline float f16_to_f32(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  const uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, computed without relying on float subnormals.
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return f32_from_bits(bits_from_f32(magnitude) | sign);
  }
  if (exponent == 31) return f32_from_bits(sign | 0x7F800000u | (mantissa << 13));
  return f32_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// Round to nearest, ties to even (what F16C and numpy do); overflow gives infinity, NaN stays NaN.
inline uint16_t f32_to_f16(float value) {
  uint32_t bits = bits_from_f32(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  bits &= 0x7FFFFFFFu;
  if (bits >= 0x7F800000u) {  // infinity or NaN (NaN keeps its top payload bits and becomes quiet)
    if (bits == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | ((bits >> 13) & 0x3FFu));
  }
  if (bits >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (bits < 0x38800000u) {
    // Below the smallest normal half (2^-14): adding 0.5f puts the value where one float ulp is
    // 2^-24, one half subnormal step, so the float addition itself rounds to nearest even.
    const float shifted = f32_from_bits(bits) + 0.5f;
    return static_cast<uint16_t>(sign | (bits_from_f32(shifted) - 0x3F000000u));
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even; a carry
  // out of the mantissa correctly bumps the exponent.
  const uint32_t mantissa_odd = (bits >> 13) & 1u;
  bits += 0xC8000FFFu + mantissa_odd;  // (15 - 127) << 23 (mod 2^32), plus 0xFFF for the rounding
  return static_cast<uint16_t>(sign | (bits >> 13));
}

inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16_le(p)); }

inline void dequantize_row_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(src + 2 * i);
}

inline void quantize_row_f16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16_le(dst + 2 * i, f32_to_f16(src[i]));
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_F16_HPP
// ---- end bora/quant/f16.hpp --------------------------------------------------------------------------

namespace bora {
namespace quant {

inline float bf16_to_f32(uint16_t bf16) { return f32_from_bits(static_cast<uint32_t>(bf16) << 16); }

// Round to nearest, ties to even; NaN stays a (quiet) NaN instead of rounding into infinity.
inline uint16_t f32_to_bf16(float value) {
  const uint32_t bits = bits_from_f32(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline void dequantize_row_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16_le(src + 2 * i));
}

inline void quantize_row_bf16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16_le(dst + 2 * i, f32_to_bf16(src[i]));
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_BF16_HPP
// ---- end bora/quant/bf16.hpp -------------------------------------------------------------------------
// ---- begin bora/quant/q4_0.hpp -----------------------------------------------------------------------
// Why this file exists: ggml's Q4_0 block (32 4-bit values sharing one signed f16 scale), its scalar
// reference dequantizer and a simple quantizer.
#ifndef BORA_QUANT_Q4_0_HPP
#define BORA_QUANT_Q4_0_HPP

#include <cmath>
#include <cstdint>

// ---- begin bora/quant/q8_0.hpp -----------------------------------------------------------------------
// Why this file exists: ggml's Q8_0 block (32 int8 values sharing one f16 scale), the scalar
// reference the SIMD kernels are tested against, and a simple quantizer for tests and repacking.
#ifndef BORA_QUANT_Q8_0_HPP
#define BORA_QUANT_Q8_0_HPP

#include <cmath>
#include <cstdint>


namespace bora {
namespace quant {

// Layout (34 bytes): f16 d at byte 0, int8 q[32] at byte 2.  value[i] = d * q[i].
struct Q8_0Block {
  static constexpr int kElements = 32;
  static constexpr int kBytes = 34;
  static constexpr int kScaleOffset = 0;
  static constexpr int kQuantsOffset = 2;
};

// Rounds to the nearest integer and clamps into [lo, hi]; NaN becomes 0 (never UB on odd input).
inline int round_and_clamp(float value, int lo, int hi) {
  if (!(value == value)) return 0;
  if (value <= static_cast<float>(lo)) return lo;
  if (value >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::nearbyint(value));
}

inline void dequantize_block_q8_0(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q8_0Block::kScaleOffset);
  const uint8_t* q = block + Q8_0Block::kQuantsOffset;
  for (int i = 0; i < 32; ++i) out[i] = d * static_cast<float>(static_cast<int8_t>(q[i]));
}

inline void dequantize_row_q8_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) dequantize_block_q8_0(src + b * 34, dst + b * 32);
}

// Symmetric: d = max|x| / 127 (rounded to f16 first, so the stored scale is the one used).
inline void quantize_block_q8_0(const float* x, uint8_t* block) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const uint16_t d_bits = f32_to_f16(amax / 127.0f);
  const float d = f16_to_f32(d_bits);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16_le(block + Q8_0Block::kScaleOffset, d_bits);
  for (int i = 0; i < 32; ++i) {
    const int q = round_and_clamp(x[i] * inverse, -127, 127);
    block[Q8_0Block::kQuantsOffset + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
  }
}

inline void quantize_row_q8_0(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) quantize_block_q8_0(src + b * 32, dst + b * 34);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q8_0_HPP
// ---- end bora/quant/q8_0.hpp -------------------------------------------------------------------------

namespace bora {
namespace quant {

// Layout (18 bytes): f16 d at byte 0, u8 qs[16] at byte 2. Element j (j < 16) is the low nibble of
// qs[j], element j + 16 its high nibble; value = d * (nibble - 8). d may be negative.
struct Q4_0Block {
  static constexpr int kElements = 32;
  static constexpr int kBytes = 18;
  static constexpr int kScaleOffset = 0;
  static constexpr int kQuantsOffset = 2;
};

inline void dequantize_block_q4_0(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q4_0Block::kScaleOffset);
  const uint8_t* qs = block + Q4_0Block::kQuantsOffset;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>((qs[j] & 15) - 8);
    out[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

inline void dequantize_row_q4_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) dequantize_block_q4_0(src + b * 18, dst + b * 32);
}

// As ggml: the value of largest magnitude maps to -8 exactly (d = that value / -8), the rest round.
inline void quantize_block_q4_0(const float* x, uint8_t* block) {
  float extreme = 0.0f;
  for (int i = 0; i < 32; ++i) {
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  const uint16_t d_bits = f32_to_f16(extreme / -8.0f);
  const float d = f16_to_f32(d_bits);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16_le(block + Q4_0Block::kScaleOffset, d_bits);
  uint8_t* qs = block + Q4_0Block::kQuantsOffset;
  for (int j = 0; j < 16; ++j) {
    const int low = round_and_clamp(x[j] * inverse + 8.0f, 0, 15);
    const int high = round_and_clamp(x[j + 16] * inverse + 8.0f, 0, 15);
    qs[j] = static_cast<uint8_t>(low | (high << 4));
  }
}

inline void quantize_row_q4_0(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) quantize_block_q4_0(src + b * 32, dst + b * 18);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q4_0_HPP
// ---- end bora/quant/q4_0.hpp -------------------------------------------------------------------------
// ---- begin bora/quant/q4_k.hpp -----------------------------------------------------------------------
// Why this file exists: ggml's Q4_K super-block (256 4-bit values in 8 sub-blocks with 6-bit packed
// scales and mins), its scalar reference dequantizer, and a simple quantizer; Q5_K reuses the scales.
#ifndef BORA_QUANT_Q4_K_HPP
#define BORA_QUANT_Q4_K_HPP

#include <cmath>
#include <cstdint>


namespace bora {
namespace quant {

// Layout (144 bytes): f16 d at 0, f16 dmin at 2, u8 scales[12] at 4, u8 qs[128] at 16.
// Sub-block j (32 values) has 6-bit scale sc_j and min m_j; value = d*sc_j*q - dmin*m_j, q in 0..15.
// qs byte 32c + l holds element l of sub-block 2c (low nibble) and of sub-block 2c+1 (high nibble).
struct Q4_KBlock {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 144;
  static constexpr int kScaleOffset = 0;
  static constexpr int kMinScaleOffset = 2;
  static constexpr int kScalesOffset = 4;
  static constexpr int kQuantsOffset = 16;
};

// The 12 scale bytes hold eight 6-bit (scale, min) pairs: pairs 0..3 in the low 6 bits of bytes
// 0..3 / 4..7; pairs 4..7 keep their low 4 bits in bytes 8..11 and their top 2 bits in the spare
// high bits of bytes 0..7.
inline void unpack_k_scale_min(const uint8_t* scales, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
    *min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

inline void pack_k_scale_mins(const int* scale, const int* min, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((scale[j + 4] & 15) | ((min[j + 4] & 15) << 4));
  }
}

inline void dequantize_block_q4_k(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q4_KBlock::kScaleOffset);
  const float dmin = load_f16(block + Q4_KBlock::kMinScaleOffset);
  const uint8_t* scales = block + Q4_KBlock::kScalesOffset;
  const uint8_t* qs = block + Q4_KBlock::kQuantsOffset;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    unpack_k_scale_min(scales, j, &sc, &m);
    const float step = d * static_cast<float>(sc);
    const float offset = dmin * static_cast<float>(m);
    const uint8_t* bytes = qs + 32 * (j / 2);
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      out[32 * j + l] = step * static_cast<float>((bytes[l] >> shift) & 15) - offset;
    }
  }
}

inline void dequantize_row_q4_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q4_k(src + b * 144, dst + b * 256);
}

namespace detail {

// Asymmetric min/max quantization of a 256-value super-block into 8 sub-blocks of 32 values with
// q in [0, max_q]; shared by Q4_K (max_q 15) and Q5_K (max_q 31). Returns the f16 bits of d and
// dmin, the 6-bit scales and mins, and the quants.
inline void quantize_k_superblock(const float* x, int max_q, uint16_t* d_bits, uint16_t* dmin_bits,
                                  int* scale, int* min, uint8_t* q) {
  float sub_step[8], sub_min[8];
  float max_step = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float lo = 0.0f, hi = -INFINITY;
    for (int l = 0; l < 32; ++l) {
      lo = std::fmin(lo, x[32 * j + l]);
      hi = std::fmax(hi, x[32 * j + l]);
    }
    sub_step[j] = (hi - lo) / static_cast<float>(max_q);
    sub_min[j] = -lo;
    max_step = std::fmax(max_step, sub_step[j]);
    max_min = std::fmax(max_min, sub_min[j]);
  }
  *d_bits = f32_to_f16(max_step / 63.0f);
  *dmin_bits = f32_to_f16(max_min / 63.0f);
  const float d = f16_to_f32(*d_bits);
  const float dmin = f16_to_f32(*dmin_bits);
  for (int j = 0; j < 8; ++j) {
    scale[j] = d > 0.0f ? round_and_clamp(sub_step[j] / d, 0, 63) : 0;
    if (scale[j] == 0 && sub_step[j] > 0.0f && d > 0.0f) scale[j] = 1;
    min[j] = dmin > 0.0f ? round_and_clamp(sub_min[j] / dmin, 0, 63) : 0;
    const float step = d * static_cast<float>(scale[j]);
    const float offset = dmin * static_cast<float>(min[j]);
    const float inverse = step > 0.0f ? 1.0f / step : 0.0f;
    for (int l = 0; l < 32; ++l) {
      q[32 * j + l] = static_cast<uint8_t>(round_and_clamp((x[32 * j + l] + offset) * inverse, 0, max_q));
    }
  }
}

}  // namespace detail

inline void quantize_block_q4_k(const float* x, uint8_t* block) {
  uint16_t d_bits = 0, dmin_bits = 0;
  int scale[8], min[8];
  uint8_t q[256];
  detail::quantize_k_superblock(x, 15, &d_bits, &dmin_bits, scale, min, q);
  store_u16_le(block + Q4_KBlock::kScaleOffset, d_bits);
  store_u16_le(block + Q4_KBlock::kMinScaleOffset, dmin_bits);
  pack_k_scale_mins(scale, min, block + Q4_KBlock::kScalesOffset);
  uint8_t* qs = block + Q4_KBlock::kQuantsOffset;
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
  }
}

inline void quantize_row_q4_k(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) quantize_block_q4_k(src + b * 256, dst + b * 144);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q4_K_HPP
// ---- end bora/quant/q4_k.hpp -------------------------------------------------------------------------
// ---- begin bora/quant/q5_k.hpp -----------------------------------------------------------------------
// Why this file exists: ggml's Q5_K super-block (Q4_K plus one high bit per value), its scalar
// reference dequantizer and a simple quantizer.
#ifndef BORA_QUANT_Q5_K_HPP
#define BORA_QUANT_Q5_K_HPP

#include <cstdint>


namespace bora {
namespace quant {

// Layout (176 bytes): f16 d at 0, f16 dmin at 2, u8 scales[12] at 4 (packed as Q4_K), u8 qh[32] at
// 16, u8 qs[128] at 48. Low 4 bits of q come from qs exactly as in Q4_K; the fifth bit of element l
// of sub-block j is bit j of qh[l]. value = d*sc_j*q - dmin*m_j, q in 0..31.
struct Q5_KBlock {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 176;
  static constexpr int kScaleOffset = 0;
  static constexpr int kMinScaleOffset = 2;
  static constexpr int kScalesOffset = 4;
  static constexpr int kHighBitsOffset = 16;
  static constexpr int kQuantsOffset = 48;
};

inline void dequantize_block_q5_k(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q5_KBlock::kScaleOffset);
  const float dmin = load_f16(block + Q5_KBlock::kMinScaleOffset);
  const uint8_t* scales = block + Q5_KBlock::kScalesOffset;
  const uint8_t* qh = block + Q5_KBlock::kHighBitsOffset;
  const uint8_t* qs = block + Q5_KBlock::kQuantsOffset;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    unpack_k_scale_min(scales, j, &sc, &m);
    const float step = d * static_cast<float>(sc);
    const float offset = dmin * static_cast<float>(m);
    const uint8_t* bytes = qs + 32 * (j / 2);
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      const int q = ((bytes[l] >> shift) & 15) | (((qh[l] >> j) & 1) << 4);
      out[32 * j + l] = step * static_cast<float>(q) - offset;
    }
  }
}

inline void dequantize_row_q5_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q5_k(src + b * 176, dst + b * 256);
}

inline void quantize_block_q5_k(const float* x, uint8_t* block) {
  uint16_t d_bits = 0, dmin_bits = 0;
  int scale[8], min[8];
  uint8_t q[256];
  detail::quantize_k_superblock(x, 31, &d_bits, &dmin_bits, scale, min, q);
  store_u16_le(block + Q5_KBlock::kScaleOffset, d_bits);
  store_u16_le(block + Q5_KBlock::kMinScaleOffset, dmin_bits);
  pack_k_scale_mins(scale, min, block + Q5_KBlock::kScalesOffset);
  uint8_t* qh = block + Q5_KBlock::kHighBitsOffset;
  uint8_t* qs = block + Q5_KBlock::kQuantsOffset;
  for (int l = 0; l < 32; ++l) {
    int high_bits = 0;
    for (int j = 0; j < 8; ++j) high_bits |= ((q[32 * j + l] >> 4) & 1) << j;
    qh[l] = static_cast<uint8_t>(high_bits);
  }
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 15) | ((q[64 * c + 32 + l] & 15) << 4));
    }
  }
}

inline void quantize_row_q5_k(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) quantize_block_q5_k(src + b * 256, dst + b * 176);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q5_K_HPP
// ---- end bora/quant/q5_k.hpp -------------------------------------------------------------------------
// ---- begin bora/quant/q6_k.hpp -----------------------------------------------------------------------
// Why this file exists: ggml's Q6_K super-block (256 6-bit values, 16 signed 8-bit sub-block
// scales), its scalar reference dequantizer and a simple quantizer.
#ifndef BORA_QUANT_Q6_K_HPP
#define BORA_QUANT_Q6_K_HPP

#include <cmath>
#include <cstdint>


namespace bora {
namespace quant {

// Layout (210 bytes): u8 ql[128] at 0, u8 qh[64] at 128, int8 scales[16] at 192, f16 d at 208.
// value = d * scales[i / 16] * (q - 32), q in 0..63. Each half h (128 values) uses ql[64h..64h+63],
// qh[32h..32h+31] and scales[8h..8h+7]; for l in 0..31 (element index inside the half):
//   element l      : low nibble of ql[l],      bits 0-1 of qh[l]
//   element l + 32 : low nibble of ql[l + 32], bits 2-3 of qh[l]
//   element l + 64 : high nibble of ql[l],     bits 4-5 of qh[l]
//   element l + 96 : high nibble of ql[l + 32], bits 6-7 of qh[l]
struct Q6_KBlock {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 210;
  static constexpr int kLowBitsOffset = 0;
  static constexpr int kHighBitsOffset = 128;
  static constexpr int kScalesOffset = 192;
  static constexpr int kScaleOffset = 208;
};

// The 6-bit quant of element `i` (0..255) of a Q6_K block, in 0..63.
inline int q6_k_quant(const uint8_t* block, int i) {
  const int half = i / 128, k = (i % 128) / 32, l = i % 32;
  const uint8_t* ql = block + Q6_KBlock::kLowBitsOffset + 64 * half;
  const uint8_t* qh = block + Q6_KBlock::kHighBitsOffset + 32 * half;
  const int low_byte = ql[l + 32 * (k % 2)];
  const int low = (k < 2) ? (low_byte & 15) : (low_byte >> 4);
  const int high = (qh[l] >> (2 * k)) & 3;
  return low | (high << 4);
}

inline void dequantize_block_q6_k(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q6_KBlock::kScaleOffset);
  const uint8_t* scales = block + Q6_KBlock::kScalesOffset;
  for (int i = 0; i < 256; ++i) {
    const float step = d * static_cast<float>(static_cast<int8_t>(scales[i / 16]));
    out[i] = step * static_cast<float>(q6_k_quant(block, i) - 32);
  }
}

inline void dequantize_row_q6_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q6_k(src + b * 210, dst + b * 256);
}

// Symmetric per 16 values: the value of largest magnitude maps to q - 32 = -32, so sub-block scales
// are signed (as ggml's own quantizer produces).
inline void quantize_block_q6_k(const float* x, uint8_t* block) {
  float sub_scale[16];
  float max_abs_scale = 0.0f;
  for (int s = 0; s < 16; ++s) {
    float extreme = 0.0f;
    for (int l = 0; l < 16; ++l) {
      if (std::fabs(x[16 * s + l]) > std::fabs(extreme)) extreme = x[16 * s + l];
    }
    sub_scale[s] = extreme / -32.0f;
    max_abs_scale = std::fmax(max_abs_scale, std::fabs(sub_scale[s]));
  }
  const uint16_t d_bits = f32_to_f16(max_abs_scale / 127.0f);
  const float d = f16_to_f32(d_bits);
  store_u16_le(block + Q6_KBlock::kScaleOffset, d_bits);
  uint8_t q[256];
  for (int s = 0; s < 16; ++s) {
    const int sc = d > 0.0f ? round_and_clamp(sub_scale[s] / d, -128, 127) : 0;
    block[Q6_KBlock::kScalesOffset + s] = static_cast<uint8_t>(static_cast<int8_t>(sc));
    const float step = d * static_cast<float>(sc);
    const float inverse = step != 0.0f ? 1.0f / step : 0.0f;
    for (int l = 0; l < 16; ++l) {
      q[16 * s + l] = static_cast<uint8_t>(round_and_clamp(x[16 * s + l] * inverse, -32, 31) + 32);
    }
  }
  for (int half = 0; half < 2; ++half) {
    uint8_t* ql = block + Q6_KBlock::kLowBitsOffset + 64 * half;
    uint8_t* qh = block + Q6_KBlock::kHighBitsOffset + 32 * half;
    const uint8_t* y = q + 128 * half;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((y[l] & 15) | ((y[l + 64] & 15) << 4));
      ql[l + 32] = static_cast<uint8_t>((y[l + 32] & 15) | ((y[l + 96] & 15) << 4));
      qh[l] = static_cast<uint8_t>((y[l] >> 4) | ((y[l + 32] >> 4) << 2) | ((y[l + 64] >> 4) << 4) |
                                   ((y[l + 96] >> 4) << 6));
    }
  }
}

inline void quantize_row_q6_k(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) quantize_block_q6_k(src + b * 256, dst + b * 210);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q6_K_HPP
// ---- end bora/quant/q6_k.hpp -------------------------------------------------------------------------

namespace bora {

// `n` must be a multiple of the type's block size (weight_type_info(type).block_elements); `src`
// holds weight_row_bytes(type, n) bytes.
inline void dequantize_row(WeightType type, const uint8_t* src, float* dst, int64_t n) {
  if (n <= 0) return;
  switch (type) {
    case WeightType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case WeightType::kF16: quant::dequantize_row_f16(src, dst, n); return;
    case WeightType::kBF16: quant::dequantize_row_bf16(src, dst, n); return;
    case WeightType::kQ8_0: quant::dequantize_row_q8_0(src, dst, n); return;
    case WeightType::kQ4_0: quant::dequantize_row_q4_0(src, dst, n); return;
    case WeightType::kQ4_K: quant::dequantize_row_q4_k(src, dst, n); return;
    case WeightType::kQ5_K: quant::dequantize_row_q5_k(src, dst, n); return;
    case WeightType::kQ6_K: quant::dequantize_row_q6_k(src, dst, n); return;
  }
}

// The inverse, for tests and repacking: writes weight_row_bytes(type, n) bytes.
inline void quantize_row(WeightType type, const float* src, uint8_t* dst, int64_t n) {
  if (n <= 0) return;
  switch (type) {
    case WeightType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case WeightType::kF16: quant::quantize_row_f16(src, dst, n); return;
    case WeightType::kBF16: quant::quantize_row_bf16(src, dst, n); return;
    case WeightType::kQ8_0: quant::quantize_row_q8_0(src, dst, n); return;
    case WeightType::kQ4_0: quant::quantize_row_q4_0(src, dst, n); return;
    case WeightType::kQ4_K: quant::quantize_row_q4_k(src, dst, n); return;
    case WeightType::kQ5_K: quant::quantize_row_q5_k(src, dst, n); return;
    case WeightType::kQ6_K: quant::quantize_row_q6_k(src, dst, n); return;
  }
}

}  // namespace bora

#endif  // BORA_QUANT_DEQUANTIZE_HPP
// ---- end bora/quant/dequantize.hpp -------------------------------------------------------------------

namespace bora {

struct LayerWeights {
  std::vector<float> attention_norm;  // [dim], converted to f32 at load (tiny)
  std::vector<float> ffn_norm;        // [dim]
  TensorView wq, wk, wv, wo;
  // Dense SwiGLU: w1 = gate, w3 = up, w2 = down.
  TensorView w1, w2, w3;
  // Sparse MoE: router [n_experts x dim] and one 2-D view per expert (sliced from stacked tensors
  // or taken from per-expert tensors: the forward pass cannot tell the difference).
  TensorView router;
  std::vector<TensorView> expert_w1, expert_w2, expert_w3;
};

struct ModelWeights {
  TensorView token_embedding;      // [vocab x dim]
  std::vector<float> output_norm;  // [dim]
  TensorView output;               // [vocab x dim]
  std::vector<LayerWeights> layers;
};

namespace detail {

// The three naming schemes, one function per role.
struct TensorNames {
  ModelFormat format;

  std::string embedding() const {
    switch (format) {
      case ModelFormat::kGguf: return "token_embd.weight";
      case ModelFormat::kHuggingFace: return "model.embed_tokens.weight";
      case ModelFormat::kConsolidated: return "tok_embeddings.weight";
    }
    return "";
  }
  std::string output_norm() const {
    switch (format) {
      case ModelFormat::kGguf: return "output_norm.weight";
      case ModelFormat::kHuggingFace: return "model.norm.weight";
      case ModelFormat::kConsolidated: return "norm.weight";
    }
    return "";
  }
  std::string output() const {
    return format == ModelFormat::kHuggingFace ? "lm_head.weight" : "output.weight";
  }
  // role: attention_norm, wq, wk, wv, wo, ffn_norm, w1, w2, w3, router
  std::string layer(int64_t layer, const char* role) const {
    const std::string r = role;
    const std::string n = std::to_string(layer);
    switch (format) {
      case ModelFormat::kGguf: {
        const char* name = r == "attention_norm" ? "attn_norm" : r == "wq" ? "attn_q" : r == "wk" ? "attn_k"
                         : r == "wv" ? "attn_v" : r == "wo" ? "attn_output" : r == "ffn_norm" ? "ffn_norm"
                         : r == "w1" ? "ffn_gate" : r == "w2" ? "ffn_down" : r == "w3" ? "ffn_up"
                         : "ffn_gate_inp";
        return "blk." + n + "." + name + ".weight";
      }
      case ModelFormat::kHuggingFace: {
        const std::string p = "model.layers." + n + ".";
        if (r == "attention_norm") return p + "input_layernorm.weight";
        if (r == "ffn_norm") return p + "post_attention_layernorm.weight";
        if (r == "wq" || r == "wk" || r == "wv" || r == "wo")
          return p + "self_attn." + r.substr(1) + "_proj.weight";
        if (r == "w1") return p + "mlp.gate_proj.weight";
        if (r == "w2") return p + "mlp.down_proj.weight";
        if (r == "w3") return p + "mlp.up_proj.weight";
        return p + "block_sparse_moe.gate.weight";
      }
      case ModelFormat::kConsolidated: {
        const std::string p = "layers." + n + ".";
        if (r == "attention_norm") return p + "attention_norm.weight";
        if (r == "ffn_norm") return p + "ffn_norm.weight";
        if (r[0] == 'w' && (r[1] == 'q' || r[1] == 'k' || r[1] == 'v' || r[1] == 'o'))
          return p + "attention." + r + ".weight";
        if (r == "router") return p + "feed_forward.gate.weight";
        return p + "feed_forward." + r + ".weight";
      }
    }
    return "";
  }
  // One expert's matrix (w1/w2/w3) in per-expert layouts.
  std::string expert(int64_t layer, int64_t expert, const char* w) const {
    const std::string n = std::to_string(layer), e = std::to_string(expert), r = w;
    switch (format) {
      case ModelFormat::kGguf: {
        const char* name = r == "w1" ? "ffn_gate" : r == "w2" ? "ffn_down" : "ffn_up";
        return "blk." + n + "." + name + "." + e + ".weight";
      }
      case ModelFormat::kHuggingFace:
        return "model.layers." + n + ".block_sparse_moe.experts." + e + "." + r + ".weight";
      case ModelFormat::kConsolidated:
        return "layers." + n + ".feed_forward.experts." + e + "." + r + ".weight";
    }
    return "";
  }
  // GGUF's stacked experts tensor (llama.cpp since 2024).
  static std::string stacked_experts(int64_t layer, const char* w) {
    const std::string r = w;
    const char* name = r == "w1" ? "ffn_gate_exps" : r == "w2" ? "ffn_down_exps" : "ffn_up_exps";
    return "blk." + std::to_string(layer) + "." + name + ".weight";
  }
};

inline std::string shape_string(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < t.n_dims; ++i) {
    if (i) s += ", ";
    s += std::to_string(t.ne[i]);
  }
  return s + "]";
}

inline Expected<TensorView> bind_matrix(const ModelFiles& files, const std::string& name, int64_t row_length,
                                        int64_t rows) {
  const TensorView* t = files.find_tensor(name);
  if (t == nullptr) return make_error(ErrorCode::kMissing, "%s: missing tensor '%s'", files.path().c_str(), name.c_str());
  if (t->n_dims != 2 || t->ne[0] != row_length || t->ne[1] != rows) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' has shape %s (innermost first), expected [%lld, %lld]",
                      files.path().c_str(), name.c_str(), shape_string(*t).c_str(), (long long)row_length,
                      (long long)rows);
  }
  return *t;
}

inline Expected<std::vector<float>> bind_vector_f32(const ModelFiles& files, const std::string& name, int64_t n) {
  const TensorView* t = files.find_tensor(name);
  if (t == nullptr) return make_error(ErrorCode::kMissing, "%s: missing tensor '%s'", files.path().c_str(), name.c_str());
  if (t->elements() != n || (t->n_dims != 1 && !(t->n_dims == 2 && t->ne[1] == 1))) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' has shape %s, expected [%lld]", files.path().c_str(),
                      name.c_str(), shape_string(*t).c_str(), (long long)n);
  }
  const WeightTypeInfo info = weight_type_info(t->type);
  if (n % info.block_elements != 0) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' of type %s cannot hold %lld values",
                      files.path().c_str(), name.c_str(), info.name, (long long)n);
  }
  std::vector<float> values(static_cast<size_t>(n));
  dequantize_row(t->type, t->data, values.data(), n);
  return values;
}

// Cuts a stacked [E][rows][row_length] tensor into E matrices (zero copy).
inline Expected<std::vector<TensorView>> slice_stacked_experts(const ModelFiles& files, const std::string& name,
                                                               int64_t row_length, int64_t rows, int64_t n_experts) {
  const TensorView* t = files.find_tensor(name);
  if (t == nullptr) return make_error(ErrorCode::kMissing, "%s: missing tensor '%s'", files.path().c_str(), name.c_str());
  if (t->n_dims != 3 || t->ne[0] != row_length || t->ne[1] != rows || t->ne[2] != n_experts) {
    return make_error(ErrorCode::kShape, "%s: tensor '%s' has shape %s, expected [%lld, %lld, %lld]",
                      files.path().c_str(), name.c_str(), shape_string(*t).c_str(), (long long)row_length,
                      (long long)rows, (long long)n_experts);
  }
  std::vector<TensorView> experts;
  const uint64_t expert_bytes = t->row_bytes() * static_cast<uint64_t>(rows);
  for (int64_t e = 0; e < n_experts; ++e) {
    TensorView view = *t;
    view.name = name + "[" + std::to_string(e) + "]";
    view.n_dims = 2;
    view.ne[2] = 1;
    view.data = t->data + expert_bytes * static_cast<uint64_t>(e);
    view.bytes = expert_bytes;
    experts.push_back(view);
  }
  return experts;
}

inline Expected<std::vector<TensorView>> bind_experts(const ModelFiles& files, const TensorNames& names,
                                                      int64_t layer, const char* w, int64_t row_length,
                                                      int64_t rows, int64_t n_experts) {
  if (files.format() == ModelFormat::kGguf) {
    const std::string stacked = TensorNames::stacked_experts(layer, w);
    if (files.find_tensor(stacked) != nullptr)
      return slice_stacked_experts(files, stacked, row_length, rows, n_experts);
  }
  std::vector<TensorView> experts;
  for (int64_t e = 0; e < n_experts; ++e) {
    auto m = bind_matrix(files, names.expert(layer, e, w), row_length, rows);
    if (!m) return m.error();
    experts.push_back(*m);
  }
  return experts;
}

}  // namespace detail

// Binds every tensor the configuration calls for; the first missing or misshapen one is the error.
inline Expected<ModelWeights> bind_weights(const ModelFiles& files) {
  const ModelConfig& c = files.config();
  const detail::TensorNames names{files.format()};
  ModelWeights w;
  const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;

  auto embedding = detail::bind_matrix(files, names.embedding(), c.dim, c.vocab_size);
  if (!embedding) return embedding.error();
  w.token_embedding = *embedding;
  auto output_norm = detail::bind_vector_f32(files, names.output_norm(), c.dim);
  if (!output_norm) return output_norm.error();
  w.output_norm = std::move(*output_norm);
  // Some GGUF conversions tie the output matrix to the embedding and leave output.weight out.
  if (files.format() == ModelFormat::kGguf && files.find_tensor(names.output()) == nullptr) {
    w.output = w.token_embedding;
  } else {
    auto output = detail::bind_matrix(files, names.output(), c.dim, c.vocab_size);
    if (!output) return output.error();
    w.output = *output;
  }

  for (int64_t l = 0; l < c.n_layers; ++l) {
    LayerWeights layer;
    auto attention_norm = detail::bind_vector_f32(files, names.layer(l, "attention_norm"), c.dim);
    if (!attention_norm) return attention_norm.error();
    layer.attention_norm = std::move(*attention_norm);
    auto ffn_norm = detail::bind_vector_f32(files, names.layer(l, "ffn_norm"), c.dim);
    if (!ffn_norm) return ffn_norm.error();
    layer.ffn_norm = std::move(*ffn_norm);

    struct MatrixRole { const char* role; TensorView* slot; int64_t row_length, rows; };
    std::vector<MatrixRole> roles = {{"wq", &layer.wq, c.dim, q_dim},
                                     {"wk", &layer.wk, c.dim, kv_dim},
                                     {"wv", &layer.wv, c.dim, kv_dim},
                                     {"wo", &layer.wo, q_dim, c.dim}};
    if (c.n_experts == 0) {
      roles.push_back({"w1", &layer.w1, c.dim, c.hidden_dim});
      roles.push_back({"w2", &layer.w2, c.hidden_dim, c.dim});
      roles.push_back({"w3", &layer.w3, c.dim, c.hidden_dim});
    } else {
      roles.push_back({"router", &layer.router, c.dim, c.n_experts});
    }
    for (const MatrixRole& r : roles) {
      auto m = detail::bind_matrix(files, names.layer(l, r.role), r.row_length, r.rows);
      if (!m) return m.error();
      *r.slot = *m;
    }
    if (c.n_experts > 0) {
      auto w1 = detail::bind_experts(files, names, l, "w1", c.dim, c.hidden_dim, c.n_experts);
      if (!w1) return w1.error();
      auto w2 = detail::bind_experts(files, names, l, "w2", c.hidden_dim, c.dim, c.n_experts);
      if (!w2) return w2.error();
      auto w3 = detail::bind_experts(files, names, l, "w3", c.dim, c.hidden_dim, c.n_experts);
      if (!w3) return w3.error();
      layer.expert_w1 = std::move(*w1);
      layer.expert_w2 = std::move(*w2);
      layer.expert_w3 = std::move(*w3);
    }
    w.layers.push_back(std::move(layer));
  }
  return w;
}

}  // namespace bora

#endif  // BORA_MODEL_WEIGHTS_HPP
// ---- end bora/model/weights.hpp ----------------------------------------------------------------------

namespace bora {

// Buffers a feed-forward call may use, sized by the transformer for its largest chunk.
struct FeedForwardScratch {
  float* gate = nullptr;      // [n_tokens][hidden_dim]
  float* up = nullptr;        // [n_tokens][hidden_dim]
  float* gathered = nullptr;  // [n_tokens][dim]   (MoE: the tokens routed to one expert)
  float* expert_out = nullptr;  // [n_tokens][dim] (MoE)
  float* router_logits = nullptr;  // [n_tokens][n_experts] (MoE)
  int32_t* routed_tokens = nullptr;  // [n_tokens] (MoE)
  float* routed_weights = nullptr;   // [n_tokens] (MoE)
  int32_t* chosen = nullptr;         // [n_tokens][top_k] (MoE)
  float* chosen_weights = nullptr;   // [n_tokens][top_k] (MoE)
  std::vector<int32_t>* expert_trace = nullptr;  // when set, MoE appends layer, position, ids...
  int64_t layer = 0;
  int64_t first_position = 0;
  int max_threads = 0;
};

namespace detail {
// w2(silu(w1 x) * w3 x) for n rows of x, written to out.
inline void swiglu(ThreadPool& pool, const FeedForwardScratch& s, const TensorView& w1, const TensorView& w2,
                   const TensorView& w3, const float* x, int64_t n, int64_t hidden, float* out) {
  linear(pool, s.max_threads, w1, x, n, s.gate);
  linear(pool, s.max_threads, w3, x, n, s.up);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) ops::silu_mul(s.gate + t * hidden, s.up + t * hidden, hidden);
  }, s.max_threads);
  linear(pool, s.max_threads, w2, s.gate, n, out);
}
}  // namespace detail

struct DenseSwiGLU {
  static constexpr bool kSparse = false;

  // out[t] = FFN(x[t]); out is added to the residual by the caller.
  static void forward(const LayerWeights& w, const ModelConfig& c, const float* x, int64_t n, float* out,
                      const FeedForwardScratch& s, ThreadPool& pool) {
    detail::swiglu(pool, s, w.w1, w.w2, w.w3, x, n, c.hidden_dim, out);
  }
};

// Routing policies for SparseMoE: how many experts each token uses.
struct TopKFromFile {
  static int64_t k(const ModelConfig& c) { return c.n_experts_used; }
};
template <int K>
struct TopK {
  static_assert(K >= 1, "TopK<K>: a token must use at least one expert");
  static int64_t k(const ModelConfig&) { return K; }
};

template <class Routing = TopKFromFile>
struct SparseMoE {
  static constexpr bool kSparse = true;

  // Router = top-k of the raw logits, softmax over those k only (Mistral's reference). Tokens
  // are grouped by expert so each expert's weights are read once per chunk, and only chosen
  // experts are read at all.
  static void forward(const LayerWeights& w, const ModelConfig& c, const float* x, int64_t n, float* out,
                      const FeedForwardScratch& s, ThreadPool& pool) {
    const int64_t n_experts = c.n_experts, k = Routing::k(c), dim = c.dim;
    linear(pool, s.max_threads, w.router, x, n, s.router_logits);
    for (int64_t t = 0; t < n; ++t) {
      const float* logits = s.router_logits + t * n_experts;
      int32_t* chosen = s.chosen + t * k;
      float* weights = s.chosen_weights + t * k;
      // Selection in descending order; ties keep the lower expert index first.
      for (int64_t r = 0; r < k; ++r) {
        int32_t best = -1;
        for (int32_t e = 0; e < n_experts; ++e) {
          bool taken = false;
          for (int64_t q = 0; q < r; ++q) taken = taken || chosen[q] == e;
          if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        chosen[r] = best;
        weights[r] = logits[best];
      }
      ops::softmax(weights, k);
      if (s.expert_trace != nullptr) {
        s.expert_trace->push_back(static_cast<int32_t>(s.layer));
        s.expert_trace->push_back(static_cast<int32_t>(s.first_position + t));
        for (int64_t r = 0; r < k; ++r) s.expert_trace->push_back(chosen[r]);
      }
      for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = 0.0f;
    }
    for (int32_t e = 0; e < n_experts; ++e) {
      int64_t m = 0;
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t r = 0; r < k; ++r) {
          if (s.chosen[t * k + r] != e) continue;
          s.routed_tokens[m] = static_cast<int32_t>(t);
          s.routed_weights[m] = s.chosen_weights[t * k + r];
          std::copy(x + t * dim, x + (t + 1) * dim, s.gathered + m * dim);
          ++m;
        }
      }
      if (m == 0) continue;
      detail::swiglu(pool, s, w.expert_w1[e], w.expert_w2[e], w.expert_w3[e], s.gathered, m, c.hidden_dim,
                     s.expert_out);
      for (int64_t i = 0; i < m; ++i)
        ops::axpy(s.routed_weights[i], s.expert_out + i * dim, out + s.routed_tokens[i] * dim, dim);
    }
  }
};

}  // namespace bora

#endif  // BORA_MODEL_FEED_FORWARD_HPP
// ---- end bora/model/feed_forward.hpp -----------------------------------------------------------------
// ---- begin bora/model/kv_cache.hpp -------------------------------------------------------------------
// Why this file exists: the KV cache policy. A rolling cache keeps exactly `capacity` positions per
// layer (the sliding window, or the whole context when there is none): position p lives in slot
// p % capacity, so memory stays bounded however long the stream runs.
#ifndef BORA_MODEL_KV_CACHE_HPP
#define BORA_MODEL_KV_CACHE_HPP

#include <cstdint>
#include <type_traits>
#include <vector>


namespace bora {

// Storage element tags for the cache policy.
struct f32 {
  using storage = float;
  static constexpr const char* name = "f32";
};
struct f16 {
  using storage = uint16_t;
  static constexpr const char* name = "f16";
};

template <class Element>
class RollingKvCache {
  static_assert(std::is_same<Element, f32>::value || std::is_same<Element, f16>::value,
                "RollingKvCache<Element>: Element must be bora::f32 or bora::f16");

 public:
  using element = Element;
  using storage = typename Element::storage;

  void init(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity) {
    n_layers_ = n_layers;
    kv_dim_ = n_kv_heads * head_dim;
    capacity_ = capacity;
    keys_.assign(static_cast<size_t>(n_layers * capacity * kv_dim_), storage{});
    values_.assign(keys_.size(), storage{});
  }

  int64_t capacity() const { return capacity_; }
  int64_t slot_of(int64_t position) const { return position % capacity_; }
  uint64_t bytes() const { return (keys_.size() + values_.size()) * sizeof(storage); }

  // Writes the rotated key and the value (kv_dim floats each) of `position`.
  void store(int64_t layer, int64_t position, const float* key, const float* value) {
    storage* k = key_slot(layer, slot_of(position));
    storage* v = value_slot(layer, slot_of(position));
    copy_in(key, k);
    copy_in(value, v);
  }

  // Reads `count` floats of a stored key/value starting at `offset` within the slot. For f32 the
  // returned pointer is the cache itself; for f16 the values are widened into `buffer`.
  const float* key(int64_t layer, int64_t position, int64_t offset, int64_t count, float* buffer) const {
    return read(key_slot(layer, slot_of(position)) + offset, count, buffer);
  }
  const float* value(int64_t layer, int64_t position, int64_t offset, int64_t count, float* buffer) const {
    return read(value_slot(layer, slot_of(position)) + offset, count, buffer);
  }

  // Raw access for saving and restoring a session.
  std::vector<storage>& raw_keys() { return keys_; }
  std::vector<storage>& raw_values() { return values_; }

 private:
  storage* key_slot(int64_t layer, int64_t slot) { return keys_.data() + (layer * capacity_ + slot) * kv_dim_; }
  storage* value_slot(int64_t layer, int64_t slot) { return values_.data() + (layer * capacity_ + slot) * kv_dim_; }
  const storage* key_slot(int64_t layer, int64_t slot) const {
    return keys_.data() + (layer * capacity_ + slot) * kv_dim_;
  }
  const storage* value_slot(int64_t layer, int64_t slot) const {
    return values_.data() + (layer * capacity_ + slot) * kv_dim_;
  }

  void copy_in(const float* from, storage* to) const {
    if constexpr (std::is_same<Element, f32>::value) {
      for (int64_t i = 0; i < kv_dim_; ++i) to[i] = from[i];
    } else {
      ops::f32_to_f16(from, to, kv_dim_);
    }
  }
  const float* read(const storage* from, int64_t count, float* buffer) const {
    if constexpr (std::is_same<Element, f32>::value) {
      (void)count;
      (void)buffer;
      return from;
    } else {
      ops::f16_to_f32(from, buffer, count);
      return buffer;
    }
  }

  int64_t n_layers_ = 0, kv_dim_ = 0, capacity_ = 0;
  std::vector<storage> keys_, values_;
};

}  // namespace bora

#endif  // BORA_MODEL_KV_CACHE_HPP
// ---- end bora/model/kv_cache.hpp ---------------------------------------------------------------------

namespace bora {

enum class KvCacheType { kF16, kF32 };

// How a model is opened (llama.h users know these words).
struct LoadParams {
  // Called with a fraction in [0, 1] while mapping and validating; return false to cancel.
  bool (*progress_callback)(float progress, void* user_data) = nullptr;
  void* progress_user_data = nullptr;
  // load_any() picks the KV cache policy from this (load<Preset>() uses the preset's).
  KvCacheType kv_cache_type = KvCacheType::kF16;
};

// One stream of positions over a loaded model: its KV cache, buffers and threads.
struct ContextParams {
  int64_t n_ctx = 4096;     // positions held when there is no sliding window
  int64_t n_batch = 512;    // prompt tokens processed together (longer prompts are split)
  int n_threads = 1;        // threads for generation (one token at a time)
  int n_threads_batch = 0;  // threads for prompt processing (0 = n_threads)
  int64_t sliding_window = -1;  // -1: as the file says; 0: no window; N > 0: window of N keys
  // Checked between layers during long prompts; return true to abort (kCancelled).
  bool (*abort_callback)(void* user_data) = nullptr;
  void* abort_user_data = nullptr;
  // When set, a sparse-MoE model appends (layer, position, chosen expert ids...) per token.
  std::vector<int32_t>* expert_trace = nullptr;
};

class ModelContext {
 public:
  virtual ~ModelContext() = default;
  int64_t n_past() const { return n_past_; }  // positions consumed so far
  int64_t window() const { return window_; }  // effective sliding window, 0 = none
  int64_t kv_capacity() const { return kv_capacity_; }
  const ContextParams& params() const { return params_; }
  // Forget all positions: the next token is at position 0 again.
  void reset() { n_past_ = 0; }

 protected:
  ContextParams params_;
  int64_t n_past_ = 0;
  int64_t window_ = 0;
  int64_t kv_capacity_ = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const ModelFiles& files() const = 0;
  virtual const char* preset_name() const = 0;
  virtual Expected<std::unique_ptr<ModelContext>> create_context(const ContextParams& params) const = 0;
  // Consumes `n` tokens at positions ctx.n_past() ...; writes logits for every token
  // ([n][vocab]) when all_logits, else for the last one only ([vocab]). logits may be null.
  virtual Status forward(ModelContext& ctx, const int32_t* tokens, int64_t n, float* logits,
                         bool all_logits) const = 0;
};

namespace detail {
// Detection of the policy kinds, so a wrong composition fails with a sentence, not a template trace.
template <class T, class = void>
struct is_attention_policy : std::false_type {};
template <class T>
struct is_attention_policy<T, std::void_t<typename T::mask>> : std::true_type {};
template <class T, class = void>
struct is_kv_cache_policy : std::false_type {};
template <class T>
struct is_kv_cache_policy<T, std::void_t<typename T::element>> : std::true_type {};
template <class T, class = void>
struct is_feed_forward_policy : std::false_type {};
template <class T>
struct is_feed_forward_policy<T, std::void_t<decltype(T::kSparse)>> : std::true_type {};
}  // namespace detail

template <class Attention, class KvCache, class FeedForward>
class Transformer final : public Model {
  static_assert(detail::is_attention_policy<Attention>::value,
                "Transformer<Attention, ...>: Attention must be an attention policy such as "
                "GroupedQueryAttention<SlidingWindow>");
  static_assert(detail::is_kv_cache_policy<KvCache>::value,
                "Transformer<..., KvCache, ...>: KvCache must be a cache policy such as RollingKvCache<f16>");
  static_assert(detail::is_feed_forward_policy<FeedForward>::value,
                "Transformer<..., FeedForward>: FeedForward must be DenseSwiGLU or SparseMoE<...>");

 public:
  using attention_policy = Attention;
  using kv_cache_policy = KvCache;
  using feed_forward_policy = FeedForward;

  // The state of one stream: cache, buffers sized once for n_batch tokens, the thread pool.
  class Context final : public ModelContext {
   public:
    KvCache cache;
    std::unique_ptr<ThreadPool> pool;
    std::vector<float> x, normed, q, k, v, attended, projected, gate, up, gathered, expert_out, router_logits,
        chosen_weights, routed_weights, attention_scratch, last_hidden;
    std::vector<int32_t> chosen, routed_tokens;
    int64_t scratch_per_thread = 0;
    friend class Transformer;
  };

  static Expected<std::unique_ptr<Transformer>> load(ModelFiles files, const LoadParams& params = {}) {
    const ModelConfig& c = files.config();
    if (FeedForward::kSparse && c.n_experts == 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: this preset needs a mixture-of-experts model, but the file is dense",
                        files.path().c_str());
    }
    if (!FeedForward::kSparse && c.n_experts != 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: this preset needs a dense model, but the file has %lld experts",
                        files.path().c_str(), (long long)c.n_experts);
    }
    if (params.progress_callback && !params.progress_callback(0.5f, params.progress_user_data))
      return make_error(ErrorCode::kCancelled, "%s: loading cancelled", files.path().c_str());
    auto weights = bind_weights(files);
    if (!weights) return weights.error();
    std::unique_ptr<Transformer> model(new Transformer(std::move(files), std::move(*weights)));
    if (params.progress_callback && !params.progress_callback(1.0f, params.progress_user_data))
      return make_error(ErrorCode::kCancelled, "%s: loading cancelled", model->files_.path().c_str());
    return model;
  }

  const ModelConfig& config() const override { return files_.config(); }
  const ModelFiles& files() const override { return files_; }
  const ModelWeights& weights() const { return weights_; }
  const char* preset_name() const override { return FeedForward::kSparse ? "mixtral" : "mistral"; }

  Expected<std::unique_ptr<ModelContext>> create_context(const ContextParams& params) const override {
    const ModelConfig& c = config();
    if (params.n_ctx <= 0 || params.n_batch <= 0 || params.n_threads <= 0 || params.n_threads_batch < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "context: n_ctx, n_batch and n_threads must be positive (n_ctx %lld, n_batch %lld, "
                        "n_threads %d)",
                        (long long)params.n_ctx, (long long)params.n_batch, params.n_threads);
    }
    std::unique_ptr<Context> ctx(new Context());
    ctx->params_ = params;
    if (ctx->params_.n_threads_batch == 0) ctx->params_.n_threads_batch = params.n_threads;
    int64_t window = Attention::mask::kUsesFileWindow ? c.sliding_window : 0;
    if (params.sliding_window >= 0) window = params.sliding_window;
    ctx->window_ = window;
    ctx->kv_capacity_ = window > 0 ? std::min(window, params.n_ctx) : params.n_ctx;
    const int64_t n = params.n_batch, dim = c.dim, q_dim = c.n_heads * c.head_dim,
                  kv_dim = c.n_kv_heads * c.head_dim, hidden = c.hidden_dim, k = std::max<int64_t>(1, c.n_experts_used);
    ctx->cache.init(c.n_layers, c.n_kv_heads, c.head_dim, ctx->kv_capacity_);
    const int threads = std::max(ctx->params_.n_threads, ctx->params_.n_threads_batch);
    ctx->pool.reset(new ThreadPool(threads));
    auto sized = [](std::vector<float>& b, int64_t count) { b.assign(static_cast<size_t>(count), 0.0f); };
    sized(ctx->x, n * dim);
    sized(ctx->normed, n * dim);
    sized(ctx->q, n * q_dim);
    sized(ctx->k, n * kv_dim);
    sized(ctx->v, n * kv_dim);
    sized(ctx->attended, n * q_dim);
    sized(ctx->projected, n * dim);
    sized(ctx->gate, n * hidden);
    sized(ctx->up, n * hidden);
    sized(ctx->last_hidden, dim);
    if (FeedForward::kSparse) {
      sized(ctx->gathered, n * dim);
      sized(ctx->expert_out, n * dim);
      sized(ctx->router_logits, n * c.n_experts);
      sized(ctx->chosen_weights, n * k);
      sized(ctx->routed_weights, n * k);
      ctx->chosen.assign(static_cast<size_t>(n * k), 0);
      ctx->routed_tokens.assign(static_cast<size_t>(n * k), 0);
    }
    ctx->scratch_per_thread =
        Attention::scratch_floats_per_thread(c.n_heads, c.n_kv_heads, c.head_dim, ctx->kv_capacity_);
    sized(ctx->attention_scratch, ctx->scratch_per_thread * threads);
    return std::unique_ptr<ModelContext>(std::move(ctx));
  }

  Status forward(ModelContext& base_ctx, const int32_t* tokens, int64_t n, float* logits,
                 bool all_logits) const override {
    Context& ctx = static_cast<Context&>(base_ctx);
    const ModelConfig& c = config();
    for (int64_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
        return make_error(ErrorCode::kInvalidArgument, "token %d at index %lld is outside the vocabulary (%lld)",
                          tokens[i], (long long)i, (long long)c.vocab_size);
      }
    }
    // Without a window every position needs its own slot; with one, the cache rolls forever
    // unless the window is larger than the context.
    const bool rolls = ctx.window_ > 0 && ctx.window_ <= ctx.kv_capacity_;
    if (!rolls && ctx.n_past_ + n > ctx.kv_capacity_) {
      return make_error(ErrorCode::kContextFull, "context full: %lld positions used, %lld more requested, room for %lld",
                        (long long)ctx.n_past_, (long long)n, (long long)ctx.kv_capacity_);
    }
    const int64_t batch = ctx.params_.n_batch;
    for (int64_t start = 0; start < n; start += batch) {
      const int64_t count = std::min(batch, n - start);
      const bool last_chunk = start + count == n;
      float* chunk_logits = nullptr;
      if (logits != nullptr && all_logits) chunk_logits = logits + start * c.vocab_size;
      if (logits != nullptr && !all_logits && last_chunk) chunk_logits = logits;
      Status status = forward_chunk(ctx, tokens + start, count, chunk_logits, all_logits);
      if (!status) return status;
    }
    return Status();
  }

 private:
  Transformer(ModelFiles files, ModelWeights weights) : files_(std::move(files)), weights_(std::move(weights)) {}

  bool aborted(const Context& ctx) const {
    return ctx.params_.abort_callback != nullptr && ctx.params_.abort_callback(ctx.params_.abort_user_data);
  }

  // One chunk of up to n_batch tokens through every layer.
  Status forward_chunk(Context& ctx, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const {
    const ModelConfig& c = config();
    const int64_t dim = c.dim, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const int64_t first = ctx.n_past_;
    ThreadPool& pool = *ctx.pool;
    const int threads = n == 1 ? ctx.params_.n_threads : ctx.params_.n_threads_batch;

    for (int64_t t = 0; t < n; ++t) {
      const TensorView& e = weights_.token_embedding;
      dequantize_row(e.type, e.row(tokens[t]), ctx.x.data() + t * dim, dim);
    }
    for (int64_t l = 0; l < c.n_layers; ++l) {
      if (n > 1 && aborted(ctx)) return make_error(ErrorCode::kCancelled, "prompt processing aborted at layer %lld", (long long)l);
      const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
      // Attention block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ctx.x.data() + t * dim, w.attention_norm.data(), c.norm_eps, dim, ctx.normed.data() + t * dim);
      }, threads);
      linear(pool, threads, w.wq, ctx.normed.data(), n, ctx.q.data());
      linear(pool, threads, w.wk, ctx.normed.data(), n, ctx.k.data());
      linear(pool, threads, w.wv, ctx.normed.data(), n, ctx.v.data());
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t) {
          ops::rope(ctx.q.data() + t * q_dim, c.n_heads, c.head_dim, first + t, c.rope_theta, c.rope_pairing);
          ops::rope(ctx.k.data() + t * kv_dim, c.n_kv_heads, c.head_dim, first + t, c.rope_theta, c.rope_pairing);
        }
      }, threads);
      AttentionChunk chunk;
      chunk.layer = l;
      chunk.first_position = first;
      chunk.n_tokens = n;
      chunk.n_heads = c.n_heads;
      chunk.n_kv_heads = c.n_kv_heads;
      chunk.head_dim = c.head_dim;
      chunk.window = ctx.window_;
      chunk.q = ctx.q.data();
      chunk.k = ctx.k.data();
      chunk.v = ctx.v.data();
      chunk.out = ctx.attended.data();
      chunk.thread_scratch = ctx.attention_scratch.data();
      chunk.scratch_per_thread = ctx.scratch_per_thread;
      chunk.max_threads = threads;
      Attention::forward(chunk, ctx.cache, pool);
      // Only now may the chunk's keys overwrite older slots: its queries needed those.
      for (int64_t t = std::max<int64_t>(0, n - ctx.kv_capacity_); t < n; ++t)
        ctx.cache.store(l, first + t, ctx.k.data() + t * kv_dim, ctx.v.data() + t * kv_dim);
      linear(pool, threads, w.wo, ctx.attended.data(), n, ctx.projected.data());
      for (int64_t i = 0; i < n * dim; ++i) ctx.x[static_cast<size_t>(i)] += ctx.projected[static_cast<size_t>(i)];

      // Feed-forward block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ctx.x.data() + t * dim, w.ffn_norm.data(), c.norm_eps, dim, ctx.normed.data() + t * dim);
      }, threads);
      FeedForwardScratch s;
      s.gate = ctx.gate.data();
      s.up = ctx.up.data();
      s.gathered = ctx.gathered.data();
      s.expert_out = ctx.expert_out.data();
      s.router_logits = ctx.router_logits.data();
      s.routed_tokens = ctx.routed_tokens.data();
      s.routed_weights = ctx.routed_weights.data();
      s.chosen = ctx.chosen.data();
      s.chosen_weights = ctx.chosen_weights.data();
      s.expert_trace = ctx.params_.expert_trace;
      s.layer = l;
      s.first_position = first;
      s.max_threads = threads;
      FeedForward::forward(w, c, ctx.normed.data(), n, ctx.projected.data(), s, pool);
      for (int64_t i = 0; i < n * dim; ++i) ctx.x[static_cast<size_t>(i)] += ctx.projected[static_cast<size_t>(i)];
    }
    ctx.n_past_ = first + n;

    // Final norm and output head: every row, or just the last.
    const int64_t first_row = all_logits ? 0 : n - 1;
    const int64_t rows = n - first_row;
    for (int64_t t = first_row; t < n; ++t)
      ops::rmsnorm(ctx.x.data() + t * dim, weights_.output_norm.data(), c.norm_eps, dim,
                   ctx.normed.data() + (t - first_row) * dim);
    if (logits != nullptr) linear(pool, threads, weights_.output, ctx.normed.data(), rows, logits);
    return Status();
  }

  ModelFiles files_;
  ModelWeights weights_;
};

}  // namespace bora

#endif  // BORA_MODEL_TRANSFORMER_HPP
// ---- end bora/model/transformer.hpp ------------------------------------------------------------------

namespace bora {

// Mistral 7B: sliding-window GQA (window from the file), f16 cache, dense SwiGLU.
using Mistral7B = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<f16>, DenseSwiGLU>;
// Mixtral 8x7B: causal GQA, f16 cache, top-k of 8 experts (k from the file).
using Mixtral8x7B = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<f16>, SparseMoE<>>;
// The same with an f32 cache: what `--exact` runs, to match reference logits to 1e-3.
using Mistral7BExact = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<f32>, DenseSwiGLU>;
using Mixtral8x7BExact = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<f32>, SparseMoE<>>;

// Opens `path` (a .gguf file or a model folder) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<Preset>> load(const std::string& path, const LoadParams& params = {}) {
  auto files = ModelFiles::open(path);
  if (!files) return files.error();
  return Preset::load(std::move(*files), params);
}

// Opens any supported model, choosing dense or mixture-of-experts from the file and the cache
// element type from params.kv_cache_type.
inline Expected<std::unique_ptr<Model>> load_any(const std::string& path, const LoadParams& params = {}) {
  auto files = ModelFiles::open(path);
  if (!files) return files.error();
  const bool sparse = files->config().n_experts > 0;
  const bool exact_cache = params.kv_cache_type == KvCacheType::kF32;
  auto erase = [](auto loaded) -> Expected<std::unique_ptr<Model>> {
    if (!loaded) return loaded.error();
    return std::unique_ptr<Model>(std::move(*loaded));
  };
  if (sparse) {
    return exact_cache ? erase(Mixtral8x7BExact::load(std::move(*files), params))
                       : erase(Mixtral8x7B::load(std::move(*files), params));
  }
  return exact_cache ? erase(Mistral7BExact::load(std::move(*files), params))
                     : erase(Mistral7B::load(std::move(*files), params));
}

}  // namespace bora

#endif  // BORA_MODEL_PRESETS_HPP
// ---- end bora/model/presets.hpp ----------------------------------------------------------------------

#endif  // BORA_BORA_HPP

// Outside the guard on purpose: the implementation may be requested after a plain include.
#if defined(BORA_IMPLEMENTATION) && !defined(BORA_IMPLEMENTATION_INCLUDED)
#define BORA_IMPLEMENTATION_INCLUDED
// ---- begin bora/ops/implementation.hpp ---------------------------------------------------------------
// Why this file exists: the one translation unit that defines BORA_IMPLEMENTATION includes this, and
// only here are the kernels in kernels-inl.h compiled for every SIMD target (foreach_target.h) and
// the plain functions declared in ops.hpp defined, each dispatching to the best target at run time.
// With BORA_STATIC_DISPATCH only the target of the compiler flags (-march) is built: smaller
// binaries, no run-time detection.
#ifndef BORA_OPS_IMPLEMENTATION_HPP
#define BORA_OPS_IMPLEMENTATION_HPP

// Must precede the first Highway header of the translation unit.
#if defined(BORA_STATIC_DISPATCH) && !defined(HWY_COMPILE_ONLY_STATIC)
#define HWY_COMPILE_ONLY_STATIC 1
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>


// The single-header build points this at itself; the multi-header build uses the kernels file.
#ifndef BORA_KERNELS_INCLUDE
#define BORA_KERNELS_INCLUDE BORA_SINGLE_HEADER_PATH
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE BORA_KERNELS_INCLUDE
#if defined(BORA_SINGLE_HEADER_DEFAULT_PATH) && !defined(HWY_COMPILE_ONLY_STATIC) && \
    defined(__GNUC__) && defined(__has_include)
#if !__has_include(<bora.hpp>)
#error "bora.hpp re-includes itself once per SIMD target: add its directory to the include path (-I) or define BORA_SINGLE_HEADER_PATH"
#endif
#endif
#define BORA_SINGLE_HEADER_KERNEL_PASS
#include <hwy/foreach_target.h>  // re-includes HWY_TARGET_INCLUDE once per target
#undef BORA_SINGLE_HEADER_KERNEL_PASS
#include <hwy/highway.h>

#define BORA_SINGLE_HEADER_KERNEL_PASS
#include BORA_SINGLE_HEADER_PATH
#undef BORA_SINGLE_HEADER_KERNEL_PASS

#if HWY_ONCE
#include <hwy/aligned_allocator.h>
#include <hwy/targets.h>

namespace bora {
namespace ops {

HWY_EXPORT(TargetNameKernel);
HWY_EXPORT(DotKernel);
HWY_EXPORT(AxpyKernel);
HWY_EXPORT(ScaleKernel);
HWY_EXPORT(RmsNormKernel);
HWY_EXPORT(SoftmaxKernel);
HWY_EXPORT(SiluMulKernel);
HWY_EXPORT(F16ToF32Kernel);
HWY_EXPORT(F32ToF16Kernel);
HWY_EXPORT(MatvecKernel);
HWY_EXPORT(MatmulKernel);
HWY_EXPORT(RowDotKernel);

namespace detail {

// Per-thread buffer for the dequantized weight rows of matmul_f32: grown once to the largest row
// length seen, never freed in the token loop, private to each thread so callers can split rows.
inline float* matmul_scratch(size_t floats) {
  struct Buffer {
    hwy::AlignedFreeUniquePtr<float[]> data;
    size_t capacity = 0;
  };
  thread_local Buffer buffer;
  if (buffer.capacity < floats) {
    buffer.data = hwy::AllocateAligned<float>(floats);
    buffer.capacity = buffer.data ? floats : 0;
  }
  return buffer.data.get();
}

}  // namespace detail

void matvec_f32(const TensorView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin) return;
  HWY_DYNAMIC_DISPATCH(MatvecKernel)(w.type, w.data, w.row_bytes(), w.row_length(), x, y, row_begin,
                                     row_end);
}

void matmul_f32(const TensorView& w, const float* x, int64_t n_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  const uint64_t row_bytes = w.row_bytes();
  float* scratch = detail::matmul_scratch(static_cast<size_t>(kernels::kMatmulTileRows * n));
  if (scratch == nullptr) {
    // Out of memory for the row buffer: fall back to one row at a time (slower, no allocation).
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = row_begin; r < row_end; ++r) {
        y[t * y_stride + r] = HWY_DYNAMIC_DISPATCH(RowDotKernel)(
            w.type, w.data + static_cast<uint64_t>(r) * row_bytes, x + t * n, n);
      }
    }
    return;
  }
  HWY_DYNAMIC_DISPATCH(MatmulKernel)(w.type, w.data, row_bytes, n, x, n_tokens, y, y_stride,
                                     row_begin, row_end, scratch);
}

float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotKernel)(a, b, n); }

void axpy(float alpha, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(AxpyKernel)(alpha, x, y, n); }

void scale(float* x, float alpha, int64_t n) { HWY_DYNAMIC_DISPATCH(ScaleKernel)(x, alpha, n); }

void rmsnorm(const float* x, const float* weight, float eps, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(RmsNormKernel)(x, weight, eps, n, y);
}

void softmax(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(SoftmaxKernel)(x, n); }

void silu_mul(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMulKernel)(gate, up, n); }

// Scalar on purpose: RoPE touches head_dim values per head once per token, so it is cheap, and the
// angles are computed in double so large positions keep full f32 accuracy in cos/sin.
void rope(float* x, int64_t n_heads, int64_t head_dim, int64_t position, float theta, RopePairing pairing) {
  const int64_t half = head_dim / 2;
  if (half <= 0 || n_heads <= 0) return;
  constexpr int64_t kMaxCachedPairs = 512;
  double cos_cache[kMaxCachedPairs], sin_cache[kMaxCachedPairs];
  const int64_t cached = half < kMaxCachedPairs ? half : kMaxCachedPairs;
  auto angle_of = [&](int64_t i) {
    const double inverse_frequency =
        std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    return static_cast<double>(position) * inverse_frequency;
  };
  for (int64_t i = 0; i < cached; ++i) {
    const double angle = angle_of(i);
    cos_cache[i] = std::cos(angle);
    sin_cache[i] = std::sin(angle);
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* head = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      double c, s;
      if (i < cached) {
        c = cos_cache[i];
        s = sin_cache[i];
      } else {
        const double angle = angle_of(i);
        c = std::cos(angle);
        s = std::sin(angle);
      }
      float* first = pairing == RopePairing::kAdjacent ? head + 2 * i : head + i;
      float* second = pairing == RopePairing::kAdjacent ? head + 2 * i + 1 : head + i + half;
      const double a = *first, b = *second;
      *first = static_cast<float>(a * c - b * s);
      *second = static_cast<float>(a * s + b * c);
    }
  }
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) { HWY_DYNAMIC_DISPATCH(F32ToF16Kernel)(x, y, n); }

void f16_to_f32(const uint16_t* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(F16ToF32Kernel)(x, y, n); }

const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetNameKernel)(); }

}  // namespace ops
}  // namespace bora

#endif  // HWY_ONCE
#endif  // BORA_OPS_IMPLEMENTATION_HPP
// ---- end bora/ops/implementation.hpp -----------------------------------------------------------------
#endif
// ---- end bora/bora.hpp -------------------------------------------------------------------------------
#endif  // BORA_SINGLE_HEADER_KERNEL_PASS
