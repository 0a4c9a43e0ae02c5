// Why this file exists: every weight product in the forward pass goes through one function that
// splits output rows across the thread pool and picks the kernel (exact f32 activations, or the
// int8-activation fast path for quantized weights), so threading and kernel choice live in one place.
#ifndef BORA_MODEL_LINEAR_HPP
#define BORA_MODEL_LINEAR_HPP

#include <cstdint>

#include "bora/base/thread_pool.hpp"
#include "bora/io/tensor_view.hpp"
#include "bora/ops/ops.hpp"
#include "bora/quant/q8_activations.hpp"

namespace bora {

// Rows of activations, with their int8 form when the fast path is on (null otherwise).
struct Activations {
  const float* f32 = nullptr;     // [n_tokens][width]
  const uint8_t* int8 = nullptr;  // [n_tokens][ops::q8_row_bytes(width)], or null
  // Optional second level: the int8 form of what the first level rounded away (x - int8), so that
  // int8 + residual carries ~14 bits. For several tokens linear() then needs a scratch of
  // n_tokens * rows floats (one token needs none).
  const uint8_t* int8_residual = nullptr;
};

inline bool is_block_quantized(WeightType type) {
  return type != WeightType::kF32 && type != WeightType::kF16 && type != WeightType::kBF16;
}

// Quantizes n rows of `width` floats into `out` (null when width is not a whole number of blocks:
// then only the exact path applies).
inline Activations quantize_activations(ThreadPool& pool, int max_threads, const float* x, int64_t n, int64_t width,
                                        uint8_t* out) {
  Activations a;
  a.f32 = x;
  if (out == nullptr || width % 32 != 0) return a;
  const int64_t row_bytes = ops::q8_row_bytes(width);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) ops::quantize_row_q8(x + t * width, width, out + t * row_bytes);
  }, max_threads);
  a.int8 = out;
  return a;
}

// Two int8 levels: `hi` as quantize_activations, and `lo` the rounding error at 1/256 of hi's scale
// (ops::quantize_residual_q8). Near-exact activations for a little more integer work.
inline Activations quantize_activations_two_level(ThreadPool& pool, int max_threads, const float* x, int64_t n,
                                                  int64_t width, uint8_t* hi, uint8_t* lo) {
  Activations a = quantize_activations(pool, max_threads, x, n, width, hi);
  if (a.int8 == nullptr || lo == nullptr) return a;
  const int64_t row_bytes = ops::q8_row_bytes(width);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t)
      ops::quantize_residual_q8(x + t * width, hi + t * row_bytes, width, lo + t * row_bytes);
  }, max_threads);
  a.int8_residual = lo;
  return a;
}

// y[t][r] = dot(w.row(r), x[t]) for n_tokens rows of x, y rows of w.rows() values. Rows are split
// across threads; each row is computed by one thread in the same order whatever the thread count,
// so results do not depend on it. Float weights always take the exact path.
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const Activations& x, int64_t n_tokens,
                   float* y, float* residual_scratch = nullptr) {
  const int64_t rows = w.rows();
  const bool fast = x.int8 != nullptr && is_block_quantized(w.type);
  const bool two_level = fast && x.int8_residual != nullptr && residual_scratch != nullptr;
  pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
    if (fast) {
      if (n_tokens == 1 && two_level) {
        ops::matvec_q8_two_level(w, x.int8, x.int8_residual, y, begin, end);
      } else if (n_tokens == 1) {
        ops::matvec_q8(w, x.int8, y, begin, end);
      } else {
        ops::matmul_q8(w, x.int8, n_tokens, y, rows, begin, end);
        if (two_level) {
          // Prefill is compute-bound, so this second pass costs compute rather than bandwidth.
          ops::matmul_q8(w, x.int8_residual, n_tokens, residual_scratch, rows, begin, end);
          for (int64_t t = 0; t < n_tokens; ++t)
            for (int64_t r = begin; r < end; ++r) y[t * rows + r] += residual_scratch[t * rows + r];
        }
      }
    } else {
      if (n_tokens == 1) ops::matvec_f32(w, x.f32, y, begin, end);
      else ops::matmul_f32(w, x.f32, n_tokens, y, rows, begin, end);
    }
  }, max_threads);
}

}  // namespace bora

#endif  // BORA_MODEL_LINEAR_HPP
