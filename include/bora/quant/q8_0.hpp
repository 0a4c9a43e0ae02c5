// Why this file exists: ggml's Q8_0 block (32 int8 values sharing one f16 scale), the scalar
// reference the SIMD kernels are tested against, and a simple quantizer for tests and repacking.
#ifndef BORA_QUANT_Q8_0_HPP
#define BORA_QUANT_Q8_0_HPP

#include <cmath>
#include <cstdint>

#include "bora/quant/f16.hpp"

namespace bora {
namespace quant {

// Layout (34 bytes): f16 d at byte 0, int8 q[32] at byte 2.  value[i] = d * q[i].
struct Q8_0Block {
  static constexpr int kElements = 32;
  static constexpr int kBytes = 34;
  static constexpr int kScaleOffset = 0;
  static constexpr int kQuantsOffset = 2;
};

// Rounds to the nearest integer and clamps into [lo, hi]; NaN becomes 0 (never UB on odd input).
inline int round_and_clamp(float value, int lo, int hi) {
  if (!(value == value)) return 0;
  if (value <= static_cast<float>(lo)) return lo;
  if (value >= static_cast<float>(hi)) return hi;
  return static_cast<int>(std::nearbyint(value));
}

inline void dequantize_block_q8_0(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q8_0Block::kScaleOffset);
  const uint8_t* q = block + Q8_0Block::kQuantsOffset;
  for (int i = 0; i < 32; ++i) out[i] = d * static_cast<float>(static_cast<int8_t>(q[i]));
}

inline void dequantize_row_q8_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) dequantize_block_q8_0(src + b * 34, dst + b * 32);
}

// Symmetric: d = max|x| / 127 (rounded to f16 first, so the stored scale is the one used).
inline void quantize_block_q8_0(const float* x, uint8_t* block) {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const uint16_t d_bits = f32_to_f16(amax / 127.0f);
  const float d = f16_to_f32(d_bits);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16_le(block + Q8_0Block::kScaleOffset, d_bits);
  for (int i = 0; i < 32; ++i) {
    const int q = round_and_clamp(x[i] * inverse, -127, 127);
    block[Q8_0Block::kQuantsOffset + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
  }
}

inline void quantize_row_q8_0(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) quantize_block_q8_0(src + b * 32, dst + b * 34);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q8_0_HPP
