// Why this file exists: ggml's Q4_K super-block (256 4-bit values in 8 sub-blocks with 6-bit packed
// scales and mins), its scalar reference dequantizer, and a simple quantizer; Q5_K reuses the scales.
#ifndef BORA_QUANT_Q4_K_HPP
#define BORA_QUANT_Q4_K_HPP

#include <cmath>
#include <cstdint>

#include "bora/quant/f16.hpp"
#include "bora/quant/q8_0.hpp"

namespace bora {
namespace quant {

// Layout (144 bytes): f16 d at 0, f16 dmin at 2, u8 scales[12] at 4, u8 qs[128] at 16.
// Sub-block j (32 values) has 6-bit scale sc_j and min m_j; value = d*sc_j*q - dmin*m_j, q in 0..15.
// qs byte 32c + l holds element l of sub-block 2c (low nibble) and of sub-block 2c+1 (high nibble).
struct Q4_KBlock {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 144;
  static constexpr int kScaleOffset = 0;
  static constexpr int kMinScaleOffset = 2;
  static constexpr int kScalesOffset = 4;
  static constexpr int kQuantsOffset = 16;
};

// The 12 scale bytes hold eight 6-bit (scale, min) pairs: pairs 0..3 in the low 6 bits of bytes
// 0..3 / 4..7; pairs 4..7 keep their low 4 bits in bytes 8..11 and their top 2 bits in the spare
// high bits of bytes 0..7.
inline void unpack_k_scale_min(const uint8_t* scales, int j, int* scale, int* min) {
  if (j < 4) {
    *scale = scales[j] & 63;
    *min = scales[j + 4] & 63;
  } else {
    *scale = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
    *min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

// All eight pairs at once with 32-bit masks (what the SIMD kernels use per super-block): returns
// four little-endian words holding the bytes scale[0..3], scale[4..7], min[0..3], min[4..7].
inline void unpack_k_scales_mins_words(const uint8_t* scales, uint32_t* words) {
  uint32_t in[3];
  for (int k = 0; k < 3; ++k) {
    in[k] = static_cast<uint32_t>(scales[4 * k]) | (static_cast<uint32_t>(scales[4 * k + 1]) << 8) |
            (static_cast<uint32_t>(scales[4 * k + 2]) << 16) | (static_cast<uint32_t>(scales[4 * k + 3]) << 24);
  }
  words[0] = in[0] & 0x3F3F3F3Fu;
  words[1] = (in[2] & 0x0F0F0F0Fu) | (((in[0] >> 6) & 0x03030303u) << 4);
  words[2] = in[1] & 0x3F3F3F3Fu;
  words[3] = ((in[2] >> 4) & 0x0F0F0F0Fu) | (((in[1] >> 6) & 0x03030303u) << 4);
}

// Equal to calling unpack_k_scale_min for j = 0..7.
inline void unpack_k_scales_mins(const uint8_t* scales, uint8_t* scale, uint8_t* min) {
  uint32_t words[4];
  unpack_k_scales_mins_words(scales, words);
  for (int k = 0; k < 4; ++k) {
    uint8_t* dst = k < 2 ? scale + 4 * k : min + 4 * (k - 2);
    for (int b = 0; b < 4; ++b) dst[b] = static_cast<uint8_t>(words[k] >> (8 * b));
  }
}

inline void pack_k_scale_mins(const int* scale, const int* min, uint8_t* scales) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = static_cast<uint8_t>((scale[j] & 63) | ((scale[j + 4] >> 4) << 6));
    scales[j + 4] = static_cast<uint8_t>((min[j] & 63) | ((min[j + 4] >> 4) << 6));
    scales[j + 8] = static_cast<uint8_t>((scale[j + 4] & 15) | ((min[j + 4] & 15) << 4));
  }
}

// Q4_K and Q5_K share the header (d, dmin and the scales at the same offsets) and the low nibbles;
// with kHasHighBit (Q5_K) the fifth bit of element l of sub-block j is bit j of high_bits[l].
template <bool kHasHighBit>
inline void dequantize_k_quant_block(const uint8_t* block, const uint8_t* qs, const uint8_t* high_bits, float* out) {
  const float d = load_f16(block + Q4_KBlock::kScaleOffset);
  const float dmin = load_f16(block + Q4_KBlock::kMinScaleOffset);
  const uint8_t* scales = block + Q4_KBlock::kScalesOffset;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    unpack_k_scale_min(scales, j, &sc, &m);
    const float step = d * static_cast<float>(sc);
    const float offset = dmin * static_cast<float>(m);
    const uint8_t* bytes = qs + 32 * (j / 2);
    const int shift = (j % 2) * 4;
    for (int l = 0; l < 32; ++l) {
      int q = (bytes[l] >> shift) & 15;
      if constexpr (kHasHighBit) q |= ((high_bits[l] >> j) & 1) << 4;
      out[32 * j + l] = step * static_cast<float>(q) - offset;
    }
  }
}

inline void dequantize_block_q4_k(const uint8_t* block, float* out) {
  dequantize_k_quant_block<false>(block, block + Q4_KBlock::kQuantsOffset, nullptr, out);
}

inline void dequantize_row_q4_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q4_k(src + b * 144, dst + b * 256);
}

namespace detail {

// Asymmetric min/max quantization of a 256-value super-block into 8 sub-blocks of 32 values with
// q in [0, max_q]; shared by Q4_K (max_q 15) and Q5_K (max_q 31). Returns the f16 bits of d and
// dmin, the 6-bit scales and mins, and the quants.
inline void quantize_k_superblock(const float* x, int max_q, uint16_t* d_bits, uint16_t* dmin_bits,
                                  int* scale, int* min, uint8_t* q) {
  float sub_step[8], sub_min[8];
  float max_step = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    float lo = 0.0f, hi = -INFINITY;
    for (int l = 0; l < 32; ++l) {
      lo = std::fmin(lo, x[32 * j + l]);
      hi = std::fmax(hi, x[32 * j + l]);
    }
    sub_step[j] = (hi - lo) / static_cast<float>(max_q);
    sub_min[j] = -lo;
    max_step = std::fmax(max_step, sub_step[j]);
    max_min = std::fmax(max_min, sub_min[j]);
  }
  *d_bits = f32_to_f16(max_step / 63.0f);
  *dmin_bits = f32_to_f16(max_min / 63.0f);
  const float d = f16_to_f32(*d_bits);
  const float dmin = f16_to_f32(*dmin_bits);
  for (int j = 0; j < 8; ++j) {
    scale[j] = d > 0.0f ? round_and_clamp(sub_step[j] / d, 0, 63) : 0;
    if (scale[j] == 0 && sub_step[j] > 0.0f && d > 0.0f) scale[j] = 1;
    min[j] = dmin > 0.0f ? round_and_clamp(sub_min[j] / dmin, 0, 63) : 0;
    const float step = d * static_cast<float>(scale[j]);
    const float offset = dmin * static_cast<float>(min[j]);
    const float inverse = step > 0.0f ? 1.0f / step : 0.0f;
    for (int l = 0; l < 32; ++l) {
      q[32 * j + l] = static_cast<uint8_t>(round_and_clamp((x[32 * j + l] + offset) * inverse, 0, max_q));
    }
  }
}

// Quantizes x into q and writes the header Q4_K and Q5_K share: f16 d and dmin, then the scales.
inline void quantize_k_header(const float* x, int max_q, uint8_t* block, uint8_t* q) {
  uint16_t d_bits = 0, dmin_bits = 0;
  int scale[8], min[8];
  quantize_k_superblock(x, max_q, &d_bits, &dmin_bits, scale, min, q);
  store_u16_le(block + Q4_KBlock::kScaleOffset, d_bits);
  store_u16_le(block + Q4_KBlock::kMinScaleOffset, dmin_bits);
  pack_k_scale_mins(scale, min, block + Q4_KBlock::kScalesOffset);
}

// The low 4 bits of sub-blocks 2c and 2c+1 as the low and high nibbles of qs bytes 32c..32c+31.
inline void pack_k_low_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      qs[32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 15) | ((q[64 * c + 32 + l] & 15) << 4));
    }
  }
}

}  // namespace detail

inline void quantize_block_q4_k(const float* x, uint8_t* block) {
  uint8_t q[256];
  detail::quantize_k_header(x, 15, block, q);
  detail::pack_k_low_nibbles(q, block + Q4_KBlock::kQuantsOffset);
}

inline void quantize_row_q4_k(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) quantize_block_q4_k(src + b * 256, dst + b * 144);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q4_K_HPP
