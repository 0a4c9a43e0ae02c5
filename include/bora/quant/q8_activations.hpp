// Why this file exists: the fast decode path quantizes each activation row once into int8 blocks so
// every weight format can use integer dot products; this is that row layout and its scalar
// reference quantizer, which the SIMD quantizer must match exactly.
#ifndef BORA_QUANT_Q8_ACTIVATIONS_HPP
#define BORA_QUANT_Q8_ACTIVATIONS_HPP

#include <cmath>
#include <cstdint>
#include <cstring>

namespace bora {
namespace quant {

// A row of n activations (n a multiple of 32) in q8_activation_row_bytes(n) bytes:
//   int8 q[n] | float d[n / 32] | float d_sum[n / 32] | float d_sum16[n / 16]
// value i = d[i / 32] * q[i]; q in [-127, 127] (never -128, so |q| fits the u8 x s8 tricks);
// d_sum[b] = d[b] * (sum of q over block b) and d_sum16[h] = d[h / 2] * (sum of q over the 16
// values of half h), which weights stored with an offset need (Q4_0's -8, the K-quant mins, Q6_K's
// -32 per 16 values). The float arrays start at byte n; the buffer must be 4-byte aligned.
constexpr int64_t kQ8ActivationBlock = 32;

inline int64_t q8_activation_row_bytes(int64_t n) { return n + 4 * (n / 32) * 4; }

struct Q8ActivationRow {
  const int8_t* q;
  const float* d;
  const float* d_sum;
  const float* d_sum16;
};

inline Q8ActivationRow q8_activation_view(const uint8_t* row, int64_t n) {
  const float* scales = reinterpret_cast<const float*>(row + n);
  return {reinterpret_cast<const int8_t*>(row), scales, scales + n / 32, scales + 2 * (n / 32)};
}

// Rounds block b's 32 values, already divided by the block's step, to int8 in [-127, 127] and stores
// them with d[b] = scale and the sums the layout above describes (shared by both quantizers below).
inline void store_activation_block_q8(const float* scaled, float scale, int64_t b, int64_t n, uint8_t* out) {
  int8_t* q = reinterpret_cast<int8_t*>(out) + 32 * b;
  float* d = reinterpret_cast<float*>(out + n);
  float* d_sum = d + n / 32;
  float* d_sum16 = d_sum + n / 32;
  int sum = 0, first_half = 0;
  for (int i = 0; i < 32; ++i) {
    // |scaled| <= 127 up to rounding; the clamp also turns NaN into 0 instead of UB.
    const int value = scaled[i] >= 127.0f ? 127 : scaled[i] <= -127.0f ? -127
                      : scaled[i] == scaled[i] ? static_cast<int>(std::nearbyint(scaled[i])) : 0;
    q[i] = static_cast<int8_t>(value);
    sum += value;
    if (i < 16) first_half += value;
  }
  d[b] = scale;
  d_sum[b] = scale * static_cast<float>(sum);
  d_sum16[2 * b] = scale * static_cast<float>(first_half);
  d_sum16[2 * b + 1] = scale * static_cast<float>(sum - first_half);
}

// d = max|x| / 127 and q = round_to_nearest_even(x * (1 / d)): the SIMD quantizer computes the very
// same float operations, so both produce identical bytes.
inline void quantize_activations_q8(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 32; ++b) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(x[32 * b + i]));
    const float scale = amax / 127.0f;
    const float inverse = amax > 0.0f ? 1.0f / scale : 0.0f;
    float scaled[32];
    for (int i = 0; i < 32; ++i) scaled[i] = x[32 * b + i] * inverse;
    store_activation_block_q8(scaled, scale, b, n, out);
  }
}

// The second level of a two-level row: x minus what `hi` (quantize_activations_q8(x)) holds, quantized
// with each block's scale exactly hi's / 256 (a power of two, so exact). The rounding error is at most
// hi's step / 2, i.e. 128 of the finer steps, so the clamp to 127 moves a value by at most one step;
// together the levels carry ~15 bits. The fixed ratio lets kernels add 256 * hi + lo in integers.
inline void quantize_activation_residual_q8(const float* x, const uint8_t* hi, int64_t n, uint8_t* lo) {
  const Q8ActivationRow first = q8_activation_view(hi, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    const float scale = first.d[b] / 256.0f;
    const float inverse = scale > 0.0f ? 256.0f / first.d[b] : 0.0f;
    float scaled[32];
    for (int i = 0; i < 32; ++i)
      scaled[i] = (x[32 * b + i] - first.d[b] * static_cast<float>(first.q[32 * b + i])) * inverse;
    store_activation_block_q8(scaled, scale, b, n, lo);
  }
}

inline void dequantize_activations_q8(const uint8_t* row, int64_t n, float* out) {
  const Q8ActivationRow view = q8_activation_view(row, n);
  for (int64_t i = 0; i < n; ++i) out[i] = view.d[i / 32] * static_cast<float>(view.q[i]);
}

}  // namespace quant
}  // namespace bora

#endif  // BORA_QUANT_Q8_ACTIVATIONS_HPP
