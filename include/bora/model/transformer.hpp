// Why this file exists: the model itself. Transformer<Attention, KvCache, FeedForward> composes the
// policies into Mistral's block (RMSNorm -> attention -> residual -> RMSNorm -> FFN -> residual);
// Model is the type-erased face that sessions and tools hold, so they need not be templates.
#ifndef BORA_MODEL_TRANSFORMER_HPP
#define BORA_MODEL_TRANSFORMER_HPP

#include <algorithm>
#include <cstring>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bora/base/bytes.hpp"
#include "bora/base/expected.hpp"
#include "bora/base/page_aligned.hpp"
#include "bora/base/thread_pool.hpp"
#include "bora/io/model_config.hpp"
#include "bora/io/model_files.hpp"
#include "bora/model/attention.hpp"
#include "bora/model/context.hpp"
#include "bora/model/feed_forward.hpp"
#include "bora/model/kv_cache.hpp"
#include "bora/model/linear.hpp"
#include "bora/model/weights.hpp"
#include "bora/ops/ops.hpp"
#include "bora/quant/dequantize.hpp"

namespace bora {

// The KV cache element load_any() composes: f16 (the default), f32 (the exact path's), or q8_0
// (half the bytes of f16 for long contexts).
enum class KvCacheType { kF16, kF32, kQ8_0 };

// How a model is opened (llama.h users know these words).
struct LoadParams {
  // Called with a fraction in [0, 1] while mapping and validating; return false to cancel.
  bool (*progress_callback)(float progress, void* user_data) = nullptr;
  void* progress_user_data = nullptr;
  // load_any() picks the KV cache policy from this (load<Preset>() uses the preset's).
  KvCacheType kv_cache_type = KvCacheType::kF16;
  // Map the weight files instead of reading them into memory: opens instantly and shares the page
  // cache, but decoding can be several times slower where mapped pages are slow (see FileAccess).
  bool use_mmap = false;
};

// What every composition offers, so sessions and tools need not be templates. Several contexts (and
// threads) may use one model at once: the model is read-only after loading.
class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const ModelFiles& files() const = 0;
  virtual const char* preset_name() const = 0;
  // Bytes of weights one generated token reads: every matrix it multiplies (of a mixture of experts,
  // the share of the experts the router picks per token), not the embedding table it takes one row
  // from. Decoding reads them all once per token, so memory bandwidth / this is the fastest decoding
  // the machine allows (examples/bench --bandwidth measures both).
  virtual uint64_t weight_bytes_per_token() const = 0;
  // Bytes of weights one forward step reads when, in every layer, its tokens route to `experts`
  // distinct experts (an average over layers may be fractional; a dense model ignores it). Sequences
  // decoding together share a step's reads, but their tokens route to more experts than one token's.
  virtual uint64_t weight_bytes_per_step(double experts) const = 0;
  // A sequence's KV cache, and the buffers and threads of forward steps (see model/context.hpp).
  virtual Expected<std::unique_ptr<KvSequence>> create_sequence(const SequenceParams& params) const = 0;
  virtual Expected<std::unique_ptr<Workspace>> create_workspace(const WorkspaceParams& params) const = 0;
  // One forward step over several sequences at once: segment i consumes its tokens at positions
  // segments[i].sequence->n_past() ... Together at most workspace.n_batch() tokens, each sequence at
  // most once. A sequence's logits do not depend on the other segments nor on the thread count.
  // Nothing is computed when a segment is invalid (the error names it) or any sequence is full.
  virtual Status forward_batch(Workspace& workspace, const BatchSegment* segments, size_t count) const = 0;

  // A sequence with a workspace of its own.
  Expected<std::unique_ptr<ModelContext>> create_context(const ContextParams& params) const {
    auto sequence = create_sequence(params);
    if (!sequence) return sequence.error();
    auto workspace = create_workspace(params);
    if (!workspace) return workspace.error();
    std::unique_ptr<ModelContext> context(new (std::nothrow)
                                              ModelContext(std::move(*sequence), std::move(*workspace), params));
    if (!context) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    return context;
  }
  // Consumes `n` tokens at positions ctx.n_past() ..., n_batch at a time; writes logits for every
  // token ([n][vocab]) when all_logits, else for the last one only ([vocab]). logits may be null.
  Status forward(ModelContext& ctx, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const {
    if (n < 0) return make_error(ErrorCode::kInvalidArgument, "forward: %lld tokens", (long long)n);
    if (!ctx.sequence().has_room_for(n)) {
      return make_error(ErrorCode::kContextFull, "context full: %lld positions used, %lld more requested, room for %lld",
                        (long long)ctx.n_past(), (long long)n, (long long)ctx.kv_capacity());
    }
    const int64_t vocab = config().vocab_size, batch = ctx.workspace().n_batch();
    for (int64_t start = 0; start < n; start += batch) {
      BatchSegment segment;
      segment.sequence = &ctx.sequence();
      segment.tokens = tokens + start;
      segment.n_tokens = std::min(batch, n - start);
      segment.all_logits = all_logits;
      if (logits != nullptr && all_logits) segment.logits = logits + start * vocab;
      if (logits != nullptr && !all_logits && start + segment.n_tokens == n) segment.logits = logits;
      BORA_RETURN_IF_ERROR(forward_batch(ctx.workspace(), &segment, 1));
    }
    return Status();
  }
};

namespace detail {
// Detection of the policy kinds, so a wrong composition fails with a sentence, not a template trace.
template <class T, class = void>
struct is_attention_policy : std::false_type {};
template <class T>
struct is_attention_policy<T, std::void_t<typename T::mask>> : std::true_type {};
template <class T, class = void>
struct is_kv_cache_policy : std::false_type {};
template <class T>
struct is_kv_cache_policy<T, std::void_t<typename T::element>> : std::true_type {};
template <class T, class = void>
struct is_feed_forward_policy : std::false_type {};
template <class T>
struct is_feed_forward_policy<T, std::void_t<decltype(T::kSparse)>> : std::true_type {};
}  // namespace detail

template <class Attention, class KvCache, class FeedForward>
class Transformer final : public Model {
  static_assert(detail::is_attention_policy<Attention>::value,
                "Transformer<Attention, ...>: Attention must be an attention policy such as "
                "GroupedQueryAttention<SlidingWindow>");
  static_assert(detail::is_kv_cache_policy<KvCache>::value,
                "Transformer<..., KvCache, ...>: KvCache must be a cache policy such as RollingKvCache<f16>");
  static_assert(detail::is_feed_forward_policy<FeedForward>::value,
                "Transformer<..., FeedForward>: FeedForward must be DenseSwiGLU or SparseMoE<...>");

 public:
  using attention_policy = Attention;
  using kv_cache_policy = KvCache;
  using feed_forward_policy = FeedForward;

  // One sequence: its KV cache.
  class Sequence final : public KvSequence {
   public:
    KvCache cache;

    Expected<std::unique_ptr<KvSequence>> clone() const override {
      std::unique_ptr<Sequence> copy(new (std::nothrow) Sequence());
      if (!copy || !copy->cache.init_like(cache)) {
        return make_error(ErrorCode::kOutOfMemory, "fork: a copy of the KV cache (%.1f MiB) could not be allocated",
                          static_cast<double>(cache.bytes()) / (1 << 20));
      }
      copy->cache.copy_from(cache);
      copy->n_past_ = n_past_;
      copy->window_ = window_;
      copy->kv_capacity_ = kv_capacity_;
      copy->owner_ = owner_;
      return std::unique_ptr<KvSequence>(std::move(copy));
    }
    uint64_t state_bytes() const override { return cache.bytes(); }
    std::vector<uint8_t> save_state() const override {
      std::vector<uint8_t> bytes(static_cast<size_t>(cache.bytes()));
      cache.save_to(bytes.data());
      return bytes;
    }
    Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) override {
      if (size != cache.bytes() || n_past < 0) {
        return make_error(ErrorCode::kFormat, "session state holds %llu cache bytes, this context needs %llu",
                          (unsigned long long)size, (unsigned long long)cache.bytes());
      }
      cache.load_from(data);
      n_past_ = n_past;
      return Status();
    }

   private:
    friend class Transformer;
  };

  // Buffers sized once for n_batch tokens, and the thread pool.
  class StepWorkspace final : public Workspace {
   public:
    std::unique_ptr<ThreadPool> pool;
    PageBuffer<float> x, normed, q, k, v, attended, projected, gate, up, gathered, expert_out, router_logits,
        chosen_weights, routed_weights, attention_scratch, attention_partials;
    PageBuffer<int32_t> chosen, routed_tokens;
    PageBuffer<int64_t> positions;
    PageBuffer<RowGroup> groups, expert_groups, logit_groups;
    PageBuffer<SwiGLUPass> expert_passes;
    PageBuffer<LinearJob> expert_jobs;
    PageBuffer<uint8_t> quantized;  // int8 activations (fast path)
    PageBuffer<uint8_t> quantized_residual;  // their second level, for the attention projections
    PageBuffer<float> residual_products;     // products of the second level (prefill)
    std::vector<AttentionChunk> chunks;
    std::vector<const KvCache*> chunk_caches;
    int64_t attention_keys = 0;      // the most keys attention_partials has room for, per chunk
    int64_t attention_chunks = 0;    // and for how many chunks
    int threads = 1;

   private:
    friend class Transformer;
  };

  static Expected<std::unique_ptr<Transformer>> load(ModelFiles files, const LoadParams& params = {}) {
    const ModelConfig& c = files.config();
    if (FeedForward::kSparse && c.n_experts == 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: this preset needs a mixture-of-experts model, but the file is dense",
                        files.path().c_str());
    }
    if (!FeedForward::kSparse && c.n_experts != 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "%s: this preset needs a dense model, but the file has %lld experts",
                        files.path().c_str(), (long long)c.n_experts);
    }
    if (FeedForward::kSparse) {
      const int64_t k = FeedForward::experts_per_token(c);
      if (k < 1 || k > c.n_experts) {
        return make_error(ErrorCode::kInvalidArgument,
                          "%s: the routing picks %lld experts per token, but the file has %lld experts",
                          files.path().c_str(), (long long)k, (long long)c.n_experts);
      }
    }
    if (params.progress_callback && !params.progress_callback(0.5f, params.progress_user_data))
      return make_error(ErrorCode::kCancelled, "%s: loading cancelled", files.path().c_str());
    tile_matrix_rows(files);
    auto weights = bind_weights(files);
    if (!weights) return weights.error();
    std::unique_ptr<Transformer> model(new Transformer(std::move(files), std::move(*weights)));
    if (params.progress_callback && !params.progress_callback(1.0f, params.progress_user_data))
      return make_error(ErrorCode::kCancelled, "%s: loading cancelled", model->files_.path().c_str());
    return model;
  }

  const ModelConfig& config() const override { return files_.config(); }
  const ModelFiles& files() const override { return files_; }
  const ModelWeights& weights() const { return weights_; }
  const char* preset_name() const override { return FeedForward::kSparse ? "mixtral" : "mistral"; }

  uint64_t weight_bytes_per_token() const override {
    const ModelConfig& c = config();
    return weight_bytes_per_step(static_cast<double>(std::min<int64_t>(FeedForward::experts_per_token(c), c.n_experts)));
  }
  uint64_t weight_bytes_per_step(double experts_read) const override {
    const ModelConfig& c = config();
    uint64_t bytes = weights_.output.bytes, experts = 0;
    for (const LayerWeights& l : weights_.layers) {
      for (const TensorView* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3, &l.router}) bytes += m->bytes;
      for (const std::vector<TensorView>* role : {&l.expert_w1, &l.expert_w2, &l.expert_w3})
        for (const TensorView& expert : *role) experts += expert.bytes;
    }
    if (c.n_experts > 0) {
      const double read = std::min(std::max(experts_read, 0.0), static_cast<double>(c.n_experts));
      bytes += static_cast<uint64_t>(static_cast<double>(experts / static_cast<uint64_t>(c.n_experts)) * read + 0.5);
    }
    return bytes;
  }

  Expected<std::unique_ptr<KvSequence>> create_sequence(const SequenceParams& params) const override {
    const ModelConfig& c = config();
    if (params.n_ctx <= 0) {
      return make_error(ErrorCode::kInvalidArgument, "sequence: n_ctx must be positive (n_ctx %lld)",
                        (long long)params.n_ctx);
    }
    std::unique_ptr<Sequence> sequence(new (std::nothrow) Sequence());
    if (!sequence) return make_error(ErrorCode::kOutOfMemory, "sequence: out of memory");
    int64_t window = Attention::mask::kUsesFileWindow ? c.sliding_window : 0;
    if (params.sliding_window >= 0) window = params.sliding_window;
    sequence->window_ = window;
    sequence->kv_capacity_ = window > 0 ? std::min(window, params.n_ctx) : params.n_ctx;
    if (!KvCache::supports(c.head_dim)) {
      return make_error(ErrorCode::kUnsupported, "context: a %s KV cache needs a head size that is a multiple of 32, "
                        "this model's is %lld", KvCache::element::name, (long long)c.head_dim);
    }
    if (!sequence->cache.init(c.n_layers, c.n_kv_heads, c.head_dim, sequence->kv_capacity_)) {
      const double gib = KvCache::bytes_for(c.n_layers, c.n_kv_heads, c.head_dim, sequence->kv_capacity_) / (1 << 30);
      return make_error(ErrorCode::kOutOfMemory,
                        "context: the KV cache for %lld positions needs %.1f GiB, which could not be allocated",
                        (long long)sequence->kv_capacity_, gib);
    }
    sequence->owner_ = this;
    return std::unique_ptr<KvSequence>(std::move(sequence));
  }

  Expected<std::unique_ptr<Workspace>> create_workspace(const WorkspaceParams& params) const override {
    const ModelConfig& c = config();
    if (params.n_batch <= 0 || params.n_threads <= 0 || params.n_threads_batch < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "context: n_batch and n_threads must be positive (n_batch %lld, n_threads %d)",
                        (long long)params.n_batch, params.n_threads);
    }
    // Sizes below come from the caller (n_batch, threads) and the file (widths, experts), so every
    // product is checked and every allocation can fail with an error instead of an exception.
    constexpr int kMaxThreads = 1024;
    if (params.n_threads > kMaxThreads || params.n_threads_batch > kMaxThreads) {
      return make_error(ErrorCode::kInvalidArgument, "context: at most %d threads (asked for %d and %d)", kMaxThreads,
                        params.n_threads, params.n_threads_batch);
    }
    const int64_t k = FeedForward::kSparse ? FeedForward::experts_per_token(c) : 1;  // checked by load()
    std::unique_ptr<StepWorkspace> ws(new (std::nothrow) StepWorkspace());
    if (!ws) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    ws->params_ = params;
    if (ws->params_.n_threads_batch == 0) ws->params_.n_threads_batch = params.n_threads;
    if (params.host_threads.run != nullptr) {
      const int host = std::max(1, params.host_threads.n_threads);
      ws->params_.n_threads = std::min(ws->params_.n_threads, host);
      ws->params_.n_threads_batch = std::min(ws->params_.n_threads_batch, host);
    }
    ws->threads = std::max(ws->params_.n_threads, ws->params_.n_threads_batch);
    const int64_t n = params.n_batch, dim = c.dim, q_dim = c.n_heads * c.head_dim,
                  kv_dim = c.n_kv_heads * c.head_dim, hidden = c.hidden_dim;
    // Allocates rows * width values, or names the buffer that did not fit.
    const char* failed = nullptr;
    auto sized = [&failed](auto& buffer, int64_t rows, int64_t width, const char* what) {
      uint64_t count = 0;
      if (failed != nullptr) return;
      if (rows < 0 || width < 0 ||
          !bytes_detail::checked_mul(static_cast<uint64_t>(rows), static_cast<uint64_t>(width), &count) ||
          !buffer.reset(count)) {
        failed = what;
      }
    };
    sized(ws->x, n, dim, "activations");
    sized(ws->normed, n, dim, "activations");
    sized(ws->q, n, q_dim, "queries");
    sized(ws->k, n, kv_dim, "keys");
    sized(ws->v, n, kv_dim, "values");
    sized(ws->attended, n, q_dim, "attention output");
    sized(ws->projected, n, dim, "activations");
    sized(ws->gate, n, hidden, "feed-forward activations");
    sized(ws->up, n, hidden, "feed-forward activations");
    sized(ws->positions, n, 1, "positions");
    sized(ws->groups, n, 1, "batch layout");
    sized(ws->logit_groups, n, 1, "batch layout");
    sized(ws->attention_scratch, ws->threads, Attention::scratch_floats_per_thread(c.n_heads, c.n_kv_heads, c.head_dim),
          "attention");
    if (!params.f32_activations) {
      const int64_t q8_row_bytes_wide = ops::q8_row_bytes((std::max(std::max(dim, q_dim), hidden) + 31) / 32 * 32);
      const int64_t q8_row_bytes_narrow = ops::q8_row_bytes((std::max(dim, q_dim) + 31) / 32 * 32);
      sized(ws->quantized, n, q8_row_bytes_wide, "int8 activations");
      sized(ws->quantized_residual, n, q8_row_bytes_narrow, "int8 activations");
      // Only prompts on attention projections outside row tiles need room for a second pass.
      bool untiled_projection = false;
      for (const LayerWeights& l : weights_.layers)
        for (const TensorView* p : {&l.wq, &l.wk, &l.wv, &l.wo})
          untiled_projection = untiled_projection || (is_block_quantized(p->type) && !p->row_tiles);
      if (untiled_projection)
        sized(ws->residual_products, n, std::max(std::max(q_dim, kv_dim), dim), "int8 activations");
    }
    if (FeedForward::kSparse) {
      sized(ws->gathered, n, dim, "expert activations");
      sized(ws->expert_out, n, dim, "expert activations");
      sized(ws->router_logits, n, c.n_experts, "router logits");
      sized(ws->chosen_weights, n, k, "routing");
      sized(ws->routed_weights, n, k, "routing");
      sized(ws->chosen, n, k, "routing");
      sized(ws->routed_tokens, n, k, "routing");
      sized(ws->expert_groups, n, 1, "routing");
      sized(ws->expert_passes, c.n_experts, 1, "routing");
      sized(ws->expert_jobs, c.n_experts, 2, "routing");
    }
    if (failed != nullptr) {
      return make_error(ErrorCode::kOutOfMemory, "context: the %s buffer for n_batch %lld could not be allocated",
                        failed, (long long)n);
    }
    // Last: a workspace that cannot be built starts no threads.
    if (params.host_threads.run != nullptr) {
      ws->pool.reset(new (std::nothrow) ThreadPool(params.host_threads));
    } else {
      ws->pool.reset(new (std::nothrow) ThreadPool(ws->threads));
    }
    if (!ws->pool) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    ws->owner_ = this;
    return std::unique_ptr<Workspace>(std::move(ws));
  }

  Status forward_batch(Workspace& base_workspace, const BatchSegment* segments, size_t count) const override {
    const ModelConfig& c = config();
    if (base_workspace.owner() != this) {
      return make_error(ErrorCode::kInvalidArgument, "forward: the workspace belongs to another model");
    }
    StepWorkspace& ws = static_cast<StepWorkspace&>(base_workspace);
    int64_t total = 0, most_keys = 0;
    for (size_t i = 0; i < count; ++i) {
      const BatchSegment& s = segments[i];
      if (s.sequence == nullptr || s.sequence->owner() != this) {
        return make_error(ErrorCode::kInvalidArgument, "forward: segment %zu has no sequence of this model", i);
      }
      if (s.n_tokens < 1 || s.tokens == nullptr) {
        return make_error(ErrorCode::kInvalidArgument, "forward: segment %zu has no tokens", i);
      }
      for (int64_t t = 0; t < s.n_tokens; ++t) {
        if (s.tokens[t] < 0 || s.tokens[t] >= c.vocab_size) {
          return make_error(ErrorCode::kInvalidArgument, "token %d at index %lld is outside the vocabulary (%lld)",
                            s.tokens[t], (long long)t, (long long)c.vocab_size);
        }
      }
      for (size_t j = 0; j < i; ++j) {
        if (segments[j].sequence == s.sequence) {
          return make_error(ErrorCode::kInvalidArgument, "forward: segments %zu and %zu are the same sequence", j, i);
        }
      }
      // Without a window every position needs its own slot; with one, the cache rolls forever
      // unless the window is larger than the context.
      if (!s.sequence->has_room_for(s.n_tokens)) {
        return make_error(ErrorCode::kContextFull,
                          "context full: %lld positions used, %lld more requested, room for %lld",
                          (long long)s.sequence->n_past(), (long long)s.n_tokens,
                          (long long)s.sequence->kv_capacity());
      }
      total += s.n_tokens;
      most_keys = std::max(most_keys, s.sequence->kv_capacity());
    }
    if (total > ws.n_batch()) {
      return make_error(ErrorCode::kInvalidArgument, "forward: %lld tokens in one step, the workspace holds %lld",
                        (long long)total, (long long)ws.n_batch());
    }
    if (total == 0) return Status();
    if (most_keys > ws.attention_keys || static_cast<int64_t>(count) > ws.attention_chunks) {
      // The partial results grow with the longest cache and the most sequences the workspace has met.
      const int64_t keys = std::max(most_keys, ws.attention_keys);
      const int64_t chunks = std::max(static_cast<int64_t>(count), ws.attention_chunks);
      uint64_t floats = 0;
      if (!bytes_detail::checked_mul(
              static_cast<uint64_t>(Attention::partial_floats_per_chunk(c.n_heads, c.head_dim, keys)),
              static_cast<uint64_t>(chunks), &floats) ||
          !ws.attention_partials.reset(floats)) {
        ws.attention_keys = ws.attention_chunks = 0;
        return make_error(ErrorCode::kOutOfMemory,
                          "forward: attention scratch for %lld sequences of %lld keys could not be allocated",
                          (long long)chunks, (long long)keys);
      }
      ws.attention_keys = keys;
      ws.attention_chunks = chunks;
    }
    if (ws.chunks.size() < count) {
      // Reserved once per batch size; these vectors only grow.
      ws.chunks.resize(count);
      ws.chunk_caches.resize(count);
    }
    return forward_step(ws, segments, count, total);
  }

 private:
  Transformer(ModelFiles files, ModelWeights weights) : files_(std::move(files)), weights_(std::move(weights)) {}

  static bool aborted(const StepWorkspace& ws) {
    return ws.params_.abort_callback != nullptr && ws.params_.abort_callback(ws.params_.abort_user_data);
  }

  // One step through every layer: the segments' tokens stacked as rows, each segment a row group.
  Status forward_step(StepWorkspace& ws, const BatchSegment* segments, size_t count, int64_t n) const {
    const ModelConfig& c = config();
    const int64_t dim = c.dim, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    ThreadPool& pool = *ws.pool;
    const int threads = n == static_cast<int64_t>(count) ? ws.params_.n_threads : ws.params_.n_threads_batch;
    uint8_t* quantized = ws.quantized.empty() ? nullptr : ws.quantized.data();
    uint8_t* quantized_residual = ws.quantized_residual.empty() ? nullptr : ws.quantized_residual.data();
    RowGroup* groups = ws.groups.data();
    int64_t row = 0;
    for (size_t i = 0; i < count; ++i) {
      const BatchSegment& s = segments[i];
      groups[i] = RowGroup{row, s.n_tokens, nullptr};
      for (int64_t t = 0; t < s.n_tokens; ++t) {
        ws.positions[static_cast<size_t>(row + t)] = s.sequence->n_past() + t;
        const TensorView& e = weights_.token_embedding;
        dequantize_row(e.type, e.row(s.tokens[t]), ws.x.data() + (row + t) * dim, dim);
      }
      AttentionChunk& chunk = ws.chunks[i];
      chunk.first_position = s.sequence->n_past();
      chunk.n_tokens = s.n_tokens;
      chunk.n_heads = c.n_heads;
      chunk.n_kv_heads = c.n_kv_heads;
      chunk.head_dim = c.head_dim;
      chunk.window = s.sequence->window();
      chunk.q = ws.q.data() + row * q_dim;
      chunk.k = ws.k.data() + row * kv_dim;
      chunk.v = ws.v.data() + row * kv_dim;
      chunk.out = ws.attended.data() + row * q_dim;
      ws.chunk_caches[i] = &static_cast<Sequence*>(s.sequence)->cache;
      row += s.n_tokens;
    }
    AttentionScratch attention_scratch;
    attention_scratch.data = ws.attention_scratch.data();
    attention_scratch.per_thread = Attention::scratch_floats_per_thread(c.n_heads, c.n_kv_heads, c.head_dim);
    attention_scratch.max_threads = threads;
    attention_scratch.partials = ws.attention_partials.data();
    attention_scratch.partial_floats_per_chunk =
        Attention::partial_floats_per_chunk(c.n_heads, c.head_dim, ws.attention_keys);
    const int64_t* positions = ws.positions.data();

    for (int64_t l = 0; l < c.n_layers; ++l) {
      if (n > 1 && aborted(ws)) return make_error(ErrorCode::kCancelled, "prompt processing aborted at layer %lld", (long long)l);
      const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
      // Attention block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ws.x.data() + t * dim, w.attention_norm.data(), c.norm_eps, dim, ws.normed.data() + t * dim);
      }, threads);
      // The attention projections (q, k, v here, wo below) get near-exact activations on the fast
      // path (two int8 levels): q and k errors are amplified by the softmax over q.k, and this makes
      // the fast path several times closer to the reference (tests/model/test_fast_path_accuracy.cpp)
      // for a fifth of the weights.
      const Activations normed = quantize_activations_two_level(pool, threads, ws.normed.data(), n, dim, quantized,
                                                                quantized_residual);
      float* residual = ws.residual_products.empty() ? nullptr : ws.residual_products.data();
      linear(pool, threads, w.wq, normed, groups, count, ws.q.data(), residual);
      linear(pool, threads, w.wk, normed, groups, count, ws.k.data(), residual);
      linear(pool, threads, w.wv, normed, groups, count, ws.v.data(), residual);
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t) {
          ops::rope(ws.q.data() + t * q_dim, c.n_heads, c.head_dim, positions[t], c.rope_theta, c.rope_pairing);
          ops::rope(ws.k.data() + t * kv_dim, c.n_kv_heads, c.head_dim, positions[t], c.rope_theta, c.rope_pairing);
        }
      }, threads);
      for (size_t i = 0; i < count; ++i) ws.chunks[i].layer = l;
      Attention::forward(ws.chunks.data(), ws.chunk_caches.data(), count, attention_scratch, pool);
      // Only now may each chunk's keys overwrite older slots: its queries needed those.
      for (size_t i = 0; i < count; ++i) {
        const BatchSegment& s = segments[i];
        KvCache& cache = static_cast<Sequence*>(s.sequence)->cache;
        const int64_t first_row = groups[i].first_row, first = s.sequence->n_past();
        for (int64_t t = std::max<int64_t>(0, s.n_tokens - s.sequence->kv_capacity()); t < s.n_tokens; ++t)
          cache.store(l, first + t, ws.k.data() + (first_row + t) * kv_dim, ws.v.data() + (first_row + t) * kv_dim);
      }
      linear(pool, threads, w.wo,
             quantize_activations_two_level(pool, threads, ws.attended.data(), n, q_dim, quantized, quantized_residual),
             groups, count, ws.projected.data(), residual);
      for (int64_t i = 0; i < n * dim; ++i) ws.x[static_cast<size_t>(i)] += ws.projected[static_cast<size_t>(i)];

      // Feed-forward block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ws.x.data() + t * dim, w.ffn_norm.data(), c.norm_eps, dim, ws.normed.data() + t * dim);
      }, threads);
      FeedForwardScratch s;
      s.gate = ws.gate.data();
      s.up = ws.up.data();
      s.gathered = ws.gathered.data();
      s.expert_out = ws.expert_out.data();
      s.router_logits = ws.router_logits.data();
      s.routed_tokens = ws.routed_tokens.data();
      s.routed_weights = ws.routed_weights.data();
      s.chosen = ws.chosen.data();
      s.chosen_weights = ws.chosen_weights.data();
      s.expert_groups = ws.expert_groups.data();
      s.expert_passes = ws.expert_passes.data();
      s.expert_jobs = ws.expert_jobs.data();
      s.rows_capacity = ws.params_.n_batch;
      s.quantized = quantized;
      s.expert_trace = ws.params_.expert_trace;
      s.layer = l;
      s.positions = positions;
      s.max_threads = threads;
      FeedForward::forward(w, c, ws.normed.data(), groups, count, n, ws.projected.data(), s, pool);
      for (int64_t i = 0; i < n * dim; ++i) ws.x[static_cast<size_t>(i)] += ws.projected[static_cast<size_t>(i)];
    }
    for (size_t i = 0; i < count; ++i) static_cast<Sequence*>(segments[i].sequence)->n_past_ += segments[i].n_tokens;

    // Final norm and output head, for the rows whose logits were asked for: every row of a segment,
    // or just its last. Those rows are packed, each segment's still a group of its own.
    RowGroup* logit_groups = ws.logit_groups.data();
    size_t n_logit_groups = 0;
    int64_t rows = 0;
    for (size_t i = 0; i < count; ++i) {
      const BatchSegment& seg = segments[i];
      if (seg.logits == nullptr) continue;
      const int64_t first_row = seg.all_logits ? groups[i].first_row : groups[i].first_row + seg.n_tokens - 1;
      const int64_t n_rows = seg.all_logits ? seg.n_tokens : 1;
      for (int64_t t = 0; t < n_rows; ++t)
        ops::rmsnorm(ws.x.data() + (first_row + t) * dim, weights_.output_norm.data(), c.norm_eps, dim,
                     ws.normed.data() + (rows + t) * dim);
      logit_groups[n_logit_groups++] = RowGroup{rows, n_rows, seg.logits};
      rows += n_rows;
    }
    if (rows > 0) {
      linear(pool, threads, weights_.output, quantize_activations(pool, threads, ws.normed.data(), rows, dim, quantized),
             logit_groups, n_logit_groups, nullptr);
    }
    return Status();
  }

  ModelFiles files_;
  ModelWeights weights_;
};

}  // namespace bora

#endif  // BORA_MODEL_TRANSFORMER_HPP
