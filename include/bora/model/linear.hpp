// Why this file exists: every weight product in the forward pass goes through one function that
// splits output rows across the thread pool, so threading and kernel choice live in one place.
#ifndef BORA_MODEL_LINEAR_HPP
#define BORA_MODEL_LINEAR_HPP

#include <cstdint>

#include "bora/base/thread_pool.hpp"
#include "bora/io/tensor_view.hpp"
#include "bora/ops/ops.hpp"

namespace bora {

// y[t][r] = dot(w.row(r), x[t]) for n_tokens rows of x (row length w.row_length()), y rows of
// w.rows() values. Rows are split across threads; each row is computed by one thread, in the same
// order whatever the thread count, so results do not depend on it.
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const float* x, int64_t n_tokens,
                   float* y) {
  const int64_t rows = w.rows();
  // Small chunks of rows per task keep the threads balanced without splitting blocks of work.
  pool.parallel_for(rows, [&](int64_t begin, int64_t end, int) {
    if (n_tokens == 1) ops::matvec_f32(w, x, y, begin, end);
    else ops::matmul_f32(w, x, n_tokens, y, rows, begin, end);
  }, max_threads);
}

}  // namespace bora

#endif  // BORA_MODEL_LINEAR_HPP
