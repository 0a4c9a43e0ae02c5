// Why this file exists: one entry point that turns a row of any WeightType into floats — the plain
// scalar reference that tests hold every SIMD kernel to, and a fallback for cold paths (embeddings).
#ifndef BORA_QUANT_DEQUANTIZE_HPP
#define BORA_QUANT_DEQUANTIZE_HPP

#include <cstdint>
#include <cstring>

#include "bora/quant/bf16.hpp"
#include "bora/quant/f16.hpp"
#include "bora/quant/q4_0.hpp"
#include "bora/quant/q4_k.hpp"
#include "bora/quant/q5_k.hpp"
#include "bora/quant/q6_k.hpp"
#include "bora/quant/q8_0.hpp"
#include "bora/quant/weight_type.hpp"

namespace bora {

// `n` must be a multiple of the type's block size (weight_type_info(type).block_elements); `src`
// holds weight_row_bytes(type, n) bytes.
inline void dequantize_row(WeightType type, const uint8_t* src, float* dst, int64_t n) {
  if (n <= 0) return;
  switch (type) {
    case WeightType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case WeightType::kF16: quant::dequantize_row_f16(src, dst, n); return;
    case WeightType::kBF16: quant::dequantize_row_bf16(src, dst, n); return;
    case WeightType::kQ8_0: quant::dequantize_row_q8_0(src, dst, n); return;
    case WeightType::kQ4_0: quant::dequantize_row_q4_0(src, dst, n); return;
    case WeightType::kQ4_K: quant::dequantize_row_q4_k(src, dst, n); return;
    case WeightType::kQ5_K: quant::dequantize_row_q5_k(src, dst, n); return;
    case WeightType::kQ6_K: quant::dequantize_row_q6_k(src, dst, n); return;
  }
}

// The inverse, for tests and repacking: writes weight_row_bytes(type, n) bytes.
inline void quantize_row(WeightType type, const float* src, uint8_t* dst, int64_t n) {
  if (n <= 0) return;
  switch (type) {
    case WeightType::kF32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case WeightType::kF16: quant::quantize_row_f16(src, dst, n); return;
    case WeightType::kBF16: quant::quantize_row_bf16(src, dst, n); return;
    case WeightType::kQ8_0: quant::quantize_row_q8_0(src, dst, n); return;
    case WeightType::kQ4_0: quant::quantize_row_q4_0(src, dst, n); return;
    case WeightType::kQ4_K: quant::quantize_row_q4_k(src, dst, n); return;
    case WeightType::kQ5_K: quant::quantize_row_q5_k(src, dst, n); return;
    case WeightType::kQ6_K: quant::quantize_row_q6_k(src, dst, n); return;
  }
}

}  // namespace bora

#endif  // BORA_QUANT_DEQUANTIZE_HPP
