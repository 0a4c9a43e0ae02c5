// Why this file exists: what a forward pass runs on, split in two so that many sequences can share
// one pass. A KvSequence is one stream's positions (its KV cache); a Workspace is the buffers and
// threads of a forward step over a batch of sequences. A ModelContext pairs one of each, for the
// simple one-stream use (a Session); a batch scheduler holds one Workspace and many sequences.
#ifndef BORA_MODEL_CONTEXT_HPP
#define BORA_MODEL_CONTEXT_HPP

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/base/thread_pool.hpp"

namespace bora {

// One sequence's positions.
struct SequenceParams {
  int64_t n_ctx = 4096;         // positions held when there is no sliding window
  int64_t sliding_window = -1;  // -1: as the file says; 0: no window; N > 0: window of N keys
};

// The buffers and threads of forward steps.
struct WorkspaceParams {
  int64_t n_batch = 512;    // tokens processed together in one step (longer prompts are split)
  int n_threads = 1;        // threads for generation (one token at a time)
  int n_threads_batch = 0;  // threads for steps of several tokens (0 = n_threads)
  // Run the parallel loops on the host's job system instead of threads of our own (n_threads and
  // n_threads_batch are then capped by host_threads.n_threads).
  HostThreads host_threads;
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

// One stream of positions over a loaded model: a sequence and a workspace of its own.
struct ContextParams : SequenceParams, WorkspaceParams {};

// The positions of one sequence: its KV cache, rolling when there is a sliding window.
class KvSequence {
 public:
  virtual ~KvSequence() = default;
  // A copy of this sequence in memory (fork): both continue independently from here, and the copy
  // computes exactly what this one would. kOutOfMemory when the cache does not fit twice.
  virtual Expected<std::unique_ptr<KvSequence>> clone() const = 0;
  // The cache as bytes (for saving a session), and back. restore_state checks the size.
  virtual std::vector<uint8_t> save_state() const = 0;
  virtual Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) = 0;
  virtual uint64_t state_bytes() const = 0;
  // The model that made this sequence (only it can run it).
  const void* owner() const { return owner_; }

  // Forget positions from `position` on, so they can be recomputed differently (a chat that
  // edits its last turn). Possible only while no cache slot has been reused; false otherwise.
  bool truncate(int64_t position) {
    if (position < 0 || position > n_past_ || n_past_ > kv_capacity_) return false;
    n_past_ = position;
    return true;
  }
  // Forget all positions: the next token is at position 0 again.
  void reset() { n_past_ = 0; }
  int64_t n_past() const { return n_past_; }  // positions consumed so far
  int64_t window() const { return window_; }  // effective sliding window, 0 = none
  int64_t kv_capacity() const { return kv_capacity_; }
  // Whether n more tokens fit: always with a rolling window, else while positions remain.
  bool has_room_for(int64_t n) const {
    const bool rolls = window_ > 0 && window_ <= kv_capacity_;
    return n >= 0 && (rolls || n <= kv_capacity_ - n_past_);
  }

 protected:
  const void* owner_ = nullptr;
  int64_t n_past_ = 0;
  int64_t window_ = 0;
  int64_t kv_capacity_ = 0;
};

// Buffers for up to n_batch tokens per step, and the threads that run the step.
class Workspace {
 public:
  virtual ~Workspace() = default;
  const WorkspaceParams& params() const { return params_; }
  int64_t n_batch() const { return params_.n_batch; }
  // The model that made this workspace (only it can use it).
  const void* owner() const { return owner_; }

 protected:
  WorkspaceParams params_;
  const void* owner_ = nullptr;
};

// One sequence's part of a forward step: n_tokens tokens at positions sequence->n_past() ...
struct BatchSegment {
  KvSequence* sequence = nullptr;
  const int32_t* tokens = nullptr;
  int64_t n_tokens = 0;
  float* logits = nullptr;  // [n_tokens][vocab] when all_logits, else the last token's [vocab]; may be null
  bool all_logits = false;
};

// A sequence with a workspace of its own: what a single stream (a Session) runs on.
class ModelContext {
 public:
  ModelContext(std::unique_ptr<KvSequence> sequence, std::unique_ptr<Workspace> workspace, ContextParams params)
      : sequence_(std::move(sequence)), workspace_(std::move(workspace)), params_(std::move(params)) {}

  KvSequence& sequence() { return *sequence_; }
  const KvSequence& sequence() const { return *sequence_; }
  Workspace& workspace() { return *workspace_; }
  const ContextParams& params() const { return params_; }

  bool truncate(int64_t position) { return sequence_->truncate(position); }
  std::vector<uint8_t> save_state() const { return sequence_->save_state(); }
  Status restore_state(const uint8_t* data, uint64_t size, int64_t n_past) {
    return sequence_->restore_state(data, size, n_past);
  }
  uint64_t state_bytes() const { return sequence_->state_bytes(); }
  int64_t n_past() const { return sequence_->n_past(); }
  int64_t window() const { return sequence_->window(); }
  int64_t kv_capacity() const { return sequence_->kv_capacity(); }
  void reset() { sequence_->reset(); }

 private:
  std::unique_ptr<KvSequence> sequence_;
  std::unique_ptr<Workspace> workspace_;
  ContextParams params_;
};

}  // namespace bora

#endif  // BORA_MODEL_CONTEXT_HPP
