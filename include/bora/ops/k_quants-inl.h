// Why this file exists: the K-quant super-block formats Q4_K and Q5_K (256 values in 8 sub-blocks
// with packed 6-bit scales and mins; Q5_K adds a fifth bit per value). They share the super-block
// header and most of the decoding, so one template serves both, in every kernel that reads them:
// the float decoder, the portable, AVX2 and 512-bit VNNI int8 paths, and the prefill decoder.
// Compiled once per target (toggle guard).

#include <cstddef>
#include <cstdint>

#include "bora/quant/f16.hpp"
#include "bora/quant/q4_k.hpp"
#include "bora/quant/q5_k.hpp"
#include "bora/quant/q8_activations.hpp"

#if defined(BORA_OPS_K_QUANTS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_K_QUANTS_INL_H_
#undef BORA_OPS_K_QUANTS_INL_H_
#else
#define BORA_OPS_K_QUANTS_INL_H_
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
