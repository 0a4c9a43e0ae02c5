// Why this file exists: the 512-bit VNNI kernels put one weight row in each of 16 lanes, so a Q4_0 or
// Q8_0 matrix they read is regrouped at load into tiles of 16 rows (same bytes, other order); this is
// that layout, its regrouping and the way back to ordinary rows, as plain byte moves.
#ifndef BORA_QUANT_ROW_TILES_HPP
#define BORA_QUANT_ROW_TILES_HPP

#include <cstdint>
#include <cstring>

#include "bora/quant/weight_type.hpp"

namespace bora {
namespace quant {

// Layout of a tiled matrix: rows 16r .. 16r + 15 take the bytes that 16 ordinary rows take, block
// after block. A tile block holds, for block b of its 16 rows, the 16 f16 scales (row i's at 2i),
// then the rows' value bytes four at a time: bytes 4g .. 4g + 3 of row i's values at 32 + 64g + 4i.
// So one 64-byte load gives four values of each of the 16 rows, one row per 32-bit lane.
constexpr int64_t kTileRows = 16;

// The types and shapes that can be tiled: blocks of one f16 scale and whole 4-byte groups of values.
inline bool row_tiles_apply(WeightType type, int64_t rows) {
  return (type == WeightType::kQ4_0 || type == WeightType::kQ8_0) && rows > 0 && rows % kTileRows == 0;
}

// Bytes of one block of one row (type as in row_tiles_apply).
inline int64_t tile_block_bytes(WeightType type) { return type == WeightType::kQ4_0 ? 18 : 34; }

// The tile block holding block `block` of row `row`, in a tiled matrix of `blocks` blocks per row.
inline const uint8_t* tile_block(WeightType type, const uint8_t* data, int64_t blocks, int64_t row, int64_t block) {
  const int64_t block_bytes = tile_block_bytes(type);
  return data + ((row / kTileRows) * blocks + block) * kTileRows * block_bytes;
}

// Rebuilds block `block` of row `row` of a tiled matrix in its ordinary layout (block_bytes bytes).
inline void untile_block(WeightType type, const uint8_t* data, int64_t blocks, int64_t row, int64_t block,
                         uint8_t* out) {
  const int64_t groups = (tile_block_bytes(type) - 2) / 4;
  const uint8_t* tile = tile_block(type, data, blocks, row, block);
  const int64_t lane = row % kTileRows;
  std::memcpy(out, tile + 2 * lane, 2);
  for (int64_t g = 0; g < groups; ++g) std::memcpy(out + 2 + 4 * g, tile + 2 * kTileRows + 64 * g + 4 * lane, 4);
}

// Rows [first, first + count) of a tiled matrix with `n` values per row, in the ordinary layout.
inline void untile_rows(WeightType type, const uint8_t* data, int64_t n, int64_t first, int64_t count, uint8_t* out) {
  const int64_t block_bytes = tile_block_bytes(type), blocks = n / 32;
  for (int64_t r = 0; r < count; ++r)
    for (int64_t b = 0; b < blocks; ++b)
      untile_block(type, data, blocks, first + r, b, out + (r * blocks + b) * block_bytes);
}

// Regroups a whole matrix (rows a multiple of 16) in place; `scratch` holds 16 rows' bytes.
inline void tile_rows_in_place(WeightType type, uint8_t* data, int64_t n, int64_t rows, uint8_t* scratch) {
  const int64_t block_bytes = tile_block_bytes(type), blocks = n / 32;
  const int64_t groups = (block_bytes - 2) / 4;
  const int64_t tile_bytes = kTileRows * blocks * block_bytes;
  for (int64_t tile = 0; tile < rows / kTileRows; ++tile) {
    uint8_t* out = data + tile * tile_bytes;
    std::memcpy(scratch, out, static_cast<size_t>(tile_bytes));
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* tile_block_out = out + b * kTileRows * block_bytes;
      for (int64_t lane = 0; lane < kTileRows; ++lane) {
        const uint8_t* block = scratch + (lane * blocks + b) * block_bytes;
        std::memcpy(tile_block_out + 2 * lane, block, 2);
        for (int64_t g = 0; g < groups; ++g)
          std::memcpy(tile_block_out + 2 * kTileRows + 64 * g + 4 * lane, block + 2 + 4 * g, 4);
      }
    }
  }
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_ROW_TILES_HPP
