// Why this file exists: the few raw x86 helpers that several weight families' AVX2 and AVX-512
// kernels share (f16 scalars, loads, horizontal sums, prefetching), and the decoded super-block
// the VNNI prefill kernel reads from every family. Empty on other targets.

#include <cstdint>

#include "bora/quant/f16.hpp"

#if defined(BORA_OPS_X86_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_X86_INL_H_
#undef BORA_OPS_X86_INL_H_
#else
#define BORA_OPS_X86_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/target-inl.h"

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
