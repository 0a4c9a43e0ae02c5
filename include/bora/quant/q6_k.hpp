// Why this file exists: ggml's Q6_K super-block (256 6-bit values, 16 signed 8-bit sub-block
// scales), its scalar reference dequantizer and a simple quantizer.
#ifndef BORA_QUANT_Q6_K_HPP
#define BORA_QUANT_Q6_K_HPP

#include <cmath>
#include <cstdint>

#include "bora/quant/f16.hpp"
#include "bora/quant/q8_0.hpp"

namespace bora {
namespace quant {

// Layout (210 bytes): u8 ql[128] at 0, u8 qh[64] at 128, int8 scales[16] at 192, f16 d at 208.
// value = d * scales[i / 16] * (q - 32), q in 0..63. Each half h (128 values) uses ql[64h..64h+63],
// qh[32h..32h+31] and scales[8h..8h+7]; for l in 0..31 (element index inside the half):
//   element l      : low nibble of ql[l],      bits 0-1 of qh[l]
//   element l + 32 : low nibble of ql[l + 32], bits 2-3 of qh[l]
//   element l + 64 : high nibble of ql[l],     bits 4-5 of qh[l]
//   element l + 96 : high nibble of ql[l + 32], bits 6-7 of qh[l]
struct Q6_KBlock {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 210;
  static constexpr int kLowBitsOffset = 0;
  static constexpr int kHighBitsOffset = 128;
  static constexpr int kScalesOffset = 192;
  static constexpr int kScaleOffset = 208;
};

// The 6-bit quant of element `i` (0..255) of a Q6_K block, in 0..63.
inline int q6_k_quant(const uint8_t* block, int i) {
  const int half = i / 128, k = (i % 128) / 32, l = i % 32;
  const uint8_t* ql = block + Q6_KBlock::kLowBitsOffset + 64 * half;
  const uint8_t* qh = block + Q6_KBlock::kHighBitsOffset + 32 * half;
  const int low_byte = ql[l + 32 * (k % 2)];
  const int low = (k < 2) ? (low_byte & 15) : (low_byte >> 4);
  const int high = (qh[l] >> (2 * k)) & 3;
  return low | (high << 4);
}

inline void dequantize_block_q6_k(const uint8_t* block, float* out) {
  const float d = load_f16(block + Q6_KBlock::kScaleOffset);
  const uint8_t* scales = block + Q6_KBlock::kScalesOffset;
  for (int i = 0; i < 256; ++i) {
    const float step = d * static_cast<float>(static_cast<int8_t>(scales[i / 16]));
    out[i] = step * static_cast<float>(q6_k_quant(block, i) - 32);
  }
}

inline void dequantize_row_q6_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q6_k(src + b * 210, dst + b * 256);
}

// Symmetric per 16 values: the value of largest magnitude maps to q - 32 = -32, so sub-block scales
// are signed (as ggml's own quantizer produces).
inline void quantize_block_q6_k(const float* x, uint8_t* block) {
  float sub_scale[16];
  float max_abs_scale = 0.0f;
  for (int s = 0; s < 16; ++s) {
    float extreme = 0.0f;
    for (int l = 0; l < 16; ++l) {
      if (std::fabs(x[16 * s + l]) > std::fabs(extreme)) extreme = x[16 * s + l];
    }
    sub_scale[s] = extreme / -32.0f;
    max_abs_scale = std::fmax(max_abs_scale, std::fabs(sub_scale[s]));
  }
  const uint16_t d_bits = f32_to_f16(max_abs_scale / 127.0f);
  const float d = f16_to_f32(d_bits);
  store_u16_le(block + Q6_KBlock::kScaleOffset, d_bits);
  uint8_t q[256];
  for (int s = 0; s < 16; ++s) {
    const int sc = d > 0.0f ? round_and_clamp(sub_scale[s] / d, -128, 127) : 0;
    block[Q6_KBlock::kScalesOffset + s] = static_cast<uint8_t>(static_cast<int8_t>(sc));
    const float step = d * static_cast<float>(sc);
    const float inverse = step != 0.0f ? 1.0f / step : 0.0f;
    for (int l = 0; l < 16; ++l) {
      q[16 * s + l] = static_cast<uint8_t>(round_and_clamp(x[16 * s + l] * inverse, -32, 31) + 32);
    }
  }
  for (int half = 0; half < 2; ++half) {
    uint8_t* ql = block + Q6_KBlock::kLowBitsOffset + 64 * half;
    uint8_t* qh = block + Q6_KBlock::kHighBitsOffset + 32 * half;
    const uint8_t* y = q + 128 * half;
    for (int l = 0; l < 32; ++l) {
      ql[l] = static_cast<uint8_t>((y[l] & 15) | ((y[l + 64] & 15) << 4));
      ql[l + 32] = static_cast<uint8_t>((y[l + 32] & 15) | ((y[l + 96] & 15) << 4));
      qh[l] = static_cast<uint8_t>((y[l] >> 4) | ((y[l + 32] >> 4) << 2) | ((y[l + 64] >> 4) << 4) |
                                   ((y[l + 96] >> 4) << 6));
    }
  }
}

inline void quantize_row_q6_k(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) quantize_block_q6_k(src + b * 256, dst + b * 210);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q6_K_HPP
