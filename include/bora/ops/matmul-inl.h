// Why this file exists: matrix x activations for every weight type: the per-type switch to a weight
// family (legacy_blocks-inl.h, k_quants-inl.h, q6_k-inl.h, float_weights-inl.h), one token at a time
// (decode) and the batched tiling of a prompt over a family's micro-kernel, including the VNNI
// prefill kernel. These are the kernels implementation.hpp exports. Compiled once per target.

#include <cstdint>
#include <cstring>

#include "bora/ops/scratch_sizes.hpp"
#include "bora/quant/q8_activations.hpp"
#include "bora/quant/row_tiles.hpp"
#include "bora/quant/weight_type.hpp"

#if defined(BORA_OPS_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_MATMUL_INL_H_
#undef BORA_OPS_MATMUL_INL_H_
#else
#define BORA_OPS_MATMUL_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/activations-inl.h"
#include "bora/ops/float_weights-inl.h"
#include "bora/ops/k_quants-inl.h"
#include "bora/ops/legacy_blocks-inl.h"
#include "bora/ops/q4_0_windows-inl.h"
#include "bora/ops/q6_k-inl.h"
#include "bora/ops/target-inl.h"
#include "bora/ops/vector-inl.h"
#include "bora/ops/x86-inl.h"

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
