// Why this file exists: many conversations over one model at once (a crowd of NPCs, a server's
// users). Every step runs one forward pass for all running sequences, so the weights are read once
// for all of them; sequences join, leave, fork and stop at any step, and a sequence's text is the
// same bits whatever else runs beside it (Model::forward_batch's batch invariance).
#ifndef BORA_TEXT_SCHEDULER_HPP
#define BORA_TEXT_SCHEDULER_HPP

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/model/context.hpp"
#include "bora/model/transformer.hpp"
#include "bora/text/sampler.hpp"
#include "bora/text/session.hpp"
#include "bora/text/stop_filter.hpp"
#include "bora/text/tokenizer.hpp"

namespace bora {

using SequenceId = uint64_t;

struct SchedulerParams : WorkspaceParams {
  // Prompt tokens a sequence processes per step. A running stream waits at most one such chunk per
  // step; a sequence's chunks have this size whatever else runs, which keeps its results invariant.
  int64_t prefill_chunk = 64;
  // Sequences that hold a KV cache at once (running or kept); more wait in the queue. 0 = n_batch.
  int64_t max_sequences = 0;
};

// What one sequence should do. Called back on the thread that calls step().
struct Request {
  std::string prompt;           // tokenized with BOS (when the tokenizer adds one) unless `tokens` is set
  std::vector<int32_t> tokens;  // the prompt as ids, used as given
  SampleParams sample;          // sampling, seed and max_tokens (0: only prefill, e.g. a prompt to fork)
  std::vector<std::string> stop;
  // Positions the sequence's KV cache holds; 0 = the prompt plus max_tokens (or 4096 when
  // max_tokens < 0), within the model's sliding window.
  int64_t n_ctx = 0;
  int64_t sliding_window = -1;  // as SequenceParams
  // Keep the KV cache when the sequence finishes, so fork() can continue it; release() frees it.
  bool keep = false;
  // The output is a text of its own (a chat reply), so its first piece's leading space is dropped as
  // Session::chat does; false continues the prompt's text (a completion keeps " Paris").
  bool starts_text = false;
  // Each piece of text as it is produced; return false to stop this sequence (kCallback).
  std::function<bool(SequenceId, std::string_view piece)> on_piece;
  // The logits each token is sampled from, before sampling; they may be changed (a grammar mask).
  std::function<void(SequenceId, float* logits, int64_t n_vocab)> on_logits;
  // Each token sampled (EOS too), before its text is published: control tokens such as [TOOL_CALLS]
  // have no text, so this is where they show.
  std::function<void(SequenceId, int32_t token)> on_token;
};

enum class SequenceState { kQueued, kPrefilling, kGenerating, kFinished };

struct SequenceStatus {
  SequenceState state = SequenceState::kQueued;
  StopReason stop_reason = StopReason::kEndOfSequence;  // once finished
  Status error;            // a failure of this sequence (it is then finished with kError)
  int64_t n_prompt_tokens = 0;
  int64_t n_generated = 0;
};

class Scheduler {
 public:
  // `tokenizer` may be null when every request gives token ids (text out then stays empty).
  static Expected<std::unique_ptr<Scheduler>> create(const Model& model, const Tokenizer* tokenizer,
                                                     const SchedulerParams& params) {
    if (params.prefill_chunk < 1 || params.prefill_chunk > params.n_batch || params.max_sequences < 0) {
      return make_error(ErrorCode::kInvalidArgument,
                        "scheduler: prefill_chunk (%lld) must be in 1..n_batch (%lld), max_sequences (%lld) >= 0",
                        (long long)params.prefill_chunk, (long long)params.n_batch, (long long)params.max_sequences);
    }
    auto workspace = model.create_workspace(params);
    if (!workspace) return workspace.error();
    std::unique_ptr<Scheduler> scheduler(new (std::nothrow) Scheduler(model, tokenizer, params));
    if (!scheduler) return make_error(ErrorCode::kOutOfMemory, "scheduler: out of memory");
    scheduler->workspace_ = std::move(*workspace);
    return scheduler;
  }

  // Queues a sequence and returns at once (any thread). Checks only what is known now; a
  // sequence that fails later (its cache does not fit, its context fills) finishes on its own.
  Expected<SequenceId> submit(Request request) {
    std::vector<int32_t> prompt = std::move(request.tokens);
    if (prompt.empty()) {
      if (tokenizer_ == nullptr) return make_error(ErrorCode::kMissing, "submit: no tokens, and the model has no tokenizer");
      prompt = tokenizer_->encode(request.prompt, tokenizer_->add_bos_by_default());
    }
    if (prompt.empty()) return make_error(ErrorCode::kInvalidArgument, "submit: the prompt is empty");
    BORA_RETURN_IF_ERROR(check_tokens(prompt));
    std::unique_ptr<Slot> slot(new Slot(std::move(request)));
    slot->prompt = std::move(prompt);
    slot->status.n_prompt_tokens = static_cast<int64_t>(slot->prompt.size());
    std::lock_guard<std::mutex> lock(mutex_);
    const SequenceId id = next_id_++;
    slot->id = id;
    slots_[id] = std::move(slot);
    return id;
  }

  // A new sequence that continues `parent` (finished and kept) with `request`'s prompt (no BOS), its
  // KV cache copied in memory: sixteen NPCs can share one system prompt without recomputing it.
  // An empty prompt samples straight from where the parent stopped.
  Expected<SequenceId> fork(SequenceId parent, Request request) {
    std::vector<int32_t> more = std::move(request.tokens);
    if (more.empty() && !request.prompt.empty()) {
      if (tokenizer_ == nullptr) return make_error(ErrorCode::kMissing, "fork: the model has no tokenizer");
      tokenizer_->encode_append(request.prompt, &more);
    }
    BORA_RETURN_IF_ERROR(check_tokens(more));
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(parent);
    if (found == slots_.end()) return make_error(ErrorCode::kInvalidArgument, "fork: no sequence %llu", (unsigned long long)parent);
    const Slot& from = *found->second;
    if (from.status.state != SequenceState::kFinished || !from.sequence) {
      return make_error(ErrorCode::kInvalidArgument, "fork: sequence %llu is still running or was not kept",
                        (unsigned long long)parent);
    }
    if (from.last_logits.empty() && more.empty()) {
      return make_error(ErrorCode::kInvalidArgument, "fork: sequence %llu has no logits to continue from", (unsigned long long)parent);
    }
    if (!from.sequence->has_room_for(static_cast<int64_t>(more.size()))) {
      return make_error(ErrorCode::kContextFull, "fork: %zu more tokens do not fit sequence %llu's n_ctx %lld", more.size(),
                        (unsigned long long)parent, (long long)from.sequence->kv_capacity());
    }
    auto copy = from.sequence->clone();
    if (!copy) return copy.error();
    std::unique_ptr<Slot> slot(new Slot(std::move(request)));
    slot->sequence = std::move(*copy);
    slot->history = from.history;
    slot->last_logits = from.last_logits;
    slot->prompt = std::move(more);
    slot->status.n_prompt_tokens = static_cast<int64_t>(slot->prompt.size());
    slot->status.state = slot->prompt.empty() ? SequenceState::kGenerating : SequenceState::kPrefilling;
    slot->needs_sample = slot->prompt.empty();
    const SequenceId id = next_id_++;
    slot->id = id;
    slots_[id] = std::move(slot);
    return id;
  }

  // Stops a sequence at the next step (kCancelled); its text so far stays readable.
  void cancel(SequenceId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found != slots_.end()) found->second->cancel_requested = true;
  }

  // Forgets a finished sequence (its text, status and kept cache). False while it runs.
  bool release(SequenceId id) {
    std::unique_ptr<Slot> gone;
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found == slots_.end() || found->second->status.state != SequenceState::kFinished) return false;
    if (found->second->in_step) {  // the step still calls it back: it goes when the step ends
      found->second->release_requested = true;
      return true;
    }
    gone = std::move(found->second);
    slots_.erase(found);
    return true;
  }

  // Where a sequence stands; kInvalidArgument for an unknown (or released) id.
  Expected<SequenceStatus> status(SequenceId id) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found == slots_.end()) return make_error(ErrorCode::kInvalidArgument, "no sequence %llu", (unsigned long long)id);
    return found->second->status;
  }

  // The text produced since the last call (polling, instead of or beside on_piece).
  std::string take_text(SequenceId id) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto found = slots_.find(id);
    if (found == slots_.end()) return std::string();
    std::string text;
    text.swap(found->second->unread);
    return text;
  }

  // True when no sequence is queued or running.
  bool idle() const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& entry : slots_)
      if (entry.second->status.state != SequenceState::kFinished) return false;
    return true;
  }

  // One forward step for every running sequence: one token each for those generating, one chunk
  // each for prompts while the step's n_batch tokens allow. Call it from one thread at a time (a
  // game calls it once per frame). An error here is the whole step's (out of memory, aborted);
  // a sequence's own failures finish that sequence instead.
  Status step() {
    std::lock_guard<std::mutex> stepping(step_mutex_);
    std::vector<Slot*> batch, to_sample;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      plan_step(&batch, &to_sample);
    }
    std::vector<Emitted> emitted;
    for (Slot* slot : to_sample) emitted.push_back(sample_next(slot));
    segments_.clear();
    for (Slot* slot : batch) {
      BatchSegment segment;
      segment.sequence = slot->sequence.get();
      if (slot->status.state == SequenceState::kPrefilling) {
        const int64_t left = static_cast<int64_t>(slot->prompt.size()) - slot->prefilled;
        segment.tokens = slot->prompt.data() + slot->prefilled;
        segment.n_tokens = std::min(params_.prefill_chunk, left);
        if (segment.n_tokens == left) segment.logits = slot->last_logits.data();
      } else {
        segment.tokens = &slot->next_token;
        segment.n_tokens = 1;
        segment.logits = slot->last_logits.data();
      }
      segments_.push_back(segment);
    }
    Status status;
    if (!segments_.empty()) status = model_->forward_batch(*workspace_, segments_.data(), segments_.size());
    if (status) {
      for (size_t i = 0; i < batch.size(); ++i) {
        if (advance(batch[i], segments_[i])) emitted.push_back(sample_next(batch[i]));
      }
    }
    deliver(emitted);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (Slot* slot : batch) slot->in_step = false;
      for (Slot* slot : to_sample) slot->in_step = false;
      for (auto it = slots_.begin(); it != slots_.end();) {
        if (it->second->release_requested && !it->second->in_step) it = slots_.erase(it);
        else ++it;
      }
    }
    return status;
  }

  // Steps until every sequence has finished (or a step fails).
  Status run() {
    while (!idle()) BORA_RETURN_IF_ERROR(step());
    return Status();
  }

  const Model& model() const { return *model_; }
  const SchedulerParams& params() const { return params_; }

 private:
  struct Slot {
    explicit Slot(Request r) : request(std::move(r)), sampler(request.sample), filter(request.stop) {}
    Request request;
    SequenceId id = 0;
    // Owned by the stepping thread once admitted:
    std::unique_ptr<KvSequence> sequence;
    std::vector<int32_t> prompt;   // tokens still to prefill, from `prefilled` on
    int64_t prefilled = 0;
    std::vector<int32_t> history;  // every token consumed (the repetition penalty looks at it)
    std::vector<float> last_logits;
    Sampler sampler;
    StopFilter filter;
    std::unique_ptr<StreamingDecoder> decoder;
    int32_t next_token = 0;
    bool needs_sample = false;  // a forked sequence with no prompt samples from the parent's logits
    // Shared with other threads, under mutex_:
    SequenceStatus status;
    std::string unread;
    bool cancel_requested = false;
    bool in_step = false;  // the current step holds it (release() then waits for the step's end)
    bool release_requested = false;
  };
  // What a step produced for one sequence, published by deliver().
  struct Emitted {
    Slot* slot;
    std::string text;
    int64_t generated = 0;  // tokens sampled this step (0 or 1)
    bool finished = false;
    StopReason reason = StopReason::kEndOfSequence;
  };

  Scheduler(const Model& model, const Tokenizer* tokenizer, const SchedulerParams& params)
      : model_(&model), tokenizer_(tokenizer), params_(params) {
    if (params_.max_sequences == 0) params_.max_sequences = params_.n_batch;
  }

  Status check_tokens(const std::vector<int32_t>& ids) const {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= model_->config().vocab_size) {
        return make_error(ErrorCode::kInvalidArgument, "token %d at index %zu is outside the vocabulary (%lld)", ids[i],
                          i, (long long)model_->config().vocab_size);
      }
    }
    return Status();
  }

  // Under mutex_: applies cancellations, admits queued sequences, and picks this step's batch —
  // every generating sequence first (a running stream is never starved), then prompt chunks.
  void plan_step(std::vector<Slot*>* batch, std::vector<Slot*>* to_sample) {
    int64_t holding = 0;
    for (auto& entry : slots_) {
      Slot& slot = *entry.second;
      if (slot.cancel_requested && slot.status.state != SequenceState::kFinished) {
        finish(&slot, StopReason::kCancelled);
      }
      if (slot.sequence) ++holding;
    }
    for (auto& entry : slots_) {
      Slot& slot = *entry.second;
      if (slot.status.state != SequenceState::kQueued || holding >= params_.max_sequences) continue;
      admit(&slot);
      if (slot.status.state != SequenceState::kFinished) ++holding;
    }
    int64_t budget = workspace_->n_batch();
    // Rotate where decoding starts, so that with more streams than n_batch each waits its turn.
    std::vector<Slot*> generating, prefilling;
    for (auto& entry : slots_) {
      Slot& slot = *entry.second;
      if (slot.status.state == SequenceState::kGenerating && slot.needs_sample) {
        slot.in_step = true;
        to_sample->push_back(&slot);
      }
      if (slot.status.state == SequenceState::kGenerating && !slot.needs_sample) generating.push_back(&slot);
      if (slot.status.state == SequenceState::kPrefilling) prefilling.push_back(&slot);
    }
    if (!generating.empty()) {
      const size_t start = static_cast<size_t>(step_count_ % generating.size());
      std::rotate(generating.begin(), generating.begin() + static_cast<std::ptrdiff_t>(start), generating.end());
    }
    ++step_count_;
    for (Slot* slot : generating) {
      if (budget < 1) break;
      if (!slot->sequence->has_room_for(1)) {
        finish(slot, StopReason::kContextFull);
        continue;
      }
      slot->in_step = true;
      batch->push_back(slot);
      budget -= 1;
    }
    for (Slot* slot : prefilling) {
      const int64_t chunk = std::min(params_.prefill_chunk, static_cast<int64_t>(slot->prompt.size()) - slot->prefilled);
      if (chunk > budget) break;  // whole chunks only: their size must not depend on the batch
      slot->in_step = true;
      batch->push_back(slot);
      budget -= chunk;
    }
  }

  // Under mutex_: gives a queued sequence its KV cache, or finishes it with the reason it cannot run.
  void admit(Slot* slot) {
    const Request& r = slot->request;
    int64_t n_ctx = r.n_ctx;
    if (n_ctx == 0) {
      n_ctx = static_cast<int64_t>(slot->prompt.size()) + (r.sample.max_tokens >= 0 ? r.sample.max_tokens : 4096);
    }
    SequenceParams sp;
    sp.n_ctx = n_ctx;
    sp.sliding_window = r.sliding_window;
    auto sequence = model_->create_sequence(sp);
    if (!sequence) {
      slot->status.error = sequence.error();
      finish(slot, StopReason::kError);
      return;
    }
    if (!(*sequence)->has_room_for(static_cast<int64_t>(slot->prompt.size()))) {
      slot->status.error = make_error(ErrorCode::kContextFull, "the prompt of %zu tokens does not fit n_ctx %lld",
                                      slot->prompt.size(), (long long)(*sequence)->kv_capacity());
      finish(slot, StopReason::kError);
      return;
    }
    slot->sequence = std::move(*sequence);
    slot->last_logits.assign(static_cast<size_t>(model_->config().vocab_size), 0.0f);
    slot->status.state = SequenceState::kPrefilling;
  }

  // Under mutex_.
  void finish(Slot* slot, StopReason reason) {
    slot->status.state = SequenceState::kFinished;
    slot->status.stop_reason = reason;
    if (!slot->request.keep || reason == StopReason::kError) slot->sequence.reset();
  }

  // After the forward pass (stepping thread only): consumes what the segment computed; true when
  // the sequence now has logits to sample from.
  bool advance(Slot* slot, const BatchSegment& segment) {
    slot->history.insert(slot->history.end(), segment.tokens, segment.tokens + segment.n_tokens);
    if (slot->status.state != SequenceState::kPrefilling) return true;
    slot->prefilled += segment.n_tokens;
    if (slot->prefilled < static_cast<int64_t>(slot->prompt.size())) return false;
    slot->prompt.clear();
    slot->prefilled = 0;
    return true;
  }

  // Picks the next token from last_logits and decodes its text, or ends the sequence (stepping
  // thread only; deliver() publishes the outcome).
  Emitted sample_next(Slot* slot) {
    Emitted out;
    out.slot = slot;
    const SampleParams& sample = slot->request.sample;
    if (sample.max_tokens >= 0 && slot->status.n_generated >= sample.max_tokens) {
      out.text = flush_text(slot);
      out.finished = true;
      out.reason = StopReason::kMaxTokens;
      return out;
    }
    if (!slot->decoder && tokenizer_ != nullptr) {
      slot->decoder.reset(new StreamingDecoder(*tokenizer_, slot->request.starts_text));
    }
    const int64_t vocab = model_->config().vocab_size;
    if (slot->request.on_logits) slot->request.on_logits(slot->id, slot->last_logits.data(), vocab);
    const int32_t next = slot->sampler.sample(slot->last_logits.data(), vocab, slot->history);
    slot->needs_sample = false;
    if (slot->request.on_token) slot->request.on_token(slot->id, next);
    if (tokenizer_ != nullptr && next == tokenizer_->eos_id()) {
      out.text = flush_text(slot);
      out.finished = true;
      out.reason = StopReason::kEndOfSequence;
      return out;
    }
    slot->next_token = next;
    out.generated = 1;
    if (slot->decoder && slot->filter.push(slot->decoder->push(next), &out.text)) {
      out.finished = true;
      out.reason = StopReason::kStopString;
      return out;
    }
    // The last token needs no forward pass unless a kept cache must hold it (for fork()).
    if (!slot->request.keep && sample.max_tokens >= 0 && slot->status.n_generated + 1 >= sample.max_tokens) {
      out.text += flush_text(slot);
      out.finished = true;
      out.reason = StopReason::kMaxTokens;
    }
    return out;
  }

  std::string flush_text(Slot* slot) {
    std::string ready;
    if (!slot->decoder) return ready;
    if (slot->filter.push(slot->decoder->flush(), &ready)) return ready;
    return ready + slot->filter.flush();
  }

  // Publishes this step's text and state changes, then calls the callbacks outside the lock (they
  // may call the scheduler).
  void deliver(std::vector<Emitted>& emitted) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (Emitted& e : emitted) {
        Slot* slot = e.slot;
        slot->status.n_generated += e.generated;
        if (slot->status.state == SequenceState::kPrefilling) slot->status.state = SequenceState::kGenerating;
        slot->unread += e.text;
        if (e.finished) finish(slot, e.reason);
      }
    }
    for (Emitted& e : emitted) {
      Slot* slot = e.slot;
      if (e.text.empty() || !slot->request.on_piece) continue;
      if (!slot->request.on_piece(slot->id, e.text) && !e.finished) {
        std::lock_guard<std::mutex> lock(mutex_);
        finish(slot, StopReason::kCallback);
      }
    }
  }

  const Model* model_;
  const Tokenizer* tokenizer_;
  SchedulerParams params_;
  std::unique_ptr<Workspace> workspace_;
  mutable std::mutex mutex_;
  std::mutex step_mutex_;
  std::map<SequenceId, std::unique_ptr<Slot>> slots_;
  SequenceId next_id_ = 1;
  uint64_t step_count_ = 0;
  std::vector<BatchSegment> segments_;
};

}  // namespace bora

#endif  // BORA_TEXT_SCHEDULER_HPP
