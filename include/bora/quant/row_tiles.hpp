// Why this file exists: the 512-bit VNNI and AVX2 kernels put one weight row in each 32-bit lane, so a Q4_0,
// Q8_0, Q4_K, Q5_K or Q6_K matrix they read is regrouped at load into tiles of 16 rows (same bytes, other order);
// this is that layout, its regrouping and the way back to ordinary rows, as plain byte moves.
#ifndef BORA_QUANT_ROW_TILES_HPP
#define BORA_QUANT_ROW_TILES_HPP

#include <cstdint>
#include <cstring>

#include "bora/quant/weight_type.hpp"

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
