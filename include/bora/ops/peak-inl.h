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

#include "bora/ops/activations-inl.h"
#include "bora/ops/target-inl.h"
#include "bora/ops/x86-inl.h"

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
