// Why this file exists: every weight product in the forward pass goes through one function that
// splits output rows across the thread pool and picks the kernel (exact f32 activations, or the
// int8-activation fast path for quantized weights), so threading and kernel choice live in one place.
#ifndef BORA_MODEL_LINEAR_HPP
#define BORA_MODEL_LINEAR_HPP

#include <algorithm>
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

// A run of consecutive activation rows that belong to one sequence of a batch, and where its
// products go: row t of the group writes y[t * w.rows() + r] (y null = the caller's base + first_row rows).
struct RowGroup {
  int64_t first_row = 0;
  int64_t n_rows = 0;
  float* y = nullptr;
};

namespace detail {
// Weight bytes a thread keeps in cache while every single-token row of a batch passes over them.
constexpr uint64_t kSharedTileBytes = 256 * 1024;
}  // namespace detail

// One weight product y = w x over a batch of row groups (see linear() for the rules).
struct LinearJob {
  const TensorView* w = nullptr;
  Activations x;
  const RowGroup* groups = nullptr;
  size_t n_groups = 0;
  float* y_base = nullptr;
  // Room for the second level's products of a prompt on a matrix not in row tiles (tokens x rows
  // floats), so the batched kernel can take that level in a pass of its own; with null those prompts go
  // through the decoding kernel. Row-tiled matrices never use it.
  float* residual_scratch = nullptr;
};

namespace detail {
// Output rows [begin, end) of one job, on the calling thread.
inline void linear_rows(const LinearJob& job, int64_t begin, int64_t end) {
  const TensorView& w = *job.w;
  const Activations& x = job.x;
  const RowGroup* groups = job.groups;
  const size_t n_groups = job.n_groups;
  const int64_t rows = w.rows(), width = w.row_length();
  const bool fast = x.int8 != nullptr && is_block_quantized(w.type);
  const bool two_level = fast && x.int8_residual != nullptr;
  const int64_t q8_bytes = fast ? ops::q8_row_bytes(width) : 0;
  const uint64_t row_bytes = w.row_bytes() > 0 ? w.row_bytes() : 1;
  const int64_t tile_rows = static_cast<int64_t>(std::max<uint64_t>(1, kSharedTileBytes / row_bytes));
  auto output_of = [&](const RowGroup& g) { return g.y != nullptr ? g.y : job.y_base + g.first_row * rows; };
  // Single-token groups, a chunk at a time over tiles of weight rows that stay in cache.
  constexpr size_t kChunk = 16;
  const uint8_t* hi[kChunk];
  const uint8_t* lo[kChunk];
  const float* exact[kChunk];
  float* out[kChunk];
  size_t next = 0;
  while (next < n_groups) {
    size_t count = 0;
    for (; next < n_groups && count < kChunk; ++next) {
      const RowGroup& g = groups[next];
      if (g.n_rows != 1) continue;
      out[count] = output_of(g);
      if (fast) {
        hi[count] = x.int8 + g.first_row * q8_bytes;
        lo[count] = two_level ? x.int8_residual + g.first_row * q8_bytes : nullptr;
      } else {
        exact[count] = x.f32 + g.first_row * width;
      }
      ++count;
    }
    if (count == 0) break;
    if (fast) {
      // The kernels tile the rows themselves, so each token's activations are prepared once.
      ops::matvec_q8_tokens(w, hi, two_level ? lo : nullptr, static_cast<int64_t>(count), out, begin, end);
      continue;
    }
    for (int64_t tile = begin; tile < end; tile += tile_rows) {
      const int64_t tile_end = std::min(end, tile + tile_rows);
      for (size_t t = 0; t < count; ++t) ops::matvec_f32(w, exact[t], out[t], tile, tile_end);
    }
  }
  for (size_t i = 0; i < n_groups; ++i) {
    const RowGroup& g = groups[i];
    if (g.n_rows < 2) continue;
    float* out_rows = output_of(g);
    if (two_level && (w.row_tiles || job.residual_scratch == nullptr)) {
      // One sweep of the tiles for both levels: the same bits as each token decoding alone (untiled
      // rows go through the decoding kernel too when no scratch holds a second pass).
      ops::matmul_q8_two_level(w, x.int8 + g.first_row * q8_bytes, x.int8_residual + g.first_row * q8_bytes,
                               g.n_rows, out_rows, rows, begin, end);
    } else if (fast) {
      ops::matmul_q8(w, x.int8 + g.first_row * q8_bytes, g.n_rows, out_rows, rows, begin, end);
      if (two_level) {
        // Prefill is compute-bound, so this second pass costs compute rather than bandwidth.
        float* extra = job.residual_scratch + g.first_row * rows;
        ops::matmul_q8(w, x.int8_residual + g.first_row * q8_bytes, g.n_rows, extra, rows, begin, end);
        for (int64_t t = 0; t < g.n_rows; ++t)
          for (int64_t r = begin; r < end; ++r) out_rows[t * rows + r] += extra[t * rows + r];
      }
    } else {
      ops::matmul_f32(w, x.f32 + g.first_row * width, g.n_rows, out_rows, rows, begin, end);
    }
  }
}
}  // namespace detail

// Several products in one parallel loop: their output rows are split across the threads as one
// range, so the threads meet once for all of them (a mixture of experts' step runs the w1 and w3 of
// every chosen expert this way) and each streams its share of the weights without waiting between
// matrices. Every row is computed as linear() computes it, whichever thread takes it.
inline void linear_many(ThreadPool& pool, int max_threads, const LinearJob* jobs, size_t n_jobs) {
  int64_t total = 0;
  for (size_t j = 0; j < n_jobs; ++j) total += jobs[j].w->rows();
  pool.parallel_for(total, [&](int64_t begin, int64_t end, int) {
    int64_t first_row = 0;  // of job j within the joint range
    for (size_t j = 0; j < n_jobs && first_row < end; ++j) {
      const int64_t rows = jobs[j].w->rows();
      const int64_t b = std::max<int64_t>(begin - first_row, 0), e = std::min<int64_t>(end - first_row, rows);
      if (b < e) detail::linear_rows(jobs[j], b, e);
      first_row += rows;
    }
  }, max_threads);
}

// y = w x for a batch of row groups. Batch invariance rests on one rule: a row's products depend on
// its group alone. A group of one row (a decoding sequence) is always computed as the one-token kernel
// computes it, whatever else is in the batch (ops::matvec_q8_tokens): those rows meet tiles of weight
// rows that stay in cache, so the weights are read from memory once per step for all of them. A longer group (a chunk of a prompt)
// goes through the batched kernel by itself, so it too is computed the same way alone or batched.
// Rows are split across threads and each is computed by one thread the same way whatever the
// thread count. Float weights always take the exact path.
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const Activations& x,
                   const RowGroup* groups, size_t n_groups, float* y_base, float* residual_scratch = nullptr) {
  LinearJob job;
  job.w = &w;
  job.x = x;
  job.groups = groups;
  job.n_groups = n_groups;
  job.y_base = y_base;
  job.residual_scratch = residual_scratch;
  linear_many(pool, max_threads, &job, 1);
}

// The same for n_tokens rows of one sequence: y[t][r] = dot(w.row(r), x[t]).
inline void linear(ThreadPool& pool, int max_threads, const TensorView& w, const Activations& x, int64_t n_tokens,
                   float* y, float* residual_scratch = nullptr) {
  const RowGroup whole{0, n_tokens, y};
  linear(pool, max_threads, w, x, &whole, 1, y, residual_scratch);
}

}  // namespace bora

#endif  // BORA_MODEL_LINEAR_HPP
