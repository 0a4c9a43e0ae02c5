// Why this file exists: HTTP handlers run on many threads and may block on slow clients, while
// bora::Scheduler::step() must run on one thread and never wait for anyone. The Engine owns that one
// thread: it steps while any request is in flight, hands each request's new text to a Completion the
// handler waits on, releases finished sequences, and bounds how many requests may wait (429).
#ifndef BORA_EXAMPLES_SERVE_ENGINE_HPP
#define BORA_EXAMPLES_SERVE_ENGINE_HPP

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "bora/bora.hpp"

namespace serve {

// How a sequence ended, as the scheduler reports it.
struct Outcome {
  bora::StopReason reason = bora::StopReason::kEndOfSequence;
  std::string error;  // for kError: what went wrong
  int64_t n_prompt_tokens = 0;
  int64_t n_generated = 0;
};

// One request's output as it arrives: the handler thread takes text from it; the engine thread
// appends to it and never waits for the handler.
class Completion {
 public:
  // Waits until there is new text or the sequence has ended, at most `timeout`. Moves the new text
  // into `*text`; true once the sequence has ended (`*outcome` is then set, and `*text` is the last).
  bool wait_for(std::chrono::milliseconds timeout, std::string* text, Outcome* outcome) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait_for(lock, timeout, [&] { return !text_.empty() || finished_; });
    text->clear();
    text->swap(text_);
    if (finished_) *outcome = outcome_;
    return finished_;
  }

  // Where in the whole output the marked token came (Engine::submit's mark_token: [TOOL_CALLS]), as
  // a byte offset; -1 until it has. Text before it is content, text after it the calls' JSON.
  int64_t mark() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return mark_;
  }

  // Waits for the end and returns all the text not taken yet.
  void wait_until_finished(std::string* text, Outcome* outcome) {
    std::unique_lock<std::mutex> lock(mutex_);
    ready_.wait(lock, [&] { return finished_; });
    text->append(text_);
    text_.clear();
    *outcome = outcome_;
  }

 private:
  friend class Engine;

  void append(const std::string& text) {
    if (text.empty()) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      text_ += text;
      appended_ += static_cast<int64_t>(text.size());
    }
    ready_.notify_all();
  }
  // On the stepping thread, before the marked token's own text (none: it is a control token) and
  // after all text sampled before it was appended.
  void set_mark() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (mark_ < 0) mark_ = appended_;
  }
  void finish(const Outcome& outcome) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      outcome_ = outcome;
      finished_ = true;
    }
    ready_.notify_all();
  }

  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::string text_;
  int64_t appended_ = 0;  // bytes of text appended so far
  int64_t mark_ = -1;
  bool finished_ = false;
  Outcome outcome_;
  std::string failure_;  // set by the engine (under its own lock) when a whole step failed
};

class Engine {
 public:
  enum class Refusal { kNone, kBusy, kStopping, kInvalid };
  struct Admission {
    Refusal refusal = Refusal::kNone;
    std::string message;  // why, when refused
    bora::SequenceId id = 0;
    std::shared_ptr<Completion> completion;
  };

  // At most `capacity` requests are in flight (running or queued in the scheduler) at once.
  Engine(bora::Scheduler& scheduler, size_t capacity) : scheduler_(scheduler), capacity_(capacity) {}

  // Queues a request (any thread). Refused when full (kBusy), shutting down (kStopping), or when
  // the scheduler rejects it (kInvalid, e.g. a token outside the vocabulary). When the sequence
  // samples `mark_token` (>= 0), its Completion records where (Completion::mark()).
  Admission submit(bora::Request request, int32_t mark_token = -1) {
    Admission admission;
    auto completion = std::make_shared<Completion>();
    if (mark_token >= 0) {
      std::weak_ptr<Completion> weak = completion;
      request.on_token = [weak, mark_token](bora::SequenceId, int32_t token) {
        if (token != mark_token) return;
        if (auto alive = weak.lock()) alive->set_mark();
      };
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      admission.refusal = Refusal::kStopping;
      admission.message = "the server is shutting down";
      return admission;
    }
    if (active_.size() >= capacity_) {
      admission.refusal = Refusal::kBusy;
      admission.message = "too many requests in flight (" + std::to_string(capacity_) + "); retry later";
      return admission;
    }
    auto id = scheduler_.submit(std::move(request));
    if (!id) {
      admission.refusal = Refusal::kInvalid;
      admission.message = id.error().message();
      return admission;
    }
    admission.id = *id;
    admission.completion = std::move(completion);
    active_[*id] = admission.completion;
    wake_.notify_all();
    return admission;
  }

  // Stops a request at the next step (a client went away); its Completion still ends normally.
  void cancel(bora::SequenceId id) { scheduler_.cancel(id); }

  // The scheduler thread: steps while requests are in flight, sleeps otherwise, returns after
  // stop() once every request has ended.
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return !active_.empty() || exiting_; });
      if (active_.empty()) return;  // exiting, and nothing left to finish
      lock.unlock();
      const bora::Status status = scheduler_.step();
      lock.lock();
      if (!status) {
        // A whole step failed (out of memory...): every request in flight ends with that error,
        // rather than the loop retrying the same failing step forever.
        std::fprintf(stderr, "serve: a scheduler step failed: %s\n", status.error().message());
        for (auto& entry : active_) {
          entry.second->failure_ = status.error().message();
          scheduler_.cancel(entry.first);
        }
      }
      publish();
    }
  }

  // Shutdown, first half: refuse new requests and cancel those in flight (they end at the next
  // step, and their handlers answer). run() keeps stepping until they have.
  void stop_accepting() {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    for (auto& entry : active_) scheduler_.cancel(entry.first);
    wake_.notify_all();
  }
  // Shutdown, second half: run() returns once nothing is in flight.
  void stop() {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    exiting_ = true;
    for (auto& entry : active_) scheduler_.cancel(entry.first);
    wake_.notify_all();
  }
  bool stopping() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopping_;
  }
  // Requests running or queued now.
  size_t in_flight() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return active_.size();
  }

  // Responses still being written (a streamed one outlives its sequence by a little); shutdown
  // waits for them so no stream is cut in the middle.
  void response_opened() {
    std::lock_guard<std::mutex> lock(mutex_);
    ++open_responses_;
  }
  void response_closed() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --open_responses_;
    }
    responses_.notify_all();
  }
  // True when every response was closed within `timeout`.
  bool wait_for_responses(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mutex_);
    return responses_.wait_for(lock, timeout, [&] { return open_responses_ == 0; });
  }

 private:
  // Under mutex_, after a step: hands each request its new text, and ends (and releases) the
  // sequences that finished.
  void publish() {
    for (auto it = active_.begin(); it != active_.end();) {
      Completion& completion = *it->second;
      completion.append(scheduler_.take_text(it->first));
      auto status = scheduler_.status(it->first);
      if (status && status->state != bora::SequenceState::kFinished) {
        ++it;
        continue;
      }
      Outcome outcome;
      if (status) {
        outcome.reason = status->stop_reason;
        outcome.n_prompt_tokens = status->n_prompt_tokens;
        outcome.n_generated = status->n_generated;
        if (status->stop_reason == bora::StopReason::kError) outcome.error = status->error.error().message();
      } else {
        outcome.reason = bora::StopReason::kError;
        outcome.error = status.error().message();
      }
      if (!completion.failure_.empty()) {
        outcome.reason = bora::StopReason::kError;
        outcome.error = completion.failure_;
      }
      scheduler_.release(it->first);
      completion.finish(outcome);
      it = active_.erase(it);
    }
  }

  bora::Scheduler& scheduler_;
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable responses_;
  std::map<bora::SequenceId, std::shared_ptr<Completion>> active_;
  bool stopping_ = false;
  bool exiting_ = false;
  int open_responses_ = 0;
};

}  // namespace serve

#endif  // BORA_EXAMPLES_SERVE_ENGINE_HPP
