// Why this file exists: implementation.hpp allocates the per-thread buffers that the SIMD kernels
// (compiled once per target from the -inl.h files) work in, and both must agree on their sizes.
#ifndef BORA_OPS_SCRATCH_SIZES_HPP
#define BORA_OPS_SCRATCH_SIZES_HPP

#include <cstdint>

namespace bora {
namespace ops {
namespace kernels {

// Rows of weights matmul_f32 dequantizes at once; its caller provides a scratch of this many rows.
constexpr int64_t kMatmulTileRows = 4;
// Tokens the VNNI prefill kernel packs at once (two 512-bit registers of 16), the fewest tokens for
// which it beats the row-at-a-time kernel, and the scratch it needs for rows of n values.
constexpr int64_t kPrefillTokens = 32;
constexpr int64_t kPrefillMinTokens = 8;
inline int64_t prefill_scratch_bytes(int64_t n) { return kPrefillTokens * n + 4 * (n / 32) * kPrefillTokens * 4; }
// The decode kernels' scratch for rows of n values: the Q4_0 window layout of two activation levels
// (low and high nibble copies, 18 bytes per 32 values each).
inline int64_t decode_scratch_bytes(int64_t n) { return 2 * 2 * (n / 32) * 18; }
// Tokens the row-tile kernels sweep a matrix with at once: each 16-row tile is read from memory once
// per this many tokens of a prompt.
constexpr int64_t kTiledTokens = 64;
// How many of a prompt's tokens sweep the tiles of a matrix with rows of n values: as many as keep
// their int8 activations (about n bytes each) within 256 KiB, so they stay in L2 beside the tile for
// every pass over it, between 16 and kTiledTokens. With 64 tokens the 14,336-value rows of w2 held
// 0.9 MiB of activations and ran slower than with 16 (one core of a Zen 5, a 14336 x 4096 Q4_0 matrix:
// 200-217 against 228-232 G multiply-accumulates/s); the 4,096-value rows keep 64 (fewer reads of each
// tile from memory: with 16, 7B Q4_K_M prompts ran 6% slower).
// The row-tile kernels' scratch for n_tokens tokens of n values with `levels` int8 levels, laid out
// for the VNNI tile kernels: per 32 values and token, the int8 values, the activation scale and at
// most two sums (X512TokenBlocks in row_tiles-inl.h).
inline int64_t tiled_scratch_bytes(int64_t n, int64_t n_tokens, int levels) {
  return n_tokens * (n / 32) * (32 * levels + 4 * 3);
}
inline int64_t tiled_prompt_tokens(int64_t n) {
  const int64_t fit = (int64_t{256} << 10) / (n > 0 ? n : 1);
  return fit >= kTiledTokens ? kTiledTokens : fit < 16 ? 16 : fit - fit % 8;
}

}  // namespace kernels
}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_SCRATCH_SIZES_HPP
