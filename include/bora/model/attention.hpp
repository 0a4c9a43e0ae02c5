// Why this file exists: the attention policy — grouped-query attention over the rolling KV cache,
// with the mask rule (sliding window or plain causal) as a compile-time choice.
#ifndef BORA_MODEL_ATTENTION_HPP
#define BORA_MODEL_ATTENTION_HPP

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "bora/base/thread_pool.hpp"
#include "bora/ops/ops.hpp"

namespace bora {

// Mask policies. SlidingWindow honours the window the file declares (Mistral 7B v0.1), using the
// W-key rule: query i sees keys i-W+1 .. i, as the reference's rolling-cache decode, xformers and
// HF do. CausalAttention ignores any window (Mixtral, Mistral v0.2+). A runtime setting in
// ContextParams can still override or turn off the window of a SlidingWindow model.
struct SlidingWindow {
  static constexpr bool kUsesFileWindow = true;
};
struct CausalAttention {
  static constexpr bool kUsesFileWindow = false;
};

// What attention sees of one sequence in a batch: a chunk of n tokens at positions first_position..,
// their roped queries and keys and their values; earlier positions are in the sequence's cache.
struct AttentionChunk {
  int64_t layer = 0;
  int64_t first_position = 0;
  int64_t n_tokens = 0;
  int64_t n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t window = 0;          // 0 = none
  const float* q = nullptr;    // [n_tokens][n_heads * head_dim]
  const float* k = nullptr;    // [n_tokens][n_kv_heads * head_dim]
  const float* v = nullptr;    // [n_tokens][n_kv_heads * head_dim]
  float* out = nullptr;        // [n_tokens][n_heads * head_dim]
};

// Per-thread working memory for attention: scratch_floats_per_thread() floats for each thread.
struct AttentionScratch {
  float* data = nullptr;
  int64_t per_thread = 0;
  int max_threads = 0;
};

template <class Mask>
struct GroupedQueryAttention {
  static_assert(std::is_same<Mask, SlidingWindow>::value || std::is_same<Mask, CausalAttention>::value,
                "GroupedQueryAttention<Mask>: Mask must be bora::SlidingWindow or bora::CausalAttention");
  using mask = Mask;

  // Scratch one thread needs: scores for every head of a group over the longest key range, plus
  // one widened key and value.
  static int64_t scratch_floats_per_thread(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                           int64_t max_keys) {
    return (n_heads / n_kv_heads) * max_keys + 2 * head_dim;
  }

  // Each work item is (token, kv head) of one chunk: the kv head's keys and values are read once for
  // all the query heads that share it. Items of every chunk of the batch share one parallel loop;
  // each is computed the same way whatever else is in the batch. caches[i] belongs to chunks[i].
  template <class Cache>
  static void forward(const AttentionChunk* chunks, const Cache* const* caches, size_t count,
                      const AttentionScratch& scratch, ThreadPool& pool) {
    int64_t total = 0;
    for (size_t i = 0; i < count; ++i) total += chunks[i].n_tokens * chunks[i].n_kv_heads;
    pool.parallel_for(total, [&](int64_t begin, int64_t end, int thread) {
      size_t chunk_index = 0;
      int64_t chunk_start = 0;  // first item of chunks[chunk_index]
      for (int64_t item = begin; item < end; ++item) {
        while (item >= chunk_start + chunks[chunk_index].n_tokens * chunks[chunk_index].n_kv_heads) {
          chunk_start += chunks[chunk_index].n_tokens * chunks[chunk_index].n_kv_heads;
          ++chunk_index;
        }
        const AttentionChunk& c = chunks[chunk_index];
        const int64_t local = item - chunk_start;
        one_token_kv_head(c, *caches[chunk_index], local / c.n_kv_heads, local % c.n_kv_heads,
                          scratch.data + thread * scratch.per_thread, scratch.per_thread);
      }
    }, scratch.max_threads);
  }

 private:
  template <class Cache>
  static void one_token_kv_head(const AttentionChunk& c, const Cache& cache, int64_t t, int64_t g, float* scores,
                                int64_t scratch_floats) {
    const int64_t group = c.n_heads / c.n_kv_heads;
    const int64_t q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    float* key_buffer = scores + (scratch_floats - 2 * c.head_dim);
    float* value_buffer = key_buffer + c.head_dim;
    const int64_t position = c.first_position + t;
    const int64_t lowest = c.window > 0 && position - c.window + 1 > 0 ? position - c.window + 1 : 0;
    const int64_t n_keys = position - lowest + 1;
    // Keys and values before the chunk come from the cache (not yet overwritten by this chunk);
    // those of the chunk itself come from its fresh k/v rows.
    const auto key_or_value = [&](int64_t key_position, bool value) -> const float* {
      if (key_position >= c.first_position)
        return (value ? c.v : c.k) + (key_position - c.first_position) * kv_dim + g * c.head_dim;
      return value ? cache.value(c.layer, key_position, g * c.head_dim, c.head_dim, value_buffer)
                   : cache.key(c.layer, key_position, g * c.head_dim, c.head_dim, key_buffer);
    };
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* key = key_or_value(lowest + j, false);
      for (int64_t h = 0; h < group; ++h) {
        const float* query = c.q + t * q_dim + (g * group + h) * c.head_dim;
        scores[h * n_keys + j] = ops::dot(query, key, c.head_dim) * scale;
      }
    }
    for (int64_t h = 0; h < group; ++h) {
      ops::softmax(scores + h * n_keys, n_keys);
      float* out = c.out + t * q_dim + (g * group + h) * c.head_dim;
      for (int64_t i = 0; i < c.head_dim; ++i) out[i] = 0.0f;
    }
    for (int64_t j = 0; j < n_keys; ++j) {
      const float* value = key_or_value(lowest + j, true);
      for (int64_t h = 0; h < group; ++h) {
        float* out = c.out + t * q_dim + (g * group + h) * c.head_dim;
        ops::axpy(scores[h * n_keys + j], value, out, c.head_dim);
      }
    }
  }
};

}  // namespace bora

#endif  // BORA_MODEL_ATTENTION_HPP
