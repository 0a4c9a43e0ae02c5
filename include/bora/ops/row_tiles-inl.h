// Why this file exists: every matrix in row tiles (quant/row_tiles.hpp) is read by one kernel for every
// token count, with 512-bit VNNI or with AVX2 alone. What all tiled formats share lives here: a block's
// integer sums for several tokens, and the sweep over tiles and tokens; each family supplies the dot
// product of its own tile blocks (legacy_blocks-inl.h, k_quants-inl.h, q6_k-inl.h).
// Compiled once per target (toggle guard).

#include <cstdint>
#include <cstring>

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
template <class Tiles, int kLevels>
HWY_INLINE void TiledProducts(const uint8_t* data, int64_t n, const quant::Q8ActivationRow* const* x,
                              int64_t n_tokens, float* const* y, int64_t row_begin, int64_t row_end) {
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

// sums[t] lane i = the integer dot product of 4 * kGroups values of row i (u[g]: values 4g .. 4g + 3 as
// unsigned bytes, one row per 32-bit lane) with token t's activations q[first, first + 4 * kGroups);
// with two levels 256 * first level + second, in the second level's units (as X512DotLevels). Four
// activation bytes broadcast to every lane meet four values of each row in one vpdpbusd. With few
// tokens the chain of vpdpbusd (each waits on the one before) is split in several, which integer
// addition joins exactly.
template <int kLevels, int T, int kGroups = 8>
HWY_INLINE void X512TileSums(const __m512i* u, const quant::Q8ActivationRow* const* x, int64_t first,
                             __m512i (&sums)[T]) {
  constexpr int kChains = T == 1 ? 4 : T == 2 ? 2 : 1;
  for (int level = 0; level < kLevels; ++level) {
    __m512i chains[kChains][T];
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < kChains; ++c) chains[c][t] = _mm512_setzero_si512();
    HWY_UNROLL(8)
    for (int g = 0; g < kGroups; ++g) {
      HWY_UNROLL(8)
      for (int t = 0; t < T; ++t) {
        int32_t four;
        std::memcpy(&four, x[t][level].q + first + 4 * g, 4);
        chains[g % kChains][t] = _mm512_dpbusd_epi32(chains[g % kChains][t], u[g], _mm512_set1_epi32(four));
      }
    }
    HWY_UNROLL(8)
    for (int t = 0; t < T; ++t) {
      __m512i total = chains[0][t];
      for (int c = 1; c < kChains; ++c) total = _mm512_add_epi32(total, chains[c][t]);
      sums[t] = level == 0 ? total : _mm512_add_epi32(_mm512_slli_epi32(sums[t], 8), total);
    }
  }
}

// The activation scale and d * sum(q) of token `levels` for its block b, broadcast (both levels summed).
template <int kLevels>
HWY_INLINE __m512 X512TokenScale(const quant::Q8ActivationRow* levels, int64_t b) {
  return _mm512_set1_ps(X512LevelScales<kLevels>(levels)[b]);
}
template <int kLevels>
HWY_INLINE __m512 X512TokenScaledSum(const quant::Q8ActivationRow* levels, int64_t b) {
  return kLevels == 2 ? _mm512_set1_ps(levels[0].d_sum[b] + levels[1].d_sum[b]) : _mm512_set1_ps(levels[0].d_sum[b]);
}

// Tokens [t, t + T) against one tile, written to y for the rows in `lanes` (see TiledProducts).
template <class Tiles, int kLevels, int T>
HWY_INLINE void X512TileTokens(const uint8_t* tile, int64_t ahead, int64_t blocks,
                               const quant::Q8ActivationRow* const* x, float* const* y, int64_t tile_row,
                               __mmask16 lanes) {
  __m512 acc[T];
  Tiles::template Dot<kLevels, T>(tile, ahead, blocks, x, acc);
  HWY_UNROLL(8)
  for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[t] + tile_row, lanes, acc[t]);
}

// y[t][r] for rows [row_begin, row_end) of a tiled matrix and n_tokens tokens (x[t]: kLevels levels).
// Tiles supplies kValues and kBytes (per block of one row), kAheadAlone (how far one token prefetches)
// and Dot<kLevels, T>(tile, ahead, blocks, x, acc): acc[t] lane i = row i's product with token t,
// prefetching each block's bytes `ahead` bytes further on (0: none).
// Every tile meets the tokens eight at a time while it sits in L1/L2, so the weights come from memory
// once for all of them; a thread's range may start or end inside a tile (its other lanes are computed
// and not stored).
template <class Tiles, int kLevels>
HWY_INLINE void TiledProducts(const uint8_t* data, int64_t n, const quant::Q8ActivationRow* const* x,
                              int64_t n_tokens, float* const* y, int64_t row_begin, int64_t row_end) {
  const int64_t blocks = n / Tiles::kValues;
  const int64_t tile_bytes = 16 * blocks * Tiles::kBytes;
  for (int64_t tile_row = row_begin - row_begin % 16; tile_row < row_end; tile_row += 16) {
    const uint8_t* tile = data + tile_row / 16 * tile_bytes;
    const int64_t first = row_begin > tile_row ? row_begin - tile_row : 0;
    const int64_t last = row_end - tile_row < 16 ? row_end - tile_row : 16;
    const __mmask16 lanes = static_cast<__mmask16>(((1u << last) - 1u) & ~((1u << first) - 1u));
    // With several tokens the first pass over a tile prefetches the next tile: the later passes find
    // it in L2. One token streams through the tiles once, prefetching Tiles::kAheadAlone bytes ahead
    // (6 KiB: without, the loads wait on memory; prefetching a whole tile ahead evicts them from L1).
    int64_t ahead = n_tokens > 1 ? (tile_row + 16 < row_end ? tile_bytes : 0) : Tiles::kAheadAlone;
    int64_t t = 0;
    for (; t + 8 <= n_tokens; t += 8, ahead = 0)
      X512TileTokens<Tiles, kLevels, 8>(tile, ahead, blocks, x + t, y + t, tile_row, lanes);
    if (t + 4 <= n_tokens) {
      X512TileTokens<Tiles, kLevels, 4>(tile, ahead, blocks, x + t, y + t, tile_row, lanes);
      t += 4;
      ahead = 0;
    }
    if (t + 2 <= n_tokens) {
      X512TileTokens<Tiles, kLevels, 2>(tile, ahead, blocks, x + t, y + t, tile_row, lanes);
      t += 2;
      ahead = 0;
    }
    if (t < n_tokens) X512TileTokens<Tiles, kLevels, 1>(tile, ahead, blocks, x + t, y + t, tile_row, lanes);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace ops
}  // namespace bora
BORA_OPS_AFTER_NAMESPACE();
#endif  // BORA_OPS_X86_VNNI

#endif  // BORA_OPS_ROW_TILES_INL_H_ toggle
