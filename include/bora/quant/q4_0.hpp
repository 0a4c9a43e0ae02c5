// Why this file exists: ggml's Q4_0 block (32 4-bit values sharing one signed f16 scale), its scalar
// reference dequantizer and a simple quantizer.
#ifndef BORA_QUANT_Q4_0_HPP
#define BORA_QUANT_Q4_0_HPP

#include <cmath>
#include <cstdint>

#include "bora/quant/f16.hpp"
#include "bora/quant/q8_0.hpp"

namespace bora {
namespace quant {

// Layout (18 bytes): f16 d at byte 0, u8 qs[16] at byte 2. Element j (j < 16) is the low nibble of
// qs[j], element j + 16 its high nibble; value = d * (nibble - 8). d may be negative.
struct Q4_0Block {
  static constexpr int kElements = 32;
  static constexpr int kBytes = 18;
  static constexpr int kScaleOffset = 0;
  static constexpr int kQuantsOffset = 2;
};

inline void dequantize_block_q4_0(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q4_0Block::kScaleOffset);
  const uint8_t* qs = block + Q4_0Block::kQuantsOffset;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>((qs[j] & 15) - 8);
    out[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

inline void dequantize_row_q4_0(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) dequantize_block_q4_0(src + b * 18, dst + b * 32);
}

// As ggml: the value of largest magnitude maps to -8 exactly (d = that value / -8), the rest round.
inline void quantize_block_q4_0(const float* x, uint8_t* block) {
  float extreme = 0.0f;
  for (int i = 0; i < 32; ++i) {
    if (std::fabs(x[i]) > std::fabs(extreme)) extreme = x[i];
  }
  const uint16_t d_bits = f32_to_f16(extreme / -8.0f);
  const float d = f16_to_f32(d_bits);
  const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16_le(block + Q4_0Block::kScaleOffset, d_bits);
  uint8_t* qs = block + Q4_0Block::kQuantsOffset;
  for (int j = 0; j < 16; ++j) {
    const int low = round_and_clamp(x[j] * inverse + 8.0f, 0, 15);
    const int high = round_and_clamp(x[j + 16] * inverse + 8.0f, 0, 15);
    qs[j] = static_cast<uint8_t>(low | (high << 4));
  }
}

inline void quantize_row_q4_0(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) quantize_block_q4_0(src + b * 32, dst + b * 18);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q4_0_HPP
