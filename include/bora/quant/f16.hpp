// Why this file exists: IEEE half precision appears in every ggml block (scales) and as a weight and
// KV-cache type; one exact scalar conversion is the reference every SIMD path is tested against.
#ifndef BORA_QUANT_F16_HPP
#define BORA_QUANT_F16_HPP

#include <cstdint>
#include <cstring>

namespace bora {
namespace quant {

// Block fields are little-endian and may sit at any address inside a mapped file, so they are read
// byte-wise (no casts to wider pointers, which would be misaligned UB).
inline uint16_t load_u16_le(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (static_cast<uint16_t>(p[1]) << 8));
}

inline void store_u16_le(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v & 0xFF);
  p[1] = static_cast<uint8_t>(v >> 8);
}

inline float f32_from_bits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint32_t bits_from_f32(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return bits;
}

// Exact: every half value (including subnormals, infinities and NaN payloads) is a float.
inline float f16_to_f32(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  const uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, computed without relying on float subnormals.
    const float magnitude = static_cast<float>(mantissa) * (1.0f / 16777216.0f);
    return f32_from_bits(bits_from_f32(magnitude) | sign);
  }
  if (exponent == 31) return f32_from_bits(sign | 0x7F800000u | (mantissa << 13));
  return f32_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

// Round to nearest, ties to even (what F16C and numpy do); overflow gives infinity, NaN stays NaN.
inline uint16_t f32_to_f16(float value) {
  uint32_t bits = bits_from_f32(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  bits &= 0x7FFFFFFFu;
  if (bits >= 0x7F800000u) {  // infinity or NaN (NaN keeps its top payload bits and becomes quiet)
    if (bits == 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u);
    return static_cast<uint16_t>(sign | 0x7E00u | ((bits >> 13) & 0x3FFu));
  }
  if (bits >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (bits < 0x38800000u) {
    // Below the smallest normal half (2^-14): adding 0.5f puts the value where one float ulp is
    // 2^-24, one half subnormal step, so the float addition itself rounds to nearest even.
    const float shifted = f32_from_bits(bits) + 0.5f;
    return static_cast<uint16_t>(sign | (bits_from_f32(shifted) - 0x3F000000u));
  }
  // Normal: rebias the exponent and round the 13 dropped mantissa bits to nearest even; a carry
  // out of the mantissa correctly bumps the exponent.
  const uint32_t mantissa_odd = (bits >> 13) & 1u;
  bits += 0xC8000FFFu + mantissa_odd;  // (15 - 127) << 23 (mod 2^32), plus 0xFFF for the rounding
  return static_cast<uint16_t>(sign | (bits >> 13));
}

inline float load_f16(const uint8_t* p) { return f16_to_f32(load_u16_le(p)); }

inline void dequantize_row_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(src + 2 * i);
}

inline void quantize_row_f16(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store_u16_le(dst + 2 * i, f32_to_f16(src[i]));
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_F16_HPP
