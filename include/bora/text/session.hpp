// Why this file exists: what an application talks to. A Session owns one stream over a shared model:
// it tokenizes prompts, prefills, samples and streams text pieces until a stop condition, keeps
// the conversation's tokens so later turns reuse the cache, and saves/restores its state.
#ifndef BORA_TEXT_SESSION_HPP
#define BORA_TEXT_SESSION_HPP

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/model/fingerprint.hpp"
#include "bora/model/transformer.hpp"
#include "bora/text/chat_template.hpp"
#include "bora/text/sampler.hpp"
#include "bora/text/stop_filter.hpp"
#include "bora/text/tokenizer.hpp"

namespace bora {

struct SessionParams : ContextParams {
  // Which chat template chat() uses; empty = the one the model's files imply.
  std::optional<ChatTemplate> chat_template;
};

// Receives each decoded piece of text as it is produced; return false to stop generating.
using StreamCallback = std::function<bool(std::string_view piece)>;

// kCancelled and kError come from the batch scheduler (cancel(), a failure of that sequence alone).
enum class StopReason { kEndOfSequence, kMaxTokens, kStopString, kCallback, kContextFull, kCancelled, kError };

// What one Session::step() produced.
struct GenerationStep {
  // The text that became final with this token. Often empty: half a UTF-8 character waits for the
  // token that completes it, and text that may begin a stop string waits until it cannot.
  std::string text;
  int32_t token = -1;  // the token sampled and fed to the model; -1 when none was (the step ended it)
  bool done = false;   // the generation has ended (stop_reason says why); later steps return this again
  StopReason stop_reason = StopReason::kEndOfSequence;
};

struct GenerationResult {
  std::string text;           // everything streamed, stop string excluded
  int64_t n_prompt_tokens = 0;  // tokens prefilled for this call
  int64_t n_generated = 0;
  StopReason stop_reason = StopReason::kEndOfSequence;
};

class Session {
 public:
  // `tokenizer` may be null (a model whose files carry none): then only feed() and the raw stream work.
  Session(const Model& model, const Tokenizer* tokenizer, std::unique_ptr<ModelContext> context,
          SessionParams params)
      : model_(&model), tokenizer_(tokenizer), context_(std::move(context)), params_(std::move(params)) {}
  Session(Session&&) = default;
  Session& operator=(Session&&) = default;

  const Model& model() const { return *model_; }
  const Tokenizer* tokenizer() const { return tokenizer_; }
  // Every token the cache has consumed, in order (position i = tokens()[i]).
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t n_past() const { return context_->n_past(); }
  void reset() {
    context_->reset();
    tokens_.clear();
    generation_.reset();  // its half characters and stop-string tail belonged to the forgotten stream
    last_logits_.clear();  // they belonged to the forgotten stream (and save() pairs logits with tokens)
  }

  // Appends tokens to the stream (prefill); leaves the logits of the last one for sampling.
  Status feed(const std::vector<int32_t>& ids) {
    if (ids.empty()) return Status();
    last_logits_.resize(static_cast<size_t>(model_->config().vocab_size));
    Status status = model_->forward(*context_, ids.data(), static_cast<int64_t>(ids.size()), last_logits_.data(), false);
    if (!status) return status;
    tokens_.insert(tokens_.end(), ids.begin(), ids.end());
    return Status();
  }

  // The template chat() renders with: the session's choice, else what the files imply.
  ChatTemplate chat_template() const {
    if (params_.chat_template) return *params_.chat_template;
    // Without a tokenizer there are no control pieces to look at: the first template is as good as any,
    // and chat() refuses such a model anyway.
    if (tokenizer_ == nullptr) return ChatTemplate::kMistralV1;
    return chat_template_for(model_->files(), *tokenizer_);
  }

  // Continues the stream with `text` (BOS added when the stream is empty), then generates.
  Expected<GenerationResult> complete(std::string_view text, const SampleParams& sample, const StreamCallback& on_piece,
                                      const std::vector<std::string>& stop = {}) {
    BORA_RETURN_IF_ERROR(begin_completion(text, sample, stop));
    return run_generation(on_piece);
  }

  // Renders the whole conversation with the chat template; reuses the cache for the part that
  // is unchanged since the last call, prefills the rest and generates the assistant's reply.
  // `options.tools` offers functions (v2/v3 templates); a reply that calls them begins with the
  // [TOOL_CALLS] token (GenerationStep::token shows it; its text is the calls' JSON).
  Expected<GenerationResult> chat(const std::vector<ChatMessage>& messages, const SampleParams& sample,
                                  const StreamCallback& on_piece, const std::vector<std::string>& stop = {},
                                  const ChatTemplateOptions& options = {}) {
    BORA_RETURN_IF_ERROR(begin_chat(messages, sample, stop, options));
    return run_generation(on_piece);
  }

  // Samples tokens after what has been fed, streaming text, until end of sequence, max_tokens,
  // a stop string, the callback returning false, or a full context.
  Expected<GenerationResult> generate(const SampleParams& sample, const StreamCallback& on_piece,
                                      const std::vector<std::string>& stop = {}) {
    BORA_RETURN_IF_ERROR(begin_generation(sample, stop));
    return run_generation(on_piece);
  }

  // One token at a time (a game frame, an engine's own loop): begin_completion / begin_chat prefill
  // as complete() / chat() do, begin_generation continues what has been fed; then each step() samples
  // one token. The random state, half-decoded characters and stop strings carry over from step to
  // step, so the steps produce exactly the tokens and text of one complete() / chat() / generate()
  // call with the same seed (which are these steps run to the end). feed() between steps is allowed.
  Status begin_completion(std::string_view text, const SampleParams& sample, const std::vector<std::string>& stop = {}) {
    generation_.reset();
    const Tokenizer* tokenizer = tokenizer_;
    if (tokenizer == nullptr) return no_tokenizer();
    std::vector<int32_t> ids = tokenizer->encode(text, tokens_.empty() && tokenizer->add_bos_by_default());
    BORA_RETURN_IF_ERROR(feed(ids));
    return begin(sample, stop, /*reply_starts_text=*/false, static_cast<int64_t>(ids.size()));
  }

  Status begin_chat(const std::vector<ChatMessage>& messages, const SampleParams& sample,
                    const std::vector<std::string>& stop = {}, const ChatTemplateOptions& options = {}) {
    generation_.reset();
    const Tokenizer* tokenizer = tokenizer_;
    if (tokenizer == nullptr) return no_tokenizer();
    auto ids = apply_chat_template(*tokenizer, chat_template(), messages, options);
    if (!ids) return ids.error();
    size_t common = 0;
    while (common < tokens_.size() && common < ids->size() && tokens_[common] == (*ids)[common]) ++common;
    // The last prompt token must be run again to get fresh logits, so keep at least one to feed.
    if (common == ids->size() && common > 0) --common;
    if (common < tokens_.size()) {
      if (context_->truncate(static_cast<int64_t>(common))) {
        tokens_.resize(common);
      } else {
        reset();
        common = 0;
      }
    }
    const std::vector<int32_t> rest(ids->begin() + static_cast<std::ptrdiff_t>(common), ids->end());
    BORA_RETURN_IF_ERROR(feed(rest));
    // A reply is a text of its own: its first piece's leading space is dropped, as mistral-common does.
    return begin(sample, stop, /*reply_starts_text=*/true, static_cast<int64_t>(rest.size()));
  }

  Status begin_generation(const SampleParams& sample, const std::vector<std::string>& stop = {}) {
    generation_.reset();
    return begin(sample, stop, /*reply_starts_text=*/false, 0);
  }

  // Samples one token and feeds it. Ends (done) at end of sequence, max_tokens, a stop string or a
  // full context; the step that ends also returns the text still held back. A failed forward pass
  // ends the generation too (kError); without a begun generation step() is kInvalidArgument.
  Expected<GenerationStep> step() {
    if (!generation_) {
      return make_error(ErrorCode::kInvalidArgument, "step: begin a generation first (begin_completion, begin_chat, begin_generation)");
    }
    Generation& g = *generation_;
    GenerationStep out;
    if (g.done) return finished(g, &out);
    if (g.max_tokens >= 0 && g.n_generated >= g.max_tokens) return end(g, StopReason::kMaxTokens, &out);
    const int32_t next = g.sampler.sample(last_logits_.data(), model_->config().vocab_size, tokens_);
    if (next == tokenizer_->eos_id()) return end(g, StopReason::kEndOfSequence, &out);
    ++g.n_generated;
    Status status = feed({next});
    if (!status) {
      if (status.error().code() != ErrorCode::kContextFull) {
        g.done = true;
        g.stop_reason = StopReason::kError;
        return status.error();
      }
      out.text = g.filter.flush();  // the token that did not fit is not shown
      g.done = true;
      g.stop_reason = StopReason::kContextFull;
      return finished(g, &out);
    }
    out.token = next;
    if (g.filter.push(g.decoder.push(next), &out.text)) {
      g.done = true;
      g.stop_reason = StopReason::kStopString;
      return finished(g, &out);
    }
    if (g.max_tokens >= 0 && g.n_generated >= g.max_tokens) return end(g, StopReason::kMaxTokens, &out);
    return out;
  }

  // Whether a generation was begun and has not ended.
  bool generating() const { return generation_ && !generation_->done; }

  // Saves tokens and KV cache, so a later process can continue this stream without recomputing.
  Status save(const std::string& path) const {
    std::FILE* file = std::fopen(path.c_str(), "wb");
    if (!file) return make_error(ErrorCode::kIo, "%s: cannot write session", path.c_str());
    const std::vector<uint8_t> cache = context_->save_state();
    const Header header = make_header(static_cast<uint64_t>(cache.size()));
    bool ok = std::fwrite(&header, sizeof(header), 1, file) == 1;
    ok = ok && (tokens_.empty() || std::fwrite(tokens_.data(), sizeof(int32_t), tokens_.size(), file) == tokens_.size());
    ok = ok && (cache.empty() || std::fwrite(cache.data(), 1, cache.size(), file) == cache.size());
    ok = ok && (tokens_.empty() || last_logits_.empty() || std::fwrite(last_logits_.data(), sizeof(float), last_logits_.size(), file) == last_logits_.size());
    if (std::fclose(file) != 0 || !ok) return make_error(ErrorCode::kIo, "%s: cannot write session", path.c_str());
    return Status();
  }

  // Restores what save() wrote; the file must come from the same model and session settings.
  Status load(const std::string& path) {
    auto mapped = MappedFile::open(path);
    if (!mapped) return mapped.error();
    const uint8_t* data = mapped->data();
    const uint64_t size = mapped->size();
    Header header;
    if (size < sizeof(header)) return make_error(ErrorCode::kFormat, "%s: too short for a bora session", path.c_str());
    std::memcpy(&header, data, sizeof(header));
    const Header expected = make_header(context_->state_bytes());
    if (std::memcmp(header.magic, expected.magic, sizeof(header.magic)) != 0)
      return make_error(ErrorCode::kFormat, "%s: not a bora session file", path.c_str());
    if (std::memcmp(header.fingerprint, expected.fingerprint, sizeof(header.fingerprint)) != 0 ||
        header.cache_bytes != expected.cache_bytes)
      return make_error(ErrorCode::kFormat, "%s: saved with a different model or cache settings", path.c_str());
    if (header.weights != expected.weights)
      return make_error(ErrorCode::kFormat, "%s: saved with other weights (another quantization or fine-tune)",
                        path.c_str());
    const uint64_t vocab = static_cast<uint64_t>(model_->config().vocab_size);
    if (header.n_tokens > (size - sizeof(header)) / sizeof(int32_t))
      return make_error(ErrorCode::kFormat, "%s: token count %llu runs past the end", path.c_str(),
                        (unsigned long long)header.n_tokens);
    // Without a sliding window the cache holds kv_capacity() positions; a stream longer than that can only
    // come from a forged or foreign file.
    if (context_->window() == 0 && header.n_tokens > static_cast<uint64_t>(context_->kv_capacity()))
      return make_error(ErrorCode::kFormat, "%s: holds %llu tokens, more than this context's %lld positions", path.c_str(),
                        (unsigned long long)header.n_tokens, (long long)context_->kv_capacity());
    const uint64_t logits_bytes = header.n_tokens > 0 ? vocab * sizeof(float) : 0;
    if (size != sizeof(header) + header.n_tokens * sizeof(int32_t) + header.cache_bytes + logits_bytes)
      return make_error(ErrorCode::kFormat, "%s: size %llu does not match its header", path.c_str(), (unsigned long long)size);
    const uint8_t* p = data + sizeof(header);
    std::vector<int32_t> tokens(static_cast<size_t>(header.n_tokens));
    if (!tokens.empty()) std::memcpy(tokens.data(), p, tokens.size() * sizeof(int32_t));
    for (int32_t t : tokens)
      if (t < 0 || static_cast<uint64_t>(t) >= vocab) return make_error(ErrorCode::kFormat, "%s: token %d outside the vocabulary", path.c_str(), t);
    p += tokens.size() * sizeof(int32_t);
    BORA_RETURN_IF_ERROR(context_->restore_state(p, header.cache_bytes, static_cast<int64_t>(header.n_tokens)));
    p += header.cache_bytes;
    last_logits_.assign(static_cast<size_t>(logits_bytes / sizeof(float)), 0.0f);
    if (logits_bytes) std::memcpy(last_logits_.data(), p, logits_bytes);
    tokens_ = std::move(tokens);
    generation_.reset();
    return Status();
  }

 private:
  // What carries over from one step to the next.
  struct Generation {
    Generation(const SampleParams& sample, const Tokenizer& tokenizer, bool reply_starts_text,
               const std::vector<std::string>& stop, int64_t n_prompt)
        : sampler(sample), decoder(tokenizer, reply_starts_text), filter(stop), max_tokens(sample.max_tokens),
          n_prompt_tokens(n_prompt) {}
    Sampler sampler;
    StreamingDecoder decoder;
    StopFilter filter;
    int max_tokens;
    int64_t n_prompt_tokens;
    int64_t n_generated = 0;
    bool done = false;
    StopReason stop_reason = StopReason::kEndOfSequence;
  };

  Status begin(const SampleParams& sample, const std::vector<std::string>& stop, bool reply_starts_text,
               int64_t n_prompt) {
    if (tokenizer_ == nullptr) return no_tokenizer();
    if (tokens_.empty()) return make_error(ErrorCode::kInvalidArgument, "generate: feed a prompt first");
    generation_.emplace(sample, *tokenizer_, reply_starts_text, stop, n_prompt);
    return Status();
  }

  // Ends the generation for `reason`: what the decoder and the stop filter hold becomes text, unless
  // a stop string completes in it (then that is the reason).
  GenerationStep end(Generation& g, StopReason reason, GenerationStep* out) {
    std::string ready;
    if (g.filter.push(g.decoder.flush(), &ready)) {
      reason = StopReason::kStopString;
    } else {
      ready += g.filter.flush();
    }
    out->text += ready;
    g.done = true;
    g.stop_reason = reason;
    return finished(g, out);
  }

  static GenerationStep finished(const Generation& g, GenerationStep* out) {
    out->done = true;
    out->stop_reason = g.stop_reason;
    return std::move(*out);
  }

  // Steps to the end, streaming each non-empty piece; a callback that returns false ends it (kCallback).
  Expected<GenerationResult> run_generation(const StreamCallback& on_piece) {
    GenerationResult result;
    result.n_prompt_tokens = generation_->n_prompt_tokens;
    for (;;) {
      auto next = step();
      if (!next) return next.error();
      result.text += next->text;
      const bool refused = !next->text.empty() && on_piece && !on_piece(next->text);
      if (refused && !next->done) {
        generation_->done = true;
        generation_->stop_reason = StopReason::kCallback;
      }
      if (next->done || refused) {
        result.n_generated = generation_->n_generated;
        result.stop_reason = generation_->stop_reason;
        return result;
      }
    }
  }

  struct Header {
    char magic[8];
    int64_t fingerprint[8];  // model shape + cache geometry: a session only fits its own model
    uint64_t weights;        // weights_fingerprint(): the same shapes with other weights do not fit either
    uint64_t n_tokens;
    uint64_t cache_bytes;
  };

  Header make_header(uint64_t cache_bytes) const {
    Header h;
    std::memset(&h, 0, sizeof(h));
    std::memcpy(h.magic, "BORASES2", 8);
    const ModelConfig& c = model_->config();
    const int64_t values[8] = {c.dim, c.n_layers, c.n_kv_heads, c.head_dim, c.vocab_size, context_->kv_capacity(),
                               context_->window(), c.n_experts};
    std::memcpy(h.fingerprint, values, sizeof(values));
    h.weights = weights_fingerprint(model_->files());
    h.n_tokens = tokens_.size();
    h.cache_bytes = cache_bytes;
    return h;
  }

  static Error no_tokenizer() {
    return make_error(ErrorCode::kMissing, "this model's files have no tokenizer (no tokenizer.ggml.* metadata or tokenizer.model)");
  }

  const Model* model_;
  const Tokenizer* tokenizer_;
  std::unique_ptr<ModelContext> context_;
  SessionParams params_;
  std::vector<int32_t> tokens_;
  std::vector<float> last_logits_;
  std::optional<Generation> generation_;
};

}  // namespace bora

#endif  // BORA_TEXT_SESSION_HPP
