// Why this file exists: bfloat16 is how Mistral ships its safetensors and a GGUF weight type; it is
// the upper half of an f32, so widening is exact and narrowing must round like torch does.
#ifndef BORA_QUANT_BF16_HPP
#define BORA_QUANT_BF16_HPP

#include <cstdint>

#include "bora/quant/f16.hpp"

namespace bora {
namespace quant {

inline float bf16_to_f32(uint16_t bf16) { return f32_from_bits(static_cast<uint32_t>(bf16) << 16); }

// Round to nearest, ties to even; NaN stays a (quiet) NaN instead of rounding into infinity.
inline uint16_t f32_to_bf16(float value) {
  const uint32_t bits = bits_from_f32(value);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t rounding = 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline void dequantize_row_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16_le(src + 2 * i));
}

inline void quantize_row_bf16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16_le(dst + 2 * i, f32_to_bf16(src[i]));
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_BF16_HPP
