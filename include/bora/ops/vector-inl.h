// Why this file exists: the small f32 vector kernels of ops.hpp (dot, axpy, scale, rmsnorm, softmax,
// silu * up) and the f16 <-> f32 conversions, which the float weight rows reuse. Compiled once per
// target (toggle guard); ops.hpp's functions dispatch to them.

#include <cmath>
#include <cstdint>
#include <limits>

#include "bora/quant/f16.hpp"

#if defined(BORA_OPS_VECTOR_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_VECTOR_INL_H_
#undef BORA_OPS_VECTOR_INL_H_
#else
#define BORA_OPS_VECTOR_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include "bora/ops/target-inl.h"

BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

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
  // A NaN score (from a hostile session file's cache, say) gets weight 0, like a masked one: it is read as
  // -inf, so it neither wins the maximum nor reaches Exp, whose emulated targets convert the argument to
  // an integer (undefined for NaN).
  const auto minus_infinity = hn::Set(d, -std::numeric_limits<float>::infinity());
  auto without_nan = [&](hn::Vec<FullF32> v) { return hn::IfThenElse(hn::Eq(v, v), v, minus_infinity); };
  float max_value = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  if (n >= lanes) {
    auto vmax = without_nan(hn::LoadU(d, x));
    for (i = lanes; i + lanes <= n; i += lanes) vmax = hn::Max(vmax, without_nan(hn::LoadU(d, x + i)));
    max_value = hn::GetLane(hn::MaxOfLanes(d, vmax));
  }
  for (; i < n; ++i) max_value = std::fmax(max_value, x[i]);  // fmax ignores a NaN

  // hn::Exp returns exactly 0 below -104, so masked (-inf) entries vanish as they should.
  const auto vmax = hn::Set(d, max_value);
  auto vsum = hn::Zero(d);
  for (i = 0; i + lanes <= n; i += lanes) {
    const auto e = hn::Exp(d, hn::Sub(without_nan(hn::LoadU(d, x + i)), vmax));
    vsum = hn::Add(vsum, e);
    hn::StoreU(e, d, x + i);
  }
  float sum = hn::GetLane(hn::SumOfLanes(d, vsum));
  for (; i < n; ++i) {
    x[i] = std::isnan(x[i]) ? 0.0f : std::exp(x[i] - max_value);
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

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_VECTOR_INL_H_ toggle
