// Why this file exists: a mixture of experts' decoding step runs all its chosen experts in the same few
// parallel loops, however many experts its sequences chose, so a host's job system (HostThreads) is
// called as often for eight sequences as for two.
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace expert_loops_test {

// A job system that runs every part on the calling thread and counts the loops it is given.
struct CountingHost {
  std::atomic<int> loops{0};
  static void run(void* self, int parts, void (*task)(void*, int), void* job) {
    static_cast<CountingHost*>(self)->loops.fetch_add(1);
    for (int part = 0; part < parts; ++part) task(job, part);
  }
};

// Parallel loops of one decoding step of `n_sequences` sequences, each after a prompt of its own, and
// how many distinct experts that step chose in its first layer.
void decode_step_loops(const bora::Model& model, size_t n_sequences, int* loops, size_t* experts) {
  CountingHost host;
  std::vector<int32_t> trace;
  bora::WorkspaceParams wp;
  wp.n_batch = 64;
  wp.n_threads = 2;
  wp.n_threads_batch = 2;
  wp.host_threads.run = &CountingHost::run;
  wp.host_threads.host = &host;
  wp.host_threads.n_threads = 2;
  wp.expert_trace = &trace;
  auto workspace = model.create_workspace(wp);
  REQUIRE(workspace);
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::unique_ptr<bora::KvSequence>> sequences;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<float> logits(static_cast<size_t>(vocab));
  for (size_t i = 0; i < n_sequences; ++i) {
    auto sequence = model.create_sequence(bora::SequenceParams());
    REQUIRE(sequence);
    sequences.push_back(std::move(*sequence));
    tokens.emplace_back();
    for (int64_t t = 0; t < 4; ++t) tokens.back().push_back(static_cast<int32_t>((i * 97 + t * 31 + 5) % vocab));
    bora::BatchSegment prompt;
    prompt.sequence = sequences.back().get();
    prompt.tokens = tokens.back().data();
    prompt.n_tokens = 3;
    prompt.logits = logits.data();
    REQUIRE(model.forward_batch(**workspace, &prompt, 1));
  }
  std::vector<bora::BatchSegment> step(n_sequences);
  std::vector<std::vector<float>> step_logits(n_sequences, std::vector<float>(static_cast<size_t>(vocab)));
  for (size_t i = 0; i < n_sequences; ++i) {
    step[i].sequence = sequences[i].get();
    step[i].tokens = tokens[i].data() + 3;
    step[i].n_tokens = 1;
    step[i].logits = step_logits[i].data();
  }
  trace.clear();
  host.loops = 0;
  REQUIRE(model.forward_batch(**workspace, step.data(), step.size()));
  *loops = host.loops.load();
  // The trace holds layer, position and the k chosen experts per token and layer.
  const int64_t k = model.config().n_experts_used;
  std::vector<bool> chosen(static_cast<size_t>(model.config().n_experts), false);
  for (size_t at = 0; at + 2 + static_cast<size_t>(k) <= trace.size(); at += 2 + static_cast<size_t>(k))
    if (trace[at] == 0)
      for (int64_t r = 0; r < k; ++r) chosen[static_cast<size_t>(trace[at + 2 + static_cast<size_t>(r)])] = true;
  *experts = 0;
  for (bool c : chosen) *experts += c ? 1 : 0;
}

}  // namespace expert_loops_test

TEST_CASE("a Mixtral decoding step runs as many parallel loops for eight sequences as for two") {
  // Two, not one: a loop over the step's tokens (norms, quantization) runs inline for a single token.
  auto model = bora::load_any_model(bora_test::data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf"));
  REQUIRE(model);
  int two_loops = 0, eight_loops = 0;
  size_t two_experts = 0, eight_experts = 0;
  expert_loops_test::decode_step_loops(**model, 2, &two_loops, &two_experts);
  expert_loops_test::decode_step_loops(**model, 8, &eight_loops, &eight_experts);
  CHECK(eight_experts > two_experts);  // the premise: eight sequences chose more experts
  CHECK(two_loops > 0);
  CHECK(eight_loops == two_loops);
}
