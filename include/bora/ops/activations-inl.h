// Why this file exists: the int8 activations of the fast path (layout in quant/q8_activations.hpp):
// quantizing a row in one or two levels, and the integer products every weight family's int8 kernels
// build on (portable, SDOT on SVE and dot-product NEON, AVX2, and 512-bit VNNI with both levels at once).
// Compiled once per target.

#include <cstddef>
#include <cstdint>

#include "bora/quant/q8_activations.hpp"

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>  // HWCAP_ASIMDDP: the dot product, for NEON kernels that detect it at run time
#include <sys/auxv.h>
#endif

#if defined(BORA_OPS_ACTIVATIONS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_ACTIVATIONS_INL_H_
#undef BORA_OPS_ACTIVATIONS_INL_H_
#else
#define BORA_OPS_ACTIVATIONS_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/target-inl.h"
#include "bora/ops/x86-inl.h"

BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// ---- quantization ------------------------------------------------------------------------------
// Per block of 32 the integer dot product of weight quants and activation quants is exact; kernels
// then scale it by the weight scale times the activation scale in f32.

// 16-lane pieces so that each 16-value half's sum falls out of one vector.
using Q8ActivationF32 = hn::CappedTag<float, 16>;

// Rounds block b's 32 values to int8 in [-127, 127] and stores them with d[b] = scale and the sums
// quant/q8_activations.hpp describes, as quant::store_activation_block_q8 does. scaled(i) gives the
// block's values [i, i + lanes) already divided by the step.
template <class Scaled>
HWY_INLINE void StoreActivationBlockQ8(const Scaled& scaled, float scale, int64_t b, int64_t n, uint8_t* out) {
  const Q8ActivationF32 df;
  const hn::Rebind<int32_t, Q8ActivationF32> di;
  const hn::Rebind<int8_t, Q8ActivationF32> di8;
  const size_t lanes = hn::Lanes(df);
  int8_t* q = reinterpret_cast<int8_t*>(out) + 32 * b;
  float* d = reinterpret_cast<float*>(out + n);
  float* d_sum = d + n / 32;
  float* d_sum16 = d_sum + n / 32;
  const auto high = hn::Set(di, 127);
  const auto low = hn::Set(di, -127);
  int32_t half_sums[2] = {0, 0};
  for (int half = 0; half < 2; ++half) {
    auto vsum = hn::Zero(di);
    for (size_t i = 16 * static_cast<size_t>(half); i < 16 * static_cast<size_t>(half) + 16; i += lanes) {
      const auto qi = hn::Min(hn::Max(hn::NearestInt(scaled(i)), low), high);
      vsum = hn::Add(vsum, qi);
      hn::StoreU(hn::DemoteTo(di8, qi), di8, q + i);
    }
    half_sums[half] = hn::GetLane(hn::SumOfLanes(di, vsum));
  }
  d[b] = scale;
  d_sum[b] = scale * static_cast<float>(half_sums[0] + half_sums[1]);
  d_sum16[2 * b] = scale * static_cast<float>(half_sums[0]);
  d_sum16[2 * b + 1] = scale * static_cast<float>(half_sums[1]);
}

// The same float operations as quant::quantize_activations_q8, so the bytes are identical.
inline void QuantizeRowQ8Kernel(const float* x, int64_t n, uint8_t* out) {
  const Q8ActivationF32 df;
  const size_t lanes = hn::Lanes(df);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    auto vmax = hn::Zero(df);
    for (size_t i = 0; i < 32; i += lanes) vmax = hn::Max(vmax, hn::Abs(hn::LoadU(df, xb + i)));
    const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const float scale = amax / 127.0f;
    const auto inverse = hn::Set(df, amax > 0.0f ? 1.0f / scale : 0.0f);
    StoreActivationBlockQ8([&](size_t i) { return hn::Mul(hn::LoadU(df, xb + i), inverse); }, scale, b, n, out);
  }
}

// The same float operations as quant::quantize_activation_residual_q8, except that a compiler may fuse
// the multiply and subtract of the rest, so a value can land one fine step away from the reference.
inline void QuantizeResidualQ8Kernel(const float* x, const uint8_t* hi, int64_t n, uint8_t* lo) {
  const Q8ActivationF32 df;
  const hn::Rebind<int32_t, Q8ActivationF32> di;
  const hn::Rebind<int8_t, Q8ActivationF32> di8;
  const quant::Q8ActivationRow first = quant::q8_activation_view(hi, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float scale = first.d[b] / 256.0f;
    const auto coarse = hn::Set(df, first.d[b]);
    const auto inverse = hn::Set(df, scale > 0.0f ? 256.0f / first.d[b] : 0.0f);
    StoreActivationBlockQ8(
        [&](size_t i) {
          const int64_t at = 32 * b + static_cast<int64_t>(i);
          const auto kept = hn::Mul(coarse, hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(di8, first.q + at))));
          return hn::Mul(hn::Sub(hn::LoadU(df, x + at), kept), inverse);
        },
        scale, b, n, lo);
  }
}

// ---- integer products ----------------------------------------------------------------------------

#if BORA_OPS_SVE
// SVE: SDOT (part of every SVE core) sums four int8 products per 32-bit lane, at any vector length;
// lanes past `count` load as zero.
HWY_INLINE int32_t DotI8(const int8_t* a, const int8_t* b, int count) {
  svint32_t sum = svdup_n_s32(0);
  const int step = static_cast<int>(svcntb());
  for (int i = 0; i < count; i += step) {
    const svbool_t active = svwhilelt_b8_s32(i, count);
    sum = svdot_s32(sum, svld1_s8(active, a + i), svld1_s8(active, b + i));
  }
  return static_cast<int32_t>(svaddv_s32(svptrue_b32(), sum));
}
#else
// Portable: weights decoded to int8, products widened to int16 and summed pairwise.
HWY_INLINE int32_t WidenedDotI8(const int8_t* a, const int8_t* b, int count) {
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

#if BORA_OPS_NEON_DOTPROD
// NEON with SDOT: four int8 products per 32-bit lane, 16 values per instruction (count a multiple of 16).
// (Compiled for Armv8.2 + dot product only when the CPU is checked before each call.)
#if BORA_OPS_NEON_DOTPROD == 2
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif
inline int32_t NeonDotprodI8(const int8_t* a, const int8_t* b, int count) {
  int32x4_t sum = vdupq_n_s32(0);
  for (int i = 0; i < count; i += 16) sum = vdotq_s32(sum, vld1q_s8(a + i), vld1q_s8(b + i));
  return vaddvq_s32(sum);
}
#if BORA_OPS_NEON_DOTPROD == 2
#pragma GCC pop_options
#endif
#endif

#if BORA_OPS_NEON_DOTPROD == 2
HWY_INLINE bool CpuHasDotprod() {
  static const bool has = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  return has;
}
#endif

// What the weight kernels call: SDOT where the core has it, else the widening products. Either way the
// integer sum is exact, so every target gives the same result.
HWY_INLINE int32_t DotI8(const int8_t* a, const int8_t* b, int count) {
#if BORA_OPS_NEON_DOTPROD == 1
  if (count % 16 == 0) return NeonDotprodI8(a, b, count);
#elif BORA_OPS_NEON_DOTPROD == 2
  if (count % 16 == 0 && CpuHasDotprod()) return NeonDotprodI8(a, b, count);
#endif
  return WidenedDotI8(a, b, count);
}
#endif

#if BORA_OPS_X86_INT8

// Sums of four adjacent u8 x s8 products per 32-bit lane. u <= 128 and |s| <= 127, so the 16-bit
// pair sums of maddubs (at most 2 * 128 * 127) never saturate. Not the 256-bit vpdpbusd even where
// AVX-512 VNNI is: Highway 1.0.3's AVX3_DL target enables AVX-VNNI, so the compiler would encode it
// in that extension's VEX form, which Ice Lake, Zen 4 and some virtual machines lack (SIGILL).
HWY_INLINE __m256i X86DotU8S8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// Signed x signed through the u8 x s8 instruction: |w| times s carrying w's sign.
HWY_INLINE __m256i X86DotS8S8(__m256i w, __m256i s) {
  return X86DotU8S8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(s, w));
}

#endif  // BORA_OPS_X86_INT8

#if BORA_OPS_X86_VNNI

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

// The activation scales a kernel multiplies integer sums by: the last level's (see X512DotLevels).
template <int kLevels>
HWY_INLINE const float* X512LevelScales(const quant::Q8ActivationRow* x) { return x[kLevels - 1].d; }

#endif  // BORA_OPS_X86_VNNI

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_ACTIVATIONS_INL_H_ toggle
