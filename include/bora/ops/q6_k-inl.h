// Why this file exists: the Q6_K super-block format (256 values of 6 bits in 16 sub-blocks of 16
// with int8 scales), every kernel that reads it: the float decoder, the portable, AVX2 and 512-bit
// VNNI int8 paths, and the prefill decoder. Compiled once per target (toggle guard).

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bora/quant/f16.hpp"
#include "bora/quant/q6_k.hpp"
#include "bora/quant/q8_activations.hpp"

#if defined(BORA_OPS_Q6_K_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_Q6_K_INL_H_
#undef BORA_OPS_Q6_K_INL_H_
#else
#define BORA_OPS_Q6_K_INL_H_
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
