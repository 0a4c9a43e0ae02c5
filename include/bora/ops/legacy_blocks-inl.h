// Why this file exists: the legacy block formats Q8_0 and Q4_0 (32 values, one f16 scale), every
// kernel that reads them, from the block decoders to the AVX2 and 512-bit VNNI tile kernels (the Q4_0
// window kernel has a file of its own, q4_0_windows-inl.h), ending in one family struct each (the
// interface kernels-inl.h and matmul-inl.h use; see the end of this file). Compiled once per target
// (toggle guard).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bora/quant/f16.hpp"
#include "bora/quant/q4_0.hpp"
#include "bora/quant/q8_0.hpp"
#include "bora/quant/q8_activations.hpp"

#if defined(BORA_OPS_LEGACY_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_LEGACY_BLOCKS_INL_H_
#undef BORA_OPS_LEGACY_BLOCKS_INL_H_
#else
#define BORA_OPS_LEGACY_BLOCKS_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/activations-inl.h"
#include "bora/ops/row_tiles-inl.h"
#include "bora/ops/target-inl.h"
#include "bora/ops/x86-inl.h"

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
