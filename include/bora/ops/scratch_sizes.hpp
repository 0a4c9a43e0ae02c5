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

}  // namespace kernels
}  // namespace ops
}  // namespace bora

#endif  // BORA_OPS_SCRATCH_SIZES_HPP
