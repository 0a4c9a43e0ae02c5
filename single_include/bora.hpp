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
// Why this file exists: the one file implementation.hpp hands to Highway's foreach_target.h, which
// re-includes it once per CPU target (hence toggle guards, not include guards, here and in every
// -inl.h it includes). It gathers the kernel files:
//   target-inl.h         attributes, x86 capability macros, shared tags
//   x86-inl.h            raw x86 helpers several families share
//   vector-inl.h         small f32 vector kernels, f16 conversions
//   attention-inl.h      query rows against cached keys and values, online softmax
//   activations-inl.h    int8 activation quantization and the integer products built on it
//   row_tiles-inl.h      what the kernels over row tiles share (512-bit VNNI)
//   float_weights-inl.h  F32, F16, BF16 rows
//   legacy_blocks-inl.h  Q8_0 and Q4_0
//   k_quants-inl.h       Q4_K and Q5_K
//   q6_k-inl.h           Q6_K
//   matmul-inl.h         per-type dispatch, matrix x vector and the batched (prompt) tiling
//   peak-inl.h           the core's int8 multiply-accumulate rate (for benchmarks)
// Nothing here is called directly: ops.hpp's functions dispatch to the best target the CPU supports.

#if defined(BORA_OPS_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_KERNELS_INL_H_
#undef BORA_OPS_KERNELS_INL_H_
#else
#define BORA_OPS_KERNELS_INL_H_
#endif

// ---- begin bora/ops/target-inl.h ---------------------------------------------------------------------
// Why this file exists: what every per-target kernel file needs before its own code: the attributes
// its namespace is compiled with, which x86 instruction families the target may use directly, and
// the vector tags the kernels share. Re-included once per target like the kernels (toggle guard).

#if defined(BORA_OPS_TARGET_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_TARGET_INL_H_
#undef BORA_OPS_TARGET_INL_H_
#else
#define BORA_OPS_TARGET_INL_H_
#endif

#include <hwy/highway.h>

// Raw x86 intrinsics: u8 x s8 products from AVX2 up, and 512-bit VNNI (vpdpbusd) from AVX3_DL up;
// lower numbers are better targets, so newer ones (AVX3_ZEN4, AVX3_SPR, ...) count too.
#undef BORA_OPS_X86_INT8
#undef BORA_OPS_X86_VNNI
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define BORA_OPS_X86_INT8 1
#else
#define BORA_OPS_X86_INT8 0
#endif
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL
#define BORA_OPS_X86_VNNI 1
#else
#define BORA_OPS_X86_VNNI 0
#endif
// Arm SVE in any of Highway's variants: SDOT (four int8 products per 32-bit lane) is part of them all.
#undef BORA_OPS_SVE
#if HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 || HWY_TARGET == HWY_SVE2_128
#define BORA_OPS_SVE 1
#else
#define BORA_OPS_SVE 0
#endif
// Arm NEON with Armv8.2's dot product (SDOT): 1 when the compiler may assume it (-march=armv8.2-a+dotprod,
// Apple cores), 2 when it is detected at run time (GCC on Linux, whose Highway NEON target assumes only
// Armv8.0, as a Cortex-A53 or A72 has), 0 otherwise.
#undef BORA_OPS_NEON_DOTPROD
#if HWY_TARGET == HWY_NEON && HWY_ARCH_ARM_A64 && defined(__ARM_FEATURE_DOTPROD)
#define BORA_OPS_NEON_DOTPROD 1
#elif HWY_TARGET == HWY_NEON && HWY_ARCH_ARM_A64 && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define BORA_OPS_NEON_DOTPROD 2
#else
#define BORA_OPS_NEON_DOTPROD 0
#endif

// Use BORA_OPS_BEFORE_NAMESPACE() / BORA_OPS_AFTER_NAMESPACE() where Highway code would use
// HWY_BEFORE_NAMESPACE() / HWY_AFTER_NAMESPACE().
//
// Highway only selects AVX3_DL on CPUs with VNNI, but Highway 1.0.3 names only "avxvnni" in that
// target's attribute string, so the EVEX form's feature is appended to the target's own string. It
// must be one string: Clang keeps one target attribute per function, so a second push of
// "avx512vnni" alone would be ignored (and vpdpbusd rejected). Naming a feature twice, as newer
// Highway versions' strings would, is harmless. MSVC needs no attributes (HWY_PUSH_ATTRIBUTES is
// empty there).
#undef BORA_OPS_TARGET_ATTRIBUTES
#undef BORA_OPS_POP_TARGET_ATTRIBUTES
#if BORA_OPS_X86_VNNI && defined(HWY_TARGET_STR)
#define BORA_OPS_TARGET_ATTRIBUTES HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR ",avx512vnni")
#define BORA_OPS_POP_TARGET_ATTRIBUTES HWY_POP_ATTRIBUTES
#elif defined(HWY_TARGET_STR)
#define BORA_OPS_TARGET_ATTRIBUTES HWY_PUSH_ATTRIBUTES(HWY_TARGET_STR)
#define BORA_OPS_POP_TARGET_ATTRIBUTES HWY_POP_ATTRIBUTES
#else
#define BORA_OPS_TARGET_ATTRIBUTES
#define BORA_OPS_POP_TARGET_ATTRIBUTES
#endif

// GCC 12's intrinsics leave "don't care" lanes as self-initialized variables, which -O3 reports as
// maybe-uninitialized when the intrinsic headers were first included outside Highway's own
// diagnostic guard (e.g. by simdjson); Highway silences the same warning in its x86 headers. Clang
// has no such warning (and would reject its name under -Werror).
#undef BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF
#if BORA_OPS_X86_INT8 && !HWY_COMPILER_CLANG
#define BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF HWY_DIAGNOSTICS_OFF(disable : 4701, ignored "-Wmaybe-uninitialized")
#else
#define BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF
#endif

#undef BORA_OPS_BEFORE_NAMESPACE
#undef BORA_OPS_AFTER_NAMESPACE
#define BORA_OPS_BEFORE_NAMESPACE()                                                     \
  BORA_OPS_TARGET_ATTRIBUTES HWY_DIAGNOSTICS(push) BORA_OPS_INTRINSIC_DIAGNOSTICS_OFF \
  static_assert(true, "requires a semicolon")
#define BORA_OPS_AFTER_NAMESPACE() \
  HWY_DIAGNOSTICS(pop) BORA_OPS_POP_TARGET_ATTRIBUTES static_assert(true, "requires a semicolon")

// Declarations only, so no attributes (Clang warns about an attribute region without functions).
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Elementwise kernels use full vectors. Block decoders use at most 16 float lanes so that a vector
// never straddles a 16-value sub-block (the finest scale granularity, Q6_K's) on any target.
using FullF32 = hn::ScalableTag<float>;
using BlockF32 = hn::CappedTag<float, 16>;

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_TARGET_INL_H_ toggle
// ---- end bora/ops/target-inl.h -----------------------------------------------------------------------
// ---- begin bora/ops/x86-inl.h ------------------------------------------------------------------------
// Why this file exists: the few raw x86 helpers that several weight families' AVX2 and AVX-512
// kernels share (f16 scalars, loads, horizontal sums, prefetching), and the decoded super-block
// the VNNI prefill kernel reads from every family. Empty on other targets.

#include <cstdint>


#if defined(BORA_OPS_X86_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_X86_INL_H_
#undef BORA_OPS_X86_INL_H_
#else
#define BORA_OPS_X86_INL_H_
#endif

#include <hwy/highway.h>


// Nothing at all on other targets (Clang warns about an attribute region without functions).
#if BORA_OPS_X86_INT8
BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

HWY_INLINE float X86Half(const uint8_t* p) {
#if defined(HWY_DISABLE_F16C)
  return quant::load_f16(p);
#else
  return _cvtsh_ss(quant::load_u16_le(p));
#endif
}

HWY_INLINE __m256i X86Load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

HWY_INLINE float X86Sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

HWY_INLINE __m256 X86Accumulate(__m256i sums, __m256 scale, __m256 acc) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
}

// How a kernel prefetches the weights ahead of each block it reads: `distance` bytes further on (0:
// none), into L1, or with `to_l2` only as far as L2.
struct TilePrefetch {
  int64_t distance = 0;
  bool to_l2 = false;
};

// Prefetches `bytes` of weights as `ahead` says. The address may lie past the row (prefetches never
// fault), hence integer arithmetic rather than pointer arithmetic.
HWY_INLINE void X86PrefetchAhead(const uint8_t* p, int bytes, TilePrefetch ahead) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(ahead.distance);
  for (int line = 0; line < bytes; line += 64) {
    const char* address = reinterpret_cast<const char*>(first + static_cast<uintptr_t>(line));
    if (ahead.to_l2) _mm_prefetch(address, _MM_HINT_T1);
    else _mm_prefetch(address, _MM_HINT_T0);
  }
}

// The same `distance` bytes ahead into L1.
HWY_INLINE void X86PrefetchAhead(const uint8_t* p, int bytes, int distance) {
  X86PrefetchAhead(p, bytes, TilePrefetch{distance, false});
}

// How far ahead the super-block (K-quant and Q6_K) kernels prefetch, in bytes: like the Q8_0 / Q4_0
// kernels' 256 blocks, it makes their speed independent of row alignment. 6 KiB measured ~5-8%
// faster than 2 KiB per token on the Q4_K_M 7B file at one thread (per weight class, three
// alternating rounds; 4 KiB in between, 8 KiB no better), and no slower at two.
constexpr int kKQuantPrefetchDistance = 6144;

#if BORA_OPS_X86_VNNI

// [first x 8 | first + 1 x 8]: pairs of consecutive f32 scales spread over a 512-bit result.
HWY_INLINE __m512i X512PairIndex(int first) {
  return _mm512_add_epi32(_mm512_set1_epi32(first),
                          _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
}

// One decoded (super-)block of one row for the VNNI prefill kernel (matmul-inl.h): unsigned bytes
// plus a scale and an offset per 16-value half, such that the block's contribution is
// sum over halves of scale * dx * sum(u * q) - offset * dx * sum(q). Each family's DecodeUnsigned
// fills it.
struct DecodedWeights {
  HWY_ALIGN uint8_t u[256];
  float scale[16];
  float offset[16];
};

#endif  // BORA_OPS_X86_VNNI

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();
#endif  // BORA_OPS_X86_INT8

#endif  // BORA_OPS_X86_INL_H_ toggle
// ---- end bora/ops/x86-inl.h --------------------------------------------------------------------------
// ---- begin bora/ops/vector-inl.h ---------------------------------------------------------------------
// Why this file exists: the small f32 vector kernels of ops.hpp (dot, axpy, scale, rmsnorm, softmax,
// silu * up) and the f16 <-> f32 conversions, which the float weight rows reuse. Compiled once per
// target (toggle guard); ops.hpp's functions dispatch to them.

#include <cmath>
#include <cstdint>
#include <limits>


#if defined(BORA_OPS_VECTOR_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_VECTOR_INL_H_
#undef BORA_OPS_VECTOR_INL_H_
#else
#define BORA_OPS_VECTOR_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>


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
// ---- end bora/ops/vector-inl.h -----------------------------------------------------------------------
// ---- begin bora/ops/attention-inl.h ------------------------------------------------------------------
// Why this file exists: attention's inner loops, which decide what a long context costs. Query rows
// meet keys and values read straight from the cache's rows (f32, f16 or q8_0, widened in registers),
// and each block of keys is folded into every row's running output with an online softmax, the
// flash-attention way, so nothing grows with the number of keys but the work. Compiled once per
// target (toggle guard); ops::attention_block dispatches here.

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>


#if defined(BORA_OPS_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_ATTENTION_INL_H_
#undef BORA_OPS_ATTENTION_INL_H_
#else
#define BORA_OPS_ATTENTION_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>


BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// One stored row of head_dim values, read a vector (or, in tails, a value) at a time.
template <KvElement kType>
struct KvRowReader;

template <>
struct KvRowReader<KvElement::kF32> {
  static bool vectors_fit(int64_t) { return true; }
  static hn::Vec<BlockF32> load(BlockF32 d, const uint8_t* row, int64_t i) {
    return hn::LoadU(d, reinterpret_cast<const float*>(row) + i);
  }
  static float value(const uint8_t* row, int64_t i) { return reinterpret_cast<const float*>(row)[i]; }
};

template <>
struct KvRowReader<KvElement::kF16> {
  static bool vectors_fit(int64_t) { return true; }
  static hn::Vec<BlockF32> load(BlockF32 d, const uint8_t* row, int64_t i) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
    // F16C's conversion (one instruction, exact for every half, NaN and infinity included) is part of
    // Highway's AVX2 and AVX-512 targets; elsewhere the integer widening of vector-inl.h.
    const hn::Rebind<hwy::float16_t, BlockF32> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(row) + i));
#else
    const hn::Rebind<uint16_t, BlockF32> d16;
    const hn::Rebind<uint32_t, BlockF32> d32;
    return HalfBitsToF32(d, hn::PromoteTo(d32, hn::LoadU(d16, reinterpret_cast<const uint16_t*>(row) + i)));
#endif
  }
  static float value(const uint8_t* row, int64_t i) { return quant::load_f16(row + 2 * i); }
};

// q8_0 rows: blocks of 34 bytes (f16 scale, 32 int8). A vector must not straddle two blocks.
template <>
struct KvRowReader<KvElement::kQ8_0> {
  static bool vectors_fit(int64_t lanes) { return lanes <= 32 && 32 % lanes == 0; }
  static hn::Vec<BlockF32> load(BlockF32 d, const uint8_t* row, int64_t i) {
    const hn::Rebind<int8_t, BlockF32> d8;
    const hn::Rebind<int32_t, BlockF32> d32;
    const uint8_t* block = row + (i / 32) * 34;
    const auto q = hn::LoadU(d8, reinterpret_cast<const int8_t*>(block + 2 + i % 32));
    return hn::Mul(hn::ConvertTo(d, hn::PromoteTo(d32, q)), hn::Set(d, quant::load_f16(block)));
  }
  static float value(const uint8_t* row, int64_t i) {
    const uint8_t* block = row + (i / 32) * 34;
    return quant::load_f16(block) * static_cast<float>(static_cast<int8_t>(block[2 + i % 32]));
  }
};

#if BORA_OPS_X86_INT8
// On x86 a score's lanes are summed in one spelled-out tree: lane l with l + n/2, then the same on the
// halved vector, down to one lane (X86Sum's order), so that X86LaneSums below, which sums the lanes of
// several scores at once, gives every score the same bits as X86LaneSum does one at a time.
HWY_INLINE float X86LaneSum(__m256 v) { return X86Sum(v); }
#if HWY_TARGET <= HWY_AVX3
HWY_INLINE float X86LaneSum(__m512 v) {
  return X86Sum(_mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1)));
}

// 16 scores' lanes, s[4 * k + r] = (row r, key k), summed in four rounds of the tree, each adding
// two shuffles of a pair of vectors: 15 additions instead of 16 whole trees. Lanes 4r..4r+3 of the
// result are row r's keys 0..3.
HWY_INLINE __m512 X86LaneSums(const __m512 (&s)[16]) {
  __m512 halves[8], quarters[4], eighths[2];
  HWY_UNROLL(8)
  for (int i = 0; i < 8; ++i) {  // lane l + lane l + 8: [s[2i] | s[2i + 1]], 8 lanes each
    halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                              _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  HWY_UNROLL(8)
  for (int i = 0; i < 4; ++i) {  // + 4: 128-bit block b holds s[4i + b]
    quarters[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  HWY_UNROLL(8)
  for (int i = 0; i < 2; ++i) {  // + 2: block b holds s[8i + b] (lanes 0-1) and s[8i + 4 + b] (2-3)
    eighths[i] = _mm512_add_ps(_mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // + 1: block b lane j holds s[4j + b]
  return _mm512_add_ps(_mm512_shuffle_ps(eighths[0], eighths[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_ps(eighths[0], eighths[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Writes lanes 4r..4r+3 of v to row[r] (four rows' scores of four keys).
HWY_INLINE void X86StoreFourPerRow(__m512 v, float* const* row) {
  _mm_storeu_ps(row[0], _mm512_extractf32x4_ps(v, 0));
  _mm_storeu_ps(row[1], _mm512_extractf32x4_ps(v, 1));
  _mm_storeu_ps(row[2], _mm512_extractf32x4_ps(v, 2));
  _mm_storeu_ps(row[3], _mm512_extractf32x4_ps(v, 3));
}
#endif

// 8 scores' lanes, s[2 * k + r] = (row r, key k): lanes 4r..4r+3 of the result are row r's keys 0..3.
HWY_INLINE __m256 X86LaneSums(const __m256 (&s)[8]) {
  __m256 halves[4], quarters[2];
  HWY_UNROLL(8)
  for (int i = 0; i < 4; ++i) {  // lane l + lane l + 4: [s[2i] | s[2i + 1]]
    halves[i] = _mm256_add_ps(_mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x20),
                              _mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x31));
  }
  HWY_UNROLL(8)
  for (int i = 0; i < 2; ++i) {  // + 2: block b holds s[4i + b] (lanes 0-1) and s[4i + 2 + b] (2-3)
    quarters[i] = _mm256_add_ps(_mm256_shuffle_ps(halves[2 * i], halves[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                _mm256_shuffle_ps(halves[2 * i], halves[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // + 1: block b lane j holds s[2j + b]
  return _mm256_add_ps(_mm256_shuffle_ps(quarters[0], quarters[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm256_shuffle_ps(quarters[0], quarters[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Writes lanes 4r..4r+3 of v to row[r] (two rows' scores of four keys).
HWY_INLINE void X86StoreFourPerRow(__m256 v, float* const* row) {
  _mm_storeu_ps(row[0], _mm256_castps256_ps128(v));
  _mm_storeu_ps(row[1], _mm256_extractf128_ps(v, 1));
}
#endif  // BORA_OPS_X86_INT8

// A query row's dot product with a key, from the vector of its lane-wise partial sums.
HWY_INLINE float ScoreLaneSum(BlockF32 d, hn::Vec<BlockF32> v) {
#if BORA_OPS_X86_INT8
  (void)d;
  return X86LaneSum(v.raw);
#else
  return hn::GetLane(hn::SumOfLanes(d, v));
#endif
}

// kRows query rows of one token (the heads sharing a KV head, four at a time, so each key and value
// vector is read once for all of them) against keys [key_begin, key_end) of the block. Every row's
// arithmetic is its own: the same whatever rows it is computed beside.
template <KvElement kType, int kRows>
HWY_INLINE void AttentionRowsOfToken(const AttentionRows& a, const float* const* q, float* const* out, float* row_max,
                                     float* row_sum, const uint8_t* keys, int64_t key_stride, const uint8_t* values,
                                     int64_t value_stride, int64_t key_begin, int64_t key_end) {
  using Reader = KvRowReader<kType>;
  const BlockF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t head_dim = a.head_dim;
  const int64_t vector_end = Reader::vectors_fit(lanes) ? head_dim / lanes * lanes : 0;
  constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();
  // Scores, then weights, padded with -inf so whole vectors can run past key_end.
  HWY_ALIGN float weights[kRows][kAttentionBlockKeys + HWY_MAX_BYTES / sizeof(float)];

  // Two keys at a time, so the two sums of a row form independent chains. The sums are named
  // variables, not arrays: SVE's vectors are sizeless and cannot be array elements.
  const auto store_scores = [&](int r, int64_t j, int n_keys, const uint8_t* key0, const uint8_t* key1,
                                hn::Vec<BlockF32> sum0, hn::Vec<BlockF32> sum1) {
    const uint8_t* key[2] = {key0, key1};
    const float dot[2] = {ScoreLaneSum(d, sum0), ScoreLaneSum(d, sum1)};
    for (int u = 0; u < n_keys; ++u) {
      float score = dot[u];
      for (int64_t i = vector_end; i < head_dim; ++i) score += q[r][i] * Reader::value(key[u], i);
      weights[r][j + u] = score * a.scale;
    }
  };
  const auto score_keys = [&](int64_t j, auto n_keys) {
    constexpr int kKeys = decltype(n_keys)::value;
    const uint8_t* key0 = keys + j * key_stride;
    const uint8_t* key1 = kKeys == 2 ? key0 + key_stride : key0;
    auto s00 = hn::Zero(d), s01 = s00, s10 = s00, s11 = s00, s20 = s00, s21 = s00, s30 = s00, s31 = s00;
    for (int64_t i = 0; i < vector_end; i += lanes) {
      const auto k0 = Reader::load(d, key0, i);
      auto k1 = k0;
      if constexpr (kKeys == 2) k1 = Reader::load(d, key1, i);
      const auto q0 = hn::LoadU(d, q[0] + i);
      s00 = hn::MulAdd(q0, k0, s00);
      if constexpr (kKeys == 2) s01 = hn::MulAdd(q0, k1, s01);
      if constexpr (kRows > 1) {
        const auto q1 = hn::LoadU(d, q[1] + i);
        s10 = hn::MulAdd(q1, k0, s10);
        if constexpr (kKeys == 2) s11 = hn::MulAdd(q1, k1, s11);
      }
      if constexpr (kRows > 2) {
        const auto q2 = hn::LoadU(d, q[2] + i);
        s20 = hn::MulAdd(q2, k0, s20);
        if constexpr (kKeys == 2) s21 = hn::MulAdd(q2, k1, s21);
      }
      if constexpr (kRows > 3) {
        const auto q3 = hn::LoadU(d, q[3] + i);
        s30 = hn::MulAdd(q3, k0, s30);
        if constexpr (kKeys == 2) s31 = hn::MulAdd(q3, k1, s31);
      }
    }
    store_scores(0, j, kKeys, key0, key1, s00, s01);
    if constexpr (kRows > 1) store_scores(1, j, kKeys, key0, key1, s10, s11);
    if constexpr (kRows > 2) store_scores(2, j, kKeys, key0, key1, s20, s21);
    if constexpr (kRows > 3) store_scores(3, j, kKeys, key0, key1, s30, s31);
  };
  int64_t j = key_begin;
#if BORA_OPS_X86_INT8
  // Four keys at a time against as many rows as make a vector of scores (4 with AVX-512, 2 with
  // AVX2), their lanes summed together: each score's products and sums are score_keys' own.
#if HWY_TARGET <= HWY_AVX3
  constexpr int kGroupRows = 4;  // BlockF32 holds 16 lanes
#else
  constexpr int kGroupRows = 2;
#endif
  if constexpr (kRows % kGroupRows == 0) {
    if (vector_end == head_dim) {
      using Raw = decltype(hn::Zero(d).raw);
      const auto scale = hn::Set(d, a.scale);
      for (; j + 4 <= key_end; j += 4) {
        for (int r0 = 0; r0 < kRows; r0 += kGroupRows) {
          Raw sums[4 * kGroupRows];
          HWY_UNROLL(16)
          for (int s = 0; s < 4 * kGroupRows; ++s) sums[s] = hn::Zero(d).raw;
          for (int64_t i = 0; i < head_dim; i += lanes) {
            hn::Vec<BlockF32> key[4];
            HWY_UNROLL(4)
            for (int k = 0; k < 4; ++k) key[k] = Reader::load(d, keys + (j + k) * key_stride, i);
            HWY_UNROLL(4)
            for (int r = 0; r < kGroupRows; ++r) {
              const auto query = hn::LoadU(d, q[r0 + r] + i);
              HWY_UNROLL(4)
              for (int k = 0; k < 4; ++k) {
                Raw& sum = sums[kGroupRows * k + r];
                sum = hn::MulAdd(query, key[k], hn::Vec<BlockF32>{sum}).raw;
              }
            }
          }
          float* to[kGroupRows];
          for (int r = 0; r < kGroupRows; ++r) to[r] = weights[r0 + r] + j;
          X86StoreFourPerRow(hn::Mul(hn::Vec<BlockF32>{X86LaneSums(sums)}, scale).raw, to);
        }
      }
    }
  }
#endif
  for (; j + 2 <= key_end; j += 2) score_keys(j, std::integral_constant<int, 2>());
  if (j < key_end) score_keys(j, std::integral_constant<int, 1>());

  // Online softmax: each row's new maximum rescales what it summed so far. A NaN score (a hostile
  // session file's cache) weighs 0 like a masked one, and never reaches Exp.
  const FullF32 df;
  const int64_t full_lanes = static_cast<int64_t>(hn::Lanes(df));
  float correction[kRows];
  bool fresh[kRows];  // no key has counted for this row yet: its output is not read
  const int64_t padded_end = key_begin + (key_end - key_begin + full_lanes - 1) / full_lanes * full_lanes;
  const auto minus_infinity = hn::Set(df, kMinusInfinity);
  for (int r = 0; r < kRows; ++r) {
    for (int64_t j = key_end; j < padded_end; ++j) weights[r][j] = kMinusInfinity;
    auto vmax = minus_infinity;
    for (int64_t j = key_begin; j < padded_end; j += full_lanes) {
      const auto s = hn::LoadU(df, weights[r] + j);
      vmax = hn::Max(vmax, hn::IfThenElse(hn::Eq(s, s), s, minus_infinity));
    }
    const float block_max = hn::GetLane(hn::MaxOfLanes(df, vmax));
    const float old_max = row_max[r];
    fresh[r] = !(old_max > kMinusInfinity);
    const float new_max = old_max > block_max ? old_max : block_max;
    if (!(new_max > kMinusInfinity)) {  // every score so far masked or NaN
      for (int64_t j = key_begin; j < key_end; ++j) weights[r][j] = 0.0f;
      correction[r] = 1.0f;
      continue;
    }
    correction[r] = fresh[r] ? 0.0f : std::exp(old_max - new_max);
    const auto vmax_new = hn::Set(df, new_max);
    auto vsum = hn::Zero(df);
    for (int64_t j = key_begin; j < padded_end; j += full_lanes) {
      const auto s = hn::LoadU(df, weights[r] + j);
      const auto e = hn::Exp(df, hn::Sub(hn::IfThenElse(hn::Eq(s, s), s, minus_infinity), vmax_new));
      vsum = hn::Add(vsum, e);
      hn::StoreU(e, df, weights[r] + j);
    }
    row_sum[r] = row_sum[r] * correction[r] + hn::GetLane(hn::SumOfLanes(df, vsum));
    row_max[r] = new_max;
  }

  // Weighted values: keys alternate between two sums per row (independent chains), added at the end.
  const auto store_row = [&](int r, int64_t i, hn::Vec<BlockF32> even, hn::Vec<BlockF32> odd) {
    auto block = hn::Add(even, odd);
    if (!fresh[r]) block = hn::MulAdd(hn::LoadU(d, out[r] + i), hn::Set(d, correction[r]), block);
    hn::StoreU(block, d, out[r] + i);
  };
  for (int64_t i = 0; i < vector_end; i += lanes) {
    auto even0 = hn::Zero(d), odd0 = even0, even1 = even0, odd1 = even0, even2 = even0, odd2 = even0,
         even3 = even0, odd3 = even0;
    int64_t k = key_begin;
    for (; k + 2 <= key_end; k += 2) {
      const auto v0 = Reader::load(d, values + k * value_stride, i);
      const auto v1 = Reader::load(d, values + (k + 1) * value_stride, i);
      even0 = hn::MulAdd(hn::Set(d, weights[0][k]), v0, even0);
      odd0 = hn::MulAdd(hn::Set(d, weights[0][k + 1]), v1, odd0);
      if constexpr (kRows > 1) {
        even1 = hn::MulAdd(hn::Set(d, weights[1][k]), v0, even1);
        odd1 = hn::MulAdd(hn::Set(d, weights[1][k + 1]), v1, odd1);
      }
      if constexpr (kRows > 2) {
        even2 = hn::MulAdd(hn::Set(d, weights[2][k]), v0, even2);
        odd2 = hn::MulAdd(hn::Set(d, weights[2][k + 1]), v1, odd2);
      }
      if constexpr (kRows > 3) {
        even3 = hn::MulAdd(hn::Set(d, weights[3][k]), v0, even3);
        odd3 = hn::MulAdd(hn::Set(d, weights[3][k + 1]), v1, odd3);
      }
    }
    if (k < key_end) {
      const auto v0 = Reader::load(d, values + k * value_stride, i);
      even0 = hn::MulAdd(hn::Set(d, weights[0][k]), v0, even0);
      if constexpr (kRows > 1) even1 = hn::MulAdd(hn::Set(d, weights[1][k]), v0, even1);
      if constexpr (kRows > 2) even2 = hn::MulAdd(hn::Set(d, weights[2][k]), v0, even2);
      if constexpr (kRows > 3) even3 = hn::MulAdd(hn::Set(d, weights[3][k]), v0, even3);
    }
    store_row(0, i, even0, odd0);
    if constexpr (kRows > 1) store_row(1, i, even1, odd1);
    if constexpr (kRows > 2) store_row(2, i, even2, odd2);
    if constexpr (kRows > 3) store_row(3, i, even3, odd3);
  }
  for (int64_t i = vector_end; i < head_dim; ++i) {
    for (int r = 0; r < kRows; ++r) {
      float acc = fresh[r] ? 0.0f : out[r][i] * correction[r];
      for (int64_t j = key_begin; j < key_end; ++j) acc += weights[r][j] * Reader::value(values + j * value_stride, i);
      out[r][i] = acc;
    }
  }
}

template <KvElement kType>
HWY_INLINE void AttentionBlockOfType(const AttentionRows& a, const uint8_t* keys, int64_t key_stride,
                                     const uint8_t* values, int64_t value_stride) {
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    const int64_t begin = a.key_begin[t], end = a.key_end[t];
    if (begin >= end) continue;
    for (int64_t h = 0; h < a.group; h += 4) {
      const float* q[4];
      float* out[4];
      const int64_t rows = a.group - h < 4 ? a.group - h : 4;
      for (int64_t r = 0; r < rows; ++r) {
        q[r] = a.q + t * a.q_stride + (h + r) * a.head_dim;
        out[r] = a.out + t * a.out_stride + (h + r) * a.head_dim;
      }
      float* row_max = a.row_max + t * a.group + h;
      float* row_sum = a.row_sum + t * a.group + h;
      switch (rows) {
        case 4:
          AttentionRowsOfToken<kType, 4>(a, q, out, row_max, row_sum, keys, key_stride, values, value_stride, begin, end);
          break;
        case 3:
          AttentionRowsOfToken<kType, 3>(a, q, out, row_max, row_sum, keys, key_stride, values, value_stride, begin, end);
          break;
        case 2:
          AttentionRowsOfToken<kType, 2>(a, q, out, row_max, row_sum, keys, key_stride, values, value_stride, begin, end);
          break;
        default:
          AttentionRowsOfToken<kType, 1>(a, q, out, row_max, row_sum, keys, key_stride, values, value_stride, begin, end);
          break;
      }
    }
  }
}

// Several tokens reading the same block widen it once into `widen` (f32 rows of head_dim) rather
// than once per token; widening is exact, so the results do not change.
template <KvElement kType>
HWY_INLINE const uint8_t* WidenRows(const uint8_t* rows, int64_t stride, int64_t begin, int64_t end, int64_t head_dim,
                                    float* widen) {
  using Reader = KvRowReader<kType>;
  const BlockF32 d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t vector_end = Reader::vectors_fit(lanes) ? head_dim / lanes * lanes : 0;
  for (int64_t j = begin; j < end; ++j) {
    const uint8_t* row = rows + j * stride;
    float* to = widen + j * head_dim;
    int64_t i = 0;
    for (; i < vector_end; i += lanes) hn::StoreU(Reader::load(d, row, i), d, to + i);
    for (; i < head_dim; ++i) to[i] = Reader::value(row, i);
  }
  return reinterpret_cast<const uint8_t*>(widen);
}

template <KvElement kType>
HWY_INLINE void AttentionBlockWidened(const AttentionRows& a, const KvRows& keys, const KvRows& values,
                                      int64_t n_keys, float* widen) {
  const uint8_t* key_rows = static_cast<const uint8_t*>(keys.data);
  const uint8_t* value_rows = static_cast<const uint8_t*>(values.data);
  if (a.n_tokens == 1 || widen == nullptr || kType == KvElement::kF32) {
    AttentionBlockOfType<kType>(a, key_rows, keys.stride, value_rows, values.stride);
    return;
  }
  int64_t begin = n_keys, end = 0;
  for (int64_t t = 0; t < a.n_tokens; ++t) {
    if (a.key_begin[t] >= a.key_end[t]) continue;
    begin = a.key_begin[t] < begin ? a.key_begin[t] : begin;
    end = a.key_end[t] > end ? a.key_end[t] : end;
  }
  if (begin >= end) return;
  const int64_t row_bytes = a.head_dim * static_cast<int64_t>(sizeof(float));
  const uint8_t* wide_keys = WidenRows<kType>(key_rows, keys.stride, begin, end, a.head_dim, widen);
  const uint8_t* wide_values =
      WidenRows<kType>(value_rows, values.stride, begin, end, a.head_dim, widen + kAttentionBlockKeys * a.head_dim);
  AttentionBlockOfType<KvElement::kF32>(a, wide_keys, row_bytes, wide_values, row_bytes);
}

inline void AttentionBlockKernel(const AttentionRows& a, const KvRows& keys, const KvRows& values, int64_t n_keys,
                                 float* widen) {
  switch (keys.type) {
    case KvElement::kF16:
      AttentionBlockWidened<KvElement::kF16>(a, keys, values, n_keys, widen);
      break;
    case KvElement::kQ8_0:
      AttentionBlockWidened<KvElement::kQ8_0>(a, keys, values, n_keys, widen);
      break;
    default:
      AttentionBlockWidened<KvElement::kF32>(a, keys, values, n_keys, widen);
      break;
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_ATTENTION_INL_H_ toggle
// ---- end bora/ops/attention-inl.h --------------------------------------------------------------------
// ---- begin bora/ops/activations-inl.h ----------------------------------------------------------------
// Why this file exists: the int8 activations of the fast path (layout in quant/q8_activations.hpp):
// quantizing a row in one or two levels, and the integer products every weight family's int8 kernels
// build on (portable, SDOT on SVE and dot-product NEON, AVX2, and 512-bit VNNI with both levels at once).
// Compiled once per target.

#include <cstddef>
#include <cstdint>


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
// ---- end bora/ops/activations-inl.h ------------------------------------------------------------------
// ---- begin bora/ops/row_tiles-inl.h ------------------------------------------------------------------
// Why this file exists: every matrix in row tiles (quant/row_tiles.hpp) is read by one kernel for every
// token count, with 512-bit VNNI or with AVX2 alone. What all tiled formats share lives here: a block's
// integer sums for several tokens, and the sweep over tiles and tokens; each family supplies the dot
// product of its own tile blocks (legacy_blocks-inl.h, k_quants-inl.h, q6_k-inl.h).
// Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>
#include <type_traits>


#if defined(BORA_OPS_ROW_TILES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_ROW_TILES_INL_H_
#undef BORA_OPS_ROW_TILES_INL_H_
#else
#define BORA_OPS_ROW_TILES_INL_H_
#endif

#include <hwy/highway.h>


#if BORA_OPS_X86_INT8 && !BORA_OPS_X86_VNNI && !defined(HWY_DISABLE_F16C)
BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// With AVX2 (no 512-bit VNNI) a tile's 16 rows are read as two halves of eight, one row per 32-bit lane.
// Tiles supplies kValues, kBytes, kAheadAlone (how far one token prefetches), kWholeTilePasses (whether
// four tokens or more go two at a time over both halves rather than four at a time over one) and
// Dot<kLevels, T, kHalves>(tile, first_half, ahead, blocks, x, acc): acc[h][t] lane i = the product of
// row 8 * (first_half + h) + i with token t, prefetching each block's bytes `ahead` bytes further on
// (0: none). Each row's lane computes the same operations in the same order whatever T and kHalves.
// Rows [row_begin, row_end) of the halves are stored.
template <class Tiles, int kLevels, int T, int kHalves>
HWY_INLINE void X256TileTokens(const uint8_t* tile, int first_half, int64_t ahead, int64_t blocks,
                               const quant::Q8ActivationRow* const* x, float* const* y, int64_t tile_row,
                               int64_t row_begin, int64_t row_end) {
  __m256 acc[kHalves][T];
  Tiles::template Dot<kLevels, T, kHalves>(tile, first_half, ahead, blocks, x, acc);
  for (int h = 0; h < kHalves; ++h) {
    const int64_t half_row = tile_row + 8 * (first_half + h);
    const int64_t first = row_begin > half_row ? row_begin : half_row;
    const int64_t last = row_end < half_row + 8 ? row_end : half_row + 8;
    HWY_UNROLL(4)
    for (int t = 0; t < T; ++t) {
      HWY_ALIGN float lanes[8];
      _mm256_store_ps(lanes, acc[h][t]);
      for (int64_t r = first; r < last; ++r) y[t][r] = lanes[r - half_row];
    }
  }
}

// Tokens [t, t + T) against the halves of a tile that hold rows of [row_begin, row_end).
template <class Tiles, int kLevels, int T>
HWY_INLINE void X256TileHalvesTokens(const uint8_t* tile, int first_half, int last_half, int64_t ahead,
                                     int64_t blocks, const quant::Q8ActivationRow* const* x, float* const* y,
                                     int64_t tile_row, int64_t row_begin, int64_t row_end) {
  if (first_half != last_half)
    X256TileTokens<Tiles, kLevels, T, 2>(tile, 0, ahead, blocks, x, y, tile_row, row_begin, row_end);
  else
    X256TileTokens<Tiles, kLevels, T, 1>(tile, first_half, ahead, blocks, x, y, tile_row, row_begin, row_end);
}

// y[t][r] for rows [row_begin, row_end) of a tiled matrix and n_tokens tokens (x[t]: kLevels levels),
// each (row, token) computed the same way whatever the token count or the range, so that results do
// not depend on the batch or the threads. A tile meets the tokens two at a time while it sits in
// L1/L2, both halves in one pass: every line of weights is used whole as it arrives from memory, and
// four loads (two of weights, two broadcasts) feed four vpmaddubsw. Passes over one half, with four
// tokens each, left memory idle while the second half came from L2 (2 threads on Zen 3: 7B Q4_K_M one
// sequence 4.5-4.6 -> 5.6-5.8 t/s, two 6.6-7.2 -> 8.5-9.1; Q4_0 one 5.6-6.1 -> 6.9-7.4, two 8.2-9.3
// -> 11.5-12.5, pp64 12.1-14.0 -> 13.2-16.5). The K-quants unpack their sub-block scales per half and
// pass, so from four tokens on they keep passes of four tokens over one half (Tiles::kWholeTilePasses
// false; Q4_K_M, 4 sequences: pp32 12.9 -> 13.8-14.0 t/s, generation 10.4-10.5 -> 10.8-11.1 against
// two tokens over both halves) and only the last tokens use both halves. One token prefetches
// Tiles::kAheadAlone bytes ahead (Q4_K_M, one half at a time: 4.33-4.43 -> 4.41-4.95 t/s); several do
// not (prefetching the next tile, as with 512 bits, measured no faster at 8 tokens: the AVX2 passes
// are bound by arithmetic, not memory).
// `scratch` is unused: the 256-bit kernels read the tokens in place (the 512-bit ones lay them out).
template <class Tiles, int kLevels>
HWY_INLINE void TiledProducts(const uint8_t* data, int64_t n, const quant::Q8ActivationRow* const* x,
                              int64_t n_tokens, float* const* y, int64_t row_begin, int64_t row_end,
                              uint8_t* /*scratch*/) {
  const int64_t blocks = n / Tiles::kValues;
  const int64_t tile_bytes = 16 * blocks * Tiles::kBytes;
  const int64_t ahead = n_tokens == 1 ? Tiles::kAheadAlone : 0;
  for (int64_t tile_row = row_begin - row_begin % 16; tile_row < row_end; tile_row += 16) {
    const uint8_t* tile = data + tile_row / 16 * tile_bytes;
    // A range that starts or ends inside a tile may need only one of its halves.
    const int first_half = row_begin >= tile_row + 8 ? 1 : 0;
    const int last_half = row_end <= tile_row + 8 ? 0 : 1;
    int64_t t = 0;
    if (n_tokens >= 4 && !Tiles::kWholeTilePasses) {  // four tokens per pass over each half
      for (int half = first_half; half <= last_half; ++half)
        for (t = 0; t + 4 <= n_tokens; t += 4)
          X256TileTokens<Tiles, kLevels, 4, 1>(tile, half, 0, blocks, x + t, y + t, tile_row, row_begin, row_end);
    }
    for (; t + 2 <= n_tokens; t += 2)
      X256TileHalvesTokens<Tiles, kLevels, 2>(tile, first_half, last_half, 0, blocks, x + t, y + t, tile_row,
                                              row_begin, row_end);
    if (t < n_tokens)
      X256TileHalvesTokens<Tiles, kLevels, 1>(tile, first_half, last_half, ahead, blocks, x + t, y + t, tile_row,
                                              row_begin, row_end);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();
#endif  // 256-bit tiles

#if BORA_OPS_X86_VNNI
BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// The tokens of one sweep, laid out once per call so that the tile kernels read every activation
// through one pointer. Read through their Q8ActivationRow views, 8 tokens kept ~24 pointers live,
// which spilled, and each broadcast first reloaded its pointer (one core of a Zen 5, Q4_0, G
// multiply-accumulates/s: a 4096 x 4096 matrix and 64 tokens 234-237 -> 270-271, 4096 x 14336 and
// 16 tokens 226 -> 268-271, 8 tokens decoding 220-223 -> 274-277).
// For a group of T tokens, each 32-value block of the row takes kBytes:
//   int8 four[kLevels][8][T][4]   values 4g .. 4g + 3 of token t's level, in the order of the vpdpbusd
//   float scale[T]                the last level's activation scale (see X512DotLevels)
//   float sums[kSums][T]          Tiles::kSumFactor * d_sum of the block (both levels added), or with
//                                 kSums == 2 the d_sum16 of its two halves
// A call's groups of 8, 4, 2 and 1 tokens follow each other: the group from token t starts t * n / 32 *
// (kBytes / T) bytes in, for rows of n values.
template <int kLevels, int T, int kSums>
struct X512TokenBlocks {
  static constexpr int64_t kBytes = kLevels * 32 * T + 4 * T * (1 + kSums);
  static HWY_INLINE __m512i Four(const uint8_t* block, int level, int g, int t) {
    int32_t four;
    std::memcpy(&four, block + (8 * level + g) * 4 * T + 4 * t, 4);
    return _mm512_set1_epi32(four);
  }
  static HWY_INLINE __m512 Scale(const uint8_t* block, int t) {
    float value;
    std::memcpy(&value, block + kLevels * 32 * T + 4 * t, 4);
    return _mm512_set1_ps(value);
  }
  static HWY_INLINE __m512 Sum(const uint8_t* block, int k, int t) {
    float value;
    std::memcpy(&value, block + kLevels * 32 * T + 4 * T * (1 + k) + 4 * t, 4);
    return _mm512_set1_ps(value);
  }

  // Lays out tokens x[0, T) (x[t]: kLevels levels) for `blocks` 32-value blocks.
  template <class Tiles>
  static HWY_INLINE void Pack(const quant::Q8ActivationRow* const* x, int64_t blocks, uint8_t* out) {
    for (int64_t b = 0; b < blocks; ++b, out += kBytes) {
      for (int level = 0; level < kLevels; ++level)
        for (int g = 0; g < 8; ++g)
          for (int t = 0; t < T; ++t) std::memcpy(out + (8 * level + g) * 4 * T + 4 * t, x[t][level].q + 32 * b + 4 * g, 4);
      float floats[T * (1 + kSums)];
      for (int t = 0; t < T; ++t) {
        floats[t] = x[t][kLevels - 1].d[b];
        for (int k = 0; k < kSums; ++k) {
          const float* first = kSums == 1 ? x[t][0].d_sum + b : x[t][0].d_sum16 + 2 * b + k;
          const float* second = kSums == 1 ? x[t][kLevels - 1].d_sum + b : x[t][kLevels - 1].d_sum16 + 2 * b + k;
          floats[T * (1 + k) + t] = Tiles::kSumFactor * (kLevels == 2 ? *first + *second : *first);
        }
      }
      std::memcpy(out + kLevels * 32 * T, floats, sizeof floats);
    }
  }
};

// Bytes the tokens of one sweep take laid out (X512TokenBlocks), for rows of n values.
template <class Tiles, int kLevels>
constexpr int64_t X512TokenBytes(int64_t n) {
  static_assert(Tiles::kSums <= 2, "kernels::tiled_scratch_bytes allows at most two sums");
  return n / 32 * (kLevels * 32 + 4 * (1 + Tiles::kSums));
}

// sums[t] lane i = the integer dot product of 4 * kGroups values of row i (u[g]: values 4g .. 4g + 3 as
// unsigned bytes, one row per 32-bit lane) with token t's activations in groups [first, first + kGroups)
// of `block` (X512TokenBlocks); with two levels 256 * first level + second, in the second level's units
// (as X512DotLevels). Four activation bytes broadcast to every lane meet four values of each row in one
// vpdpbusd. With few tokens the chain of vpdpbusd (each waits on the one before) is split in several,
// which integer addition joins exactly.
template <class Tokens, int kLevels, int T, int kGroups = 8>
HWY_INLINE void X512TileSums(const __m512i* u, const uint8_t* block, int first, __m512i (&sums)[T]) {
  constexpr int kChains = T == 1 ? 4 : T <= 3 ? 2 : 1;  // chains of all tokens together cover the latency
  for (int level = 0; level < kLevels; ++level) {
    __m512i chains[kChains][T];
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < kChains; ++c) chains[c][t] = _mm512_setzero_si512();
    HWY_UNROLL(8)
    for (int g = 0; g < kGroups; ++g) {
      HWY_UNROLL(8)
      for (int t = 0; t < T; ++t)
        chains[g % kChains][t] = _mm512_dpbusd_epi32(chains[g % kChains][t], u[g], Tokens::Four(block, level, first + g, t));
    }
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) {
      __m512i total = chains[0][t];
      for (int c = 1; c < kChains; ++c) total = _mm512_add_epi32(total, chains[c][t]);
      sums[t] = level == 0 ? total : _mm512_add_epi32(_mm512_slli_epi32(sums[t], 8), total);
    }
  }
}

// Tokens [t, t + T) (laid out at `tokens`) against one tile, written to y for the rows in `lanes`.
template <class Tiles, int kLevels, int T>
HWY_INLINE void X512TileTokens(const uint8_t* tile, TilePrefetch ahead, int64_t blocks, const uint8_t* tokens,
                               float* const* y, int64_t tile_row, __mmask16 lanes) {
  __m512 acc[T];
  Tiles::template Dot<X512TokenBlocks<kLevels, T, Tiles::kSums>, kLevels, T>(tile, ahead, blocks, tokens, acc);
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[t] + tile_row, lanes, acc[t]);
}

// y[t][r] for rows [row_begin, row_end) of a tiled matrix and n_tokens tokens (x[t]: kLevels levels),
// laid out first in `scratch` (X512TokenBytes<Tiles, kLevels>(n) bytes per token).
// Tiles supplies kValues and kBytes (per block of one row), kAheadAlone (how far one token prefetches),
// kSums and kSumFactor (which sums of the activations it needs, X512TokenBlocks), and
// Dot<Tokens, kLevels, T>(tile, ahead, blocks, tokens, acc): acc[t] lane i = row i's product with
// token t, prefetching each block's bytes `ahead` bytes further on (0: none).
// Every tile meets the tokens eight at a time, then the rest (1-7) in one group, while it sits in
// L1/L2, so the weights come from memory once for all of them; a thread's range may start or end
// inside a tile (its other lanes are computed and not stored).
template <class Tiles, int kLevels>
HWY_INLINE void TiledProducts(const uint8_t* data, int64_t n, const quant::Q8ActivationRow* const* x,
                              int64_t n_tokens, float* const* y, int64_t row_begin, int64_t row_end,
                              uint8_t* scratch) {
  const int64_t blocks = n / Tiles::kValues;
  const int64_t tile_bytes = 16 * blocks * Tiles::kBytes;
  const int64_t token_bytes = X512TokenBytes<Tiles, kLevels>(n);
  // Groups of eight tokens, then the rest as one group: one more pass over each tile at most (as
  // 4 + 2 + 1, seven tokens took three; a mixture of experts' step gives its experts such counts).
  // The same groups as the sweep below.
  auto for_each_group = [&](auto visit) {
    int64_t t = 0;
    for (; t + 8 <= n_tokens; t += 8) visit(std::integral_constant<int, 8>(), t);
    switch (n_tokens - t) {
      case 7: visit(std::integral_constant<int, 7>(), t); break;
      case 6: visit(std::integral_constant<int, 6>(), t); break;
      case 5: visit(std::integral_constant<int, 5>(), t); break;
      case 4: visit(std::integral_constant<int, 4>(), t); break;
      case 3: visit(std::integral_constant<int, 3>(), t); break;
      case 2: visit(std::integral_constant<int, 2>(), t); break;
      case 1: visit(std::integral_constant<int, 1>(), t); break;
      default: break;
    }
  };
  for_each_group([&](auto group, int64_t t) {
    X512TokenBlocks<kLevels, decltype(group)::value, Tiles::kSums>::template Pack<Tiles>(x + t, n / 32,
                                                                                         scratch + t * token_bytes);
  });
  for (int64_t tile_row = row_begin - row_begin % 16; tile_row < row_end; tile_row += 16) {
    const uint8_t* tile = data + tile_row / 16 * tile_bytes;
    const int64_t first = row_begin > tile_row ? row_begin - tile_row : 0;
    const int64_t last = row_end - tile_row < 16 ? row_end - tile_row : 16;
    const __mmask16 lanes = static_cast<__mmask16>(((1u << last) - 1u) & ~((1u << first) - 1u));
    // One token streams through the tiles once, prefetching Tiles::kAheadAlone bytes ahead into L1
    // (6 KiB: without, the loads wait on memory; prefetching a whole tile ahead evicts them from L1).
    // With several tokens the first pass over a tile prefetches kSeveralAhead bytes ahead into L2, where
    // the later passes find the tile too. Prefetching the whole next tile into L1 instead read memory
    // slower (2 threads on a Zen 5, twelve 4096 x 14336 matrices in turn from memory, GB/s of weights,
    // whole next tile -> 12 KiB into L2, alternating in one process: Q4_0 3 tokens 31.4 -> 33.2 in a
    // slow minute, 43.8 -> 47.9 in a fast one; Q4_K 3 tokens 29.5 -> 29.0 and 33.5 -> 46.7; Q6_K 3
    // tokens 27.7 -> 31.2; 8 tokens Q4_0 30.7 -> 30.7, Q4_K 23.2 -> 28.9, Q6_K 20.8 -> 24.7).
    constexpr int64_t kSeveralAhead = 12 * 1024;
    TilePrefetch ahead = n_tokens > 1 ? TilePrefetch{kSeveralAhead, true} : TilePrefetch{Tiles::kAheadAlone, false};
    for_each_group([&](auto group, int64_t t) {
      X512TileTokens<Tiles, kLevels, decltype(group)::value>(tile, ahead, blocks, scratch + t * token_bytes, y + t,
                                                             tile_row, lanes);
      ahead = TilePrefetch{};
    });
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();
#endif  // BORA_OPS_X86_VNNI

#endif  // BORA_OPS_ROW_TILES_INL_H_ toggle
// ---- end bora/ops/row_tiles-inl.h --------------------------------------------------------------------
// ---- begin bora/ops/float_weights-inl.h --------------------------------------------------------------
// Why this file exists: weight rows stored as floats (F32, F16, BF16): decoding a row to f32 and
// dotting one with f32 activations. Such rows gain nothing from int8 activations, so the fast path
// sends them here too (implementation.hpp). Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>


#if defined(BORA_OPS_FLOAT_WEIGHTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_FLOAT_WEIGHTS_INL_H_
#undef BORA_OPS_FLOAT_WEIGHTS_INL_H_
#else
#define BORA_OPS_FLOAT_WEIGHTS_INL_H_
#endif

#include <hwy/highway.h>


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
// ---- end bora/ops/float_weights-inl.h ----------------------------------------------------------------
// ---- begin bora/ops/legacy_blocks-inl.h --------------------------------------------------------------
// Why this file exists: the legacy block formats Q8_0 and Q4_0 (32 values, one f16 scale), every
// kernel that reads them, from the block decoders to the AVX2 and 512-bit VNNI tile kernels (the Q4_0
// window kernel has a file of its own, q4_0_windows-inl.h), ending in one family struct each (the
// interface kernels-inl.h and matmul-inl.h use; see the end of this file). Compiled once per target
// (toggle guard).

#include <cstddef>
#include <cstdint>
#include <cstring>


#if defined(BORA_OPS_LEGACY_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_LEGACY_BLOCKS_INL_H_
#undef BORA_OPS_LEGACY_BLOCKS_INL_H_
#else
#define BORA_OPS_LEGACY_BLOCKS_INL_H_
#endif

#include <hwy/highway.h>


BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// ---- portable int8 path -----------------------------------------------------------------------------

// out[t] = dot(row, x[t]) for T activation rows, each block decoded to int8 once by Family::DecodeI8.
template <class Family, int T>
HWY_INLINE void PortableLegacyDotQ8(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  for (int t = 0; t < T; ++t) out[t] = 0.0f;
  HWY_ALIGN int8_t w[32];
  for (int64_t b = 0; b < n / 32; ++b) {
    const uint8_t* block = row + b * Family::kBytes;
    const float dw = quant::load_f16(block);
    Family::DecodeI8(block, w);
    for (int t = 0; t < T; ++t) out[t] += dw * x[t].d[b] * static_cast<float>(DotI8(w, x[t].q + 32 * b, 32));
  }
}

#if BORA_OPS_X86_INT8
// ---- AVX2 (u8 x s8 products; vpdpbusd from AVX3_DL up) ----------------------------------------------

// A Q4_0 block's 32 nibbles 0..15 as unsigned bytes in natural order (low nibbles, then high).
HWY_INLINE __m256i X86NibblesQ4_0(const uint8_t* block) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(15));
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
  const __m256i w = X86NibblesQ4_0(block);
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

#if !BORA_OPS_X86_VNNI && !defined(HWY_DISABLE_F16C)
// Q4_0 and Q8_0 row tiles with AVX2 (TiledProducts): eight rows in the lanes of a vector, so four
// weight values of each meet four activation bytes broadcast to every lane. Q4_0's nibbles 0..15 are
// unsigned, and a block's pair sums stay in 16 bits (8 x 2 x 15 x 127 < 2^15) until one widening per
// block; Q8_0's signed values meet the activations through their signs (|w| x sign(x, w)) and each
// pair sum is widened at once (two can exceed 2^15). Then per token and row, in block order however
// many tokens come together: acc = fma(d, sum * dx - 8 * d_sum, acc) (Q8_0: no offset term).
template <bool kIsQ8>
struct X256LegacyTiles {
  static constexpr int kValues = 32;
  static constexpr int kBytes = kIsQ8 ? 34 : 18;
  static constexpr int64_t kAheadAlone = 0;
  static constexpr bool kWholeTilePasses = true;

  template <int kLevels, int T, int kHalves>
  static HWY_INLINE void Dot(const uint8_t* tile, int first_half, int64_t ahead, int64_t blocks,
                             const quant::Q8ActivationRow* const* x, __m256 (&acc)[kHalves][T]) {
    const __m256i nibble = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
    for (int h = 0; h < kHalves; ++h) {
      HWY_UNROLL(4)
      for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = tile + b * 16 * kBytes;
      if (ahead != 0) X86PrefetchAhead(block, 16 * kBytes, static_cast<int>(ahead));
      __m256i sums[kHalves][T];
      for (int level = 0; level < kLevels; ++level) {
        __m256i partial[kHalves][T];  // Q4_0: 16-bit pair sums; Q8_0: 32-bit sums
        for (int h = 0; h < kHalves; ++h) {
          HWY_UNROLL(4)
          for (int t = 0; t < T; ++t) partial[h][t] = _mm256_setzero_si256();
        }
        // Not unrolled: unrolled, GCC hoists the four loads and spills the pair sums (pp64 on 7B Q4_0
        // 14.5 -> 17.4 t/s on Zen 3 without the spills).
        HWY_UNROLL(1)
        for (int k = 0; k < 4; ++k) {  // values 4k .. 4k + 3 (low) and 16 + 4k .. 16 + 4k + 3 (high) of each row
          __m256i low[kHalves], high[kHalves];
          for (int h = 0; h < kHalves; ++h) {
            const __m256i first = X86Load32(block + 32 + 64 * k + 32 * (first_half + h));
            if (kIsQ8) {
              low[h] = first;
              high[h] = X86Load32(block + 32 + 64 * (k + 4) + 32 * (first_half + h));
            } else {  // byte j of a row: value j in the low nibble, j + 16 in the high one
              low[h] = _mm256_and_si256(first, nibble);
              high[h] = _mm256_and_si256(_mm256_srli_epi16(first, 4), nibble);
            }
          }
          HWY_UNROLL(4)
          for (int t = 0; t < T; ++t) {
            int32_t first, second;
            std::memcpy(&first, x[t][level].q + 32 * b + 4 * k, 4);
            std::memcpy(&second, x[t][level].q + 32 * b + 16 + 4 * k, 4);
            const __m256i first4 = _mm256_set1_epi32(first), second4 = _mm256_set1_epi32(second);
            for (int h = 0; h < kHalves; ++h) {
              if (kIsQ8) {
                const __m256i low_pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(low[h], low[h]),
                                                               _mm256_sign_epi8(first4, low[h]));
                const __m256i high_pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(high[h], high[h]),
                                                                _mm256_sign_epi8(second4, high[h]));
                partial[h][t] = _mm256_add_epi32(partial[h][t], _mm256_add_epi32(_mm256_madd_epi16(low_pairs, ones),
                                                                                 _mm256_madd_epi16(high_pairs, ones)));
              } else {
                partial[h][t] = _mm256_add_epi16(partial[h][t], _mm256_add_epi16(_mm256_maddubs_epi16(low[h], first4),
                                                                                 _mm256_maddubs_epi16(high[h], second4)));
              }
            }
          }
        }
        for (int h = 0; h < kHalves; ++h) {
          HWY_UNROLL(4)
          for (int t = 0; t < T; ++t) {
            const __m256i total = kIsQ8 ? partial[h][t] : _mm256_madd_epi16(partial[h][t], ones);
            sums[h][t] = level == 0 ? total : _mm256_add_epi32(_mm256_slli_epi32(sums[h][t], 8), total);
          }
        }
      }
      for (int h = 0; h < kHalves; ++h) {
        const __m256 scale =
            _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * (first_half + h))));
        HWY_UNROLL(4)
        for (int t = 0; t < T; ++t) {
          // Two levels: sums are in the second level's units (the first level's scale is 256 times its).
          const float dx = x[t][kLevels - 1].d[b];
          if (kIsQ8) {
            acc[h][t] = _mm256_fmadd_ps(scale, _mm256_mul_ps(_mm256_cvtepi32_ps(sums[h][t]), _mm256_set1_ps(dx)), acc[h][t]);
          } else {
            const float d_sum = kLevels == 2 ? x[t][0].d_sum[b] + x[t][1].d_sum[b] : x[t][0].d_sum[b];
            const __m256 step = _mm256_fmsub_ps(_mm256_cvtepi32_ps(sums[h][t]), _mm256_set1_ps(dx),
                                                _mm256_set1_ps(8.0f * d_sum));
            acc[h][t] = _mm256_fmadd_ps(scale, step, acc[h][t]);
          }
        }
      }
    }
  }
};
#endif

#endif  // BORA_OPS_X86_INT8

#if BORA_OPS_X86_VNNI
// ---- 512-bit VNNI decode ------------------------------------------------------------------------------
// One vpdpbusd covers 64 values. Lanes 0-7 of its result belong to the first 32 values and 8-15 to
// the next, so the f32 scales are brought to the same lanes with one permute and applied with one
// multiply-add. The f16 scales of 16 blocks are fetched at once; offset terms are accumulated once per
// 16 blocks as vectors.

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

// ---- 512-bit VNNI over row tiles (quant/row_tiles.hpp) ---------------------------------------------
// Sixteen rows in the sixteen lanes: four activation bytes broadcast to every lane meet four values of
// each row in one vpdpbusd, so a token's block sums land one row per lane with no horizontal adds, and
// every step per (row, token) is the prefill kernel's: acc = fma(scale, sum * dx - c * d_sum, acc)
// block after block (VnniScaleCommonOffset). A product is therefore bit-identical whether its token
// is decoded alone, with others, or in a prompt.

// u[g] = values 4g .. 4g + 3 of the tile block's 16 rows as unsigned bytes (Q4_0: the nibble; Q8_0:
// w + 128).
template <bool kIsQ8>
HWY_INLINE void X512TileValues(const uint8_t* tile, __m512i (&u)[8]) {
  if (kIsQ8) {
    HWY_UNROLL(8)
    for (int g = 0; g < 8; ++g) u[g] = _mm512_xor_si512(_mm512_loadu_si512(tile + 32 + 64 * g), _mm512_set1_epi8(-128));
    return;
  }
  const __m512i nibble = _mm512_set1_epi8(15);
  HWY_UNROLL(4)
  for (int k = 0; k < 4; ++k) {  // byte j of a row: value j in the low nibble, j + 16 in the high one
    const __m512i packed = _mm512_loadu_si512(tile + 32 + 64 * k);
    u[k] = _mm512_and_si512(packed, nibble);
    u[4 + k] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), nibble);
  }
}

// One tile (its first tile block at `tile`) against T tokens laid out at `tokens` (Tokens, an
// X512TokenBlocks): acc[t] lane i = row i's product with token t (the Tiles interface of TiledProducts).
// With `ahead` not 0 each block also prefetches the bytes `ahead` further on (with several tokens the
// same block of the next tile), so memory streams them in while this one computes (without, the first
// pass over a tile waits on memory at every block; measured 3.7 -> 2.4 ms for 8 tokens x w1 of 7B Q4_0
// on one core).
template <bool kIsQ8>
struct X512LegacyTiles {
  static constexpr int kValues = 32;
  static constexpr int kBytes = kIsQ8 ? 34 : 18;
  // One token prefetches as the K-quant tiles do: one core, a 4096 x 14336 Q4_0 matrix, best of 30, three
  // alternating rounds on a Zen 5: 50.5-58.6 -> 76.7-83.9 G multiply-accumulates/s.
  static constexpr int64_t kAheadAlone = kKQuantPrefetchDistance;

  // The offset of the unsigned values times each block's d_sum, laid out once per token.
  static constexpr int kSums = 1;
  static constexpr float kSumFactor = kIsQ8 ? 128.0f : 8.0f;

  template <class Tokens, int kLevels, int T>
  static HWY_INLINE void Dot(const uint8_t* tile, TilePrefetch ahead, int64_t blocks, const uint8_t* tokens,
                             __m512 (&acc)[T]) {
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* block = tile + b * 16 * kBytes;
      const uint8_t* token_block = tokens + b * Tokens::kBytes;
      if (ahead.distance != 0) X86PrefetchAhead(block, 16 * kBytes, ahead);
      const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
      __m512i u[8];
      X512TileValues<kIsQ8>(block, u);
      __m512i sums[T];
      X512TileSums<Tokens, kLevels, T>(u, token_block, 0, sums);
      HWY_UNROLL(8)
      for (int t = 0; t < T; ++t) {
        const __m512 step = _mm512_fmsub_ps(_mm512_cvtepi32_ps(sums[t]), Tokens::Scale(token_block, t),
                                            Tokens::Sum(token_block, 0, t));
        acc[t] = _mm512_fmadd_ps(scale, step, acc[t]);
      }
    }
  }
};

#endif  // BORA_OPS_X86_VNNI

// ---- the families ---------------------------------------------------------------------------------
// What kernels-inl.h and matmul-inl.h call, the same for every block family (k_quants-inl.h,
// q6_k-inl.h):
//   kValues, kBytes                values and bytes per block
//   DecodeF32(block, out)          the block as floats, bit-identical to the scalar reference in quant/
//   DotQ8<T>(row, n, x, out)       out[t] ~= dot(row, x[t]) for T int8 activation rows, the target's
//                                  best kernel for T tokens (with VNNI, one token goes to DotLevels<1>)
// and with 512-bit VNNI:
//   DotLevels<kLevels>(row, n, x)  one token whose activations come in kLevels levels, one pass
//   DecodeUnsigned(block, out)     the block for the prefill kernel (DecodedWeights, x86-inl.h), with
//   kSplitHalves                   whether its two 16-value halves have their own scales
//   kCommonOffset                  whether every block's offset is the same multiple of its scale

// Q8_0 and Q4_0 differ only in how a block stores its 32 values after the f16 scale: what they
// share (every kernel but the decoders) lives here once. Derived supplies DecodeF32, DecodeI8 and,
// with VNNI, UnsignedValues(block) with its kUnsignedOffset (u = w + kUnsignedOffset).
template <class Derived, class Block, bool kIsQ8>
struct LegacyFamily {
  static constexpr int kValues = Block::kElements;
  static constexpr int kBytes = Block::kBytes;

#if BORA_OPS_X86_VNNI
  static constexpr bool kSplitHalves = false;
  static constexpr bool kCommonOffset = true;
  static constexpr float CommonOffset() { return Derived::kUnsignedOffset; }
  static HWY_INLINE void DecodeUnsigned(const uint8_t* block, DecodedWeights* out) {
    const float d = X86Half(block);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out->u), Derived::UnsignedValues(block));
    out->scale[0] = d;
    out->offset[0] = Derived::kUnsignedOffset * d;
  }

  template <int kLevels>
  static HWY_INLINE float DotLevels(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x) {
    return X512RowDotLegacy<kBytes, kIsQ8, kLevels>(row, n, x);
  }
#endif

  template <int T>
  static HWY_INLINE void DotQ8(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
#if BORA_OPS_X86_INT8
    if constexpr (kIsQ8) {
      X86RowDotQ8_0<T>(row, n, x, out);
    } else {
      X86RowDotQ4_0<T>(row, n, x, out);
    }
#else
    PortableLegacyDotQ8<Derived, T>(row, n, x, out);
#endif
  }
};

struct Q8_0Family : LegacyFamily<Q8_0Family, quant::Q8_0Block, true> {
  static HWY_INLINE void DecodeF32(const uint8_t* block, float* HWY_RESTRICT out) {
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

  static HWY_INLINE void DecodeI8(const uint8_t* block, int8_t* w) { std::memcpy(w, block + 2, 32); }

#if BORA_OPS_X86_VNNI
  // u = w + 128 (as bytes: w ^ 0x80).
  static constexpr float kUnsignedOffset = 128.0f;
  static HWY_INLINE __m256i UnsignedValues(const uint8_t* block) {
    return _mm256_xor_si256(X86Load32(block + 2), _mm256_set1_epi8(-128));
  }
#endif
};

struct Q4_0Family : LegacyFamily<Q4_0Family, quant::Q4_0Block, false> {
  static HWY_INLINE void DecodeF32(const uint8_t* block, float* HWY_RESTRICT out) {
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

  // Low nibbles are values 0..15, high nibbles 16..31; both minus 8.
  static HWY_INLINE void DecodeI8(const uint8_t* block, int8_t* w) {
    const hn::CappedTag<uint8_t, 16> du8;
    const hn::Rebind<int8_t, decltype(du8)> di8;
    const size_t lanes = hn::Lanes(du8);
    const auto low_mask = hn::Set(du8, 15);
    const auto eight = hn::Set(di8, 8);
    for (size_t j = 0; j < 16; j += lanes) {
      const auto packed = hn::LoadU(du8, block + 2 + j);
      hn::StoreU(hn::Sub(hn::BitCast(di8, hn::And(packed, low_mask)), eight), di8, w + j);
      hn::StoreU(hn::Sub(hn::BitCast(di8, hn::ShiftRight<4>(packed)), eight), di8, w + 16 + j);
    }
  }

#if BORA_OPS_X86_VNNI
  // u = the nibble.
  static constexpr float kUnsignedOffset = 8.0f;
  static HWY_INLINE __m256i UnsignedValues(const uint8_t* block) { return X86NibblesQ4_0(block); }
#endif
};

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_LEGACY_BLOCKS_INL_H_ toggle
// ---- end bora/ops/legacy_blocks-inl.h ----------------------------------------------------------------
// ---- begin bora/ops/k_quants-inl.h -------------------------------------------------------------------
// Why this file exists: the K-quant super-block formats Q4_K and Q5_K (256 values in 8 sub-blocks
// with packed 6-bit scales and mins; Q5_K adds a fifth bit per value). They share the super-block
// header and most of the decoding, so one template serves both, in every kernel that reads them:
// the float decoder, the portable, AVX2 and 512-bit VNNI int8 paths, and the prefill decoder.
// Compiled once per target (toggle guard).

#include <cstddef>
#include <cstdint>


#if defined(BORA_OPS_K_QUANTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_K_QUANTS_INL_H_
#undef BORA_OPS_K_QUANTS_INL_H_
#else
#define BORA_OPS_K_QUANTS_INL_H_
#endif

#include <hwy/highway.h>


BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// ---- the super-block ------------------------------------------------------------------------------
// Layout (quant/q4_k.hpp, quant/q5_k.hpp): f16 d, f16 dmin, 12 bytes of packed scales and mins, then
// (Q5_K) 32 bytes of fifth bits and 128 bytes of nibbles. Value j of sub-block k is
// d * sc_k * q - dmin * m_k; qs byte 32c + l holds value l of sub-block 2c (low nibble) and of
// sub-block 2c + 1 (high nibble); Q5_K's fifth bit of value l in sub-block k is bit k of qh[l].
template <bool kHasHighBit>
struct KQuantLayout {
  static constexpr int kBytes = kHasHighBit ? quant::Q5_KBlock::kBytes : quant::Q4_KBlock::kBytes;
  static constexpr int kQuantsOffset = kHasHighBit ? quant::Q5_KBlock::kQuantsOffset : quant::Q4_KBlock::kQuantsOffset;
  static constexpr int kHighBitsOffset = quant::Q5_KBlock::kHighBitsOffset;  // Q5_K only
};

// The header's scalars: what the float decoder, the portable path and the prefill decoder read.
struct KQuantHeader {
  float d, dmin;
  uint8_t scale[8], min[8];
};

HWY_INLINE KQuantHeader UnpackKQuantHeader(const uint8_t* block) {
  KQuantHeader header;
  header.d = quant::load_f16(block);
  header.dmin = quant::load_f16(block + 2);
  quant::unpack_k_scales_mins(block + 4, header.scale, header.min);
  return header;
}

// The quants of one super-block as unsigned bytes (0..15, or 0..31 with the fifth bit) in natural
// order: the portable path's decoder. Chunk c's 32 bytes hold sub-block 2c in their low nibbles and
// 2c + 1 in their high ones; Q5_K's fifth bit of value l in sub-block k is bit k of qh[l].
template <bool kHasHighBit>
HWY_INLINE void DecodeKQuantU8(const uint8_t* block, uint8_t* u) {
  const hn::CappedTag<uint8_t, 32> du8;
  const size_t lanes = hn::Lanes(du8);
  const uint8_t* qh = block + KQuantLayout<kHasHighBit>::kHighBitsOffset;
  const uint8_t* qs = block + KQuantLayout<kHasHighBit>::kQuantsOffset;
  const auto low_mask = hn::Set(du8, 15);
  const auto fifth_bit = hn::Set(du8, 16);
  for (int c = 0; c < 4; ++c) {
    const auto bit_low = hn::Set(du8, static_cast<uint8_t>(1u << (2 * c)));
    const auto bit_high = hn::Set(du8, static_cast<uint8_t>(2u << (2 * c)));
    for (size_t l = 0; l < 32; l += lanes) {
      const auto packed = hn::LoadU(du8, qs + 32 * c + l);
      auto low = hn::And(packed, low_mask);
      auto high = hn::ShiftRight<4>(packed);
      if (kHasHighBit) {
        const auto high_bits = hn::LoadU(du8, qh + l);
        low = hn::Or(low, hn::IfThenElseZero(hn::TestBit(high_bits, bit_low), fifth_bit));
        high = hn::Or(high, hn::IfThenElseZero(hn::TestBit(high_bits, bit_high), fifth_bit));
      }
      hn::StoreU(low, du8, u + 64 * c + l);
      hn::StoreU(high, du8, u + 64 * c + 32 + l);
    }
  }
}

// out[t] = dot(row, x[t]) for T activation rows, each super-block decoded once.
template <bool kHasHighBit, int T>
HWY_INLINE void PortableKQuantDotQ8(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  for (int t = 0; t < T; ++t) out[t] = 0.0f;
  HWY_ALIGN uint8_t u[256];
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * KQuantLayout<kHasHighBit>::kBytes;
    const KQuantHeader header = UnpackKQuantHeader(block);
    DecodeKQuantU8<kHasHighBit>(block, u);
    const int8_t* w = reinterpret_cast<const int8_t*>(u);  // values <= 31 read the same as int8
    for (int t = 0; t < T; ++t) {
      for (int j = 0; j < 8; ++j) {
        const int64_t b = 8 * s + j;
        const int32_t dot = DotI8(w + 32 * j, x[t].q + 32 * b, 32);
        out[t] += header.d * static_cast<float>(header.scale[j]) * x[t].d[b] * static_cast<float>(dot) -
                  header.dmin * static_cast<float>(header.min[j]) * x[t].d_sum[b];
      }
    }
  }
}

#if BORA_OPS_X86_INT8
// ---- AVX2 (u8 x s8 products; vpdpbusd from AVX3_DL up) ----------------------------------------------

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

// Chunk c (values 64c .. 64c + 63) of a super-block as two vectors of 32 unsigned bytes: sub-blocks
// 2c (low nibbles) and 2c + 1 (high nibbles), with Q5_K's fifth bits from `high_bits` (qh).
template <bool kHasHighBit>
HWY_INLINE void X86KQuantChunk(const uint8_t* qs, __m256i high_bits, int c, __m256i* low, __m256i* high) {
  const __m256i low_mask = _mm256_set1_epi8(15);
  const __m256i packed = X86Load32(qs + 32 * c);
  *low = _mm256_and_si256(packed, low_mask);
  *high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
  if (kHasHighBit) {
    const __m256i one = _mm256_set1_epi8(1);
    const __m256i bit_low = _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * c)), one);
    const __m256i bit_high = _mm256_and_si256(_mm256_srl_epi16(high_bits, _mm_cvtsi32_si128(2 * c + 1)), one);
    *low = _mm256_or_si256(*low, _mm256_slli_epi16(bit_low, 4));
    *high = _mm256_or_si256(*high, _mm256_slli_epi16(bit_high, 4));
  }
}

template <bool kHasHighBit>
HWY_INLINE __m256i X86KQuantHighBits(const uint8_t* block) {
  return kHasHighBit ? X86Load32(block + KQuantLayout<kHasHighBit>::kHighBitsOffset) : _mm256_setzero_si256();
}

// Per 64 values one 32-byte load gives two sub-blocks (low and high nibbles); the per-sub-block
// scales d*sc*dx come from one 8-lane vector per super-block, the mins term dmin*m*(dx*sum q) is one
// multiply-add per super-block.
template <int T, bool kHasHighBit>
HWY_INLINE void X86RowDotKQuant(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  __m256 acc_low[T], acc_high[T], acc_min[T];
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) acc_low[t] = acc_high[t] = acc_min[t] = _mm256_setzero_ps();
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * KQuantLayout<kHasHighBit>::kBytes;
    const float d = X86Half(block);
    const float dmin = X86Half(block + 2);
    const __m128i packed = X86KScalesMins(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block)));
    const __m256 scales = _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed)));
    const __m256 mins =
        _mm256_mul_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(packed, 8))));
    __m256 step[T];
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) {
      step[t] = _mm256_mul_ps(scales, _mm256_loadu_ps(x[t].d + 8 * s));
      acc_min[t] = _mm256_fmadd_ps(mins, _mm256_loadu_ps(x[t].d_sum + 8 * s), acc_min[t]);
    }
    const uint8_t* qs = block + KQuantLayout<kHasHighBit>::kQuantsOffset;
    const __m256i high_bits = X86KQuantHighBits<kHasHighBit>(block);
    for (int c = 0; c < 4; ++c) {
      __m256i low, high;
      X86KQuantChunk<kHasHighBit>(qs, high_bits, c, &low, &high);
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

// The eight 6-bit scales and mins of up to 16 tile rows from byte k of their 12 packed bytes (packed[k],
// a byte per row), as quant::unpack_k_scales_mins unpacks one row's: scales[j] and mins[j] hold a byte per row.
HWY_INLINE void X86KTileScaleMinBytes(const __m128i (&packed)[12], __m128i (&scales)[8], __m128i (&mins)[8]) {
  const __m128i low6 = _mm_set1_epi8(63), low4 = _mm_set1_epi8(15), top2 = _mm_set1_epi8(0x30);
  for (int j = 0; j < 4; ++j) {
    scales[j] = _mm_and_si128(packed[j], low6);
    mins[j] = _mm_and_si128(packed[j + 4], low6);
    // The top two bits of bytes j and j + 4 become bits 4..5 of scale and min j + 4.
    scales[j + 4] = _mm_or_si128(_mm_and_si128(packed[j + 8], low4), _mm_and_si128(_mm_srli_epi16(packed[j], 2), top2));
    mins[j + 4] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(packed[j + 8], 4), low4),
                               _mm_and_si128(_mm_srli_epi16(packed[j + 4], 2), top2));
  }
}

#if !BORA_OPS_X86_VNNI && !defined(HWY_DISABLE_F16C)
// ---- AVX2 over row tiles (Q4_K, Q5_K; quant/row_tiles.hpp) ------------------------------------------
// The tile layout of the 512-bit section below, read as two halves of eight rows, one row per 32-bit
// lane (TiledProducts). Four activation bytes broadcast to every lane meet four values of eight
// rows in one vpmaddubsw; pair sums stay in 16 bits until they are widened, once per sub-block for
// Q4_K (8 groups x 2 x 15 x 127 < 2^15), twice for Q5_K (4 x 2 x 31 x 127 < 2^15); then per
// (row, token) and sub-block j, in sub-block order whatever the number of tokens:
// acc = fma(sum, d * sc_j * dx, acc) - dmin * m_j * d_sum. Q5_K's fifth bits (qh) are tiled like
// values: group g holds qh bytes 4g .. 4g + 3 of each row, the fifth bits of values 4g .. 4g + 3 of
// every sub-block, so sub-block j takes bit j of the bytes at the group it reads its nibbles from.

// The sub-blocks' scales (d * sc) and mins (dmin * m) of half a tile super-block (eight rows), one
// vector each, unpacked as quant::unpack_k_scales_mins does.
HWY_INLINE void X256KTileScalesMins(const uint8_t* block, int half, float (*scales)[8], float (*mins)[8]) {
  const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * half)));
  const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 32 + 16 * half)));
  __m128i packed[12], scale_bytes[8], min_bytes[8];
  for (int k = 0; k < 12; ++k)
    packed[k] = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 64 + 16 * k + 8 * half));
  X86KTileScaleMinBytes(packed, scale_bytes, min_bytes);
  for (int j = 0; j < 8; ++j) {
    _mm256_store_ps(scales[j], _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scale_bytes[j]))));
    _mm256_store_ps(mins[j], _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(min_bytes[j]))));
  }
}

template <bool kHasHighBit>
struct X256KQuantTiles {
  static constexpr int kValues = 256;
  static constexpr int kBytes = KQuantLayout<kHasHighBit>::kBytes;
  static constexpr int64_t kAheadAlone = kKQuantPrefetchDistance;
  static constexpr bool kWholeTilePasses = false;

  template <int kLevels, int T, int kHalves>
  static HWY_INLINE void Dot(const uint8_t* tile, int first_half, int64_t ahead, int64_t supers,
                             const quant::Q8ActivationRow* const* x, __m256 (&acc)[kHalves][T]) {
    constexpr int kGroupsPerWidening = kHasHighBit ? 4 : 8;
    const __m256i nibble = _mm256_set1_epi8(15), fifth_bit = _mm256_set1_epi8(16);
    for (int h = 0; h < kHalves; ++h) {
      HWY_UNROLL(4)
      for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_ps();
    }
    HWY_ALIGN float scales[kHalves][8][8];
    HWY_ALIGN float mins[kHalves][8][8];
    for (int64_t s = 0; s < supers; ++s) {
      const uint8_t* block = tile + s * 16 * kBytes;
      if (ahead != 0) X86PrefetchAhead(block, 16 * kBytes, static_cast<int>(ahead));
      for (int h = 0; h < kHalves; ++h) X256KTileScalesMins(block, first_half + h, scales[h], mins[h]);
      const uint8_t* quants = block + 16 * KQuantLayout<kHasHighBit>::kQuantsOffset + 32 * first_half;
      const uint8_t* high_bits = block + 16 * KQuantLayout<kHasHighBit>::kHighBitsOffset + 32 * first_half;
      // Sub-block j: low nibbles of chunk j / 2 for even j, high nibbles for odd j. One sub-block at a
      // time, so that T accumulators and T pair sums stay in registers.
      for (int j = 0; j < 8; ++j) {
        const uint8_t* chunk = quants + 64 * 8 * (j / 2);
        const __m256i bit_j = _mm256_set1_epi8(static_cast<char>(1u << j));
        __m256i sums[kHalves][T];
        for (int level = 0; level < kLevels; ++level) {
          __m256i totals[kHalves][T];
          for (int g0 = 0; g0 < 8; g0 += kGroupsPerWidening) {
            __m256i pairs[kHalves][T];
            for (int h = 0; h < kHalves; ++h) {
              HWY_UNROLL(4)
              for (int t = 0; t < T; ++t) pairs[h][t] = _mm256_setzero_si256();
            }
            HWY_UNROLL(2)
            for (int g = g0; g < g0 + kGroupsPerWidening; ++g) {
              __m256i values[kHalves];
              for (int h = 0; h < kHalves; ++h) {
                const __m256i packed = X86Load32(chunk + 64 * g + 32 * h);
                values[h] = _mm256_and_si256(j % 2 == 0 ? packed : _mm256_srli_epi16(packed, 4), nibble);
                if (kHasHighBit) {
                  const __m256i bits = _mm256_and_si256(X86Load32(high_bits + 64 * g + 32 * h), bit_j);
                  values[h] = _mm256_or_si256(values[h], _mm256_and_si256(_mm256_cmpeq_epi8(bits, bit_j), fifth_bit));
                }
              }
              HWY_UNROLL(4)
              for (int t = 0; t < T; ++t) {
                int32_t four;
                std::memcpy(&four, x[t][level].q + 256 * s + 64 * (j / 2) + 32 * (j % 2) + 4 * g, 4);
                const __m256i four4 = _mm256_set1_epi32(four);
                for (int h = 0; h < kHalves; ++h)
                  pairs[h][t] = _mm256_add_epi16(pairs[h][t], _mm256_maddubs_epi16(values[h], four4));
              }
            }
            for (int h = 0; h < kHalves; ++h) {
              HWY_UNROLL(4)
              for (int t = 0; t < T; ++t) {
                const __m256i total = _mm256_madd_epi16(pairs[h][t], _mm256_set1_epi16(1));
                totals[h][t] = g0 == 0 ? total : _mm256_add_epi32(totals[h][t], total);
              }
            }
          }
          for (int h = 0; h < kHalves; ++h) {
            HWY_UNROLL(4)
            for (int t = 0; t < T; ++t) {
              // Two levels: sums in the second level's units (the first level's scale is 256 times its).
              sums[h][t] = level == 0 ? totals[h][t] : _mm256_add_epi32(_mm256_slli_epi32(sums[h][t], 8), totals[h][t]);
            }
          }
        }
        const int64_t b = 8 * s + j;
        for (int h = 0; h < kHalves; ++h) {
          const __m256 scale = _mm256_load_ps(scales[h][j]), min = _mm256_load_ps(mins[h][j]);
          HWY_UNROLL(4)
          for (int t = 0; t < T; ++t) {
            const float dx = x[t][kLevels - 1].d[b];
            const float d_sum = kLevels == 2 ? x[t][0].d_sum[b] + x[t][1].d_sum[b] : x[t][0].d_sum[b];
            const __m256 step = _mm256_mul_ps(scale, _mm256_set1_ps(dx));
            acc[h][t] = _mm256_fnmadd_ps(min, _mm256_set1_ps(d_sum),
                                         _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[h][t]), step, acc[h][t]));
          }
        }
      }
    }
  }
};
#endif  // !BORA_OPS_X86_VNNI && !HWY_DISABLE_F16C

#endif  // BORA_OPS_X86_INT8

#if BORA_OPS_X86_VNNI
// ---- 512-bit VNNI decode ------------------------------------------------------------------------------

// 64 bytes of quants hold two 64-value chunks: their low nibbles are values [0, 32) of each chunk and
// their high nibbles values [32, 64). So one full load, one mask and one shift give two vectors of
// two sub-blocks each, and the activations are fetched to match in 32-byte halves (with the one-vector
// scale unpacking of X86KScalesMins, 1.3-1.5x faster per row from L2 than decoding 32 bytes per chunk with
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
  constexpr int kBlockBytes = KQuantLayout<kHasHighBit>::kBytes;
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
    const uint8_t* qs = block + KQuantLayout<kHasHighBit>::kQuantsOffset;
    const __m512i high_bits = _mm512_broadcast_i64x4(X86KQuantHighBits<kHasHighBit>(block));
    X512KQuantChunkPair<kHasHighBit, kLevels>(qs, high_bits, 0, x, 256 * s, step, acc[0], acc[1]);
    X512KQuantChunkPair<kHasHighBit, kLevels>(qs, high_bits, 2, x, 256 * s, step, acc[2], acc[3]);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) - X86Sum(_mm512_extractf32x8_ps(mins_acc, 1));
}

// ---- 512-bit VNNI over row tiles (Q4_K, Q5_K; quant/row_tiles.hpp) ---------------------------------
// A tile super-block holds 16 rows' d, then their dmin (f16 each), then byte k of their 12 packed
// scale bytes as 16 bytes each, then (Q5_K) their 32 bytes of fifth bits and their quants, both four
// bytes per row per 64-byte vector (quants group 8c + g: bytes 32c + 4g .. 32c + 4g + 3, values
// 4g .. 4g + 3 of sub-block 2c in the low nibbles and of 2c + 1 in the high ones; fifth bits group g:
// bytes 4g .. 4g + 3, bit j for sub-block j). Per (row, token) and 32-value sub-block j, whatever the
// number of tokens, the prefill kernel's steps (VnniScale): acc = fma(sum, d * sc_j * dx, acc) -
// dmin * m_j * d_sum, so a token's products are the same decoded alone, in a batch or in a prompt.

// The sub-blocks' scales (d * sc) and mins (dmin * m) of a tile super-block's 16 rows, one vector each,
// unpacked as quant::unpack_k_scales_mins does, sixteen rows at a time.
HWY_INLINE void X512KTileScalesMins(const uint8_t* block, float (*scales)[16], float (*mins)[16]) {
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
  const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32)));
  __m128i packed[12], scale_bytes[8], min_bytes[8];
  for (int k = 0; k < 12; ++k) packed[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 64 + 16 * k));
  X86KTileScaleMinBytes(packed, scale_bytes, min_bytes);
  for (int j = 0; j < 8; ++j) {
    _mm512_store_ps(scales[j], _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(scale_bytes[j]))));
    _mm512_store_ps(mins[j], _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(min_bytes[j]))));
  }
}

template <bool kHasHighBit>
struct X512KQuantTiles {
  static constexpr int kValues = 256;
  static constexpr int kBytes = KQuantLayout<kHasHighBit>::kBytes;
  static constexpr int64_t kAheadAlone = kKQuantPrefetchDistance;
  // Each 32-value sub-block's d_sum, which its min multiplies.
  static constexpr int kSums = 1;
  static constexpr float kSumFactor = 1.0f;

  template <class Tokens, int kLevels, int T>
  static HWY_INLINE void Dot(const uint8_t* tile, TilePrefetch ahead, int64_t supers, const uint8_t* tokens,
                             __m512 (&acc)[T]) {
    const __m512i nibble = _mm512_set1_epi8(15);
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    HWY_ALIGN float scales[8][16];
    HWY_ALIGN float mins[8][16];
    for (int64_t s = 0; s < supers; ++s) {
      const uint8_t* block = tile + s * 16 * kBytes;
      if (ahead.distance != 0) X86PrefetchAhead(block, 16 * kBytes, ahead);
      X512KTileScalesMins(block, scales, mins);
      const uint8_t* quants = block + 16 * KQuantLayout<kHasHighBit>::kQuantsOffset;
      const uint8_t* high_bits = block + 16 * KQuantLayout<kHasHighBit>::kHighBitsOffset;
      for (int j = 0; j < 8; ++j) {
        __m512i u[8];
        HWY_UNROLL(8)
        for (int g = 0; g < 8; ++g) {
          const __m512i packed = _mm512_loadu_si512(quants + 64 * (8 * (j / 2) + g));
          u[g] = _mm512_and_si512(j % 2 == 0 ? packed : _mm512_srli_epi16(packed, 4), nibble);
          if (kHasHighBit) {  // bit 4 of a nibble is clear, so a masked add of 16 sets it
            const __mmask64 fifth = _mm512_test_epi8_mask(_mm512_loadu_si512(high_bits + 64 * g),
                                                          _mm512_set1_epi8(static_cast<char>(1 << j)));
            u[g] = _mm512_mask_add_epi8(u[g], fifth, u[g], _mm512_set1_epi8(16));
          }
        }
        const uint8_t* token_block = tokens + (8 * s + j) * Tokens::kBytes;
        __m512i sums[T];
        X512TileSums<Tokens, kLevels, T>(u, token_block, 0, sums);
        const __m512 scale = _mm512_load_ps(scales[j]), min = _mm512_load_ps(mins[j]);
        HWY_UNROLL(8)
        for (int t = 0; t < T; ++t) {
          const __m512 step = _mm512_mul_ps(scale, Tokens::Scale(token_block, t));
          acc[t] = _mm512_fnmadd_ps(min, Tokens::Sum(token_block, 0, t),
                                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), step, acc[t]));
        }
      }
    }
  }
};

#endif  // BORA_OPS_X86_VNNI

// ---- the family (interface described in legacy_blocks-inl.h) -----------------------------------------

template <bool kHasHighBit>
struct KQuantFamily {
  static constexpr int kValues = 256;
  static constexpr int kBytes = KQuantLayout<kHasHighBit>::kBytes;

  // value = (d*sc) * q - (dmin*m), written as one fused multiply-add; both products are exact, so
  // the single rounding matches the scalar code.
  static HWY_INLINE void DecodeF32(const uint8_t* block, float* HWY_RESTRICT out) {
    const BlockF32 df;
    const hn::Rebind<uint8_t, BlockF32> du8;
    const hn::Rebind<int32_t, BlockF32> di;
    const size_t lanes = hn::Lanes(df);
    const KQuantHeader header = UnpackKQuantHeader(block);
    const uint8_t* qh = block + KQuantLayout<kHasHighBit>::kHighBitsOffset;
    const uint8_t* qs = block + KQuantLayout<kHasHighBit>::kQuantsOffset;
    const auto low_mask = hn::Set(di, 15);
    const auto one = hn::Set(di, 1);
    for (int chunk = 0; chunk < 4; ++chunk) {
      const int sub_low = 2 * chunk, sub_high = 2 * chunk + 1;
      const auto step_low = hn::Set(df, header.d * static_cast<float>(header.scale[sub_low]));
      const auto offset_low = hn::Set(df, header.dmin * static_cast<float>(header.min[sub_low]));
      const auto step_high = hn::Set(df, header.d * static_cast<float>(header.scale[sub_high]));
      const auto offset_high = hn::Set(df, header.dmin * static_cast<float>(header.min[sub_high]));
      const uint8_t* bytes = qs + 32 * chunk;
      float* out_low = out + 64 * chunk;
      float* out_high = out_low + 32;
      for (size_t l = 0; l < 32; l += lanes) {
        const auto packed = hn::PromoteTo(di, hn::LoadU(du8, bytes + l));
        auto low = hn::And(packed, low_mask);
        auto high = hn::ShiftRight<4>(packed);
        if (kHasHighBit) {
          const auto high_bits = hn::PromoteTo(di, hn::LoadU(du8, qh + l));
          low = hn::Or(low, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(high_bits, sub_low), one)));
          high = hn::Or(high, hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(high_bits, sub_high), one)));
        }
        hn::Store(hn::MulSub(step_low, hn::ConvertTo(df, low), offset_low), df, out_low + l);
        hn::Store(hn::MulSub(step_high, hn::ConvertTo(df, high), offset_high), df, out_high + l);
      }
    }
  }

#if BORA_OPS_X86_VNNI
  static constexpr bool kSplitHalves = false;
  static constexpr bool kCommonOffset = false;
  // u = q; the mins are the offsets (only the first half of each 32-value sub-block is read).
  static HWY_INLINE void DecodeUnsigned(const uint8_t* block, DecodedWeights* out) {
    const KQuantHeader header = UnpackKQuantHeader(block);
    for (int j = 0; j < 8; ++j) {
      out->scale[2 * j] = header.d * static_cast<float>(header.scale[j]);
      out->offset[2 * j] = header.dmin * static_cast<float>(header.min[j]);
    }
    const uint8_t* qs = block + KQuantLayout<kHasHighBit>::kQuantsOffset;
    const __m256i high_bits = X86KQuantHighBits<kHasHighBit>(block);
    for (int c = 0; c < 4; ++c) {
      __m256i low, high;
      X86KQuantChunk<kHasHighBit>(qs, high_bits, c, &low, &high);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out->u + 64 * c), low);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out->u + 64 * c + 32), high);
    }
  }

  template <int kLevels>
  static HWY_INLINE float DotLevels(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x) {
    return X512RowDotKQuant<kHasHighBit, kLevels>(row, n, x);
  }
#endif

  template <int T>
  static HWY_INLINE void DotQ8(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
#if BORA_OPS_X86_INT8
    X86RowDotKQuant<T, kHasHighBit>(row, n, x, out);
#else
    PortableKQuantDotQ8<kHasHighBit, T>(row, n, x, out);
#endif
  }
};

using Q4_KFamily = KQuantFamily<false>;
using Q5_KFamily = KQuantFamily<true>;

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_K_QUANTS_INL_H_ toggle
// ---- end bora/ops/k_quants-inl.h ---------------------------------------------------------------------
// ---- begin bora/ops/q6_k-inl.h -----------------------------------------------------------------------
// Why this file exists: the Q6_K super-block format (256 values of 6 bits in 16 sub-blocks of 16
// with int8 scales), every kernel that reads it: the float decoder, the portable, AVX2 and 512-bit
// VNNI int8 paths, and the prefill decoder. Compiled once per target (toggle guard).

#include <cstddef>
#include <cstdint>
#include <cstring>


#if defined(BORA_OPS_Q6_K_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_Q6_K_INL_H_
#undef BORA_OPS_Q6_K_INL_H_
#else
#define BORA_OPS_Q6_K_INL_H_
#endif

#include <hwy/highway.h>


BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// Layout (quant/q6_k.hpp): 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 int8 scales, f16
// d. Value q (0..63) stands for d * scale * (q - 32).

// The 256 values q - 32 (-32..31) of a super-block in natural order: quarter k of half h (values
// 128h + 32k + l) takes the low (k < 2) or high nibbles of ql[64h + 32(k % 2) + l] and bits 2k, 2k + 1
// of qh[32h + l] as its top two bits.
HWY_INLINE void DecodeQ6_KI8(const uint8_t* block, int8_t* w) {
  const hn::CappedTag<uint8_t, 32> du8;
  const hn::Rebind<int8_t, decltype(du8)> di8;
  const size_t lanes = hn::Lanes(du8);
  const auto low_mask = hn::Set(du8, 15);
  const auto bias = hn::Set(di8, 32);
  auto store = [&](decltype(hn::Zero(du8)) q, int at) { hn::StoreU(hn::Sub(hn::BitCast(di8, q), bias), di8, w + at); };
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = block + 64 * h;
    const uint8_t* qh = block + quant::Q6_KBlock::kHighBitsOffset + 32 * h;
    for (size_t l = 0; l < 32; l += lanes) {
      const auto ql0 = hn::LoadU(du8, ql + l);
      const auto ql1 = hn::LoadU(du8, ql + 32 + l);
      const auto top = hn::LoadU(du8, qh + l);
      const int at = 128 * h + static_cast<int>(l);
      store(hn::Or(hn::And(ql0, low_mask), hn::ShiftLeft<4>(hn::And(top, hn::Set(du8, 0x03)))), at);
      store(hn::Or(hn::And(ql1, low_mask), hn::ShiftLeft<2>(hn::And(top, hn::Set(du8, 0x0C)))), at + 32);
      store(hn::Or(hn::ShiftRight<4>(ql0), hn::And(top, hn::Set(du8, 0x30))), at + 64);
      store(hn::Or(hn::ShiftRight<4>(ql1), hn::ShiftRight<2>(hn::And(top, hn::Set(du8, 0xC0)))), at + 96);
    }
  }
}

// out[t] = dot(row, x[t]) for T activation rows, each super-block decoded once.
template <int T>
HWY_INLINE void PortableQ6_KDotQ8(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  for (int t = 0; t < T; ++t) out[t] = 0.0f;
  HWY_ALIGN int8_t w[256];
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * quant::Q6_KBlock::kBytes;
    const float d = quant::load_f16(block + quant::Q6_KBlock::kScaleOffset);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + quant::Q6_KBlock::kScalesOffset);
    DecodeQ6_KI8(block, w);
    for (int t = 0; t < T; ++t) {
      for (int j = 0; j < 8; ++j) {
        const int64_t b = 8 * s + j;
        const int32_t dot = scales[2 * j] * DotI8(w + 32 * j, x[t].q + 32 * b, 16) +
                            scales[2 * j + 1] * DotI8(w + 32 * j + 16, x[t].q + 32 * b + 16, 16);
        out[t] += d * x[t].d[b] * static_cast<float>(dot);
      }
    }
  }
}

#if BORA_OPS_X86_INT8
// ---- AVX2 (u8 x s8 products; vpdpbusd from AVX3_DL up) ----------------------------------------------

// Quarter k (values 32k .. 32k + 31) of one 128-value half as unsigned q (0..63), from the half's
// two 32-byte vectors of low nibbles and its 32 bytes of high bits.
HWY_INLINE __m256i X86Q6_KQuarter(__m256i ql0, __m256i ql1, __m256i qh, int k) {
  const __m256i low_mask = _mm256_set1_epi8(15);
  const __m256i ql = (k % 2 == 0) ? ql0 : ql1;
  const __m256i low = (k < 2) ? _mm256_and_si256(ql, low_mask) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), low_mask);
  const __m256i high = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), _mm256_set1_epi8(3));
  return _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
}

// q - 32 is signed (-32..31); the 16-value sub-blocks have their own scales, so the eight 32-bit
// partial sums of a 32-value group are scaled by [s0 x4, s1 x4].
template <int T>
HWY_INLINE void X86RowDotQ6_K(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
  __m256 acc[2][T];
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = _mm256_setzero_ps();
  const __m256i bias = _mm256_set1_epi8(32);
  for (int64_t s = 0; s < n / 256; ++s) {
    const uint8_t* block = row + s * quant::Q6_KBlock::kBytes;
    const __m256 d = _mm256_set1_ps(X86Half(block + quant::Q6_KBlock::kScaleOffset));
    const __m128i scales8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + quant::Q6_KBlock::kScalesOffset));
    const __m256 scales_half[2] = {
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scales8))),
        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(scales8, 8)))),
    };
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = X86Load32(block + 64 * h);
      const __m256i ql1 = X86Load32(block + 64 * h + 32);
      const __m256i qh = X86Load32(block + quant::Q6_KBlock::kHighBitsOffset + 32 * h);
      for (int k = 0; k < 4; ++k) {
        const __m256i w = _mm256_sub_epi8(X86Q6_KQuarter(ql0, ql1, qh, k), bias);
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

#if !BORA_OPS_X86_VNNI && !defined(HWY_DISABLE_F16C)
// ---- AVX2 over row tiles (quant/row_tiles.hpp) -------------------------------------------------------
// The tile layout of the 512-bit section below, read as two halves of eight rows, one row per 32-bit
// lane (TiledProducts). Four activation bytes broadcast to every lane meet four 6-bit values of
// eight rows in one vpmaddubsw; pair sums of two groups stay in 16 bits (2 x 2 x 63 x 127 < 2^15), two
// widenings per 16-value sub-block, then per (row, token) and sub-block, in block order whatever the
// number of tokens: acc = fma(sum, d * sc * dx, acc) - 32 * d * sc * d_sum16.
struct X256Q6_KTiles {
  static constexpr int kValues = 256;
  static constexpr int kBytes = quant::Q6_KBlock::kBytes;
  static constexpr int64_t kAheadAlone = kKQuantPrefetchDistance;
  static constexpr bool kWholeTilePasses = false;

  template <int kLevels, int T, int kHalves>
  static HWY_INLINE void Dot(const uint8_t* tile, int first_half, int64_t ahead, int64_t supers,
                             const quant::Q8ActivationRow* const* x, __m256 (&acc)[kHalves][T]) {
    const __m256i nibble = _mm256_set1_epi8(15), top_two = _mm256_set1_epi8(0x30), ones = _mm256_set1_epi16(1);
    for (int h = 0; h < kHalves; ++h) {
      HWY_UNROLL(4)
      for (int t = 0; t < T; ++t) acc[h][t] = _mm256_setzero_ps();
    }
    for (int64_t s = 0; s < supers; ++s) {
      const uint8_t* block = tile + s * 16 * kBytes;
      if (ahead != 0) X86PrefetchAhead(block, 16 * kBytes, static_cast<int>(ahead));
      for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
          const int64_t b = 8 * s + 4 * h + k;
          // One 16-value sub-block of one half tile at a time (four vectors of values), so that the T
          // accumulators stay in registers.
          for (int sixteen = 0; sixteen < 2; ++sixteen) {  // values 16 * sixteen .. + 15 of block b
            const int sub = 8 * h + 2 * k + sixteen;
            for (int r = 0; r < kHalves; ++r) {
              const int half = first_half + r;
              const uint8_t* quants = block + 16 * 18 + 32 * half;
              __m256i w[4];
              HWY_UNROLL(4)
              for (int l = 0; l < 4; ++l) {
                const int line = 4 * sixteen + l;
                const __m256i low = X86Load32(quants + 64 * (16 * h + 8 * (k % 2) + line));
                const __m256i high = X86Load32(quants + 64 * (32 + 8 * h + line));
                const __m256i low4 = _mm256_and_si256(k < 2 ? low : _mm256_srli_epi16(low, 4), nibble);
                // Bits 2k, 2k + 1 of the high byte moved straight to bits 4, 5: one shift and one mask.
                const __m256i high_moved = k < 3 ? _mm256_sll_epi16(high, _mm_cvtsi32_si128(4 - 2 * k)) : _mm256_srli_epi16(high, 2);
                w[l] = _mm256_or_si256(low4, _mm256_and_si256(high_moved, top_two));
              }
              __m256i sums[T];
              for (int level = 0; level < kLevels; ++level) {
                HWY_UNROLL(4)
                for (int t = 0; t < T; ++t) {
                  int32_t four[4];
                  std::memcpy(four, x[t][level].q + 32 * b + 16 * sixteen, 16);
                  const __m256i pairs01 = _mm256_add_epi16(_mm256_maddubs_epi16(w[0], _mm256_set1_epi32(four[0])),
                                                           _mm256_maddubs_epi16(w[1], _mm256_set1_epi32(four[1])));
                  const __m256i pairs23 = _mm256_add_epi16(_mm256_maddubs_epi16(w[2], _mm256_set1_epi32(four[2])),
                                                           _mm256_maddubs_epi16(w[3], _mm256_set1_epi32(four[3])));
                  const __m256i total = _mm256_add_epi32(_mm256_madd_epi16(pairs01, ones), _mm256_madd_epi16(pairs23, ones));
                  // Two levels: sums in the second level's units (the first level's scale is 256 times its).
                  sums[t] = level == 0 ? total : _mm256_add_epi32(_mm256_slli_epi32(sums[t], 8), total);
                }
              }
              const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * half)));
              const __m128i scale_bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 32 + 16 * sub + 8 * half));
              const __m256 scale = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(scale_bytes)));
              const __m256 offset = _mm256_mul_ps(_mm256_set1_ps(32.0f), scale);
              HWY_UNROLL(4)
              for (int t = 0; t < T; ++t) {
                const quant::Q8ActivationRow* levels = x[t];
                const float d_sum = kLevels == 2 ? levels[0].d_sum16[2 * b + sixteen] + levels[1].d_sum16[2 * b + sixteen]
                                                 : levels[0].d_sum16[2 * b + sixteen];
                const __m256 step = _mm256_mul_ps(scale, _mm256_set1_ps(levels[kLevels - 1].d[b]));
                acc[r][t] = _mm256_fnmadd_ps(offset, _mm256_set1_ps(d_sum),
                                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[t]), step, acc[r][t]));
              }
            }
          }
        }
      }
    }
  }
};
#endif  // !BORA_OPS_X86_VNNI && !HWY_DISABLE_F16C

#endif  // BORA_OPS_X86_INT8

#if BORA_OPS_X86_VNNI
// ---- 512-bit VNNI decode ------------------------------------------------------------------------------
// As for the K-quants, but four lanes of a vpdpbusd result per 16-value sub-block.

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
    const uint8_t* block = row + s * quant::Q6_KBlock::kBytes;
    X86PrefetchAhead(block, quant::Q6_KBlock::kBytes, kKQuantPrefetchDistance);
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

// ---- 512-bit VNNI over row tiles (quant/row_tiles.hpp) ---------------------------------------------
// A tile super-block holds 16 rows' d (f16), then byte k of their 16 int8 scales as 16 bytes each, then
// their quant bytes four per row per 64-byte vector, in the block's order: groups 16h + l and
// 16h + 8 + l hold low bits (bytes 64h + 4l .. and 64h + 32 + 4l ..) and group 32 + 8h + l the high
// bits (bytes 128 + 32h + 4l ..) of values 128h + 32k + 4l .. + 3, k = 0..3. Per (row, token) and
// 16-value sub-block, whatever the number of tokens, the prefill kernel's steps (VnniScale with split
// halves): acc = fma(sum, d * sc * dx, acc) - 32 * d * sc * d_sum16, so a token's products are the same
// decoded alone, in a batch or in a prompt.
struct X512Q6_KTiles {
  static constexpr int kValues = 256;
  static constexpr int kBytes = quant::Q6_KBlock::kBytes;
  static constexpr int64_t kAheadAlone = kKQuantPrefetchDistance;
  // The d_sum16 of each 16-value half, which 32 times its scale multiplies.
  static constexpr int kSums = 2;
  static constexpr float kSumFactor = 1.0f;

  template <class Tokens, int kLevels, int T>
  static HWY_INLINE void Dot(const uint8_t* tile, TilePrefetch ahead, int64_t supers, const uint8_t* tokens,
                             __m512 (&acc)[T]) {
    const __m512i nibble = _mm512_set1_epi8(15), two_bits = _mm512_set1_epi8(3);
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t s = 0; s < supers; ++s) {
      const uint8_t* block = tile + s * 16 * kBytes;
      if (ahead.distance != 0) X86PrefetchAhead(block, 16 * kBytes, ahead);
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
      const uint8_t* quants = block + 16 * 18;
      for (int h = 0; h < 2; ++h) {
        for (int k = 0; k < 4; ++k) {
          __m512i u[8];
          HWY_UNROLL(8)
          for (int l = 0; l < 8; ++l) {
            const __m512i low = _mm512_loadu_si512(quants + 64 * (16 * h + 8 * (k % 2) + l));
            const __m512i high = _mm512_loadu_si512(quants + 64 * (32 + 8 * h + l));
            const __m512i low4 = _mm512_and_si512(k < 2 ? low : _mm512_srli_epi16(low, 4), nibble);
            const __m512i high2 = _mm512_and_si512(_mm512_srli_epi16(high, 2 * k), two_bits);
            u[l] = _mm512_or_si512(low4, _mm512_slli_epi16(high2, 4));
          }
          const uint8_t* token_block = tokens + (8 * s + 4 * h + k) * Tokens::kBytes;
          for (int half = 0; half < 2; ++half) {
            __m512i sums[T];
            X512TileSums<Tokens, kLevels, T, 4>(u + 4 * half, token_block, 4 * half, sums);
            const int sub = 8 * h + 2 * k + half;
            const __m128i scale_bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 32 + 16 * sub));
            const __m512 scale = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(scale_bytes)));
            const __m512 offset = _mm512_mul_ps(_mm512_set1_ps(32.0f), scale);
            HWY_UNROLL(8)
            for (int t = 0; t < T; ++t) {
              const __m512 step = _mm512_mul_ps(scale, Tokens::Scale(token_block, t));
              acc[t] = _mm512_fnmadd_ps(offset, Tokens::Sum(token_block, half, t),
                                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[t]), step, acc[t]));
            }
          }
        }
      }
    }
  }
};

#endif  // BORA_OPS_X86_VNNI

// ---- the family (interface described in legacy_blocks-inl.h) -----------------------------------------

struct Q6_KFamily {
  static constexpr int kValues = quant::Q6_KBlock::kElements;
  static constexpr int kBytes = quant::Q6_KBlock::kBytes;

  static HWY_INLINE void DecodeF32(const uint8_t* block, float* HWY_RESTRICT out) {
    const BlockF32 df;
    const hn::Rebind<uint8_t, BlockF32> du8;
    const hn::Rebind<int32_t, BlockF32> di;
    const size_t lanes = hn::Lanes(df);
    const float d = quant::load_f16(block + quant::Q6_KBlock::kScaleOffset);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + quant::Q6_KBlock::kScalesOffset);
    const auto low_mask = hn::Set(di, 15);
    const auto two_bits = hn::Set(di, 3);
    const auto bias = hn::Set(di, 32);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = block + 64 * half;
      const uint8_t* qh = block + quant::Q6_KBlock::kHighBitsOffset + 32 * half;
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

#if BORA_OPS_X86_VNNI
  static constexpr bool kSplitHalves = true;
  static constexpr bool kCommonOffset = false;
  // u = q in 0..63; the "- 32" is the offset 32 * scale of each 16-value half.
  static HWY_INLINE void DecodeUnsigned(const uint8_t* block, DecodedWeights* out) {
    const float d = X86Half(block + quant::Q6_KBlock::kScaleOffset);
    const int8_t* scales = reinterpret_cast<const int8_t*>(block + quant::Q6_KBlock::kScalesOffset);
    for (int i = 0; i < 16; ++i) {
      out->scale[i] = d * static_cast<float>(scales[i]);
      out->offset[i] = 32.0f * out->scale[i];
    }
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = X86Load32(block + 64 * h);
      const __m256i ql1 = X86Load32(block + 64 * h + 32);
      const __m256i qh = X86Load32(block + quant::Q6_KBlock::kHighBitsOffset + 32 * h);
      for (int k = 0; k < 4; ++k) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(out->u + 128 * h + 32 * k), X86Q6_KQuarter(ql0, ql1, qh, k));
      }
    }
  }

  template <int kLevels>
  static HWY_INLINE float DotLevels(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x) {
    return X512RowDotQ6_K<kLevels>(row, n, x);
  }
#endif

  template <int T>
  static HWY_INLINE void DotQ8(const uint8_t* row, int64_t n, const quant::Q8ActivationRow* x, float* out) {
#if BORA_OPS_X86_INT8
    X86RowDotQ6_K<T>(row, n, x, out);
#else
    PortableQ6_KDotQ8<T>(row, n, x, out);
#endif
  }
};

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_Q6_K_INL_H_ toggle
// ---- end bora/ops/q6_k-inl.h -------------------------------------------------------------------------
// ---- begin bora/ops/matmul-inl.h ---------------------------------------------------------------------
// Why this file exists: matrix x activations for every weight type: the per-type switch to a weight
// family (legacy_blocks-inl.h, k_quants-inl.h, q6_k-inl.h, float_weights-inl.h), one token at a time
// (decode) and the batched tiling of a prompt over a family's micro-kernel, including the VNNI
// prefill kernel. These are the kernels implementation.hpp exports. Compiled once per target.

#include <cstdint>
#include <cstring>


#if defined(BORA_OPS_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_MATMUL_INL_H_
#undef BORA_OPS_MATMUL_INL_H_
#else
#define BORA_OPS_MATMUL_INL_H_
#endif

#include <hwy/highway.h>

// ---- begin bora/ops/q4_0_windows-inl.h ---------------------------------------------------------------
// Why this file exists: the 512-bit VNNI decode kernel for Q4_0 rows whose length is a multiple of
// 1024 values (all of Mistral's matrices), which reads raw 64-byte windows of blocks instead of block
// pairs; kept apart from legacy_blocks-inl.h, whose block helpers it uses, because it is a kernel of
// its own with its own activation layout. Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>


#if defined(BORA_OPS_Q4_0_WINDOWS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_Q4_0_WINDOWS_INL_H_
#undef BORA_OPS_Q4_0_WINDOWS_INL_H_
#else
#define BORA_OPS_Q4_0_WINDOWS_INL_H_
#endif

#include <hwy/highway.h>


#if BORA_OPS_X86_VNNI
BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

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

// One token's view of the window kernel: its activation levels, their window layout, and the
// accumulators of the row being computed.
template <int kLevels>
struct Q4_0WindowToken {
  const quant::Q8ActivationRow* x = nullptr;  // kLevels levels
  const int8_t* low[2] = {};
  const int8_t* high[2] = {};
  __m512 acc[3], offset, step_first16, step_last16;
};

// Window w of the period at `first` (already loaded and split into nibbles), whose laid-out
// activations start at byte `offset`, for one token.
template <int kLevels>
HWY_INLINE void X512Q4_0Window(__m512i lo, __m512i hi, int w, int64_t offset, Q4_0WindowToken<kLevels>& token) {
  const int64_t at = offset + 64 * w;
  __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_loadu_si512(token.low[0] + at));
  sums = _mm512_dpbusd_epi32(sums, hi, _mm512_loadu_si512(token.high[0] + at));
  if (kLevels == 2) {  // as X512DotLevels: 256 * first level + second, in the second level's units
    sums = _mm512_dpbusd_epi32(_mm512_slli_epi32(sums, 8), lo, _mm512_loadu_si512(token.low[1] + at));
    sums = _mm512_dpbusd_epi32(sums, hi, _mm512_loadu_si512(token.high[1] + at));
  }
  const __m512 step =
      _mm512_permutex2var_ps(token.step_first16, _mm512_loadu_si512(kQ4_0WindowLayout.block[w]), token.step_last16);
  token.acc[w % 3] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), step, token.acc[w % 3]);
}

// One row against T tokens: each window is loaded and split once for all of them, and every token's
// sums run exactly as they would alone (T = 1), so a token's result does not depend on T.
template <int kLevels, int T>
HWY_INLINE void X512RowDotQ4_0Windows(const uint8_t* row, int64_t n, Q4_0WindowToken<kLevels>* tokens, float* out) {
  for (int t = 0; t < T; ++t) {
    tokens[t].acc[0] = tokens[t].acc[1] = tokens[t].acc[2] = _mm512_setzero_ps();
    tokens[t].offset = _mm512_setzero_ps();
  }
  const __m512i nibble = _mm512_set1_epi8(15);
  const int64_t blocks = n / 32;
  for (int64_t b = 0; b < blocks; b += 32) {
    const uint8_t* first = row + b * 18;
    X86PrefetchAhead(first, 576, 256 * 18);
    // The second group's scale windows reach 36 bytes past the period: gathered in the row's last one.
    const __m512 dw_first16 = X512GroupScales<18>(first);
    const __m512 dw_last16 = blocks - b >= 34 ? X512GroupScales<18>(first + 16 * 18)
                                              : X512BlockScales<18>(first + 16 * 18, static_cast<__mmask16>(0xFFFF));
    for (int t = 0; t < T; ++t) {
      Q4_0WindowToken<kLevels>& token = tokens[t];
      const quant::Q8ActivationRow* x = token.x;
      const float* dx = X512LevelScales<kLevels>(x) + b;
      auto d_sum = [&](int64_t at) {
        return kLevels == 2 ? _mm512_add_ps(_mm512_loadu_ps(x[0].d_sum + at), _mm512_loadu_ps(x[1].d_sum + at))
                            : _mm512_loadu_ps(x[0].d_sum + at);
      };
      token.offset = _mm512_fmadd_ps(dw_first16, d_sum(b), token.offset);
      token.offset = _mm512_fmadd_ps(dw_last16, d_sum(b + 16), token.offset);
      token.step_first16 = _mm512_mul_ps(dw_first16, _mm512_loadu_ps(dx));
      token.step_last16 = _mm512_mul_ps(dw_last16, _mm512_loadu_ps(dx + 16));
    }
    const int64_t at = b * 18;
    HWY_UNROLL(9)
    for (int w = 0; w < 9; ++w) {
      const __m512i raw = _mm512_loadu_si512(first + 64 * w);
      const __m512i lo = _mm512_and_si512(raw, nibble);
      const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nibble);
      for (int t = 0; t < T; ++t) X512Q4_0Window<kLevels>(lo, hi, w, at, tokens[t]);
    }
  }
  for (int t = 0; t < T; ++t) {
    const Q4_0WindowToken<kLevels>& token = tokens[t];
    out[t] = _mm512_reduce_add_ps(_mm512_add_ps(token.acc[0], _mm512_add_ps(token.acc[1], token.acc[2]))) -
             8.0f * _mm512_reduce_add_ps(token.offset);
  }
}

// y[t][r] for Q4_0 rows [row_begin, row_end) and n_tokens tokens (x[t]: that token's kLevels levels)
// with the window kernel when it applies (returns false otherwise). `scratch` holds n_tokens *
// kernels::decode_scratch_bytes(n) bytes, or is null. Two tokens at a time share each row's decoding;
// each token's sums are the same whatever n_tokens.
template <int kLevels>
HWY_INLINE bool MatvecQ4_0Windows(const uint8_t* data, uint64_t row_bytes, int64_t n,
                                  const quant::Q8ActivationRow* const* x, int64_t n_tokens, float* const* y,
                                  int64_t row_begin, int64_t row_end, uint8_t* scratch_bytes) {
  if (n % kQ4_0WindowValues != 0 || scratch_bytes == nullptr) return false;
  // Two tokens at a time: at four, their accumulators no longer fit in registers (measured slower).
  constexpr int kMaxTokens = 2;
  const size_t level_bytes = static_cast<size_t>(n / 32 * 18);
  int8_t* scratch = reinterpret_cast<int8_t*>(scratch_bytes);
  // Each token's activations are laid out once; then tiles of rows small enough to stay in L2 meet
  // every pair of tokens, so the weights come from memory once for all the tokens.
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int level = 0; level < kLevels; ++level) {
      int8_t* l = scratch + static_cast<size_t>(2 * (t * kLevels + level)) * level_bytes;
      LayOutActivationsQ4_0(x[t][level].q, n, l, l + level_bytes);
    }
  }
  const int64_t tile_rows = n_tokens <= kMaxTokens ? row_end - row_begin
                                                   : static_cast<int64_t>((256 * 1024) / row_bytes + 1);
  for (int64_t tile = row_begin; tile < row_end; tile += tile_rows) {
    const int64_t tile_end = row_end - tile < tile_rows ? row_end : tile + tile_rows;
    for (int64_t first_token = 0; first_token < n_tokens; first_token += kMaxTokens) {
      const int count = static_cast<int>(n_tokens - first_token < kMaxTokens ? n_tokens - first_token : kMaxTokens);
      Q4_0WindowToken<kLevels> tokens[kMaxTokens];
      for (int t = 0; t < count; ++t) {
        tokens[t].x = x[first_token + t];
        for (int level = 0; level < kLevels; ++level) {
          const int8_t* l = scratch + static_cast<size_t>(2 * ((first_token + t) * kLevels + level)) * level_bytes;
          tokens[t].low[level] = l;
          tokens[t].high[level] = l + level_bytes;
        }
      }
      float out[kMaxTokens];
      for (int64_t r = tile; r < tile_end; ++r) {
        const uint8_t* row = data + static_cast<uint64_t>(r) * row_bytes;
        if (count == 2) X512RowDotQ4_0Windows<kLevels, 2>(row, n, tokens, out);
        else X512RowDotQ4_0Windows<kLevels, 1>(row, n, tokens, out);
        for (int t = 0; t < count; ++t) y[first_token + t][r] = out[t];
      }
    }
  }
  return true;
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();
#endif  // BORA_OPS_X86_VNNI

#endif  // BORA_OPS_Q4_0_WINDOWS_INL_H_ toggle
// ---- end bora/ops/q4_0_windows-inl.h -----------------------------------------------------------------

BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

// Calls visit(Family()) with the family of a block-quantized type; returns false for the float
// types, which have no blocks (float_weights-inl.h). Kernels switch once, outside their row loops, so
// each loop is specialized for one block format.
template <class Visit>
HWY_INLINE bool VisitBlockFamily(WeightType type, const Visit& visit) {
  switch (type) {
    case WeightType::kQ8_0: visit(Q8_0Family()); return true;
    case WeightType::kQ4_0: visit(Q4_0Family()); return true;
    case WeightType::kQ4_K: visit(Q4_KFamily()); return true;
    case WeightType::kQ5_K: visit(Q5_KFamily()); return true;
    case WeightType::kQ6_K: visit(Q6_KFamily()); return true;
    case WeightType::kF32:
    case WeightType::kF16:
    case WeightType::kBF16: return false;
  }
  return false;
}

// ---- f32 activations (the exact path) ----------------------------------------------------------------

template <class Family>
HWY_INLINE void DecodeBlockRow(const uint8_t* src, float* dst, int64_t n) {
  HWY_ALIGN float block_values[Family::kValues];
  const int64_t blocks = n / Family::kValues;
  for (int64_t b = 0; b < blocks; ++b) {
    Family::DecodeF32(src + b * Family::kBytes, block_values);
    std::memcpy(dst + b * Family::kValues, block_values, sizeof(block_values));
  }
}

// One row of a block-quantized matrix dotted with x: each block is decoded into an L1-resident
// scratch array and immediately consumed, so the weights are read exactly once.
template <class Family>
HWY_INLINE float BlockRowDot(const uint8_t* row, const float* x, int64_t n) {
  const BlockF32 df;
  const size_t lanes = hn::Lanes(df);
  HWY_ALIGN float block_values[Family::kValues];
  auto sum0 = hn::Zero(df), sum1 = hn::Zero(df);
  const int64_t blocks = n / Family::kValues;
  for (int64_t b = 0; b < blocks; ++b) {
    Family::DecodeF32(row + b * Family::kBytes, block_values);
    const float* xb = x + b * Family::kValues;
    size_t i = 0;
    for (; i + 2 * lanes <= static_cast<size_t>(Family::kValues); i += 2 * lanes) {
      sum0 = hn::MulAdd(hn::Load(df, block_values + i), hn::LoadU(df, xb + i), sum0);
      sum1 = hn::MulAdd(hn::Load(df, block_values + i + lanes), hn::LoadU(df, xb + i + lanes), sum1);
    }
    for (; i < static_cast<size_t>(Family::kValues); i += lanes) {
      sum0 = hn::MulAdd(hn::Load(df, block_values + i), hn::LoadU(df, xb + i), sum0);
    }
  }
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(sum0, sum1)));
}

// SIMD dequantization of one row (n a whole number of blocks).
inline void DequantizeRowKernel(WeightType type, const uint8_t* src, float* dst, int64_t n) {
  if (VisitBlockFamily(type, [&](auto family) { DecodeBlockRow<decltype(family)>(src, dst, n); })) return;
  switch (type) {
    case WeightType::kF32: CopyF32Row(src, dst, n); return;
    case WeightType::kF16: DecodeHalfRow(src, dst, n, false); return;
    case WeightType::kBF16: DecodeHalfRow(src, dst, n, true); return;
    default: return;
  }
}

inline float RowDotKernel(WeightType type, const uint8_t* row, const float* x, int64_t n) {
  float result = 0.0f;
  if (VisitBlockFamily(type, [&](auto family) { result = BlockRowDot<decltype(family)>(row, x, n); })) return result;
  switch (type) {
    case WeightType::kF32: return F32RowDot(row, x, n);
    case WeightType::kF16: return HalfRowDot(row, x, n, false);
    case WeightType::kBF16: return HalfRowDot(row, x, n, true);
    default: return 0.0f;
  }
}

inline void MatvecKernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                         const float* x, float* y, int64_t row_begin, int64_t row_end) {
  auto rows = [&](const auto& row_dot) {
    for (int64_t r = row_begin; r < row_end; ++r) y[r] = row_dot(data + static_cast<uint64_t>(r) * row_bytes);
  };
  if (VisitBlockFamily(type, [&](auto family) {
        rows([&](const uint8_t* row) { return BlockRowDot<decltype(family)>(row, x, n); });
      })) {
    return;
  }
  switch (type) {
    case WeightType::kF32: rows([&](const uint8_t* row) { return F32RowDot(row, x, n); }); return;
    case WeightType::kF16: rows([&](const uint8_t* row) { return HalfRowDot(row, x, n, false); }); return;
    case WeightType::kBF16: rows([&](const uint8_t* row) { return HalfRowDot(row, x, n, true); }); return;
    default: return;
  }
}

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

// ---- int8 activations (the fast path) ---------------------------------------------------------------

template <class Family, int T>
HWY_INLINE void MatvecQ8Rows(const uint8_t* data, uint64_t row_bytes, int64_t n, const quant::Q8ActivationRow* x,
                             float* const* y, int64_t row_begin, int64_t row_end) {
#if BORA_OPS_X86_VNNI
  // One token: the one-level 512-bit kernel beats every family's DotQ8<1>.
  if (T == 1) {
    for (int64_t r = row_begin; r < row_end; ++r)
      y[0][r] = Family::template DotLevels<1>(data + static_cast<uint64_t>(r) * row_bytes, n, x);
    return;
  }
#endif
  float out[T];
  for (int64_t r = row_begin; r < row_end; ++r) {
    Family::template DotQ8<T>(data + static_cast<uint64_t>(r) * row_bytes, n, x, out);
    for (int t = 0; t < T; ++t) y[t][r] = out[t];
  }
}

// Quantized weight types only (implementation.hpp sends float weights to the f32 kernels).
// `scratch`: kernels::decode_scratch_bytes(n) bytes for kernels that lay the activations out anew, or null.
inline void MatvecQ8Kernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                           const uint8_t* xq, float* y, int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  const quant::Q8ActivationRow x = quant::q8_activation_view(xq, n);
#if BORA_OPS_X86_VNNI
  const quant::Q8ActivationRow* levels = &x;
  if (type == WeightType::kQ4_0 && MatvecQ4_0Windows<1>(data, row_bytes, n, &levels, 1, &y, row_begin, row_end, scratch))
    return;
#else
  (void)scratch;
#endif
  VisitBlockFamily(type, [&](auto family) {
    MatvecQ8Rows<decltype(family), 1>(data, row_bytes, n, &x, &y, row_begin, row_end);
  });
}

// y[r] = dot(row r, hi) + dot(row r, lo) for activations quantized in two levels: one pass decodes
// each weight block once for both levels, so near-exact activations cost compute but no extra
// memory traffic.
inline void MatvecQ8TwoLevelKernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                                   const uint8_t* xq_hi, const uint8_t* xq_lo, float* y, int64_t row_begin,
                                   int64_t row_end, uint8_t* scratch) {
  const quant::Q8ActivationRow x[2] = {quant::q8_activation_view(xq_hi, n), quant::q8_activation_view(xq_lo, n)};
#if BORA_OPS_X86_VNNI
  const quant::Q8ActivationRow* levels = x;
  if (type == WeightType::kQ4_0 && MatvecQ4_0Windows<2>(data, row_bytes, n, &levels, 1, &y, row_begin, row_end, scratch))
    return;
#else
  (void)scratch;
#endif
  VisitBlockFamily(type, [&](auto family) {
    using Family = decltype(family);
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = data + static_cast<uint64_t>(r) * row_bytes;
#if BORA_OPS_X86_VNNI
      y[r] = Family::template DotLevels<2>(row, n, x);
#else
      float out[2];  // the two levels as two tokens: each computed as alone, the row decoded once
      Family::template DotQ8<2>(row, n, x, out);
      y[r] = out[0] + out[1];
#endif
    }
  });
}

#if BORA_OPS_X86_INT8
// Calls visit(levels, first, count) for the tokens kChunk at a time: levels[t] holds token first + t's
// activation levels (its second only where xq_lo is not null).
template <int64_t kChunk, class Visit>
HWY_INLINE void ForTokenChunks(const uint8_t* const* xq_hi, const uint8_t* const* xq_lo, int64_t n_tokens, int64_t n,
                               const Visit& visit) {
  quant::Q8ActivationRow views[kChunk][2];
  const quant::Q8ActivationRow* levels[kChunk];
  for (int64_t first = 0; first < n_tokens; first += kChunk) {
    const int64_t count = n_tokens - first < kChunk ? n_tokens - first : kChunk;
    for (int64_t t = 0; t < count; ++t) {
      views[t][0] = quant::q8_activation_view(xq_hi[first + t], n);
      if (xq_lo != nullptr) views[t][1] = quant::q8_activation_view(xq_lo[first + t], n);
      levels[t] = views[t];
    }
    visit(levels, first, count);
  }
}
#endif

// Several tokens, each computed exactly as MatvecQ8Kernel (xq_lo null) or MatvecQ8TwoLevelKernel
// computes it alone, so a decoding sequence's products do not depend on its batch mates; where a
// kernel takes several tokens at once (the Q4_0 window kernel), each weight row is decoded once for
// them. `scratch`: n_tokens * kernels::decode_scratch_bytes(n) bytes, or null.
inline void MatvecQ8TokensKernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                                 const uint8_t* const* xq_hi, const uint8_t* const* xq_lo, int64_t n_tokens,
                                 float* const* y, int64_t row_begin, int64_t row_end, uint8_t* scratch) {
#if BORA_OPS_X86_VNNI
  if (type == WeightType::kQ4_0 && n % kQ4_0WindowValues == 0 && scratch != nullptr) {
    ForTokenChunks<16>(xq_hi, xq_lo, n_tokens, n, [&](const quant::Q8ActivationRow* const* levels, int64_t first,
                                                      int64_t count) {
      if (xq_lo != nullptr) {
        MatvecQ4_0Windows<2>(data, row_bytes, n, levels, count, y + first, row_begin, row_end, scratch);
      } else {
        MatvecQ4_0Windows<1>(data, row_bytes, n, levels, count, y + first, row_begin, row_end, scratch);
      }
    });
    return;
  }
#endif
  // Elsewhere one token at a time over small groups of rows, which stay in L1 for the next token.
  constexpr int64_t kRows = 16;
  for (int64_t r = row_begin; r < row_end; r += kRows) {
    const int64_t end = row_end - r < kRows ? row_end : r + kRows;
    for (int64_t t = 0; t < n_tokens; ++t) {
      if (xq_lo != nullptr) {
        MatvecQ8TwoLevelKernel(type, data, row_bytes, n, xq_hi[t], xq_lo[t], y[t], r, end, scratch);
      } else {
        MatvecQ8Kernel(type, data, row_bytes, n, xq_hi[t], y[t], r, end, scratch);
      }
    }
  }
}

// Whether this target's kernels want matrices of `type` in row tiles (the loader asks once per matrix):
// Q4_0, Q8_0, Q4_K, Q5_K and Q6_K with 512-bit VNNI or AVX2.
inline bool PrefersRowTilesKernel(WeightType type) {
#if BORA_OPS_X86_INT8 && (BORA_OPS_X86_VNNI || !defined(HWY_DISABLE_F16C))
  return quant::tile_format(type).values > 0;
#else
  (void)type;
  return false;
#endif
}

// Whether MatvecQ8TiledKernel needs its scratch: the 512-bit kernels lay the tokens out there, the
// 256-bit ones read them in place.
inline bool TiledKernelLaysOutTokensKernel() { return BORA_OPS_X86_VNNI != 0; }

// Products of a matrix in row tiles (quant/row_tiles.hpp), for every token count: decoding one
// sequence (xq_lo for the two-level activations, or null), several at once, or a prompt. With 512-bit
// VNNI the tile kernel computes each (row, token) as the prefill kernel does, so results do not
// depend on how many tokens come together. (On other targets, met when the CPU is not the one the
// model was loaded for, implementation.hpp untiles the rows for their usual kernels.) `scratch`:
// kernels::tiled_scratch_bytes(n, min(n_tokens, kTiledTokens), levels) bytes, where VNNI lays the
// tokens out (AVX2 reads them in place).
inline void MatvecQ8TiledKernel(WeightType type, const uint8_t* data, int64_t n, const uint8_t* const* xq_hi,
                                const uint8_t* const* xq_lo, int64_t n_tokens, float* const* y, int64_t row_begin,
                                int64_t row_end, uint8_t* scratch) {
#if BORA_OPS_X86_INT8 && (BORA_OPS_X86_VNNI || !defined(HWY_DISABLE_F16C))
  // TiledProducts (row_tiles-inl.h) is this target's sweep: 16 rows a vector with VNNI, 8 with AVX2.
  auto products = [&](auto tiles) {
    using Tiles = decltype(tiles);
    ForTokenChunks<kernels::kTiledTokens>(xq_hi, xq_lo, n_tokens, n, [&](const quant::Q8ActivationRow* const* levels,
                                                                         int64_t first, int64_t count) {
      if (xq_lo != nullptr) TiledProducts<Tiles, 2>(data, n, levels, count, y + first, row_begin, row_end, scratch);
      else TiledProducts<Tiles, 1>(data, n, levels, count, y + first, row_begin, row_end, scratch);
    });
  };
#if BORA_OPS_X86_VNNI
  switch (type) {
    case WeightType::kQ8_0: return products(X512LegacyTiles<true>());
    case WeightType::kQ4_0: return products(X512LegacyTiles<false>());
    case WeightType::kQ4_K: return products(X512KQuantTiles<false>());
    case WeightType::kQ5_K: return products(X512KQuantTiles<true>());
    case WeightType::kQ6_K: return products(X512Q6_KTiles());
    default: return;  // never tiled (quant::row_tiles_apply)
  }
#else
  switch (type) {
    case WeightType::kQ8_0: return products(X256LegacyTiles<true>());
    case WeightType::kQ4_0: return products(X256LegacyTiles<false>());
    case WeightType::kQ4_K: return products(X256KQuantTiles<false>());
    case WeightType::kQ5_K: return products(X256KQuantTiles<true>());
    case WeightType::kQ6_K: return products(X256Q6_KTiles());
    default: return;  // never tiled here (PrefersRowTilesKernel)
  }
#endif
#else
  // Never called: implementation.hpp untiles the rows for the kernels of other targets.
  (void)type, (void)data, (void)n, (void)xq_hi, (void)xq_lo, (void)n_tokens, (void)y, (void)row_begin, (void)row_end,
      (void)scratch;
#endif
}

#if BORA_OPS_X86_VNNI
// Prefill with VNNI. kPrefillTokens tokens are packed transposed: for every block of 32 values and
// every group of four values, 32 tokens x 4 bytes (two 512-bit registers of 16 tokens). Four weight
// bytes broadcast to all lanes then meet 16 tokens in one vpdpbusd and each block's integer sum
// lands one token per lane, so no horizontal additions are needed; R weight rows share every
// activation load. Weights come decoded by their family's DecodeUnsigned (DecodedWeights, x86-inl.h).
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

// Legacy blocks (Q8_0, Q4_0) store u = w + c with the same c in every block, so the offset is c times
// the block's scale, which then factors out: acc += scale * (sum * dx - c * d_sum), two multiply-adds
// per vector where VnniScale needs a multiply and two.
template <int R>
HWY_INLINE void VnniScaleCommonOffset(const DecodedWeights* w, float offset, const __m512i (&sums)[R][2],
                                      const float* d, const float* d_sum, __m512 (&acc)[R][2]) {
  const __m512 c = _mm512_set1_ps(offset);
  const __m512 dx0 = _mm512_loadu_ps(d), dx1 = _mm512_loadu_ps(d + 16);
  const __m512 cs0 = _mm512_mul_ps(c, _mm512_loadu_ps(d_sum)), cs1 = _mm512_mul_ps(c, _mm512_loadu_ps(d_sum + 16));
  HWY_UNROLL(4)
  for (int r = 0; r < R; ++r) {
    const __m512 s = _mm512_set1_ps(w[r].scale[0]);
    acc[r][0] = _mm512_fmadd_ps(s, _mm512_fmsub_ps(_mm512_cvtepi32_ps(sums[r][0]), dx0, cs0), acc[r][0]);
    acc[r][1] = _mm512_fmadd_ps(s, _mm512_fmsub_ps(_mm512_cvtepi32_ps(sums[r][1]), dx1, cs1), acc[r][1]);
  }
}

// R consecutive rows starting at `row` against the packed tokens; out[r][t].
template <class Family, int R>
HWY_INLINE void VnniRows(const uint8_t* data, uint64_t row_bytes, int64_t row, int64_t n, const PackedTokens& p,
                         float (*out)[kPrefillTokens]) {
  __m512 acc[R][2];
  HWY_UNROLL(4)
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  DecodedWeights w[R];
  constexpr int kBlocksPerSuper = Family::kValues / 32;
  const int64_t supers = n / Family::kValues;
  for (int64_t s = 0; s < supers; ++s) {
    HWY_UNROLL(4)
    for (int r = 0; r < R; ++r) {
      Family::DecodeUnsigned(data + static_cast<uint64_t>(row + r) * row_bytes + static_cast<uint64_t>(s * Family::kBytes), &w[r]);
    }
    // The decoded bytes are read back from L1 by broadcast loads, which cost no shuffle: left to
    // itself the compiler extracts each group of four from registers with two shuffles, which
    // compete with vpdpbusd for the vector ports.
    asm volatile("" : : : "memory");
    for (int j = 0; j < kBlocksPerSuper; ++j) {
      const int64_t b = s * kBlocksPerSuper + j;
      const uint8_t* xb = p.q + b * 8 * 4 * kPrefillTokens;
      const float* d = p.d + b * kPrefillTokens;
      __m512i sums[R][2];
      if constexpr (Family::kSplitHalves) {
        VnniGroupSums<R>(w, 32 * j, xb, 0, 4, sums);
        VnniScale<R>(w, 2 * j, sums, d, p.d_sum_low + b * kPrefillTokens, acc);
        VnniGroupSums<R>(w, 32 * j, xb, 4, 4, sums);
        VnniScale<R>(w, 2 * j + 1, sums, d, p.d_sum_high + b * kPrefillTokens, acc);
      } else if constexpr (Family::kCommonOffset) {
        VnniGroupSums<R>(w, 32 * j, xb, 0, 8, sums);
        VnniScaleCommonOffset<R>(w, Family::CommonOffset(), sums, d, p.d_sum + b * kPrefillTokens, acc);
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

// Rows four at a time in tiles of 16, written out per token as one 64-byte line: storing each row's
// 32 tokens straight into y would touch 32 lines a row apart (y_stride floats) for every four rows.
template <class Family>
HWY_INLINE void VnniMatmul(const uint8_t* data, uint64_t row_bytes, int64_t n, const PackedTokens& p,
                           int64_t count, float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  constexpr int64_t kRows = 4, kTileRows = 16;
  float out[kTileRows][kPrefillTokens];
  for (int64_t tile = row_begin; tile < row_end; tile += kTileRows) {
    const int64_t tile_rows = (row_end - tile < kTileRows) ? row_end - tile : kTileRows;
    for (int64_t k = 0; k < tile_rows; k += kRows) {
      const int64_t rows = (tile_rows - k < kRows) ? tile_rows - k : kRows;
      switch (rows) {
        case 4: VnniRows<Family, 4>(data, row_bytes, tile + k, n, p, out + k); break;
        case 3: VnniRows<Family, 3>(data, row_bytes, tile + k, n, p, out + k); break;
        case 2: VnniRows<Family, 2>(data, row_bytes, tile + k, n, p, out + k); break;
        default: VnniRows<Family, 1>(data, row_bytes, tile + k, n, p, out + k); break;
      }
    }
    for (int64_t t = 0; t < count; ++t) {
      float* yt = y + t * y_stride + tile;
      for (int64_t k = 0; k < tile_rows; ++k) yt[k] = out[k][t];
    }
  }
}

#endif  // BORA_OPS_X86_VNNI

// Rows in tiles that stay in L2 while groups of four tokens stream past them; inside a tile each
// weight block is decoded once per four tokens. With VNNI, kPrefillTokens tokens at a time are
// packed into `scratch` (kernels::prefill_scratch_bytes(n) bytes) and swept over all rows.
inline void MatmulQ8Kernel(WeightType type, const uint8_t* data, uint64_t row_bytes, int64_t n,
                           const uint8_t* xq, int64_t n_tokens, float* y, int64_t y_stride,
                           int64_t row_begin, int64_t row_end, uint8_t* scratch) {
  const int64_t xq_stride = quant::q8_activation_row_bytes(n);
#if BORA_OPS_X86_VNNI
  if (scratch != nullptr && n_tokens >= kernels::kPrefillMinTokens) {
    VisitBlockFamily(type, [&](auto family) {
      for (int64_t t = 0; t < n_tokens; t += kPrefillTokens) {
        const int64_t count = (n_tokens - t < kPrefillTokens) ? n_tokens - t : kPrefillTokens;
        const PackedTokens packed = PackTokens(xq + t * xq_stride, xq_stride, count, n, scratch);
        VnniMatmul<decltype(family)>(data, row_bytes, n, packed, count, y + t * y_stride, y_stride, row_begin,
                                     row_end);
      }
    });
    return;
  }
#else
  (void)scratch;
#endif
  VisitBlockFamily(type, [&](auto family) {
    using Family = decltype(family);
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
        MatvecQ8Rows<Family, kTokens>(data, row_bytes, n, x, rows_out, tile, tile_end);
      }
      for (; t < n_tokens; ++t) {
        const quant::Q8ActivationRow x = quant::q8_activation_view(xq + t * xq_stride, n);
        float* row_out = y + t * y_stride;
        MatvecQ8Rows<Family, 1>(data, row_bytes, n, &x, &row_out, tile, tile_end);
      }
    }
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_MATMUL_INL_H_ toggle
// ---- end bora/ops/matmul-inl.h -----------------------------------------------------------------------
// ---- begin bora/ops/peak-inl.h -----------------------------------------------------------------------
// Why this file exists: how fast can this core multiply int8 by int8 at all? Prompt processing and
// batched decoding are bounded by that rate rather than by memory, so examples/bench measures it
// (ops::int8_dot_peak) to say how much of it they reach. The kernel issues the same instruction the
// int8 weight kernels are built on for the target (vpdpbusd with VNNI, maddubs + madd on AVX2, SDOT on
// SVE, widening int16 multiply-adds elsewhere, NEON included, whose kernels use SDOT where the core has
// it), from registers only. Compiled once per target (toggle guard).

#include <cstdint>

#if defined(BORA_OPS_PEAK_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_PEAK_INL_H_
#undef BORA_OPS_PEAK_INL_H_
#else
#define BORA_OPS_PEAK_INL_H_
#endif

#include <hwy/highway.h>


BORA_OPS_BEFORE_NAMESPACE();
namespace bora {
namespace ops {
namespace HWY_NAMESPACE {

#if !BORA_OPS_X86_INT8 && !BORA_OPS_SVE && HWY_TARGET != HWY_SCALAR
// One widening multiply-add on a chain whose own sum is its next multiplicand, so the compiler can
// neither hoist the product out of the loop nor share it between chains.
template <class D32, class V16>
HWY_INLINE void PeakStep(D32 d32, V16 b, hn::Vec<D32>& sum0, hn::Vec<D32>& sum1) {
  const hn::Repartition<int16_t, D32> d16;
  sum0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, sum0), b, sum0, sum1);
}
#endif

// Runs `rounds` rounds of int8 products on independent accumulator chains (enough of them to cover
// the instruction's latency) and returns the multiply-accumulates done. *checksum receives the sum
// of the accumulators, so the work cannot be optimised away; `seed` keeps the inputs unknown at
// compile time. Integer sums wrap, which the instructions define.
inline int64_t Int8DotPeakKernel(int64_t rounds, int32_t seed, uint32_t* checksum) {
#if BORA_OPS_X86_VNNI
  // vpdpbusd accumulates in place, so loop-invariant inputs cannot be hoisted: 64 products each.
  // Twelve named chains cover its latency at two per cycle. Not an array: GCC 12 kept an array of
  // sixteen in memory and copied every chain twice per round, which measured half the rate (Zen 5:
  // ~220 instead of ~430 G/s per core, below what the Q4_0 tile kernel itself reaches).
  const __m512i u = _mm512_set1_epi8(static_cast<char>(seed | 1));
  const __m512i s = _mm512_set1_epi8(static_cast<char>(3 - seed));
  __m512i a0 = _mm512_set1_epi32(seed), a1 = _mm512_set1_epi32(seed + 1), a2 = _mm512_set1_epi32(seed + 2);
  __m512i a3 = _mm512_set1_epi32(seed + 3), a4 = _mm512_set1_epi32(seed + 4), a5 = _mm512_set1_epi32(seed + 5);
  __m512i a6 = _mm512_set1_epi32(seed + 6), a7 = _mm512_set1_epi32(seed + 7), a8 = _mm512_set1_epi32(seed + 8);
  __m512i a9 = _mm512_set1_epi32(seed + 9), a10 = _mm512_set1_epi32(seed + 10), a11 = _mm512_set1_epi32(seed + 11);
  for (int64_t r = 0; r < rounds; ++r) {
    a0 = _mm512_dpbusd_epi32(a0, u, s); a1 = _mm512_dpbusd_epi32(a1, u, s); a2 = _mm512_dpbusd_epi32(a2, u, s);
    a3 = _mm512_dpbusd_epi32(a3, u, s); a4 = _mm512_dpbusd_epi32(a4, u, s); a5 = _mm512_dpbusd_epi32(a5, u, s);
    a6 = _mm512_dpbusd_epi32(a6, u, s); a7 = _mm512_dpbusd_epi32(a7, u, s); a8 = _mm512_dpbusd_epi32(a8, u, s);
    a9 = _mm512_dpbusd_epi32(a9, u, s); a10 = _mm512_dpbusd_epi32(a10, u, s); a11 = _mm512_dpbusd_epi32(a11, u, s);
  }
  const __m512i first = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                                         _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7)));
  const __m512i total = _mm512_add_epi32(first, _mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)));
  HWY_ALIGN uint32_t lanes[16];
  _mm512_store_si512(lanes, total);
  uint32_t sum = 0;
  for (uint32_t lane : lanes) sum += lane;
  *checksum = sum;
  return rounds * 12 * 64;
#elif BORA_OPS_X86_INT8
  // maddubs + madd + add per 32 products (X86DotU8S8), each chain's sum being its next unsigned
  // input. Ten chains nearly cover the ~11-cycle chain and, with the constants and temporaries, fit
  // the 16 registers (twelve spill, which is slower).
  constexpr int kChains = 10;
  __m256i acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_epi32(seed + i);
  const __m256i s = _mm256_set1_epi8(static_cast<char>(seed | 1));
  for (int64_t r = 0; r < rounds; ++r) {
    HWY_UNROLL(10)
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_add_epi32(acc[i], X86DotU8S8(acc[i], s));
  }
  __m256i total = acc[0];
  for (int i = 1; i < kChains; ++i) total = _mm256_add_epi32(total, acc[i]);
  HWY_ALIGN uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), total);
  uint32_t sum = 0;
  for (uint32_t lane : lanes) sum += lane;
  *checksum = sum;
  return rounds * kChains * 32;
#elif BORA_OPS_SVE
  // SDOT, as the SVE DotI8 does: four products per 32-bit lane, twelve named chains (scalable
  // vectors cannot live in arrays), each chain's sum reinterpreted as its next int8 input.
  const svint8_t b = svdup_n_s8(static_cast<int8_t>(seed | 1));
  svint32_t s0 = svdup_n_s32(seed), s1 = svdup_n_s32(seed + 1), s2 = svdup_n_s32(seed + 2), s3 = svdup_n_s32(seed + 3);
  svint32_t s4 = svdup_n_s32(seed + 4), s5 = svdup_n_s32(seed + 5), s6 = svdup_n_s32(seed + 6);
  svint32_t s7 = svdup_n_s32(seed + 7), s8 = svdup_n_s32(seed + 8), s9 = svdup_n_s32(seed + 9);
  svint32_t s10 = svdup_n_s32(seed + 10), s11 = svdup_n_s32(seed + 11);
  auto step = [&b](svint32_t sum) { return svdot_s32(sum, svreinterpret_s8_s32(sum), b); };
  for (int64_t r = 0; r < rounds; ++r) {
    s0 = step(s0); s1 = step(s1); s2 = step(s2); s3 = step(s3); s4 = step(s4); s5 = step(s5);
    s6 = step(s6); s7 = step(s7); s8 = step(s8); s9 = step(s9); s10 = step(s10); s11 = step(s11);
  }
  const svint32_t total = svadd_s32_x(svptrue_b32(), svadd_s32_x(svptrue_b32(), svadd_s32_x(svptrue_b32(), s0, s1),
                                                                 svadd_s32_x(svptrue_b32(), s2, s3)),
                                      svadd_s32_x(svptrue_b32(), svadd_s32_x(svptrue_b32(), s4, s5),
                                                  svadd_s32_x(svptrue_b32(), s6, s7)));
  const svint32_t rest = svadd_s32_x(svptrue_b32(), svadd_s32_x(svptrue_b32(), s8, s9), svadd_s32_x(svptrue_b32(), s10, s11));
  *checksum = static_cast<uint32_t>(svaddv_s32(svptrue_b32(), svadd_s32_x(svptrue_b32(), total, rest)));
  return rounds * 12 * static_cast<int64_t>(svcntb());
#elif HWY_TARGET == HWY_SCALAR
  // No vectors (and no int16 lanes the size of an int32 one to feed back): one product per chain step.
  constexpr int kChains = 12;
  uint32_t acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = static_cast<uint32_t>(seed + i);
  const int32_t b = seed | 1;
  for (int64_t r = 0; r < rounds; ++r) {
    HWY_UNROLL(12)
    for (int i = 0; i < kChains; ++i) acc[i] += static_cast<uint32_t>(static_cast<int16_t>(acc[i]) * b);
  }
  uint32_t sum = 0;
  for (uint32_t value : acc) sum += value;
  *checksum = sum;
  return rounds * kChains;
#else
  // int8 values widened to int16, as the portable DotI8 does: one product per int16 lane. Twelve
  // named chains, as scalable vectors cannot live in arrays.
  const hn::ScalableTag<int32_t> d32;
  const hn::Repartition<int16_t, decltype(d32)> d16;
  const hn::Repartition<uint32_t, decltype(d32)> du32;
  const auto b = hn::Set(d16, static_cast<int16_t>(seed | 1));
  auto s0 = hn::Set(d32, seed), s1 = hn::Set(d32, seed + 1), s2 = hn::Set(d32, seed + 2), s3 = hn::Set(d32, seed + 3);
  auto s4 = hn::Set(d32, seed + 4), s5 = hn::Set(d32, seed + 5), s6 = hn::Set(d32, seed + 6), s7 = hn::Set(d32, seed + 7);
  auto s8 = hn::Set(d32, seed + 8), s9 = hn::Set(d32, seed + 9), s10 = hn::Set(d32, seed + 10), s11 = hn::Set(d32, seed + 11);
  auto t0 = hn::Zero(d32), t1 = hn::Zero(d32), t2 = hn::Zero(d32), t3 = hn::Zero(d32), t4 = hn::Zero(d32), t5 = hn::Zero(d32);
  auto t6 = hn::Zero(d32), t7 = hn::Zero(d32), t8 = hn::Zero(d32), t9 = hn::Zero(d32), t10 = hn::Zero(d32), t11 = hn::Zero(d32);
  for (int64_t r = 0; r < rounds; ++r) {
    PeakStep(d32, b, s0, t0); PeakStep(d32, b, s1, t1); PeakStep(d32, b, s2, t2); PeakStep(d32, b, s3, t3);
    PeakStep(d32, b, s4, t4); PeakStep(d32, b, s5, t5); PeakStep(d32, b, s6, t6); PeakStep(d32, b, s7, t7);
    PeakStep(d32, b, s8, t8); PeakStep(d32, b, s9, t9); PeakStep(d32, b, s10, t10); PeakStep(d32, b, s11, t11);
  }
  auto total = hn::Add(hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)), hn::Add(hn::Add(s4, s5), hn::Add(s6, s7)));
  total = hn::Add(total, hn::Add(hn::Add(s8, s9), hn::Add(s10, s11)));
  auto rest = hn::Add(hn::Add(hn::Add(t0, t1), hn::Add(t2, t3)), hn::Add(hn::Add(t4, t5), hn::Add(t6, t7)));
  total = hn::Add(total, hn::Add(rest, hn::Add(hn::Add(t8, t9), hn::Add(t10, t11))));
  *checksum = hn::GetLane(hn::SumOfLanes(du32, hn::BitCast(du32, total)));
  return rounds * 12 * static_cast<int64_t>(hn::Lanes(d16));
#endif
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();

#endif  // BORA_OPS_PEAK_INL_H_ toggle
// ---- end bora/ops/peak-inl.h -------------------------------------------------------------------------

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
  kOutOfMemory,      // a buffer the request needs could not be allocated
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
    case ErrorCode::kOutOfMemory: return "out of memory";
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

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>

// ---- begin bora/base/system.hpp ----------------------------------------------------------------------
// Why this file exists: the few operating-system facts bora needs (file mapping, page and memory
// sizes) come from different headers on POSIX and Windows; they are included here once, with the
// macros that keep <windows.h> from breaking standard C++ (min/max).
#ifndef BORA_BASE_SYSTEM_HPP
#define BORA_BASE_SYSTEM_HPP

#include <cstdint>

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

// The machine's physical memory in bytes (0 when the system does not say). A buffer larger than this
// is refused before it is attempted: overcommitting systems would otherwise hand out address space
// that fails only when touched, and sanitizers abort on such sizes.
inline uint64_t physical_memory_bytes() {
#if defined(_WIN32)
  MEMORYSTATUSEX status;
  status.dwLength = sizeof(status);
  return GlobalMemoryStatusEx(&status) ? static_cast<uint64_t>(status.ullTotalPhys) : 0;
#else
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
#endif
}

}  // namespace bora

#endif  // BORA_BASE_SYSTEM_HPP
// ---- end bora/base/system.hpp ------------------------------------------------------------------------


namespace bora {

namespace detail {

// A file opened for reading, with its size; closed when this goes out of scope, so every error path
// of the two ways to load a file below closes it.
class ReadableFile {
 public:
  ReadableFile() = default;
  ReadableFile(const ReadableFile&) = delete;
  ReadableFile& operator=(const ReadableFile&) = delete;
#if defined(_WIN32)
  ~ReadableFile() {
    if (handle_ != INVALID_HANDLE_VALUE) CloseHandle(handle_);
  }
  Status open(const std::string& path) {
    handle_ = CreateFileA(path.c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL,
                          nullptr);
    if (handle_ == INVALID_HANDLE_VALUE) return make_error(ErrorCode::kIo, "%s: cannot open", path.c_str());
    LARGE_INTEGER size;
    if (!GetFileSizeEx(handle_, &size)) return make_error(ErrorCode::kIo, "%s: cannot read its size", path.c_str());
    size_ = static_cast<uint64_t>(size.QuadPart);
    return Status();
  }
  HANDLE handle() const { return handle_; }
#else
  ~ReadableFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status open(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return make_error(ErrorCode::kIo, "%s: cannot open: %s", path.c_str(), std::strerror(errno));
    struct stat st;
    if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) return make_error(ErrorCode::kIo, "%s: not a regular file", path.c_str());
    size_ = static_cast<uint64_t>(st.st_size);
    return Status();
  }
  int fd() const { return fd_; }
#endif
  uint64_t size() const { return size_; }

 private:
#if defined(_WIN32)
  HANDLE handle_ = INVALID_HANDLE_VALUE;
#else
  int fd_ = -1;
#endif
  uint64_t size_ = 0;
};

}  // namespace detail

// How a model file's bytes reach memory. Mapping is instant and shares the page cache between
// processes; reading into private memory takes a moment at load but, backed by huge pages, it
// streams several times faster on machines where page-cache mappings are slow (VMs with 4 KiB
// nested pages: measured 2-7 GB/s mapped vs 33-37 GB/s read, see README), which decoding feels
// directly. Reading is the default, as llama.cpp's `--no-mmap`.
enum class FileAccess { kRead, kMap };

// Told how many bytes of a file are in memory so far, on the thread that opens it; returns false to
// stop reading (the open then fails with kCancelled). A multi-gigabyte read takes seconds from disk,
// so a loading screen needs to show it and a user needs to be able to cancel it.
struct ReadProgress {
  bool (*callback)(uint64_t bytes_done, uint64_t bytes_total, void* user_data) = nullptr;
  void* user_data = nullptr;
  bool report(uint64_t done, uint64_t total) const { return callback == nullptr || callback(done, total, user_data); }
};

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

  static Expected<MappedFile> open(const std::string& path, FileAccess access = FileAccess::kMap,
                                   const ReadProgress& progress = {}) {
    detail::ReadableFile in;
    BORA_RETURN_IF_ERROR(in.open(path));
    MappedFile file;
    file.path_ = path;
    file.size_ = in.size();
    if (file.size_ == 0) return file;
    BORA_RETURN_IF_ERROR(access == FileAccess::kRead ? file.read_from(in, progress) : file.map_from(in));
    if (!progress.report(file.size_, file.size_)) return file.cancelled(file.size_);
    return file;
  }

  // The whole file in private memory (huge pages where the system offers them), read with two
  // threads so that a warm page cache fills it at memory speed.
  static Expected<MappedFile> read_into_memory(const std::string& path, const ReadProgress& progress = {}) {
    return open(path, FileAccess::kRead, progress);
  }

  const uint8_t* data() const { return data_; }
  // The bytes when they were read into private memory (this object's to rewrite), else null.
  uint8_t* writable_data() { return writable_ ? const_cast<uint8_t*>(data_) : nullptr; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  // Maps the opened file read-only (the system pages it in on demand).
  Status map_from(const detail::ReadableFile& in) {
#if defined(_WIN32)
    HANDLE mapping = CreateFileMappingA(in.handle(), nullptr, PAGE_READONLY, 0, 0, nullptr);
    if (mapping == nullptr) return make_error(ErrorCode::kIo, "%s: cannot map", path_.c_str());
    data_ = static_cast<const uint8_t*>(MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0));
    CloseHandle(mapping);
    if (data_ == nullptr) return make_error(ErrorCode::kIo, "%s: cannot map", path_.c_str());
#else
    void* address = mmap(nullptr, size_, PROT_READ, MAP_SHARED, in.fd(), 0);
    if (address == MAP_FAILED) {
      return make_error(ErrorCode::kIo, "%s: cannot map: %s", path_.c_str(), std::strerror(errno));
    }
    data_ = static_cast<const uint8_t*>(address);
#endif
    return Status();
  }

  // Reads the opened file into private memory, reporting progress and stopping when it says so.
  Status read_from(const detail::ReadableFile& in, const ReadProgress& progress) {
#if defined(_WIN32)
    void* buffer = VirtualAlloc(nullptr, size_, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (buffer == nullptr) {
      return make_error(ErrorCode::kIo, "%s: cannot allocate %llu bytes", path_.c_str(), (unsigned long long)size_);
    }
    data_ = static_cast<const uint8_t*>(buffer);
    owned_ = true;
    writable_ = true;
    if (!progress.report(0, size_)) return cancelled(0);
    uint64_t done = 0;
    while (done < size_) {
      const DWORD want = static_cast<DWORD>(size_ - done < (1u << 30) ? size_ - done : (1u << 30));
      DWORD got = 0;
      if (!ReadFile(in.handle(), static_cast<uint8_t*>(buffer) + done, want, &got, nullptr) || got == 0) {
        return make_error(ErrorCode::kIo, "%s: read failed at byte %llu", path_.c_str(), (unsigned long long)done);
      }
      done += got;
      if (!progress.report(done, size_)) return cancelled(done);
    }
#else
    void* address = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (address == MAP_FAILED) {
      return make_error(ErrorCode::kIo, "%s: cannot allocate %llu bytes: %s", path_.c_str(),
                        (unsigned long long)size_, std::strerror(errno));
    }
#if defined(MADV_HUGEPAGE)
    madvise(address, size_, MADV_HUGEPAGE);
#endif
    data_ = static_cast<const uint8_t*>(address);
    writable_ = true;
    const int fd = in.fd();
    // Two threads each read half in 64 MiB chunks; only this thread calls the progress callback, and
    // the helper stops at its next chunk once the callback has said stop.
    std::atomic<uint64_t> done{0};
    std::atomic<bool> stop{false};
    auto read_range = [&](uint64_t begin, uint64_t end, int* error, bool reports) {
      while (begin < end && !stop.load(std::memory_order_relaxed)) {
        const size_t want = static_cast<size_t>(end - begin < (1u << 26) ? end - begin : (1u << 26));
        const ssize_t got = pread(fd, static_cast<uint8_t*>(address) + begin, want, static_cast<off_t>(begin));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
          *error = got < 0 ? errno : EIO;
          stop.store(true);
          return;
        }
        begin += static_cast<uint64_t>(got);
        const uint64_t so_far = done.fetch_add(static_cast<uint64_t>(got)) + static_cast<uint64_t>(got);
        if (reports && !progress.report(so_far, size_)) stop.store(true);
      }
    };
    if (!progress.report(0, size_)) return cancelled(0);
    int first_error = 0, second_error = 0;
    const uint64_t half = size_ / 2 / 4096 * 4096;
    std::thread helper(read_range, half, size_, &second_error, false);
    read_range(0, half, &first_error, true);
    helper.join();
    if (first_error != 0 || second_error != 0) {
      return make_error(ErrorCode::kIo, "%s: read failed: %s", path_.c_str(),
                        std::strerror(first_error != 0 ? first_error : second_error));
    }
    if (stop.load()) return cancelled(done.load());
#endif
    return Status();
  }

  Error cancelled(uint64_t done) const {
    return make_error(ErrorCode::kCancelled, "%s: loading cancelled after %llu of %llu bytes", path_.c_str(),
                      (unsigned long long)done, (unsigned long long)size_);
  }
  void swap(MappedFile& other) {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(path_, other.path_);
    std::swap(owned_, other.owned_);
    std::swap(writable_, other.writable_);
  }
  void release() {
    if (data_ == nullptr) return;
#if defined(_WIN32)
    if (owned_) VirtualFree(const_cast<uint8_t*>(data_), 0, MEM_RELEASE);
    else UnmapViewOfFile(data_);
#else
    munmap(const_cast<uint8_t*>(data_), size_);
#endif
    data_ = nullptr;
    size_ = 0;
  }

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
  bool owned_ = false;  // Windows: VirtualAlloc'd copy rather than a view
  bool writable_ = false;  // read into private memory allocated writable
};

}  // namespace bora

#endif  // BORA_BASE_MAPPED_FILE_HPP
// ---- end bora/base/mapped_file.hpp -------------------------------------------------------------------
// ---- begin bora/base/page_aligned.hpp ----------------------------------------------------------------
// Why this file exists: the per-context buffers (activations, KV cache) are sized from what callers
// and files ask for, so allocating them must fail with an error, not an exception or an abort; and
// decoding speed must not depend on where malloc puts them. With plain vectors one and the same binary
// decoded Q4_0 7B at 4.1 or 5.4 tokens/s depending on glibc's heap state (after an earlier context freed
// large buffers, later ones moved from their own mappings into the heap, always at the slow speed); with
// every buffer on its own page most runs are fast.
#ifndef BORA_BASE_PAGE_ALIGNED_HPP
#define BORA_BASE_PAGE_ALIGNED_HPP

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>


namespace bora {

// A fixed-size, zero-filled array of trivially copyable values that starts on a 4 KiB page boundary.
// reset() reports failure instead of throwing, so it works the same with exceptions disabled.
template <class T>
class PageBuffer {
  static_assert(std::is_trivially_copyable<T>::value, "PageBuffer holds plain values only");

 public:
  static constexpr std::size_t kPage = 4096;

  PageBuffer() = default;
  PageBuffer(const PageBuffer&) = delete;
  PageBuffer& operator=(const PageBuffer&) = delete;
  PageBuffer(PageBuffer&& other) noexcept { swap(other); }
  PageBuffer& operator=(PageBuffer&& other) noexcept {
    PageBuffer(std::move(other)).swap(*this);
    return *this;
  }
  ~PageBuffer() { release(); }

  // Replaces the contents with `count` zeros. False, leaving the buffer empty, when count * sizeof(T)
  // overflows, exceeds the machine's physical memory, or cannot be allocated.
  bool reset(uint64_t count) {
    release();
    if (count == 0) return true;
    if (count > std::numeric_limits<std::size_t>::max() / sizeof(T)) return false;
    const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
    const uint64_t physical = physical_memory_bytes();
    if (physical != 0 && bytes > physical) return false;
    void* memory = ::operator new(bytes, std::align_val_t{kPage}, std::nothrow);
    if (memory == nullptr) return false;
    std::memset(memory, 0, bytes);
    data_ = static_cast<T*>(memory);
    size_ = static_cast<std::size_t>(count);
    return true;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

 private:
  void release() {
    if (data_ != nullptr) ::operator delete(data_, std::align_val_t{kPage});
    data_ = nullptr;
    size_ = 0;
  }
  void swap(PageBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace bora

#endif  // BORA_BASE_PAGE_ALIGNED_HPP
// ---- end bora/base/page_aligned.hpp ------------------------------------------------------------------
// ---- begin bora/base/random.hpp ----------------------------------------------------------------------
// Why this file exists: sampling needs a seeded generator that gives the same sequence on every
// platform and standard library (std::mt19937's distributions do not), and so do the tools that
// write random test weights; this is the one generator they share.
#ifndef BORA_BASE_RANDOM_HPP
#define BORA_BASE_RANDOM_HPP

#include <cstdint>

namespace bora {

// xoshiro256** seeded through splitmix64: small, fast, and the same sequence everywhere.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    for (uint64_t& word : state_) {
      seed += 0x9E3779B97F4A7C15ull;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      word = z ^ (z >> 31);
    }
  }

  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double next_double() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace bora

#endif  // BORA_BASE_RANDOM_HPP
// ---- end bora/base/random.hpp ------------------------------------------------------------------------
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

// A host's own job system (a game engine's workers, say), to run the parallel loops instead of
// bora's threads. run(host, parts, task, job) must call task(job, part) once for every part in
// [0, parts), on any threads, and return when all calls have returned.
struct HostThreads {
  void (*run)(void* host, int parts, void (*task)(void* job, int part), void* job) = nullptr;
  void* host = nullptr;
  int n_threads = 1;  // parts a loop is split into at most
};

class ThreadPool {
 public:
  // `n_threads` counts the calling thread: 1 means "run everything on the caller", no workers.
  explicit ThreadPool(int n_threads = 1) {
    if (n_threads < 1) n_threads = 1;
    n_threads_ = n_threads;
    for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  }
  // Parallel loops go to the host's job system; the pool starts no threads of its own.
  explicit ThreadPool(const HostThreads& host) : host_(host) {
    n_threads_ = host.run != nullptr && host.n_threads > 1 ? host.n_threads : 1;
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
    if (host_.run != nullptr) {
      HostJob<Body> job{&body, n, parts};
      host_.run(host_.host, parts, &HostJob<Body>::run_part, &job);
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
  template <class Body>
  struct HostJob {
    const Body* body;
    int64_t n;
    int parts;
    static void run_part(void* self, int part) {
      const HostJob& job = *static_cast<const HostJob*>(self);
      if (part < 0 || part >= job.parts) return;
      (*job.body)(job.n * part / job.parts, job.n * (part + 1) / job.parts, part);
    }
  };

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
  HostThreads host_;
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

#include <algorithm>
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

// ---- begin bora/base/bytes.hpp -----------------------------------------------------------------------
// Why this file exists: every reader (GGUF, safetensors, session files) turns sizes and offsets read
// from untrusted bytes into numbers; the overflow-checked arithmetic and explicit little-endian loads
// (and stores, for the GGUF writer) they all need live here once, below every layer that reads a file.
#ifndef BORA_BASE_BYTES_HPP
#define BORA_BASE_BYTES_HPP

#include <cstdint>
#include <cstring>
#include <limits>

namespace bora {
namespace bytes_detail {

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

// Explicit little-endian loads: GGUF, safetensors and protobuf fixed-width fields are little-endian
// on every host.
inline uint64_t load_le(const uint8_t* p, int n_bytes) {
  uint64_t v = 0;
  for (int i = n_bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint32_t load_le_u32(const uint8_t* p) { return static_cast<uint32_t>(load_le(p, 4)); }
inline uint64_t load_le_u64(const uint8_t* p) { return load_le(p, 8); }
inline float load_le_f32(const uint8_t* p) {
  const uint32_t bits = load_le_u32(p);
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
inline double load_le_f64(const uint8_t* p) {
  const uint64_t bits = load_le_u64(p);
  double value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// The matching store, for the writers (io/gguf_writer.hpp).
inline void store_le(uint8_t* p, uint64_t v, int n_bytes) {
  for (int i = 0; i < n_bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace bytes_detail
}  // namespace bora

#endif  // BORA_BASE_BYTES_HPP
// ---- end bora/base/bytes.hpp -------------------------------------------------------------------------
// ---- begin bora/io/gguf_value.hpp --------------------------------------------------------------------
// Why this file exists: a GGUF metadata value is a typed, little-endian encoding; its type tags and the
// loads that turn raw bytes into numbers are separate from the file reader (io/gguf.hpp) that finds them.
#ifndef BORA_IO_GGUF_VALUE_HPP
#define BORA_IO_GGUF_VALUE_HPP

#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>


namespace bora {

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

inline double load_scalar_as_double(GgufType type, const uint8_t* p) {
  switch (type) {
    case GgufType::kF32: return bytes_detail::load_le_f32(p);
    case GgufType::kF64: return bytes_detail::load_le_f64(p);
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
  uint64_t bits = bytes_detail::load_le(p, static_cast<int>(width));
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

}  // namespace bora

#endif  // BORA_IO_GGUF_VALUE_HPP
// ---- end bora/io/gguf_value.hpp ----------------------------------------------------------------------
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

// Float rows (one value per "block") take the f32 kernels; the others are integer block formats.
inline bool is_float_weight_type(WeightType type) {
  return type == WeightType::kF32 || type == WeightType::kF16 || type == WeightType::kBF16;
}

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
  // Q4_0 / Q8_0 rows regrouped 16 at a time for the VNNI kernels (quant/row_tiles.hpp): row(r) does not
  // apply, the ops functions read either layout.
  bool row_tiles = false;

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

// ggml's names for its type ids, so "unsupported type" errors say which type the file used.
inline const char* ggml_type_name(uint32_t id) {
  static const char* const kNames[] = {
      "F32", "F16", "Q4_0", "Q4_1", "Q4_2(removed)", "Q4_3(removed)", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
      "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
  if (id < sizeof(kNames) / sizeof(kNames[0])) return kNames[id];
  return "unknown";
}

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
                        file_.c_str(), size_, what, quote, static_cast<int>(subject.size()), subject.empty() ? "" : subject.data(), quote,
                        bytes);
    }
    return {};
  }
  Status read_u32(uint32_t* out, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(4, what, subject));
    *out = bytes_detail::load_le_u32(here());
    offset_ += 4;
    return {};
  }
  Status read_u64(uint64_t* out, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(8, what, subject));
    *out = bytes_detail::load_le_u64(here());
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
                        static_cast<int>(subject.size()), subject.empty() ? "" : subject.data(), subject.empty() ? "" : "'");
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
  if (!bytes_detail::checked_mul(count, gguf_scalar_bytes(element_type), &bytes) || bytes > cursor.remaining()) {
    return make_error(ErrorCode::kFormat,
                      "%s: metadata key '%.*s': array of %" PRIu64 " %s values runs past the end of the file "
                      "(%" PRIu64 " bytes left after byte offset %" PRIu64 ")",
                      file.c_str(), key_len, key.data(), count, gguf_type_name(element_type), cursor.remaining(),
                      cursor.offset());
  }
  return cursor.skip(bytes, "array elements of metadata key ", key);
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
  static Expected<GgufFile> open(const std::string& path, FileAccess access = FileAccess::kMap,
                                 const ReadProgress& progress = {}) {
    Expected<MappedFile> mapped = MappedFile::open(path, access, progress);
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
      const uint64_t length = bytes_detail::load_le_u64(p);
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

  // A tensor whose bytes and view may be rewritten (the loader regroups rows, quant/row_tiles.hpp):
  // only when the file was read into private memory; null otherwise.
  TensorView* writable_tensor(std::string_view name) {
    auto it = tensor_index_.find(std::string(name));
    if (it == tensor_index_.end() || !mapping_ || mapping_->writable_data() == nullptr) return nullptr;
    return &tensors_[it->second];
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

    // Reserve at most a modest amount up front, and never more than the file's own size: a count
    // is only trusted as far as entries parse (an entry in memory is larger than on disk).
    const uint64_t kMaxReserve = 4096;
    auto reservable = [&](uint64_t count, size_t entry_bytes) {
      return static_cast<size_t>(std::min<uint64_t>(std::min<uint64_t>(count, kMaxReserve), file_size_ / entry_bytes));
    };
    keys_.reserve(reservable(n_kv, sizeof(std::string)));
    values_.reserve(reservable(n_kv, sizeof(GgufValue)));
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
    tensors_.reserve(reservable(n_tensors, sizeof(TensorView)));
    std::vector<uint64_t> offsets;
    offsets.reserve(reservable(n_tensors, sizeof(uint64_t)));
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
    if (!bytes_detail::checked_elements(view.ne, view.n_dims, &elements)) {
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
    if (!bytes_detail::checked_mul(row_bytes, rows, &view.bytes)) {
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
    if (!bytes_detail::checked_add(data_offset_, offset, &begin) || !bytes_detail::checked_add(begin, view.bytes, &end) ||
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
// ---- begin bora/io/gguf_writer.hpp -------------------------------------------------------------------
// Why this file exists: a GGUF library writes GGUF as well as reading it. Programs build models in
// memory (benchmark models with random weights, models reassembled from other files) and the reader's
// tests build small, exactly known and deliberately broken files; this is the one writer they share.
#ifndef BORA_IO_GGUF_WRITER_HPP
#define BORA_IO_GGUF_WRITER_HPP

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>


namespace bora {

// Appends little-endian values, GGUF strings (u64 length + bytes) and padding to a byte vector.
class GgufByteWriter {
 public:
  void u8(uint8_t v) { bytes_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void f32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    u32(bits);
  }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    u64(bits);
  }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  void pad_to(size_t alignment, uint8_t fill = 0) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(fill);
  }
  size_t size() const { return bytes_.size(); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  void put(uint64_t v, int n_bytes) {
    uint8_t encoded[8] = {};
    bytes_detail::store_le(encoded, v, n_bytes);
    raw(encoded, static_cast<size_t>(n_bytes));
  }
  std::vector<uint8_t> bytes_;
};

// Builds a GGUF file (version 3 unless `version` says 2, whose layout is the same): metadata in the
// order added, then tensor infos, then the data section.
class GgufWriter {
 public:
  uint32_t version = 3;
  // The data section's alignment. A value other than GGUF's default of 32 must also be declared with
  // add_u32("general.alignment", ...): the writer lays out with this number and does not add the key.
  uint32_t alignment = 32;

  // ---- metadata ----------------------------------------------------------------------------------
  void add_u8(const std::string& key, uint8_t v) { add_scalar(key, GgufType::kU8, v, 1); }
  void add_i8(const std::string& key, int8_t v) { add_scalar(key, GgufType::kI8, static_cast<uint8_t>(v), 1); }
  void add_u16(const std::string& key, uint16_t v) { add_scalar(key, GgufType::kU16, v, 2); }
  void add_i16(const std::string& key, int16_t v) { add_scalar(key, GgufType::kI16, static_cast<uint16_t>(v), 2); }
  void add_u32(const std::string& key, uint32_t v) { add_scalar(key, GgufType::kU32, v, 4); }
  void add_i32(const std::string& key, int32_t v) { add_scalar(key, GgufType::kI32, static_cast<uint32_t>(v), 4); }
  void add_u64(const std::string& key, uint64_t v) { add_scalar(key, GgufType::kU64, v, 8); }
  void add_i64(const std::string& key, int64_t v) { add_scalar(key, GgufType::kI64, static_cast<uint64_t>(v), 8); }
  void add_bool(const std::string& key, bool v) { add_scalar(key, GgufType::kBool, v ? 1 : 0, 1); }
  void add_f32(const std::string& key, float v) {
    GgufByteWriter w;
    w.f32(v);
    add_raw(key, static_cast<uint32_t>(GgufType::kF32), w.bytes());
  }
  void add_f64(const std::string& key, double v) {
    GgufByteWriter w;
    w.f64(v);
    add_raw(key, static_cast<uint32_t>(GgufType::kF64), w.bytes());
  }
  void add_string(const std::string& key, const std::string& v) {
    GgufByteWriter w;
    w.str(v);
    add_raw(key, static_cast<uint32_t>(GgufType::kString), w.bytes());
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& values) {
    GgufByteWriter w;
    array_header(w, GgufType::kString, values.size());
    for (const std::string& s : values) w.str(s);
    add_raw(key, static_cast<uint32_t>(GgufType::kArray), w.bytes());
  }
  void add_f32_array(const std::string& key, const std::vector<float>& values) {
    GgufByteWriter w;
    array_header(w, GgufType::kF32, values.size());
    for (float f : values) w.f32(f);
    add_raw(key, static_cast<uint32_t>(GgufType::kArray), w.bytes());
  }
  void add_i32_array(const std::string& key, const std::vector<int32_t>& values) {
    GgufByteWriter w;
    array_header(w, GgufType::kI32, values.size());
    for (int32_t v : values) w.u32(static_cast<uint32_t>(v));
    add_raw(key, static_cast<uint32_t>(GgufType::kArray), w.bytes());
  }
  // A value given as its type id and encoded bytes: values the helpers above do not cover (nested
  // arrays, values copied from another file), and for readers' tests, invalid ones.
  void add_raw(const std::string& key, uint32_t type_id, const std::vector<uint8_t>& encoded_value) {
    GgufByteWriter w;
    w.str(key);
    w.u32(type_id);
    w.raw(encoded_value.data(), encoded_value.size());
    metadata_.insert(metadata_.end(), w.bytes().begin(), w.bytes().end());
    ++kv_count_;
  }
  size_t kv_count() const { return kv_count_; }

  // ---- tensors -----------------------------------------------------------------------------------
  static constexpr int64_t kNextSlot = -1;

  // The data bytes of a tensor of shape `ne` (innermost first) and ggml type id `ggml_type`; false
  // for unknown types, rows that are not whole blocks, or sizes that do not fit 64 bits.
  static bool tensor_bytes(const std::vector<uint64_t>& ne, uint32_t ggml_type, uint64_t* out) {
    WeightType type;
    uint64_t total = 0;
    if (ne.empty() || !weight_type_from_ggml(ggml_type, &type) || !weight_row_bytes(type, ne[0], &total)) return false;
    for (size_t i = 1; i < ne.size(); ++i) {
      if (!bytes_detail::checked_mul(total, ne[i], &total)) return false;
    }
    *out = total;
    return true;
  }

  // Adds a tensor info whose data is `data_bytes` at `offset` in the data section. kNextSlot places it
  // at the first multiple of `alignment` after every tensor added before. A given offset is written as
  // is and takes no room of its own (tensors sharing bytes; for readers' tests, offsets a reader must
  // reject), though tensors placed after it start past its end.
  void add_tensor(const std::string& name, const std::vector<uint64_t>& ne, uint32_t ggml_type, uint64_t data_bytes,
                  int64_t offset = kNextSlot) {
    tensors_.push_back(Tensor{name, ne, ggml_type, offset, data_bytes});
  }
  size_t tensor_count() const { return tensors_.size(); }

  // ---- the file ----------------------------------------------------------------------------------
  struct Layout {
    std::vector<uint8_t> head;       // header, metadata, tensor infos and padding: the data section follows
    std::vector<uint64_t> offsets;   // of each tensor's data in the data section, in the order added
    uint64_t data_bytes = 0;         // end of the last tensor placed at kNextSlot
    size_t metadata_end = 0;         // where the tensor infos begin
    size_t infos_end = 0;            // where the padding before the data section begins
  };

  // Everything but the data, and where the data goes: a program filling gigabytes of tensor data can
  // allocate the file itself and write each tensor in place.
  Layout layout() const {
    Layout out;
    GgufByteWriter w;
    w.raw("GGUF", 4);
    w.u32(version);
    w.u64(tensors_.size());
    w.u64(kv_count_);
    w.raw(metadata_.data(), metadata_.size());
    out.metadata_end = w.size();
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      const uint64_t offset = t.offset == kNextSlot ? next : static_cast<uint64_t>(t.offset);
      out.offsets.push_back(offset);
      const uint64_t end = offset + t.data_bytes;
      if (end > next) next = align_up(end);
      if (t.offset == kNextSlot && end > out.data_bytes) out.data_bytes = end;
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      w.str(t.name);
      w.u32(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t e : t.ne) w.u64(e);
      w.u32(t.ggml_type);
      w.u64(out.offsets[i]);
    }
    out.infos_end = w.size();
    w.pad_to(alignment);
    out.head = std::move(w.bytes());
    return out;
  }

  // The whole file, the data section zeroed and padded to `alignment`; `fill(index, out, data_bytes)`,
  // when given, writes the data of each tensor placed at kNextSlot.
  std::vector<uint8_t> build(const std::function<void(size_t, uint8_t*, uint64_t)>& fill = {}) const {
    Layout plan = layout();
    std::vector<uint8_t> file = std::move(plan.head);
    const size_t data_start = file.size();
    file.resize(data_start + static_cast<size_t>(align_up(plan.data_bytes)), 0);
    if (fill) {
      for (size_t i = 0; i < tensors_.size(); ++i) {
        if (tensors_[i].offset == kNextSlot) fill(i, file.data() + data_start + plan.offsets[i], tensors_[i].data_bytes);
      }
    }
    return file;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t ggml_type;
    int64_t offset;
    uint64_t data_bytes;
  };
  uint64_t align_up(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
  static void array_header(GgufByteWriter& w, GgufType element_type, size_t count) {
    w.u32(static_cast<uint32_t>(element_type));
    w.u64(count);
  }
  void add_scalar(const std::string& key, GgufType type, uint64_t v, int n_bytes) {
    uint8_t encoded[8] = {};
    bytes_detail::store_le(encoded, v, n_bytes);
    add_raw(key, static_cast<uint32_t>(type), std::vector<uint8_t>(encoded, encoded + n_bytes));
  }

  std::vector<uint8_t> metadata_;
  size_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace bora

#endif  // BORA_IO_GGUF_WRITER_HPP
// ---- end bora/io/gguf_writer.hpp ---------------------------------------------------------------------
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

// ---- begin bora/io/model_config.hpp ------------------------------------------------------------------
// Why this file exists: the sizes of a model (layers, widths, heads, window, experts) are runtime
// values read from the file; this is the one struct every format's reader fills in.
#ifndef BORA_IO_MODEL_CONFIG_HPP
#define BORA_IO_MODEL_CONFIG_HPP

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

#endif  // BORA_IO_MODEL_CONFIG_HPP
// ---- end bora/io/model_config.hpp --------------------------------------------------------------------

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

#include <algorithm>
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
  static Expected<SafetensorsFile> open(const std::string& path, FileAccess access = FileAccess::kMap,
                                        const ReadProgress& progress = {}) {
    Expected<MappedFile> mapped = MappedFile::open(path, access, progress);
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
    const uint64_t header_bytes = bytes_detail::load_le_u64(data_);
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
    return check_data_fully_indexed(data_bytes);
  }

  // The format requires the tensors to tile the data section exactly: no byte claimed twice (two tensors
  // aliasing one another) and none left over, as the reference library enforces.
  Status check_data_fully_indexed(uint64_t data_bytes) const {
    std::vector<const TensorView*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const TensorView& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorView* a, const TensorView* b) {
      return a->data != b->data ? a->data < b->data : a->bytes < b->bytes;
    });
    const uint8_t* section = data_ + data_offset_;
    uint64_t covered = 0;
    for (const TensorView* t : by_offset) {
      const uint64_t begin = static_cast<uint64_t>(t->data - section);
      if (begin != covered) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%s' starts at data offset %" PRIu64 ", but the tensors before "
                          "it end at %" PRIu64 " (%s)", name_.c_str(), t->name.c_str(), begin, covered,
                          begin < covered ? "overlapping data" : "a hole in the data section");
      }
      covered = begin + t->bytes;
    }
    if (covered != data_bytes) {
      return make_error(ErrorCode::kFormat, "%s: the tensors cover %" PRIu64 " of the %" PRIu64 "-byte data section "
                        "(the format allows no unindexed bytes)", name_.c_str(), covered, data_bytes);
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
    if (!bytes_detail::checked_elements(view.ne, view.n_dims, &elements) ||
        !bytes_detail::checked_mul(elements, weight_type_info(view.type).block_bytes, &bytes)) {
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
  // `access`: read the weights into private memory (default, fastest to compute with) or map them.
  // `progress` hears the bytes read so far over all of the model's weight files together.
  static Expected<ModelFiles> open(const std::string& path, FileAccess access = FileAccess::kRead,
                                   const ReadProgress& progress = {}) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
      return make_error(ErrorCode::kIo, "%s: no such file or folder", path.c_str());
    }
    if (fs::is_directory(status)) return open_folder(path, access, progress);
    const std::string file_name = fs::path(path).filename().string();
    if (file_name == "config.json" || file_name == "params.json") {
      return open_folder(fs::path(path).parent_path().string(), access, progress);
    }
    if (model_files_detail::ends_with(file_name, ".safetensors")) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: a .safetensors file has no model configuration; open the folder that holds it with "
                        "config.json or params.json", path.c_str());
    }
    return open_gguf(path, access, progress);
  }

  ModelFormat format() const { return format_; }
  const ModelConfig& config() const { return config_; }
  const std::string& path() const { return path_; }

  const TensorView* find_tensor(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : it->second;
  }

  // A GGUF tensor the loader may rewrite in place (GgufFile::writable_tensor), or null.
  TensorView* writable_tensor(std::string_view name) { return gguf_ ? gguf_->writable_tensor(name) : nullptr; }

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

  // A GGUF image already in memory (synthetic benchmark models, assets embedded in a program).
  // The bytes are kept alive by the returned object; tensor views point into them.
  static Expected<ModelFiles> from_gguf_bytes(std::shared_ptr<const uint8_t> bytes, uint64_t size,
                                              const std::string& name) {
    if (!bytes) return make_error(ErrorCode::kInvalidArgument, "%s: no bytes", name.c_str());
    Expected<GgufFile> gguf = GgufFile::parse(bytes.get(), size, name);
    if (!gguf) return gguf.error();
    Expected<ModelFiles> model = from_gguf(std::move(gguf.value()), name);
    if (model) model->owned_bytes_ = std::move(bytes);
    return model;
  }

 private:
  ModelFiles() = default;

  static Expected<ModelFiles> open_gguf(const std::string& path, FileAccess access, const ReadProgress& progress) {
    Expected<GgufFile> gguf = GgufFile::open(path, access, progress);
    if (!gguf) return gguf.error();
    return from_gguf(std::move(gguf.value()), path);
  }

  static Expected<ModelFiles> from_gguf(GgufFile gguf, const std::string& path) {
    ModelFiles model;
    model.format_ = ModelFormat::kGguf;
    model.path_ = path;
    model.gguf_ = std::make_unique<GgufFile>(std::move(gguf));
    Expected<ModelConfig> config = config_from_gguf(*model.gguf_);
    if (!config) return config.error();
    model.config_ = std::move(config.value());
    for (const TensorView& t : model.gguf_->tensors()) model.index_.emplace(t.name, &t);
    return model;
  }

  static Expected<ModelFiles> open_folder(const std::string& folder, FileAccess access, const ReadProgress& progress) {
    using model_files_detail::is_regular_file;
    using model_files_detail::join_path;
    const std::string hf_config = join_path(folder, "config.json");
    const std::string hf_index = join_path(folder, "model.safetensors.index.json");
    const std::string hf_single = join_path(folder, "model.safetensors");
    const std::string params = join_path(folder, "params.json");
    const bool has_hf_weights = is_regular_file(hf_index) || is_regular_file(hf_single);
    if (is_regular_file(hf_config) && has_hf_weights) return open_hugging_face(folder, access, progress);
    if (is_regular_file(params)) return open_consolidated(folder, access, progress);
    if (is_regular_file(hf_config)) {
      return make_error(ErrorCode::kMissing, "%s: has config.json but neither model.safetensors nor "
                        "model.safetensors.index.json (PyTorch .bin checkpoints are not supported)", folder.c_str());
    }
    return make_error(ErrorCode::kMissing, "%s: not a model folder (no config.json or params.json)", folder.c_str());
  }

  static Expected<ModelFiles> open_hugging_face(const std::string& folder, FileAccess access,
                                               const ReadProgress& progress) {
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
      BORA_RETURN_IF_ERROR(model.add_shards({join_path(folder, "model.safetensors")}, access, progress));
      BORA_RETURN_IF_ERROR(model.build_index());
      return model;
    }
    // Sharded: the index maps each tensor to its shard; each shard is opened once.
    std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard file
    std::vector<std::string> shard_files;
    BORA_RETURN_IF_ERROR(read_weight_map(index_path, &weight_map, &shard_files));
    std::vector<std::string> shard_paths;
    for (const std::string& shard : shard_files) shard_paths.push_back(join_path(folder, shard));
    BORA_RETURN_IF_ERROR(model.add_shards(shard_paths, access, progress));
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

  static Expected<ModelFiles> open_consolidated(const std::string& folder, FileAccess access,
                                                const ReadProgress& progress) {
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
    std::vector<std::string> shard_paths;
    for (const std::string& name : shard_names) shard_paths.push_back(join_path(folder, name));
    BORA_RETURN_IF_ERROR(model.add_shards(shard_paths, access, progress));
    BORA_RETURN_IF_ERROR(model.build_index());
    return model;
  }

  // Opens every shard; progress counts bytes over all of them, so a caller sees one total.
  Status add_shards(const std::vector<std::string>& paths, FileAccess access, const ReadProgress& progress) {
    struct Shifted {
      const ReadProgress* whole;
      uint64_t before, total;
    } shifted{&progress, 0, 0};
    for (const std::string& path : paths) {
      std::error_code ec;
      const uintmax_t size = std::filesystem::file_size(path, ec);
      if (!ec) shifted.total += static_cast<uint64_t>(size);
    }
    ReadProgress per_file;
    if (progress.callback != nullptr) {
      per_file.user_data = &shifted;
      per_file.callback = [](uint64_t done, uint64_t file_total, void* user_data) {
        const Shifted* s = static_cast<const Shifted*>(user_data);
        const uint64_t so_far = s->before + done;
        return s->whole->report(so_far, std::max(s->total, s->before + file_total));
      };
    }
    for (const std::string& path : paths) {
      Expected<SafetensorsFile> shard = SafetensorsFile::open(path, access, per_file);
      if (!shard) return shard.error();
      shifted.before += shard->file_size();
      shards_.push_back(std::move(shard.value()));
    }
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
  std::shared_ptr<const uint8_t> owned_bytes_;  // from_gguf_bytes() only
};

}  // namespace bora

#endif  // BORA_IO_MODEL_FILES_HPP
// ---- end bora/io/model_files.hpp ---------------------------------------------------------------------
// ---- begin bora/io/ollama.hpp ------------------------------------------------------------------------
// Why this file exists: people already have models pulled with Ollama; `ollama:NAME[:TAG]` finds
// the GGUF blob in Ollama's store (manifest -> model layer digest -> blob) so bora can load it as is.
#ifndef BORA_IO_OLLAMA_HPP
#define BORA_IO_OLLAMA_HPP

#include <simdjson.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>


namespace bora {

namespace detail {
// Name parts become path components: allow only what Ollama allows, never "." or "..".
inline bool is_safe_ollama_component(const std::string& part) {
  if (part.empty() || part == "." || part == ".." || part.size() > 200) return false;
  for (char ch : part) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
                    ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}
}  // namespace detail

// The directory of Ollama's store: $OLLAMA_MODELS, else ~/.ollama/models.
inline std::string ollama_models_directory() {
  if (const char* dir = std::getenv("OLLAMA_MODELS")) {
    if (*dir) return dir;
  }
#if defined(_WIN32)
  const char* home = std::getenv("USERPROFILE");
#else
  const char* home = std::getenv("HOME");
#endif
  return std::string(home ? home : ".") + "/.ollama/models";
}

// "mistral", "mistral:7b", "user/model:tag", "host/namespace/model:tag" -> path of the GGUF blob.
inline Expected<std::string> resolve_ollama_model(const std::string& name, const std::string& store = ollama_models_directory()) {
  std::string model = name, tag = "latest";
  const size_t slash = name.rfind('/');
  const size_t colon = name.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    model = name.substr(0, colon);
    tag = name.substr(colon + 1);
  }
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t end = model.find('/', begin);
    parts.push_back(model.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  if (parts.size() == 1) parts.insert(parts.begin(), "library");
  if (parts.size() == 2) parts.insert(parts.begin(), "registry.ollama.ai");
  parts.push_back(tag);
  if (parts.size() != 4) return make_error(ErrorCode::kInvalidArgument, "ollama:%s: expected NAME[:TAG] or NAMESPACE/NAME[:TAG]", name.c_str());
  std::string manifest_path = store + "/manifests";
  for (const std::string& part : parts) {
    if (!detail::is_safe_ollama_component(part))
      return make_error(ErrorCode::kInvalidArgument, "ollama:%s: '%s' is not a valid model name part", name.c_str(), part.c_str());
    manifest_path += "/" + part;
  }
  auto manifest = MappedFile::open(manifest_path);
  if (!manifest) {
    return make_error(ErrorCode::kIo, "ollama:%s: no manifest at %s (is the model pulled, and OLLAMA_MODELS right?)",
                      name.c_str(), manifest_path.c_str());
  }
  if (manifest->size() > (1u << 24)) return make_error(ErrorCode::kFormat, "%s: manifest too large", manifest_path.c_str());
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string json(reinterpret_cast<const char*>(manifest->data()), manifest->size());
  if (parser.parse(json).get(root)) return make_error(ErrorCode::kFormat, "%s: manifest is not valid JSON", manifest_path.c_str());
  simdjson::dom::array layers;
  if (root["layers"].get_array().get(layers))
    return make_error(ErrorCode::kFormat, "%s: manifest has no \"layers\" array", manifest_path.c_str());
  for (simdjson::dom::element layer : layers) {
    std::string_view media_type, digest;
    if (layer["mediaType"].get_string().get(media_type) || media_type != "application/vnd.ollama.image.model") continue;
    if (layer["digest"].get_string().get(digest))
      return make_error(ErrorCode::kFormat, "%s: model layer has no \"digest\"", manifest_path.c_str());
    // "sha256:<64 hex>"; blobs are stored as sha256-<hex> (older stores: sha256:<hex>).
    bool valid = digest.size() == 71 && digest.substr(0, 7) == "sha256:";
    for (size_t i = 7; valid && i < digest.size(); ++i) {
      const char ch = digest[i];
      valid = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
    }
    if (!valid) return make_error(ErrorCode::kFormat, "%s: bad model digest '%.80s'", manifest_path.c_str(), std::string(digest).c_str());
    const std::string hex(digest.substr(7));
    for (const char* separator : {"-", ":"}) {
      const std::string blob = store + "/blobs/sha256" + separator + hex;
      if (std::FILE* probe = std::fopen(blob.c_str(), "rb")) {
        std::fclose(probe);
        return blob;
      }
    }
    return make_error(ErrorCode::kIo, "ollama:%s: blob sha256-%s named by the manifest is missing from %s/blobs",
                      name.c_str(), hex.c_str(), store.c_str());
  }
  return make_error(ErrorCode::kFormat, "%s: manifest lists no model layer (application/vnd.ollama.image.model)",
                    manifest_path.c_str());
}

}  // namespace bora

#endif  // BORA_IO_OLLAMA_HPP
// ---- end bora/io/ollama.hpp --------------------------------------------------------------------------
// ---- begin bora/io/sentencepiece_model.hpp -----------------------------------------------------------
// Why this file exists: Mistral ships its tokenizers as SentencePiece tokenizer.model files, which are
// protobuf messages; this small wire-format reader takes the pieces and flags bora needs, without a
// protobuf dependency, and turns hostile bytes into errors rather than crashes.
#ifndef BORA_IO_SENTENCEPIECE_MODEL_HPP
#define BORA_IO_SENTENCEPIECE_MODEL_HPP

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- begin bora/io/vocabulary.hpp --------------------------------------------------------------------
// Why this file exists: a SentencePiece vocabulary reaches bora from two places (a tokenizer.model
// protobuf and the tokenizer.ggml.* keys of a GGUF file); both readers live in io/ and both produce
// this one struct, so the tokenizer (text/) never cares where its pieces came from.
#ifndef BORA_IO_VOCABULARY_HPP
#define BORA_IO_VOCABULARY_HPP

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>


namespace bora {

// Token types, numbered as GGUF's tokenizer.ggml.token_type and SentencePiece's
// ModelProto.SentencePiece.Type (the two agree).
namespace token_type {
constexpr int32_t kNormal = 1;
constexpr int32_t kUnknown = 2;
constexpr int32_t kControl = 3;       // <s>, </s>, [INST]: never produced from text, decoded as ""
constexpr int32_t kUserDefined = 4;   // matched inside raw text as one token ([REFERENCE_DOC_3])
constexpr int32_t kUnused = 5;        // may appear while merging, re-split in the output
constexpr int32_t kByte = 6;          // <0x00>..<0xFF>, the byte fallback
inline bool is_valid(int32_t type) { return type >= kNormal && type <= kByte; }
}  // namespace token_type

struct Vocabulary {
  std::vector<std::string> pieces;  // "▁the", "<0x0A>", "<s>" ... (U+2581 stands for a space)
  std::vector<float> scores;        // BPE merge priority: the merge giving the higher score goes first
  std::vector<int32_t> types;       // token_type::k*

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;

  bool add_bos = true;    // what a caller adds by default (SentencePiece itself never adds it)
  bool add_eos = false;

  // Normalizer flags (SentencePiece NormalizerSpec). Mistral: dummy prefix on, no collapsing.
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;

  // Trainer flags that matter (or are reported) at encode time.
  bool byte_fallback = true;
  bool split_digits = false;  // informational: with BPE it only shaped training; the pieces encode it

  std::string normalizer_name = "identity";
  std::string unk_surface = " \xE2\x81\x87 ";  // what an <unk> decodes to (" ⁇ ")
  std::string source;                          // file the vocabulary was read from, for messages

  size_t size() const { return pieces.size(); }
};

// Checks the invariants the tokenizer relies on: parallel arrays of equal length, valid types,
// special ids inside the vocabulary (or -1), non-empty pieces of sane length, no NaN scores.
inline Status validate_vocabulary(const Vocabulary& vocab) {
  const char* name = vocab.source.empty() ? "vocabulary" : vocab.source.c_str();
  const size_t n = vocab.pieces.size();
  if (n == 0) return make_error(ErrorCode::kFormat, "%s: the vocabulary is empty", name);
  if (n > static_cast<size_t>(INT32_MAX / 2)) return make_error(ErrorCode::kFormat, "%s: vocabulary too large", name);
  if (vocab.scores.size() != n || vocab.types.size() != n) {
    return make_error(ErrorCode::kFormat, "%s: %zu pieces but %zu scores and %zu types", name, n, vocab.scores.size(),
                      vocab.types.size());
  }
  constexpr size_t kMaxPieceBytes = size_t{1} << 16;  // real pieces are a few dozen bytes at most
  size_t total_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    if (vocab.pieces[i].empty()) return make_error(ErrorCode::kFormat, "%s: piece %zu is empty", name, i);
    if (vocab.pieces[i].size() > kMaxPieceBytes) {
      return make_error(ErrorCode::kFormat, "%s: piece %zu is %zu bytes long", name, i, vocab.pieces[i].size());
    }
    total_bytes += vocab.pieces[i].size();
    if (total_bytes > (size_t{1} << 30)) return make_error(ErrorCode::kFormat, "%s: pieces exceed 1 GiB", name);
    if (!token_type::is_valid(vocab.types[i])) {
      return make_error(ErrorCode::kFormat, "%s: piece %zu has unknown type %d", name, i, vocab.types[i]);
    }
    if (std::isnan(vocab.scores[i])) return make_error(ErrorCode::kFormat, "%s: piece %zu has a NaN score", name, i);
  }
  const std::pair<const char*, int32_t> specials[] = {
      {"bos", vocab.bos_id}, {"eos", vocab.eos_id}, {"unk", vocab.unk_id}, {"pad", vocab.pad_id}};
  for (const auto& special : specials) {
    if (special.second < -1 || special.second >= static_cast<int64_t>(n)) {
      return make_error(ErrorCode::kFormat, "%s: %s id %d is outside the vocabulary of %zu", name, special.first,
                        special.second, n);
    }
  }
  return {};
}

namespace vocabulary_detail {

inline Expected<int32_t> optional_token_id(const GgufFile& gguf, const char* key, int32_t absent, size_t n) {
  if (gguf.find(key) == nullptr) return absent;
  Expected<uint64_t> value = gguf.get_uint(key);
  if (!value) return value.error();
  if (*value >= n) {
    return make_error(ErrorCode::kFormat, "%s: %s = %llu is outside the vocabulary of %zu", gguf.name().c_str(), key,
                      static_cast<unsigned long long>(*value), n);
  }
  return static_cast<int32_t>(*value);
}

inline Expected<bool> optional_bool(const GgufFile& gguf, const char* key, bool absent) {
  if (gguf.find(key) == nullptr) return absent;
  return gguf.get_bool(key);
}

}  // namespace vocabulary_detail

// Reads the vocabulary llama.cpp stores in GGUF metadata. Only tokenizer.ggml.model == "llama"
// (SentencePiece BPE, what Mistral and Mixtral use) is accepted.
inline Expected<Vocabulary> vocabulary_from_gguf(const GgufFile& gguf) {
  const char* name = gguf.name().c_str();
  Expected<std::string> model = gguf.get_string("tokenizer.ggml.model");
  if (!model) return model.error();
  if (*model != "llama") {
    return make_error(ErrorCode::kUnsupported,
                      "%s: tokenizer.ggml.model is '%s'; bora reads SentencePiece ('llama') vocabularies only", name,
                      model->c_str());
  }
  Vocabulary vocab;
  vocab.source = gguf.name();
  Expected<std::vector<std::string>> tokens = gguf.get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return tokens.error();
  vocab.pieces = std::move(*tokens);
  const size_t n = vocab.pieces.size();

  if (gguf.find("tokenizer.ggml.scores") != nullptr) {
    Expected<std::vector<float>> scores = gguf.get_f32_array("tokenizer.ggml.scores");
    if (!scores) return scores.error();
    vocab.scores = std::move(*scores);
  } else {
    vocab.scores.assign(n, 0.0f);
  }
  if (gguf.find("tokenizer.ggml.token_type") != nullptr) {
    Expected<std::vector<int32_t>> types = gguf.get_i32_array("tokenizer.ggml.token_type");
    if (!types) return types.error();
    vocab.types = std::move(*types);
    for (int32_t& type : vocab.types) {
      if (type == 0) type = token_type::kNormal;  // llama.cpp's "undefined" type, written by old converters
    }
  } else {
    vocab.types.assign(n, token_type::kNormal);
  }
  if (vocab.scores.size() != n || vocab.types.size() != n) {
    return make_error(ErrorCode::kFormat, "%s: %zu tokens but %zu scores and %zu token types", name, n,
                      vocab.scores.size(), vocab.types.size());
  }

  Expected<int32_t> bos = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.bos_token_id", -1, n);
  if (!bos) return bos.error();
  Expected<int32_t> eos = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.eos_token_id", -1, n);
  if (!eos) return eos.error();
  Expected<int32_t> unk = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.unknown_token_id", -1, n);
  if (!unk) return unk.error();
  Expected<int32_t> pad = vocabulary_detail::optional_token_id(gguf, "tokenizer.ggml.padding_token_id", -1, n);
  if (!pad) return pad.error();
  vocab.bos_id = *bos;
  vocab.eos_id = *eos;
  vocab.unk_id = *unk;
  vocab.pad_id = *pad;
  if (vocab.unk_id < 0) {  // older converters omit the key; SentencePiece files always type <unk>
    for (size_t i = 0; i < n; ++i) {
      if (vocab.types[i] == token_type::kUnknown) {
        vocab.unk_id = static_cast<int32_t>(i);
        break;
      }
    }
  }

  Expected<bool> add_bos = vocabulary_detail::optional_bool(gguf, "tokenizer.ggml.add_bos_token", true);
  if (!add_bos) return add_bos.error();
  Expected<bool> add_eos = vocabulary_detail::optional_bool(gguf, "tokenizer.ggml.add_eos_token", false);
  if (!add_eos) return add_eos.error();
  Expected<bool> add_space = vocabulary_detail::optional_bool(gguf, "tokenizer.ggml.add_space_prefix", true);
  if (!add_space) return add_space.error();
  vocab.add_bos = *add_bos;
  vocab.add_eos = *add_eos;
  vocab.add_dummy_prefix = *add_space;
  vocab.remove_extra_whitespaces = false;
  vocab.escape_whitespaces = true;

  vocab.byte_fallback = false;  // GGUF has no flag: byte pieces present means fallback is on
  for (size_t i = 0; i < n; ++i) {
    if (vocab.types[i] == token_type::kByte) {
      vocab.byte_fallback = true;
      break;
    }
  }
  BORA_RETURN_IF_ERROR(validate_vocabulary(vocab));
  return vocab;
}

}  // namespace bora

#endif  // BORA_IO_VOCABULARY_HPP
// ---- end bora/io/vocabulary.hpp ----------------------------------------------------------------------

namespace bora {

namespace sentencepiece_detail {

// Field numbers from sentencepiece_model.proto (proto2).
namespace model_proto {
constexpr uint32_t kPieces = 1;
constexpr uint32_t kTrainerSpec = 2;
constexpr uint32_t kNormalizerSpec = 3;
constexpr uint32_t kDenormalizerSpec = 5;
}  // namespace model_proto
namespace piece_proto {
constexpr uint32_t kPiece = 1;
constexpr uint32_t kScore = 2;
constexpr uint32_t kType = 3;
}  // namespace piece_proto
namespace trainer_proto {
constexpr uint32_t kModelType = 3;  // 1 UNIGRAM (the default), 2 BPE, 3 WORD, 4 CHAR
constexpr uint32_t kTreatWhitespaceAsSuffix = 24;
constexpr uint32_t kSplitDigits = 25;
constexpr uint32_t kByteFallback = 35;
constexpr uint32_t kUnkSurface = 44;
constexpr uint32_t kUnkPiece = 45;
constexpr uint32_t kBosPiece = 46;
constexpr uint32_t kEosPiece = 47;
constexpr uint32_t kPadPiece = 48;
}  // namespace trainer_proto
namespace normalizer_proto {
constexpr uint32_t kName = 1;
constexpr uint32_t kPrecompiledCharsmap = 2;
constexpr uint32_t kAddDummyPrefix = 3;
constexpr uint32_t kRemoveExtraWhitespaces = 4;
constexpr uint32_t kEscapeWhitespaces = 5;
}  // namespace normalizer_proto

constexpr int kModelTypeBpe = 2;

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// Reads one message's bytes; every read is checked against the end of that message, and errors name
// the offset in the whole file.
class WireReader {
 public:
  WireReader(const uint8_t* begin, const uint8_t* end, const uint8_t* file_start, const std::string* file_name)
      : cursor_(begin), end_(end), file_start_(file_start), file_name_(file_name) {}

  bool at_end() const { return cursor_ >= end_; }

  Status read_varint(uint64_t* value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (cursor_ >= end_) return error("a varint runs past the end of its message");
      const uint8_t byte = *cursor_++;
      result |= static_cast<uint64_t>(byte & 0x7F) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return {};
      }
      if (shift == 63) break;
    }
    return error("a varint is longer than 10 bytes");
  }

  Status read_tag(uint32_t* field, uint32_t* wire_type) {
    uint64_t tag = 0;
    BORA_RETURN_IF_ERROR(read_varint(&tag));
    *wire_type = static_cast<uint32_t>(tag & 7);
    const uint64_t number = tag >> 3;
    if (number == 0 || number > 0x1FFFFFFF) return error("invalid field number");
    *field = static_cast<uint32_t>(number);
    return {};
  }

  Status read_length_delimited(const uint8_t** data, size_t* size) {
    uint64_t length = 0;
    BORA_RETURN_IF_ERROR(read_varint(&length));
    const uint64_t available = static_cast<uint64_t>(end_ - cursor_);
    if (length > available) {
      return error_with_numbers("a field claims %llu bytes but its message has %llu left", length, available);
    }
    *data = cursor_;
    *size = static_cast<size_t>(length);
    cursor_ += length;
    return {};
  }

  Status read_fixed32(uint32_t* value) {
    const uint8_t* bytes = nullptr;
    BORA_RETURN_IF_ERROR(take_fixed32(&bytes));
    *value = bytes_detail::load_le_u32(bytes);
    return {};
  }

  Status read_float(uint32_t wire_type, const char* field_name, float* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kFixed32, field_name));
    const uint8_t* bytes = nullptr;
    BORA_RETURN_IF_ERROR(take_fixed32(&bytes));
    *value = bytes_detail::load_le_f32(bytes);
    return {};
  }

  Status skip(uint32_t wire_type) {
    switch (wire_type) {
      case kVarint: {
        uint64_t ignored = 0;
        return read_varint(&ignored);
      }
      case kFixed64:
        if (end_ - cursor_ < 8) return error("a 64-bit field runs past the end of its message");
        cursor_ += 8;
        return {};
      case kLengthDelimited: {
        const uint8_t* data = nullptr;
        size_t size = 0;
        return read_length_delimited(&data, &size);
      }
      case kFixed32: {
        uint32_t ignored = 0;
        return read_fixed32(&ignored);
      }
      default:
        return error("unsupported wire type (groups or garbage)");
    }
  }

  Status expect(uint32_t wire_type, uint32_t expected, const char* field_name) {
    if (wire_type == expected) return {};
    return error(std::string("field '") + field_name + "' has the wrong wire type");
  }

  Status read_bool(uint32_t wire_type, const char* field_name, bool* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kVarint, field_name));
    uint64_t raw = 0;
    BORA_RETURN_IF_ERROR(read_varint(&raw));
    *value = raw != 0;
    return {};
  }

  Status read_int32(uint32_t wire_type, const char* field_name, int64_t* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kVarint, field_name));
    uint64_t raw = 0;
    BORA_RETURN_IF_ERROR(read_varint(&raw));
    *value = static_cast<int64_t>(raw);  // negative int32 values are sign-extended to 64 bits
    return {};
  }

  Status read_string(uint32_t wire_type, const char* field_name, std::string* value) {
    BORA_RETURN_IF_ERROR(expect(wire_type, kLengthDelimited, field_name));
    const uint8_t* data = nullptr;
    size_t size = 0;
    BORA_RETURN_IF_ERROR(read_length_delimited(&data, &size));
    value->assign(reinterpret_cast<const char*>(data), size);
    return {};
  }

  WireReader sub_reader(const uint8_t* data, size_t size) const {
    return WireReader(data, data + size, file_start_, file_name_);
  }

  Error error(const std::string& what) const {
    return make_error(ErrorCode::kFormat, "%s: SentencePiece model, offset %lld: %s", file_name_->c_str(),
                      static_cast<long long>(cursor_ - file_start_), what.c_str());
  }

 private:
  Status take_fixed32(const uint8_t** bytes) {
    if (end_ - cursor_ < 4) return error("a 32-bit field runs past the end of its message");
    *bytes = cursor_;
    cursor_ += 4;
    return {};
  }

  Error error_with_numbers(const char* fmt, uint64_t a, uint64_t b) const {
    char buffer[160];
    std::snprintf(buffer, sizeof(buffer), fmt, static_cast<unsigned long long>(a), static_cast<unsigned long long>(b));
    return error(buffer);
  }

  const uint8_t* cursor_;
  const uint8_t* end_;
  const uint8_t* file_start_;
  const std::string* file_name_;
};

inline Status parse_piece(WireReader reader, Vocabulary* vocab) {
  std::string piece;
  float score = 0.0f;
  int64_t type = token_type::kNormal;  // proto default
  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    if (field == piece_proto::kPiece) {
      BORA_RETURN_IF_ERROR(reader.read_string(wire, "piece", &piece));
    } else if (field == piece_proto::kScore) {
      BORA_RETURN_IF_ERROR(reader.read_float(wire, "score", &score));
    } else if (field == piece_proto::kType) {
      BORA_RETURN_IF_ERROR(reader.read_int32(wire, "type", &type));
      if (!token_type::is_valid(static_cast<int32_t>(type)) || type != static_cast<int32_t>(type)) {
        return reader.error("piece " + std::to_string(vocab->pieces.size()) + " has unknown type " +
                            std::to_string(type));
      }
    } else {
      BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }
  vocab->pieces.push_back(std::move(piece));
  vocab->scores.push_back(score);
  vocab->types.push_back(static_cast<int32_t>(type));
  return {};
}

struct SpecialPieces {
  std::string unk = "<unk>";
  std::string bos = "<s>";
  std::string eos = "</s>";
  std::string pad = "<pad>";
};

inline Status parse_trainer_spec(WireReader reader, Vocabulary* vocab, SpecialPieces* specials, int64_t* model_type,
                                 bool* whitespace_as_suffix) {
  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    switch (field) {
      case trainer_proto::kModelType:
        BORA_RETURN_IF_ERROR(reader.read_int32(wire, "model_type", model_type));
        break;
      case trainer_proto::kTreatWhitespaceAsSuffix:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "treat_whitespace_as_suffix", whitespace_as_suffix));
        break;
      case trainer_proto::kSplitDigits:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "split_digits", &vocab->split_digits));
        break;
      case trainer_proto::kByteFallback:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "byte_fallback", &vocab->byte_fallback));
        break;
      case trainer_proto::kUnkSurface:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "unk_surface", &vocab->unk_surface));
        break;
      case trainer_proto::kUnkPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "unk_piece", &specials->unk));
        break;
      case trainer_proto::kBosPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "bos_piece", &specials->bos));
        break;
      case trainer_proto::kEosPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "eos_piece", &specials->eos));
        break;
      case trainer_proto::kPadPiece:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "pad_piece", &specials->pad));
        break;
      default:
        BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }
  return {};
}

struct NormalizerSpec {
  std::string name;
  size_t charsmap_bytes = 0;
  bool add_dummy_prefix = true;  // proto2 defaults
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

inline Status parse_normalizer_spec(WireReader reader, NormalizerSpec* spec) {
  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    switch (field) {
      case normalizer_proto::kName:
        BORA_RETURN_IF_ERROR(reader.read_string(wire, "name", &spec->name));
        break;
      case normalizer_proto::kPrecompiledCharsmap: {
        BORA_RETURN_IF_ERROR(reader.expect(wire, kLengthDelimited, "precompiled_charsmap"));
        const uint8_t* data = nullptr;
        BORA_RETURN_IF_ERROR(reader.read_length_delimited(&data, &spec->charsmap_bytes));
        break;
      }
      case normalizer_proto::kAddDummyPrefix:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "add_dummy_prefix", &spec->add_dummy_prefix));
        break;
      case normalizer_proto::kRemoveExtraWhitespaces:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "remove_extra_whitespaces", &spec->remove_extra_whitespaces));
        break;
      case normalizer_proto::kEscapeWhitespaces:
        BORA_RETURN_IF_ERROR(reader.read_bool(wire, "escape_whitespaces", &spec->escape_whitespaces));
        break;
      default:
        BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }
  return {};
}

// SentencePiece finds its special ids by piece string and type, not from the trainer's *_id fields.
inline int32_t find_piece_of_type(const Vocabulary& vocab, const std::string& piece, int32_t type) {
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == type && vocab.pieces[i] == piece) return static_cast<int32_t>(i);
  }
  return -1;
}

}  // namespace sentencepiece_detail

// Parses a serialized sentencepiece.ModelProto. Unknown fields are skipped; what bora cannot honour
// (a Unigram model, a precompiled normalization rule, whitespace-as-suffix) is reported as kUnsupported.
inline Expected<Vocabulary> parse_sentencepiece_model(const uint8_t* data, size_t size, const std::string& name) {
  using namespace sentencepiece_detail;
  if (data == nullptr && size != 0) return make_error(ErrorCode::kInvalidArgument, "%s: null data", name.c_str());
  static const uint8_t kEmpty[1] = {0};
  const uint8_t* begin = data != nullptr ? data : kEmpty;
  WireReader reader(begin, begin + size, begin, &name);

  Vocabulary vocab;
  vocab.source = name;
  vocab.byte_fallback = false;  // proto2 defaults until the trainer spec says otherwise
  vocab.split_digits = false;
  SpecialPieces specials;
  NormalizerSpec normalizer;
  NormalizerSpec denormalizer;
  int64_t model_type = 1;
  bool whitespace_as_suffix = false;
  bool saw_trainer_spec = false;

  while (!reader.at_end()) {
    uint32_t field = 0;
    uint32_t wire = 0;
    BORA_RETURN_IF_ERROR(reader.read_tag(&field, &wire));
    if (field == model_proto::kPieces || field == model_proto::kTrainerSpec || field == model_proto::kNormalizerSpec ||
        field == model_proto::kDenormalizerSpec) {
      BORA_RETURN_IF_ERROR(reader.expect(wire, kLengthDelimited, "ModelProto message field"));
      const uint8_t* message = nullptr;
      size_t message_size = 0;
      BORA_RETURN_IF_ERROR(reader.read_length_delimited(&message, &message_size));
      WireReader sub = reader.sub_reader(message, message_size);
      if (field == model_proto::kPieces) {
        BORA_RETURN_IF_ERROR(parse_piece(sub, &vocab));
      } else if (field == model_proto::kTrainerSpec) {
        saw_trainer_spec = true;
        BORA_RETURN_IF_ERROR(parse_trainer_spec(sub, &vocab, &specials, &model_type, &whitespace_as_suffix));
      } else if (field == model_proto::kNormalizerSpec) {
        BORA_RETURN_IF_ERROR(parse_normalizer_spec(sub, &normalizer));
      } else {
        BORA_RETURN_IF_ERROR(parse_normalizer_spec(sub, &denormalizer));
      }
    } else {
      BORA_RETURN_IF_ERROR(reader.skip(wire));
    }
  }

  if (vocab.pieces.empty()) return make_error(ErrorCode::kFormat, "%s: SentencePiece model has no pieces", name.c_str());
  if (!saw_trainer_spec) {
    return make_error(ErrorCode::kFormat, "%s: SentencePiece model has no trainer_spec", name.c_str());
  }
  if (model_type != kModelTypeBpe) {
    return make_error(ErrorCode::kUnsupported, "%s: SentencePiece model_type %lld; bora implements BPE (2) only",
                      name.c_str(), static_cast<long long>(model_type));
  }
  if (normalizer.charsmap_bytes != 0 || denormalizer.charsmap_bytes != 0) {
    return make_error(ErrorCode::kUnsupported, "%s: normalization rule '%s' (precompiled charsmap) is not supported",
                      name.c_str(), normalizer.name.c_str());
  }
  if (whitespace_as_suffix) {
    return make_error(ErrorCode::kUnsupported, "%s: treat_whitespace_as_suffix is not supported", name.c_str());
  }
  vocab.normalizer_name = normalizer.name.empty() ? "identity" : normalizer.name;
  vocab.add_dummy_prefix = normalizer.add_dummy_prefix;
  vocab.remove_extra_whitespaces = normalizer.remove_extra_whitespaces;
  vocab.escape_whitespaces = normalizer.escape_whitespaces;

  int32_t unknown_count = 0;
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == token_type::kUnknown) {
      if (unknown_count++ == 0) vocab.unk_id = static_cast<int32_t>(i);
    }
    if (vocab.types[i] == token_type::kByte && !vocab.byte_fallback) {
      return make_error(ErrorCode::kFormat, "%s: piece %zu is a byte piece but byte_fallback is off", name.c_str(), i);
    }
  }
  if (unknown_count != 1) {
    return make_error(ErrorCode::kFormat, "%s: SentencePiece model needs exactly one <unk> piece, found %d",
                      name.c_str(), unknown_count);
  }
  vocab.bos_id = find_piece_of_type(vocab, specials.bos, token_type::kControl);
  vocab.eos_id = find_piece_of_type(vocab, specials.eos, token_type::kControl);
  vocab.pad_id = find_piece_of_type(vocab, specials.pad, token_type::kControl);
  vocab.add_bos = vocab.bos_id >= 0;
  vocab.add_eos = false;
  BORA_RETURN_IF_ERROR(validate_vocabulary(vocab));
  return vocab;
}

inline Expected<Vocabulary> load_sentencepiece_model(const std::string& path) {
  Expected<MappedFile> file = MappedFile::open(path);
  if (!file) return file.error();
  return parse_sentencepiece_model(file->data(), static_cast<size_t>(file->size()), path);
}

}  // namespace bora

#endif  // BORA_IO_SENTENCEPIECE_MODEL_HPP
// ---- end bora/io/sentencepiece_model.hpp -------------------------------------------------------------
// ---- begin bora/model/fingerprint.hpp ----------------------------------------------------------------
// Why this file exists: a saved session (tokens + KV cache) is only meaningful with the exact weights
// that computed it. Shapes alone do not tell a Q4_0 file from a Q8_0 one, or a fine-tune from its base,
// so this digest covers the tensor table (names, types, shapes, sizes) and samples of every tensor's bytes.
#ifndef BORA_MODEL_FINGERPRINT_HPP
#define BORA_MODEL_FINGERPRINT_HPP

#include <algorithm>
#include <cstdint>
#include <string>


namespace bora {

namespace fingerprint_detail {

// FNV-1a, 64-bit: stable across platforms and library versions, which std::hash is not.
struct Fnv1a {
  uint64_t state = 0xcbf29ce484222325ull;
  void add(const void* data, uint64_t size) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    for (uint64_t i = 0; i < size; ++i) state = (state ^ p[i]) * 0x100000001b3ull;
  }
  void add_u64(uint64_t value) {
    uint8_t bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
    add(bytes, 8);
  }
};

}  // namespace fingerprint_detail

// Digest of the tensor table and of three 64-byte samples (start, middle, end) of every tensor's data:
// reads a few pages per tensor, so it costs microseconds per file instead of a pass over gigabytes.
inline uint64_t weights_fingerprint(const ModelFiles& files) {
  constexpr uint64_t kSample = 64;
  fingerprint_detail::Fnv1a digest;
  for (const std::string& name : files.tensor_names()) {
    const TensorView* t = files.find_tensor(name);
    if (t == nullptr) continue;
    digest.add(name.data(), name.size());
    digest.add_u64(static_cast<uint64_t>(t->type));
    for (int64_t extent : t->ne) digest.add_u64(static_cast<uint64_t>(extent));
    digest.add_u64(t->bytes);
    if (t->data == nullptr) continue;
    for (uint64_t start : {uint64_t{0}, t->bytes / 2, t->bytes > kSample ? t->bytes - kSample : 0}) {
      digest.add(t->data + start, std::min(kSample, t->bytes - start));
    }
  }
  return digest.state;
}

}  // namespace bora

#endif  // BORA_MODEL_FINGERPRINT_HPP
// ---- end bora/model/fingerprint.hpp ------------------------------------------------------------------
// ---- begin bora/model/load.hpp -----------------------------------------------------------------------
// Why this file exists: opening a model's weights from a path (a file, a folder, or an Ollama name) as
// a chosen composition, or as whichever composition the file implies. The tokenizer that ships with
// the weights is text's business: text/language_model.hpp binds the two.
#ifndef BORA_MODEL_LOAD_HPP
#define BORA_MODEL_LOAD_HPP

#include <memory>
#include <string>
#include <utility>

// ---- begin bora/model/presets.hpp --------------------------------------------------------------------
// Why this file exists: the ready-made compositions users name (bora::Mistral7B, bora::Mixtral8x7B)
// (the compositions of the policies that real Mistral-family checkpoints need).
#ifndef BORA_MODEL_PRESETS_HPP
#define BORA_MODEL_PRESETS_HPP

// ---- begin bora/model/transformer.hpp ----------------------------------------------------------------
// Why this file exists: the model itself. Transformer<Attention, KvCache, FeedForward> composes the
// policies into Mistral's block (RMSNorm -> attention -> residual -> RMSNorm -> FFN -> residual);
// Model is the type-erased face that sessions and tools hold, so they need not be templates.
#ifndef BORA_MODEL_TRANSFORMER_HPP
#define BORA_MODEL_TRANSFORMER_HPP

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- begin bora/model/attention.hpp ------------------------------------------------------------------
// Why this file exists: the attention policy — grouped-query attention over the rolling KV cache,
// with the mask rule (sliding window or plain causal) as a compile-time choice.
#ifndef BORA_MODEL_ATTENTION_HPP
#define BORA_MODEL_ATTENTION_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

// ---- attention ----------------------------------------------------------------------------------
// How a KV cache stores a row of head_dim values (kQ8_0: ggml's blocks of 32 int8 sharing an f16
// scale; head_dim a multiple of 32).
enum class KvElement { kF32, kF16, kQ8_0 };
// The keys (or values) of consecutive positions: the i-th row at data + i * stride bytes.
struct KvRows {
  const void* data = nullptr;
  int64_t stride = 0;
  KvElement type = KvElement::kF32;
};
// Most keys one attention_block call takes.
constexpr int64_t kAttentionBlockKeys = 64;
// The query rows of n_tokens tokens that share one KV head (group rows of head_dim per token), and
// each row's running state: its largest score so far (start at -inf), the sum of its weights (start
// at 0) and its output, not yet divided by that sum (not read while the row is at -inf).
struct AttentionRows {
  const float* q = nullptr;  // token t's row h at q + t * q_stride + h * head_dim
  int64_t q_stride = 0;
  float* out = nullptr;  // token t's row h at out + t * out_stride + h * head_dim
  int64_t out_stride = 0;
  float* row_max = nullptr;  // [n_tokens * group]
  float* row_sum = nullptr;  // [n_tokens * group]
  int64_t n_tokens = 0, group = 0, head_dim = 0;
  float scale = 1.0f;  // scores are q.k * scale
  const int32_t* key_begin = nullptr;  // token t sees keys [key_begin[t], key_end[t]) of the block
  const int32_t* key_end = nullptr;
};
// Folds one block of at most kAttentionBlockKeys keys and their values (stored alike) into every
// row's state with an online softmax, the flash-attention way. A row's result depends only on its
// own query, keys and the block boundaries, never on the other rows. widen_scratch, 2 *
// kAttentionBlockKeys * head_dim floats, lets several tokens widen the block once (may be null).
// A NaN score weighs 0, as a masked key does.
void attention_block(const AttentionRows& rows, const KvRows& keys, const KvRows& values, int64_t n_keys,
                     float* widen_scratch);

// Name of the SIMD target chosen at run time (for logs and benchmarks).
const char* simd_target_name();

// ---- additions by the kernels helper -------------------------------------------------------------

// Bit set of the Highway targets (HWY_AVX2 | HWY_SSE4 | ...) compiled into the implementation
// translation unit (one bit with BORA_STATIC_DISPATCH). Tests intersect it with the CPU's targets
// and force each in turn with hwy::SetSupportedTargetsForTest.
int64_t simd_compiled_targets();

// Multiply-accumulates per second of int8 x int8 into int32 that the calling thread reaches for
// `seconds` (after a warm-up of a quarter of that), with the instruction the int8 weight kernels
// use on this target, from registers only: the ceiling of prompt processing and batched decoding,
// as memory bandwidth is that of decoding one stream. Run it on several threads at once for theirs.
double int8_dot_peak(double seconds);

// ---- fast path: int8 activations (approximate) --------------------------------------------------
// Activations are quantized once per token into blocks of 32 int8 sharing one f32 scale (layout in
// quant/q8_activations.hpp) and reused by every matrix that reads them; weights of type Q8_0, Q4_0,
// Q4_K, Q5_K, Q6_K then use integer dot products. Error: each activation moves by at most half its
// block's step (max|x| / 254), like llama.cpp's Q8_0 / Q8_K activations or better. Float weights
// (F32, F16, BF16) are accepted too and multiply the dequantized activations in f32.
// n must be a multiple of 32; buffers of q8_row_bytes(n) bytes, 4-byte aligned.
int64_t q8_row_bytes(int64_t n);
void quantize_row_q8(const float* x, int64_t n, uint8_t* xq);
// The second level of x, quantized at 1/256 of xq_hi = quantize_row_q8(x)'s scales: what xq_hi
// rounded away (quant::quantize_activation_residual_q8 is the reference, up to one step per value).
void quantize_residual_q8(const float* x, const uint8_t* xq_hi, int64_t n, uint8_t* xq_lo);
// y[r] ~= dot(w.row(r), x) for r in [row_begin, row_end), xq = quantize_row_q8(x).
void matvec_q8(const TensorView& w, const uint8_t* xq, float* y, int64_t row_begin, int64_t row_end);
// y[r] ~= dot(w.row(r), x) where x was quantized in two levels, xq_hi = quantize_row_q8(x) and xq_lo =
// quantize_residual_q8(x, xq_hi): near-exact, and each weight row is read from memory once.
void matvec_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                         int64_t row_begin, int64_t row_end);
// Float weights (F32, F16, BF16) times int8 activations in one or two levels (xq_lo may be null) with
// no scratch memory: the activations are widened a stack-sized chunk at a time. matvec_q8,
// matvec_q8_two_level and matmul_q8 fall back to it when a thread's scratch buffer cannot be
// allocated, so running out of memory never leaves an output unwritten.
void matvec_q8_float_weights_unbuffered(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                                        int64_t row_begin, int64_t row_end);
// Several tokens decoding at once: token t's products, y[t][r], are bit-identical to what matvec_q8
// (xq_lo null) or matvec_q8_two_level gives for it alone, whatever the other tokens, so batching
// decoding sequences changes no result; where the target allows, each weight row is decoded once
// for several tokens.
void matvec_q8_tokens(const TensorView& w, const uint8_t* const* xq_hi, const uint8_t* const* xq_lo, int64_t n_tokens,
                      float* const* y, int64_t row_begin, int64_t row_end);
// Whether this CPU's kernels read matrices of `type` fastest in row tiles (quant/row_tiles.hpp; Q4_0, Q8_0,
// Q4_K and Q6_K with 512-bit VNNI or AVX2): the loader then regroups them
// (TensorView::row_tiles). Every function here reads either layout.
bool prefers_row_tiles(WeightType type);
// Token t's quantized row starts at xq + t * q8_row_bytes(w.row_length()); y as in matmul_f32.
void matmul_q8(const TensorView& w, const uint8_t* xq, int64_t n_tokens, float* y, int64_t y_stride,
               int64_t row_begin, int64_t row_end);
// The same with two-level activations (xq_lo[t] = quantize_residual_q8 of token t, at the same offsets):
// token t's products are bit-identical to matvec_q8_two_level's for it alone. Row-tiled matrices take
// both levels in one sweep of the tiles (their integers added per block) for a chunk of tokens at a time.
void matmul_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t row_begin, int64_t row_end);

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

// What attention sees of one sequence in a batch: a chunk of n tokens at positions first_position..,
// their roped queries and keys and their values; earlier positions are in the sequence's cache.
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
};

// Working memory for attention: per_thread floats for each thread, and partial_floats_per_chunk
// floats for each chunk of the batch (the partial results of a decoding token's key partitions).
struct AttentionScratch {
  float* data = nullptr;
  int64_t per_thread = 0;
  int max_threads = 0;
  float* partials = nullptr;
  int64_t partial_floats_per_chunk = 0;
};

template <class Mask>
struct GroupedQueryAttention {
  static_assert(std::is_same<Mask, SlidingWindow>::value || std::is_same<Mask, CausalAttention>::value,
                "GroupedQueryAttention<Mask>: Mask must be bora::SlidingWindow or bora::CausalAttention");
  using mask = Mask;

  // A prompt chunk's tokens go through attention this many at a time: each block of keys is read
  // once for all their query rows.
  static constexpr int64_t kTileTokens = 16;
  // A decoding token's keys are split at multiples of this many positions, so that the threads share
  // one long context's keys; the partitions are fixed by position, never by the thread count.
  static constexpr int64_t kPartitionKeys = 512;

  static int64_t scratch_floats_per_thread(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
    return 2 * ops::kAttentionBlockKeys * head_dim + 2 * kTileTokens * (n_heads / n_kv_heads);
  }
  static int64_t partial_floats_per_chunk(int64_t n_heads, int64_t head_dim, int64_t max_keys) {
    return n_heads * (max_keys / kPartitionKeys + 2) * (head_dim + 2);
  }

  // Work items: (kv head, tile of kTileTokens tokens) of a prompt chunk, (kv head, partition of
  // keys) of a decoding token; the kv head's keys and values are read once for all the query heads
  // that share it. Items of every chunk of the batch share one parallel loop, and each is computed
  // the same way whatever else is in the batch and whatever thread runs it. caches[i] belongs to
  // chunks[i]; scratch.partials has room for `count` chunks.
  template <class Cache>
  static void forward(const AttentionChunk* chunks, const Cache* const* caches, size_t count,
                      const AttentionScratch& scratch, ThreadPool& pool) {
    int64_t total = 0;
    for (size_t i = 0; i < count; ++i) total += items_of(chunks[i]);
    pool.parallel_for(total, [&](int64_t begin, int64_t end, int thread) {
      size_t chunk_index = 0;
      int64_t chunk_start = 0;  // first item of chunks[chunk_index]
      for (int64_t item = begin; item < end; ++item) {
        while (item >= chunk_start + items_of(chunks[chunk_index])) chunk_start += items_of(chunks[chunk_index++]);
        const AttentionChunk& c = chunks[chunk_index];
        const int64_t local = item - chunk_start;
        float* thread_scratch = scratch.data + thread * scratch.per_thread;
        if (c.n_tokens == 1) {
          decode_partition(c, *caches[chunk_index], local % c.n_kv_heads, local / c.n_kv_heads,
                           scratch.partials + static_cast<int64_t>(chunk_index) * scratch.partial_floats_per_chunk);
        } else {
          prompt_tile(c, *caches[chunk_index], local % c.n_kv_heads, local / c.n_kv_heads, thread_scratch);
        }
      }
    }, scratch.max_threads);
    // Each decoding token's partitions are combined in position order.
    int64_t decoding = 0;
    for (size_t i = 0; i < count; ++i) decoding += chunks[i].n_tokens == 1 ? chunks[i].n_heads : 0;
    if (decoding == 0) return;
    pool.parallel_for(decoding, [&](int64_t begin, int64_t end, int) {
      size_t chunk_index = 0;
      int64_t chunk_start = 0;
      for (int64_t item = begin; item < end; ++item) {
        const auto heads_of = [&](size_t i) { return chunks[i].n_tokens == 1 ? chunks[i].n_heads : int64_t{0}; };
        while (item >= chunk_start + heads_of(chunk_index)) chunk_start += heads_of(chunk_index++);
        combine_partitions(chunks[chunk_index], item - chunk_start,
                           scratch.partials + static_cast<int64_t>(chunk_index) * scratch.partial_floats_per_chunk);
      }
    }, scratch.max_threads);
  }

 private:
  // The keys position `position` sees: [lowest, position].
  static int64_t lowest_key(const AttentionChunk& c, int64_t position) {
    return c.window > 0 && position - c.window + 1 > 0 ? position - c.window + 1 : 0;
  }
  static int64_t partitions_of(const AttentionChunk& c) {
    const int64_t position = c.first_position;
    return position / kPartitionKeys - lowest_key(c, position) / kPartitionKeys + 1;
  }
  static int64_t items_of(const AttentionChunk& c) {
    const int64_t units = c.n_tokens == 1 ? partitions_of(c) : (c.n_tokens + kTileTokens - 1) / kTileTokens;
    return units * c.n_kv_heads;
  }
  static float scale_of(const AttentionChunk& c) { return 1.0f / std::sqrt(static_cast<float>(c.head_dim)); }

  // Folds keys [first_key, end_key) into the rows' state, in blocks that end at multiples of
  // kAttentionBlockKeys, where the cache wraps, and where the chunk's own (not yet stored) keys begin,
  // so each block's rows lie side by side. rows.key_begin/key_end hold each token's own range in
  // positions on entry (inclusive lowest, exclusive end) and are rewritten per block.
  template <class Cache>
  static void attend(const AttentionChunk& c, const Cache& cache, int64_t g, int64_t first_key, int64_t end_key,
                     ops::AttentionRows rows, const int64_t* token_lowest, const int64_t* token_end, int32_t* begin,
                     int32_t* end, float* widen) {
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    rows.key_begin = begin;
    rows.key_end = end;
    for (int64_t position = first_key; position < end_key;) {
      int64_t block_end = std::min(end_key, (position / ops::kAttentionBlockKeys + 1) * ops::kAttentionBlockKeys);
      ops::KvRows keys, values;
      if (position < c.first_position) {
        block_end = std::min({block_end, c.first_position, position + cache.contiguous_from(position)});
        keys = cache.key_rows(c.layer, position, g);
        values = cache.value_rows(c.layer, position, g);
      } else {
        const int64_t row = (position - c.first_position) * kv_dim + g * c.head_dim;
        const int64_t stride = kv_dim * static_cast<int64_t>(sizeof(float));
        keys = ops::KvRows{c.k + row, stride, ops::KvElement::kF32};
        values = ops::KvRows{c.v + row, stride, ops::KvElement::kF32};
      }
      for (int64_t t = 0; t < rows.n_tokens; ++t) {
        const int64_t lo = std::max(token_lowest[t], position), hi = std::min(token_end[t], block_end);
        begin[t] = static_cast<int32_t>(lo - position);
        end[t] = static_cast<int32_t>(hi > lo ? hi - position : lo - position);
      }
      ops::attention_block(rows, keys, values, block_end - position, widen);
      position = block_end;
    }
  }

  // Tokens [tile * kTileTokens, ...) of a prompt chunk, all query heads of kv head g: their outputs
  // are final when this returns.
  template <class Cache>
  static void prompt_tile(const AttentionChunk& c, const Cache& cache, int64_t g, int64_t tile, float* scratch) {
    const int64_t group = c.n_heads / c.n_kv_heads, q_dim = c.n_heads * c.head_dim;
    const int64_t first_token = tile * kTileTokens, n = std::min(kTileTokens, c.n_tokens - first_token);
    float* widen = scratch;
    float* row_max = widen + 2 * ops::kAttentionBlockKeys * c.head_dim;
    float* row_sum = row_max + kTileTokens * group;
    int64_t token_lowest[kTileTokens], token_end[kTileTokens];
    int32_t begin[kTileTokens], end[kTileTokens];
    for (int64_t t = 0; t < n; ++t) {
      const int64_t position = c.first_position + first_token + t;
      token_lowest[t] = lowest_key(c, position);
      token_end[t] = position + 1;
    }
    for (int64_t r = 0; r < n * group; ++r) {
      row_max[r] = -std::numeric_limits<float>::infinity();
      row_sum[r] = 0.0f;
    }
    ops::AttentionRows rows;
    rows.q = c.q + first_token * q_dim + g * group * c.head_dim;
    rows.q_stride = q_dim;
    rows.out = c.out + first_token * q_dim + g * group * c.head_dim;
    rows.out_stride = q_dim;
    rows.row_max = row_max;
    rows.row_sum = row_sum;
    rows.n_tokens = n;
    rows.group = group;
    rows.head_dim = c.head_dim;
    rows.scale = scale_of(c);
    attend(c, cache, g, token_lowest[0], token_end[n - 1], rows, token_lowest, token_end, begin, end, widen);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < group; ++h) {
        finish_row(rows.out + t * q_dim + h * c.head_dim, row_sum[t * group + h], c.head_dim);
      }
    }
  }

  static void finish_row(float* out, float sum, int64_t head_dim) {
    if (sum > 0.0f) {
      ops::scale(out, 1.0f / sum, head_dim);
    } else {
      for (int64_t i = 0; i < head_dim; ++i) out[i] = 0.0f;
    }
  }

  // Where partition p of kv head g of a decoding token keeps its rows' state: group outputs of
  // head_dim, then their maxima and sums.
  static float* partition_state(const AttentionChunk& c, float* partials, int64_t g, int64_t p) {
    const int64_t group = c.n_heads / c.n_kv_heads;
    return partials + (p * c.n_kv_heads + g) * group * (c.head_dim + 2);
  }

  template <class Cache>
  static void decode_partition(const AttentionChunk& c, const Cache& cache, int64_t g, int64_t p, float* partials) {
    const int64_t group = c.n_heads / c.n_kv_heads;
    const int64_t position = c.first_position, lowest = lowest_key(c, position);
    const int64_t first_key = std::max(lowest, (lowest / kPartitionKeys + p) * kPartitionKeys);
    const int64_t end_key = std::min(position + 1, (lowest / kPartitionKeys + p + 1) * kPartitionKeys);
    float* state = partition_state(c, partials, g, p);
    float* row_max = state + group * c.head_dim;
    float* row_sum = row_max + group;
    for (int64_t h = 0; h < group; ++h) {
      row_max[h] = -std::numeric_limits<float>::infinity();
      row_sum[h] = 0.0f;
    }
    ops::AttentionRows rows;
    rows.q = c.q + g * group * c.head_dim;
    rows.q_stride = c.n_heads * c.head_dim;
    rows.out = state;
    rows.out_stride = group * c.head_dim;
    rows.row_max = row_max;
    rows.row_sum = row_sum;
    rows.n_tokens = 1;
    rows.group = group;
    rows.head_dim = c.head_dim;
    rows.scale = scale_of(c);
    const int64_t token_lowest[1] = {first_key}, token_end[1] = {end_key};
    int32_t begin[1], end[1];
    attend(c, cache, g, first_key, end_key, rows, token_lowest, token_end, begin, end, nullptr);
  }

  // Query head `head` of a decoding token: out = sum over partitions of exp(max_p - max) * out_p,
  // divided by the same sum of their weight sums.
  static void combine_partitions(const AttentionChunk& c, int64_t head, float* partials) {
    const int64_t group = c.n_heads / c.n_kv_heads, g = head / group, h = head % group;
    const int64_t n_parts = partitions_of(c);
    float largest = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < n_parts; ++p) {
      const float part_max = partition_state(c, partials, g, p)[group * c.head_dim + h];
      largest = part_max > largest ? part_max : largest;  // a NaN maximum is never larger
    }
    float* out = c.out + head * c.head_dim;
    for (int64_t i = 0; i < c.head_dim; ++i) out[i] = 0.0f;
    float sum = 0.0f;
    if (largest > -std::numeric_limits<float>::infinity()) {
      for (int64_t p = 0; p < n_parts; ++p) {
        const float* state = partition_state(c, partials, g, p);
        const float part_max = state[group * c.head_dim + h];
        if (!(part_max > -std::numeric_limits<float>::infinity())) continue;
        const float weight = std::exp(part_max - largest);
        sum += weight * state[group * c.head_dim + group + h];
        ops::axpy(weight, state + h * c.head_dim, out, c.head_dim);
      }
    }
    finish_row(out, sum, c.head_dim);
  }
};

}  // namespace bora

#endif  // BORA_MODEL_ATTENTION_HPP
// ---- end bora/model/attention.hpp --------------------------------------------------------------------
// ---- begin bora/model/context.hpp --------------------------------------------------------------------
// Why this file exists: what a forward pass runs on, split in two so that many sequences can share
// one pass. A KvSequence is one stream's positions (its KV cache); a Workspace is the buffers and
// threads of a forward step over a batch of sequences. A ModelContext pairs one of each, for the
// simple one-stream use (a Session); a batch scheduler holds one Workspace and many sequences.
#ifndef BORA_MODEL_CONTEXT_HPP
#define BORA_MODEL_CONTEXT_HPP

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>


namespace bora {

// One sequence's positions.
struct SequenceParams {
  int64_t n_ctx = 4096;         // positions held when there is no sliding window
  int64_t sliding_window = -1;  // -1: as the file says; 0: no window; N > 0: window of N keys
};

// The buffers and threads of forward steps.
struct WorkspaceParams {
  int64_t n_batch = 512;    // tokens processed together in one step (longer prompts are split)
  int n_threads = 1;        // threads for generation (one token at a time)
  int n_threads_batch = 0;  // threads for steps of several tokens (0 = n_threads)
  // Run the parallel loops on the host's job system instead of threads of our own (n_threads and
  // n_threads_batch are then capped by host_threads.n_threads).
  HostThreads host_threads;
  // Checked between layers during long prompts; return true to abort (kCancelled).
  bool (*abort_callback)(void* user_data) = nullptr;
  void* abort_user_data = nullptr;
  // Exact mode: every weight product uses f32 activations (dequantized weights), as the reference
  // does. Off (default): the inputs of the attention output and feed-forward matrices are rounded to int8 blocks for integer
  // dot products, which is faster and moves logits slightly, as in llama.cpp.
  bool f32_activations = false;
  // When set, a sparse-MoE model appends (layer, position, chosen expert ids...) per token.
  std::vector<int32_t>* expert_trace = nullptr;
};

// One stream of positions over a loaded model: a sequence and a workspace of its own.
struct ContextParams : SequenceParams, WorkspaceParams {};

// The positions of one sequence: its KV cache, rolling when there is a sliding window.
class KvSequence {
 public:
  virtual ~KvSequence() = default;
  // A copy of this sequence in memory (fork): both continue independently from here, and the copy
  // computes exactly what this one would. kOutOfMemory when the cache does not fit twice.
  virtual Expected<std::unique_ptr<KvSequence>> clone() const = 0;
  // The cache as bytes (for saving a session), and back. restore_state checks the size.
  virtual std::vector<uint8_t> save_state() const = 0;
  virtual Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) = 0;
  virtual uint64_t state_bytes() const = 0;
  // The model that made this sequence (only it can run it).
  const void* owner() const { return owner_; }

  // Forget positions from `position` on, so they can be recomputed differently (a chat that
  // edits its last turn). Possible only while no cache slot has been reused; false otherwise.
  bool truncate(int64_t position) {
    if (position < 0 || position > n_past_ || n_past_ > kv_capacity_) return false;
    n_past_ = position;
    return true;
  }
  // Forget all positions: the next token is at position 0 again.
  void reset() { n_past_ = 0; }
  int64_t n_past() const { return n_past_; }  // positions consumed so far
  int64_t window() const { return window_; }  // effective sliding window, 0 = none
  int64_t kv_capacity() const { return kv_capacity_; }
  // Whether n more tokens fit: always with a rolling window, else while positions remain.
  bool has_room_for(int64_t n) const {
    const bool rolls = window_ > 0 && window_ <= kv_capacity_;
    return n >= 0 && (rolls || n <= kv_capacity_ - n_past_);
  }

 protected:
  const void* owner_ = nullptr;
  int64_t n_past_ = 0;
  int64_t window_ = 0;
  int64_t kv_capacity_ = 0;
};

// Buffers for up to n_batch tokens per step, and the threads that run the step.
class Workspace {
 public:
  virtual ~Workspace() = default;
  const WorkspaceParams& params() const { return params_; }
  int64_t n_batch() const { return params_.n_batch; }
  // The model that made this workspace (only it can use it).
  const void* owner() const { return owner_; }

 protected:
  WorkspaceParams params_;
  const void* owner_ = nullptr;
};

// One sequence's part of a forward step: n_tokens tokens at positions sequence->n_past() ...
struct BatchSegment {
  KvSequence* sequence = nullptr;
  const int32_t* tokens = nullptr;
  int64_t n_tokens = 0;
  float* logits = nullptr;  // [n_tokens][vocab] when all_logits, else the last token's [vocab]; may be null
  bool all_logits = false;
};

// A sequence with a workspace of its own: what a single stream (a Session) runs on.
class ModelContext {
 public:
  ModelContext(std::unique_ptr<KvSequence> sequence, std::unique_ptr<Workspace> workspace, ContextParams params)
      : sequence_(std::move(sequence)), workspace_(std::move(workspace)), params_(std::move(params)) {}

  KvSequence& sequence() { return *sequence_; }
  const KvSequence& sequence() const { return *sequence_; }
  Workspace& workspace() { return *workspace_; }
  const ContextParams& params() const { return params_; }

  bool truncate(int64_t position) { return sequence_->truncate(position); }
  std::vector<uint8_t> save_state() const { return sequence_->save_state(); }
  Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) {
    return sequence_->restore_state(data, size, n_past);
  }
  uint64_t state_bytes() const { return sequence_->state_bytes(); }
  int64_t n_past() const { return sequence_->n_past(); }
  int64_t window() const { return sequence_->window(); }
  int64_t kv_capacity() const { return sequence_->kv_capacity(); }
  void reset() { sequence_->reset(); }

 private:
  std::unique_ptr<KvSequence> sequence_;
  std::unique_ptr<Workspace> workspace_;
  ContextParams params_;
};

}  // namespace bora

#endif  // BORA_MODEL_CONTEXT_HPP
// ---- end bora/model/context.hpp ----------------------------------------------------------------------
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
// splits output rows across the thread pool and picks the kernel (exact f32 activations, or the
// int8-activation fast path for quantized weights), so threading and kernel choice live in one place.
#ifndef BORA_MODEL_LINEAR_HPP
#define BORA_MODEL_LINEAR_HPP

#include <algorithm>
#include <cstdint>

// ---- begin bora/quant/q8_activations.hpp -------------------------------------------------------------
// Why this file exists: the fast decode path quantizes each activation row once into int8 blocks so
// every weight format can use integer dot products; this is that row layout and its scalar
// reference quantizer, which the SIMD quantizer must match exactly.
#ifndef BORA_QUANT_Q8_ACTIVATIONS_HPP
#define BORA_QUANT_Q8_ACTIVATIONS_HPP

#include <cmath>
#include <cstdint>
#include <cstring>

namespace bora {
namespace quant {

// A row of n activations (n a multiple of 32) in q8_activation_row_bytes(n) bytes:
//   int8 q[n] | float d[n / 32] | float d_sum[n / 32] | float d_sum16[n / 16]
// value i = d[i / 32] * q[i]; q in [-127, 127] (never -128, so |q| fits the u8 x s8 tricks);
// d_sum[b] = d[b] * (sum of q over block b) and d_sum16[h] = d[h / 2] * (sum of q over the 16
// values of half h), which weights stored with an offset need (Q4_0's -8, the K-quant mins, Q6_K's
// -32 per 16 values). The float arrays start at byte n; the buffer must be 4-byte aligned.
constexpr int64_t kQ8ActivationBlock = 32;

inline int64_t q8_activation_row_bytes(int64_t n) { return n + 4 * (n / 32) * 4; }

struct Q8ActivationRow {
  const int8_t* q;
  const float* d;
  const float* d_sum;
  const float* d_sum16;
};

inline Q8ActivationRow q8_activation_view(const uint8_t* row, int64_t n) {
  const float* scales = reinterpret_cast<const float*>(row + n);
  return {reinterpret_cast<const int8_t*>(row), scales, scales + n / 32, scales + 2 * (n / 32)};
}

// Rounds block b's 32 values, already divided by the block's step, to int8 in [-127, 127] and stores
// them with d[b] = scale and the sums the layout above describes (shared by both quantizers below).
inline void store_activation_block_q8(const float* scaled, float scale, int64_t b, int64_t n, uint8_t* out) {
  int8_t* q = reinterpret_cast<int8_t*>(out) + 32 * b;
  float* d = reinterpret_cast<float*>(out + n);
  float* d_sum = d + n / 32;
  float* d_sum16 = d_sum + n / 32;
  int sum = 0, first_half = 0;
  for (int i = 0; i < 32; ++i) {
    // |scaled| <= 127 up to rounding; the clamp also turns NaN into 0 instead of UB.
    const int value = scaled[i] >= 127.0f ? 127 : scaled[i] <= -127.0f ? -127
                      : scaled[i] == scaled[i] ? static_cast<int>(std::nearbyint(scaled[i])) : 0;
    q[i] = static_cast<int8_t>(value);
    sum += value;
    if (i < 16) first_half += value;
  }
  d[b] = scale;
  d_sum[b] = scale * static_cast<float>(sum);
  d_sum16[2 * b] = scale * static_cast<float>(first_half);
  d_sum16[2 * b + 1] = scale * static_cast<float>(sum - first_half);
}

// d = max|x| / 127 and q = round_to_nearest_even(x * (1 / d)): the SIMD quantizer computes the very
// same float operations, so both produce identical bytes.
inline void quantize_activations_q8(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[32 * b + i]));
    const float scale = amax / 127.0f;
    const float inverse = amax > 0.0f ? 1.0f / scale : 0.0f;
    float scaled[32];
    for (int i = 0; i < 32; ++i) scaled[i] = x[32 * b + i] * inverse;
    store_activation_block_q8(scaled, scale, b, n, out);
  }
}

// The second level of a two-level row: x minus what `hi` (quantize_activations_q8(x)) holds, quantized
// with each block's scale exactly hi's / 256 (a power of two, so exact). The rounding error is at most
// hi's step / 2, i.e. 128 of the finer steps, so the clamp to 127 moves a value by at most one step;
// together the levels carry ~15 bits. The fixed ratio lets kernels add 256 * hi + lo in integers.
inline void quantize_activation_residual_q8(const float* x, const uint8_t* hi, int64_t n, uint8_t* lo) {
  const Q8ActivationRow first = q8_activation_view(hi, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float scale = first.d[b] / 256.0f;
    const float inverse = scale > 0.0f ? 256.0f / first.d[b] : 0.0f;
    float scaled[32];
    for (int i = 0; i < 32; ++i)
      scaled[i] = (x[32 * b + i] - first.d[b] * static_cast<float>(first.q[32 * b + i])) * inverse;
    store_activation_block_q8(scaled, scale, b, n, lo);
  }
}

inline void dequantize_activations_q8(const uint8_t* row, int64_t n, float* out) {
  const Q8ActivationRow view = q8_activation_view(row, n);
  for (int64_t i = 0; i < n; ++i) out[i] = view.d[i / 32] * static_cast<float>(view.q[i]);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q8_ACTIVATIONS_HPP
// ---- end bora/quant/q8_activations.hpp ---------------------------------------------------------------

namespace bora {

// Rows of activations, with their int8 form when the fast path is on (null otherwise).
struct Activations {
  const float* f32 = nullptr;     // [n_tokens][width]
  const uint8_t* int8 = nullptr;  // [n_tokens][ops::q8_row_bytes(width)], or null
  // Optional second level: the int8 form of what the first level rounded away (x - int8), so that
  // int8 + residual carries ~14 bits. For several tokens linear() then needs a scratch of
  // n_tokens * rows floats (one token needs none).
  const uint8_t* int8_residual = nullptr;
};

inline bool is_block_quantized(WeightType type) {
  return type != WeightType::kF32 && type != WeightType::kF16 && type != WeightType::kBF16;
}

// Quantizes n rows of `width` floats into `out` (null when width is not a whole number of blocks:
// then only the exact path applies).
inline Activations quantize_activations(ThreadPool& pool, int max_threads, const float* x, int64_t n, int64_t width,
                                        uint8_t* out) {
  Activations a;
  a.f32 = x;
  if (out == nullptr || width % 32 != 0) return a;
  const int64_t row_bytes = ops::q8_row_bytes(width);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) ops::quantize_row_q8(x + t * width, width, out + t * row_bytes);
  }, max_threads);
  a.int8 = out;
  return a;
}

// Two int8 levels: `hi` as quantize_activations, and `lo` the rounding error at 1/256 of hi's scale
// (ops::quantize_residual_q8). Near-exact activations for a little more integer work.
inline Activations quantize_activations_two_level(ThreadPool& pool, int max_threads, const float* x, int64_t n,
                                                  int64_t width, uint8_t* hi, uint8_t* lo) {
  Activations a = quantize_activations(pool, max_threads, x, n, width, hi);
  if (a.int8 == nullptr || lo == nullptr) return a;
  const int64_t row_bytes = ops::q8_row_bytes(width);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t)
      ops::quantize_residual_q8(x + t * width, hi + t * row_bytes, width, lo + t * row_bytes);
  }, max_threads);
  a.int8_residual = lo;
  return a;
}

// A run of consecutive activation rows that belong to one sequence of a batch, and where its
// products go: row t of the group writes y[t * w.rows() + r] (y null = the caller's base + first_row rows).
struct RowGroup {
  int64_t first_row = 0;
  int64_t n_rows = 0;
  float* y = nullptr;
};

namespace detail {
// Weight bytes a thread keeps in cache while every single-token row of a batch passes over them.
constexpr uint64_t kSharedTileBytes = 256 * 1024;
}  // namespace detail

// One weight product y = w x over a batch of row groups (see linear() for the rules).
struct LinearJob {
  const TensorView* w = nullptr;
  Activations x;
  const RowGroup* groups = nullptr;
  size_t n_groups = 0;
  float* y_base = nullptr;
  // Room for the second level's products of a prompt on a matrix not in row tiles (tokens x rows
  // floats), so the batched kernel can take that level in a pass of its own; with null those prompts go
  // through the decoding kernel. Row-tiled matrices never use it.
  float* residual_scratch = nullptr;
};

namespace detail {
// Output rows [begin, end) of one job, on the calling thread.
inline void linear_rows(const LinearJob& job, int64_t begin, int64_t end) {
  const TensorView& w = *job.w;
  const Activations& x = job.x;
  const RowGroup* groups = job.groups;
  const size_t n_groups = job.n_groups;
  const int64_t rows = w.rows(), width = w.row_length();
  const bool fast = x.int8 != nullptr && is_block_quantized(w.type);
  const bool two_level = fast && x.int8_residual != nullptr;
  const int64_t q8_bytes = fast ? ops::q8_row_bytes(width) : 0;
  const uint64_t row_bytes = w.row_bytes() > 0 ? w.row_bytes() : 1;
  const int64_t tile_rows = static_cast<int64_t>(std::max<uint64_t>(1, kSharedTileBytes / row_bytes));
  auto output_of = [&](const RowGroup& g) { return g.y != nullptr ? g.y : job.y_base + g.first_row * rows; };
  // Single-token groups, a chunk at a time over tiles of weight rows that stay in cache.
  constexpr size_t kChunk = 16;
  const uint8_t* hi[kChunk];
  const uint8_t* lo[kChunk];
  const float* exact[kChunk];
  float* out[kChunk];
  size_t next = 0;
  while (next < n_groups) {
    size_t count = 0;
    for (; next < n_groups && count < kChunk; ++next) {
      const RowGroup& g = groups[next];
      if (g.n_rows != 1) continue;
      out[count] = output_of(g);
      if (fast) {
        hi[count] = x.int8 + g.first_row * q8_bytes;
        lo[count] = two_level ? x.int8_residual + g.first_row * q8_bytes : nullptr;
      } else {
        exact[count] = x.f32 + g.first_row * width;
      }
      ++count;
    }
    if (count == 0) break;
    if (fast) {
      // The kernels tile the rows themselves, so each token's activations are prepared once.
      ops::matvec_q8_tokens(w, hi, two_level ? lo : nullptr, static_cast<int64_t>(count), out, begin, end);
      continue;
    }
    for (int64_t tile = begin; tile < end; tile += tile_rows) {
      const int64_t tile_end = std::min(end, tile + tile_rows);
      for (size_t t = 0; t < count; ++t) ops::matvec_f32(w, exact[t], out[t], tile, tile_end);
    }
  }
  for (size_t i = 0; i < n_groups; ++i) {
    const RowGroup& g = groups[i];
    if (g.n_rows < 2) continue;
    float* out_rows = output_of(g);
    if (two_level && (w.row_tiles || job.residual_scratch == nullptr)) {
      // One sweep of the tiles for both levels: the same bits as each token decoding alone (untiled
      // rows go through the decoding kernel too when no scratch holds a second pass).
      ops::matmul_q8_two_level(w, x.int8 + g.first_row * q8_bytes, x.int8_residual + g.first_row * q8_bytes,
                               g.n_rows, out_rows, rows, begin, end);
    } else if (fast) {
      ops::matmul_q8(w, x.int8 + g.first_row * q8_bytes, g.n_rows, out_rows, rows, begin, end);
      if (two_level) {
        // Prefill is compute-bound, so this second pass costs compute rather than bandwidth.
        float* extra = job.residual_scratch + g.first_row * rows;
        ops::matmul_q8(w, x.int8_residual + g.first_row * q8_bytes, g.n_rows, extra, rows, begin, end);
        for (int64_t t = 0; t < g.n_rows; ++t)
          for (int64_t r = begin; r < end; ++r) out_rows[t * rows + r] += extra[t * rows + r];
      }
    } else {
      ops::matmul_f32(w, x.f32 + g.first_row * width, g.n_rows, out_rows, rows, begin, end);
    }
  }
}
}  // namespace detail

// Several products in one parallel loop: their output rows are split across the threads as one
// range, so the threads meet once for all of them (a mixture of experts' step runs the w1 and w3 of
// every chosen expert this way) and each streams its share of the weights without waiting between
// matrices. Every row is computed as linear() computes it, whichever thread takes it.
inline void linear_many(ThreadPool& pool, int max_threads, const LinearJob* jobs, size_t n_jobs) {
  int64_t total = 0;
  for (size_t j = 0; j < n_jobs; ++j) total += jobs[j].w->rows();
  pool.parallel_for(total, [&](int64_t begin, int64_t end, int) {
    int64_t first_row = 0;  // of job j within the joint range
    for (size_t j = 0; j < n_jobs && first_row < end; ++j) {
      const int64_t rows = jobs[j].w->rows();
      const int64_t b = std::max<int64_t>(begin - first_row, 0), e = std::min<int64_t>(end - first_row, rows);
      if (b < e) detail::linear_rows(jobs[j], b, e);
      first_row += rows;
    }
  }, max_threads);
}

// y = w x for a batch of row groups. Batch invariance rests on one rule: a row's products depend on
// its group alone. A group of one row (a decoding sequence) is always computed as the one-token kernel
// computes it, whatever else is in the batch (ops::matvec_q8_tokens): those rows meet tiles of weight
// rows that stay in cache, so the weights are read from memory once per step for all of them. A longer group (a chunk of a prompt)
// goes through the batched kernel by itself, so it too is computed the same way alone or batched.
// Rows are split across threads and each is computed by one thread the same way whatever the
// thread count. Float weights always take the exact path.
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const Activations& x,
                   const RowGroup* groups, size_t n_groups, float* y_base, float* residual_scratch = nullptr) {
  LinearJob job;
  job.w = &w;
  job.x = x;
  job.groups = groups;
  job.n_groups = n_groups;
  job.y_base = y_base;
  job.residual_scratch = residual_scratch;
  linear_many(pool, max_threads, &job, 1);
}

// The same for n_tokens rows of one sequence: y[t][r] = dot(w.row(r), x[t]).
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const Activations& x, int64_t n_tokens,
                   float* y, float* residual_scratch = nullptr) {
  const RowGroup whole{0, n_tokens, y};
  linear(pool, max_threads, w, x, &whole, 1, y, residual_scratch);
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
#include <memory>
#include <new>
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

// All eight pairs at once with 32-bit masks (what the SIMD kernels use per super-block): returns
// four little-endian words holding the bytes scale[0..3], scale[4..7], min[0..3], min[4..7].
inline void unpack_k_scales_mins_words(const uint8_t* scales, uint32_t* words) {
  uint32_t in[3];
  for (int k = 0; k < 3; ++k) {
    in[k] = static_cast<uint32_t>(scales[4 * k]) | (static_cast<uint32_t>(scales[4 * k + 1]) << 8) |
            (static_cast<uint32_t>(scales[4 * k + 2]) << 16) | (static_cast<uint32_t>(scales[4 * k + 3]) << 24);
  }
  words[0] = in[0] & 0x3F3F3F3Fu;
  words[1] = (in[2] & 0x0F0F0F0Fu) | (((in[0] >> 6) & 0x03030303u) << 4);
  words[2] = in[1] & 0x3F3F3F3Fu;
  words[3] = ((in[2] >> 4) & 0x0F0F0F0Fu) | (((in[1] >> 6) & 0x03030303u) << 4);
}

// Equal to calling unpack_k_scale_min for j = 0..7.
inline void unpack_k_scales_mins(const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  uint32_t words[4];
  unpack_k_scales_mins_words(scales, words);
  for (int k = 0; k < 4; ++k) {
    uint8_t* dst = k < 2 ? scale + 4 * k : min + 4 * (k - 2);
    for (int b = 0; b < 4; ++b) dst[b] = static_cast<uint8_t>(words[k] >> (8 * b));
  }
}

inline void pack_k_scale_mins(const int* scale, const int* min, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((scale[j + 4] & 15) | ((min[j + 4] & 15) << 4));
  }
}

// Q4_K and Q5_K share the header (d, dmin and the scales at the same offsets) and the low nibbles;
// with kHasHighBit (Q5_K) the fifth bit of element l of sub-block j is bit j of high_bits[l].
template <bool kHasHighBit>
inline void dequantize_k_quant_block(const uint8_t* block, const uint8_t* qs, const uint8_t* high_bits, float* out) {
  const float d = load_f16(block + Q4_KBlock::kScaleOffset);
  const float dmin = load_f16(block + Q4_KBlock::kMinScaleOffset);
  const uint8_t* scales = block + Q4_KBlock::kScalesOffset;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    unpack_k_scale_min(scales, j, &sc, &m);
    const float step = d * static_cast<float>(sc);
    const float offset = dmin * static_cast<float>(m);
    const uint8_t* bytes = qs + 32 * (j / 2);
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      int q = (bytes[l] >> shift) & 15;
      if constexpr (kHasHighBit) q |= ((high_bits[l] >> j) & 1) << 4;
      out[32 * j + l] = step * static_cast<float>(q) - offset;
    }
  }
}

inline void dequantize_block_q4_k(const uint8_t* block, float* out) {
  dequantize_k_quant_block<false>(block, block + Q4_KBlock::kQuantsOffset, nullptr, out);
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

// Quantizes x into q and writes the header Q4_K and Q5_K share: f16 d and dmin, then the scales.
inline void quantize_k_header(const float* x, int max_q, uint8_t* block, uint8_t* q) {
  uint16_t d_bits = 0, dmin_bits = 0;
  int scale[8], min[8];
  quantize_k_superblock(x, max_q, &d_bits, &dmin_bits, scale, min, q);
  store_u16_le(block + Q4_KBlock::kScaleOffset, d_bits);
  store_u16_le(block + Q4_KBlock::kMinScaleOffset, dmin_bits);
  pack_k_scale_mins(scale, min, block + Q4_KBlock::kScalesOffset);
}

// The low 4 bits of sub-blocks 2c and 2c+1 as the low and high nibbles of qs bytes 32c..32c+31.
inline void pack_k_low_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 15) | ((q[64 * c + 32 + l] & 15) << 4));
    }
  }
}

}  // namespace detail

inline void quantize_block_q4_k(const float* x, uint8_t* block) {
  uint8_t q[256];
  detail::quantize_k_header(x, 15, block, q);
  detail::pack_k_low_nibbles(q, block + Q4_KBlock::kQuantsOffset);
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

static_assert(Q5_KBlock::kScaleOffset == Q4_KBlock::kScaleOffset &&
                  Q5_KBlock::kMinScaleOffset == Q4_KBlock::kMinScaleOffset &&
                  Q5_KBlock::kScalesOffset == Q4_KBlock::kScalesOffset,
              "Q5_K's header is read and written by Q4_K's code, at Q4_K's offsets");

inline void dequantize_block_q5_k(const uint8_t* block, float* out) {
  dequantize_k_quant_block<true>(block, block + Q5_KBlock::kQuantsOffset, block + Q5_KBlock::kHighBitsOffset, out);
}

inline void dequantize_row_q5_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q5_k(src + b * 176, dst + b * 256);
}

inline void quantize_block_q5_k(const float* x, uint8_t* block) {
  uint8_t q[256];
  detail::quantize_k_header(x, 31, block, q);
  uint8_t* qh = block + Q5_KBlock::kHighBitsOffset;
  for (int l = 0; l < 32; ++l) {
    int high_bits = 0;
    for (int j = 0; j < 8; ++j) high_bits |= ((q[32 * j + l] >> 4) & 1) << j;
    qh[l] = static_cast<uint8_t>(high_bits);
  }
  detail::pack_k_low_nibbles(q, block + Q5_KBlock::kQuantsOffset);
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
// ---- begin bora/quant/row_tiles.hpp ------------------------------------------------------------------
// Why this file exists: the 512-bit VNNI and AVX2 kernels put one weight row in each 32-bit lane, so a Q4_0,
// Q8_0, Q4_K, Q5_K or Q6_K matrix they read is regrouped at load into tiles of 16 rows (same bytes, other order);
// this is that layout, its regrouping and the way back to ordinary rows, as plain byte moves.
#ifndef BORA_QUANT_ROW_TILES_HPP
#define BORA_QUANT_ROW_TILES_HPP

#include <cstdint>
#include <cstring>


namespace bora {
namespace quant {

// Layout of a tiled matrix: rows 16r .. 16r + 15 take the bytes that 16 ordinary rows take, block
// after block. A tile block holds block b of its 16 rows: first their scales, field by field: each
// f16 field as 16 values (row i's at 2i), then each one-byte field as 16 bytes (row i's at i); then
// the rows' value bytes four at a time: bytes 4g .. 4g + 3 of row i's values at 16 * header + 64g + 4i.
// So one 64-byte load gives four value bytes of each of the 16 rows, one row per 32-bit lane, and one
// load gives a scale field of all 16 rows.
//   Q4_0, Q8_0: f16 d, then the values;  Q4_K: f16 d and dmin, 12 bytes of packed scales and mins, then
//   the quants;  Q5_K: as Q4_K, its 32 bytes of fifth bits first among the values;  Q6_K: the values
//   (low bits, high bits), then 16 int8 scales, then f16 d.
constexpr int64_t kTileRows = 16;

struct TileFormat {
  int64_t values;       // per block of one row (0: the type is never tiled)
  int64_t bytes;        // per block of one row
  int64_t header;       // bytes of a block that hold its scales
  int64_t half_fields;  // how many of them are f16 fields; the rest are one-byte fields
  int64_t half_at;      // where the ordinary block keeps its f16 fields,
  int64_t bytes_at;     // its one-byte fields
  int64_t values_at;    // and its values
};

inline TileFormat tile_format(WeightType type) {
  switch (type) {
    case WeightType::kQ4_0: return {32, 18, 2, 1, 0, 2, 2};
    case WeightType::kQ8_0: return {32, 34, 2, 1, 0, 2, 2};
    case WeightType::kQ4_K: return {256, 144, 16, 2, 0, 4, 16};
    case WeightType::kQ5_K: return {256, 176, 16, 2, 0, 4, 16};
    case WeightType::kQ6_K: return {256, 210, 18, 1, 208, 192, 0};
    default: return {0, 0, 0, 0, 0, 0, 0};
  }
}

// The types and shapes that can be tiled: whole tiles of rows of whole blocks.
inline bool row_tiles_apply(WeightType type, int64_t rows) {
  return tile_format(type).values > 0 && rows > 0 && rows % kTileRows == 0;
}

// Bytes of one block of one row (type as in row_tiles_apply).
inline int64_t tile_block_bytes(WeightType type) { return tile_format(type).bytes; }

// The tile block holding block `block` of row `row`, in a tiled matrix of `blocks` blocks per row.
inline const uint8_t* tile_block(WeightType type, const uint8_t* data, int64_t blocks, int64_t row, int64_t block) {
  const int64_t block_bytes = tile_block_bytes(type);
  return data + ((row / kTileRows) * blocks + block) * kTileRows * block_bytes;
}

// Calls piece(ordinary, tiled, count) for each run of bytes of one row's block: `count` bytes at offset
// `ordinary` of the block sit at offset `tiled` of the tile block, in lane `lane`.
template <class Piece>
inline void for_each_tile_piece(const TileFormat& f, int64_t lane, const Piece& piece) {
  const size_t row = static_cast<size_t>(lane), tile_rows = static_cast<size_t>(kTileRows);
  const size_t half_fields = static_cast<size_t>(f.half_fields), header = static_cast<size_t>(f.header);
  const size_t half_at = static_cast<size_t>(f.half_at), bytes_at = static_cast<size_t>(f.bytes_at);
  const size_t values_at = static_cast<size_t>(f.values_at);
  const size_t byte_fields = header > 2 * half_fields ? header - 2 * half_fields : 0;
  const size_t groups = f.bytes > f.header ? static_cast<size_t>(f.bytes - f.header) / 4 : 0;
  for (size_t k = 0; k < half_fields; ++k) piece(half_at + 2 * k, 2 * tile_rows * k + 2 * row, size_t{2});
  for (size_t k = 0; k < byte_fields; ++k)
    piece(bytes_at + k, 2 * tile_rows * half_fields + tile_rows * k + row, size_t{1});
  for (size_t g = 0; g < groups; ++g) piece(values_at + 4 * g, tile_rows * header + 64 * g + 4 * row, size_t{4});
}

// Rebuilds block `block` of row `row` of a tiled matrix in its ordinary layout (block_bytes bytes).
// (GCC 12, inlining this into a caller's fixed-size buffer for every weight type at once, warns of
// writes at negative offsets that no type's format can produce.)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
inline void untile_block(WeightType type, const uint8_t* data, int64_t blocks, int64_t row, int64_t block,
                         uint8_t* out) {
  const uint8_t* tile = tile_block(type, data, blocks, row, block);
  for_each_tile_piece(tile_format(type), row % kTileRows,
                      [&](size_t ordinary, size_t tiled, size_t count) {
                        for (size_t i = 0; i < count; ++i) out[ordinary + i] = tile[tiled + i];
                      });
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Rows [first, first + count) of a tiled matrix with `n` values per row, in the ordinary layout.
inline void untile_rows(WeightType type, const uint8_t* data, int64_t n, int64_t first, int64_t count, uint8_t* out) {
  const TileFormat f = tile_format(type);
  const int64_t blocks = n / f.values;
  for (int64_t r = 0; r < count; ++r)
    for (int64_t b = 0; b < blocks; ++b) untile_block(type, data, blocks, first + r, b, out + (r * blocks + b) * f.bytes);
}

// Regroups a whole matrix (rows a multiple of 16) in place; `scratch` holds 16 rows' bytes.
inline void tile_rows_in_place(WeightType type, uint8_t* data, int64_t n, int64_t rows, uint8_t* scratch) {
  const TileFormat f = tile_format(type);
  const int64_t blocks = n / f.values;
  const int64_t tile_bytes = kTileRows * blocks * f.bytes;
  for (int64_t tile = 0; tile < rows / kTileRows; ++tile) {
    uint8_t* out = data + tile * tile_bytes;
    std::memcpy(scratch, out, static_cast<size_t>(tile_bytes));
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* tile_block_out = out + b * kTileRows * f.bytes;
      for (int64_t lane = 0; lane < kTileRows; ++lane) {
        const uint8_t* block = scratch + (lane * blocks + b) * f.bytes;
        for_each_tile_piece(f, lane, [&](size_t ordinary, size_t tiled, size_t count) {
          for (size_t i = 0; i < count; ++i) tile_block_out[tiled + i] = block[ordinary + i];
        });
      }
    }
  }
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_ROW_TILES_HPP
// ---- end bora/quant/row_tiles.hpp --------------------------------------------------------------------

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

// Regroups every Q4_0 / Q8_0 / Q4_K / Q5_K / Q6_K matrix of a GGUF read into private memory into row tiles
// (quant/row_tiles.hpp) when this CPU's kernels prefer them for its type: same bytes, no copy. The embedding table
// stays as it is (its rows are looked up one at a time); stacked experts are tiled whole, each
// expert's rows being a multiple of 16 so that slicing still works. Returns the count tiled.
inline int64_t tile_matrix_rows(ModelFiles& files) {
  if (files.format() != ModelFormat::kGguf) return 0;
  const std::string embedding = detail::TensorNames{files.format()}.embedding();
  int64_t tiled = 0;
  for (const std::string& name : files.tensor_names()) {
    TensorView* t = files.writable_tensor(name);
    if (t == nullptr || name == embedding || t->n_dims < 2 || t->row_tiles || !ops::prefers_row_tiles(t->type) ||
        !quant::row_tiles_apply(t->type, t->ne[1]) ||
        t->row_length() % quant::tile_format(t->type).values != 0) {
      continue;
    }
    const uint64_t tile_bytes = quant::kTileRows * t->row_bytes();
    std::unique_ptr<uint8_t[]> scratch(new (std::nothrow) uint8_t[tile_bytes]);
    if (!scratch) return tiled;  // out of memory: the rest keep the ordinary layout
    quant::tile_rows_in_place(t->type, const_cast<uint8_t*>(t->data), t->row_length(), t->rows(), scratch.get());
    t->row_tiles = true;
    ++tiled;
  }
  return tiled;
}

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

// One SwiGLU's weights and the rows of its input it runs on (a dense FFN: all of them; an expert:
// the rows routed to it), grouped by sequence as linear() expects.
struct SwiGLUPass {
  const TensorView* w1 = nullptr;
  const TensorView* w2 = nullptr;
  const TensorView* w3 = nullptr;
  const RowGroup* groups = nullptr;
  size_t n_groups = 0;
};

// Buffers a feed-forward call may use, sized by the transformer for its largest chunk.
struct FeedForwardScratch {
  float* gate = nullptr;      // [n_tokens][hidden_dim]
  float* up = nullptr;        // [n_tokens][hidden_dim]
  float* gathered = nullptr;  // [n_tokens][dim]   (MoE: the tokens routed to the experts of a wave)
  float* expert_out = nullptr;  // [n_tokens][dim] (MoE)
  float* router_logits = nullptr;  // [n_tokens][n_experts] (MoE)
  int32_t* routed_tokens = nullptr;  // [n_tokens] (MoE)
  float* routed_weights = nullptr;   // [n_tokens] (MoE)
  int32_t* chosen = nullptr;         // [n_tokens][top_k] (MoE)
  float* chosen_weights = nullptr;   // [n_tokens][top_k] (MoE)
  RowGroup* expert_groups = nullptr;  // [n_tokens] (MoE: the groups of the tokens routed to the experts of a wave)
  SwiGLUPass* expert_passes = nullptr;  // [n_experts] (MoE)
  LinearJob* expert_jobs = nullptr;     // [2 * n_experts] (MoE)
  int64_t rows_capacity = 0;  // rows gate, up, gathered, expert_out and quantized hold (n_batch)
  uint8_t* quantized = nullptr;  // int8 activations buffer for the fast path; null = exact f32 path
  std::vector<int32_t>* expert_trace = nullptr;  // when set, MoE appends layer, position, ids...
  int64_t layer = 0;
  const int64_t* positions = nullptr;  // [n_tokens] each row's position (for the expert trace)
  int max_threads = 0;
};

namespace detail {
// w2(silu(w1 x) * w3 x) for the rows of x, each pass over its own groups of rows, written to the
// same rows of out. The w1 and w3 products of all passes share one parallel loop and their w2
// products another, so several experts cost the threads as many meetings as one. `jobs` holds
// 2 * n_passes.
inline void swiglu(ThreadPool& pool, const FeedForwardScratch& s, const SwiGLUPass* passes, size_t n_passes,
                   const float* x, int64_t n, int64_t hidden, float* out, LinearJob* jobs) {
  if (n_passes == 0) return;
  const int64_t dim = passes[0].w1->row_length();
  const Activations input = quantize_activations(pool, s.max_threads, x, n, dim, s.quantized);
  auto job = [](const TensorView* w, const Activations& a, const SwiGLUPass& p, float* y) {
    LinearJob j;
    j.w = w;
    j.x = a;
    j.groups = p.groups;
    j.n_groups = p.n_groups;
    j.y_base = y;
    return j;
  };
  for (size_t i = 0; i < n_passes; ++i) {
    jobs[2 * i] = job(passes[i].w1, input, passes[i], s.gate);
    jobs[2 * i + 1] = job(passes[i].w3, input, passes[i], s.up);
  }
  linear_many(pool, s.max_threads, jobs, 2 * n_passes);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) ops::silu_mul(s.gate + t * hidden, s.up + t * hidden, hidden);
  }, s.max_threads);
  const Activations hidden_input = quantize_activations(pool, s.max_threads, s.gate, n, hidden, s.quantized);
  for (size_t i = 0; i < n_passes; ++i) jobs[i] = job(passes[i].w2, hidden_input, passes[i], out);
  linear_many(pool, s.max_threads, jobs, n_passes);
}
}  // namespace detail

struct DenseSwiGLU {
  static constexpr bool kSparse = false;
  // Experts whose weights one token reads (none: the dense FFN is read whole).
  static int64_t experts_per_token(const ModelConfig&) { return 0; }

  // out[t] = FFN(x[t]); out is added to the residual by the caller.
  // `groups` split the n rows of x by sequence; each row's result depends on its group alone.
  static void forward(const LayerWeights& w, const ModelConfig& c, const float* x, const RowGroup* groups,
                      size_t n_groups, int64_t n, float* out, const FeedForwardScratch& s, ThreadPool& pool) {
    SwiGLUPass pass;
    pass.w1 = &w.w1;
    pass.w2 = &w.w2;
    pass.w3 = &w.w3;
    pass.groups = groups;
    pass.n_groups = n_groups;
    LinearJob jobs[2];
    detail::swiglu(pool, s, &pass, 1, x, n, c.hidden_dim, out, jobs);
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
  static int64_t experts_per_token(const ModelConfig& c) { return Routing::k(c); }

  // Router = top-k of the raw logits, softmax over those k only (Mistral's reference). Tokens
  // are grouped by expert so each expert's weights are read once per step for all the decoding
  // sequences that chose it, and only chosen experts are read at all. Within an expert, tokens stay
  // grouped by sequence, so a token's result does not depend on its batch mates.
  static void forward(const LayerWeights& w, const ModelConfig& c, const float* x, const RowGroup* groups,
                      size_t n_groups, int64_t n, float* out, const FeedForwardScratch& s, ThreadPool& pool) {
    const int64_t n_experts = c.n_experts, k = Routing::k(c), dim = c.dim;
    // The router stays exact: near-ties between experts would flip with int8 activations.
    linear(pool, s.max_threads, w.router, Activations{x, nullptr}, groups, n_groups, s.router_logits);
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
        s.expert_trace->push_back(static_cast<int32_t>(s.positions[t]));
        for (int64_t r = 0; r < k; ++r) s.expert_trace->push_back(chosen[r]);
      }
      for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = 0.0f;
    }
    // The chosen experts run in waves, one swiglu each, of as many as the buffers' rows_capacity rows
    // hold: decoding steps route k rows per sequence and run every expert in one wave; a prompt chunk
    // of n_batch tokens takes about k. A token's experts add to its output in ascending order.
    int64_t m = 0;  // rows gathered for this wave
    size_t n_passes = 0, n_wave_groups = 0;
    auto run_wave = [&] {
      detail::swiglu(pool, s, s.expert_passes, n_passes, s.gathered, m, c.hidden_dim, s.expert_out, s.expert_jobs);
      for (int64_t i = 0; i < m; ++i)
        ops::axpy(s.routed_weights[i], s.expert_out + i * dim, out + s.routed_tokens[i] * dim, dim);
      m = 0;
      n_passes = n_wave_groups = 0;
    };
    for (int32_t e = 0; e < n_experts; ++e) {
      int64_t routed = 0;
      for (int64_t i = 0; i < n * k; ++i) routed += s.chosen[i] == e ? 1 : 0;
      if (routed == 0) continue;
      if (m + routed > s.rows_capacity) run_wave();
      const size_t first_group = n_wave_groups;
      for (size_t g = 0; g < n_groups; ++g) {
        const int64_t group_start = m;
        for (int64_t t = groups[g].first_row; t < groups[g].first_row + groups[g].n_rows; ++t) {
          for (int64_t r = 0; r < k; ++r) {
            if (s.chosen[t * k + r] != e) continue;
            s.routed_tokens[m] = static_cast<int32_t>(t);
            s.routed_weights[m] = s.chosen_weights[t * k + r];
            std::copy(x + t * dim, x + (t + 1) * dim, s.gathered + m * dim);
            ++m;
          }
        }
        if (m > group_start) s.expert_groups[n_wave_groups++] = RowGroup{group_start, m - group_start, nullptr};
      }
      SwiGLUPass& pass = s.expert_passes[n_passes++];
      pass.w1 = &w.expert_w1[e];
      pass.w2 = &w.expert_w2[e];
      pass.w3 = &w.expert_w3[e];
      pass.groups = s.expert_groups + first_group;
      pass.n_groups = n_wave_groups - first_group;
    }
    if (n_passes > 0) run_wave();
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
#include <cstring>
#include <type_traits>


namespace bora {

// Storage element tags for the cache policy: how one key or value row is kept.
struct f32 {
  static constexpr const char* name = "f32";
  static constexpr ops::KvElement kind = ops::KvElement::kF32;
  static int64_t row_bytes(int64_t n) { return n * 4; }
};
struct f16 {
  static constexpr const char* name = "f16";
  static constexpr ops::KvElement kind = ops::KvElement::kF16;
  static int64_t row_bytes(int64_t n) { return n * 2; }
};
// ggml's q8_0 blocks (32 int8 sharing an f16 scale): half the bytes of f16, so a long context costs
// half the reads; each value moves by at most half its block's step (max|x| / 254).
struct q8_0 {
  static constexpr const char* name = "q8_0";
  static constexpr ops::KvElement kind = ops::KvElement::kQ8_0;
  static int64_t row_bytes(int64_t n) { return n / 32 * quant::Q8_0Block::kBytes; }
};

template <class Element>
class RollingKvCache {
  static_assert(std::is_same<Element, f32>::value || std::is_same<Element, f16>::value ||
                    std::is_same<Element, q8_0>::value,
                "RollingKvCache<Element>: Element must be bora::f32, bora::f16 or bora::q8_0");

 public:
  using element = Element;

  // Whether rows of kv_dim values made of heads of head_dim can be stored (q8_0 needs whole blocks
  // in each head, so that a head's row starts at a block).
  static bool supports(int64_t head_dim) { return element::kind != ops::KvElement::kQ8_0 || head_dim % 32 == 0; }

  // Allocates the zeroed cache; false when its size overflows or the memory is not there.
  bool init(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity) {
    n_layers_ = n_layers;
    head_dim_ = head_dim;
    kv_dim_ = n_kv_heads * head_dim;
    row_bytes_ = Element::row_bytes(kv_dim_);
    capacity_ = capacity;
    uint64_t count = 0;
    if (n_layers < 0 || capacity < 0 || kv_dim_ < 0 || !supports(head_dim) ||
        !bytes_detail::checked_mul(static_cast<uint64_t>(n_layers), static_cast<uint64_t>(capacity), &count) ||
        !bytes_detail::checked_mul(count, static_cast<uint64_t>(row_bytes_), &count)) {
      return false;
    }
    return keys_.reset(count) && values_.reset(count);
  }

  int64_t capacity() const { return capacity_; }
  int64_t slot_of(int64_t position) const { return position % capacity_; }
  uint64_t bytes() const { return keys_.size() + values_.size(); }
  // Bytes of a cache of this element for the given shape (for error messages).
  static double bytes_for(int64_t n_layers, int64_t n_kv_heads, int64_t head_dim, int64_t capacity) {
    return 2.0 * static_cast<double>(n_layers) * static_cast<double>(capacity) *
           static_cast<double>(Element::row_bytes(n_kv_heads * head_dim));
  }

  // Writes the rotated key and the value (kv_dim floats each) of `position`.
  void store(int64_t layer, int64_t position, const float* key, const float* value) {
    copy_in(key, key_slot(layer, slot_of(position)));
    copy_in(value, value_slot(layer, slot_of(position)));
  }

  // Positions from `position` on whose slots follow each other in memory: up to the end of the
  // cache, where the rolling window wraps to slot 0.
  int64_t contiguous_from(int64_t position) const { return capacity_ - slot_of(position); }
  // The keys / values of KV head `head` from `position` on, as rows attention reads in place (valid
  // for contiguous_from(position) positions).
  ops::KvRows key_rows(int64_t layer, int64_t position, int64_t head) const {
    return ops::KvRows{key_slot(layer, slot_of(position)) + head_offset(head), row_bytes_, Element::kind};
  }
  ops::KvRows value_rows(int64_t layer, int64_t position, int64_t head) const {
    return ops::KvRows{value_slot(layer, slot_of(position)) + head_offset(head), row_bytes_, Element::kind};
  }

  // A cache of the same shape (for a fork); false when the memory is not there.
  bool init_like(const RollingKvCache& other) {
    return init(other.n_layers_, other.kv_dim_ / (other.head_dim_ > 0 ? other.head_dim_ : 1), other.head_dim_,
                other.capacity_);
  }
  // Copies every slot of a cache of the same shape.
  void copy_from(const RollingKvCache& other) {
    if (keys_.empty()) return;
    std::memcpy(keys_.data(), other.keys_.data(), keys_.size());
    std::memcpy(values_.data(), other.values_.data(), values_.size());
  }
  // The cache as bytes() bytes (keys, then values), for saving a session, and back.
  void save_to(uint8_t* out) const {
    if (keys_.empty()) return;
    std::memcpy(out, keys_.data(), keys_.size());
    std::memcpy(out + keys_.size(), values_.data(), values_.size());
  }
  void load_from(const uint8_t* in) {
    if (keys_.empty()) return;
    std::memcpy(keys_.data(), in, keys_.size());
    std::memcpy(values_.data(), in + keys_.size(), values_.size());
  }

 private:
  uint8_t* key_slot(int64_t layer, int64_t slot) { return keys_.data() + (layer * capacity_ + slot) * row_bytes_; }
  uint8_t* value_slot(int64_t layer, int64_t slot) { return values_.data() + (layer * capacity_ + slot) * row_bytes_; }
  const uint8_t* key_slot(int64_t layer, int64_t slot) const {
    return keys_.data() + (layer * capacity_ + slot) * row_bytes_;
  }
  const uint8_t* value_slot(int64_t layer, int64_t slot) const {
    return values_.data() + (layer * capacity_ + slot) * row_bytes_;
  }
  int64_t head_offset(int64_t head) const { return Element::row_bytes(head * head_dim_); }

  void copy_in(const float* from, uint8_t* to) const {
    if constexpr (std::is_same<Element, f32>::value) {
      std::memcpy(to, from, static_cast<size_t>(kv_dim_) * sizeof(float));
    } else if constexpr (std::is_same<Element, f16>::value) {
      // The slot is 2-byte aligned: row_bytes is even and the buffer page-aligned.
      ops::f32_to_f16(from, reinterpret_cast<uint16_t*>(to), kv_dim_);
    } else {
      quant::quantize_row_q8_0(from, to, kv_dim_);
    }
  }

  int64_t n_layers_ = 0, head_dim_ = 0, kv_dim_ = 0, row_bytes_ = 0, capacity_ = 0;
  PageBuffer<uint8_t> keys_, values_;
};

}  // namespace bora

#endif  // BORA_MODEL_KV_CACHE_HPP
// ---- end bora/model/kv_cache.hpp ---------------------------------------------------------------------

namespace bora {

// The KV cache element load_any() composes: f16 (the default), f32 (the exact path's), or q8_0
// (half the bytes of f16 for long contexts).
enum class KvCacheType { kF16, kF32, kQ8_0 };

// How a model is opened (llama.h users know these words).
struct LoadParams {
  // Called with a fraction in [0, 1] while mapping and validating; return false to cancel.
  bool (*progress_callback)(float progress, void* user_data) = nullptr;
  void* progress_user_data = nullptr;
  // load_any() picks the KV cache policy from this (load<Preset>() uses the preset's).
  KvCacheType kv_cache_type = KvCacheType::kF16;
  // Map the weight files instead of reading them into memory: opens instantly and shares the page
  // cache, but decoding can be several times slower where mapped pages are slow (see FileAccess).
  bool use_mmap = false;
};

// What every composition offers, so sessions and tools need not be templates. Several contexts (and
// threads) may use one model at once: the model is read-only after loading.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const ModelFiles& files() const = 0;
  virtual const char* preset_name() const = 0;
  // Bytes of weights one generated token reads: every matrix it multiplies (of a mixture of experts,
  // the share of the experts the router picks per token), not the embedding table it takes one row
  // from. Decoding reads them all once per token, so memory bandwidth / this is the fastest decoding
  // the machine allows (examples/bench --bandwidth measures both).
  virtual uint64_t weight_bytes_per_token() const = 0;
  // Bytes of weights one forward step reads when, in every layer, its tokens route to `experts`
  // distinct experts (an average over layers may be fractional; a dense model ignores it). Sequences
  // decoding together share a step's reads, but their tokens route to more experts than one token's.
  virtual uint64_t weight_bytes_per_step(double experts) const = 0;
  // A sequence's KV cache, and the buffers and threads of forward steps (see model/context.hpp).
  virtual Expected<std::unique_ptr<KvSequence>> create_sequence(const SequenceParams& params) const = 0;
  virtual Expected<std::unique_ptr<Workspace>> create_workspace(const WorkspaceParams& params) const = 0;
  // One forward step over several sequences at once: segment i consumes its tokens at positions
  // segments[i].sequence->n_past() ... Together at most workspace.n_batch() tokens, each sequence at
  // most once. A sequence's logits do not depend on the other segments nor on the thread count.
  // Nothing is computed when a segment is invalid (the error names it) or any sequence is full.
  virtual Status forward_batch(Workspace& workspace, const BatchSegment* segments, size_t count) const = 0;

  // A sequence with a workspace of its own.
  Expected<std::unique_ptr<ModelContext>> create_context(const ContextParams& params) const {
    auto sequence = create_sequence(params);
    if (!sequence) return sequence.error();
    auto workspace = create_workspace(params);
    if (!workspace) return workspace.error();
    std::unique_ptr<ModelContext> context(new (std::nothrow)
                                              ModelContext(std::move(*sequence), std::move(*workspace), params));
    if (!context) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    return context;
  }
  // Consumes `n` tokens at positions ctx.n_past() ..., n_batch at a time; writes logits for every
  // token ([n][vocab]) when all_logits, else for the last one only ([vocab]). logits may be null.
  Status forward(ModelContext& ctx, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const {
    if (n < 0) return make_error(ErrorCode::kInvalidArgument, "forward: %lld tokens", (long long)n);
    if (!ctx.sequence().has_room_for(n)) {
      return make_error(ErrorCode::kContextFull, "context full: %lld positions used, %lld more requested, room for %lld",
                        (long long)ctx.n_past(), (long long)n, (long long)ctx.kv_capacity());
    }
    const int64_t vocab = config().vocab_size, batch = ctx.workspace().n_batch();
    for (int64_t start = 0; start < n; start += batch) {
      BatchSegment segment;
      segment.sequence = &ctx.sequence();
      segment.tokens = tokens + start;
      segment.n_tokens = std::min(batch, n - start);
      segment.all_logits = all_logits;
      if (logits != nullptr && all_logits) segment.logits = logits + start * vocab;
      if (logits != nullptr && !all_logits && start + segment.n_tokens == n) segment.logits = logits;
      BORA_RETURN_IF_ERROR(forward_batch(ctx.workspace(), &segment, 1));
    }
    return Status();
  }
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

  // One sequence: its KV cache.
  class Sequence final : public KvSequence {
   public:
    KvCache cache;

    Expected<std::unique_ptr<KvSequence>> clone() const override {
      std::unique_ptr<Sequence> copy(new (std::nothrow) Sequence());
      if (!copy || !copy->cache.init_like(cache)) {
        return make_error(ErrorCode::kOutOfMemory, "fork: a copy of the KV cache (%.1f MiB) could not be allocated",
                          static_cast<double>(cache.bytes()) / (1 << 20));
      }
      copy->cache.copy_from(cache);
      copy->n_past_ = n_past_;
      copy->window_ = window_;
      copy->kv_capacity_ = kv_capacity_;
      copy->owner_ = owner_;
      return std::unique_ptr<KvSequence>(std::move(copy));
    }
    uint64_t state_bytes() const override { return cache.bytes(); }
    std::vector<uint8_t> save_state() const override {
      std::vector<uint8_t> bytes(static_cast<size_t>(cache.bytes()));
      cache.save_to(bytes.data());
      return bytes;
    }
    Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) override {
      if (size != cache.bytes() || n_past < 0) {
        return make_error(ErrorCode::kFormat, "session state holds %llu cache bytes, this context needs %llu",
                          (unsigned long long)size, (unsigned long long)cache.bytes());
      }
      cache.load_from(data);
      n_past_ = n_past;
      return Status();
    }

   private:
    friend class Transformer;
  };

  // Buffers sized once for n_batch tokens, and the thread pool.
  class StepWorkspace final : public Workspace {
   public:
    std::unique_ptr<ThreadPool> pool;
    PageBuffer<float> x, normed, q, k, v, attended, projected, gate, up, gathered, expert_out, router_logits,
        chosen_weights, routed_weights, attention_scratch, attention_partials;
    PageBuffer<int32_t> chosen, routed_tokens;
    PageBuffer<int64_t> positions;
    PageBuffer<RowGroup> groups, expert_groups, logit_groups;
    PageBuffer<SwiGLUPass> expert_passes;
    PageBuffer<LinearJob> expert_jobs;
    PageBuffer<uint8_t> quantized;  // int8 activations (fast path)
    PageBuffer<uint8_t> quantized_residual;  // their second level, for the attention projections
    PageBuffer<float> residual_products;     // products of the second level (prefill)
    std::vector<AttentionChunk> chunks;
    std::vector<const KvCache*> chunk_caches;
    int64_t attention_keys = 0;      // the most keys attention_partials has room for, per chunk
    int64_t attention_chunks = 0;    // and for how many chunks
    int threads = 1;

   private:
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
    if (FeedForward::kSparse) {
      const int64_t k = FeedForward::experts_per_token(c);
      if (k < 1 || k > c.n_experts) {
        return make_error(ErrorCode::kInvalidArgument,
                          "%s: the routing picks %lld experts per token, but the file has %lld experts",
                          files.path().c_str(), (long long)k, (long long)c.n_experts);
      }
    }
    if (params.progress_callback && !params.progress_callback(0.5f, params.progress_user_data))
      return make_error(ErrorCode::kCancelled, "%s: loading cancelled", files.path().c_str());
    tile_matrix_rows(files);
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

  uint64_t weight_bytes_per_token() const override {
    const ModelConfig& c = config();
    return weight_bytes_per_step(static_cast<double>(std::min<int64_t>(FeedForward::experts_per_token(c), c.n_experts)));
  }
  uint64_t weight_bytes_per_step(double experts_read) const override {
    const ModelConfig& c = config();
    uint64_t bytes = weights_.output.bytes, experts = 0;
    for (const LayerWeights& l : weights_.layers) {
      for (const TensorView* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3, &l.router}) bytes += m->bytes;
      for (const std::vector<TensorView>* role : {&l.expert_w1, &l.expert_w2, &l.expert_w3})
        for (const TensorView& expert : *role) experts += expert.bytes;
    }
    if (c.n_experts > 0) {
      const double read = std::min(std::max(experts_read, 0.0), static_cast<double>(c.n_experts));
      bytes += static_cast<uint64_t>(static_cast<double>(experts / static_cast<uint64_t>(c.n_experts)) * read + 0.5);
    }
    return bytes;
  }

  Expected<std::unique_ptr<KvSequence>> create_sequence(const SequenceParams& params) const override {
    const ModelConfig& c = config();
    if (params.n_ctx <= 0) {
      return make_error(ErrorCode::kInvalidArgument, "sequence: n_ctx must be positive (n_ctx %lld)",
                        (long long)params.n_ctx);
    }
    std::unique_ptr<Sequence> sequence(new (std::nothrow) Sequence());
    if (!sequence) return make_error(ErrorCode::kOutOfMemory, "sequence: out of memory");
    int64_t window = Attention::mask::kUsesFileWindow ? c.sliding_window : 0;
    if (params.sliding_window >= 0) window = params.sliding_window;
    sequence->window_ = window;
    sequence->kv_capacity_ = window > 0 ? std::min(window, params.n_ctx) : params.n_ctx;
    if (!KvCache::supports(c.head_dim)) {
      return make_error(ErrorCode::kUnsupported, "context: a %s KV cache needs a head size that is a multiple of 32, "
                        "this model's is %lld", KvCache::element::name, (long long)c.head_dim);
    }
    if (!sequence->cache.init(c.n_layers, c.n_kv_heads, c.head_dim, sequence->kv_capacity_)) {
      const double gib = KvCache::bytes_for(c.n_layers, c.n_kv_heads, c.head_dim, sequence->kv_capacity_) / (1 << 30);
      return make_error(ErrorCode::kOutOfMemory,
                        "context: the KV cache for %lld positions needs %.1f GiB, which could not be allocated",
                        (long long)sequence->kv_capacity_, gib);
    }
    sequence->owner_ = this;
    return std::unique_ptr<KvSequence>(std::move(sequence));
  }

  Expected<std::unique_ptr<Workspace>> create_workspace(const WorkspaceParams& params) const override {
    const ModelConfig& c = config();
    if (params.n_batch <= 0 || params.n_threads <= 0 || params.n_threads_batch < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "context: n_batch and n_threads must be positive (n_batch %lld, n_threads %d)",
                        (long long)params.n_batch, params.n_threads);
    }
    // Sizes below come from the caller (n_batch, threads) and the file (widths, experts), so every
    // product is checked and every allocation can fail with an error instead of an exception.
    constexpr int kMaxThreads = 1024;
    if (params.n_threads > kMaxThreads || params.n_threads_batch > kMaxThreads) {
      return make_error(ErrorCode::kInvalidArgument, "context: at most %d threads (asked for %d and %d)", kMaxThreads,
                        params.n_threads, params.n_threads_batch);
    }
    const int64_t k = FeedForward::kSparse ? FeedForward::experts_per_token(c) : 1;  // checked by load()
    std::unique_ptr<StepWorkspace> ws(new (std::nothrow) StepWorkspace());
    if (!ws) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    ws->params_ = params;
    if (ws->params_.n_threads_batch == 0) ws->params_.n_threads_batch = params.n_threads;
    if (params.host_threads.run != nullptr) {
      const int host = std::max(1, params.host_threads.n_threads);
      ws->params_.n_threads = std::min(ws->params_.n_threads, host);
      ws->params_.n_threads_batch = std::min(ws->params_.n_threads_batch, host);
    }
    ws->threads = std::max(ws->params_.n_threads, ws->params_.n_threads_batch);
    const int64_t n = params.n_batch, dim = c.dim, q_dim = c.n_heads * c.head_dim,
                  kv_dim = c.n_kv_heads * c.head_dim, hidden = c.hidden_dim;
    // Allocates rows * width values, or names the buffer that did not fit.
    const char* failed = nullptr;
    auto sized = [&failed](auto& buffer, int64_t rows, int64_t width, const char* what) {
      uint64_t count = 0;
      if (failed != nullptr) return;
      if (rows < 0 || width < 0 ||
          !bytes_detail::checked_mul(static_cast<uint64_t>(rows), static_cast<uint64_t>(width), &count) ||
          !buffer.reset(count)) {
        failed = what;
      }
    };
    sized(ws->x, n, dim, "activations");
    sized(ws->normed, n, dim, "activations");
    sized(ws->q, n, q_dim, "queries");
    sized(ws->k, n, kv_dim, "keys");
    sized(ws->v, n, kv_dim, "values");
    sized(ws->attended, n, q_dim, "attention output");
    sized(ws->projected, n, dim, "activations");
    sized(ws->gate, n, hidden, "feed-forward activations");
    sized(ws->up, n, hidden, "feed-forward activations");
    sized(ws->positions, n, 1, "positions");
    sized(ws->groups, n, 1, "batch layout");
    sized(ws->logit_groups, n, 1, "batch layout");
    sized(ws->attention_scratch, ws->threads, Attention::scratch_floats_per_thread(c.n_heads, c.n_kv_heads, c.head_dim),
          "attention");
    if (!params.f32_activations) {
      const int64_t q8_row_bytes_wide = ops::q8_row_bytes((std::max(std::max(dim, q_dim), hidden) + 31) / 32 * 32);
      const int64_t q8_row_bytes_narrow = ops::q8_row_bytes((std::max(dim, q_dim) + 31) / 32 * 32);
      sized(ws->quantized, n, q8_row_bytes_wide, "int8 activations");
      sized(ws->quantized_residual, n, q8_row_bytes_narrow, "int8 activations");
      // Only prompts on attention projections outside row tiles need room for a second pass.
      bool untiled_projection = false;
      for (const LayerWeights& l : weights_.layers)
        for (const TensorView* p : {&l.wq, &l.wk, &l.wv, &l.wo})
          untiled_projection = untiled_projection || (is_block_quantized(p->type) && !p->row_tiles);
      if (untiled_projection)
        sized(ws->residual_products, n, std::max(std::max(q_dim, kv_dim), dim), "int8 activations");
    }
    if (FeedForward::kSparse) {
      sized(ws->gathered, n, dim, "expert activations");
      sized(ws->expert_out, n, dim, "expert activations");
      sized(ws->router_logits, n, c.n_experts, "router logits");
      sized(ws->chosen_weights, n, k, "routing");
      sized(ws->routed_weights, n, k, "routing");
      sized(ws->chosen, n, k, "routing");
      sized(ws->routed_tokens, n, k, "routing");
      sized(ws->expert_groups, n, 1, "routing");
      sized(ws->expert_passes, c.n_experts, 1, "routing");
      sized(ws->expert_jobs, c.n_experts, 2, "routing");
    }
    if (failed != nullptr) {
      return make_error(ErrorCode::kOutOfMemory, "context: the %s buffer for n_batch %lld could not be allocated",
                        failed, (long long)n);
    }
    // Last: a workspace that cannot be built starts no threads.
    if (params.host_threads.run != nullptr) {
      ws->pool.reset(new (std::nothrow) ThreadPool(params.host_threads));
    } else {
      ws->pool.reset(new (std::nothrow) ThreadPool(ws->threads));
    }
    if (!ws->pool) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    ws->owner_ = this;
    return std::unique_ptr<Workspace>(std::move(ws));
  }

  Status forward_batch(Workspace& base_workspace, const BatchSegment* segments, size_t count) const override {
    const ModelConfig& c = config();
    if (base_workspace.owner() != this) {
      return make_error(ErrorCode::kInvalidArgument, "forward: the workspace belongs to another model");
    }
    StepWorkspace& ws = static_cast<StepWorkspace&>(base_workspace);
    int64_t total = 0, most_keys = 0;
    for (size_t i = 0; i < count; ++i) {
      const BatchSegment& s = segments[i];
      if (s.sequence == nullptr || s.sequence->owner() != this) {
        return make_error(ErrorCode::kInvalidArgument, "forward: segment %zu has no sequence of this model", i);
      }
      if (s.n_tokens < 1 || s.tokens == nullptr) {
        return make_error(ErrorCode::kInvalidArgument, "forward: segment %zu has no tokens", i);
      }
      for (int64_t t = 0; t < s.n_tokens; ++t) {
        if (s.tokens[t] < 0 || s.tokens[t] >= c.vocab_size) {
          return make_error(ErrorCode::kInvalidArgument, "token %d at index %lld is outside the vocabulary (%lld)",
                            s.tokens[t], (long long)t, (long long)c.vocab_size);
        }
      }
      for (size_t j = 0; j < i; ++j) {
        if (segments[j].sequence == s.sequence) {
          return make_error(ErrorCode::kInvalidArgument, "forward: segments %zu and %zu are the same sequence", j, i);
        }
      }
      // Without a window every position needs its own slot; with one, the cache rolls forever
      // unless the window is larger than the context.
      if (!s.sequence->has_room_for(s.n_tokens)) {
        return make_error(ErrorCode::kContextFull,
                          "context full: %lld positions used, %lld more requested, room for %lld",
                          (long long)s.sequence->n_past(), (long long)s.n_tokens,
                          (long long)s.sequence->kv_capacity());
      }
      total += s.n_tokens;
      most_keys = std::max(most_keys, s.sequence->kv_capacity());
    }
    if (total > ws.n_batch()) {
      return make_error(ErrorCode::kInvalidArgument, "forward: %lld tokens in one step, the workspace holds %lld",
                        (long long)total, (long long)ws.n_batch());
    }
    if (total == 0) return Status();
    if (most_keys > ws.attention_keys || static_cast<int64_t>(count) > ws.attention_chunks) {
      // The partial results grow with the longest cache and the most sequences the workspace has met.
      const int64_t keys = std::max(most_keys, ws.attention_keys);
      const int64_t chunks = std::max(static_cast<int64_t>(count), ws.attention_chunks);
      uint64_t floats = 0;
      if (!bytes_detail::checked_mul(
              static_cast<uint64_t>(Attention::partial_floats_per_chunk(c.n_heads, c.head_dim, keys)),
              static_cast<uint64_t>(chunks), &floats) ||
          !ws.attention_partials.reset(floats)) {
        ws.attention_keys = ws.attention_chunks = 0;
        return make_error(ErrorCode::kOutOfMemory,
                          "forward: attention scratch for %lld sequences of %lld keys could not be allocated",
                          (long long)chunks, (long long)keys);
      }
      ws.attention_keys = keys;
      ws.attention_chunks = chunks;
    }
    if (ws.chunks.size() < count) {
      // Reserved once per batch size; these vectors only grow.
      ws.chunks.resize(count);
      ws.chunk_caches.resize(count);
    }
    return forward_step(ws, segments, count, total);
  }

 private:
  Transformer(ModelFiles files, ModelWeights weights) : files_(std::move(files)), weights_(std::move(weights)) {}

  static bool aborted(const StepWorkspace& ws) {
    return ws.params_.abort_callback != nullptr && ws.params_.abort_callback(ws.params_.abort_user_data);
  }

  // One step through every layer: the segments' tokens stacked as rows, each segment a row group.
  Status forward_step(StepWorkspace& ws, const BatchSegment* segments, size_t count, int64_t n) const {
    const ModelConfig& c = config();
    const int64_t dim = c.dim, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    ThreadPool& pool = *ws.pool;
    const int threads = n == static_cast<int64_t>(count) ? ws.params_.n_threads : ws.params_.n_threads_batch;
    uint8_t* quantized = ws.quantized.empty() ? nullptr : ws.quantized.data();
    uint8_t* quantized_residual = ws.quantized_residual.empty() ? nullptr : ws.quantized_residual.data();
    RowGroup* groups = ws.groups.data();
    int64_t row = 0;
    for (size_t i = 0; i < count; ++i) {
      const BatchSegment& s = segments[i];
      groups[i] = RowGroup{row, s.n_tokens, nullptr};
      for (int64_t t = 0; t < s.n_tokens; ++t) {
        ws.positions[static_cast<size_t>(row + t)] = s.sequence->n_past() + t;
        const TensorView& e = weights_.token_embedding;
        dequantize_row(e.type, e.row(s.tokens[t]), ws.x.data() + (row + t) * dim, dim);
      }
      AttentionChunk& chunk = ws.chunks[i];
      chunk.first_position = s.sequence->n_past();
      chunk.n_tokens = s.n_tokens;
      chunk.n_heads = c.n_heads;
      chunk.n_kv_heads = c.n_kv_heads;
      chunk.head_dim = c.head_dim;
      chunk.window = s.sequence->window();
      chunk.q = ws.q.data() + row * q_dim;
      chunk.k = ws.k.data() + row * kv_dim;
      chunk.v = ws.v.data() + row * kv_dim;
      chunk.out = ws.attended.data() + row * q_dim;
      ws.chunk_caches[i] = &static_cast<Sequence*>(s.sequence)->cache;
      row += s.n_tokens;
    }
    AttentionScratch attention_scratch;
    attention_scratch.data = ws.attention_scratch.data();
    attention_scratch.per_thread = Attention::scratch_floats_per_thread(c.n_heads, c.n_kv_heads, c.head_dim);
    attention_scratch.max_threads = threads;
    attention_scratch.partials = ws.attention_partials.data();
    attention_scratch.partial_floats_per_chunk =
        Attention::partial_floats_per_chunk(c.n_heads, c.head_dim, ws.attention_keys);
    const int64_t* positions = ws.positions.data();

    for (int64_t l = 0; l < c.n_layers; ++l) {
      if (n > 1 && aborted(ws)) return make_error(ErrorCode::kCancelled, "prompt processing aborted at layer %lld", (long long)l);
      const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
      // Attention block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ws.x.data() + t * dim, w.attention_norm.data(), c.norm_eps, dim, ws.normed.data() + t * dim);
      }, threads);
      // The attention projections (q, k, v here, wo below) get near-exact activations on the fast
      // path (two int8 levels): q and k errors are amplified by the softmax over q.k, and this makes
      // the fast path several times closer to the reference (tests/model/test_fast_path_accuracy.cpp)
      // for a fifth of the weights.
      const Activations normed = quantize_activations_two_level(pool, threads, ws.normed.data(), n, dim, quantized,
                                                                quantized_residual);
      float* residual = ws.residual_products.empty() ? nullptr : ws.residual_products.data();
      linear(pool, threads, w.wq, normed, groups, count, ws.q.data(), residual);
      linear(pool, threads, w.wk, normed, groups, count, ws.k.data(), residual);
      linear(pool, threads, w.wv, normed, groups, count, ws.v.data(), residual);
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t) {
          ops::rope(ws.q.data() + t * q_dim, c.n_heads, c.head_dim, positions[t], c.rope_theta, c.rope_pairing);
          ops::rope(ws.k.data() + t * kv_dim, c.n_kv_heads, c.head_dim, positions[t], c.rope_theta, c.rope_pairing);
        }
      }, threads);
      for (size_t i = 0; i < count; ++i) ws.chunks[i].layer = l;
      Attention::forward(ws.chunks.data(), ws.chunk_caches.data(), count, attention_scratch, pool);
      // Only now may each chunk's keys overwrite older slots: its queries needed those.
      for (size_t i = 0; i < count; ++i) {
        const BatchSegment& s = segments[i];
        KvCache& cache = static_cast<Sequence*>(s.sequence)->cache;
        const int64_t first_row = groups[i].first_row, first = s.sequence->n_past();
        for (int64_t t = std::max<int64_t>(0, s.n_tokens - s.sequence->kv_capacity()); t < s.n_tokens; ++t)
          cache.store(l, first + t, ws.k.data() + (first_row + t) * kv_dim, ws.v.data() + (first_row + t) * kv_dim);
      }
      linear(pool, threads, w.wo,
             quantize_activations_two_level(pool, threads, ws.attended.data(), n, q_dim, quantized, quantized_residual),
             groups, count, ws.projected.data(), residual);
      for (int64_t i = 0; i < n * dim; ++i) ws.x[static_cast<size_t>(i)] += ws.projected[static_cast<size_t>(i)];

      // Feed-forward block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ws.x.data() + t * dim, w.ffn_norm.data(), c.norm_eps, dim, ws.normed.data() + t * dim);
      }, threads);
      FeedForwardScratch s;
      s.gate = ws.gate.data();
      s.up = ws.up.data();
      s.gathered = ws.gathered.data();
      s.expert_out = ws.expert_out.data();
      s.router_logits = ws.router_logits.data();
      s.routed_tokens = ws.routed_tokens.data();
      s.routed_weights = ws.routed_weights.data();
      s.chosen = ws.chosen.data();
      s.chosen_weights = ws.chosen_weights.data();
      s.expert_groups = ws.expert_groups.data();
      s.expert_passes = ws.expert_passes.data();
      s.expert_jobs = ws.expert_jobs.data();
      s.rows_capacity = ws.params_.n_batch;
      s.quantized = quantized;
      s.expert_trace = ws.params_.expert_trace;
      s.layer = l;
      s.positions = positions;
      s.max_threads = threads;
      FeedForward::forward(w, c, ws.normed.data(), groups, count, n, ws.projected.data(), s, pool);
      for (int64_t i = 0; i < n * dim; ++i) ws.x[static_cast<size_t>(i)] += ws.projected[static_cast<size_t>(i)];
    }
    for (size_t i = 0; i < count; ++i) static_cast<Sequence*>(segments[i].sequence)->n_past_ += segments[i].n_tokens;

    // Final norm and output head, for the rows whose logits were asked for: every row of a segment,
    // or just its last. Those rows are packed, each segment's still a group of its own.
    RowGroup* logit_groups = ws.logit_groups.data();
    size_t n_logit_groups = 0;
    int64_t rows = 0;
    for (size_t i = 0; i < count; ++i) {
      const BatchSegment& seg = segments[i];
      if (seg.logits == nullptr) continue;
      const int64_t first_row = seg.all_logits ? groups[i].first_row : groups[i].first_row + seg.n_tokens - 1;
      const int64_t n_rows = seg.all_logits ? seg.n_tokens : 1;
      for (int64_t t = 0; t < n_rows; ++t)
        ops::rmsnorm(ws.x.data() + (first_row + t) * dim, weights_.output_norm.data(), c.norm_eps, dim,
                     ws.normed.data() + (rows + t) * dim);
      logit_groups[n_logit_groups++] = RowGroup{rows, n_rows, seg.logits};
      rows += n_rows;
    }
    if (rows > 0) {
      linear(pool, threads, weights_.output, quantize_activations(pool, threads, ws.normed.data(), rows, dim, quantized),
             logit_groups, n_logit_groups, nullptr);
    }
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
// The same with a q8_0 cache: half the bytes of f16, for long contexts (`--kv-type q8_0`).
using Mistral7BQ8Cache = Transformer<GroupedQueryAttention<SlidingWindow>, RollingKvCache<q8_0>, DenseSwiGLU>;
using Mixtral8x7BQ8Cache = Transformer<GroupedQueryAttention<CausalAttention>, RollingKvCache<q8_0>, SparseMoE<>>;

}  // namespace bora

#endif  // BORA_MODEL_PRESETS_HPP
// ---- end bora/model/presets.hpp ----------------------------------------------------------------------

namespace bora {

// A model path may be `ollama:NAME[:TAG]`, resolved through the Ollama model store.
inline Expected<ModelFiles> open_model_files(const std::string& path, FileAccess access = FileAccess::kRead,
                                             const ReadProgress& progress = {}) {
  if (path.rfind("ollama:", 0) == 0) {
    auto blob = resolve_ollama_model(path.substr(7));
    if (!blob) return blob.error();
    return ModelFiles::open(*blob, access, progress);
  }
  return ModelFiles::open(path, access, progress);
}

inline FileAccess file_access(const LoadParams& params) { return params.use_mmap ? FileAccess::kMap : FileAccess::kRead; }

// Opens a model path as LoadParams ask: mapped or read, with reading reported as the first half of the
// load progress (binding the weights is the second), so a cancel interrupts a multi-gigabyte read.
inline Expected<ModelFiles> open_model_files(const std::string& path, const LoadParams& params) {
  LoadParams caller = params;  // lives through the read below; the callback gets a pointer to it
  ReadProgress reading;
  if (caller.progress_callback != nullptr) {
    reading.user_data = &caller;
    reading.callback = [](uint64_t done, uint64_t total, void* user_data) {
      const LoadParams* p = static_cast<const LoadParams*>(user_data);
      const float fraction = total == 0 ? 0.5f : 0.5f * static_cast<float>(static_cast<double>(done) / total);
      return p->progress_callback(fraction, p->progress_user_data);
    };
  }
  return open_model_files(path, file_access(params), reading);
}

// Opens `files` as the composition `Preset` (weights only).
template <class Preset>
Expected<std::unique_ptr<Preset>> load_model(ModelFiles files, const LoadParams& params = {}) {
  return Preset::load(std::move(files), params);
}

// Opens `path` (a .gguf file, a model folder, or ollama:NAME[:TAG]) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<Preset>> load_model(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load_model<Preset>(std::move(*files), params);
}

// Opens any supported model's weights, choosing dense or mixture-of-experts from the file and the
// cache element type from params.kv_cache_type.
inline Expected<std::unique_ptr<Model>> load_any_model(ModelFiles files, const LoadParams& params = {}) {
  const bool sparse = files.config().n_experts > 0;
  auto erase = [](auto loaded) -> Expected<std::unique_ptr<Model>> {
    if (!loaded) return loaded.error();
    return std::unique_ptr<Model>(std::move(*loaded));
  };
  switch (params.kv_cache_type) {
    case KvCacheType::kF32:
      return sparse ? erase(load_model<Mixtral8x7BExact>(std::move(files), params))
                    : erase(load_model<Mistral7BExact>(std::move(files), params));
    case KvCacheType::kQ8_0:
      return sparse ? erase(load_model<Mixtral8x7BQ8Cache>(std::move(files), params))
                    : erase(load_model<Mistral7BQ8Cache>(std::move(files), params));
    default:
      return sparse ? erase(load_model<Mixtral8x7B>(std::move(files), params))
                    : erase(load_model<Mistral7B>(std::move(files), params));
  }
}

inline Expected<std::unique_ptr<Model>> load_any_model(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load_any_model(std::move(*files), params);
}

}  // namespace bora

#endif  // BORA_MODEL_LOAD_HPP
// ---- end bora/model/load.hpp -------------------------------------------------------------------------
// ---- begin bora/text/chat_request.hpp ----------------------------------------------------------------
// Why this file exists: conversations arrive as JSON in mistral-common's request format
// ({"messages": [{"role": ..., "content": ...}, ...], "tools": [...]}, assistant "tool_calls" and "tool"
// messages as OpenAI writes them); this reads one into ChatMessages.
#ifndef BORA_TEXT_CHAT_REQUEST_HPP
#define BORA_TEXT_CHAT_REQUEST_HPP

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

// ---- begin bora/text/chat_template.hpp ---------------------------------------------------------------
// Why this file exists: an instruct model only answers well when the conversation is laid out in the
// exact tokens it was trained on; this renders messages the way Mistral's own tooling
// (mistral-common's instruct tokenizers v1, v2 and v3, with function calling for v2/v3) does, and
// picks the version from the model file.
//
// The rules, as mistral-common applies them to a chat request:
//   * system messages are taken out of the conversation and joined with "\n\n" into one system prompt;
//   * consecutive messages of the same role are joined with "\n\n" (empty contents are skipped);
//   * a conversation that does not start with a user message gets an empty user message in front;
//   * v1: [BOS], each user turn is the plain text "[INST] " + content + " [/INST]" (so its "[INST]" is
//     ordinary pieces), the system prompt goes in front of the FIRST user message;
//   * v2/v3: [BOS], each user turn is the control token [INST] + content + control token [/INST],
//     the system prompt goes in front of the LAST user message; assistant text loses trailing spaces;
//   * every assistant turn ends with [EOS], except a final one being continued.
// With tools (v2/v3 only; v1 has no tool tokens): [AVAILABLE_TOOLS] json [/AVAILABLE_TOOLS] right before
// the LAST user turn's [INST]; an assistant's calls are [TOOL_CALLS] json [EOS]; a tool's result is
// [TOOL_RESULTS] json [/TOOL_RESULTS] (v2 a list of {name, content}, v3 {content, call_id}); v2 drops
// calls and results older than the last user turn. JSON is spelled as Python's json.dumps (tool_calls.hpp).
// A conversation ending with a user turn (or a tool result) is a prompt ready for generation.
#ifndef BORA_TEXT_CHAT_TEMPLATE_HPP
#define BORA_TEXT_CHAT_TEMPLATE_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- begin bora/text/tokenizer.hpp -------------------------------------------------------------------
// Why this file exists: a prompt must become exactly the ids Mistral's own SentencePiece tokenizer
// produces (and ids must become text again, also one token at a time while generating), from either
// a tokenizer.model file or a GGUF vocabulary, fast enough that tokenizing never shows up in a profile.
// This is the face users include; the parts live beside it:
//   text/normalizer.hpp   text -> "▁"-escaped text before encoding, and back for each decoded piece;
//   text/bpe_model.hpp    the vocabulary's merge tables and SentencePiece's BPE merge loop;
//   text/piece_index.hpp  the flat hash tables both of those look pieces up in.
// Encoding is const and keeps no state between calls: one Tokenizer serves many threads.
#ifndef BORA_TEXT_TOKENIZER_HPP
#define BORA_TEXT_TOKENIZER_HPP

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- begin bora/text/bpe_model.hpp -------------------------------------------------------------------
// Why this file exists: the heart of encoding, SentencePiece's BPE (bpe_model.cc) step for step over
// normalized text: split into characters, except that user-defined pieces ([REFERENCE_DOC_3]) are
// matched whole (longest first) and never merged further; repeatedly merge the adjacent pair whose
// concatenation is a piece with the highest score (ties: leftmost), using a priority queue over a
// linked list of symbols; pieces not in the vocabulary fall back to their UTF-8 bytes as <0xXX> pieces.
// Two things make it faster than SentencePiece while giving the same ids: the merge step looks pairs
// up by integer keys (left symbol, right symbol) -> merged piece, a table built once from the
// vocabulary, instead of hashing concatenated strings; and the text is cut into independent
// segments wherever no piece could ever span the cut (see encode_normalized), so the priority queue
// stays small. Encoding is const and keeps no state between calls.
#ifndef BORA_TEXT_BPE_MODEL_HPP
#define BORA_TEXT_BPE_MODEL_HPP

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

// ---- begin bora/text/piece_index.hpp -----------------------------------------------------------------
// Why this file exists: building the tokenizer's tables does hundreds of thousands of lookups and
// encoding one per character pair, so the tokenizer has its own flat hash tables (64-bit key -> id,
// piece string -> id) tuned for that, instead of std::unordered_map.
#ifndef BORA_TEXT_PIECE_INDEX_HPP
#define BORA_TEXT_PIECE_INDEX_HPP

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace bora {

namespace tokenizer_detail {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDull;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ull;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(const char* data, size_t size) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (size * 0x100000001B3ull);
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    h = (h ^ word) * 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
    data += 8;
    size -= 8;
  }
  if (size > 0) {
    uint64_t word = 0;
    std::memcpy(&word, data, size);
    h = (h ^ word) * 0x9FB21C651E98DF25ull;
  }
  return mix64(h);
}

inline size_t table_capacity_for(size_t count) {
  size_t capacity = 16;
  while (capacity < count * 2 + 1) capacity *= 2;
  return capacity;
}

// Open-addressing map from 64-bit keys to non-negative int32 values; grows itself. Key and value
// share a slot so a lookup touches one cache line.
class U64Map {
 public:
  int32_t find(uint64_t key) const {
    if (slots_.empty()) return -1;
    size_t index = static_cast<size_t>(mix64(key)) & mask_;
    while (slots_[index].value >= 0) {
      if (slots_[index].key == key) return slots_[index].value;
      index = (index + 1) & mask_;
    }
    return -1;
  }

  // Keeps the existing value when the key is present; returns the value stored.
  int32_t insert(uint64_t key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(table_capacity_for(size_ + 1 > 8 ? size_ * 2 : 8));
    size_t index = static_cast<size_t>(mix64(key)) & mask_;
    while (slots_[index].value >= 0) {
      if (slots_[index].key == key) return slots_[index].value;
      index = (index + 1) & mask_;
    }
    slots_[index].key = key;
    slots_[index].value = value;
    ++size_;
    return value;
  }

  void reserve(size_t count) {
    if (table_capacity_for(count) > slots_.size()) rehash(table_capacity_for(count));
  }

  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key = 0;
    int32_t value = -1;
  };

  void rehash(size_t capacity) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    size_ = 0;
    for (const Slot& slot : old) {
      if (slot.value >= 0) insert(slot.key, slot.value);
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Piece string -> id, over ids chosen by the caller. The index keeps its own contiguous copy of
// the strings, so a lookup touches one slot and a few bytes nearby (building the merge table does
// hundreds of thousands of lookups), and copying or moving the owner never leaves a dangling view.
class PieceIndex {
 public:
  // Indexes the accepted ids; `indexed[id]` says whether id went in (the first of equal strings wins).
  template <class Accept>
  void build(const std::vector<std::string>& pieces, Accept accept, std::vector<uint8_t>* indexed) {
    indexed->assign(pieces.size(), 0);
    size_t count = 0;
    size_t bytes = 0;
    for (size_t id = 0; id < pieces.size(); ++id) {
      if (!accept(static_cast<int32_t>(id))) continue;
      ++count;
      bytes += pieces[id].size();
    }
    const size_t capacity = table_capacity_for(count);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    arena_.clear();
    arena_.reserve(bytes);
    for (size_t id = 0; id < pieces.size(); ++id) {
      if (!accept(static_cast<int32_t>(id))) continue;
      const std::string& piece = pieces[id];
      const uint64_t hash = hash_bytes(piece.data(), piece.size());
      size_t slot = static_cast<size_t>(hash) & mask_;
      bool duplicate = false;
      while (slots_[slot].id >= 0) {
        if (matches(slots_[slot], static_cast<uint32_t>(hash >> 32), piece.data(), piece.size())) {
          duplicate = true;  // the first id with a given string wins
          break;
        }
        slot = (slot + 1) & mask_;
      }
      if (duplicate) continue;
      slots_[slot] = Slot{static_cast<int32_t>(id), static_cast<uint32_t>(hash >> 32),
                          static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(piece.size())};
      arena_.insert(arena_.end(), piece.begin(), piece.end());
      (*indexed)[id] = 1;
    }
  }

  int32_t find(const char* data, size_t size) const {
    if (slots_.empty()) return -1;
    const uint64_t hash = hash_bytes(data, size);
    const uint32_t tag = static_cast<uint32_t>(hash >> 32);
    size_t slot = static_cast<size_t>(hash) & mask_;
    while (slots_[slot].id >= 0) {
      if (matches(slots_[slot], tag, data, size)) return slots_[slot].id;
      slot = (slot + 1) & mask_;
    }
    return -1;
  }

 private:
  struct Slot {
    int32_t id = -1;
    uint32_t tag = 0;
    uint32_t offset = 0;  // of the string in arena_
    uint32_t length = 0;
  };

  bool matches(const Slot& slot, uint32_t tag, const char* data, size_t size) const {
    return slot.tag == tag && slot.length == size && std::memcmp(arena_.data() + slot.offset, data, size) == 0;
  }

  std::vector<Slot> slots_;
  std::vector<char> arena_;
  size_t mask_ = 0;
};

}  // namespace tokenizer_detail

}  // namespace bora

#endif  // BORA_TEXT_PIECE_INDEX_HPP
// ---- end bora/text/piece_index.hpp -------------------------------------------------------------------
// ---- begin bora/text/utf8.hpp ------------------------------------------------------------------------
// Why this file exists: the tokenizer and the streaming decoder must agree with SentencePiece on what
// counts as one UTF-8 character and what is malformed, byte for byte; these few rules live here once.
#ifndef BORA_TEXT_UTF8_HPP
#define BORA_TEXT_UTF8_HPP

#include <cstddef>
#include <cstdint>
#include <string>

namespace bora {
namespace utf8 {

// U+FFFD, what SentencePiece substitutes for every malformed byte (when encoding and decoding).
constexpr const char kReplacementCharacter[] = "\xEF\xBF\xBD";

// Length a character claims from its first byte alone (SentencePiece's OneCharLen): continuation
// bytes and 0xF8..0xFF claim 1, so a walk over arbitrary bytes always advances.
inline size_t length_from_lead_byte(uint8_t lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  if (lead < 0xF8) return 4;
  return 1;
}

inline bool is_continuation_byte(uint8_t byte) { return (byte & 0xC0) == 0x80; }

inline bool is_valid_code_point(uint32_t code_point) {
  return code_point < 0xD800 || (code_point >= 0xE000 && code_point <= 0x10FFFF);
}

// Strict decoding of the character at `data` (no overlong forms, no surrogates, nothing above
// U+10FFFF). Returns true and sets `length` for a valid character; false with `length` = 1 otherwise.
inline bool decode_one(const uint8_t* data, size_t size, size_t* length, uint32_t* code_point = nullptr) {
  *length = 1;
  if (size == 0) return false;
  const uint8_t lead = data[0];
  uint32_t value = 0;
  size_t needed = 0;
  uint32_t minimum = 0;
  if (lead < 0x80) {
    if (code_point) *code_point = lead;
    return true;
  } else if ((lead & 0xE0) == 0xC0) {
    value = lead & 0x1F;
    needed = 2;
    minimum = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    value = lead & 0x0F;
    needed = 3;
    minimum = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    value = lead & 0x07;
    needed = 4;
    minimum = 0x10000;
  } else {
    return false;
  }
  if (size < needed) return false;
  for (size_t i = 1; i < needed; ++i) {
    if (!is_continuation_byte(data[i])) return false;
    value = (value << 6) | (data[i] & 0x3F);
  }
  if (value < minimum || !is_valid_code_point(value)) return false;
  *length = needed;
  if (code_point) *code_point = value;
  return true;
}

// For a stream that may still grow: true when `data[0..size)` is the proper beginning of some valid
// character, so a decoder must wait for more bytes before deciding. The completions of a prefix form
// one interval of code points; the valid set is hit by that interval iff its lowest or highest
// completion is valid (checked on the actual intervals of 2-, 3- and 4-byte forms).
inline bool is_incomplete_prefix(const uint8_t* data, size_t size) {
  if (size == 0) return false;
  const size_t needed = length_from_lead_byte(data[0]);
  if (needed <= 1 || size >= needed || data[0] < 0xC0) return false;
  uint8_t low[4];
  uint8_t high[4];
  for (size_t i = 0; i < needed; ++i) {
    low[i] = i < size ? data[i] : 0x80;
    high[i] = i < size ? data[i] : 0xBF;
  }
  size_t length = 0;
  return decode_one(low, needed, &length) || decode_one(high, needed, &length);
}

// Appends the UTF-8 form of a code point (callers pass valid code points).
inline void append_code_point(std::string& out, uint32_t code_point) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

// Appends bytes as text the way SentencePiece turns a run of byte pieces into a string: valid
// characters are copied, every malformed byte becomes U+FFFD.
inline void append_bytes_as_text(std::string& out, const uint8_t* data, size_t size) {
  size_t offset = 0;
  while (offset < size) {
    size_t length = 0;
    if (decode_one(data + offset, size - offset, &length)) {
      out.append(reinterpret_cast<const char*>(data + offset), length);
    } else {
      out.append(kReplacementCharacter);
    }
    offset += length;
  }
}

inline bool is_valid(const char* data, size_t size) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data);
  size_t offset = 0;
  while (offset < size) {
    size_t length = 0;
    if (!decode_one(bytes + offset, size - offset, &length)) return false;
    offset += length;
  }
  return true;
}

}  // namespace utf8
}  // namespace bora

#endif  // BORA_TEXT_UTF8_HPP
// ---- end bora/text/utf8.hpp --------------------------------------------------------------------------

namespace bora {

namespace tokenizer_detail {

// A character's bytes packed with its length: distinct characters get distinct keys.
inline uint64_t char_key(const uint8_t* data, size_t size) {
  uint64_t key = static_cast<uint64_t>(size) << 32;
  for (size_t i = 0; i < size; ++i) key |= static_cast<uint64_t>(data[i]) << (8 * (size - 1 - i));
  return key;
}

// What the encoder knows about one character before any merge.
struct CharInfo {
  int32_t merge_key = -1;  // id of the piece it is (or a pseudo key >= vocab size), -1: never merges
  int32_t output_id = -1;  // id emitted when it stays alone; -1: unknown -> byte fallback
};

inline int parse_byte_piece(const std::string& piece) {  // "<0x0A>" -> 10, anything else -> -1
  if (piece.size() != 6 || piece[0] != '<' || piece[1] != '0' || piece[2] != 'x' || piece[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = piece[static_cast<size_t>(i)];
    int digit;
    if (c >= '0' && c <= '9') digit = c - '0';
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else return -1;
    value = value * 16 + digit;
  }
  return value;
}

// The vocabulary plus the tables its BPE merges are looked up in. Tokenizer owns one; moving it
// moves the tables with the vocabulary they were built from.
class BpeModel {
 public:
  // Takes a vocabulary that passed validate_vocabulary() and builds the tables (tens of
  // milliseconds for 32k pieces).
  void build(Vocabulary vocab) {
    vocab_ = std::move(vocab);
    build_tables();
  }

  const Vocabulary& vocabulary() const { return vocab_; }

  // Appends the ids of already normalized text.
  void encode_normalized(const uint8_t* text, size_t size, std::vector<int32_t>* out) const;

  // SentencePiece's PieceToId: reserved pieces (control, unknown, byte) first, then the others.
  int32_t piece_to_id(const char* data, size_t size, int32_t absent) const {
    int32_t id = reserved_index_.find(data, size);
    if (id >= 0) return id;
    id = mergeable_index_.find(data, size);
    return id >= 0 ? id : absent;
  }

  // The byte a byte piece stands for, else -1; `id` must be in the vocabulary.
  int byte_value(int32_t id) const { return byte_value_[static_cast<size_t>(id)]; }

 private:
  struct Symbol {
    int32_t prev;
    int32_t next;
    uint32_t begin;   // byte offset in the normalized text, from the start of the segment
    uint32_t length;  // 0 once merged into its left neighbour
    int32_t merge_key;
    int32_t output_id;
  };

  // A proposed merge of symbol `left` with its right neighbour. The neighbour is not stored: while
  // `left` is unchanged its neighbour is the same symbol, and once `left` has grown the lengths no
  // longer add up (symbols only ever grow), which is how stale proposals are recognised.
  struct Candidate {
    float score;
    int32_t left;
    int32_t merged;
    uint32_t length;  // bytes of the merged piece
  };

  // Max-heap order: higher score first, then the leftmost pair (SentencePiece's tie rule).
  struct CandidateLess {
    bool operator()(const Candidate& a, const Candidate& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  static bool is_mergeable_type(int32_t type) {
    return type == token_type::kNormal || type == token_type::kUserDefined || type == token_type::kUnused;
  }
  static bool is_reserved_type(int32_t type) { return !is_mergeable_type(type); }

  void build_tables();
  int32_t merge_of(const Symbol& left, const Symbol& right) const {
    if (left.merge_key < 0 || right.merge_key < 0) return -1;
    return pair_to_merged_.find(pair_key(left.merge_key, right.merge_key));
  }
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  void merge_segment(std::vector<Symbol>& symbols, std::vector<Candidate>& heap,
                     std::unordered_map<int32_t, uint32_t>& unused_splits) const;
  size_t match_user_defined(const uint8_t* text, size_t size, int32_t* id) const;
  void emit(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length,
            const std::unordered_map<int32_t, uint32_t>& unused_splits, bool* previous_unknown,
            std::vector<int32_t>* out) const;
  void emit_one(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length, bool* previous_unknown,
                std::vector<int32_t>* out) const;
  CharInfo* char_info_for_build(const char* data, size_t size);
  CharInfo char_info(const uint8_t* data, size_t size) const {
    if (size == 1 && data[0] < 0x80) return ascii_[data[0]];
    const int32_t slot = char_slots_.find(char_key(data, size));
    return slot >= 0 ? char_infos_[static_cast<size_t>(slot)] : CharInfo{};
  }

  Vocabulary vocab_;
  PieceIndex reserved_index_;     // control, unknown and byte pieces
  PieceIndex mergeable_index_;    // normal, user-defined and unused pieces
  U64Map pair_to_merged_;         // (left key << 32 | right key) -> merged piece id
  U64Map bigrams_;                // adjacent character keys seen inside some piece
  bool split_segments_ = true;    // false when unused pieces make segments interact
  U64Map char_slots_;             // non-ASCII character -> index into char_infos_
  std::vector<CharInfo> char_infos_;
  CharInfo ascii_[128];
  int32_t byte_ids_[256];                  // <0xXX> piece ids (-1 when the vocabulary lacks one)
  std::vector<int16_t> byte_value_;        // per id: the byte a byte piece stands for, else -1
  std::vector<int32_t> user_defined_ids_;  // grouped by first byte, longest first within a group
  uint32_t user_defined_begin_[257];       // group of first byte b: [begin[b], begin[b+1])
  bool has_unused_ = false;
  int32_t next_pseudo_key_ = 0;
};

inline CharInfo* BpeModel::char_info_for_build(const char* data, size_t size) {
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data);
  CharInfo* info = nullptr;
  if (size == 1 && bytes[0] < 0x80) {
    info = &ascii_[bytes[0]];
  } else {
    const uint64_t key = char_key(bytes, size);
    int32_t slot = char_slots_.find(key);
    if (slot < 0) {
      slot = char_slots_.insert(key, static_cast<int32_t>(char_infos_.size()));
      CharInfo fresh;
      fresh.merge_key = mergeable_index_.find(data, size);
      const int32_t id = piece_to_id(data, size, -1);
      fresh.output_id = (id >= 0 && vocab_.types[static_cast<size_t>(id)] != token_type::kUnknown) ? id : -1;
      char_infos_.push_back(fresh);
    }
    info = &char_infos_[static_cast<size_t>(slot)];
  }
  return info;
}

inline void BpeModel::build_tables() {
  const std::vector<std::string>& pieces = vocab_.pieces;
  const std::vector<int32_t>& types = vocab_.types;
  const size_t n = pieces.size();
  std::vector<uint8_t> reserved_first;   // per id: indexed (the first reserved piece with its string)
  std::vector<uint8_t> mergeable_first;  // per id: indexed (the first mergeable piece with its string)
  reserved_index_.build(pieces, [&](int32_t id) { return is_reserved_type(types[static_cast<size_t>(id)]); },
                        &reserved_first);
  mergeable_index_.build(pieces, [&](int32_t id) { return is_mergeable_type(types[static_cast<size_t>(id)]); },
                         &mergeable_first);

  byte_value_.assign(n, -1);
  for (size_t id = 0; id < n; ++id) {
    if (types[id] == token_type::kByte) byte_value_[id] = static_cast<int16_t>(parse_byte_piece(pieces[id]));
    if (types[id] == token_type::kUnused) has_unused_ = true;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    byte_ids_[b] = piece_to_id(name, 6, -1);
  }

  for (int c = 0; c < 128; ++c) {
    const char ch = static_cast<char>(c);
    ascii_[c].merge_key = mergeable_index_.find(&ch, 1);
    const int32_t id = piece_to_id(&ch, 1, -1);
    ascii_[c].output_id = (id >= 0 && types[static_cast<size_t>(id)] != token_type::kUnknown) ? id : -1;
  }
  for (size_t id = 0; id < n; ++id) {  // every piece that is a single character
    const std::string& p = pieces[id];
    if (utf8::length_from_lead_byte(static_cast<uint8_t>(p[0])) == p.size()) char_info_for_build(p.data(), p.size());
  }

  // A merge joins two adjacent symbols, each either a mergeable piece or a single character; so
  // every way to cut a piece at a character boundary into two such halves is one merge rule.
  // Characters that appear inside pieces without being pieces themselves get pseudo keys above the
  // vocabulary so they can take part in merges too.
  next_pseudo_key_ = static_cast<int32_t>(n);
  pair_to_merged_.reserve(2 * n);
  std::vector<size_t> cuts;        // character boundaries of the current piece
  std::vector<int32_t> char_keys;  // merge key of each of its characters
  for (size_t id = 0; id < n; ++id) {
    if (!mergeable_first[id]) continue;  // not mergeable, or a duplicate string
    const std::string& p = pieces[id];
    cuts.clear();
    char_keys.clear();
    for (size_t begin = 0; begin < p.size();) {
      const size_t length = std::min(utf8::length_from_lead_byte(static_cast<uint8_t>(p[begin])), p.size() - begin);
      CharInfo* info = char_info_for_build(p.data() + begin, length);
      if (info->merge_key < 0) info->merge_key = next_pseudo_key_++;
      cuts.push_back(begin);
      char_keys.push_back(info->merge_key);
      begin += length;
    }
    cuts.push_back(p.size());
    const size_t chars = char_keys.size();
    // Text positions between two characters that never stand side by side inside a piece can
    // never be merged across; the encoder cuts its work into segments there.
    for (size_t i = 1; i < chars; ++i) bigrams_.insert(pair_key(char_keys[i - 1], char_keys[i]), 1);
    for (size_t k = 1; k < chars; ++k) {
      const int32_t left = k == 1 ? char_keys[0] : mergeable_index_.find(p.data(), cuts[k]);
      if (left < 0) continue;
      const int32_t right =
          k + 1 == chars ? char_keys[chars - 1] : mergeable_index_.find(p.data() + cuts[k], p.size() - cuts[k]);
      if (right < 0) continue;
      pair_to_merged_.insert(pair_key(left, right), static_cast<int32_t>(id));
    }
  }
  split_segments_ = !has_unused_;

  // User-defined pieces, matched whole in the text before any merging.
  for (size_t id = 0; id < n; ++id) {
    if (types[id] != token_type::kUserDefined || !mergeable_first[id]) continue;
    user_defined_ids_.push_back(static_cast<int32_t>(id));
  }
  std::sort(user_defined_ids_.begin(), user_defined_ids_.end(), [&](int32_t a, int32_t b) {
    const std::string& pa = pieces[static_cast<size_t>(a)];
    const std::string& pb = pieces[static_cast<size_t>(b)];
    if (pa[0] != pb[0]) return static_cast<uint8_t>(pa[0]) < static_cast<uint8_t>(pb[0]);
    if (pa.size() != pb.size()) return pa.size() > pb.size();
    return a < b;
  });
  size_t next = 0;
  for (int b = 0; b < 256; ++b) {
    user_defined_begin_[b] = static_cast<uint32_t>(next);
    while (next < user_defined_ids_.size() &&
           static_cast<uint8_t>(pieces[static_cast<size_t>(user_defined_ids_[next])][0]) == b) {
      ++next;
    }
  }
  user_defined_begin_[256] = static_cast<uint32_t>(next);
}

inline size_t BpeModel::match_user_defined(const uint8_t* text, size_t size, int32_t* id) const {
  const uint8_t first = text[0];
  for (uint32_t i = user_defined_begin_[first]; i < user_defined_begin_[first + 1]; ++i) {
    const std::string& piece = vocab_.pieces[static_cast<size_t>(user_defined_ids_[i])];
    if (piece.size() <= size && std::memcmp(piece.data(), text, piece.size()) == 0) {
      *id = user_defined_ids_[i];
      return piece.size();
    }
  }
  return 0;
}

// Splits the normalized text into symbols and cuts it into segments wherever no merge can ever
// cross (between two characters that never stand side by side inside a piece, or next to a
// character no piece contains). SentencePiece merges the whole text at once; merging each segment
// alone gives the same result, because a merge only ever looks at its own neighbours and the
// leftmost-first tie rule orders pairs within a segment the same way. Small segments keep the
// priority queue tiny and in cache.
inline void BpeModel::encode_normalized(const uint8_t* text, size_t size, std::vector<int32_t>* out) const {
  if (size == 0) return;
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
  std::unordered_map<int32_t, uint32_t> unused_splits;  // merged unused piece -> length of its left part
  bool previous_unknown = false;
  size_t segment_begin = 0;
  // Symbol offsets are 32-bit and relative to the segment; a segment is cut at 1 GiB regardless.
  constexpr size_t kMaxSegmentBytes = size_t{1} << 30;

  auto finish_segment = [&]() {
    if (symbols.size() > 1) {
      std::make_heap(heap.begin(), heap.end(), CandidateLess());
      merge_segment(symbols, heap, unused_splits);
    }
    const uint8_t* base = text + segment_begin;
    for (int32_t i = 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
      const Symbol& symbol = symbols[static_cast<size_t>(i)];
      emit(symbol.output_id, base, symbol.begin, symbol.length, unused_splits, &previous_unknown, out);
    }
    symbols.clear();
    heap.clear();
  };

  size_t position = 0;
  while (position < size) {
    Symbol symbol;
    const uint8_t lead = text[position];
    int32_t user_id = -1;
    size_t length = 0;
    if (user_defined_begin_[lead] != user_defined_begin_[lead + 1]) {
      length = match_user_defined(text + position, size - position, &user_id);
    }
    if (length > 0) {
      symbol.merge_key = -1;  // frozen: a user-defined piece never merges
      symbol.output_id = user_id;
    } else {
      length = std::min(utf8::length_from_lead_byte(lead), size - position);
      const CharInfo info = char_info(text + position, length);
      symbol.merge_key = info.merge_key;
      symbol.output_id = info.output_id;
    }
    if (!symbols.empty()) {
      const Symbol& previous = symbols.back();
      const int32_t merged = merge_of(previous, symbol);
      bool boundary = false;
      if (merged >= 0) {
        const int32_t left = static_cast<int32_t>(symbols.size()) - 1;
        heap.push_back(Candidate{vocab_.scores[static_cast<size_t>(merged)], left, merged,
                                 previous.length + static_cast<uint32_t>(length)});
        if (has_unused_ && vocab_.types[static_cast<size_t>(merged)] == token_type::kUnused) {
          unused_splits[merged] = previous.length;  // SentencePiece keeps the last pair proposed
        }
      } else if (split_segments_) {
        boundary = previous.merge_key < 0 || symbol.merge_key < 0 ||
                   bigrams_.find(pair_key(previous.merge_key, symbol.merge_key)) < 0;
      }
      if (boundary || position - segment_begin >= kMaxSegmentBytes) {
        finish_segment();
        segment_begin = position;
      }
    }
    symbol.begin = static_cast<uint32_t>(position - segment_begin);
    symbol.length = static_cast<uint32_t>(length);
    symbol.prev = static_cast<int32_t>(symbols.size()) - 1;
    symbol.next = -1;
    if (!symbols.empty()) symbols.back().next = static_cast<int32_t>(symbols.size());
    symbols.push_back(symbol);
    position += length;
  }
  finish_segment();
}

// SentencePiece's merge loop over one segment: take the best proposal, skip it if stale, merge the
// pair, propose the two new pairs around the merged symbol.
inline void BpeModel::merge_segment(std::vector<Symbol>& symbols, std::vector<Candidate>& heap,
                                     std::unordered_map<int32_t, uint32_t>& unused_splits) const {
  auto propose = [&](int32_t left) {
    if (left < 0) return;
    const Symbol& l = symbols[static_cast<size_t>(left)];
    if (l.next < 0) return;
    const Symbol& r = symbols[static_cast<size_t>(l.next)];
    const int32_t merged = merge_of(l, r);
    if (merged < 0) return;
    heap.push_back(Candidate{vocab_.scores[static_cast<size_t>(merged)], left, merged, l.length + r.length});
    std::push_heap(heap.begin(), heap.end(), CandidateLess());
    if (has_unused_ && vocab_.types[static_cast<size_t>(merged)] == token_type::kUnused) {
      unused_splits[merged] = l.length;
    }
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), CandidateLess());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[static_cast<size_t>(top.left)];
    if (left.length == 0 || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    if (left.length + right.length != top.length) continue;  // stale
    left.length += right.length;
    left.merge_key = top.merged;
    left.output_id = top.merged;
    left.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.left;
    right.length = 0;
    propose(left.prev);
    propose(top.left);
  }
}

inline void BpeModel::emit(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length,
                            const std::unordered_map<int32_t, uint32_t>& unused_splits, bool* previous_unknown,
                            std::vector<int32_t>* out) const {
  auto is_unused = [this](int32_t piece_id) {
    return piece_id >= 0 && vocab_.types[static_cast<size_t>(piece_id)] == token_type::kUnused;
  };
  if (has_unused_ && is_unused(id)) {
    // An unused piece is split back into the two parts that formed it, recursively; an explicit
    // stack (rightmost part at the bottom) keeps a long chain from exhausting the call stack.
    struct Part {
      int32_t id;
      uint32_t begin;
      uint32_t length;
    };
    std::vector<Part> parts = {{id, begin, length}};
    while (!parts.empty()) {
      const Part part = parts.back();
      parts.pop_back();
      const auto split = is_unused(part.id) ? unused_splits.find(part.id) : unused_splits.end();
      if (split != unused_splits.end() && split->second > 0 && split->second < part.length) {
        const char* piece = reinterpret_cast<const char*>(text + part.begin);
        const uint32_t left = split->second;
        parts.push_back({piece_to_id(piece + left, part.length - left, -1), part.begin + left, part.length - left});
        parts.push_back({piece_to_id(piece, left, -1), part.begin, left});
      } else {
        emit_one(part.id, text, part.begin, part.length, previous_unknown, out);
      }
    }
    return;
  }
  emit_one(id, text, begin, length, previous_unknown, out);
}

inline void BpeModel::emit_one(int32_t id, const uint8_t* text, uint32_t begin, uint32_t length,
                                bool* previous_unknown, std::vector<int32_t>* out) const {
  const bool unknown = id < 0 || vocab_.types[static_cast<size_t>(id)] == token_type::kUnknown;
  if (!unknown) {
    out->push_back(id);
  } else if (vocab_.byte_fallback) {
    for (uint32_t i = 0; i < length; ++i) {
      const int32_t byte_id = byte_ids_[text[begin + i]];
      if (byte_id >= 0) out->push_back(byte_id);
      else if (vocab_.unk_id >= 0) out->push_back(vocab_.unk_id);
    }
  } else if (!*previous_unknown && vocab_.unk_id >= 0) {
    out->push_back(vocab_.unk_id);  // a run of unknown characters becomes one <unk>
  }
  *previous_unknown = unknown;
}

}  // namespace tokenizer_detail

}  // namespace bora

#endif  // BORA_TEXT_BPE_MODEL_HPP
// ---- end bora/text/bpe_model.hpp ---------------------------------------------------------------------
// ---- begin bora/text/normalizer.hpp ------------------------------------------------------------------
// Why this file exists: SentencePiece rewrites text before encoding (a dummy-prefix space, ' ' as "▁",
// malformed UTF-8 as U+FFFD, optionally collapsed whitespace) and decoding undoes it piece by piece;
// both directions follow the same vocabulary flags, so they live together here.
#ifndef BORA_TEXT_NORMALIZER_HPP
#define BORA_TEXT_NORMALIZER_HPP

#include <cstdint>
#include <string>
#include <string_view>


namespace bora {

namespace tokenizer_detail {

constexpr char kSpaceSymbol[] = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space
constexpr size_t kSpaceSymbolSize = 3;

// Text -> what the BPE merges run over, as SentencePiece's normalizer does without a precompiled
// charsmap (bora refuses those): the vocabulary's dummy-prefix, escaping and collapsing flags only.
inline void normalize(const Vocabulary& vocab, std::string_view text, std::string* out) {
  out->clear();
  const uint8_t* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  if (n == 0) return;
  const bool collapse = vocab.remove_extra_whitespaces;
  if (collapse) {
    while (i < n && p[i] == ' ') ++i;
    if (i == n) return;
  }
  out->reserve(n + n / 2 + 8);
  const char* space = vocab.escape_whitespaces ? kSpaceSymbol : " ";
  const size_t space_size = vocab.escape_whitespaces ? kSpaceSymbolSize : 1;
  if (vocab.add_dummy_prefix) out->append(space, space_size);
  bool previous_space = collapse;
  while (i < n) {
    const uint8_t c = p[i];
    if (c < 0x80) {
      if (c == ' ') {
        if (!previous_space) out->append(space, space_size);
        previous_space = collapse;
      } else {
        out->push_back(static_cast<char>(c));
        previous_space = false;
      }
      ++i;
      continue;
    }
    size_t length = 1;
    if (utf8::decode_one(p + i, n - i, &length)) {
      out->append(reinterpret_cast<const char*>(p + i), length);
    } else {
      out->append(utf8::kReplacementCharacter, 3);
    }
    previous_space = false;
    i += length;
  }
  if (collapse) {
    while (out->size() >= space_size && out->compare(out->size() - space_size, space_size, space) == 0) {
      out->resize(out->size() - space_size);
    }
  }
}

// The inverse, for decoding: appends the text of a non-byte piece ("▁" back to ' ', the dummy-prefix
// space dropped at the start); returns true when it consumed that space. `id` must be in the vocabulary.
inline bool append_piece_surface(const Vocabulary& vocab, std::string& out, int32_t id, bool at_start) {
  const int32_t type = vocab.types[static_cast<size_t>(id)];
  if (type == token_type::kControl || type == token_type::kByte) return false;
  if (type == token_type::kUnknown) {
    out += vocab.unk_surface;
    return false;
  }
  const std::string& piece = vocab.pieces[static_cast<size_t>(id)];
  size_t start = 0;
  bool consumed = false;
  if (at_start && (vocab.add_dummy_prefix || vocab.remove_extra_whitespaces) &&
      piece.compare(0, kSpaceSymbolSize, kSpaceSymbol) == 0) {
    start = kSpaceSymbolSize;
    consumed = !vocab.remove_extra_whitespaces;
  }
  while (start < piece.size()) {
    const size_t found = piece.find(kSpaceSymbol, start, kSpaceSymbolSize);
    if (found == std::string::npos) {
      out.append(piece, start, std::string::npos);
      break;
    }
    out.append(piece, start, found - start);
    out.push_back(' ');
    start = found + kSpaceSymbolSize;
  }
  return consumed;
}

}  // namespace tokenizer_detail

}  // namespace bora

#endif  // BORA_TEXT_NORMALIZER_HPP
// ---- end bora/text/normalizer.hpp --------------------------------------------------------------------

namespace bora {

class StreamingDecoder;

class Tokenizer {
 public:
  // Checks the vocabulary and builds the lookup tables (tens of milliseconds for 32k pieces).
  static Expected<Tokenizer> create(Vocabulary vocab) {
    BORA_RETURN_IF_ERROR(validate_vocabulary(vocab));
    Tokenizer tokenizer;
    tokenizer.bpe_.build(std::move(vocab));
    return tokenizer;
  }

  // The vocabulary llama.cpp stores in a GGUF file's tokenizer.ggml.* metadata.
  static Expected<Tokenizer> from_gguf(const GgufFile& gguf) {
    Expected<Vocabulary> vocab = vocabulary_from_gguf(gguf);
    if (!vocab) return vocab.error();
    return create(std::move(*vocab));
  }

  // A GGUF file (recognised by its magic) or a SentencePiece tokenizer.model.
  static Expected<Tokenizer> from_file(const std::string& path) {
    char magic[4] = {0, 0, 0, 0};
    if (std::FILE* file = std::fopen(path.c_str(), "rb")) {
      const size_t got = std::fread(magic, 1, 4, file);
      std::fclose(file);
      if (got == 4 && std::memcmp(magic, "GGUF", 4) == 0) {
        Expected<GgufFile> gguf = GgufFile::open(path);
        if (!gguf) return gguf.error();
        return from_gguf(*gguf);
      }
    }
    Expected<Vocabulary> vocab = load_sentencepiece_model(path);
    if (!vocab) return vocab.error();
    return create(std::move(*vocab));
  }

  // Text -> ids exactly as SentencePiece's EncodeAsIds, with BOS in front when asked.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const {
    std::vector<int32_t> ids;
    if (add_bos && vocabulary().bos_id >= 0) ids.push_back(vocabulary().bos_id);
    encode_append(text, &ids);
    return ids;
  }

  // Appends the ids of `text` (no BOS) to `out`.
  void encode_append(std::string_view text, std::vector<int32_t>* out) const;

  // Ids -> text exactly as SentencePiece's DecodeIds: control tokens vanish, byte pieces are joined
  // into UTF-8 (malformed bytes become U+FFFD), the dummy-prefix space of the first piece is dropped.
  // Ids outside the vocabulary are skipped.
  std::string decode(const int32_t* ids, size_t count) const;
  std::string decode(const std::vector<int32_t>& ids) const { return decode(ids.data(), ids.size()); }

  // The raw piece ("▁the", "<0x0A>", "<s>"); empty for an id outside the vocabulary.
  const std::string& piece(int32_t id) const {
    static const std::string kNone;
    return valid_id(id) ? vocabulary().pieces[static_cast<size_t>(id)] : kNone;
  }

  // What one token contributes to text in the middle of a sequence: "▁" shown as ' ', a byte piece
  // as its raw byte (possibly half a character), control tokens as "", <unk> as " ⁇ ".
  std::string piece_text(int32_t id) const {
    std::string out;
    if (!valid_id(id)) return out;
    if (bpe_.byte_value(id) >= 0) {
      out.push_back(static_cast<char>(bpe_.byte_value(id)));
      return out;
    }
    tokenizer_detail::append_piece_surface(vocabulary(), out, id, false);
    return out;
  }

  int32_t token_to_id(std::string_view piece) const {  // -1 when absent
    return bpe_.piece_to_id(piece.data(), piece.size(), -1);
  }

  int32_t bos_id() const { return vocabulary().bos_id; }
  int32_t eos_id() const { return vocabulary().eos_id; }
  int32_t unk_id() const { return vocabulary().unk_id; }
  int32_t pad_id() const { return vocabulary().pad_id; }
  size_t vocab_size() const { return vocabulary().pieces.size(); }
  bool add_bos_by_default() const { return vocabulary().add_bos; }
  int32_t token_type(int32_t id) const {
    return valid_id(id) ? vocabulary().types[static_cast<size_t>(id)] : 0;
  }
  bool is_control(int32_t id) const { return token_type(id) == token_type::kControl; }
  int byte_value(int32_t id) const { return valid_id(id) ? bpe_.byte_value(id) : -1; }
  const Vocabulary& vocabulary() const { return bpe_.vocabulary(); }

 private:
  friend class StreamingDecoder;

  Tokenizer() = default;

  bool valid_id(int32_t id) const { return id >= 0 && static_cast<size_t>(id) < vocabulary().pieces.size(); }

  tokenizer_detail::BpeModel bpe_;
};

inline void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>* out) const {
  std::string normalized;
  tokenizer_detail::normalize(vocabulary(), text, &normalized);
  bpe_.encode_normalized(reinterpret_cast<const uint8_t*>(normalized.data()), normalized.size(), out);
}

inline std::string Tokenizer::decode(const int32_t* ids, size_t count) const {
  std::string text;
  std::string bytes;
  bool at_start = true;
  bool start_space_consumed = false;
  for (size_t i = 0; i < count; ++i) {
    const int32_t id = ids[i];
    if (!valid_id(id)) continue;
    if (vocabulary().types[static_cast<size_t>(id)] == token_type::kByte) {
      const int value = bpe_.byte_value(id);
      if (value >= 0) bytes.push_back(static_cast<char>(value));
      continue;
    }
    if (!bytes.empty()) {
      utf8::append_bytes_as_text(text, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
      bytes.clear();
    }
    if (start_space_consumed || !text.empty()) at_start = false;
    start_space_consumed = tokenizer_detail::append_piece_surface(vocabulary(), text, id, at_start);
  }
  utf8::append_bytes_as_text(text, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return text;
}

// Decodes one id at a time for streaming output: push() returns the text that became final,
// never half a UTF-8 character (byte pieces wait until their character is complete or provably
// malformed); the concatenation of every push() and a final flush() equals Tokenizer::decode.
class StreamingDecoder {
 public:
  // `at_start_of_text`: the first piece begins the text, so its dummy-prefix space is dropped (as
  // decode() does). Pass false to continue a text already shown, e.g. a plain completion after its
  // prompt, where "▁Paris" must keep its space.
  explicit StreamingDecoder(const Tokenizer& tokenizer, bool at_start_of_text = true)
      : tokenizer_(&tokenizer), at_start_(at_start_of_text) {}

  std::string push(int32_t id) {
    std::string out;
    if (!tokenizer_->valid_id(id)) return out;
    if (tokenizer_->vocabulary().types[static_cast<size_t>(id)] == token_type::kByte) {
      const int value = tokenizer_->bpe_.byte_value(id);
      if (value < 0) return out;
      pending_[pending_size_++] = static_cast<uint8_t>(value);
      drain(out, false);
      return out;
    }
    drain(out, true);
    if (start_space_consumed_ || emitted_any_) at_start_ = false;
    const size_t before = out.size();
    start_space_consumed_ =
        tokenizer_detail::append_piece_surface(tokenizer_->vocabulary(), out, id, at_start_);
    if (out.size() > before) emitted_any_ = true;
    return out;
  }

  // Emits bytes still waiting for the rest of their character (as U+FFFD, as decode() would).
  std::string flush() {
    std::string out;
    drain(out, true);
    return out;
  }

  // Starts a new sequence (pending bytes are dropped): with at_start_of_text, the next piece's
  // leading space is dropped again.
  void reset(bool at_start_of_text = true) {
    pending_size_ = 0;
    at_start_ = at_start_of_text;
    start_space_consumed_ = false;
    emitted_any_ = false;
  }

 private:
  void drain(std::string& out, bool final) {
    const size_t before = out.size();
    size_t offset = 0;
    while (offset < pending_size_) {
      size_t length = 1;
      if (utf8::decode_one(pending_ + offset, pending_size_ - offset, &length)) {
        out.append(reinterpret_cast<const char*>(pending_ + offset), length);
      } else if (!final && utf8::is_incomplete_prefix(pending_ + offset, pending_size_ - offset)) {
        break;
      } else {
        out.append(utf8::kReplacementCharacter, 3);
        length = 1;
      }
      offset += length;
    }
    std::memmove(pending_, pending_ + offset, pending_size_ - offset);
    pending_size_ -= offset;
    if (out.size() > before) emitted_any_ = true;
  }

  const Tokenizer* tokenizer_;
  uint8_t pending_[8] = {};  // an incomplete character is at most 3 bytes, plus the one just pushed
  size_t pending_size_ = 0;
  bool at_start_ = true;
  bool start_space_consumed_ = false;
  bool emitted_any_ = false;
};

}  // namespace bora

#endif  // BORA_TEXT_TOKENIZER_HPP
// ---- end bora/text/tokenizer.hpp ---------------------------------------------------------------------
// ---- begin bora/text/tool_calls.hpp ------------------------------------------------------------------
// Why this file exists: Mistral's function calling is JSON inside control tokens, and the model was
// trained on one exact spelling of it: Python's json.dumps (", " and ": " separators, non-ASCII kept,
// Python's float repr), with string arguments and tool results parsed as JSON first. This writes that
// spelling for the chat templates, reads the model's [TOOL_CALLS] output back into calls, and makes
// call ids the way vLLM's Mistral parser expects them (9 alphanumeric characters).
#ifndef BORA_TEXT_TOOL_CALLS_HPP
#define BORA_TEXT_TOOL_CALLS_HPP

#include <simdjson.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>


namespace bora {

struct ToolCall {
  std::string id;         // "" when the conversation gives none
  std::string name;
  std::string arguments;  // JSON text (an object), as OpenAI's API carries it
};

namespace tool_calls_detail {

inline void append_python_string(std::string_view text, std::string* out) {
  out->push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned char>(c));
          *out += escaped;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

// Python's repr of a float: the shortest digits that read back the same, fixed notation for decimal
// exponents -4..15, else d.ddde+XX.
inline void append_python_float(double value, std::string* out) {
  char buffer[40];
  int precision = 1;
  for (; precision < 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*e", precision - 1, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::snprintf(buffer, sizeof(buffer), "%.*e", precision - 1, value);
  std::string text(buffer);
  const size_t e = text.find('e');
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits;
  bool negative = false;
  for (size_t i = 0; i < e; ++i) {
    if (text[i] == '-') negative = true;
    else if (text[i] >= '0' && text[i] <= '9') digits.push_back(text[i]);
  }
  if (negative) out->push_back('-');
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      *out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else if (static_cast<size_t>(exponent) + 1 >= digits.size()) {
      *out += digits + std::string(static_cast<size_t>(exponent) + 1 - digits.size(), '0') + ".0";
    } else {
      *out += digits.substr(0, static_cast<size_t>(exponent) + 1) + "." + digits.substr(static_cast<size_t>(exponent) + 1);
    }
    return;
  }
  out->push_back(digits[0]);
  if (digits.size() > 1) *out += "." + digits.substr(1);
  std::snprintf(buffer, sizeof(buffer), "e%c%02d", exponent < 0 ? '-' : '+', exponent < 0 ? -exponent : exponent);
  *out += buffer;
}

}  // namespace tool_calls_detail

// `value` as Python's json.dumps(value, ensure_ascii=False) writes it.
inline void append_python_json(simdjson::dom::element value, std::string* out) {
  using simdjson::dom::element_type;
  switch (value.type()) {
    case element_type::OBJECT: {
      out->push_back('{');
      bool first = true;
      simdjson::dom::object object;
      if (value.get_object().get(object)) return;
      for (auto field : object) {
        if (!first) *out += ", ";
        first = false;
        tool_calls_detail::append_python_string(field.key, out);
        *out += ": ";
        append_python_json(field.value, out);
      }
      out->push_back('}');
      return;
    }
    case element_type::ARRAY: {
      out->push_back('[');
      bool first = true;
      simdjson::dom::array array;
      if (value.get_array().get(array)) return;
      for (simdjson::dom::element item : array) {
        if (!first) *out += ", ";
        first = false;
        append_python_json(item, out);
      }
      out->push_back(']');
      return;
    }
    case element_type::STRING: tool_calls_detail::append_python_string(value.get_string().value_unsafe(), out); return;
    case element_type::INT64: *out += std::to_string(value.get_int64().value_unsafe()); return;
    case element_type::UINT64: *out += std::to_string(value.get_uint64().value_unsafe()); return;
    case element_type::DOUBLE: tool_calls_detail::append_python_float(value.get_double().value_unsafe(), out); return;
    case element_type::BOOL: *out += value.get_bool().value_unsafe() ? "true" : "false"; return;
    case element_type::NULL_VALUE: *out += "null"; return;
  }
}

// What mistral-common does with a string that may hold JSON (tool arguments, tool results): the
// parsed value when it parses, else the string itself, written as json.dumps would.
inline void append_python_json_or_string(std::string_view text, std::string* out) {
  simdjson::dom::parser parser;
  simdjson::dom::element value;
  const simdjson::padded_string padded(text);
  if (parser.parse(padded).get(value) == simdjson::SUCCESS) {
    append_python_json(value, out);
  } else {
    tool_calls_detail::append_python_string(text, out);
  }
}

// The model's text after [TOOL_CALLS]: a JSON list of {"name", "arguments", "id"?} (one object alone
// is accepted too). Arguments come back as compact JSON text.
inline Expected<std::vector<ToolCall>> parse_tool_calls(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string padded(text);
  if (parser.parse(padded).get(root))
    return make_error(ErrorCode::kFormat, "tool calls: the model's output is not valid JSON: %.80s",
                      std::string(text).c_str());
  std::vector<simdjson::dom::element> items;
  simdjson::dom::array list;
  if (root.get_array().get(list) == simdjson::SUCCESS) {
    for (simdjson::dom::element item : list) items.push_back(item);
  } else {
    items.push_back(root);
  }
  std::vector<ToolCall> calls;
  for (size_t i = 0; i < items.size(); ++i) {
    ToolCall call;
    std::string_view name;
    if (items[i]["name"].get_string().get(name) || name.empty())
      return make_error(ErrorCode::kFormat, "tool calls: call %zu has no \"name\"", i);
    call.name = std::string(name);
    simdjson::dom::element arguments;
    if (items[i]["arguments"].get(arguments)) {
      call.arguments = "{}";
    } else {
      std::string_view as_string;
      if (arguments.get_string().get(as_string) == simdjson::SUCCESS) call.arguments = std::string(as_string);
      else if (arguments.is_object()) call.arguments = simdjson::minify(arguments);
      else return make_error(ErrorCode::kFormat, "tool calls: call %zu's \"arguments\" is not an object", i);
    }
    std::string_view id;
    if (items[i]["id"].get_string().get(id) == simdjson::SUCCESS) call.id = std::string(id);
    calls.push_back(std::move(call));
  }
  return calls;
}

// A call id as vLLM's Mistral parser expects: 9 characters from [a-zA-Z0-9].
inline std::string make_tool_call_id(Xoshiro256& rng) {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id;
  for (int i = 0; i < 9; ++i) id.push_back(kAlphabet[static_cast<size_t>(rng.next_double() * 62.0) % 62]);
  return id;
}

}  // namespace bora

#endif  // BORA_TEXT_TOOL_CALLS_HPP
// ---- end bora/text/tool_calls.hpp --------------------------------------------------------------------

namespace bora {

enum class ChatTemplate { kMistralV1, kMistralV2, kMistralV3 };

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string role_name, std::string text) : role(std::move(role_name)), content(std::move(text)) {}

  std::string role;  // "system", "user", "assistant" or "tool"
  std::string content;
  std::vector<ToolCall> tool_calls;  // an assistant's calls (then content is empty)
  std::string tool_call_id;          // a tool's result: the call it answers (v3)
  std::string name;                  // a tool's result: the function's name (v2)
};

struct ChatTemplateOptions {
  // The conversation ends with a partial assistant message the model should continue: no [EOS]
  // after it (mistral-common's continue_final_message).
  bool continue_final_message = false;
  // The functions the model may call: a JSON array of {"type": "function", "function": {"name",
  // "description", "parameters"}} (OpenAI's and mistral-common's shape). Empty: no tools.
  std::string tools;
};

inline const char* chat_template_name(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::kMistralV1: return "mistral-v1";
    case ChatTemplate::kMistralV2: return "mistral-v2";
    case ChatTemplate::kMistralV3: return "mistral-v3";
  }
  return "unknown";
}

// For command-line overrides: "v1", "mistral-v1", "1" (and v2, v3 likewise).
inline Expected<ChatTemplate> parse_chat_template_name(std::string_view name) {
  if (name.size() > 8 && name.substr(0, 8) == "mistral-") name.remove_prefix(8);
  if (name == "v1" || name == "1") return ChatTemplate::kMistralV1;
  if (name == "v2" || name == "2") return ChatTemplate::kMistralV2;
  if (name == "v3" || name == "3") return ChatTemplate::kMistralV3;
  return make_error(ErrorCode::kInvalidArgument, "unknown chat template '%.*s' (expected v1, v2 or v3)",
                    static_cast<int>(name.size()), name.data());
}

namespace chat_template_detail {

inline bool has_control_piece(const Vocabulary& vocab, std::string_view piece) {
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == token_type::kControl && vocab.pieces[i] == piece) return true;
  }
  return false;
}

struct Turn {
  enum Kind { kUser, kAssistant, kToolCalls, kToolResult };
  Kind kind;
  std::string content;
  std::vector<ToolCall> calls;
  std::string call_id, name;
};

// The tools list as mistral-common writes it: only type, function.name, description and parameters.
inline Expected<std::string> tools_json(std::string_view tools) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array list;
  const simdjson::padded_string padded(tools);
  if (parser.parse(padded).get(root) || root.get_array().get(list))
    return make_error(ErrorCode::kInvalidArgument, "tools: expected a JSON array of {\"type\": \"function\", \"function\": {...}}");
  std::string out = "[";
  size_t index = 0;
  for (simdjson::dom::element tool : list) {
    simdjson::dom::element function;
    std::string_view name, description;
    if (tool["function"].get(function) || function["name"].get_string().get(name))
      return make_error(ErrorCode::kInvalidArgument, "tools[%zu]: expected {\"type\": \"function\", \"function\": {\"name\": ...}}", index);
    if (index++ > 0) out += ", ";
    out += "{\"type\": \"function\", \"function\": {\"name\": ";
    tool_calls_detail::append_python_string(name, &out);
    out += ", \"description\": ";
    if (function["description"].get_string().get(description)) description = "";
    tool_calls_detail::append_python_string(description, &out);
    out += ", \"parameters\": ";
    simdjson::dom::element parameters;
    if (function["parameters"].get(parameters)) out += "{}";
    else append_python_json(parameters, &out);
    out += "}}";
  }
  return out + "]";
}

}  // namespace chat_template_detail

// The vocabulary decides: the v2/v3 instruct tokenizers have [INST]/[/INST] control tokens, v1 does
// not. v3 (240323) added [IMG] and the [REFERENCE_DOC_n] pieces; a GGUF tokenizer.chat_template that
// renders tool results with "call_id" (v3's tool format) also means v3. For conversations without
// tools v2 and v3 give identical tokens.
inline ChatTemplate detect_chat_template(const Vocabulary& vocab, std::string_view gguf_chat_template = {}) {
  using chat_template_detail::has_control_piece;
  if (!has_control_piece(vocab, "[INST]") || !has_control_piece(vocab, "[/INST]")) return ChatTemplate::kMistralV1;
  if (has_control_piece(vocab, "[IMG]")) return ChatTemplate::kMistralV3;
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == token_type::kUserDefined && vocab.pieces[i].compare(0, 15, "[REFERENCE_DOC_") == 0) {
      return ChatTemplate::kMistralV3;
    }
  }
  if (gguf_chat_template.find("call_id") != std::string_view::npos) return ChatTemplate::kMistralV3;
  return ChatTemplate::kMistralV2;
}

// The chat template a GGUF file declares (its tokenizer.chat_template text), or "" for other files.
inline std::string declared_chat_template(const ModelFiles& files) {
  const GgufFile* gguf = files.gguf();
  if (gguf == nullptr || gguf->find("tokenizer.chat_template") == nullptr) return std::string();
  auto text = gguf->get_string("tokenizer.chat_template");
  return text ? *text : std::string();
}

// The template a model's files imply: its tokenizer's control pieces and the GGUF's declared text.
inline ChatTemplate chat_template_for(const ModelFiles& files, const Tokenizer& tokenizer) {
  return detect_chat_template(tokenizer.vocabulary(), declared_chat_template(files));
}

// Renders a conversation into token ids (starting with BOS).
inline Expected<std::vector<int32_t>> apply_chat_template(const Tokenizer& tokenizer, ChatTemplate chat_template,
                                                         const std::vector<ChatMessage>& messages,
                                                         const ChatTemplateOptions& options = {}) {
  using chat_template_detail::Turn;
  const bool plain_text_inst = chat_template == ChatTemplate::kMistralV1;
  const bool is_v2 = chat_template == ChatTemplate::kMistralV2;

  std::string system_prompt;
  bool has_system_prompt = false;
  std::vector<Turn> turns;
  bool uses_tools = !options.tools.empty();
  // The role of the run being collected: 0 none, 1 user, 2 assistant text, 3 system (which ends a run
  // without contributing a turn, as mistral-common's aggregation does), 4 a tool call or result.
  int current_role = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    int role = 0;
    if (message.role == "user") role = 1;
    else if (message.role == "assistant") role = message.tool_calls.empty() ? 2 : 4;
    else if (message.role == "system") role = 3;
    else if (message.role == "tool") role = 4;
    else {
      return make_error(ErrorCode::kInvalidArgument, "chat message %zu has role '%s' (expected system, user, assistant or tool)",
                        i, message.role.c_str());
    }
    if (role == 3) {
      if (!message.content.empty()) {
        if (has_system_prompt) system_prompt += "\n\n";
        system_prompt += message.content;
        has_system_prompt = true;
      }
    } else if (role == 4) {
      uses_tools = true;
      Turn turn{message.role == "tool" ? Turn::kToolResult : Turn::kToolCalls, message.content, message.tool_calls,
                message.tool_call_id, message.name};
      if (turn.kind == Turn::kToolCalls && !message.content.empty())
        return make_error(ErrorCode::kInvalidArgument, "chat message %zu has both content and tool calls", i);
      if (turn.kind == Turn::kToolResult && message.tool_call_id.empty() && message.name.empty())
        return make_error(ErrorCode::kInvalidArgument, "chat message %zu (a tool result) has no tool_call_id or name", i);
      turns.push_back(std::move(turn));
    } else {
      const Turn::Kind kind = role == 1 ? Turn::kUser : Turn::kAssistant;
      if (role != current_role) turns.push_back(Turn{kind, std::string(), {}, std::string(), std::string()});
      if (!message.content.empty()) {
        std::string& content = turns.back().content;
        if (!content.empty()) content += "\n\n";
        content += message.content;
      }
    }
    current_role = role;
  }
  if (turns.empty() || turns.front().kind != Turn::kUser)
    turns.insert(turns.begin(), Turn{Turn::kUser, std::string(), {}, std::string(), std::string()});
  if (options.continue_final_message && turns.back().kind != Turn::kAssistant) {
    return make_error(ErrorCode::kInvalidArgument, "continue_final_message needs the conversation to end with an assistant message");
  }
  if (uses_tools && plain_text_inst) {
    return make_error(ErrorCode::kUnsupported,
                      "chat template mistral-v1 has no tool tokens (Mistral 7B v0.1/v0.2, Mixtral 8x7B v0.1): use "
                      "constrained output (a JSON schema) for structure with these models");
  }

  int32_t begin_inst = -1;
  int32_t end_inst = -1;
  if (!plain_text_inst) {
    begin_inst = tokenizer.token_to_id("[INST]");
    end_inst = tokenizer.token_to_id("[/INST]");
    if (begin_inst < 0 || end_inst < 0 || !tokenizer.is_control(begin_inst) || !tokenizer.is_control(end_inst)) {
      return make_error(ErrorCode::kUnsupported,
                        "chat template %s needs [INST] and [/INST] control tokens, which this vocabulary lacks",
                        chat_template_name(chat_template));
    }
  }
  if (tokenizer.bos_id() < 0 || tokenizer.eos_id() < 0) {
    return make_error(ErrorCode::kUnsupported, "the vocabulary has no BOS or EOS token for a chat template");
  }
  // The tool control tokens, when the conversation needs them.
  int32_t tool_ids[5] = {-1, -1, -1, -1, -1};
  static const char* const kToolPieces[5] = {"[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
                                             "[/TOOL_RESULTS]"};
  if (uses_tools) {
    for (int k = 0; k < 5; ++k) {
      tool_ids[k] = tokenizer.token_to_id(kToolPieces[k]);
      if (tool_ids[k] < 0 || !tokenizer.is_control(tool_ids[k]))
        return make_error(ErrorCode::kUnsupported, "this vocabulary has no %s control token for tool calling", kToolPieces[k]);
    }
  }
  std::string available_tools;
  if (!options.tools.empty()) {
    auto written = chat_template_detail::tools_json(options.tools);
    if (!written) return written.error();
    available_tools = std::move(*written);
  }

  size_t first_user = turns.size();
  size_t last_user = 0;
  for (size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].kind != Turn::kUser) continue;
    if (first_user == turns.size()) first_user = i;
    last_user = i;
  }

  std::vector<int32_t> ids;
  ids.push_back(tokenizer.bos_id());
  for (size_t i = 0; i < turns.size(); ++i) {
    const Turn& turn = turns[i];
    if (turn.kind == Turn::kUser) {
      const bool gets_system = has_system_prompt && i == (plain_text_inst ? first_user : last_user);
      const std::string content = gets_system ? system_prompt + "\n\n" + turn.content : turn.content;
      if (plain_text_inst) {
        tokenizer.encode_append("[INST] " + content + " [/INST]", &ids);
      } else {
        if (i == last_user && !available_tools.empty()) {
          ids.push_back(tool_ids[0]);
          tokenizer.encode_append(available_tools, &ids);
          ids.push_back(tool_ids[1]);
        }
        ids.push_back(begin_inst);
        tokenizer.encode_append(content, &ids);
        ids.push_back(end_inst);
      }
    } else if (turn.kind == Turn::kToolCalls || turn.kind == Turn::kToolResult) {
      if (is_v2 && i < last_user) continue;  // v2 keeps no tool history before the last user turn
      std::string json;
      if (turn.kind == Turn::kToolCalls) {
        json = "[";
        for (size_t c = 0; c < turn.calls.size(); ++c) {
          const ToolCall& call = turn.calls[c];
          if (c > 0) json += ", ";
          json += "{\"name\": ";
          tool_calls_detail::append_python_string(call.name, &json);
          json += ", \"arguments\": ";
          append_python_json_or_string(call.arguments, &json);
          if (!is_v2 && !call.id.empty() && call.id != "null") {
            json += ", \"id\": ";
            tool_calls_detail::append_python_string(call.id, &json);
          }
          json += "}";
        }
        json += "]";
        ids.push_back(tool_ids[2]);
        tokenizer.encode_append(json, &ids);
        ids.push_back(tokenizer.eos_id());
      } else {
        if (is_v2) {
          json = "[{\"name\": ";
          tool_calls_detail::append_python_string(turn.name, &json);
          json += ", \"content\": ";
          append_python_json_or_string(turn.content, &json);
          json += "}]";
        } else {
          json = "{\"content\": ";
          append_python_json_or_string(turn.content, &json);
          json += ", \"call_id\": ";
          tool_calls_detail::append_python_string(turn.call_id, &json);
          json += "}";
        }
        ids.push_back(tool_ids[3]);
        tokenizer.encode_append(json, &ids);
        ids.push_back(tool_ids[4]);
      }
    } else {
      if (turn.content.empty()) {
        return make_error(ErrorCode::kInvalidArgument, "assistant turn %zu has no content", i);
      }
      std::string_view content = turn.content;
      if (!plain_text_inst) {
        while (!content.empty() && content.back() == ' ') content.remove_suffix(1);
      }
      tokenizer.encode_append(content, &ids);
      const bool continued = options.continue_final_message && i + 1 == turns.size();
      if (!continued) ids.push_back(tokenizer.eos_id());
    }
  }
  return ids;
}

}  // namespace bora

#endif  // BORA_TEXT_CHAT_TEMPLATE_HPP
// ---- end bora/text/chat_template.hpp -----------------------------------------------------------------

namespace bora {

// `tools` (may be null) receives the request's "tools" array as JSON text, "" when it has none; a
// request with tools is refused when `tools` is null.
inline Expected<std::vector<ChatMessage>> parse_chat_request(std::string_view json, const std::string& name_for_errors,
                                                            std::string* tools = nullptr) {
  const char* name = name_for_errors.c_str();
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  const simdjson::padded_string padded(json);
  if (parser.parse(padded).get(root)) return make_error(ErrorCode::kFormat, "%s: not valid JSON", name);
  simdjson::dom::array messages;
  if (root["messages"].get_array().get(messages))
    return make_error(ErrorCode::kFormat, "%s: expected an object with a \"messages\" array", name);
  if (tools != nullptr) tools->clear();
  simdjson::dom::array tool_list;
  if (root["tools"].get_array().get(tool_list) == simdjson::SUCCESS && tool_list.size() > 0) {
    if (tools == nullptr) return make_error(ErrorCode::kUnsupported, "%s: \"tools\" are not supported here", name);
    *tools = simdjson::minify(tool_list);
  }
  std::vector<ChatMessage> out;
  size_t index = 0;
  for (simdjson::dom::element message : messages) {
    std::string_view role, content;
    if (message["role"].get_string().get(role))
      return make_error(ErrorCode::kFormat, "%s: messages[%zu] has no string \"role\"", name, index);
    if (role != "system" && role != "user" && role != "assistant" && role != "tool")
      return make_error(ErrorCode::kUnsupported, "%s: messages[%zu] has role '%.40s' (system, user, assistant or tool)", name,
                        index, std::string(role).c_str());
    ChatMessage parsed{std::string(role), std::string()};
    simdjson::dom::array calls;
    if (role == "assistant" && message["tool_calls"].get_array().get(calls) == simdjson::SUCCESS) {
      for (simdjson::dom::element call : calls) {
        ToolCall tool_call;
        std::string_view text;
        simdjson::dom::element function, arguments;
        if (call["function"].get(function) || function["name"].get_string().get(text))
          return make_error(ErrorCode::kFormat, "%s: messages[%zu] has a tool call without function.name", name, index);
        tool_call.name = std::string(text);
        if (function["arguments"].get(arguments) == simdjson::SUCCESS) {
          if (arguments.get_string().get(text) == simdjson::SUCCESS) tool_call.arguments = std::string(text);
          else tool_call.arguments = simdjson::minify(arguments);
        }
        if (call["id"].get_string().get(text) == simdjson::SUCCESS) tool_call.id = std::string(text);
        parsed.tool_calls.push_back(std::move(tool_call));
      }
    }
    if (message["content"].get_string().get(content)) {
      const bool may_lack = !parsed.tool_calls.empty();
      if (!may_lack) return make_error(ErrorCode::kFormat, "%s: messages[%zu] has no string \"content\"", name, index);
      content = std::string_view();
    }
    parsed.content = std::string(content);
    std::string_view text;
    if (message["tool_call_id"].get_string().get(text) == simdjson::SUCCESS) parsed.tool_call_id = std::string(text);
    if (message["name"].get_string().get(text) == simdjson::SUCCESS) parsed.name = std::string(text);
    out.push_back(std::move(parsed));
    ++index;
  }
  return out;
}

}  // namespace bora

#endif  // BORA_TEXT_CHAT_REQUEST_HPP
// ---- end bora/text/chat_request.hpp ------------------------------------------------------------------
// ---- begin bora/text/gbnf.hpp ------------------------------------------------------------------------
// Why this file exists: llama.cpp's GBNF is the grammar format people already write (and share) for
// constrained generation; this reads it into a bora Grammar, with errors that give the line and column.
// Syntax: `name ::= alternatives`, `|`, "literals", [classes] ([^...] negated, a-z ranges), `.` (any
// character), ( groups ), postfix * + ? {m} {m,} {m,n}, # comments; escapes \n \r \t \\ \" \' \[ \]
// \xHH \uHHHH \UHHHHHHHH. A rule ends at a newline outside parentheses, unless the next line begins
// with `|`. The start rule is `root`.
#ifndef BORA_TEXT_GBNF_HPP
#define BORA_TEXT_GBNF_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- begin bora/text/grammar.hpp ---------------------------------------------------------------------
// Why this file exists: constrained generation takes GBNF files, JSON Schemas and an "any JSON" mode,
// and all three become this one form: rules of alternatives over byte sets and rule references. It is
// byte-level (a character class becomes its UTF-8 byte sequences here) because tokens are byte
// strings, byte-fallback tokens carry half characters, and a byte set is one 256-bit test.
// GrammarBuilder is how every front end writes rules; build() checks them once (undefined rules, left
// recursion, size), so the matcher (text/grammar_constraint.hpp) never meets a grammar it can loop on.
#ifndef BORA_TEXT_GRAMMAR_HPP
#define BORA_TEXT_GRAMMAR_HPP

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>


namespace bora {

struct ByteSet {
  uint64_t words[4] = {0, 0, 0, 0};

  bool has(uint8_t byte) const { return (words[byte >> 6] >> (byte & 63)) & 1u; }
  void add(uint8_t byte) { words[byte >> 6] |= uint64_t{1} << (byte & 63); }
  void add_range(uint8_t low, uint8_t high) {
    for (unsigned b = low; b <= high; ++b) add(static_cast<uint8_t>(b));
  }
  bool operator==(const ByteSet& other) const {
    return words[0] == other.words[0] && words[1] == other.words[1] && words[2] == other.words[2] &&
           words[3] == other.words[3];
  }
};

// One item of an alternative: a byte from a set, or a whole rule.
struct GrammarSymbol {
  enum Kind : uint8_t { kBytes, kRule };
  Kind kind = kBytes;
  uint32_t index = 0;  // into the byte sets or the rules
};

// Work and size limits, so a hostile grammar or schema gets an error instead of eating the machine.
struct GrammarLimits {
  static constexpr size_t kMaxElements = size_t{1} << 22;
  static constexpr size_t kMaxRules = size_t{1} << 20;
  static constexpr int kMaxRepetition = 100000;  // the n of x{m,n}
};

// A checked grammar, flattened: each rule's alternatives are runs of elements in one array, each run
// closed by kEnd, so a parse position is one index.
class Grammar {
 public:
  enum class ElementKind : uint8_t { kBytes, kRule, kEnd };
  struct Element {
    ElementKind kind;
    uint32_t index;  // byte set or rule
  };

  const std::vector<Element>& elements() const { return elements_; }
  const ByteSet& byte_set(uint32_t index) const { return byte_sets_[index]; }
  size_t byte_set_count() const { return byte_sets_.size(); }
  // Where each alternative of `rule` starts in elements().
  const std::vector<uint32_t>& alternatives(uint32_t rule) const { return alternatives_[rule]; }
  uint32_t root() const { return root_; }
  size_t rule_count() const { return names_.size(); }
  const std::string& rule_name(uint32_t rule) const { return names_[rule]; }

 private:
  friend class GrammarBuilder;
  std::vector<Element> elements_;
  std::vector<ByteSet> byte_sets_;
  std::vector<std::vector<uint32_t>> alternatives_;
  std::vector<std::string> names_;
  uint32_t root_ = 0;
};

class GrammarBuilder {
 public:
  using Sequence = std::vector<GrammarSymbol>;
  struct CodepointRange {
    uint32_t first, last;
  };

  // The rule called `name`, declared on first use (a reference before the definition is fine).
  uint32_t rule(const std::string& name) {
    auto found = by_name_.find(name);
    if (found != by_name_.end()) return found->second;
    const uint32_t id = static_cast<uint32_t>(rules_.size());
    rules_.push_back(RuleDraft{name, {}, false});
    by_name_.emplace(name, id);
    return id;
  }
  // A new rule with a name no user rule has (for the parts front ends make up: repetitions, groups).
  // Never looked up by name, so it stays out of by_name_: x{0,100000} makes 100,000 of them.
  uint32_t new_rule(const std::string& hint) {
    const uint32_t id = static_cast<uint32_t>(rules_.size());
    rules_.push_back(RuleDraft{hint + " #" + std::to_string(id), {}, false});
    return id;
  }
  bool is_defined(uint32_t rule) const { return rules_[rule].defined; }
  const std::string& name(uint32_t rule) const { return rules_[rule].name; }
  size_t rule_count() const { return rules_.size(); }

  void define(uint32_t rule, std::vector<Sequence> alternatives) {
    for (const Sequence& s : alternatives) symbol_count_ += s.size() + 1;
    rules_[rule].alternatives = std::move(alternatives);
    rules_[rule].defined = true;
  }
  // A rule defined on the spot: the alternatives as one symbol.
  GrammarSymbol choice(const std::string& hint, std::vector<Sequence> alternatives) {
    if (alternatives.size() == 1 && alternatives[0].size() == 1) return alternatives[0][0];
    const uint32_t id = new_rule(hint);
    define(id, std::move(alternatives));
    return ref(id);
  }
  static GrammarSymbol ref(uint32_t rule) { return GrammarSymbol{GrammarSymbol::kRule, rule}; }

  GrammarSymbol bytes(const ByteSet& set) {
    const std::string key(reinterpret_cast<const char*>(set.words), sizeof(set.words));
    auto found = set_index_.find(key);
    if (found != set_index_.end()) return GrammarSymbol{GrammarSymbol::kBytes, found->second};
    const uint32_t index = static_cast<uint32_t>(byte_sets_.size());
    byte_sets_.push_back(set);
    set_index_.emplace(key, index);
    return GrammarSymbol{GrammarSymbol::kBytes, index};
  }
  GrammarSymbol byte_range(uint8_t low, uint8_t high) {
    ByteSet set;
    set.add_range(low, high);
    return bytes(set);
  }
  // The UTF-8 bytes of `text`, one symbol each.
  void append_literal(Sequence* out, std::string_view text) {
    for (const char c : text) out->push_back(byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)));
  }
  Sequence literal(std::string_view text) {
    Sequence out;
    append_literal(&out, text);
    return out;
  }

  // Any one of `texts`, as a trie of rules (shared prefixes once), so a 10,000-value enum keeps the
  // matcher's stack sets small.
  GrammarSymbol literals(const std::string& hint, std::vector<std::string> texts) {
    std::sort(texts.begin(), texts.end());
    texts.erase(std::unique(texts.begin(), texts.end()), texts.end());
    return choice(hint, literal_trie(hint, texts, 0, texts.size(), 0, 0));
  }

  // One code point from `ranges` (or, negated, any code point outside them), as UTF-8 byte sequences.
  GrammarSymbol char_class(std::vector<CodepointRange> ranges, bool negated) {
    std::vector<CodepointRange> set = normalize(std::move(ranges));
    if (negated) set = complement(set);
    std::vector<Sequence> alternatives;
    // ASCII first, merged into one byte set: the common case stays one symbol.
    ByteSet ascii;
    bool any_ascii = false;
    for (const CodepointRange& r : set) {
      if (r.first > 0x7F) continue;
      ascii.add_range(static_cast<uint8_t>(r.first), static_cast<uint8_t>(r.last < 0x7F ? r.last : 0x7F));
      any_ascii = true;
    }
    if (any_ascii) alternatives.push_back(Sequence{bytes(ascii)});
    for (const CodepointRange& r : set) {
      if (r.last < 0x80) continue;
      append_utf8_sequences(r.first < 0x80 ? 0x80 : r.first, r.last, &alternatives);
    }
    if (alternatives.empty()) {  // an empty class matches nothing: a set no byte is in
      return bytes(ByteSet());
    }
    return choice("class", std::move(alternatives));
  }

  // item{min,max}; max < 0 means unbounded. Nested optionals (x (x (x)?)?)? keep each step one choice.
  Expected<GrammarSymbol> repeat(const Sequence& item, int min, int max) {
    if (min < 0 || (max >= 0 && max < min) || min > GrammarLimits::kMaxRepetition ||
        max > GrammarLimits::kMaxRepetition) {
      return make_error(ErrorCode::kUnsupported, "repetition {%d,%d} is outside 0..%d", min, max,
                        GrammarLimits::kMaxRepetition);
    }
    const GrammarSymbol one = choice("item", {item});
    Sequence sequence(static_cast<size_t>(min), one);
    if (max < 0) {
      const uint32_t star = new_rule("star");
      define(star, {Sequence{one, ref(star)}, Sequence{}});
      sequence.push_back(ref(star));
    } else if (max > min) {
      uint32_t tail = new_rule("opt");
      define(tail, {Sequence{one}, Sequence{}});
      for (int i = min + 1; i < max; ++i) {
        const uint32_t outer = new_rule("opt");
        define(outer, {Sequence{one, ref(tail)}, Sequence{}});
        tail = outer;
      }
      sequence.push_back(ref(tail));
    }
    const uint32_t id = new_rule("repeat");
    define(id, {std::move(sequence)});
    return ref(id);
  }

  // Checks and flattens. `what` starts the error messages ("gbnf", "json schema").
  Expected<Grammar> build(uint32_t root, const char* what) const {
    if (rules_.size() > GrammarLimits::kMaxRules || symbol_count_ > GrammarLimits::kMaxElements) {
      return make_error(ErrorCode::kUnsupported, "%s: the grammar is too large (%zu rules, %zu symbols)", what,
                        rules_.size(), symbol_count_);
    }
    for (const RuleDraft& r : rules_) {
      if (!r.defined) return make_error(ErrorCode::kInvalidArgument, "%s: rule \"%s\" is used but never defined", what, r.name.c_str());
    }
    BORA_RETURN_IF_ERROR(check_left_recursion(what));
    Grammar grammar;
    grammar.byte_sets_ = byte_sets_;
    grammar.root_ = root;
    grammar.alternatives_.resize(rules_.size());
    grammar.names_.reserve(rules_.size());
    grammar.elements_.reserve(symbol_count_);
    for (size_t r = 0; r < rules_.size(); ++r) {
      grammar.names_.push_back(rules_[r].name);
      for (const Sequence& alternative : rules_[r].alternatives) {
        grammar.alternatives_[r].push_back(static_cast<uint32_t>(grammar.elements_.size()));
        for (const GrammarSymbol& s : alternative) {
          grammar.elements_.push_back(Grammar::Element{
              s.kind == GrammarSymbol::kBytes ? Grammar::ElementKind::kBytes : Grammar::ElementKind::kRule, s.index});
        }
        grammar.elements_.push_back(Grammar::Element{Grammar::ElementKind::kEnd, 0});
      }
    }
    return grammar;
  }

 private:
  struct RuleDraft {
    std::string name;
    std::vector<Sequence> alternatives;
    bool defined;
  };

  // Alternatives for texts[begin, end) (sorted, unique) from byte `depth` on.
  std::vector<Sequence> literal_trie(const std::string& hint, const std::vector<std::string>& texts, size_t begin,
                                     size_t end, size_t depth, int nesting) {
    std::vector<Sequence> alternatives;
    if (nesting > 200) {  // deep branching (a, aa, aaa, ...): plain alternatives for the rest
      for (size_t i = begin; i < end; ++i) alternatives.push_back(literal(std::string_view(texts[i]).substr(depth)));
      return alternatives;
    }
    size_t i = begin;
    if (i < end && texts[i].size() == depth) alternatives.push_back(Sequence{}), ++i;  // sorted: the shortest first
    while (i < end) {
      size_t j = i + 1;
      while (j < end && texts[j][depth] == texts[i][depth]) ++j;
      // The group's common prefix is written at once.
      size_t common = texts[i].size();
      for (size_t k = i + 1; k < j; ++k) {
        size_t c = depth;
        while (c < common && c < texts[k].size() && texts[k][c] == texts[i][c]) ++c;
        common = c;
      }
      Sequence sequence = literal(std::string_view(texts[i]).substr(depth, common - depth));
      if (j - i > 1 || texts[i].size() > common) {
        sequence.push_back(choice(hint, literal_trie(hint, texts, i, j, common, nesting + 1)));
      }
      alternatives.push_back(std::move(sequence));
      i = j;
    }
    return alternatives;
  }

  static std::vector<CodepointRange> normalize(std::vector<CodepointRange> ranges) {
    std::vector<CodepointRange> out;
    for (CodepointRange& r : ranges) {
      if (r.last > 0x10FFFF) r.last = 0x10FFFF;
      if (r.first <= r.last) out.push_back(r);
    }
    for (size_t i = 1; i < out.size(); ++i) {  // insertion sort: classes are short
      for (size_t j = i; j > 0 && out[j].first < out[j - 1].first; --j) std::swap(out[j], out[j - 1]);
    }
    std::vector<CodepointRange> merged;
    for (const CodepointRange& r : out) {
      if (!merged.empty() && r.first <= merged.back().last + 1) {
        if (r.last > merged.back().last) merged.back().last = r.last;
      } else {
        merged.push_back(r);
      }
    }
    return merged;
  }

  static std::vector<CodepointRange> complement(const std::vector<CodepointRange>& sorted) {
    std::vector<CodepointRange> out;
    uint32_t next = 0;
    for (const CodepointRange& r : sorted) {
      if (r.first > next) out.push_back(CodepointRange{next, r.first - 1});
      next = r.last + 1;
    }
    if (next <= 0x10FFFF) out.push_back(CodepointRange{next, 0x10FFFF});
    return out;
  }

  static int utf8_encode(uint32_t cp, uint8_t* out) {
    if (cp < 0x80) { out[0] = static_cast<uint8_t>(cp); return 1; }
    if (cp < 0x800) {
      out[0] = static_cast<uint8_t>(0xC0 | (cp >> 6));
      out[1] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
      return 2;
    }
    if (cp < 0x10000) {
      out[0] = static_cast<uint8_t>(0xE0 | (cp >> 12));
      out[1] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
      out[2] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
      return 3;
    }
    out[0] = static_cast<uint8_t>(0xF0 | (cp >> 18));
    out[1] = static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F));
    out[2] = static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F));
    out[3] = static_cast<uint8_t>(0x80 | (cp & 0x3F));
    return 4;
  }

  // Code points first..last (all >= 0x80) as byte-range sequences: split where the encoded length
  // changes, skip surrogates, then split until every byte position ranges independently.
  void append_utf8_sequences(uint32_t first, uint32_t last, std::vector<Sequence>* out) {
    static const uint32_t kLengthEnds[] = {0x7FF, 0xFFFF, 0x10FFFF};
    if (first <= 0xDFFF && last >= 0xD800) {  // surrogates are not characters
      if (first < 0xD800) append_utf8_sequences(first, 0xD7FF, out);
      if (last > 0xDFFF) append_utf8_sequences(0xE000, last, out);
      return;
    }
    for (const uint32_t end : kLengthEnds) {
      if (first <= end && last > end) {
        append_utf8_sequences(first, end, out);
        append_utf8_sequences(end + 1, last, out);
        return;
      }
    }
    for (int i = 1; i < 4; ++i) {
      const uint32_t low_mask = (uint32_t{1} << (6 * i)) - 1;
      if ((first & ~low_mask) != (last & ~low_mask)) {
        if ((first & low_mask) != 0) {
          append_utf8_sequences(first, first | low_mask, out);
          append_utf8_sequences((first | low_mask) + 1, last, out);
          return;
        }
        if ((last & low_mask) != low_mask) {
          append_utf8_sequences(first, (last & ~low_mask) - 1, out);
          append_utf8_sequences(last & ~low_mask, last, out);
          return;
        }
      }
    }
    uint8_t a[4], b[4];
    const int n = utf8_encode(first, a);
    utf8_encode(last, b);
    Sequence sequence;
    for (int i = 0; i < n; ++i) sequence.push_back(byte_range(a[i], b[i]));
    out->push_back(std::move(sequence));
  }

  // A rule that can start with itself (directly or through rules that may match nothing) would send
  // a top-down matcher into a loop; refuse it, naming the rule.
  Status check_left_recursion(const char* what) const {
    const size_t n = rules_.size();
    std::vector<uint8_t> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const Sequence& alternative : rules_[r].alternatives) {
          bool all = true;
          for (const GrammarSymbol& s : alternative) {
            if (s.kind == GrammarSymbol::kBytes || !nullable[s.index]) { all = false; break; }
          }
          if (all) { nullable[r] = 1; changed = true; break; }
        }
      }
    }
    std::vector<std::vector<uint32_t>> starts(n);  // rules each rule can begin with
    for (size_t r = 0; r < n; ++r) {
      for (const Sequence& alternative : rules_[r].alternatives) {
        for (const GrammarSymbol& s : alternative) {
          if (s.kind == GrammarSymbol::kBytes) break;
          starts[r].push_back(s.index);
          if (!nullable[s.index]) break;
        }
      }
    }
    // Iterative depth-first search (grammars from long repetitions are deep).
    std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
    std::vector<std::pair<uint32_t, size_t>> path;
    for (size_t start = 0; start < n; ++start) {
      if (color[start]) continue;
      path.push_back({static_cast<uint32_t>(start), 0});
      color[start] = 1;
      while (!path.empty()) {
        auto& top = path.back();
        if (top.second == starts[top.first].size()) {
          color[top.first] = 2;
          path.pop_back();
          continue;
        }
        const uint32_t next = starts[top.first][top.second++];
        if (color[next] == 1) {
          return make_error(ErrorCode::kUnsupported,
                            "%s: rule \"%s\" is left-recursive (it can begin with itself); write it right-recursive or with * / +",
                            what, display_name(next).c_str());
        }
        if (color[next] == 0) {
          color[next] = 1;
          path.push_back({next, 0});
        }
      }
    }
    return Status();
  }

  // Made-up rules carry " #" (no user rule name can); errors say what they stand for.
  std::string display_name(uint32_t rule) const {
    const std::string& name = rules_[rule].name;
    const size_t hash = name.find(" #");
    return hash == std::string::npos ? name : "a group or repetition (" + name + ")";
  }

  std::vector<RuleDraft> rules_;
  std::unordered_map<std::string, uint32_t> by_name_;
  std::vector<ByteSet> byte_sets_;
  std::unordered_map<std::string, uint32_t> set_index_;  // the set's 32 bytes -> its index
  size_t symbol_count_ = 0;
};

}  // namespace bora

#endif  // BORA_TEXT_GRAMMAR_HPP
// ---- end bora/text/grammar.hpp -----------------------------------------------------------------------

namespace bora {

namespace gbnf_detail {

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Expected<Grammar> parse() {
    skip_space(true);
    while (pos_ < text_.size()) {
      BORA_RETURN_IF_ERROR(parse_rule());
      skip_space(true);
    }
    if (!has_root_) return make_error(ErrorCode::kInvalidArgument, "gbnf: no rule named \"root\" (the start rule)");
    for (size_t r = 0; r < builder_.rule_count(); ++r) {
      if (!builder_.is_defined(static_cast<uint32_t>(r))) {
        const std::string& name = builder_.name(static_cast<uint32_t>(r));
        return make_error(ErrorCode::kInvalidArgument, "gbnf: rule \"%s\" is used (line %d) but never defined",
                          name.c_str(), first_use_line(name));
      }
    }
    return builder_.build(builder_.rule("root"), "gbnf");
  }

 private:
  static constexpr int kMaxNesting = 128;

  Status parse_rule() {
    const size_t name_start = pos_;
    const std::string name = parse_name();
    if (name.empty()) return fail("expected a rule name");
    skip_space(false);
    if (text_.compare(pos_, 3, "::=") != 0) {
      pos_ = name_start;
      return fail("expected \"::=\" after the rule name \"" + name + "\"");
    }
    pos_ += 3;
    const uint32_t id = builder_.rule(name);
    if (builder_.is_defined(id)) {
      pos_ = name_start;
      return fail("rule \"" + name + "\" is defined twice");
    }
    if (name == "root") has_root_ = true;
    std::vector<GrammarBuilder::Sequence> alternatives;
    BORA_RETURN_IF_ERROR(parse_alternatives(&alternatives, 0));
    builder_.define(id, std::move(alternatives));
    skip_space(false);
    if (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\r') return fail("unexpected character");
    return Status();
  }

  // Alternatives separated by '|'. At nesting 0 a newline ends the rule unless the next line starts with '|'.
  Status parse_alternatives(std::vector<GrammarBuilder::Sequence>* out, int nesting) {
    if (nesting > kMaxNesting) return fail("parentheses nested deeper than 128");
    skip_space(true);  // a rule's body may begin on the next line
    for (;;) {
      GrammarBuilder::Sequence sequence;
      BORA_RETURN_IF_ERROR(parse_sequence(&sequence, nesting));
      out->push_back(std::move(sequence));
      const size_t before = pos_;
      skip_space(true);
      if (pos_ < text_.size() && text_[pos_] == '|') {
        ++pos_;
        skip_space(true);
        continue;
      }
      if (nesting == 0) pos_ = before;  // the newline ends the rule
      return Status();
    }
  }

  Status parse_sequence(GrammarBuilder::Sequence* out, int nesting) {
    for (;;) {
      skip_space(nesting > 0);
      if (pos_ >= text_.size()) return Status();
      const char c = text_[pos_];
      const size_t item_start = out->size();
      if (c == '"') {
        ++pos_;
        std::string bytes;
        while (pos_ < text_.size() && text_[pos_] != '"') {
          uint32_t cp = 0;
          BORA_RETURN_IF_ERROR(parse_char(&cp));
          append_utf8(cp, &bytes);
        }
        if (pos_ >= text_.size()) return fail("unterminated string literal");
        ++pos_;
        if (bytes.empty()) continue;  // "" matches nothing and is nothing
        GrammarBuilder::Sequence literal = builder_.literal(bytes);
        if (literal.size() == 1) out->push_back(literal[0]);
        else out->push_back(builder_.choice("literal", {std::move(literal)}));
      } else if (c == '[') {
        ++pos_;
        bool negated = false;
        if (pos_ < text_.size() && text_[pos_] == '^') { negated = true; ++pos_; }
        std::vector<GrammarBuilder::CodepointRange> ranges;
        while (pos_ < text_.size() && text_[pos_] != ']') {
          uint32_t first = 0, last = 0;
          BORA_RETURN_IF_ERROR(parse_char(&first));
          last = first;
          if (pos_ + 1 < text_.size() && text_[pos_] == '-' && text_[pos_ + 1] != ']') {
            ++pos_;
            BORA_RETURN_IF_ERROR(parse_char(&last));
            if (last < first) return fail("character range is backwards");
          }
          ranges.push_back(GrammarBuilder::CodepointRange{first, last});
        }
        if (pos_ >= text_.size()) return fail("unterminated character class");
        ++pos_;
        out->push_back(builder_.char_class(std::move(ranges), negated));
      } else if (c == '.') {
        ++pos_;
        out->push_back(builder_.char_class({}, true));
      } else if (c == '(') {
        ++pos_;
        std::vector<GrammarBuilder::Sequence> group;
        BORA_RETURN_IF_ERROR(parse_alternatives(&group, nesting + 1));
        skip_space(true);
        if (pos_ >= text_.size() || text_[pos_] != ')') return fail("expected ')'");
        ++pos_;
        out->push_back(builder_.choice("group", std::move(group)));
      } else if (is_name_char(c)) {
        const size_t start = pos_;
        const std::string name = parse_name();
        // `name ::=` on this line means we ran into the next rule: the sequence ends before it.
        const size_t after = pos_;
        skip_space(false);
        if (text_.compare(pos_, 3, "::=") == 0) {
          pos_ = start;
          return fail("missing newline before the rule \"" + name + "\"");
        }
        pos_ = after;
        if (uses_.size() < 4096) uses_.emplace_back(name, line_of(start));
        out->push_back(GrammarBuilder::ref(builder_.rule(name)));
      } else {
        return Status();  // '|', ')', a newline, or something the caller reports
      }
      BORA_RETURN_IF_ERROR(parse_postfix(out, item_start));
    }
  }

  Status parse_postfix(GrammarBuilder::Sequence* out, size_t item_start) {
    if (item_start >= out->size() || pos_ >= text_.size()) return Status();
    const char c = text_[pos_];
    int min = 0, max = -1;
    if (c == '*') { ++pos_; }
    else if (c == '+') { ++pos_; min = 1; }
    else if (c == '?') { ++pos_; max = 1; }
    else if (c == '{') {
      ++pos_;
      BORA_RETURN_IF_ERROR(parse_count(&min));
      max = min;
      if (pos_ < text_.size() && text_[pos_] == ',') {
        ++pos_;
        skip_space(false);
        max = -1;
        if (pos_ < text_.size() && text_[pos_] != '}') BORA_RETURN_IF_ERROR(parse_count(&max));
      }
      skip_space(false);
      if (pos_ >= text_.size() || text_[pos_] != '}') return fail("expected '}' to close the repetition");
      ++pos_;
    } else {
      return Status();
    }
    const GrammarBuilder::Sequence item(out->begin() + static_cast<std::ptrdiff_t>(item_start), out->end());
    out->resize(item_start);
    auto repeated = builder_.repeat(item, min, max);
    if (!repeated) return fail(repeated.error().str());
    out->push_back(*repeated);
    if (pos_ < text_.size() && (text_[pos_] == '*' || text_[pos_] == '+' || text_[pos_] == '?' || text_[pos_] == '{'))
      return fail("two repetition operators in a row (group the first one in parentheses)");
    return Status();
  }

  Status parse_count(int* out) {
    skip_space(false);
    long value = 0;
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      value = value * 10 + (text_[pos_] - '0');
      if (value > GrammarLimits::kMaxRepetition) return fail("repetition count too large");
      ++pos_;
    }
    if (pos_ == start) return fail("expected a number in the repetition");
    skip_space(false);
    *out = static_cast<int>(value);
    return Status();
  }

  // One character of a literal or class, escapes decoded; UTF-8 input is read as one code point.
  Status parse_char(uint32_t* out) {
    const uint8_t c = static_cast<uint8_t>(text_[pos_]);
    if (c == '\\') {
      if (pos_ + 1 >= text_.size()) return fail("escape at the end of the input");
      const char e = text_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case 'n': *out = '\n'; return Status();
        case 'r': *out = '\r'; return Status();
        case 't': *out = '\t'; return Status();
        case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/':
          *out = static_cast<uint8_t>(e);
          return Status();
        case 'x': return parse_hex(2, out);
        case 'u': return parse_hex(4, out);
        case 'U': return parse_hex(8, out);
        default: pos_ -= 2; return fail(std::string("unknown escape \\") + e);
      }
    }
    if (c < 0x80) {
      ++pos_;
      *out = c;
      return Status();
    }
    int length = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
    if (length == 0 || pos_ + static_cast<size_t>(length) > text_.size()) return fail("malformed UTF-8");
    uint32_t cp = c & (0x7F >> length);
    for (int i = 1; i < length; ++i) {
      const uint8_t next = static_cast<uint8_t>(text_[pos_ + static_cast<size_t>(i)]);
      if ((next & 0xC0) != 0x80) return fail("malformed UTF-8");
      cp = (cp << 6) | (next & 0x3F);
    }
    pos_ += static_cast<size_t>(length);
    *out = cp;
    return Status();
  }

  Status parse_hex(int digits, uint32_t* out) {
    uint32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      if (pos_ >= text_.size()) return fail("short hex escape");
      const char h = text_[pos_];
      int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
      if (v < 0) return fail("expected a hex digit");
      value = value * 16 + static_cast<uint32_t>(v);
      ++pos_;
    }
    if (value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return fail("escape is not a Unicode character");
    *out = value;
    return Status();
  }

  static void append_utf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  static bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  }
  std::string parse_name() {
    const size_t start = pos_;
    while (pos_ < text_.size() && is_name_char(text_[pos_])) ++pos_;
    return std::string(text_.substr(start, pos_ - start));
  }

  // Spaces, tabs and comments; newlines too when `newlines`.
  void skip_space(bool newlines) {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == ' ' || c == '\t' || (newlines && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  int line_of(size_t offset) const {
    int line = 1;
    for (size_t i = 0; i < offset && i < text_.size(); ++i) line += text_[i] == '\n';
    return line;
  }
  int first_use_line(const std::string& name) const {
    for (const auto& use : uses_)
      if (use.first == name) return use.second;
    return 0;
  }

  Error fail(const std::string& what) const {
    const int line = line_of(pos_);
    size_t line_start = pos_;
    while (line_start > 0 && text_[line_start - 1] != '\n') --line_start;
    return make_error(ErrorCode::kInvalidArgument, "gbnf line %d column %zu: %s", line, pos_ - line_start + 1,
                      what.c_str());
  }

  std::string_view text_;
  size_t pos_ = 0;
  GrammarBuilder builder_;
  bool has_root_ = false;
  std::vector<std::pair<std::string, int>> uses_;  // rule references and their lines, for errors
};

}  // namespace gbnf_detail

// Reads a GBNF grammar (llama.cpp's format); the error names the line and column, or the rule.
inline Expected<Grammar> parse_gbnf(std::string_view text) {
  gbnf_detail::Parser parser(text);
  return parser.parse();
}

}  // namespace bora

#endif  // BORA_TEXT_GBNF_HPP
// ---- end bora/text/gbnf.hpp --------------------------------------------------------------------------
// ---- begin bora/text/grammar_constraint.hpp ----------------------------------------------------------
// Why this file exists: a grammar must become, before every sampled token, the set of token ids that
// keep the output a valid prefix, in tens of microseconds over 32,000 tokens. Three things make it
// cheap: the vocabulary is one byte trie walked depth-first (a dead byte prunes every token below it);
// the grammar's pushdown configurations (sets of stacks) are interned into states of a DFA built
// lazily, so a byte is one table lookup after its first time (a new state's transitions are found
// per class of bytes the grammar cannot tell apart, from what each of its stacks becomes, computed
// once per stack); and each state's mask is kept, so a string body or a repeated separator costs a copy. DFA and masks together stay under a byte budget
// (GrammarConstraintOptions::max_cache_bytes): past it the cache starts over and matchers replay their
// own text, so a hostile grammar costs time, never unbounded memory.
// GrammarConstraint is compiled once per grammar and vocabulary and shared (it is thread-safe);
// GrammarMatcher is the per-sequence cursor that SampleParams::constraint creates in each Sampler.
#ifndef BORA_TEXT_GRAMMAR_CONSTRAINT_HPP
#define BORA_TEXT_GRAMMAR_CONSTRAINT_HPP

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

// ---- begin bora/text/vocabulary_trie.hpp -------------------------------------------------------------
// Why this file exists: every grammar constraint walks the vocabulary as one byte trie, and building it
// (every piece's text, sorted) costs milliseconds, far more than compiling a small grammar. A
// VocabularyTrie is built once per tokenizer and shared, read-only, by every GrammarConstraint made
// with it (GrammarConstraintOptions::vocabulary), as a server does for each request's schema.
#ifndef BORA_TEXT_VOCABULARY_TRIE_HPP
#define BORA_TEXT_VOCABULARY_TRIE_HPP

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


namespace bora {

class VocabularyTrie {
 public:
  struct Node {
    uint8_t byte;
    uint16_t depth;        // 1 for a first byte
    uint32_t subtree_end;  // the first node after this one's subtree (preorder)
    uint32_t token_begin;  // tokens ending here: token_ids()[token_begin .. next node's token_begin)
  };

  // Token bytes are what the tokenizer's streaming decoder shows for each token in mid-text ("▁" as a
  // space, <0xNN> as its byte); control tokens, <unk> and unused ones have none and are never in the trie.
  // Null only when memory runs out.
  static std::shared_ptr<const VocabularyTrie> build(const Tokenizer& tokenizer) {
    std::shared_ptr<VocabularyTrie> trie(new (std::nothrow) VocabularyTrie());
    if (!trie) return nullptr;
    trie->eos_id_ = tokenizer.eos_id();
    trie->vocab_size_ = tokenizer.vocab_size();
    std::vector<std::pair<std::string, int32_t>> entries;
    entries.reserve(trie->vocab_size_);
    trie->token_bytes_.assign(trie->vocab_size_, TokenBytes());
    for (size_t id = 0; id < trie->vocab_size_; ++id) {
      const int32_t token = static_cast<int32_t>(id);
      const int32_t type = tokenizer.token_type(token);
      if (type == token_type::kControl || type == token_type::kUnknown || type == token_type::kUnused) continue;
      std::string text = tokenizer.piece_text(token);
      if (text.empty() || text.size() > 0xFFFF) continue;
      trie->token_bytes_[id] = TokenBytes{static_cast<uint32_t>(trie->arena_.size()), static_cast<uint32_t>(text.size())};
      trie->arena_.insert(trie->arena_.end(), text.begin(), text.end());
      entries.emplace_back(std::move(text), token);
    }
    std::sort(entries.begin(), entries.end());
    // Sorted strings give the trie in preorder: each string shares a prefix with the path so far.
    std::vector<uint32_t> path;  // node indices from the root down
    std::string previous;
    std::vector<Node>& nodes = trie->nodes_;
    for (const auto& entry : entries) {
      const std::string& text = entry.first;
      size_t common = 0;
      while (common < previous.size() && common < text.size() && previous[common] == text[common]) ++common;
      while (path.size() > common) {
        nodes[path.back()].subtree_end = static_cast<uint32_t>(nodes.size());
        path.pop_back();
      }
      for (size_t i = common; i < text.size(); ++i) {
        path.push_back(static_cast<uint32_t>(nodes.size()));
        nodes.push_back(Node{static_cast<uint8_t>(text[i]), static_cast<uint16_t>(i + 1), 0,
                             static_cast<uint32_t>(trie->token_ids_.size())});
      }
      trie->token_ids_.push_back(entry.second);  // always the node made (or reached) last
      previous = text;
      if (text.size() > trie->max_depth_) trie->max_depth_ = text.size();
    }
    while (!path.empty()) {
      nodes[path.back()].subtree_end = static_cast<uint32_t>(nodes.size());
      path.pop_back();
    }
    nodes.push_back(Node{0, 0, 0, static_cast<uint32_t>(trie->token_ids_.size())});  // sentinel
    return trie;
  }

  // Preorder nodes and a sentinel last (its token_begin ends the last node's tokens).
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  size_t max_depth() const { return max_depth_; }
  int32_t eos_id() const { return eos_id_; }
  size_t vocab_size() const { return vocab_size_; }

  // The bytes a token stands for; empty for a token never allowed (control, <unk>, out of range).
  std::string_view token_text(int32_t token) const {
    if (token < 0 || static_cast<size_t>(token) >= vocab_size_) return std::string_view();
    const TokenBytes& t = token_bytes_[static_cast<size_t>(token)];
    return std::string_view(reinterpret_cast<const char*>(arena_.data()) + t.offset, t.size);
  }

 private:
  struct TokenBytes {
    uint32_t offset = 0;
    uint32_t size = 0;
  };
  VocabularyTrie() = default;

  std::vector<Node> nodes_;
  std::vector<int32_t> token_ids_;
  std::vector<TokenBytes> token_bytes_;
  std::vector<uint8_t> arena_;
  size_t max_depth_ = 0;
  int32_t eos_id_ = -1;
  size_t vocab_size_ = 0;
};

}  // namespace bora

#endif  // BORA_TEXT_VOCABULARY_TRIE_HPP
// ---- end bora/text/vocabulary_trie.hpp ---------------------------------------------------------------

namespace bora {

struct GrammarConstraintOptions {
  // Tokens forced, in order, before the grammar's text begins; control tokens are allowed here (a
  // tool call's [TOOL_CALLS]).
  std::vector<int32_t> leading_tokens;
  // Upper bound on the lazily built DFA and its cached masks, in bytes. Past it the cache starts
  // over (matchers replay their own text), so a hostile grammar costs time, never unbounded memory.
  size_t max_cache_bytes = size_t{128} << 20;
  // The tokenizer's vocabulary as a trie (VocabularyTrie::build), shared by every constraint made with
  // it; null builds one for this constraint alone (milliseconds for a 32k vocabulary).
  std::shared_ptr<const VocabularyTrie> vocabulary;
};

class GrammarMatcher;

namespace detail {

// 64-bit keys to int32 values in one open-addressed table, emptied in O(1) by a generation stamp per
// slot: the DFA builder looks up stacks and clears its visited set for every closure, which
// node-based hash tables paid for in allocations.
class KeyIndex {
 public:
  // The value of `key`, or -1.
  int32_t find(uint64_t key) const {
    if (keys_.empty()) return -1;
    for (size_t i = slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (stamps_[i] != stamp_) return -1;
      if (keys_[i] == key) return values_[i];
    }
  }
  // Stores key -> value unless the key is there; false (and nothing changes) when it was.
  bool insert(uint64_t key, int32_t value) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    for (size_t i = slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (stamps_[i] != stamp_) {
        stamps_[i] = stamp_;
        keys_[i] = key;
        values_[i] = value;
        ++size_;
        return true;
      }
      if (keys_[i] == key) return false;
    }
  }
  void clear() {
    size_ = 0;
    if (++stamp_ == 0) {  // after 2^32 clears every old stamp could look current again
      std::fill(stamps_.begin(), stamps_.end(), 0u);
      stamp_ = 1;
    }
  }
  size_t size() const { return size_; }

 private:
  size_t slot(uint64_t key) const {
    const uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(h ^ (h >> 29)) & (keys_.size() - 1);
  }
  void grow() {
    std::vector<uint64_t> keys = std::move(keys_);
    std::vector<int32_t> values = std::move(values_);
    std::vector<uint32_t> stamps = std::move(stamps_);
    const size_t capacity = keys.empty() ? 64 : 2 * keys.size();
    keys_.assign(capacity, 0);
    values_.assign(capacity, 0);
    stamps_.assign(capacity, 0u);
    const uint32_t live = stamp_;
    stamp_ = 1;
    size_ = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (stamps[i] == live) insert(keys[i], values[i]);
    }
  }

  std::vector<uint64_t> keys_;
  std::vector<int32_t> values_;
  std::vector<uint32_t> stamps_;  // a slot is taken when its stamp is stamp_
  uint32_t stamp_ = 1;
  size_t size_ = 0;
};

}  // namespace detail

class GrammarConstraint {
 public:
  // The DFA state no byte leads out of and that is not complete.
  static constexpr int32_t kDead = 0;

  // Token bytes are what the tokenizer's streaming decoder shows for each token in mid-text ("▁" as a
  // space, <0xNN> as its byte); control tokens and <unk> are never allowed, EOS only when complete.
  static Expected<std::shared_ptr<const GrammarConstraint>> create(Grammar grammar, const Tokenizer& tokenizer,
                                                                   const GrammarConstraintOptions& options = {}) {
    for (const int32_t token : options.leading_tokens) {
      if (token < 0 || static_cast<size_t>(token) >= tokenizer.vocab_size() || token == tokenizer.eos_id())
        return make_error(ErrorCode::kInvalidArgument, "grammar constraint: leading token %d is not a usable token", token);
    }
    std::shared_ptr<const VocabularyTrie> vocabulary =
        options.vocabulary != nullptr ? options.vocabulary : VocabularyTrie::build(tokenizer);
    if (!vocabulary) return make_error(ErrorCode::kOutOfMemory, "grammar constraint: out of memory");
    if (vocabulary->vocab_size() != tokenizer.vocab_size() || vocabulary->eos_id() != tokenizer.eos_id())
      return make_error(ErrorCode::kInvalidArgument,
                        "grammar constraint: the vocabulary trie (%zu tokens) was built from another tokenizer (%zu)",
                        vocabulary->vocab_size(), tokenizer.vocab_size());
    std::shared_ptr<GrammarConstraint> c(new (std::nothrow) GrammarConstraint(std::move(grammar)));
    if (!c) return make_error(ErrorCode::kOutOfMemory, "grammar constraint: out of memory");
    c->vocab_ = std::move(vocabulary);
    c->eos_id_ = c->vocab_->eos_id();
    c->vocab_size_ = c->vocab_->vocab_size();
    c->leading_tokens_ = options.leading_tokens;
    const size_t mask_bytes = c->mask_words() * sizeof(uint64_t);
    // A quarter of the budget for masks (at least one), the rest for the DFA.
    c->max_masks_ = std::max<size_t>(1, std::min(kMaxCachedMasks, options.max_cache_bytes / 4 / mask_bytes));
    c->max_dfa_bytes_ = std::max<size_t>(options.max_cache_bytes - std::min(options.max_cache_bytes, c->max_masks_ * mask_bytes),
                                         size_t{64} << 10);
    {
      std::lock_guard<std::mutex> lock(c->mutex_);
      c->initial_ = c->start_state();
    }
    if (c->initial_ == kDead) return make_error(ErrorCode::kInvalidArgument, "grammar: the root rule matches nothing");
    return std::shared_ptr<const GrammarConstraint>(std::move(c));
  }

  const Grammar& grammar() const { return grammar_; }
  size_t trie_nodes() const { return vocab_->nodes().size() - 1; }
  // DFA states built so far (they grow with the distinct parser configurations generation meets).
  size_t dfa_states() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return states_.size();
  }
  // What the DFA and the cached masks hold now, in bytes (an estimate of their heap use), and how
  // often the cache has started over.
  size_t cache_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dfa_bytes_ + mask_pool_.size() * sizeof(uint64_t);
  }
  uint64_t cache_restarts() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return epoch_;
  }
  int32_t eos_id() const { return eos_id_; }
  size_t vocab_size() const { return vocab_size_; }
  size_t mask_words() const { return (vocab_size_ + 63) / 64; }
  const std::vector<int32_t>& leading_tokens() const { return leading_tokens_; }

 private:
  friend class GrammarMatcher;
  static constexpr size_t kMaxCachedMasks = 4096;    // 16 MiB of masks for a 32k vocabulary
  static constexpr size_t kMaxClosureWork = 200000;  // stack expansions per step, for hostile grammars

  // A matcher's place: a DFA state of cache generation `epoch`. The matcher keeps the bytes it has
  // accepted, so a cursor from before a restart of the cache is rebuilt by replaying them.
  struct Cursor {
    int32_t state = kDead;
    uint64_t epoch = 0;
    bool complete = false;
  };

  Cursor start() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return Cursor{initial_, epoch_, states_[static_cast<size_t>(initial_)].accepting};
  }

  // The bytes a token stands for in the grammar; empty for a token never allowed (control, <unk>).
  std::string_view token_text(int32_t token) const { return vocab_->token_text(token); }

  // Moves the cursor past `bytes`; false (cursor unchanged) when they leave the language.
  bool advance(Cursor* cursor, const std::string& history, std::string_view bytes) const {
    std::lock_guard<std::mutex> lock(mutex_);
    refresh(cursor, history);
    int32_t state = cursor->state;
    for (size_t i = 0; i < bytes.size() && state != kDead; ++i) state = step(state, static_cast<uint8_t>(bytes[i]));
    if (state == kDead) return false;
    cursor->state = state;
    cursor->complete = states_[static_cast<size_t>(state)].accepting;
    return true;
  }

  // Bit i of `bits` (mask_words() words) set when token i may come next. EOS is allowed when the state
  // is complete, and also when no token fits (a dead end must still be able to stop).
  void allowed_tokens(Cursor* cursor, const std::string& history, uint64_t* bits) const {
    std::lock_guard<std::mutex> lock(mutex_);
    refresh(cursor, history);
    const int32_t state = cursor->state;
    const size_t words = mask_words();
    if (states_[static_cast<size_t>(state)].mask_slot < 0) {
      if (mask_pool_.size() >= max_masks_ * words) {  // the cache is only a cache: start over
        for (State& other : states_) other.mask_slot = -1;
        mask_pool_.clear();
      }
      const size_t slot = mask_pool_.size() / words;
      mask_pool_.resize(mask_pool_.size() + words, 0);
      walk_trie(state, mask_pool_.data() + slot * words);
      states_[static_cast<size_t>(state)].mask_slot = static_cast<int32_t>(slot);
    }
    std::memcpy(bits, mask_pool_.data() + static_cast<size_t>(states_[static_cast<size_t>(state)].mask_slot) * words,
                words * sizeof(uint64_t));
  }

  // Under mutex_: starts the cache over when it is past its budget, then brings `cursor` into the
  // current generation by replaying the bytes its matcher accepted.
  void refresh(Cursor* cursor, const std::string& history) const {
    if (dfa_bytes_ > max_dfa_bytes_) restart_cache();
    if (cursor->epoch == epoch_) return;
    int32_t state = initial_;
    for (size_t i = 0; i < history.size() && state != kDead; ++i) state = step(state, static_cast<uint8_t>(history[i]));
    cursor->state = state;
    cursor->epoch = epoch_;
    cursor->complete = states_[static_cast<size_t>(state)].accepting;
  }

  // Under mutex_.
  void restart_cache() const {
    states_.resize(1);
    states_[0].mask_slot = -1;
    transitions_.assign(256, kDead);
    stacks_.clear();
    stack_ids_.clear();
    state_ids_.clear();
    mask_pool_.clear();
    advances_.clear();
    advance_pool_.clear();
    dfa_bytes_ = 0;
    ++epoch_;
    initial_ = start_state();
  }

  struct Stack {
    uint32_t position;  // an element of grammar_.elements()
    int32_t parent;     // the frame to return to, -1 at the bottom
  };
  struct State {
    std::vector<int32_t> stacks;  // sorted ids; every top is a byte-set element
    bool accepting = false;
    int32_t mask_slot = -1;
  };
  explicit GrammarConstraint(Grammar grammar) : grammar_(std::move(grammar)) {
    states_.emplace_back();  // kDead
    transitions_.assign(256, kDead);
    find_byte_classes();
  }

  // Bytes that no byte set of the grammar tells apart lead every state to the same place, so a state's
  // transitions are computed once per class of such bytes (a JSON grammar has a few dozen, not 256).
  // Each set splits the classes it cuts: class (c, in set) and (c, not in set) get new numbers.
  void find_byte_classes() {
    uint8_t classes[256] = {};
    size_t count = 1;
    for (size_t i = 0; i < grammar_.byte_set_count() && count < 256; ++i) {
      const ByteSet& set = grammar_.byte_set(static_cast<uint32_t>(i));
      int16_t renumbered[256][2];
      for (size_t c = 0; c < count; ++c) renumbered[c][0] = renumbered[c][1] = -1;
      int16_t next = 0;
      for (unsigned b = 0; b < 256; ++b) {
        int16_t& to = renumbered[classes[b]][set.has(static_cast<uint8_t>(b)) ? 1 : 0];
        if (to < 0) to = next++;
        classes[b] = static_cast<uint8_t>(to);
      }
      count = static_cast<size_t>(next);
    }
    class_byte_.assign(count, 0);
    for (unsigned b = 256; b-- > 0;) {
      byte_class_[b] = classes[b];
      class_byte_[classes[b]] = static_cast<uint8_t>(b);  // ends as the class's lowest byte
    }
  }

  // Under mutex_: sets the bits of every token whose bytes the state accepts.
  void walk_trie(int32_t state, uint64_t* bits) const {
    std::vector<int32_t>& at_depth = walk_states_;
    const std::vector<VocabularyTrie::Node>& nodes = vocab_->nodes();
    const std::vector<int32_t>& token_ids = vocab_->token_ids();
    at_depth.assign(vocab_->max_depth() + 1, kDead);
    at_depth[0] = state;
    const size_t n = nodes.size() - 1;
    bool any = false;
    for (size_t i = 0; i < n;) {
      const VocabularyTrie::Node& node = nodes[i];
      const int32_t from = at_depth[node.depth - 1];
      int32_t next = transitions_[static_cast<size_t>(from) * 256 + node.byte];
      if (next < 0) next = compute_transition(from, node.byte);
      if (next == kDead) {
        i = node.subtree_end;
        continue;
      }
      at_depth[node.depth] = next;
      for (uint32_t t = node.token_begin; t < nodes[i + 1].token_begin; ++t) {
        const int32_t id = token_ids[t];
        bits[id >> 6] |= uint64_t{1} << (id & 63);
        any = true;
      }
      ++i;
    }
    if ((states_[static_cast<size_t>(state)].accepting || !any) && eos_id_ >= 0 &&
        static_cast<size_t>(eos_id_) < vocab_size_) {
      bits[eos_id_ >> 6] |= uint64_t{1} << (eos_id_ & 63);
    }
  }

  // Under mutex_.
  int32_t step(int32_t state, uint8_t byte) const {
    const int32_t next = transitions_[static_cast<size_t>(state) * 256 + byte];
    return next >= 0 ? next : compute_transition(state, byte);
  }

  // Under mutex_.
  int32_t start_state() const {
    begin_closure();
    for (const uint32_t alternative : grammar_.alternatives(grammar_.root())) expand(alternative, -1);
    return intern_state(&closure_out_, closure_accepting_);
  }

  // Fills in every byte's transition out of `from` at once: bytes the same stacks accept lead to the
  // same state, so a string body's ~200 bytes cost a handful of unions. Per class of bytes (see
  // find_byte_classes), `accepted_by` has bit k set when stacks[k] accepts the class's bytes.
  int32_t compute_transition(int32_t from, uint8_t byte) const {
    const std::vector<int32_t> stacks = states_[static_cast<size_t>(from)].stacks;  // states_ may grow
    const size_t row = static_cast<size_t>(from) * 256;
    if (stacks.size() > 64) {  // rare: one union per byte asked for
      transitions_[row + byte] = state_after(stacks, byte, ~uint64_t{0});
      return transitions_[row + byte];
    }
    const size_t classes = class_byte_.size();
    uint64_t accepted_by[256] = {};
    for (size_t k = 0; k < stacks.size(); ++k) {
      const Grammar::Element& e = grammar_.elements()[stacks_[static_cast<size_t>(stacks[k])].position];
      const ByteSet& set = grammar_.byte_set(e.index);
      for (size_t c = 0; c < classes; ++c) {
        if (set.has(class_byte_[c])) accepted_by[c] |= uint64_t{1} << k;
      }
    }
    // Classes the same stacks accept share one state: sorted by that set, each run computes it once.
    uint16_t order[256];
    for (size_t c = 0; c < classes; ++c) order[c] = static_cast<uint16_t>(c);
    std::sort(order, order + classes, [&](uint16_t a, uint16_t b) { return accepted_by[a] < accepted_by[b]; });
    int32_t target[256];
    for (size_t i = 0; i < classes; ++i) {
      const uint16_t c = order[i];
      if (accepted_by[c] == 0) target[c] = kDead;
      else if (i > 0 && accepted_by[order[i - 1]] == accepted_by[c]) target[c] = target[order[i - 1]];
      else target[c] = state_after(stacks, class_byte_[c], accepted_by[c]);
    }
    for (unsigned b = 0; b < 256; ++b) {
      if (transitions_[row + b] < 0) transitions_[row + b] = target[byte_class_[b]];
    }
    return transitions_[row + byte];
  }

  // The state after `byte` from the stacks selected by `which` (bit k: stacks[k], all when > 64
  // stacks): the union of what each of them becomes once its top byte is consumed.
  int32_t state_after(const std::vector<int32_t>& stacks, uint8_t byte, uint64_t which) const {
    std::vector<int32_t> next;
    bool accepting = false;
    for (size_t k = 0; k < stacks.size(); ++k) {
      if (k < 64 && !((which >> k) & 1u)) continue;
      const Stack s = stacks_[static_cast<size_t>(stacks[k])];
      if (!grammar_.byte_set(grammar_.elements()[s.position].index).has(byte)) continue;
      const Advance a = advance(stacks[k]);
      next.insert(next.end(), advance_pool_.begin() + a.begin, advance_pool_.begin() + a.begin + a.count);
      accepting = accepting || a.accepting;
    }
    return intern_state(&next, accepting);
  }

  // What stack `id` becomes once the byte on its top is consumed: every stack expand() reaches from the
  // element after it. That depends neither on the byte nor on the other stacks of a state, so it is
  // computed once per stack (and cache generation) and shared by every state that holds the stack.
  struct Advance {
    uint32_t begin = 0;  // into advance_pool_
    uint32_t count = 0;
    bool accepting = false;  // it can also return from the root: the input so far is complete
    bool known = false;
  };
  Advance advance(int32_t id) const {
    const size_t index = static_cast<size_t>(id);
    if (index < advances_.size() && advances_[index].known) return advances_[index];
    const Stack s = stacks_[index];
    begin_closure();
    expand(s.position + 1, s.parent);
    std::sort(closure_out_.begin(), closure_out_.end());
    closure_out_.erase(std::unique(closure_out_.begin(), closure_out_.end()), closure_out_.end());
    Advance a;
    a.begin = static_cast<uint32_t>(advance_pool_.size());
    a.count = static_cast<uint32_t>(closure_out_.size());
    a.accepting = closure_accepting_;
    a.known = true;
    advance_pool_.insert(advance_pool_.end(), closure_out_.begin(), closure_out_.end());
    if (advances_.size() < stacks_.size()) advances_.resize(stacks_.size());  // expand() may add stacks
    advances_[index] = a;
    dfa_bytes_ += sizeof(Advance) + closure_out_.size() * sizeof(int32_t);
    return a;
  }

  void begin_closure() const {
    closure_out_.clear();
    closure_accepting_ = false;
    visited_.clear();
    work_budget_ = kMaxClosureWork;
  }

  // Adds every stack reachable from (position, parent) whose top is a byte set, descending into rules
  // and returning from finished alternatives; an empty stack means the input so far is complete.
  void expand(uint32_t position, int32_t parent) const {
    work_.clear();
    work_.push_back(Stack{position, parent});
    const std::vector<Grammar::Element>& elements = grammar_.elements();
    while (!work_.empty()) {
      const Stack item = work_.back();
      work_.pop_back();
      const uint64_t key = (uint64_t{item.position} << 32) | static_cast<uint32_t>(item.parent + 1);
      if (!visited_.insert(key, 0)) continue;
      if (work_budget_ == 0) break;  // bounded work: a truncated set only forbids, never allows more
      --work_budget_;
      const Grammar::Element& e = elements[item.position];
      if (e.kind == Grammar::ElementKind::kBytes) {
        closure_out_.push_back(intern_stack(item.position, item.parent));
      } else if (e.kind == Grammar::ElementKind::kEnd) {
        if (item.parent < 0) {
          closure_accepting_ = true;
        } else {
          work_.push_back(stacks_[static_cast<size_t>(item.parent)]);
        }
      } else {
        // A reference in tail position returns straight to our parent: no frame, so a right-recursive
        // loop (x*, a string body) keeps the same stacks, hence the same DFA state and cached mask.
        const int32_t continuation = elements[item.position + 1].kind == Grammar::ElementKind::kEnd
                                         ? item.parent
                                         : intern_stack(item.position + 1, item.parent);
        for (const uint32_t alternative : grammar_.alternatives(e.index)) work_.push_back(Stack{alternative, continuation});
      }
    }
  }

  // The DFA state whose configuration is the set `stacks` (sorted and deduplicated here), made on
  // first sight.
  int32_t intern_state(std::vector<int32_t>* stacks, bool accepting) const {
    if (!std::is_sorted(stacks->begin(), stacks->end())) std::sort(stacks->begin(), stacks->end());
    stacks->erase(std::unique(stacks->begin(), stacks->end()), stacks->end());
    if (stacks->empty() && !accepting) return kDead;
    std::string key(reinterpret_cast<const char*>(stacks->data()), stacks->size() * sizeof(int32_t));
    key.push_back(accepting ? 1 : 0);
    auto found = state_ids_.find(key);
    if (found != state_ids_.end()) return found->second;
    // Past twice the budget within one call (a hostile grammar): no new states, which only forbids;
    // the next call starts the cache over.
    if (dfa_bytes_ > 2 * max_dfa_bytes_) return kDead;
    dfa_bytes_ += 256 * sizeof(int32_t) + sizeof(State) + 2 * key.size() + 96;
    const int32_t id = static_cast<int32_t>(states_.size());
    State state;
    state.stacks = *stacks;
    state.accepting = accepting;
    states_.push_back(std::move(state));
    transitions_.resize(transitions_.size() + 256, -1);
    state_ids_.emplace(std::move(key), id);
    return id;
  }

  int32_t intern_stack(uint32_t position, int32_t parent) const {
    const uint64_t key = (uint64_t{position} << 32) | static_cast<uint32_t>(parent + 1);
    const int32_t found = stack_ids_.find(key);
    if (found >= 0) return found;
    const int32_t id = static_cast<int32_t>(stacks_.size());
    dfa_bytes_ += sizeof(Stack) + 32;
    stacks_.push_back(Stack{position, parent});
    stack_ids_.insert(key, id);
    return id;
  }

  Grammar grammar_;
  int32_t eos_id_ = -1;
  size_t vocab_size_ = 0;
  std::vector<int32_t> leading_tokens_;
  size_t max_masks_ = kMaxCachedMasks;
  size_t max_dfa_bytes_ = size_t{96} << 20;
  uint8_t byte_class_[256] = {};
  std::vector<uint8_t> class_byte_;  // a byte of each class
  // The vocabulary, shared with other constraints (immutable).
  std::shared_ptr<const VocabularyTrie> vocab_;
  // The lazily built DFA and its caches, shared by every matcher, under mutex_.
  mutable std::mutex mutex_;
  mutable std::vector<Stack> stacks_;
  mutable detail::KeyIndex stack_ids_;
  mutable std::vector<State> states_;
  mutable std::unordered_map<std::string, int32_t> state_ids_;
  mutable std::vector<int32_t> transitions_;  // [state * 256 + byte], -1 until computed
  mutable std::vector<Advance> advances_;     // [stack id]
  mutable std::vector<int32_t> advance_pool_;
  mutable std::vector<uint64_t> mask_pool_;
  mutable std::vector<int32_t> walk_states_;
  mutable std::vector<Stack> work_;
  mutable detail::KeyIndex visited_;  // (position, parent) pairs met in the current closure
  mutable std::vector<int32_t> closure_out_;
  mutable bool closure_accepting_ = false;
  mutable size_t work_budget_ = 0;
  mutable int32_t initial_ = kDead;
  mutable size_t dfa_bytes_ = 0;
  mutable uint64_t epoch_ = 0;  // how often the cache started over
};

// One sequence's position in a grammar: which tokens may come next, and the token that came.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const GrammarConstraint> constraint)
      : constraint_(std::move(constraint)), cursor_(constraint_->start()) {}

  void reset() {
    cursor_ = constraint_->start();
    history_.clear();
    leading_done_ = 0;
    finished_ = false;
    mask_valid_ = false;
  }

  // One bit per vocabulary id: the leading token due, else what the grammar allows (EOS when the
  // value is complete); after EOS, EOS alone.
  const std::vector<uint64_t>& allowed_tokens() {
    if (!mask_valid_) {
      mask_.assign(constraint_->mask_words(), 0);
      if (finished_) {
        set_bit(constraint_->eos_id());
      } else if (leading_done_ < constraint_->leading_tokens().size()) {
        set_bit(constraint_->leading_tokens()[leading_done_]);
      } else {
        constraint_->allowed_tokens(&cursor_, history_, mask_.data());
      }
      mask_valid_ = true;
    }
    return mask_;
  }
  bool is_allowed(int32_t token) {
    if (token < 0 || static_cast<size_t>(token) >= constraint_->vocab_size()) return false;
    return (allowed_tokens()[static_cast<size_t>(token) >> 6] >> (token & 63)) & 1u;
  }

  // Sets every logit the grammar forbids to -infinity (ids past the grammar's vocabulary too).
  void mask_logits(float* logits, int64_t n_vocab) {
    const std::vector<uint64_t>& bits = allowed_tokens();
    const float forbidden = -std::numeric_limits<float>::infinity();
    const int64_t known = std::min<int64_t>(n_vocab, static_cast<int64_t>(constraint_->vocab_size()));
    for (int64_t word = 0; word * 64 < known; ++word) {
      const uint64_t allowed = bits[static_cast<size_t>(word)];
      if (allowed == ~uint64_t{0}) continue;
      const int64_t end = std::min<int64_t>(known, word * 64 + 64);
      for (int64_t id = word * 64; id < end; ++id) {
        if (!((allowed >> (id & 63)) & 1u)) logits[id] = forbidden;
      }
    }
    for (int64_t id = known; id < n_vocab; ++id) logits[id] = forbidden;
  }

  // Moves past `token`; false (and nothing changes) when the grammar does not allow it here.
  bool accept(int32_t token) {
    if (!is_allowed(token)) return false;
    if (token == constraint_->eos_id()) {
      finished_ = true;
      mask_valid_ = false;
      return true;
    }
    if (leading_done_ < constraint_->leading_tokens().size()) {
      ++leading_done_;
      mask_valid_ = false;
      return true;
    }
    return move_past(constraint_->token_text(token));
  }
  // Moves past raw text (a test, or text the caller forces); false and nothing changes when it does
  // not fit, or while leading tokens are due.
  bool accept_text(std::string_view text) {
    if (finished_ || leading_done_ < constraint_->leading_tokens().size()) return false;
    return move_past(text);
  }

  // The output so far is a complete value (EOS may end it).
  bool is_complete() const {
    return finished_ || (leading_done_ == constraint_->leading_tokens().size() && cursor_.complete);
  }
  // EOS was accepted.
  bool is_finished() const { return finished_; }
  const GrammarConstraint& constraint() const { return *constraint_; }

 private:
  bool move_past(std::string_view bytes) {
    const GrammarConstraint::Cursor before = cursor_;
    if (!constraint_->advance(&cursor_, history_, bytes)) return false;
    history_.append(bytes.data(), bytes.size());
    if (cursor_.state != before.state || cursor_.epoch != before.epoch) mask_valid_ = false;
    return true;
  }
  void set_bit(int32_t id) {
    if (id >= 0 && static_cast<size_t>(id) < constraint_->vocab_size()) mask_[static_cast<size_t>(id) >> 6] |= uint64_t{1} << (id & 63);
  }

  std::shared_ptr<const GrammarConstraint> constraint_;
  GrammarConstraint::Cursor cursor_;
  std::string history_;  // every byte accepted (replayed if the constraint's cache starts over)
  size_t leading_done_ = 0;
  bool finished_ = false;
  std::vector<uint64_t> mask_;
  bool mask_valid_ = false;
};

}  // namespace bora

#endif  // BORA_TEXT_GRAMMAR_CONSTRAINT_HPP
// ---- end bora/text/grammar_constraint.hpp ------------------------------------------------------------
// ---- begin bora/text/json_schema.hpp -----------------------------------------------------------------
// Why this file exists: apps describe the JSON they want with a JSON Schema; this compiles the subset
// people use for structured output into a Grammar, so generation can only produce documents that
// validate. Whitespace, number lengths and nesting are bounded, so even a random model's output ends.
// What is generated is stricter than the schema where that keeps the grammar small, never looser:
// properties come in the schema's order, only the named ones (additionalProperties is never exercised
// when properties are given), output is compact JSON with bounded whitespace.
// Anything outside the subset is an error naming the keyword and its JSON pointer, never ignored
// (annotations such as title, description, default, examples and format are ignored).
#ifndef BORA_TEXT_JSON_SCHEMA_HPP
#define BORA_TEXT_JSON_SCHEMA_HPP

#include <simdjson.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


namespace bora {

struct JsonGrammarOptions {
  int max_whitespace = 12;      // whitespace characters between two tokens of the JSON
  int max_integer_digits = 16;  // also bounds integer minimum/maximum that are absent
  int max_fraction_digits = 15;
  int max_exponent_digits = 2;  // 2: every number fits a double (parsers such as simdjson reject 1e721)
  int max_string_length = -1;   // for strings without maxLength; < 0: unbounded
  int max_members = -1;         // members of objects and items of arrays whose schema sets no bound; < 0: unbounded
  int max_schema_depth = 64;    // nested schemas (and $ref hops while compiling)
};

namespace json_schema_detail {

using Sequence = GrammarBuilder::Sequence;

class Compiler {
 public:
  explicit Compiler(const JsonGrammarOptions& options) : options_(options) {
    options_.max_whitespace = std::max(0, std::min(options_.max_whitespace, 1000));
    options_.max_integer_digits = std::max(1, std::min(options_.max_integer_digits, 18));
    options_.max_fraction_digits = std::max(1, std::min(options_.max_fraction_digits, 1000));
    options_.max_exponent_digits = std::max(1, std::min(options_.max_exponent_digits, 4));
    options_.max_string_length = std::min(options_.max_string_length, GrammarLimits::kMaxRepetition);
    options_.max_members = std::min(options_.max_members, GrammarLimits::kMaxRepetition);
  }

  Expected<Grammar> compile_schema(std::string_view schema_text) {
    const simdjson::padded_string padded(schema_text);
    if (parser_.parse(padded).get(root_)) return make_error(ErrorCode::kInvalidArgument, "json schema: not valid JSON");
    auto value = compile(root_, "#", 0);
    if (!value) return value.error();
    return finish(*value);
  }

  Expected<Grammar> compile_any_object() { return finish(any_object()); }

  // Compiles `schema`, an element of a document the caller keeps alive, as one value inside a larger
  // grammar (tool calls embed each tool's parameters); its $refs resolve within it, apart from other
  // schemas compiled under another `scope`.
  Expected<GrammarSymbol> compile_embedded(simdjson::dom::element schema, const std::string& scope) {
    root_ = schema;
    ref_scope_ = scope;
    return compile(schema, "#", 0);
  }
  GrammarBuilder& builder() { return b_; }

  Expected<Grammar> finish(GrammarSymbol value) {
    const uint32_t root = b_.rule("root");
    b_.define(root, {Sequence{value}});
    return b_.build(root, "json schema");
  }

 private:

  static Error unsupported(const std::string& keyword, const std::string& path) {
    return make_error(ErrorCode::kUnsupported,
                      "json schema: keyword \"%s\" at %s is not supported (bora supports type, properties, required, "
                      "additionalProperties, enum, const, items, minItems, maxItems, minLength, maxLength, integer "
                      "minimum/maximum, anyOf, $ref into $defs)",
                      keyword.c_str(), path.c_str());
  }
  static Error invalid(const std::string& path, const std::string& what) {
    return make_error(ErrorCode::kInvalidArgument, "json schema: %s: %s", path.c_str(), what.c_str());
  }
  static std::string child(const std::string& path, std::string_view key) {
    std::string out = path + "/";
    for (const char c : key) {
      if (c == '~') out += "~0";
      else if (c == '/') out += "~1";
      else out += c;
    }
    return out;
  }
  static bool is_annotation(std::string_view key) {
    static const char* const kIgnored[] = {"$schema", "$id", "$comment", "title", "description", "default", "examples",
                                           "format", "deprecated", "readOnly", "writeOnly", "$defs", "definitions",
                                           "contentMediaType", "contentEncoding"};
    for (const char* ignored : kIgnored)
      if (key == ignored) return true;
    return false;
  }

  Expected<GrammarSymbol> compile(simdjson::dom::element schema, const std::string& path, int depth) {
    if (depth > options_.max_schema_depth)
      return invalid(path, "schemas nested deeper than " + std::to_string(options_.max_schema_depth));
    bool boolean = false;
    if (schema.get_bool().get(boolean) == simdjson::SUCCESS) {
      if (!boolean) return invalid(path, "the schema false matches nothing");
      return any_value();
    }
    simdjson::dom::object object;
    if (schema.get_object().get(object)) return invalid(path, "a schema must be an object or a boolean");
    static const char* const kSupported[] = {"type", "properties", "required", "additionalProperties", "enum", "const",
                                             "items", "minItems", "maxItems", "minLength", "maxLength", "minimum",
                                             "maximum", "anyOf", "$ref"};
    std::vector<std::string> keywords;
    for (auto field : object) {
      const std::string_view key = field.key;
      if (is_annotation(key)) continue;
      bool known = false;
      for (const char* supported : kSupported) known = known || key == supported;
      if (!known) return unsupported(std::string(key), path);
      keywords.emplace_back(key);
    }
    auto has = [&](const char* k) {
      for (const std::string& keyword : keywords)
        if (keyword == k) return true;
      return false;
    };
    if (has("$ref") || has("anyOf") || has("enum") || has("const")) {
      const char* lead = has("$ref") ? "$ref" : has("anyOf") ? "anyOf" : has("enum") ? "enum" : "const";
      for (const std::string& keyword : keywords) {
        if (keyword != lead && !(keyword == "type" && (std::string(lead) == "enum" || std::string(lead) == "const")))
          return make_error(ErrorCode::kUnsupported, "json schema: keyword \"%s\" beside \"%s\" at %s is not supported",
                            keyword.c_str(), lead, path.c_str());
      }
      if (has("$ref")) return compile_ref(object, path, depth);
      if (has("anyOf")) return compile_any_of(object, path, depth);
      return compile_literals(object, lead, path);
    }
    std::vector<std::string> types;
    simdjson::dom::element type;
    if (object["type"].get(type) == simdjson::SUCCESS) {
      std::string_view one;
      simdjson::dom::array many;
      if (type.get_string().get(one) == simdjson::SUCCESS) {
        types.emplace_back(one);
      } else if (type.get_array().get(many) == simdjson::SUCCESS) {
        for (simdjson::dom::element t : many) {
          if (t.get_string().get(one)) return invalid(child(path, "type"), "expected type names");
          types.emplace_back(one);
        }
      } else {
        return invalid(child(path, "type"), "expected a type name or an array of them");
      }
    } else if (has("properties") || has("required") || has("additionalProperties")) {
      types.emplace_back("object");
    } else if (has("items") || has("minItems") || has("maxItems")) {
      types.emplace_back("array");
    } else if (has("minLength") || has("maxLength")) {
      types.emplace_back("string");
    } else if (has("minimum") || has("maximum")) {
      return make_error(ErrorCode::kUnsupported, "json schema: \"minimum\"/\"maximum\" at %s needs \"type\": \"integer\"",
                        path.c_str());
    } else {
      return any_value();
    }
    std::vector<Sequence> alternatives;
    for (const std::string& t : types) {
      Expected<GrammarSymbol> symbol = GrammarSymbol();
      if (t == "object") symbol = compile_object(object, path, depth);
      else if (t == "array") symbol = compile_array(object, path, depth);
      else if (t == "string") symbol = compile_string(object, path);
      else if (t == "integer") symbol = compile_integer(object, path);
      else if (t == "number") symbol = compile_number(object, path);
      else if (t == "boolean") symbol = b_.choice("boolean", {b_.literal("true"), b_.literal("false")});
      else if (t == "null") symbol = b_.choice("null", {b_.literal("null")});
      else return invalid(child(path, "type"), "unknown type \"" + t + "\"");
      if (!symbol) return symbol.error();
      alternatives.push_back(Sequence{*symbol});
    }
    return b_.choice("type", std::move(alternatives));
  }

  Expected<GrammarSymbol> compile_ref(simdjson::dom::object object, const std::string& path, int depth) {
    std::string_view ref;
    if (object["$ref"].get_string().get(ref)) return invalid(child(path, "$ref"), "expected a string");
    const std::string pointer(ref);
    auto known = ref_rules_.find(ref_scope_ + pointer);
    if (known != ref_rules_.end()) return GrammarBuilder::ref(known->second);
    simdjson::dom::element target;
    if (pointer == "#") {
      target = root_;
    } else if (pointer.compare(0, 2, "#/") == 0) {
      // JSON pointer, ~1 and ~0 unescaped; only into $defs / definitions.
      if (pointer.compare(0, 8, "#/$defs/") != 0 && pointer.compare(0, 14, "#/definitions/") != 0)
        return make_error(ErrorCode::kUnsupported, "json schema: \"$ref\" at %s points to %s (only #/$defs/... is supported)",
                          path.c_str(), pointer.c_str());
      target = root_;
      size_t start = 2;
      while (start <= pointer.size()) {
        size_t end = pointer.find('/', start);
        if (end == std::string::npos) end = pointer.size();
        std::string token;
        for (size_t i = start; i < end; ++i) {
          if (pointer[i] == '~' && i + 1 < end) {
            token += pointer[i + 1] == '1' ? '/' : '~';
            ++i;
          } else {
            token += pointer[i];
          }
        }
        simdjson::dom::element next;
        if (target.at_key(token).get(next))
          return invalid(child(path, "$ref"), "\"" + pointer + "\" does not exist in this schema");
        target = next;
        start = end + 1;
      }
    } else {
      return make_error(ErrorCode::kUnsupported, "json schema: \"$ref\" at %s is \"%s\" (only #/$defs/... refs are supported)",
                        path.c_str(), pointer.c_str());
    }
    // Declared before compiling, so recursive schemas refer back to it.
    const uint32_t rule = b_.rule("$ref:" + ref_scope_ + pointer);
    ref_rules_.emplace(ref_scope_ + pointer, rule);
    auto body = compile(target, pointer, depth + 1);
    if (!body) return body.error();
    b_.define(rule, {Sequence{*body}});
    return GrammarBuilder::ref(rule);
  }

  Expected<GrammarSymbol> compile_any_of(simdjson::dom::object object, const std::string& path, int depth) {
    simdjson::dom::array options;
    if (object["anyOf"].get_array().get(options) || options.size() == 0)
      return invalid(child(path, "anyOf"), "expected a non-empty array of schemas");
    std::vector<Sequence> alternatives;
    size_t index = 0;
    for (simdjson::dom::element option : options) {
      auto symbol = compile(option, child(child(path, "anyOf"), std::to_string(index++)), depth + 1);
      if (!symbol) return symbol.error();
      alternatives.push_back(Sequence{*symbol});
    }
    return b_.choice("anyOf", std::move(alternatives));
  }

  // enum / const: the values' compact JSON text, verbatim.
  Expected<GrammarSymbol> compile_literals(simdjson::dom::object object, const char* keyword, const std::string& path) {
    std::vector<std::string> texts;
    if (std::string(keyword) == "const") {
      simdjson::dom::element value;
      if (object["const"].get(value)) return invalid(child(path, "const"), "missing value");
      texts.push_back(simdjson::minify(value));
    } else {
      simdjson::dom::array values;
      if (object["enum"].get_array().get(values) || values.size() == 0)
        return invalid(child(path, "enum"), "expected a non-empty array");
      for (simdjson::dom::element value : values) texts.push_back(simdjson::minify(value));
    }
    return b_.literals(keyword, std::move(texts));
  }

  Status read_count(simdjson::dom::object object, const char* keyword, const std::string& path, int64_t* out) {
    simdjson::dom::element element;
    if (object[keyword].get(element)) return Status();
    double value = 0;
    if (element.get_double().get(value) || value < 0 || value != std::floor(value) || value > GrammarLimits::kMaxRepetition)
      return invalid(child(path, keyword), "expected an integer in 0.." + std::to_string(GrammarLimits::kMaxRepetition));
    *out = static_cast<int64_t>(value);
    return Status();
  }

  Expected<GrammarSymbol> compile_object(simdjson::dom::object object, const std::string& path, int depth) {
    simdjson::dom::object properties;
    const bool has_properties = object["properties"].get_object().get(properties) == simdjson::SUCCESS;
    if (!has_properties && object["properties"].error() != simdjson::NO_SUCH_FIELD)
      return invalid(child(path, "properties"), "expected an object");
    std::vector<std::string> required;
    simdjson::dom::element required_element;
    if (object["required"].get(required_element) == simdjson::SUCCESS) {
      simdjson::dom::array list;
      if (required_element.get_array().get(list)) return invalid(child(path, "required"), "expected an array of names");
      for (simdjson::dom::element name : list) {
        std::string_view text;
        if (name.get_string().get(text)) return invalid(child(path, "required"), "expected an array of names");
        required.emplace_back(text);
      }
    }
    simdjson::dom::element additional;
    const bool has_additional = object["additionalProperties"].get(additional) == simdjson::SUCCESS;
    bool additional_allowed = true;
    if (has_additional) {
      bool flag = true;
      if (additional.get_bool().get(flag) == simdjson::SUCCESS) additional_allowed = flag;
    }
    const GrammarSymbol ws = whitespace();

    if (!has_properties && required.empty()) {
      if (!additional_allowed) return b_.choice("object", {Sequence{byte('{'), ws, byte('}')}});
      if (has_additional && additional.is_object()) {
        auto value = compile(additional, child(path, "additionalProperties"), depth + 1);
        if (!value) return value.error();
        return members_object(*value);
      }
      return any_object();
    }

    struct Entry {
      std::string name;
      GrammarSymbol value;
      bool required;
    };
    std::vector<Entry> entries;
    auto is_required = [&](std::string_view name) {
      for (const std::string& r : required)
        if (r == name) return true;
      return false;
    };
    if (has_properties) {
      for (auto field : properties) {
        auto value = compile(field.value, child(child(path, "properties"), field.key), depth + 1);
        if (!value) return value.error();
        entries.push_back(Entry{std::string(field.key), *value, is_required(field.key)});
      }
    }
    for (const std::string& name : required) {
      bool listed = false;
      for (const Entry& e : entries) listed = listed || e.name == name;
      if (listed) continue;
      if (!additional_allowed)
        return invalid(child(path, "required"), "\"" + name + "\" is required but not in properties, and additionalProperties is false");
      GrammarSymbol value = any_value();
      if (has_additional && additional.is_object()) {
        auto compiled = compile(additional, child(path, "additionalProperties"), depth + 1);
        if (!compiled) return compiled.error();
        value = *compiled;
      }
      entries.push_back(Entry{name, value, true});
    }
    // first[i]: properties i.. with none written yet; rest[i]: the same after one was (", " first).
    const size_t n = entries.size();
    std::vector<uint32_t> first(n + 1), rest(n + 1);
    for (size_t i = 0; i <= n; ++i) {
      first[i] = b_.new_rule("properties");
      rest[i] = b_.new_rule("properties");
    }
    b_.define(first[n], {});  // no property left: nothing to start with
    b_.define(rest[n], {Sequence{}});
    bool any_required = false;
    for (size_t i = n; i-- > 0;) {
      Sequence member = b_.literal(json_string_literal(entries[i].name));
      member.insert(member.end(), {ws, byte(':'), ws, entries[i].value});
      const GrammarSymbol kv = b_.choice("member", {member});
      std::vector<Sequence> first_alternatives{Sequence{kv, GrammarBuilder::ref(rest[i + 1])}};
      std::vector<Sequence> rest_alternatives{Sequence{ws, byte(','), ws, kv, GrammarBuilder::ref(rest[i + 1])}};
      if (!entries[i].required) {
        first_alternatives.push_back(Sequence{GrammarBuilder::ref(first[i + 1])});
        rest_alternatives.push_back(Sequence{GrammarBuilder::ref(rest[i + 1])});
      }
      any_required = any_required || entries[i].required;
      b_.define(first[i], std::move(first_alternatives));
      b_.define(rest[i], std::move(rest_alternatives));
    }
    const GrammarSymbol body = GrammarBuilder::ref(first[0]);
    if (any_required) return b_.choice("object", {Sequence{byte('{'), ws, body, ws, byte('}')}});
    return b_.choice("object", {Sequence{byte('{'), ws, body, ws, byte('}')}, Sequence{byte('{'), ws, byte('}')}});
  }

  Expected<GrammarSymbol> compile_array(simdjson::dom::object object, const std::string& path, int depth) {
    GrammarSymbol item = any_value();
    simdjson::dom::element items;
    if (object["items"].get(items) == simdjson::SUCCESS) {
      auto compiled = compile(items, child(path, "items"), depth + 1);
      if (!compiled) return compiled.error();
      item = *compiled;
    }
    int64_t min = 0, max = -1;
    BORA_RETURN_IF_ERROR(read_count(object, "minItems", path, &min));
    BORA_RETURN_IF_ERROR(read_count(object, "maxItems", path, &max));
    if (max >= 0 && max < min) return invalid(path, "minItems is larger than maxItems");
    const GrammarSymbol ws = whitespace();
    if (max < 0 && options_.max_members >= 0) max = std::max<int64_t>(min, options_.max_members);
    if (max == 0) return b_.choice("array", {Sequence{byte('['), ws, byte(']')}});
    auto more = b_.repeat(Sequence{ws, byte(','), ws, item}, min > 0 ? static_cast<int>(min - 1) : 0,
                          max < 0 ? -1 : static_cast<int>(max - 1));
    if (!more) return invalid(path, more.error().str());
    const GrammarSymbol list = b_.choice("items", {Sequence{item, *more}});
    std::vector<Sequence> alternatives{Sequence{byte('['), ws, list, ws, byte(']')}};
    if (min == 0) alternatives.push_back(Sequence{byte('['), ws, byte(']')});
    return b_.choice("array", std::move(alternatives));
  }

  Expected<GrammarSymbol> compile_string(simdjson::dom::object object, const std::string& path) {
    int64_t min = 0, max = -1;
    BORA_RETURN_IF_ERROR(read_count(object, "minLength", path, &min));
    BORA_RETURN_IF_ERROR(read_count(object, "maxLength", path, &max));
    if (max >= 0 && max < min) return invalid(path, "minLength is larger than maxLength");
    if (max < 0 && options_.max_string_length >= 0) max = std::max<int64_t>(min, options_.max_string_length);
    if (min == 0 && (max < 0 || max == options_.max_string_length)) return string_rule();
    auto body = b_.repeat(Sequence{string_char()}, static_cast<int>(min), static_cast<int>(max));
    if (!body) return invalid(path, body.error().str());
    return b_.choice("string", {Sequence{byte('"'), *body, byte('"')}});
  }

  Expected<GrammarSymbol> compile_number(simdjson::dom::object object, const std::string& path) {
    for (const char* keyword : {"minimum", "maximum"}) {
      if (object[keyword].error() != simdjson::NO_SUCH_FIELD)
        return make_error(ErrorCode::kUnsupported, "json schema: keyword \"%s\" at %s is supported on integers only",
                          keyword, path.c_str());
    }
    return number_rule();
  }

  Expected<GrammarSymbol> compile_integer(simdjson::dom::object object, const std::string& path) {
    int64_t limit = 1;
    for (int i = 0; i < options_.max_integer_digits && i < 18; ++i) limit *= 10;
    limit -= 1;
    int64_t low = -limit, high = limit;
    for (const char* keyword : {"minimum", "maximum"}) {
      simdjson::dom::element element;
      if (object[keyword].get(element)) continue;
      double value = 0;
      if (element.get_double().get(value) || !std::isfinite(value))
        return invalid(child(path, keyword), "expected a number");
      const bool is_min = keyword[1] == 'i';
      const double rounded = is_min ? std::ceil(value) : std::floor(value);
      const double clamped = std::max(std::min(rounded, static_cast<double>(limit)), static_cast<double>(-limit));
      (is_min ? low : high) = static_cast<int64_t>(clamped);
    }
    if (low > high) return invalid(path, "no integer lies between minimum and maximum");
    if (low == -limit && high == limit) return integer_rule();
    std::vector<Sequence> alternatives;
    if (low < 0) {
      const int64_t a = high < 0 ? -high : 1;
      for (Sequence& s : decimal_range(a, -low)) {
        s.insert(s.begin(), byte('-'));
        alternatives.push_back(std::move(s));
      }
    }
    if (high >= 0) {
      for (Sequence& s : decimal_range(low > 0 ? low : 0, high)) alternatives.push_back(std::move(s));
    }
    return b_.choice("integer", std::move(alternatives));
  }

  // Decimal texts (no leading zeros) of every integer in [low, high], 0 <= low <= high.
  std::vector<Sequence> decimal_range(int64_t low, int64_t high) {
    std::vector<Sequence> out;
    const std::string low_text = std::to_string(low), high_text = std::to_string(high);
    for (size_t length = low_text.size(); length <= high_text.size(); ++length) {
      const std::string first = length == low_text.size() ? low_text : "1" + std::string(length - 1, '0');
      const std::string last = length == high_text.size() ? high_text : std::string(length, '9');
      same_length_range(first, last, Sequence(), &out);
    }
    return out;
  }
  void same_length_range(const std::string& low, const std::string& high, Sequence prefix, std::vector<Sequence>* out) {
    if (low.empty()) {
      out->push_back(std::move(prefix));
      return;
    }
    const std::string low_rest = low.substr(1), high_rest = high.substr(1);
    if (low[0] == high[0]) {
      prefix.push_back(byte(low[0]));
      same_length_range(low_rest, high_rest, std::move(prefix), out);
      return;
    }
    const std::string zeros(low_rest.size(), '0'), nines(low_rest.size(), '9');
    if (low_rest == zeros && high_rest == nines) {  // a whole block: [a-b][0-9][0-9]...
      prefix.push_back(b_.byte_range(static_cast<uint8_t>(low[0]), static_cast<uint8_t>(high[0])));
      for (size_t i = 0; i < low_rest.size(); ++i) prefix.push_back(b_.byte_range('0', '9'));
      out->push_back(std::move(prefix));
      return;
    }
    Sequence with_low = prefix;
    with_low.push_back(byte(low[0]));
    same_length_range(low_rest, nines, std::move(with_low), out);
    if (low[0] + 1 <= high[0] - 1) {
      Sequence middle = prefix;
      middle.push_back(b_.byte_range(static_cast<uint8_t>(low[0] + 1), static_cast<uint8_t>(high[0] - 1)));
      for (size_t i = 0; i < low_rest.size(); ++i) middle.push_back(b_.byte_range('0', '9'));
      out->push_back(std::move(middle));
    }
    prefix.push_back(byte(high[0]));
    same_length_range(zeros, high_rest, std::move(prefix), out);
  }

  static std::string json_string_literal(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
      const unsigned char u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (u < 0x20) {
        char escaped[8];
        std::snprintf(escaped, sizeof(escaped), "\\u%04x", u);
        out += escaped;
      } else {
        out += c;
      }
    }
    return out + "\"";
  }

  GrammarSymbol byte(char c) { return b_.byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)); }

 public:
  // The shared pieces, made on first use.
  GrammarSymbol whitespace() {
    if (ws_ < 0) {
      ByteSet set;
      set.add(' ');
      set.add('\t');
      set.add('\n');
      ws_ = b_.repeat(Sequence{b_.bytes(set)}, 0, options_.max_whitespace)->index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(ws_));
  }
  GrammarSymbol string_char() {
    if (string_char_ < 0) {
      const GrammarSymbol plain = b_.char_class({{'"', '"'}, {'\\', '\\'}, {0, 0x1F}}, true);
      const GrammarSymbol hex = b_.char_class({{'0', '9'}, {'a', 'f'}, {'A', 'F'}}, false);
      const GrammarSymbol simple = b_.char_class({{'"', '"'}, {'\\', '\\'}, {'/', '/'}, {'b', 'b'}, {'f', 'f'}, {'n', 'n'}, {'r', 'r'}, {'t', 't'}}, false);
      string_char_ = b_.choice("char", {Sequence{plain}, Sequence{byte('\\'), simple},
                                        Sequence{byte('\\'), byte('u'), hex, hex, hex, hex}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(string_char_));
  }
  GrammarSymbol string_rule() {
    if (string_ < 0) {
      auto body = b_.repeat(Sequence{string_char()}, 0, options_.max_string_length < 0 ? -1 : options_.max_string_length);
      string_ = b_.choice("string", {Sequence{byte('"'), *body, byte('"')}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(string_));
  }
  GrammarSymbol digits(int min, int max) {
    auto repeated = b_.repeat(Sequence{b_.byte_range('0', '9')}, min, max);
    return *repeated;
  }
  GrammarSymbol integer_rule() {
    if (integer_ < 0) {
      const GrammarSymbol sign = b_.choice("sign", {Sequence{byte('-')}, Sequence{}});
      const GrammarSymbol magnitude = b_.choice("digits", {Sequence{byte('0')}, Sequence{b_.byte_range('1', '9'),
                                                          digits(0, std::max(0, options_.max_integer_digits - 1))}});
      integer_ = b_.choice("integer", {Sequence{sign, magnitude}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(integer_));
  }
  GrammarSymbol number_rule() {
    if (number_ < 0) {
      const GrammarSymbol fraction =
          b_.choice("fraction", {Sequence{byte('.'), digits(1, std::max(1, options_.max_fraction_digits))}, Sequence{}});
      const GrammarSymbol exponent_sign = b_.choice("sign", {Sequence{byte('-')}, Sequence{byte('+')}, Sequence{}});
      const GrammarSymbol exponent = b_.choice(
          "exponent", {Sequence{b_.char_class({{'e', 'e'}, {'E', 'E'}}, false), exponent_sign,
                                digits(1, std::max(1, options_.max_exponent_digits))},
                       Sequence{}});
      number_ = b_.choice("number", {Sequence{integer_rule(), fraction, exponent}}).index;
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(number_));
  }
  // Any JSON value: one recursive rule set, shared.
  GrammarSymbol any_value() {
    if (value_ < 0) {
      const uint32_t value = b_.new_rule("value");
      value_ = value;
      const GrammarSymbol self = GrammarBuilder::ref(value);
      const GrammarSymbol ws = whitespace();
      const GrammarSymbol more = *b_.repeat(Sequence{ws, byte(','), ws, self}, 0, more_members());
      const GrammarSymbol array = b_.choice("array", {Sequence{byte('['), ws, self, more, ws, byte(']')},
                                                      Sequence{byte('['), ws, byte(']')}});
      b_.define(value, {Sequence{members_object(self)}, Sequence{array}, Sequence{string_rule()},
                        Sequence{number_rule()}, b_.literal("true"), b_.literal("false"), b_.literal("null")});
    }
    return GrammarBuilder::ref(static_cast<uint32_t>(value_));
  }
  GrammarSymbol any_object() {
    any_value();
    if (object_ < 0) object_ = members_object(GrammarBuilder::ref(static_cast<uint32_t>(value_))).index;
    return GrammarBuilder::ref(static_cast<uint32_t>(object_));
  }
 private:
  // How many members may follow the first in an unbounded container (-1: any number).
  int more_members() const { return options_.max_members < 0 ? -1 : std::max(0, options_.max_members - 1); }
  // {"key": value, ...} with any keys and values of one kind.
  GrammarSymbol members_object(GrammarSymbol value) {
    const GrammarSymbol ws = whitespace();
    const GrammarSymbol member = b_.choice("member", {Sequence{string_rule(), ws, byte(':'), ws, value}});
    const GrammarSymbol more = *b_.repeat(Sequence{ws, byte(','), ws, member}, 0, more_members());
    const uint32_t rule = b_.new_rule("object");
    b_.define(rule, {Sequence{byte('{'), ws, member, more, ws, byte('}')}, Sequence{byte('{'), ws, byte('}')}});
    return GrammarBuilder::ref(rule);
  }

  JsonGrammarOptions options_;
  GrammarBuilder b_;
  simdjson::dom::parser parser_;
  simdjson::dom::element root_;
  std::map<std::string, uint32_t> ref_rules_;  // by scope + pointer
  std::string ref_scope_;
  int64_t ws_ = -1, string_char_ = -1, string_ = -1, integer_ = -1, number_ = -1, value_ = -1, object_ = -1;
};

}  // namespace json_schema_detail

// The grammar of the JSON documents `schema` (JSON Schema text) accepts; see the top of this file.
inline Expected<Grammar> json_schema_grammar(std::string_view schema, const JsonGrammarOptions& options = JsonGrammarOptions()) {
  json_schema_detail::Compiler compiler(options);
  return compiler.compile_schema(schema);
}

// Any JSON object (OpenAI's response_format {"type": "json_object"}).
inline Expected<Grammar> json_object_grammar(const JsonGrammarOptions& options = JsonGrammarOptions()) {
  json_schema_detail::Compiler compiler(options);
  return compiler.compile_any_object();
}

}  // namespace bora

#endif  // BORA_TEXT_JSON_SCHEMA_HPP
// ---- end bora/text/json_schema.hpp -------------------------------------------------------------------
// ---- begin bora/text/language_model.hpp --------------------------------------------------------------
// Why this file exists: the model layer knows weights and the forward pass, text/ knows tokens; an
// application wants both at once. LanguageModel binds a model's weights to the tokenizer its files
// carry and makes the sessions that talk text, and load<Preset>() / load_any() open the pair.
#ifndef BORA_TEXT_LANGUAGE_MODEL_HPP
#define BORA_TEXT_LANGUAGE_MODEL_HPP

#include <memory>
#include <string>
#include <utility>

// ---- begin bora/text/scheduler.hpp -------------------------------------------------------------------
// Why this file exists: many conversations over one model at once (a crowd of NPCs, a server's
// users). Every step runs one forward pass for all running sequences, so the weights are read once
// for all of them; sequences join, leave, fork and stop at any step, and a sequence's text is the
// same bits whatever else runs beside it (Model::forward_batch's batch invariance).
#ifndef BORA_TEXT_SCHEDULER_HPP
#define BORA_TEXT_SCHEDULER_HPP

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- begin bora/text/sampler.hpp ---------------------------------------------------------------------
// Why this file exists: turning logits into the next token is where "same seed, same text" is won or
// lost; this sampler uses its own PRNG and a total order on candidates, so a seed gives the same
// tokens on every compiler, standard library and thread count, and it allocates only on first use.
//
// Order of operations (llama.cpp's default chain): repetition penalty -> greedy if temperature <= 0
// -> top-k -> top-p -> min-p (both on the softmax of the untempered logits) -> temperature -> draw.
#ifndef BORA_TEXT_SAMPLER_HPP
#define BORA_TEXT_SAMPLER_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>


namespace bora {

struct SampleParams {
  float temperature = 0.8f;   // <= 0: greedy (argmax)
  int top_k = 40;             // <= 0: no limit
  float top_p = 0.95f;        // >= 1: off
  float min_p = 0.05f;        // <= 0: off; keeps tokens with p >= min_p * p(best)
  float repeat_penalty = 1.0f;  // 1: off; > 1 discourages the last repeat_last_n tokens
  int repeat_last_n = 64;     // how many recent tokens the penalty looks at (< 0: all given)
  uint64_t seed = 0xB0BA;
  int max_tokens = 256;       // for generation loops: how many tokens to produce at most (< 0: no limit)
  // Structured output: only tokens the grammar allows are sampled, and EOS once the value is complete
  // (see text/grammar_constraint.hpp). Null: unconstrained.
  std::shared_ptr<const GrammarConstraint> constraint;
};

class Sampler {
 public:
  explicit Sampler(const SampleParams& params = SampleParams()) : params_(params), rng_(params.seed) {
    if (params.repeat_last_n > 0) recent_.reserve(static_cast<size_t>(params.repeat_last_n));
    if (params.constraint) matcher_.reset(new GrammarMatcher(params.constraint));
  }

  const SampleParams& params() const { return params_; }
  void reseed(uint64_t seed) { rng_.reseed(seed); }

  // Picks the next token. `logits` (n_vocab values) is modified in place by the repetition penalty;
  // `recent_tokens` is the history, oldest first (ids outside the vocabulary are ignored).
  // Returns -1 only when n_vocab <= 0. With a constraint, forbidden logits become -infinity and the
  // grammar moves past the token returned.
  int32_t sample(float* logits, int64_t n_vocab, const std::vector<int32_t>& recent_tokens) {
    if (logits == nullptr || n_vocab <= 0) return -1;
    if (!matcher_) return sample_unconstrained(logits, n_vocab, recent_tokens);
    matcher_->mask_logits(logits, n_vocab);
    const int32_t id = sample_unconstrained(logits, n_vocab, recent_tokens);
    if (matcher_->accept(id)) return id;
    // Every allowed logit was -infinity or NaN: end the output rather than break the grammar.
    const int32_t eos = matcher_->constraint().eos_id();
    matcher_->accept(eos);
    return eos;
  }

  // The grammar's cursor (null without a constraint): is_complete() says whether the output so far is a
  // whole value.
  const GrammarMatcher* matcher() const { return matcher_.get(); }

 private:
  int32_t sample_unconstrained(float* logits, int64_t n_vocab, const std::vector<int32_t>& recent_tokens) {
    apply_repeat_penalty(logits, n_vocab, recent_tokens);
    if (!(params_.temperature > 0.0f)) return argmax(logits, n_vocab);

    // Candidates in a total order (logit descending, id ascending), so ties never depend on the
    // sorting algorithm of the standard library at hand.
    size_t count = static_cast<size_t>(n_vocab);
    if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < count) {
      candidates_.resize(count);
      for (int64_t i = 0; i < n_vocab; ++i) {
        candidates_[static_cast<size_t>(i)] = Candidate{candidate_logit(logits[i]), static_cast<int32_t>(i), 0.0};
      }
      count = static_cast<size_t>(params_.top_k);
      auto better = [](const Candidate& a, const Candidate& b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
      };
      std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(count), candidates_.end(),
                        better);
    } else {
      count = order_all_candidates(logits, n_vocab);
    }
    if (candidates_[0].logit == -std::numeric_limits<float>::infinity()) return candidates_[0].id;
    // Forbidden candidates (-infinity, e.g. masked by a grammar) never get the rounding remainder below.
    while (count > 1 && candidates_[count - 1].logit == -std::numeric_limits<float>::infinity()) --count;

    // Probabilities of the untempered logits over the candidates left (for top-p and min-p only: the
    // draw below computes its own).
    if (params_.top_p < 1.0f || params_.min_p > 0.0f) softmax(count, 1.0f);
    if (params_.top_p < 1.0f) {
      double cumulative = 0.0;
      size_t keep = count;
      for (size_t i = 0; i < count; ++i) {
        cumulative += candidates_[i].probability;
        if (cumulative >= static_cast<double>(params_.top_p)) {
          keep = i + 1;
          break;
        }
      }
      count = std::max<size_t>(keep, 1);
    }
    if (params_.min_p > 0.0f) {
      const double threshold = static_cast<double>(params_.min_p) * candidates_[0].probability;
      size_t keep = 1;
      while (keep < count && candidates_[keep].probability >= threshold) ++keep;
      count = keep;
    }

    softmax(count, params_.temperature);
    const double target = rng_.next_double();
    double cumulative = 0.0;
    for (size_t i = 0; i < count; ++i) {
      cumulative += candidates_[i].probability;
      if (target < cumulative) return candidates_[i].id;
    }
    return candidates_[count - 1].id;  // rounding left the total a hair under 1
  }

  struct Candidate {
    float logit;
    int32_t id;
    double probability;
  };

  // NaN never wins; -0 and +0 are the same logit (the order must not tell them apart).
  static float candidate_logit(float logit) {
    return std::isnan(logit) ? -std::numeric_limits<float>::infinity() : logit + 0.0f;
  }

  // Every candidate in the total order, without a comparison sort: with no top-k limit (OpenAI's default)
  // the whole vocabulary is ordered for every token, and std::sort spent milliseconds on 32,768 of them.
  // Each candidate becomes one 64-bit number, a key that grows as the logit falls (high half) and its id
  // (low half); a stable radix sort on the key of numbers listed by id leaves equal logits by id, which is
  // exactly `logit descending, id ascending`, the order a comparison sort with that rule gives.
  // Candidates at -infinity (forbidden by a grammar: most of the vocabulary) are never drawn and weigh
  // nothing, so they are left out; when all are, the lowest id stands alone, as a full order would give.
  // Returns how many candidates there are.
  size_t order_all_candidates(const float* logits, int64_t n_vocab) {
    packed_.clear();
    for (int64_t i = 0; i < n_vocab; ++i) {
      const float logit = candidate_logit(logits[i]);
      if (logit == -std::numeric_limits<float>::infinity()) continue;
      uint32_t bits = 0;
      std::memcpy(&bits, &logit, sizeof bits);
      // Ascending floats as ascending unsigned numbers (negatives reversed), then inverted: best first.
      const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
      packed_.push_back((static_cast<uint64_t>(~ascending) << 32) | static_cast<uint32_t>(i));
    }
    const size_t n = packed_.size();
    if (n == 0) {
      candidates_.assign(1, Candidate{-std::numeric_limits<float>::infinity(), 0, 0.0});
      return 1;
    }
    packed_scratch_.resize(n);
    // Three stable passes of 11, 11 and 10 bits over the key, least significant first.
    constexpr int kDigitBits[3] = {11, 11, 10};
    int shift = 32;
    for (const int digit_bits : kDigitBits) {
      const uint64_t mask = (uint64_t{1} << digit_bits) - 1;
      uint32_t starts[2048] = {};
      for (const uint64_t value : packed_) ++starts[(value >> shift) & mask];
      if (starts[(packed_[0] >> shift) & mask] != n) {  // a digit every key shares moves nothing
        uint32_t next = 0;
        for (uint64_t digit = 0; digit <= mask; ++digit) {
          const uint32_t bucket = starts[digit];
          starts[digit] = next;
          next += bucket;
        }
        for (const uint64_t value : packed_) packed_scratch_[starts[(value >> shift) & mask]++] = value;
        packed_.swap(packed_scratch_);
      }
      shift += digit_bits;
    }
    candidates_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const int32_t id = static_cast<int32_t>(packed_[i] & 0xFFFFFFFFu);
      candidates_[i] = Candidate{candidate_logit(logits[id]), id, 0.0};
    }
    return n;
  }

  static int32_t argmax(const float* logits, int64_t n_vocab) {
    int64_t best = 0;
    for (int64_t i = 1; i < n_vocab; ++i) {
      if (logits[i] > logits[best] || std::isnan(logits[best])) best = i;
    }
    return static_cast<int32_t>(best);
  }

  // llama.cpp's convention: each distinct recent token once, positive logits divided by the
  // penalty, negative ones multiplied (both make the token less likely).
  void apply_repeat_penalty(float* logits, int64_t n_vocab, const std::vector<int32_t>& recent_tokens) {
    if (params_.repeat_penalty == 1.0f || params_.repeat_last_n == 0 || recent_tokens.empty()) return;
    size_t window = recent_tokens.size();
    if (params_.repeat_last_n > 0) window = std::min(window, static_cast<size_t>(params_.repeat_last_n));
    recent_.assign(recent_tokens.end() - static_cast<std::ptrdiff_t>(window), recent_tokens.end());
    std::sort(recent_.begin(), recent_.end());
    recent_.erase(std::unique(recent_.begin(), recent_.end()), recent_.end());
    for (const int32_t id : recent_) {
      if (id < 0 || id >= n_vocab) continue;
      float& logit = logits[id];
      logit = logit > 0.0f ? logit / params_.repeat_penalty : logit * params_.repeat_penalty;
    }
  }

  // Probabilities of the first `count` candidates (sorted, best first) at a temperature.
  void softmax(size_t count, float temperature) {
    const double max_logit = static_cast<double>(candidates_[0].logit);
    double total = 0.0;
    for (size_t i = 0; i < count; ++i) {
      const double scaled = (static_cast<double>(candidates_[i].logit) - max_logit) / static_cast<double>(temperature);
      const double weight = std::exp(scaled);
      candidates_[i].probability = weight;
      total += weight;
    }
    for (size_t i = 0; i < count; ++i) candidates_[i].probability /= total;
  }

  SampleParams params_;
  Xoshiro256 rng_;
  std::vector<Candidate> candidates_;  // grown once to the vocabulary size, then reused
  std::vector<uint64_t> packed_, packed_scratch_;  // order_all_candidates' keys, reused too
  std::vector<int32_t> recent_;
  std::unique_ptr<GrammarMatcher> matcher_;
};

}  // namespace bora

#endif  // BORA_TEXT_SAMPLER_HPP
// ---- end bora/text/sampler.hpp -----------------------------------------------------------------------
// ---- begin bora/text/session.hpp ---------------------------------------------------------------------
// Why this file exists: what an application talks to. A Session owns one stream over a shared model:
// it tokenizes prompts, prefills, samples and streams text pieces until a stop condition, keeps
// the conversation's tokens so later turns reuse the cache, and saves/restores its state.
#ifndef BORA_TEXT_SESSION_HPP
#define BORA_TEXT_SESSION_HPP

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// ---- begin bora/text/stop_filter.hpp -----------------------------------------------------------------
// Why this file exists: generated text must stop at a stop string without ever showing any of it,
// yet stream everything else at once. Sessions and the batch scheduler share this one filter.
#ifndef BORA_TEXT_STOP_FILTER_HPP
#define BORA_TEXT_STOP_FILTER_HPP

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace bora {

// Holds back the longest tail of the text that could still become a stop string.
class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stop = {}) : stop_(std::move(stop)) {}

  // Adds a piece; `ready` receives the text that can be shown now. Returns true when a stop string
  // appeared: `ready` then ends just before it and the filter holds nothing more.
  bool push(const std::string& piece, std::string* ready) {
    ready->clear();
    pending_ += piece;
    size_t first_stop = std::string::npos;
    for (const std::string& s : stop_) {
      const size_t at = s.empty() ? std::string::npos : pending_.find(s);
      if (at != std::string::npos) first_stop = std::min(first_stop, at);
    }
    if (first_stop != std::string::npos) {
      ready->assign(pending_, 0, first_stop);
      pending_.clear();
      return true;
    }
    size_t keep = 0;
    for (const std::string& s : stop_) {
      for (size_t len = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); len > keep; --len) {
        if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
          keep = len;
          break;
        }
      }
    }
    ready->assign(pending_, 0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return false;
  }

  // The text held back when generation ends for another reason: it was no stop string after all.
  std::string flush() {
    std::string rest;
    rest.swap(pending_);
    return rest;
  }

 private:
  std::vector<std::string> stop_;
  std::string pending_;
};

}  // namespace bora

#endif  // BORA_TEXT_STOP_FILTER_HPP
// ---- end bora/text/stop_filter.hpp -------------------------------------------------------------------

namespace bora {

struct SessionParams : ContextParams {
  // Which chat template chat() uses; empty = the one the model's files imply.
  std::optional<ChatTemplate> chat_template;
};

// Receives each decoded piece of text as it is produced; return false to stop generating.
using StreamCallback = std::function<bool(std::string_view piece)>;

// kCancelled and kError come from the batch scheduler (cancel(), a failure of that sequence alone).
enum class StopReason { kEndOfSequence, kMaxTokens, kStopString, kCallback, kContextFull, kCancelled, kError };

// What one Session::step() produced.
struct GenerationStep {
  // The text that became final with this token. Often empty: half a UTF-8 character waits for the
  // token that completes it, and text that may begin a stop string waits until it cannot.
  std::string text;
  int32_t token = -1;  // the token sampled and fed to the model; -1 when none was (the step ended it)
  bool done = false;   // the generation has ended (stop_reason says why); later steps return this again
  StopReason stop_reason = StopReason::kEndOfSequence;
};

struct GenerationResult {
  std::string text;           // everything streamed, stop string excluded
  int64_t n_prompt_tokens = 0;  // tokens prefilled for this call
  int64_t n_generated = 0;
  StopReason stop_reason = StopReason::kEndOfSequence;
};

class Session {
 public:
  // `tokenizer` may be null (a model whose files carry none): then only feed() and the raw stream work.
  Session(const Model& model, const Tokenizer* tokenizer, std::unique_ptr<ModelContext> context,
          SessionParams params)
      : model_(&model), tokenizer_(tokenizer), context_(std::move(context)), params_(std::move(params)) {}
  Session(Session&&) = default;
  Session& operator=(Session&&) = default;

  const Model& model() const { return *model_; }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  // Every token the cache has consumed, in order (position i = tokens()[i]).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t n_past() const { return context_->n_past(); }
  void reset() {
    context_->reset();
    tokens_.clear();
    generation_.reset();  // its half characters and stop-string tail belonged to the forgotten stream
    last_logits_.clear();  // they belonged to the forgotten stream (and save() pairs logits with tokens)
  }

  // Appends tokens to the stream (prefill); leaves the logits of the last one for sampling.
  Status feed(const std::vector<int32_t>& ids) {
    if (ids.empty()) return Status();
    last_logits_.resize(static_cast<size_t>(model_->config().vocab_size));
    Status status = model_->forward(*context_, ids.data(), static_cast<int64_t>(ids.size()), last_logits_.data(), false);
    if (!status) return status;
    tokens_.insert(tokens_.end(), ids.begin(), ids.end());
    return Status();
  }

  // The template chat() renders with: the session's choice, else what the files imply.
  ChatTemplate chat_template() const {
    if (params_.chat_template) return *params_.chat_template;
    // Without a tokenizer there are no control pieces to look at: the first template is as good as any,
    // and chat() refuses such a model anyway.
    if (tokenizer_ == nullptr) return ChatTemplate::kMistralV1;
    return chat_template_for(model_->files(), *tokenizer_);
  }

  // Continues the stream with `text` (BOS added when the stream is empty), then generates.
  Expected<GenerationResult> complete(std::string_view text, const SampleParams& sample, const StreamCallback& on_piece,
                                      const std::vector<std::string>& stop = {}) {
    BORA_RETURN_IF_ERROR(begin_completion(text, sample, stop));
    return run_generation(on_piece);
  }

  // Renders the whole conversation with the chat template; reuses the cache for the part that
  // is unchanged since the last call, prefills the rest and generates the assistant's reply.
  // `options.tools` offers functions (v2/v3 templates); a reply that calls them begins with the
  // [TOOL_CALLS] token (GenerationStep::token shows it; its text is the calls' JSON).
  Expected<GenerationResult> chat(const std::vector<ChatMessage>& messages, const SampleParams& sample,
                                  const StreamCallback& on_piece, const std::vector<std::string>& stop = {},
                                  const ChatTemplateOptions& options = {}) {
    BORA_RETURN_IF_ERROR(begin_chat(messages, sample, stop, options));
    return run_generation(on_piece);
  }

  // Samples tokens after what has been fed, streaming text, until end of sequence, max_tokens,
  // a stop string, the callback returning false, or a full context.
  Expected<GenerationResult> generate(const SampleParams& sample, const StreamCallback& on_piece,
                                      const std::vector<std::string>& stop = {}) {
    BORA_RETURN_IF_ERROR(begin_generation(sample, stop));
    return run_generation(on_piece);
  }

  // One token at a time (a game frame, an engine's own loop): begin_completion / begin_chat prefill
  // as complete() / chat() do, begin_generation continues what has been fed; then each step() samples
  // one token. The random state, half-decoded characters and stop strings carry over from step to
  // step, so the steps produce exactly the tokens and text of one complete() / chat() / generate()
  // call with the same seed (which are these steps run to the end). feed() between steps is allowed.
  Status begin_completion(std::string_view text, const SampleParams& sample, const std::vector<std::string>& stop = {}) {
    generation_.reset();
    const Tokenizer* tokenizer = tokenizer_;
    if (tokenizer == nullptr) return no_tokenizer();
    std::vector<int32_t> ids = tokenizer->encode(text, tokens_.empty() && tokenizer->add_bos_by_default());
    BORA_RETURN_IF_ERROR(feed(ids));
    return begin(sample, stop, /*reply_starts_text=*/false, static_cast<int64_t>(ids.size()));
  }

  Status begin_chat(const std::vector<ChatMessage>& messages, const SampleParams& sample,
                    const std::vector<std::string>& stop = {}, const ChatTemplateOptions& options = {}) {
    generation_.reset();
    const Tokenizer* tokenizer = tokenizer_;
    if (tokenizer == nullptr) return no_tokenizer();
    auto ids = apply_chat_template(*tokenizer, chat_template(), messages, options);
    if (!ids) return ids.error();
    size_t common = 0;
    while (common < tokens_.size() && common < ids->size() && tokens_[common] == (*ids)[common]) ++common;
    // The last prompt token must be run again to get fresh logits, so keep at least one to feed.
    if (common == ids->size() && common > 0) --common;
    if (common < tokens_.size()) {
      if (context_->truncate(static_cast<int64_t>(common))) {
        tokens_.resize(common);
      } else {
        reset();
        common = 0;
      }
    }
    const std::vector<int32_t> rest(ids->begin() + static_cast<std::ptrdiff_t>(common), ids->end());
    BORA_RETURN_IF_ERROR(feed(rest));
    // A reply is a text of its own: its first piece's leading space is dropped, as mistral-common does.
    return begin(sample, stop, /*reply_starts_text=*/true, static_cast<int64_t>(rest.size()));
  }

  Status begin_generation(const SampleParams& sample, const std::vector<std::string>& stop = {}) {
    generation_.reset();
    return begin(sample, stop, /*reply_starts_text=*/false, 0);
  }

  // Samples one token and feeds it. Ends (done) at end of sequence, max_tokens, a stop string or a
  // full context; the step that ends also returns the text still held back. A failed forward pass
  // ends the generation too (kError); without a begun generation step() is kInvalidArgument.
  Expected<GenerationStep> step() {
    if (!generation_) {
      return make_error(ErrorCode::kInvalidArgument, "step: begin a generation first (begin_completion, begin_chat, begin_generation)");
    }
    Generation& g = *generation_;
    GenerationStep out;
    if (g.done) return finished(g, &out);
    if (g.max_tokens >= 0 && g.n_generated >= g.max_tokens) return end(g, StopReason::kMaxTokens, &out);
    const int32_t next = g.sampler.sample(last_logits_.data(), model_->config().vocab_size, tokens_);
    if (next == tokenizer_->eos_id()) return end(g, StopReason::kEndOfSequence, &out);
    ++g.n_generated;
    Status status = feed({next});
    if (!status) {
      if (status.error().code() != ErrorCode::kContextFull) {
        g.done = true;
        g.stop_reason = StopReason::kError;
        return status.error();
      }
      out.text = g.filter.flush();  // the token that did not fit is not shown
      g.done = true;
      g.stop_reason = StopReason::kContextFull;
      return finished(g, &out);
    }
    out.token = next;
    if (g.filter.push(g.decoder.push(next), &out.text)) {
      g.done = true;
      g.stop_reason = StopReason::kStopString;
      return finished(g, &out);
    }
    if (g.max_tokens >= 0 && g.n_generated >= g.max_tokens) return end(g, StopReason::kMaxTokens, &out);
    return out;
  }

  // Whether a generation was begun and has not ended.
  bool generating() const { return generation_ && !generation_->done; }

  // Saves tokens and KV cache, so a later process can continue this stream without recomputing.
  Status save(const std::string& path) const {
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (!file) return make_error(ErrorCode::kIo, "%s: cannot write session", path.c_str());
    const std::vector<uint8_t> cache = context_->save_state();
    const Header header = make_header(static_cast<uint64_t>(cache.size()));
    bool ok = std::fwrite(&header, sizeof(header), 1, file) == 1;
    ok = ok && (tokens_.empty() || std::fwrite(tokens_.data(), sizeof(int32_t), tokens_.size(), file) == tokens_.size());
    ok = ok && (cache.empty() || std::fwrite(cache.data(), 1, cache.size(), file) == cache.size());
    ok = ok && (tokens_.empty() || last_logits_.empty() || std::fwrite(last_logits_.data(), sizeof(float), last_logits_.size(), file) == last_logits_.size());
    if (std::fclose(file) != 0 || !ok) return make_error(ErrorCode::kIo, "%s: cannot write session", path.c_str());
    return Status();
  }

  // Restores what save() wrote; the file must come from the same model and session settings.
  Status load(const std::string& path) {
    auto mapped = MappedFile::open(path);
    if (!mapped) return mapped.error();
    const uint8_t* data = mapped->data();
    const uint64_t size = mapped->size();
    Header header;
    if (size < sizeof(header)) return make_error(ErrorCode::kFormat, "%s: too short for a bora session", path.c_str());
    std::memcpy(&header, data, sizeof(header));
    const Header expected = make_header(context_->state_bytes());
    if (std::memcmp(header.magic, expected.magic, sizeof(header.magic)) != 0)
      return make_error(ErrorCode::kFormat, "%s: not a bora session file", path.c_str());
    if (std::memcmp(header.fingerprint, expected.fingerprint, sizeof(header.fingerprint)) != 0 ||
        header.cache_bytes != expected.cache_bytes)
      return make_error(ErrorCode::kFormat, "%s: saved with a different model or cache settings", path.c_str());
    if (header.weights != expected.weights)
      return make_error(ErrorCode::kFormat, "%s: saved with other weights (another quantization or fine-tune)",
                        path.c_str());
    const uint64_t vocab = static_cast<uint64_t>(model_->config().vocab_size);
    if (header.n_tokens > (size - sizeof(header)) / sizeof(int32_t))
      return make_error(ErrorCode::kFormat, "%s: token count %llu runs past the end", path.c_str(),
                        (unsigned long long)header.n_tokens);
    // Without a sliding window the cache holds kv_capacity() positions; a stream longer than that can only
    // come from a forged or foreign file.
    if (context_->window() == 0 && header.n_tokens > static_cast<uint64_t>(context_->kv_capacity()))
      return make_error(ErrorCode::kFormat, "%s: holds %llu tokens, more than this context's %lld positions", path.c_str(),
                        (unsigned long long)header.n_tokens, (long long)context_->kv_capacity());
    const uint64_t logits_bytes = header.n_tokens > 0 ? vocab * sizeof(float) : 0;
    if (size != sizeof(header) + header.n_tokens * sizeof(int32_t) + header.cache_bytes + logits_bytes)
      return make_error(ErrorCode::kFormat, "%s: size %llu does not match its header", path.c_str(), (unsigned long long)size);
    const uint8_t* p = data + sizeof(header);
    std::vector<int32_t> tokens(static_cast<size_t>(header.n_tokens));
    if (!tokens.empty()) std::memcpy(tokens.data(), p, tokens.size() * sizeof(int32_t));
    for (int32_t t : tokens)
      if (t < 0 || static_cast<uint64_t>(t) >= vocab) return make_error(ErrorCode::kFormat, "%s: token %d outside the vocabulary", path.c_str(), t);
    p += tokens.size() * sizeof(int32_t);
    BORA_RETURN_IF_ERROR(context_->restore_state(p, header.cache_bytes, static_cast<int64_t>(header.n_tokens)));
    p += header.cache_bytes;
    last_logits_.assign(static_cast<size_t>(logits_bytes / sizeof(float)), 0.0f);
    if (logits_bytes) std::memcpy(last_logits_.data(), p, logits_bytes);
    tokens_ = std::move(tokens);
    generation_.reset();
    return Status();
  }

 private:
  // What carries over from one step to the next.
  struct Generation {
    Generation(const SampleParams& sample, const Tokenizer& tokenizer, bool reply_starts_text,
               const std::vector<std::string>& stop, int64_t n_prompt)
        : sampler(sample), decoder(tokenizer, reply_starts_text), filter(stop), max_tokens(sample.max_tokens),
          n_prompt_tokens(n_prompt) {}
    Sampler sampler;
    StreamingDecoder decoder;
    StopFilter filter;
    int max_tokens;
    int64_t n_prompt_tokens;
    int64_t n_generated = 0;
    bool done = false;
    StopReason stop_reason = StopReason::kEndOfSequence;
  };

  Status begin(const SampleParams& sample, const std::vector<std::string>& stop, bool reply_starts_text,
               int64_t n_prompt) {
    if (tokenizer_ == nullptr) return no_tokenizer();
    if (tokens_.empty()) return make_error(ErrorCode::kInvalidArgument, "generate: feed a prompt first");
    generation_.emplace(sample, *tokenizer_, reply_starts_text, stop, n_prompt);
    return Status();
  }

  // Ends the generation for `reason`: what the decoder and the stop filter hold becomes text, unless
  // a stop string completes in it (then that is the reason).
  GenerationStep end(Generation& g, StopReason reason, GenerationStep* out) {
    std::string ready;
    if (g.filter.push(g.decoder.flush(), &ready)) {
      reason = StopReason::kStopString;
    } else {
      ready += g.filter.flush();
    }
    out->text += ready;
    g.done = true;
    g.stop_reason = reason;
    return finished(g, out);
  }

  static GenerationStep finished(const Generation& g, GenerationStep* out) {
    out->done = true;
    out->stop_reason = g.stop_reason;
    return std::move(*out);
  }

  // Steps to the end, streaming each non-empty piece; a callback that returns false ends it (kCallback).
  Expected<GenerationResult> run_generation(const StreamCallback& on_piece) {
    GenerationResult result;
    result.n_prompt_tokens = generation_->n_prompt_tokens;
    for (;;) {
      auto next = step();
      if (!next) return next.error();
      result.text += next->text;
      const bool refused = !next->text.empty() && on_piece && !on_piece(next->text);
      if (refused && !next->done) {
        generation_->done = true;
        generation_->stop_reason = StopReason::kCallback;
      }
      if (next->done || refused) {
        result.n_generated = generation_->n_generated;
        result.stop_reason = generation_->stop_reason;
        return result;
      }
    }
  }

  struct Header {
    char magic[8];
    int64_t fingerprint[8];  // model shape + cache geometry: a session only fits its own model
    uint64_t weights;        // weights_fingerprint(): the same shapes with other weights do not fit either
    uint64_t n_tokens;
    uint64_t cache_bytes;
  };

  Header make_header(uint64_t cache_bytes) const {
    Header h;
    std::memset(&h, 0, sizeof(h));
    std::memcpy(h.magic, "BORASES2", 8);
    const ModelConfig& c = model_->config();
    const int64_t values[8] = {c.dim, c.n_layers, c.n_kv_heads, c.head_dim, c.vocab_size, context_->kv_capacity(),
                               context_->window(), c.n_experts};
    std::memcpy(h.fingerprint, values, sizeof(values));
    h.weights = weights_fingerprint(model_->files());
    h.n_tokens = tokens_.size();
    h.cache_bytes = cache_bytes;
    return h;
  }

  static Error no_tokenizer() {
    return make_error(ErrorCode::kMissing, "this model's files have no tokenizer (no tokenizer.ggml.* metadata or tokenizer.model)");
  }

  const Model* model_;
  const Tokenizer* tokenizer_;
  std::unique_ptr<ModelContext> context_;
  SessionParams params_;
  std::vector<int32_t> tokens_;
  std::vector<float> last_logits_;
  std::optional<Generation> generation_;
};

}  // namespace bora

#endif  // BORA_TEXT_SESSION_HPP
// ---- end bora/text/session.hpp -----------------------------------------------------------------------

namespace bora {

using SequenceId = uint64_t;

struct SchedulerParams : WorkspaceParams {
  // Prompt tokens a sequence processes per step. A running stream waits at most one such chunk per
  // step; a sequence's chunks have this size whatever else runs, which keeps its results invariant.
  int64_t prefill_chunk = 64;
  // Sequences that hold a KV cache at once (running or kept); more wait in the queue. 0 = n_batch.
  int64_t max_sequences = 0;
};

// What one sequence should do. Called back on the thread that calls step().
struct Request {
  std::string prompt;           // tokenized with BOS (when the tokenizer adds one) unless `tokens` is set
  std::vector<int32_t> tokens;  // the prompt as ids, used as given
  SampleParams sample;          // sampling, seed and max_tokens (0: only prefill, e.g. a prompt to fork)
  std::vector<std::string> stop;
  // Positions the sequence's KV cache holds; 0 = the prompt plus max_tokens (or 4096 when
  // max_tokens < 0), within the model's sliding window.
  int64_t n_ctx = 0;
  int64_t sliding_window = -1;  // as SequenceParams
  // Keep the KV cache when the sequence finishes, so fork() can continue it; release() frees it.
  bool keep = false;
  // The output is a text of its own (a chat reply), so its first piece's leading space is dropped as
  // Session::chat does; false continues the prompt's text (a completion keeps " Paris").
  bool starts_text = false;
  // Each piece of text as it is produced; return false to stop this sequence (kCallback).
  std::function<bool(SequenceId, std::string_view piece)> on_piece;
  // The logits each token is sampled from, before sampling; they may be changed (a grammar mask).
  std::function<void(SequenceId, float* logits, int64_t n_vocab)> on_logits;
  // Each token sampled (EOS too), before its text is published: control tokens such as [TOOL_CALLS]
  // have no text, so this is where they show.
  std::function<void(SequenceId, int32_t token)> on_token;
};

enum class SequenceState { kQueued, kPrefilling, kGenerating, kFinished };

struct SequenceStatus {
  SequenceState state = SequenceState::kQueued;
  StopReason stop_reason = StopReason::kEndOfSequence;  // once finished
  Status error;            // a failure of this sequence (it is then finished with kError)
  int64_t n_prompt_tokens = 0;
  int64_t n_generated = 0;
};

class Scheduler {
 public:
  // `tokenizer` may be null when every request gives token ids (text out then stays empty).
  static Expected<std::unique_ptr<Scheduler>> create(const Model& model, const Tokenizer* tokenizer,
                                                     const SchedulerParams& params) {
    if (params.prefill_chunk < 1 || params.prefill_chunk > params.n_batch || params.max_sequences < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "scheduler: prefill_chunk (%lld) must be in 1..n_batch (%lld), max_sequences (%lld) >= 0",
                        (long long)params.prefill_chunk, (long long)params.n_batch, (long long)params.max_sequences);
    }
    auto workspace = model.create_workspace(params);
    if (!workspace) return workspace.error();
    std::unique_ptr<Scheduler> scheduler(new (std::nothrow) Scheduler(model, tokenizer, params));
    if (!scheduler) return make_error(ErrorCode::kOutOfMemory, "scheduler: out of memory");
    scheduler->workspace_ = std::move(*workspace);
    return scheduler;
  }

  // Queues a sequence and returns at once (any thread). Checks only what is known now; a
  // sequence that fails later (its cache does not fit, its context fills) finishes on its own.
  Expected<SequenceId> submit(Request request) {
    std::vector<int32_t> prompt = std::move(request.tokens);
    if (prompt.empty()) {
      if (tokenizer_ == nullptr) return make_error(ErrorCode::kMissing, "submit: no tokens, and the model has no tokenizer");
      prompt = tokenizer_->encode(request.prompt, tokenizer_->add_bos_by_default());
    }
    if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "submit: the prompt is empty");
    BORA_RETURN_IF_ERROR(check_tokens(prompt));
    std::unique_ptr<Slot> slot(new Slot(std::move(request)));
    slot->prompt = std::move(prompt);
    slot->status.n_prompt_tokens = static_cast<int64_t>(slot->prompt.size());
    std::lock_guard<std::mutex> lock(mutex_);
    const SequenceId id = next_id_++;
    slot->id = id;
    slots_[id] = std::move(slot);
    return id;
  }

  // A new sequence that continues `parent` (finished and kept) with `request`'s prompt (no BOS), its
  // KV cache copied in memory: sixteen NPCs can share one system prompt without recomputing it.
  // An empty prompt samples straight from where the parent stopped.
  Expected<SequenceId> fork(SequenceId parent, Request request) {
    std::vector<int32_t> more = std::move(request.tokens);
    if (more.empty() && !request.prompt.empty()) {
      if (tokenizer_ == nullptr) return make_error(ErrorCode::kMissing, "fork: the model has no tokenizer");
      tokenizer_->encode_append(request.prompt, &more);
    }
    BORA_RETURN_IF_ERROR(check_tokens(more));
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(parent);
    if (found == slots_.end()) return make_error(ErrorCode::kInvalidArgument, "fork: no sequence %llu", (unsigned long long)parent);
    const Slot& from = *found->second;
    if (from.status.state != SequenceState::kFinished || !from.sequence) {
      return make_error(ErrorCode::kInvalidArgument, "fork: sequence %llu is still running or was not kept",
                        (unsigned long long)parent);
    }
    if (from.last_logits.empty() && more.empty()) {
      return make_error(ErrorCode::kInvalidArgument, "fork: sequence %llu has no logits to continue from", (unsigned long long)parent);
    }
    if (!from.sequence->has_room_for(static_cast<int64_t>(more.size()))) {
      return make_error(ErrorCode::kContextFull, "fork: %zu more tokens do not fit sequence %llu's n_ctx %lld", more.size(),
                        (unsigned long long)parent, (long long)from.sequence->kv_capacity());
    }
    auto copy = from.sequence->clone();
    if (!copy) return copy.error();
    std::unique_ptr<Slot> slot(new Slot(std::move(request)));
    slot->sequence = std::move(*copy);
    slot->history = from.history;
    slot->last_logits = from.last_logits;
    slot->prompt = std::move(more);
    slot->status.n_prompt_tokens = static_cast<int64_t>(slot->prompt.size());
    slot->status.state = slot->prompt.empty() ? SequenceState::kGenerating : SequenceState::kPrefilling;
    slot->needs_sample = slot->prompt.empty();
    const SequenceId id = next_id_++;
    slot->id = id;
    slots_[id] = std::move(slot);
    return id;
  }

  // Stops a sequence at the next step (kCancelled); its text so far stays readable.
  void cancel(SequenceId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found != slots_.end()) found->second->cancel_requested = true;
  }

  // Forgets a finished sequence (its text, status and kept cache). False while it runs.
  bool release(SequenceId id) {
    std::unique_ptr<Slot> gone;
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found == slots_.end() || found->second->status.state != SequenceState::kFinished) return false;
    if (found->second->in_step) {  // the step still calls it back: it goes when the step ends
      found->second->release_requested = true;
      return true;
    }
    gone = std::move(found->second);
    slots_.erase(found);
    return true;
  }

  // Where a sequence stands; kInvalidArgument for an unknown (or released) id.
  Expected<SequenceStatus> status(SequenceId id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found == slots_.end()) return make_error(ErrorCode::kInvalidArgument, "no sequence %llu", (unsigned long long)id);
    return found->second->status;
  }

  // The text produced since the last call (polling, instead of or beside on_piece).
  std::string take_text(SequenceId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found == slots_.end()) return std::string();
    std::string text;
    text.swap(found->second->unread);
    return text;
  }

  // True when no sequence is queued or running.
  bool idle() const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& entry : slots_)
      if (entry.second->status.state != SequenceState::kFinished) return false;
    return true;
  }

  // One forward step for every running sequence: one token each for those generating, one chunk
  // each for prompts while the step's n_batch tokens allow. Call it from one thread at a time (a
  // game calls it once per frame). An error here is the whole step's (out of memory, aborted);
  // a sequence's own failures finish that sequence instead.
  Status step() {
    std::lock_guard<std::mutex> stepping(step_mutex_);
    std::vector<Slot*> batch, to_sample;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      plan_step(&batch, &to_sample);
    }
    std::vector<Emitted> emitted;
    for (Slot* slot : to_sample) emitted.push_back(sample_next(slot));
    segments_.clear();
    for (Slot* slot : batch) {
      BatchSegment segment;
      segment.sequence = slot->sequence.get();
      if (slot->status.state == SequenceState::kPrefilling) {
        const int64_t left = static_cast<int64_t>(slot->prompt.size()) - slot->prefilled;
        segment.tokens = slot->prompt.data() + slot->prefilled;
        segment.n_tokens = std::min(params_.prefill_chunk, left);
        if (segment.n_tokens == left) segment.logits = slot->last_logits.data();
      } else {
        segment.tokens = &slot->next_token;
        segment.n_tokens = 1;
        segment.logits = slot->last_logits.data();
      }
      segments_.push_back(segment);
    }
    Status status;
    if (!segments_.empty()) status = model_->forward_batch(*workspace_, segments_.data(), segments_.size());
    if (status) {
      for (size_t i = 0; i < batch.size(); ++i) {
        if (advance(batch[i], segments_[i])) emitted.push_back(sample_next(batch[i]));
      }
    }
    deliver(emitted);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (Slot* slot : batch) slot->in_step = false;
      for (Slot* slot : to_sample) slot->in_step = false;
      for (auto it = slots_.begin(); it != slots_.end();) {
        if (it->second->release_requested && !it->second->in_step) it = slots_.erase(it);
        else ++it;
      }
    }
    return status;
  }

  // Steps until every sequence has finished (or a step fails).
  Status run() {
    while (!idle()) BORA_RETURN_IF_ERROR(step());
    return Status();
  }

  const Model& model() const { return *model_; }
  const SchedulerParams& params() const { return params_; }

 private:
  struct Slot {
    explicit Slot(Request r) : request(std::move(r)), sampler(request.sample), filter(request.stop) {}
    Request request;
    SequenceId id = 0;
    // Owned by the stepping thread once admitted:
    std::unique_ptr<KvSequence> sequence;
    std::vector<int32_t> prompt;   // tokens still to prefill, from `prefilled` on
    int64_t prefilled = 0;
    std::vector<int32_t> history;  // every token consumed (the repetition penalty looks at it)
    std::vector<float> last_logits;
    Sampler sampler;
    StopFilter filter;
    std::unique_ptr<StreamingDecoder> decoder;
    int32_t next_token = 0;
    bool needs_sample = false;  // a forked sequence with no prompt samples from the parent's logits
    // Shared with other threads, under mutex_:
    SequenceStatus status;
    std::string unread;
    bool cancel_requested = false;
    bool in_step = false;  // the current step holds it (release() then waits for the step's end)
    bool release_requested = false;
  };
  // What a step produced for one sequence, published by deliver().
  struct Emitted {
    Slot* slot;
    std::string text;
    int64_t generated = 0;  // tokens sampled this step (0 or 1)
    bool finished = false;
    StopReason reason = StopReason::kEndOfSequence;
  };

  Scheduler(const Model& model, const Tokenizer* tokenizer, const SchedulerParams& params)
      : model_(&model), tokenizer_(tokenizer), params_(params) {
    if (params_.max_sequences == 0) params_.max_sequences = params_.n_batch;
  }

  Status check_tokens(const std::vector<int32_t>& ids) const {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= model_->config().vocab_size) {
        return make_error(ErrorCode::kInvalidArgument, "token %d at index %zu is outside the vocabulary (%lld)", ids[i],
                          i, (long long)model_->config().vocab_size);
      }
    }
    return Status();
  }

  // Under mutex_: applies cancellations, admits queued sequences, and picks this step's batch —
  // every generating sequence first (a running stream is never starved), then prompt chunks.
  void plan_step(std::vector<Slot*>* batch, std::vector<Slot*>* to_sample) {
    int64_t holding = 0;
    for (auto& entry : slots_) {
      Slot& slot = *entry.second;
      if (slot.cancel_requested && slot.status.state != SequenceState::kFinished) {
        finish(&slot, StopReason::kCancelled);
      }
      if (slot.sequence) ++holding;
    }
    for (auto& entry : slots_) {
      Slot& slot = *entry.second;
      if (slot.status.state != SequenceState::kQueued || holding >= params_.max_sequences) continue;
      admit(&slot);
      if (slot.status.state != SequenceState::kFinished) ++holding;
    }
    int64_t budget = workspace_->n_batch();
    // Rotate where decoding starts, so that with more streams than n_batch each waits its turn.
    std::vector<Slot*> generating, prefilling;
    for (auto& entry : slots_) {
      Slot& slot = *entry.second;
      if (slot.status.state == SequenceState::kGenerating && slot.needs_sample) {
        slot.in_step = true;
        to_sample->push_back(&slot);
      }
      if (slot.status.state == SequenceState::kGenerating && !slot.needs_sample) generating.push_back(&slot);
      if (slot.status.state == SequenceState::kPrefilling) prefilling.push_back(&slot);
    }
    if (!generating.empty()) {
      const size_t start = static_cast<size_t>(step_count_ % generating.size());
      std::rotate(generating.begin(), generating.begin() + static_cast<std::ptrdiff_t>(start), generating.end());
    }
    ++step_count_;
    for (Slot* slot : generating) {
      if (budget < 1) break;
      if (!slot->sequence->has_room_for(1)) {
        finish(slot, StopReason::kContextFull);
        continue;
      }
      slot->in_step = true;
      batch->push_back(slot);
      budget -= 1;
    }
    for (Slot* slot : prefilling) {
      const int64_t chunk = std::min(params_.prefill_chunk, static_cast<int64_t>(slot->prompt.size()) - slot->prefilled);
      if (chunk > budget) break;  // whole chunks only: their size must not depend on the batch
      slot->in_step = true;
      batch->push_back(slot);
      budget -= chunk;
    }
  }

  // Under mutex_: gives a queued sequence its KV cache, or finishes it with the reason it cannot run.
  void admit(Slot* slot) {
    const Request& r = slot->request;
    int64_t n_ctx = r.n_ctx;
    if (n_ctx == 0) {
      n_ctx = static_cast<int64_t>(slot->prompt.size()) + (r.sample.max_tokens >= 0 ? r.sample.max_tokens : 4096);
    }
    SequenceParams sp;
    sp.n_ctx = n_ctx;
    sp.sliding_window = r.sliding_window;
    auto sequence = model_->create_sequence(sp);
    if (!sequence) {
      slot->status.error = sequence.error();
      finish(slot, StopReason::kError);
      return;
    }
    if (!(*sequence)->has_room_for(static_cast<int64_t>(slot->prompt.size()))) {
      slot->status.error = make_error(ErrorCode::kContextFull, "the prompt of %zu tokens does not fit n_ctx %lld",
                                      slot->prompt.size(), (long long)(*sequence)->kv_capacity());
      finish(slot, StopReason::kError);
      return;
    }
    slot->sequence = std::move(*sequence);
    slot->last_logits.assign(static_cast<size_t>(model_->config().vocab_size), 0.0f);
    slot->status.state = SequenceState::kPrefilling;
  }

  // Under mutex_.
  void finish(Slot* slot, StopReason reason) {
    slot->status.state = SequenceState::kFinished;
    slot->status.stop_reason = reason;
    if (!slot->request.keep || reason == StopReason::kError) slot->sequence.reset();
  }

  // After the forward pass (stepping thread only): consumes what the segment computed; true when
  // the sequence now has logits to sample from.
  bool advance(Slot* slot, const BatchSegment& segment) {
    slot->history.insert(slot->history.end(), segment.tokens, segment.tokens + segment.n_tokens);
    if (slot->status.state != SequenceState::kPrefilling) return true;
    slot->prefilled += segment.n_tokens;
    if (slot->prefilled < static_cast<int64_t>(slot->prompt.size())) return false;
    slot->prompt.clear();
    slot->prefilled = 0;
    return true;
  }

  // Picks the next token from last_logits and decodes its text, or ends the sequence (stepping
  // thread only; deliver() publishes the outcome).
  Emitted sample_next(Slot* slot) {
    Emitted out;
    out.slot = slot;
    const SampleParams& sample = slot->request.sample;
    if (sample.max_tokens >= 0 && slot->status.n_generated >= sample.max_tokens) {
      out.text = flush_text(slot);
      out.finished = true;
      out.reason = StopReason::kMaxTokens;
      return out;
    }
    if (!slot->decoder && tokenizer_ != nullptr) {
      slot->decoder.reset(new StreamingDecoder(*tokenizer_, slot->request.starts_text));
    }
    const int64_t vocab = model_->config().vocab_size;
    if (slot->request.on_logits) slot->request.on_logits(slot->id, slot->last_logits.data(), vocab);
    const int32_t next = slot->sampler.sample(slot->last_logits.data(), vocab, slot->history);
    slot->needs_sample = false;
    if (slot->request.on_token) slot->request.on_token(slot->id, next);
    if (tokenizer_ != nullptr && next == tokenizer_->eos_id()) {
      out.text = flush_text(slot);
      out.finished = true;
      out.reason = StopReason::kEndOfSequence;
      return out;
    }
    slot->next_token = next;
    out.generated = 1;
    if (slot->decoder && slot->filter.push(slot->decoder->push(next), &out.text)) {
      out.finished = true;
      out.reason = StopReason::kStopString;
      return out;
    }
    // The last token needs no forward pass unless a kept cache must hold it (for fork()).
    if (!slot->request.keep && sample.max_tokens >= 0 && slot->status.n_generated + 1 >= sample.max_tokens) {
      out.text += flush_text(slot);
      out.finished = true;
      out.reason = StopReason::kMaxTokens;
    }
    return out;
  }

  std::string flush_text(Slot* slot) {
    std::string ready;
    if (!slot->decoder) return ready;
    if (slot->filter.push(slot->decoder->flush(), &ready)) return ready;
    return ready + slot->filter.flush();
  }

  // Publishes this step's text and state changes, then calls the callbacks outside the lock (they
  // may call the scheduler).
  void deliver(std::vector<Emitted>& emitted) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (Emitted& e : emitted) {
        Slot* slot = e.slot;
        slot->status.n_generated += e.generated;
        if (slot->status.state == SequenceState::kPrefilling) slot->status.state = SequenceState::kGenerating;
        slot->unread += e.text;
        if (e.finished) finish(slot, e.reason);
      }
    }
    for (Emitted& e : emitted) {
      Slot* slot = e.slot;
      if (e.text.empty() || !slot->request.on_piece) continue;
      if (!slot->request.on_piece(slot->id, e.text) && !e.finished) {
        std::lock_guard<std::mutex> lock(mutex_);
        finish(slot, StopReason::kCallback);
      }
    }
  }

  const Model* model_;
  const Tokenizer* tokenizer_;
  SchedulerParams params_;
  std::unique_ptr<Workspace> workspace_;
  mutable std::mutex mutex_;
  std::mutex step_mutex_;
  std::map<SequenceId, std::unique_ptr<Slot>> slots_;
  SequenceId next_id_ = 1;
  uint64_t step_count_ = 0;
  std::vector<BatchSegment> segments_;
};

}  // namespace bora

#endif  // BORA_TEXT_SCHEDULER_HPP
// ---- end bora/text/scheduler.hpp ---------------------------------------------------------------------
// ---- begin bora/text/model_tokenizer.hpp -------------------------------------------------------------
// Why this file exists: a model's files usually carry its tokenizer (GGUF tokenizer.ggml.* metadata, or
// a tokenizer.model beside the safetensors in a model folder); this is the one place that finds it, so
// loading a model and tokenizing for it can never pick different vocabularies.
#ifndef BORA_TEXT_MODEL_TOKENIZER_HPP
#define BORA_TEXT_MODEL_TOKENIZER_HPP

#include <cstdio>
#include <memory>
#include <string>
#include <utility>


namespace bora {

// The tokenizer of a model's files; null (not an error) when they carry none.
inline Expected<std::shared_ptr<const Tokenizer>> load_model_tokenizer(const ModelFiles& files) {
  if (const GgufFile* gguf = files.gguf()) {
    if (gguf->find("tokenizer.ggml.tokens") == nullptr) return std::shared_ptr<const Tokenizer>();
    auto tokenizer = Tokenizer::from_gguf(*gguf);
    if (!tokenizer) return tokenizer.error();
    return std::shared_ptr<const Tokenizer>(std::make_shared<Tokenizer>(std::move(*tokenizer)));
  }
  // Folders: Mistral ships tokenizer.model.v3 / tokenizer.model.v1 / tokenizer.model.
  for (const char* name : {"tokenizer.model", "tokenizer.model.v3", "tokenizer.model.v2", "tokenizer.model.v1"}) {
    const std::string path = files.path() + "/" + name;
    std::FILE* probe = std::fopen(path.c_str(), "rb");
    if (probe == nullptr) continue;
    std::fclose(probe);
    auto tokenizer = Tokenizer::from_file(path);
    if (!tokenizer) return tokenizer.error();
    return std::shared_ptr<const Tokenizer>(std::make_shared<Tokenizer>(std::move(*tokenizer)));
  }
  return std::shared_ptr<const Tokenizer>();
}

}  // namespace bora

#endif  // BORA_TEXT_MODEL_TOKENIZER_HPP
// ---- end bora/text/model_tokenizer.hpp ---------------------------------------------------------------

namespace bora {

// A model together with its tokenizer. It is a Model itself (every call goes to the weights), so code
// that runs the forward pass takes it as it takes any composition; sessions come from here.
class LanguageModel final : public Model {
 public:
  // `tokenizer` may be null: the forward pass works, text in and out does not.
  LanguageModel(std::unique_ptr<Model> weights, std::shared_ptr<const Tokenizer> tokenizer)
      : weights_(std::move(weights)), tokenizer_(std::move(tokenizer)) {}

  // The tokenizer that came with the model (GGUF metadata, or tokenizer.model beside the
  // safetensors); null when the files have none.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The composition underneath (bora::Mistral7B, ...).
  const Model& weights() const { return *weights_; }

  // A new stream of text over this model. Sessions share the model read-only, so several may run
  // on different threads at once; the model must outlive them.
  Expected<Session> session(const SessionParams& params) const {
    auto context = create_context(params);
    if (!context) return context.error();
    return Session(*this, tokenizer_.get(), std::move(*context), params);
  }

  // Many sequences at once over this model, in one forward pass per step (text/scheduler.hpp).
  Expected<std::unique_ptr<Scheduler>> scheduler(const SchedulerParams& params) const {
    return Scheduler::create(*this, tokenizer_.get(), params);
  }

  const ModelConfig& config() const override { return weights_->config(); }
  const ModelFiles& files() const override { return weights_->files(); }
  const char* preset_name() const override { return weights_->preset_name(); }
  uint64_t weight_bytes_per_token() const override { return weights_->weight_bytes_per_token(); }
  uint64_t weight_bytes_per_step(double experts) const override { return weights_->weight_bytes_per_step(experts); }
  Expected<std::unique_ptr<KvSequence>> create_sequence(const SequenceParams& params) const override {
    return weights_->create_sequence(params);
  }
  Expected<std::unique_ptr<Workspace>> create_workspace(const WorkspaceParams& params) const override {
    return weights_->create_workspace(params);
  }
  Status forward_batch(Workspace& workspace, const BatchSegment* segments, size_t count) const override {
    return weights_->forward_batch(workspace, segments, count);
  }

 private:
  std::unique_ptr<Model> weights_;
  std::shared_ptr<const Tokenizer> tokenizer_;
};

namespace detail {
template <class LoadWeights>
Expected<std::unique_ptr<LanguageModel>> bind_tokenizer(ModelFiles files, LoadWeights load_weights) {
  auto tokenizer = load_model_tokenizer(files);
  if (!tokenizer) return tokenizer.error();
  // Every id the tokenizer can produce must have an embedding row, or encoding some text would read
  // past the table.
  const int64_t rows = files.config().vocab_size;
  if (*tokenizer && static_cast<int64_t>((*tokenizer)->vocabulary().size()) > rows) {
    return make_error(ErrorCode::kShape, "%s: the tokenizer has %zu pieces but the model has only %lld token embeddings",
                      files.path().c_str(), (*tokenizer)->vocabulary().size(), (long long)rows);
  }
  auto weights = load_weights(std::move(files));
  if (!weights) return weights.error();
  return std::make_unique<LanguageModel>(std::unique_ptr<Model>(std::move(*weights)), std::move(*tokenizer));
}
}  // namespace detail

// Opens `files` as the composition `Preset`, with its tokenizer.
template <class Preset>
Expected<std::unique_ptr<LanguageModel>> load(ModelFiles files, const LoadParams& params = {}) {
  return detail::bind_tokenizer(std::move(files),
                                [&](ModelFiles weights) { return load_model<Preset>(std::move(weights), params); });
}

// Opens `path` (a .gguf file, a model folder, or ollama:NAME[:TAG]) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<LanguageModel>> load(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load<Preset>(std::move(*files), params);
}

// Opens any supported model with its tokenizer, choosing the composition from the file (see
// load_any_model).
inline Expected<std::unique_ptr<LanguageModel>> load_any(ModelFiles files, const LoadParams& params = {}) {
  return detail::bind_tokenizer(std::move(files),
                                [&](ModelFiles weights) { return load_any_model(std::move(weights), params); });
}

inline Expected<std::unique_ptr<LanguageModel>> load_any(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load_any(std::move(*files), params);
}

}  // namespace bora

#endif  // BORA_TEXT_LANGUAGE_MODEL_HPP
// ---- end bora/text/language_model.hpp ----------------------------------------------------------------
// ---- begin bora/text/tool_call_constraint.hpp --------------------------------------------------------
// Why this file exists: with tool_choice "any"/"required" or a named function, an app must get calls
// it can run, not text that merely looks like them. This turns the tools' parameter schemas into one
// grammar, `[{"name": "<a tool>", "arguments": <that tool's parameters>}, ...]`, and a constraint that
// forces the model's [TOOL_CALLS] control token first (when its vocabulary has one), so the output
// always parses with parse_tool_calls() and every call's arguments validate against its own schema.
// Models without tool tokens (v1) get the JSON array alone: structure through the grammar only.
#ifndef BORA_TEXT_TOOL_CALL_CONSTRAINT_HPP
#define BORA_TEXT_TOOL_CALL_CONSTRAINT_HPP

#include <simdjson.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>


namespace bora {

struct ToolCallGrammarOptions {
  std::string only_function;  // a named tool_choice: calls of this function only; "" = any of the tools
  int max_calls = 8;          // calls in one reply (OpenAI's parallel_tool_calls: false is 1)
  JsonGrammarOptions json;    // whitespace and number bounds inside the arguments
};

// A function name as OpenAI accepts it (and as the grammar can spell without escapes).
inline bool is_valid_function_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// The grammar of a reply's calls (the text after [TOOL_CALLS]): an optional space, then a JSON array
// of 1..max_calls objects {"name", "arguments"} in that order, as Mistral's models write them.
// `tools` is OpenAI's list [{"type": "function", "function": {"name", "description", "parameters"}}];
// errors name the tool and the schema keyword.
inline Expected<Grammar> tool_calls_grammar(std::string_view tools, const ToolCallGrammarOptions& options = {}) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array list;
  const simdjson::padded_string padded(tools);
  if (parser.parse(padded).get(root) || root.get_array().get(list))
    return make_error(ErrorCode::kInvalidArgument, "tools: expected a JSON array of {\"type\": \"function\", \"function\": {...}}");
  if (options.max_calls < 1 || options.max_calls > 1000)
    return make_error(ErrorCode::kInvalidArgument, "tool calls: max_calls %d is outside 1..1000", options.max_calls);
  json_schema_detail::Compiler compiler(options.json);
  GrammarBuilder& b = compiler.builder();
  using Sequence = GrammarBuilder::Sequence;
  auto byte = [&](char c) { return b.byte_range(static_cast<uint8_t>(c), static_cast<uint8_t>(c)); };
  const GrammarSymbol ws = compiler.whitespace();
  std::vector<Sequence> calls;
  bool found_only = options.only_function.empty();
  size_t index = 0;
  for (simdjson::dom::element tool : list) {
    const std::string where = "tools[" + std::to_string(index++) + "]";
    simdjson::dom::element function;
    std::string_view name;
    if (tool["function"].get(function) || function["name"].get_string().get(name))
      return make_error(ErrorCode::kInvalidArgument, "%s: expected {\"type\": \"function\", \"function\": {\"name\": ...}}",
                        where.c_str());
    if (!is_valid_function_name(name))
      return make_error(ErrorCode::kInvalidArgument, "%s: function name '%.64s' must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
                        where.c_str(), std::string(name).c_str());
    if (!options.only_function.empty() && name != options.only_function) continue;
    found_only = true;
    simdjson::dom::element parameters;
    GrammarSymbol arguments;
    simdjson::dom::object parameter_object;
    const bool absent = function["parameters"].get(parameters) != simdjson::SUCCESS || parameters.is_null() ||
                        (parameters.get_object().get(parameter_object) == simdjson::SUCCESS && parameter_object.size() == 0);
    if (absent) {
      arguments = compiler.any_object();
    } else {
      auto compiled = compiler.compile_embedded(parameters, where);
      if (!compiled)
        return make_error(compiled.error().code(), "%s (%s) parameters: %s", where.c_str(), std::string(name).c_str(),
                          compiled.error().message());
      arguments = *compiled;
    }
    Sequence call{byte('{'), ws};
    b.append_literal(&call, "\"name\"");
    call.insert(call.end(), {ws, byte(':'), ws});
    b.append_literal(&call, "\"" + std::string(name) + "\"");
    call.insert(call.end(), {ws, byte(','), ws});
    b.append_literal(&call, "\"arguments\"");
    call.insert(call.end(), {ws, byte(':'), ws, arguments, ws, byte('}')});
    calls.push_back(std::move(call));
  }
  if (!found_only)
    return make_error(ErrorCode::kInvalidArgument, "tool choice names function '%s', which is not among the tools",
                      options.only_function.c_str());
  if (calls.empty()) return make_error(ErrorCode::kInvalidArgument, "tools: the list is empty");
  const GrammarSymbol call = b.choice("call", std::move(calls));
  auto more = b.repeat(Sequence{ws, byte(','), ws, call}, 0, options.max_calls - 1);
  if (!more) return more.error();
  const GrammarSymbol space = b.choice("space", {Sequence{byte(' ')}, Sequence{}});
  const GrammarSymbol array = b.choice("calls", {Sequence{space, byte('['), ws, call, *more, ws, byte(']')}});
  return compiler.finish(array);
}

// The [TOOL_CALLS] control token's id, or -1 when the vocabulary has none (v1).
inline int32_t tool_calls_token(const Tokenizer& tokenizer) {
  const int32_t id = tokenizer.token_to_id("[TOOL_CALLS]");
  return id >= 0 && tokenizer.is_control(id) ? id : -1;
}

// The constraint for SampleParams::constraint: [TOOL_CALLS] (when the vocabulary has it), then the
// calls of tool_calls_grammar(), then EOS. The reply's text is the JSON list for parse_tool_calls().
// `vocabulary`: the tokenizer's shared VocabularyTrie, or null to build one.
inline Expected<std::shared_ptr<const GrammarConstraint>> tool_calls_constraint(
    std::string_view tools, const Tokenizer& tokenizer, const ToolCallGrammarOptions& options = {},
    std::shared_ptr<const VocabularyTrie> vocabulary = nullptr) {
  auto grammar = tool_calls_grammar(tools, options);
  if (!grammar) return grammar.error();
  GrammarConstraintOptions constraint_options;
  constraint_options.vocabulary = std::move(vocabulary);
  const int32_t leading = tool_calls_token(tokenizer);
  if (leading >= 0) constraint_options.leading_tokens.push_back(leading);
  return GrammarConstraint::create(std::move(*grammar), tokenizer, constraint_options);
}

}  // namespace bora

#endif  // BORA_TEXT_TOOL_CALL_CONSTRAINT_HPP
// ---- end bora/text/tool_call_constraint.hpp ----------------------------------------------------------

#endif  // BORA_BORA_HPP

// Outside the guard on purpose: the implementation may be requested after a plain include.
#if defined(BORA_IMPLEMENTATION) && !defined(BORA_IMPLEMENTATION_INCLUDED)
#define BORA_IMPLEMENTATION_INCLUDED
// ---- begin bora/ops/implementation.hpp ---------------------------------------------------------------
// Why this file exists: the one translation unit that defines BORA_IMPLEMENTATION includes this, and
// only here are the kernels (kernels-inl.h and the -inl.h files it gathers) compiled for every SIMD
// target (foreach_target.h) and the plain functions declared in ops.hpp defined, each dispatching to
// the best target at run time.
// With BORA_STATIC_DISPATCH only the target of the compiler flags (-march) is built: smaller
// binaries, no run-time detection.
#ifndef BORA_OPS_IMPLEMENTATION_HPP
#define BORA_OPS_IMPLEMENTATION_HPP

// Must precede the first Highway header of the translation unit.
#if defined(BORA_STATIC_DISPATCH) && !defined(HWY_COMPILE_ONLY_STATIC)
#define HWY_COMPILE_ONLY_STATIC 1
#endif
// Also build the AVX-512 target with VNNI (Ice Lake, Zen 4/5), which the int8 fast path uses;
// Highway 1.0.3 leaves it out unless asked.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>

// ---- begin bora/ops/scratch_sizes.hpp ----------------------------------------------------------------
// Why this file exists: implementation.hpp allocates the per-thread buffers that the SIMD kernels
// (compiled once per target from the -inl.h files) work in, and both must agree on their sizes.
#ifndef BORA_OPS_SCRATCH_SIZES_HPP
#define BORA_OPS_SCRATCH_SIZES_HPP

#include <cstdint>

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
// Tokens the row-tile kernels sweep a matrix with at once: each 16-row tile is read from memory once
// per this many tokens of a prompt.
constexpr int64_t kTiledTokens = 64;
// How many of a prompt's tokens sweep the tiles of a matrix with rows of n values: as many as keep
// their int8 activations (about n bytes each) within 256 KiB, so they stay in L2 beside the tile for
// every pass over it, between 16 and kTiledTokens. With 64 tokens the 14,336-value rows of w2 held
// 0.9 MiB of activations and ran slower than with 16 (one core of a Zen 5, a 14336 x 4096 Q4_0 matrix:
// 200-217 against 228-232 G multiply-accumulates/s); the 4,096-value rows keep 64 (fewer reads of each
// tile from memory: with 16, 7B Q4_K_M prompts ran 6% slower).
// The row-tile kernels' scratch for n_tokens tokens of n values with `levels` int8 levels, laid out
// for the VNNI tile kernels: per 32 values and token, the int8 values, the activation scale and at
// most two sums (X512TokenBlocks in row_tiles-inl.h).
inline int64_t tiled_scratch_bytes(int64_t n, int64_t n_tokens, int levels) {
  return n_tokens * (n / 32) * (32 * levels + 4 * 3);
}
inline int64_t tiled_prompt_tokens(int64_t n) {
  const int64_t fit = (int64_t{256} << 10) / (n > 0 ? n : 1);
  return fit >= kTiledTokens ? kTiledTokens : fit < 16 ? 16 : fit - fit % 8;
}

}  // namespace kernels
}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_SCRATCH_SIZES_HPP
// ---- end bora/ops/scratch_sizes.hpp ------------------------------------------------------------------

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
HWY_EXPORT(AttentionBlockKernel);
HWY_EXPORT(MatvecKernel);
HWY_EXPORT(MatmulKernel);
HWY_EXPORT(RowDotKernel);
HWY_EXPORT(DequantizeRowKernel);
HWY_EXPORT(QuantizeRowQ8Kernel);
HWY_EXPORT(QuantizeResidualQ8Kernel);
HWY_EXPORT(MatvecQ8Kernel);
HWY_EXPORT(MatvecQ8TwoLevelKernel);
HWY_EXPORT(MatmulQ8Kernel);
HWY_EXPORT(MatvecQ8TokensKernel);
HWY_EXPORT(Int8DotPeakKernel);
HWY_EXPORT(PrefersRowTilesKernel);
HWY_EXPORT(MatvecQ8TiledKernel);
HWY_EXPORT(TiledKernelLaysOutTokensKernel);

namespace detail {

// A per-thread buffer of at least `count` T: grown to the largest size asked for and never freed, so
// the token loop does not allocate, and private to each thread so callers can split rows. One buffer
// per Role; null if memory runs out (callers then take a path that needs none).
template <class Role, class T>
T* thread_scratch(size_t count) {
  struct Buffer {
    hwy::AlignedFreeUniquePtr<T[]> data;
    size_t capacity = 0;
  };
  thread_local Buffer buffer;
  if (buffer.capacity < count) {
    buffer.data = hwy::AllocateAligned<T>(count);
    buffer.capacity = buffer.data ? count : 0;
  }
  return buffer.data.get();
}
struct DequantizedRows {};         // matmul_f32: kernels::kMatmulTileRows weight rows as f32
struct DequantizedActivations {};  // the int8 fast path meeting float weights: activations as f32
struct PackedActivations {};       // int8 activations repacked for the kernels (prefill, Q4_0 decode, row tiles)
struct UntiledRows {};             // 16 rows of a row-tiled matrix in the ordinary layout

// Runs compute(tile, tile_row, first, last) for each 16-row tile of the row-tiled w that meets
// [row_begin, row_end): `tile` is an ordinary view of those 16 rows (a per-thread copy), of which rows
// [first, last) are wanted. Without memory for the copy, each wanted row is computed block by block,
// store(t, r, sum of block_dot(block, t, b)) (summed in another order: only when memory runs out), where
// block b holds values [b * values, (b + 1) * values), values = quant::tile_format(w.type).values.
template <class Compute, class BlockDot, class Store>
void for_each_untiled_tile(const TensorView& w, int64_t row_begin, int64_t row_end, int64_t n_tokens,
                           const Compute& compute, const BlockDot& block_dot, const Store& store) {
  const int64_t n = w.row_length();
  TensorView tile = w;
  tile.row_tiles = false;
  tile.n_dims = 2;
  tile.ne[1] = quant::kTileRows;
  tile.ne[2] = tile.ne[3] = 1;
  tile.bytes = quant::kTileRows * w.row_bytes();
  uint8_t* rows = thread_scratch<UntiledRows, uint8_t>(static_cast<size_t>(tile.bytes));
  for (int64_t tile_row = row_begin - row_begin % quant::kTileRows; tile_row < row_end; tile_row += quant::kTileRows) {
    const int64_t first = row_begin > tile_row ? row_begin - tile_row : 0;
    const int64_t last = row_end - tile_row < quant::kTileRows ? row_end - tile_row : quant::kTileRows;
    if (rows != nullptr) {
      quant::untile_rows(w.type, w.data, n, tile_row, quant::kTileRows, rows);
      tile.data = rows;
      compute(tile, tile_row, first, last);
      continue;
    }
    uint8_t block[256];  // the largest tiled block
    const int64_t blocks = n / quant::tile_format(w.type).values;
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = tile_row + first; r < tile_row + last; ++r) {
        float sum = 0.0f;
        for (int64_t b = 0; b < blocks; ++b) {
          quant::untile_block(w.type, w.data, blocks, r, b, block);
          sum += block_dot(block, t, b);
        }
        store(t, r, sum);
      }
    }
  }
}

}  // namespace detail

void matvec_f32(const TensorView& w, const float* x, float* y, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin) return;
  if (w.row_tiles) {
    detail::for_each_untiled_tile(
        w, row_begin, row_end, 1,
        [&](const TensorView& tile, int64_t tile_row, int64_t first, int64_t last) {
          matvec_f32(tile, x, y + tile_row, first, last);
        },
        [&](const uint8_t* block, int64_t, int64_t b) {
          const int64_t values = quant::tile_format(w.type).values;
          return HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, block, x + values * b, values);
        },
        [&](int64_t, int64_t r, float sum) { y[r] = sum; });
    return;
  }
  HWY_DYNAMIC_DISPATCH(MatvecKernel)(w.type, w.data, w.row_bytes(), w.row_length(), x, y, row_begin,
                                     row_end);
}

void matmul_f32(const TensorView& w, const float* x, int64_t n_tokens, float* y, int64_t y_stride,
                int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  if (w.row_tiles) {
    detail::for_each_untiled_tile(
        w, row_begin, row_end, n_tokens,
        [&](const TensorView& tile, int64_t tile_row, int64_t first, int64_t last) {
          matmul_f32(tile, x, n_tokens, y + tile_row, y_stride, first, last);
        },
        [&](const uint8_t* block, int64_t t, int64_t b) {
          const int64_t values = quant::tile_format(w.type).values;
          return HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, block, x + t * n + values * b, values);
        },
        [&](int64_t t, int64_t r, float sum) { y[t * y_stride + r] = sum; });
    return;
  }
  const uint64_t row_bytes = w.row_bytes();
  float* scratch =
      detail::thread_scratch<detail::DequantizedRows, float>(static_cast<size_t>(kernels::kMatmulTileRows * n));
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

void attention_block(const AttentionRows& rows, const KvRows& keys, const KvRows& values, int64_t n_keys,
                     float* widen_scratch) {
  HWY_DYNAMIC_DISPATCH(AttentionBlockKernel)(rows, keys, values, n_keys, widen_scratch);
}

const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetNameKernel)(); }

int64_t simd_compiled_targets() { return HWY_TARGETS; }

double int8_dot_peak(double seconds) {
  using Clock = std::chrono::steady_clock;
  constexpr int64_t kRounds = 4096;  // a fraction of a millisecond per call on any target
  auto elapsed_since = [](Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); };
  uint32_t checksum = 0, part = 0;
  // The warm-up lets the wide units power up and the clock settle where they keep it.
  const Clock::time_point warm_up = Clock::now();
  do {
    HWY_DYNAMIC_DISPATCH(Int8DotPeakKernel)(kRounds, 1, &part);
    checksum += part;
  } while (elapsed_since(warm_up) < seconds / 4);
  int64_t macs = 0;
  double elapsed = 0;
  const Clock::time_point start = Clock::now();
  do {
    macs += HWY_DYNAMIC_DISPATCH(Int8DotPeakKernel)(kRounds, static_cast<int32_t>(macs & 0xFF), &part);
    checksum += part;
    elapsed = elapsed_since(start);
  } while (elapsed < seconds);
  volatile uint32_t keep = checksum;  // the sums are used, so no call can be dropped
  (void)keep;
  return static_cast<double>(macs) / elapsed;
}

int64_t q8_row_bytes(int64_t n) { return quant::q8_activation_row_bytes(n); }

void quantize_row_q8(const float* x, int64_t n, uint8_t* xq) { HWY_DYNAMIC_DISPATCH(QuantizeRowQ8Kernel)(x, n, xq); }

void quantize_residual_q8(const float* x, const uint8_t* xq_hi, int64_t n, uint8_t* xq_lo) {
  HWY_DYNAMIC_DISPATCH(QuantizeResidualQ8Kernel)(x, xq_hi, n, xq_lo);
}

void matvec_q8_float_weights_unbuffered(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                                        int64_t row_begin, int64_t row_end) {
  constexpr int64_t kChunk = 256;  // a multiple of the activations' 32-value blocks
  float x[kChunk];
  const int64_t n = w.row_length();
  const uint64_t value_bytes = weight_type_info(w.type).block_bytes;  // float types: one value per block
  // The layout keeps all int8 values first and the scales after them, so chunks index the whole row.
  const quant::Q8ActivationRow hi = quant::q8_activation_view(xq_hi, n);
  for (int64_t r = row_begin; r < row_end; ++r) y[r] = 0.0f;
  for (int64_t c = 0; c < n; c += kChunk) {
    const int64_t count = std::min(kChunk, n - c);
    for (int64_t i = 0; i < count; ++i) x[i] = hi.d[(c + i) / 32] * static_cast<float>(hi.q[c + i]);
    if (xq_lo != nullptr) {
      const quant::Q8ActivationRow lo = quant::q8_activation_view(xq_lo, n);
      for (int64_t i = 0; i < count; ++i) x[i] += lo.d[(c + i) / 32] * static_cast<float>(lo.q[c + i]);
    }
    for (int64_t r = row_begin; r < row_end; ++r) {
      const uint8_t* row = w.data + static_cast<uint64_t>(r) * w.row_bytes() + static_cast<uint64_t>(c) * value_bytes;
      y[r] += HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, row, x, count);
    }
  }
}

bool prefers_row_tiles(WeightType type) { return HWY_DYNAMIC_DISPATCH(PrefersRowTilesKernel)(type); }

namespace detail {

// Products of a row-tiled matrix with n_tokens int8 tokens (two levels where xq_lo is not null): the
// tile kernel where the target has one (and memory for its scratch), else each tile untiled and handed
// to matvec_q8_tokens.
inline void tiled_q8_products(const TensorView& w, const uint8_t* const* xq_hi, const uint8_t* const* xq_lo,
                              int64_t n_tokens, float* const* y, int64_t row_begin, int64_t row_end) {
  const int64_t n = w.row_length();
  if (prefers_row_tiles(w.type)) {
    const bool lays_out = HWY_DYNAMIC_DISPATCH(TiledKernelLaysOutTokensKernel)();
    const int64_t laid_out = std::min(n_tokens, kernels::kTiledTokens);
    uint8_t* scratch = !lays_out ? nullptr : thread_scratch<PackedActivations, uint8_t>(
        static_cast<size_t>(kernels::tiled_scratch_bytes(n, laid_out, xq_lo != nullptr ? 2 : 1)));
    if (scratch != nullptr || !lays_out) {
      HWY_DYNAMIC_DISPATCH(MatvecQ8TiledKernel)(w.type, w.data, n, xq_hi, xq_lo, n_tokens, y, row_begin, row_end,
                                                scratch);
      return;
    }
  }
  constexpr int64_t kChunk = 16;
  float* shifted[kChunk];
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kChunk) {
    const int64_t count = std::min(kChunk, n_tokens - t0);
    for_each_untiled_tile(
        w, row_begin, row_end, count,
        [&](const TensorView& tile, int64_t tile_row, int64_t first, int64_t last) {
          for (int64_t t = 0; t < count; ++t) shifted[t] = y[t0 + t] + tile_row;
          matvec_q8_tokens(tile, xq_hi + t0, xq_lo == nullptr ? nullptr : xq_lo + t0, count, shifted, first, last);
        },
        [&](const uint8_t* block, int64_t t, int64_t b) {
          float x[256];  // the largest tiled block's values
          const int64_t values = quant::tile_format(w.type).values;
          const quant::Q8ActivationRow hi = quant::q8_activation_view(xq_hi[t0 + t], n);
          for (int64_t i = values * b; i < values * (b + 1); ++i) x[i - values * b] = hi.d[i / 32] * static_cast<float>(hi.q[i]);
          if (xq_lo != nullptr) {
            const quant::Q8ActivationRow lo = quant::q8_activation_view(xq_lo[t0 + t], n);
            for (int64_t i = values * b; i < values * (b + 1); ++i) x[i - values * b] += lo.d[i / 32] * static_cast<float>(lo.q[i]);
          }
          return HWY_DYNAMIC_DISPATCH(RowDotKernel)(w.type, block, x, values);
        },
        [&](int64_t t, int64_t r, float sum) { y[t0 + t][r] = sum; });
  }
}

}  // namespace detail

void matvec_q8(const TensorView& w, const uint8_t* xq, float* y, int64_t row_begin, int64_t row_end) {
  matmul_q8(w, xq, 1, y, 0, row_begin, row_end);
}

void matvec_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, float* y,
                         int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin) return;
  if (w.row_tiles) return detail::tiled_q8_products(w, &xq_hi, &xq_lo, 1, &y, row_begin, row_end);
  if (is_float_weight_type(w.type)) {  // no integer products to share: one f32 pass over hi + lo
    const int64_t n = w.row_length();
    float* x = detail::thread_scratch<detail::DequantizedActivations, float>(static_cast<size_t>(2 * n));
    if (x == nullptr) return matvec_q8_float_weights_unbuffered(w, xq_hi, xq_lo, y, row_begin, row_end);
    quant::dequantize_activations_q8(xq_hi, n, x);
    quant::dequantize_activations_q8(xq_lo, n, x + n);
    for (int64_t i = 0; i < n; ++i) x[i] += x[n + i];
    matvec_f32(w, x, y, row_begin, row_end);
    return;
  }
  const int64_t n = w.row_length();
  uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
      static_cast<size_t>(kernels::decode_scratch_bytes(n)));
  HWY_DYNAMIC_DISPATCH(MatvecQ8TwoLevelKernel)(w.type, w.data, w.row_bytes(), n, xq_hi, xq_lo, y, row_begin, row_end,
                                               scratch);
}

void matvec_q8_tokens(const TensorView& w, const uint8_t* const* xq_hi, const uint8_t* const* xq_lo, int64_t n_tokens,
                      float* const* y, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  if (w.row_tiles) return detail::tiled_q8_products(w, xq_hi, xq_lo, n_tokens, y, row_begin, row_end);
  if (is_float_weight_type(w.type)) {  // the f32 kernels, one token at a time, as alone
    for (int64_t t = 0; t < n_tokens; ++t) {
      if (xq_lo != nullptr) matvec_q8_two_level(w, xq_hi[t], xq_lo[t], y[t], row_begin, row_end);
      else matvec_q8(w, xq_hi[t], y[t], row_begin, row_end);
    }
    return;
  }
  const int64_t n = w.row_length();
  const int64_t laid_out = n_tokens < 16 ? n_tokens : 16;  // tokens whose activations a kernel lays out at once
  uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
      static_cast<size_t>(laid_out * kernels::decode_scratch_bytes(n)));
  HWY_DYNAMIC_DISPATCH(MatvecQ8TokensKernel)(w.type, w.data, w.row_bytes(), n, xq_hi, xq_lo, n_tokens, y, row_begin,
                                             row_end, scratch);
}

void matmul_q8_two_level(const TensorView& w, const uint8_t* xq_hi, const uint8_t* xq_lo, int64_t n_tokens, float* y,
                         int64_t y_stride, int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  const uint8_t* hi[kernels::kTiledTokens];
  const uint8_t* lo[kernels::kTiledTokens];
  float* out[kernels::kTiledTokens];
  // Tiles: as many tokens per sweep as matmul_q8 lays out with one level, halved (two levels take twice
  // the bytes). Other layouts: the decoding kernel's chunk of 16.
  const int64_t chunk = w.row_tiles ? kernels::tiled_prompt_tokens(2 * n) : 16;
  for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
    const int64_t count = std::min(chunk, n_tokens - t0);
    for (int64_t t = 0; t < count; ++t) {
      hi[t] = xq_hi + (t0 + t) * q8_row_bytes(n);
      lo[t] = xq_lo + (t0 + t) * q8_row_bytes(n);
      out[t] = y + (t0 + t) * y_stride;
    }
    matvec_q8_tokens(w, hi, lo, count, out, row_begin, row_end);
  }
}

void matmul_q8(const TensorView& w, const uint8_t* xq, int64_t n_tokens, float* y, int64_t y_stride,
               int64_t row_begin, int64_t row_end) {
  if (row_end <= row_begin || n_tokens <= 0) return;
  const int64_t n = w.row_length();
  if (w.row_tiles) {  // pointers to tiled_prompt_tokens(n) tokens at a time: one sweep of the tiles each
    const uint8_t* xq_tokens[kernels::kTiledTokens];
    float* y_tokens[kernels::kTiledTokens];
    const int64_t chunk = kernels::tiled_prompt_tokens(n);
    for (int64_t t0 = 0; t0 < n_tokens; t0 += chunk) {
      const int64_t count = std::min(chunk, n_tokens - t0);
      for (int64_t t = 0; t < count; ++t) {
        xq_tokens[t] = xq + (t0 + t) * q8_row_bytes(n);
        y_tokens[t] = y + (t0 + t) * y_stride;
      }
      detail::tiled_q8_products(w, xq_tokens, nullptr, count, y_tokens, row_begin, row_end);
    }
    return;
  }
  if (!is_float_weight_type(w.type)) {
    if (n_tokens == 1) {
      uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
          static_cast<size_t>(kernels::decode_scratch_bytes(n)));
      HWY_DYNAMIC_DISPATCH(MatvecQ8Kernel)(w.type, w.data, w.row_bytes(), n, xq, y, row_begin, row_end, scratch);
    } else {
      uint8_t* scratch = detail::thread_scratch<detail::PackedActivations, uint8_t>(
          static_cast<size_t>(kernels::prefill_scratch_bytes(n)));
      HWY_DYNAMIC_DISPATCH(MatmulQ8Kernel)(w.type, w.data, w.row_bytes(), n, xq, n_tokens, y, y_stride,
                                           row_begin, row_end, scratch);
    }
    return;
  }
  // Float weights gain nothing from int8 activations: widen them back and use the f32 kernels.
  float* x = detail::thread_scratch<detail::DequantizedActivations, float>(static_cast<size_t>(n));
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (x == nullptr) {
      matvec_q8_float_weights_unbuffered(w, xq + t * q8_row_bytes(n), nullptr, y + t * y_stride, row_begin, row_end);
      continue;
    }
    quant::dequantize_activations_q8(xq + t * q8_row_bytes(n), n, x);
    matvec_f32(w, x, y + t * y_stride, row_begin, row_end);
  }
}

}  // namespace ops
}  // namespace bora

#endif  // HWY_ONCE
#endif  // BORA_OPS_IMPLEMENTATION_HPP
// ---- end bora/ops/implementation.hpp -----------------------------------------------------------------
#endif
// ---- end bora/bora.hpp -------------------------------------------------------------------------------
#endif  // BORA_SINGLE_HEADER_KERNEL_PASS
