// Why this file exists: attention's inner loops, which decide what a long context costs. Query rows
// meet keys and values read straight from the cache's rows (f32, f16 or q8_0, widened in registers),
// and each block of keys is folded into every row's running output with an online softmax, the
// flash-attention way, so nothing grows with the number of keys but the work. Compiled once per
// target (toggle guard); ops::attention_block dispatches here.

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "bora/quant/f16.hpp"

#if defined(BORA_OPS_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_ATTENTION_INL_H_
#undef BORA_OPS_ATTENTION_INL_H_
#else
#define BORA_OPS_ATTENTION_INL_H_
#endif

#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include "bora/ops/target-inl.h"
#include "bora/ops/vector-inl.h"
#include "bora/ops/x86-inl.h"

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
