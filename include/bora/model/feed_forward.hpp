// Why this file exists: the feed-forward policies — a dense SwiGLU (Mistral 7B) and a sparse
// mixture of experts whose router sends each token to k of E SwiGLU experts (Mixtral).
#ifndef BORA_MODEL_FEED_FORWARD_HPP
#define BORA_MODEL_FEED_FORWARD_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "bora/base/thread_pool.hpp"
#include "bora/io/model_config.hpp"
#include "bora/model/linear.hpp"
#include "bora/model/weights.hpp"
#include "bora/ops/ops.hpp"

namespace bora {

// One SwiGLU's weights and the rows of its input it runs on (a dense FFN: all of them; an expert:
// the rows routed to it), grouped by sequence as linear() expects.
struct SwiGLUPass {
  const TensorView* w1 = nullptr;
  const TensorView* w2 = nullptr;
  const TensorView* w3 = nullptr;
  const RowGroup* groups = nullptr;
  size_t n_groups = 0;
};

// Buffers a feed-forward call may use, sized by the transformer for its largest chunk.
struct FeedForwardScratch {
  float* gate = nullptr;      // [n_tokens][hidden_dim]
  float* up = nullptr;        // [n_tokens][hidden_dim]
  float* gathered = nullptr;  // [n_tokens][dim]   (MoE: the tokens routed to the experts of a wave)
  float* expert_out = nullptr;  // [n_tokens][dim] (MoE)
  float* router_logits = nullptr;  // [n_tokens][n_experts] (MoE)
  int32_t* routed_tokens = nullptr;  // [n_tokens] (MoE)
  float* routed_weights = nullptr;   // [n_tokens] (MoE)
  int32_t* chosen = nullptr;         // [n_tokens][top_k] (MoE)
  float* chosen_weights = nullptr;   // [n_tokens][top_k] (MoE)
  RowGroup* expert_groups = nullptr;  // [n_tokens] (MoE: the groups of the tokens routed to the experts of a wave)
  SwiGLUPass* expert_passes = nullptr;  // [n_experts] (MoE)
  LinearJob* expert_jobs = nullptr;     // [2 * n_experts] (MoE)
  int64_t rows_capacity = 0;  // rows gate, up, gathered, expert_out and quantized hold (n_batch)
  uint8_t* quantized = nullptr;  // int8 activations buffer for the fast path; null = exact f32 path
  std::vector<int32_t>* expert_trace = nullptr;  // when set, MoE appends layer, position, ids...
  int64_t layer = 0;
  const int64_t* positions = nullptr;  // [n_tokens] each row's position (for the expert trace)
  int max_threads = 0;
};

namespace detail {
// w2(silu(w1 x) * w3 x) for the rows of x, each pass over its own groups of rows, written to the
// same rows of out. The w1 and w3 products of all passes share one parallel loop and their w2
// products another, so several experts cost the threads as many meetings as one. `jobs` holds
// 2 * n_passes.
inline void swiglu(ThreadPool& pool, const FeedForwardScratch& s, const SwiGLUPass* passes, size_t n_passes,
                   const float* x, int64_t n, int64_t hidden, float* out, LinearJob* jobs) {
  if (n_passes == 0) return;
  const int64_t dim = passes[0].w1->row_length();
  const Activations input = quantize_activations(pool, s.max_threads, x, n, dim, s.quantized);
  auto job = [](const TensorView* w, const Activations& a, const SwiGLUPass& p, float* y) {
    LinearJob j;
    j.w = w;
    j.x = a;
    j.groups = p.groups;
    j.n_groups = p.n_groups;
    j.y_base = y;
    return j;
  };
  for (size_t i = 0; i < n_passes; ++i) {
    jobs[2 * i] = job(passes[i].w1, input, passes[i], s.gate);
    jobs[2 * i + 1] = job(passes[i].w3, input, passes[i], s.up);
  }
  linear_many(pool, s.max_threads, jobs, 2 * n_passes);
  pool.parallel_for(n, [&](int64_t begin, int64_t end, int) {
    for (int64_t t = begin; t < end; ++t) ops::silu_mul(s.gate + t * hidden, s.up + t * hidden, hidden);
  }, s.max_threads);
  const Activations hidden_input = quantize_activations(pool, s.max_threads, s.gate, n, hidden, s.quantized);
  for (size_t i = 0; i < n_passes; ++i) jobs[i] = job(passes[i].w2, hidden_input, passes[i], out);
  linear_many(pool, s.max_threads, jobs, n_passes);
}
}  // namespace detail

struct DenseSwiGLU {
  static constexpr bool kSparse = false;
  // Experts whose weights one token reads (none: the dense FFN is read whole).
  static int64_t experts_per_token(const ModelConfig&) { return 0; }

  // out[t] = FFN(x[t]); out is added to the residual by the caller.
  // `groups` split the n rows of x by sequence; each row's result depends on its group alone.
  static void forward(const LayerWeights& w, const ModelConfig& c, const float* x, const RowGroup* groups,
                      size_t n_groups, int64_t n, float* out, const FeedForwardScratch& s, ThreadPool& pool) {
    SwiGLUPass pass;
    pass.w1 = &w.w1;
    pass.w2 = &w.w2;
    pass.w3 = &w.w3;
    pass.groups = groups;
    pass.n_groups = n_groups;
    LinearJob jobs[2];
    detail::swiglu(pool, s, &pass, 1, x, n, c.hidden_dim, out, jobs);
  }
};

// Routing policies for SparseMoE: how many experts each token uses.
struct TopKFromFile {
  static int64_t k(const ModelConfig& c) { return c.n_experts_used; }
};
template <int K>
struct TopK {
  static_assert(K >= 1, "TopK<K>: a token must use at least one expert");
  static int64_t k(const ModelConfig&) { return K; }
};

template <class Routing = TopKFromFile>
struct SparseMoE {
  static constexpr bool kSparse = true;
  static int64_t experts_per_token(const ModelConfig& c) { return Routing::k(c); }

  // Router = top-k of the raw logits, softmax over those k only (Mistral's reference). Tokens
  // are grouped by expert so each expert's weights are read once per step for all the decoding
  // sequences that chose it, and only chosen experts are read at all. Within an expert, tokens stay
  // grouped by sequence, so a token's result does not depend on its batch mates.
  static void forward(const LayerWeights& w, const ModelConfig& c, const float* x, const RowGroup* groups,
                      size_t n_groups, int64_t n, float* out, const FeedForwardScratch& s, ThreadPool& pool) {
    const int64_t n_experts = c.n_experts, k = Routing::k(c), dim = c.dim;
    // The router stays exact: near-ties between experts would flip with int8 activations.
    linear(pool, s.max_threads, w.router, Activations{x, nullptr}, groups, n_groups, s.router_logits);
    for (int64_t t = 0; t < n; ++t) {
      const float* logits = s.router_logits + t * n_experts;
      int32_t* chosen = s.chosen + t * k;
      float* weights = s.chosen_weights + t * k;
      // Selection in descending order; ties keep the lower expert index first.
      for (int64_t r = 0; r < k; ++r) {
        int32_t best = -1;
        for (int32_t e = 0; e < n_experts; ++e) {
          bool taken = false;
          for (int64_t q = 0; q < r; ++q) taken = taken || chosen[q] == e;
          if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        chosen[r] = best;
        weights[r] = logits[best];
      }
      ops::softmax(weights, k);
      if (s.expert_trace != nullptr) {
        s.expert_trace->push_back(static_cast<int32_t>(s.layer));
        s.expert_trace->push_back(static_cast<int32_t>(s.positions[t]));
        for (int64_t r = 0; r < k; ++r) s.expert_trace->push_back(chosen[r]);
      }
      for (int64_t i = 0; i < dim; ++i) out[t * dim + i] = 0.0f;
    }
    // The chosen experts run in waves, one swiglu each, of as many as the buffers' rows_capacity rows
    // hold: decoding steps route k rows per sequence and run every expert in one wave; a prompt chunk
    // of n_batch tokens takes about k. A token's experts add to its output in ascending order.
    int64_t m = 0;  // rows gathered for this wave
    size_t n_passes = 0, n_wave_groups = 0;
    auto run_wave = [&] {
      detail::swiglu(pool, s, s.expert_passes, n_passes, s.gathered, m, c.hidden_dim, s.expert_out, s.expert_jobs);
      for (int64_t i = 0; i < m; ++i)
        ops::axpy(s.routed_weights[i], s.expert_out + i * dim, out + s.routed_tokens[i] * dim, dim);
      m = 0;
      n_passes = n_wave_groups = 0;
    };
    for (int32_t e = 0; e < n_experts; ++e) {
      int64_t routed = 0;
      for (int64_t i = 0; i < n * k; ++i) routed += s.chosen[i] == e ? 1 : 0;
      if (routed == 0) continue;
      if (m + routed > s.rows_capacity) run_wave();
      const size_t first_group = n_wave_groups;
      for (size_t g = 0; g < n_groups; ++g) {
        const int64_t group_start = m;
        for (int64_t t = groups[g].first_row; t < groups[g].first_row + groups[g].n_rows; ++t) {
          for (int64_t r = 0; r < k; ++r) {
            if (s.chosen[t * k + r] != e) continue;
            s.routed_tokens[m] = static_cast<int32_t>(t);
            s.routed_weights[m] = s.chosen_weights[t * k + r];
            std::copy(x + t * dim, x + (t + 1) * dim, s.gathered + m * dim);
            ++m;
          }
        }
        if (m > group_start) s.expert_groups[n_wave_groups++] = RowGroup{group_start, m - group_start, nullptr};
      }
      SwiGLUPass& pass = s.expert_passes[n_passes++];
      pass.w1 = &w.expert_w1[e];
      pass.w2 = &w.expert_w2[e];
      pass.w3 = &w.expert_w3[e];
      pass.groups = s.expert_groups + first_group;
      pass.n_groups = n_wave_groups - first_group;
    }
    if (n_passes > 0) run_wave();
  }
};

}  // namespace bora

#endif  // BORA_MODEL_FEED_FORWARD_HPP
