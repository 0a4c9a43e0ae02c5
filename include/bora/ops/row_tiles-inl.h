// Why this file exists: every matrix in row tiles (quant/row_tiles.hpp) is read by one kernel for every
// token count, with 512-bit VNNI or with AVX2 alone. What all tiled formats share lives here: a block's
// integer sums for several tokens, and the sweep over tiles and tokens; each family supplies the dot
// product of its own tile blocks (legacy_blocks-inl.h, k_quants-inl.h, q6_k-inl.h).
// Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bora/quant/q8_activations.hpp"

#if defined(BORA_OPS_ROW_TILES_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef BORA_OPS_ROW_TILES_INL_H_
#undef BORA_OPS_ROW_TILES_INL_H_
#else
#define BORA_OPS_ROW_TILES_INL_H_
#endif

#include <hwy/highway.h>

#include "bora/ops/activations-inl.h"
#include "bora/ops/target-inl.h"
#include "bora/ops/x86-inl.h"

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
