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
#include "bora/model/feed_forward.hpp"
#include "bora/model/kv_cache.hpp"
#include "bora/model/linear.hpp"
#include "bora/model/weights.hpp"
#include "bora/ops/ops.hpp"
#include "bora/quant/dequantize.hpp"

namespace bora {

enum class KvCacheType { kF16, kF32 };

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

// One stream of positions over a loaded model: its KV cache, buffers and threads.
struct ContextParams {
  int64_t n_ctx = 4096;     // positions held when there is no sliding window
  int64_t n_batch = 512;    // prompt tokens processed together (longer prompts are split)
  int n_threads = 1;        // threads for generation (one token at a time)
  int n_threads_batch = 0;  // threads for prompt processing (0 = n_threads)
  int64_t sliding_window = -1;  // -1: as the file says; 0: no window; N > 0: window of N keys
  // Checked between layers during long prompts; return true to abort (kCancelled).
  bool (*abort_callback)(void* user_data) = nullptr;
  void* abort_user_data = nullptr;
  // Exact mode: every weight product uses f32 activations (dequantized weights), as the reference
  // does. Off (default): the inputs of the attention output and feed-forward matrices are rounded to int8 blocks for integer
  // dot products, which is faster and moves logits slightly, as in llama.cpp.
  bool f32_activations = false;
  // When set, a sparse-MoE model appends (layer, position, chosen expert ids...) per token.
  std::vector<int32_t>* expert_trace = nullptr;
};

class ModelContext {
 public:
  virtual ~ModelContext() = default;
  // Forget positions from `position` on, so they can be recomputed differently (a chat that
  // edits its last turn). Possible only while no cache slot has been reused; false otherwise.
  bool truncate(int64_t position) {
    if (position < 0 || position > n_past_ || n_past_ > kv_capacity_) return false;
    n_past_ = position;
    return true;
  }
  // The cache as bytes (for saving a session), and back. restore_state checks the size.
  virtual std::vector<uint8_t> save_state() const = 0;
  virtual Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) = 0;
  int64_t n_past() const { return n_past_; }  // positions consumed so far
  int64_t window() const { return window_; }  // effective sliding window, 0 = none
  int64_t kv_capacity() const { return kv_capacity_; }
  const ContextParams& params() const { return params_; }
  // Forget all positions: the next token is at position 0 again.
  void reset() { n_past_ = 0; }

 protected:
  ContextParams params_;
  int64_t n_past_ = 0;
  int64_t window_ = 0;
  int64_t kv_capacity_ = 0;
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
  virtual Expected<std::unique_ptr<ModelContext>> create_context(const ContextParams& params) const = 0;
  // Consumes `n` tokens at positions ctx.n_past() ...; writes logits for every token
  // ([n][vocab]) when all_logits, else for the last one only ([vocab]). logits may be null.
  virtual Status forward(ModelContext& ctx, const int32_t* tokens, int64_t n, float* logits,
                         bool all_logits) const = 0;
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

  // The state of one stream: cache, buffers sized once for n_batch tokens, the thread pool.
  class Context final : public ModelContext {
   public:
    KvCache cache;
    std::unique_ptr<ThreadPool> pool;
    PageBuffer<float> x, normed, q, k, v, attended, projected, gate, up, gathered, expert_out, router_logits,
        chosen_weights, routed_weights, attention_scratch, last_hidden;
    PageBuffer<int32_t> chosen, routed_tokens;
    PageBuffer<uint8_t> quantized;  // int8 activations (fast path)
    PageBuffer<uint8_t> quantized_residual;  // their second level, for the attention projections
    PageBuffer<float> residual_products;     // products of the second level (prefill)
    int64_t scratch_per_thread = 0;
    friend class Transformer;

    std::vector<uint8_t> save_state() const override {
      const auto& keys = const_cast<KvCache&>(cache).raw_keys();
      const auto& values = const_cast<KvCache&>(cache).raw_values();
      const size_t key_bytes = keys.size() * sizeof(keys[0]);
      std::vector<uint8_t> bytes(key_bytes * 2);
      std::memcpy(bytes.data(), keys.data(), key_bytes);
      std::memcpy(bytes.data() + key_bytes, values.data(), key_bytes);
      return bytes;
    }
    Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) override {
      auto& keys = cache.raw_keys();
      auto& values = cache.raw_values();
      const uint64_t key_bytes = keys.size() * sizeof(keys[0]);
      if (size != key_bytes * 2 || n_past < 0) {
        return make_error(ErrorCode::kFormat, "session state holds %llu cache bytes, this context needs %llu",
                          (unsigned long long)size, (unsigned long long)(key_bytes * 2));
      }
      std::memcpy(keys.data(), data, key_bytes);
      std::memcpy(values.data(), data + key_bytes, key_bytes);
      n_past_ = n_past;
      return Status();
    }
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
    uint64_t bytes = weights_.output.bytes, experts = 0;
    for (const LayerWeights& l : weights_.layers) {
      for (const TensorView* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w1, &l.w2, &l.w3, &l.router}) bytes += m->bytes;
      for (const std::vector<TensorView>* role : {&l.expert_w1, &l.expert_w2, &l.expert_w3})
        for (const TensorView& expert : *role) experts += expert.bytes;
    }
    if (c.n_experts > 0) {
      const int64_t used = std::min<int64_t>(FeedForward::experts_per_token(c), c.n_experts);
      bytes += experts / static_cast<uint64_t>(c.n_experts) * static_cast<uint64_t>(used);
    }
    return bytes;
  }

  Expected<std::unique_ptr<ModelContext>> create_context(const ContextParams& params) const override {
    const ModelConfig& c = config();
    if (params.n_ctx <= 0 || params.n_batch <= 0 || params.n_threads <= 0 || params.n_threads_batch < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "context: n_ctx, n_batch and n_threads must be positive (n_ctx %lld, n_batch %lld, "
                        "n_threads %d)",
                        (long long)params.n_ctx, (long long)params.n_batch, params.n_threads);
    }
    // Sizes below come from the caller (n_ctx, n_batch, threads) and the file (widths, experts), so
    // every product is checked and every allocation can fail with an error instead of an exception.
    constexpr int kMaxThreads = 1024;
    if (params.n_threads > kMaxThreads || params.n_threads_batch > kMaxThreads) {
      return make_error(ErrorCode::kInvalidArgument, "context: at most %d threads (asked for %d and %d)", kMaxThreads,
                        params.n_threads, params.n_threads_batch);
    }
    const int64_t k = FeedForward::kSparse ? FeedForward::experts_per_token(c) : 1;  // checked by load()
    std::unique_ptr<Context> ctx(new (std::nothrow) Context());
    if (!ctx) return make_error(ErrorCode::kOutOfMemory, "context: out of memory");
    ctx->params_ = params;
    if (ctx->params_.n_threads_batch == 0) ctx->params_.n_threads_batch = params.n_threads;
    int64_t window = Attention::mask::kUsesFileWindow ? c.sliding_window : 0;
    if (params.sliding_window >= 0) window = params.sliding_window;
    ctx->window_ = window;
    ctx->kv_capacity_ = window > 0 ? std::min(window, params.n_ctx) : params.n_ctx;
    const int64_t n = params.n_batch, dim = c.dim, q_dim = c.n_heads * c.head_dim,
                  kv_dim = c.n_kv_heads * c.head_dim, hidden = c.hidden_dim;
    if (!ctx->cache.init(c.n_layers, c.n_kv_heads, c.head_dim, ctx->kv_capacity_)) {
      const double gib = 2.0 * static_cast<double>(c.n_layers) * static_cast<double>(kv_dim) *
                         static_cast<double>(ctx->kv_capacity_) * sizeof(typename KvCache::storage) / (1 << 30);
      return make_error(ErrorCode::kOutOfMemory,
                        "context: the KV cache for %lld positions needs %.1f GiB, which could not be allocated",
                        (long long)ctx->kv_capacity_, gib);
    }
    const int threads = std::max(ctx->params_.n_threads, ctx->params_.n_threads_batch);
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
    sized(ctx->x, n, dim, "activations");
    sized(ctx->normed, n, dim, "activations");
    sized(ctx->q, n, q_dim, "queries");
    sized(ctx->k, n, kv_dim, "keys");
    sized(ctx->v, n, kv_dim, "values");
    sized(ctx->attended, n, q_dim, "attention output");
    sized(ctx->projected, n, dim, "activations");
    sized(ctx->gate, n, hidden, "feed-forward activations");
    sized(ctx->up, n, hidden, "feed-forward activations");
    sized(ctx->last_hidden, 1, dim, "activations");
    if (!params.f32_activations) {
      const int64_t q8_row_bytes_wide = ops::q8_row_bytes((std::max(std::max(dim, q_dim), hidden) + 31) / 32 * 32);
      const int64_t q8_row_bytes_narrow = ops::q8_row_bytes((std::max(dim, q_dim) + 31) / 32 * 32);
      sized(ctx->quantized, n, q8_row_bytes_wide, "int8 activations");
      sized(ctx->quantized_residual, n, q8_row_bytes_narrow, "int8 activations");
      sized(ctx->residual_products, n, std::max(std::max(q_dim, kv_dim), dim), "int8 activations");
    }
    if (FeedForward::kSparse) {
      sized(ctx->gathered, n, dim, "expert activations");
      sized(ctx->expert_out, n, dim, "expert activations");
      sized(ctx->router_logits, n, c.n_experts, "router logits");
      sized(ctx->chosen_weights, n, k, "routing");
      sized(ctx->routed_weights, n, k, "routing");
      sized(ctx->chosen, n, k, "routing");
      sized(ctx->routed_tokens, n, k, "routing");
    }
    ctx->scratch_per_thread =
        Attention::scratch_floats_per_thread(c.n_heads, c.n_kv_heads, c.head_dim, ctx->kv_capacity_);
    sized(ctx->attention_scratch, ctx->scratch_per_thread, threads, "attention scratch");
    if (failed != nullptr) {
      return make_error(ErrorCode::kOutOfMemory,
                        "context: the %s buffer for n_batch %lld could not be allocated (n_ctx %lld)", failed,
                        (long long)n, (long long)params.n_ctx);
    }
    ctx->pool.reset(new ThreadPool(threads));  // last: a context that cannot be built starts no threads
    return std::unique_ptr<ModelContext>(std::move(ctx));
  }

  Status forward(ModelContext& base_ctx, const int32_t* tokens, int64_t n, float* logits,
                 bool all_logits) const override {
    Context& ctx = static_cast<Context&>(base_ctx);
    const ModelConfig& c = config();
    for (int64_t i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
        return make_error(ErrorCode::kInvalidArgument, "token %d at index %lld is outside the vocabulary (%lld)",
                          tokens[i], (long long)i, (long long)c.vocab_size);
      }
    }
    // Without a window every position needs its own slot; with one, the cache rolls forever
    // unless the window is larger than the context.
    const bool rolls = ctx.window_ > 0 && ctx.window_ <= ctx.kv_capacity_;
    if (!rolls && ctx.n_past_ + n > ctx.kv_capacity_) {
      return make_error(ErrorCode::kContextFull, "context full: %lld positions used, %lld more requested, room for %lld",
                        (long long)ctx.n_past_, (long long)n, (long long)ctx.kv_capacity_);
    }
    const int64_t batch = ctx.params_.n_batch;
    for (int64_t start = 0; start < n; start += batch) {
      const int64_t count = std::min(batch, n - start);
      const bool last_chunk = start + count == n;
      float* chunk_logits = nullptr;
      if (logits != nullptr && all_logits) chunk_logits = logits + start * c.vocab_size;
      if (logits != nullptr && !all_logits && last_chunk) chunk_logits = logits;
      Status status = forward_chunk(ctx, tokens + start, count, chunk_logits, all_logits);
      if (!status) return status;
    }
    return Status();
  }

 private:
  Transformer(ModelFiles files, ModelWeights weights) : files_(std::move(files)), weights_(std::move(weights)) {}

  bool aborted(const Context& ctx) const {
    return ctx.params_.abort_callback != nullptr && ctx.params_.abort_callback(ctx.params_.abort_user_data);
  }

  // One chunk of up to n_batch tokens through every layer.
  Status forward_chunk(Context& ctx, const int32_t* tokens, int64_t n, float* logits, bool all_logits) const {
    const ModelConfig& c = config();
    const int64_t dim = c.dim, q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
    const int64_t first = ctx.n_past_;
    ThreadPool& pool = *ctx.pool;
    const int threads = n == 1 ? ctx.params_.n_threads : ctx.params_.n_threads_batch;
    uint8_t* quantized = ctx.quantized.empty() ? nullptr : ctx.quantized.data();
    uint8_t* quantized_residual = ctx.quantized_residual.empty() ? nullptr : ctx.quantized_residual.data();

    for (int64_t t = 0; t < n; ++t) {
      const TensorView& e = weights_.token_embedding;
      dequantize_row(e.type, e.row(tokens[t]), ctx.x.data() + t * dim, dim);
    }
    for (int64_t l = 0; l < c.n_layers; ++l) {
      if (n > 1 && aborted(ctx)) return make_error(ErrorCode::kCancelled, "prompt processing aborted at layer %lld", (long long)l);
      const LayerWeights& w = weights_.layers[static_cast<size_t>(l)];
      // Attention block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ctx.x.data() + t * dim, w.attention_norm.data(), c.norm_eps, dim, ctx.normed.data() + t * dim);
      }, threads);
      // The attention projections (q, k, v here, wo below) get near-exact activations on the fast
      // path (two int8 levels): q and k errors are amplified by the softmax over q.k, and this makes
      // the fast path several times closer to the reference (tests/model/test_fast_path_accuracy.cpp)
      // for a fifth of the weights.
      const Activations normed = quantize_activations_two_level(pool, threads, ctx.normed.data(), n, dim, quantized,
                                                                quantized_residual);
      float* residual = ctx.residual_products.empty() ? nullptr : ctx.residual_products.data();
      linear(pool, threads, w.wq, normed, n, ctx.q.data(), residual);
      linear(pool, threads, w.wk, normed, n, ctx.k.data(), residual);
      linear(pool, threads, w.wv, normed, n, ctx.v.data(), residual);
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t) {
          ops::rope(ctx.q.data() + t * q_dim, c.n_heads, c.head_dim, first + t, c.rope_theta, c.rope_pairing);
          ops::rope(ctx.k.data() + t * kv_dim, c.n_kv_heads, c.head_dim, first + t, c.rope_theta, c.rope_pairing);
        }
      }, threads);
      AttentionChunk chunk;
      chunk.layer = l;
      chunk.first_position = first;
      chunk.n_tokens = n;
      chunk.n_heads = c.n_heads;
      chunk.n_kv_heads = c.n_kv_heads;
      chunk.head_dim = c.head_dim;
      chunk.window = ctx.window_;
      chunk.q = ctx.q.data();
      chunk.k = ctx.k.data();
      chunk.v = ctx.v.data();
      chunk.out = ctx.attended.data();
      chunk.thread_scratch = ctx.attention_scratch.data();
      chunk.scratch_per_thread = ctx.scratch_per_thread;
      chunk.max_threads = threads;
      Attention::forward(chunk, ctx.cache, pool);
      // Only now may the chunk's keys overwrite older slots: its queries needed those.
      for (int64_t t = std::max<int64_t>(0, n - ctx.kv_capacity_); t < n; ++t)
        ctx.cache.store(l, first + t, ctx.k.data() + t * kv_dim, ctx.v.data() + t * kv_dim);
      linear(pool, threads, w.wo,
             quantize_activations_two_level(pool, threads, ctx.attended.data(), n, q_dim, quantized, quantized_residual), n,
             ctx.projected.data(), residual);
      for (int64_t i = 0; i < n * dim; ++i) ctx.x[static_cast<size_t>(i)] += ctx.projected[static_cast<size_t>(i)];

      // Feed-forward block.
      pool.parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t t = b; t < e; ++t)
          ops::rmsnorm(ctx.x.data() + t * dim, w.ffn_norm.data(), c.norm_eps, dim, ctx.normed.data() + t * dim);
      }, threads);
      FeedForwardScratch s;
      s.gate = ctx.gate.data();
      s.up = ctx.up.data();
      s.gathered = ctx.gathered.data();
      s.expert_out = ctx.expert_out.data();
      s.router_logits = ctx.router_logits.data();
      s.routed_tokens = ctx.routed_tokens.data();
      s.routed_weights = ctx.routed_weights.data();
      s.chosen = ctx.chosen.data();
      s.chosen_weights = ctx.chosen_weights.data();
      s.quantized = quantized;
      s.expert_trace = ctx.params_.expert_trace;
      s.layer = l;
      s.first_position = first;
      s.max_threads = threads;
      FeedForward::forward(w, c, ctx.normed.data(), n, ctx.projected.data(), s, pool);
      for (int64_t i = 0; i < n * dim; ++i) ctx.x[static_cast<size_t>(i)] += ctx.projected[static_cast<size_t>(i)];
    }
    ctx.n_past_ = first + n;

    // Final norm and output head: every row, or just the last.
    const int64_t first_row = all_logits ? 0 : n - 1;
    const int64_t rows = n - first_row;
    for (int64_t t = first_row; t < n; ++t)
      ops::rmsnorm(ctx.x.data() + t * dim, weights_.output_norm.data(), c.norm_eps, dim,
                   ctx.normed.data() + (t - first_row) * dim);
    if (logits != nullptr) {
      linear(pool, threads, weights_.output,
             quantize_activations(pool, threads, ctx.normed.data(), rows, dim, quantized), rows, logits);
    }
    return Status();
  }

  ModelFiles files_;
  ModelWeights weights_;
};

}  // namespace bora

#endif  // BORA_MODEL_TRANSFORMER_HPP
