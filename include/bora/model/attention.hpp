// Why this file exists: the attention policy — grouped-query attention over the rolling KV cache,
// with the mask rule (sliding window or plain causal) as a compile-time choice.
#ifndef BORA_MODEL_ATTENTION_HPP
#define BORA_MODEL_ATTENTION_HPP

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

// Working memory for attention: per_thread floats for each thread, and partial_floats_per_chunk
// floats for each chunk of the batch (the partial results of a decoding token's key partitions).
struct AttentionScratch {
  float* data = nullptr;
  int64_t per_thread = 0;
  int max_threads = 0;
  float* partials = nullptr;
  int64_t partial_floats_per_chunk = 0;
};

template <class Mask>
struct GroupedQueryAttention {
  static_assert(std::is_same<Mask, SlidingWindow>::value || std::is_same<Mask, CausalAttention>::value,
                "GroupedQueryAttention<Mask>: Mask must be bora::SlidingWindow or bora::CausalAttention");
  using mask = Mask;

  // A prompt chunk's tokens go through attention this many at a time: each block of keys is read
  // once for all their query rows.
  static constexpr int64_t kTileTokens = 16;
  // A decoding token's keys are split at multiples of this many positions, so that the threads share
  // one long context's keys; the partitions are fixed by position, never by the thread count.
  static constexpr int64_t kPartitionKeys = 512;

  static int64_t scratch_floats_per_thread(int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
    return 2 * ops::kAttentionBlockKeys * head_dim + 2 * kTileTokens * (n_heads / n_kv_heads);
  }
  static int64_t partial_floats_per_chunk(int64_t n_heads, int64_t head_dim, int64_t max_keys) {
    return n_heads * (max_keys / kPartitionKeys + 2) * (head_dim + 2);
  }

  // Work items: (kv head, tile of kTileTokens tokens) of a prompt chunk, (kv head, partition of
  // keys) of a decoding token; the kv head's keys and values are read once for all the query heads
  // that share it. Items of every chunk of the batch share one parallel loop, and each is computed
  // the same way whatever else is in the batch and whatever thread runs it. caches[i] belongs to
  // chunks[i]; scratch.partials has room for `count` chunks.
  template <class Cache>
  static void forward(const AttentionChunk* chunks, const Cache* const* caches, size_t count,
                      const AttentionScratch& scratch, ThreadPool& pool) {
    int64_t total = 0;
    for (size_t i = 0; i < count; ++i) total += items_of(chunks[i]);
    pool.parallel_for(total, [&](int64_t begin, int64_t end, int thread) {
      size_t chunk_index = 0;
      int64_t chunk_start = 0;  // first item of chunks[chunk_index]
      for (int64_t item = begin; item < end; ++item) {
        while (item >= chunk_start + items_of(chunks[chunk_index])) chunk_start += items_of(chunks[chunk_index++]);
        const AttentionChunk& c = chunks[chunk_index];
        const int64_t local = item - chunk_start;
        float* thread_scratch = scratch.data + thread * scratch.per_thread;
        if (c.n_tokens == 1) {
          decode_partition(c, *caches[chunk_index], local % c.n_kv_heads, local / c.n_kv_heads,
                           scratch.partials + static_cast<int64_t>(chunk_index) * scratch.partial_floats_per_chunk);
        } else {
          prompt_tile(c, *caches[chunk_index], local % c.n_kv_heads, local / c.n_kv_heads, thread_scratch);
        }
      }
    }, scratch.max_threads);
    // Each decoding token's partitions are combined in position order.
    int64_t decoding = 0;
    for (size_t i = 0; i < count; ++i) decoding += chunks[i].n_tokens == 1 ? chunks[i].n_heads : 0;
    if (decoding == 0) return;
    pool.parallel_for(decoding, [&](int64_t begin, int64_t end, int) {
      size_t chunk_index = 0;
      int64_t chunk_start = 0;
      for (int64_t item = begin; item < end; ++item) {
        const auto heads_of = [&](size_t i) { return chunks[i].n_tokens == 1 ? chunks[i].n_heads : int64_t{0}; };
        while (item >= chunk_start + heads_of(chunk_index)) chunk_start += heads_of(chunk_index++);
        combine_partitions(chunks[chunk_index], item - chunk_start,
                           scratch.partials + static_cast<int64_t>(chunk_index) * scratch.partial_floats_per_chunk);
      }
    }, scratch.max_threads);
  }

 private:
  // The keys position `position` sees: [lowest, position].
  static int64_t lowest_key(const AttentionChunk& c, int64_t position) {
    return c.window > 0 && position - c.window + 1 > 0 ? position - c.window + 1 : 0;
  }
  static int64_t partitions_of(const AttentionChunk& c) {
    const int64_t position = c.first_position;
    return position / kPartitionKeys - lowest_key(c, position) / kPartitionKeys + 1;
  }
  static int64_t items_of(const AttentionChunk& c) {
    const int64_t units = c.n_tokens == 1 ? partitions_of(c) : (c.n_tokens + kTileTokens - 1) / kTileTokens;
    return units * c.n_kv_heads;
  }
  static float scale_of(const AttentionChunk& c) { return 1.0f / std::sqrt(static_cast<float>(c.head_dim)); }

  // Folds keys [first_key, end_key) into the rows' state, in blocks that end at multiples of
  // kAttentionBlockKeys, where the cache wraps, and where the chunk's own (not yet stored) keys begin,
  // so each block's rows lie side by side. rows.key_begin/key_end hold each token's own range in
  // positions on entry (inclusive lowest, exclusive end) and are rewritten per block.
  template <class Cache>
  static void attend(const AttentionChunk& c, const Cache& cache, int64_t g, int64_t first_key, int64_t end_key,
                     ops::AttentionRows rows, const int64_t* token_lowest, const int64_t* token_end, int32_t* begin,
                     int32_t* end, float* widen) {
    const int64_t kv_dim = c.n_kv_heads * c.head_dim;
    rows.key_begin = begin;
    rows.key_end = end;
    for (int64_t position = first_key; position < end_key;) {
      int64_t block_end = std::min(end_key, (position / ops::kAttentionBlockKeys + 1) * ops::kAttentionBlockKeys);
      ops::KvRows keys, values;
      if (position < c.first_position) {
        block_end = std::min({block_end, c.first_position, position + cache.contiguous_from(position)});
        keys = cache.key_rows(c.layer, position, g);
        values = cache.value_rows(c.layer, position, g);
      } else {
        const int64_t row = (position - c.first_position) * kv_dim + g * c.head_dim;
        const int64_t stride = kv_dim * static_cast<int64_t>(sizeof(float));
        keys = ops::KvRows{c.k + row, stride, ops::KvElement::kF32};
        values = ops::KvRows{c.v + row, stride, ops::KvElement::kF32};
      }
      for (int64_t t = 0; t < rows.n_tokens; ++t) {
        const int64_t lo = std::max(token_lowest[t], position), hi = std::min(token_end[t], block_end);
        begin[t] = static_cast<int32_t>(lo - position);
        end[t] = static_cast<int32_t>(hi > lo ? hi - position : lo - position);
      }
      ops::attention_block(rows, keys, values, block_end - position, widen);
      position = block_end;
    }
  }

  // Tokens [tile * kTileTokens, ...) of a prompt chunk, all query heads of kv head g: their outputs
  // are final when this returns.
  template <class Cache>
  static void prompt_tile(const AttentionChunk& c, const Cache& cache, int64_t g, int64_t tile, float* scratch) {
    const int64_t group = c.n_heads / c.n_kv_heads, q_dim = c.n_heads * c.head_dim;
    const int64_t first_token = tile * kTileTokens, n = std::min(kTileTokens, c.n_tokens - first_token);
    float* widen = scratch;
    float* row_max = widen + 2 * ops::kAttentionBlockKeys * c.head_dim;
    float* row_sum = row_max + kTileTokens * group;
    int64_t token_lowest[kTileTokens], token_end[kTileTokens];
    int32_t begin[kTileTokens], end[kTileTokens];
    for (int64_t t = 0; t < n; ++t) {
      const int64_t position = c.first_position + first_token + t;
      token_lowest[t] = lowest_key(c, position);
      token_end[t] = position + 1;
    }
    for (int64_t r = 0; r < n * group; ++r) {
      row_max[r] = -std::numeric_limits<float>::infinity();
      row_sum[r] = 0.0f;
    }
    ops::AttentionRows rows;
    rows.q = c.q + first_token * q_dim + g * group * c.head_dim;
    rows.q_stride = q_dim;
    rows.out = c.out + first_token * q_dim + g * group * c.head_dim;
    rows.out_stride = q_dim;
    rows.row_max = row_max;
    rows.row_sum = row_sum;
    rows.n_tokens = n;
    rows.group = group;
    rows.head_dim = c.head_dim;
    rows.scale = scale_of(c);
    attend(c, cache, g, token_lowest[0], token_end[n - 1], rows, token_lowest, token_end, begin, end, widen);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < group; ++h) {
        finish_row(rows.out + t * q_dim + h * c.head_dim, row_sum[t * group + h], c.head_dim);
      }
    }
  }

  static void finish_row(float* out, float sum, int64_t head_dim) {
    if (sum > 0.0f) {
      ops::scale(out, 1.0f / sum, head_dim);
    } else {
      for (int64_t i = 0; i < head_dim; ++i) out[i] = 0.0f;
    }
  }

  // Where partition p of kv head g of a decoding token keeps its rows' state: group outputs of
  // head_dim, then their maxima and sums.
  static float* partition_state(const AttentionChunk& c, float* partials, int64_t g, int64_t p) {
    const int64_t group = c.n_heads / c.n_kv_heads;
    return partials + (p * c.n_kv_heads + g) * group * (c.head_dim + 2);
  }

  template <class Cache>
  static void decode_partition(const AttentionChunk& c, const Cache& cache, int64_t g, int64_t p, float* partials) {
    const int64_t group = c.n_heads / c.n_kv_heads;
    const int64_t position = c.first_position, lowest = lowest_key(c, position);
    const int64_t first_key = std::max(lowest, (lowest / kPartitionKeys + p) * kPartitionKeys);
    const int64_t end_key = std::min(position + 1, (lowest / kPartitionKeys + p + 1) * kPartitionKeys);
    float* state = partition_state(c, partials, g, p);
    float* row_max = state + group * c.head_dim;
    float* row_sum = row_max + group;
    for (int64_t h = 0; h < group; ++h) {
      row_max[h] = -std::numeric_limits<float>::infinity();
      row_sum[h] = 0.0f;
    }
    ops::AttentionRows rows;
    rows.q = c.q + g * group * c.head_dim;
    rows.q_stride = c.n_heads * c.head_dim;
    rows.out = state;
    rows.out_stride = group * c.head_dim;
    rows.row_max = row_max;
    rows.row_sum = row_sum;
    rows.n_tokens = 1;
    rows.group = group;
    rows.head_dim = c.head_dim;
    rows.scale = scale_of(c);
    const int64_t token_lowest[1] = {first_key}, token_end[1] = {end_key};
    int32_t begin[1], end[1];
    attend(c, cache, g, first_key, end_key, rows, token_lowest, token_end, begin, end, nullptr);
  }

  // Query head `head` of a decoding token: out = sum over partitions of exp(max_p - max) * out_p,
  // divided by the same sum of their weight sums.
  static void combine_partitions(const AttentionChunk& c, int64_t head, float* partials) {
    const int64_t group = c.n_heads / c.n_kv_heads, g = head / group, h = head % group;
    const int64_t n_parts = partitions_of(c);
    float largest = -std::numeric_limits<float>::infinity();
    for (int64_t p = 0; p < n_parts; ++p) {
      const float part_max = partition_state(c, partials, g, p)[group * c.head_dim + h];
      largest = part_max > largest ? part_max : largest;  // a NaN maximum is never larger
    }
    float* out = c.out + head * c.head_dim;
    for (int64_t i = 0; i < c.head_dim; ++i) out[i] = 0.0f;
    float sum = 0.0f;
    if (largest > -std::numeric_limits<float>::infinity()) {
      for (int64_t p = 0; p < n_parts; ++p) {
        const float* state = partition_state(c, partials, g, p);
        const float part_max = state[group * c.head_dim + h];
        if (!(part_max > -std::numeric_limits<float>::infinity())) continue;
        const float weight = std::exp(part_max - largest);
        sum += weight * state[group * c.head_dim + group + h];
        ops::axpy(weight, state + h * c.head_dim, out, c.head_dim);
      }
    }
    finish_row(out, sum, c.head_dim);
  }
};

}  // namespace bora

#endif  // BORA_MODEL_ATTENTION_HPP
