// Why this file exists: ggml's Q5_K super-block (Q4_K plus one high bit per value), its scalar
// reference dequantizer and a simple quantizer.
#ifndef BORA_QUANT_Q5_K_HPP
#define BORA_QUANT_Q5_K_HPP

#include <cstdint>

#include "bora/quant/f16.hpp"
#include "bora/quant/q4_k.hpp"

namespace bora {
namespace quant {

// Layout (176 bytes): f16 d at 0, f16 dmin at 2, u8 scales[12] at 4 (packed as Q4_K), u8 qh[32] at
// 16, u8 qs[128] at 48. Low 4 bits of q come from qs exactly as in Q4_K; the fifth bit of element l
// of sub-block j is bit j of qh[l]. value = d*sc_j*q - dmin*m_j, q in 0..31.
struct Q5_KBlock {
  static constexpr int kElements = 256;
  static constexpr int kBytes = 176;
  static constexpr int kScaleOffset = 0;
  static constexpr int kMinScaleOffset = 2;
  static constexpr int kScalesOffset = 4;
  static constexpr int kHighBitsOffset = 16;
  static constexpr int kQuantsOffset = 48;
};

static_assert(Q5_KBlock::kScaleOffset == Q4_KBlock::kScaleOffset &&
                  Q5_KBlock::kMinScaleOffset == Q4_KBlock::kMinScaleOffset &&
                  Q5_KBlock::kScalesOffset == Q4_KBlock::kScalesOffset,
              "Q5_K's header is read and written by Q4_K's code, at Q4_K's offsets");

inline void dequantize_block_q5_k(const uint8_t* block, float* out) {
  dequantize_k_quant_block<true>(block, block + Q5_KBlock::kQuantsOffset, block + Q5_KBlock::kHighBitsOffset, out);
}

inline void dequantize_row_q5_k(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) dequantize_block_q5_k(src + b * 176, dst + b * 256);
}

inline void quantize_block_q5_k(const float* x, uint8_t* block) {
  uint8_t q[256];
  detail::quantize_k_header(x, 31, block, q);
  uint8_t* qh = block + Q5_KBlock::kHighBitsOffset;
  for (int l = 0; l < 32; ++l) {
    int high_bits = 0;
    for (int j = 0; j < 8; ++j) high_bits |= ((q[32 * j + l] >> 4) & 1) << j;
    qh[l] = static_cast<uint8_t>(high_bits);
  }
  detail::pack_k_low_nibbles(q, block + Q5_KBlock::kQuantsOffset);
}

inline void quantize_row_q5_k(const float* src, uint8_t* dst, int64_t n) {
  for (int64_t b = 0; b < n / 256; ++b) quantize_block_q5_k(src + b * 256, dst + b * 176);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q5_K_HPP
