// Why this file exists: a model is shared read-only by every session, and each session may run its own
// thread pool, so several sessions decoding at once is the normal load of a server. This runs that load
// on the demo model — sessions with two threads each, started together, sampling and chatting, some
// created while others run — and requires exactly the tokens and text each one gives alone with one
// thread. Small and bounded so the suite can run it under ThreadSanitizer (BORA_SANITIZE_THREAD).
#include <doctest/doctest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bora/bora.hpp"
#include "../support/demo_model.hpp"
#include "../support/golden.hpp"

namespace {

const bora::LanguageModel& shared_model() { return bora_test::demo_model(); }

// One session's whole job: a completion, then a two-turn chat on the same session (reusing its cache).
struct Job {
  std::string prompt;
  uint64_t seed = 0;
  float temperature = 0.0f;
};

struct Outcome {
  std::vector<int32_t> tokens;  // everything the session's cache consumed
  std::string text;             // completion, then both replies
  bool ok = false;
};

Outcome run(const Job& job, int n_threads) {
  Outcome out;
  bora::SessionParams params;
  params.n_ctx = 192;
  params.n_batch = 16;  // several prefill chunks per prompt
  params.n_threads = n_threads;
  params.n_threads_batch = n_threads;
  auto session = shared_model().session(params);
  if (!session) return out;
  bora::SampleParams sample;
  sample.temperature = job.temperature;
  sample.seed = job.seed;
  sample.max_tokens = 12;
  auto completion = session->complete(job.prompt, sample, nullptr);
  if (!completion) return out;
  out.text = completion->text;
  std::vector<bora::ChatMessage> chat = {{"user", job.prompt}};
  auto first = session->chat(chat, sample, nullptr);
  if (!first) return out;
  chat.push_back({"assistant", first->text.empty() ? std::string("ok") : first->text});
  chat.push_back({"user", "And then?"});
  auto second = session->chat(chat, sample, nullptr);
  if (!second) return out;
  out.text += "|" + first->text + "|" + second->text;
  out.tokens = session->tokens();
  out.ok = true;
  return out;
}

const std::vector<Job>& jobs() {
  static const std::vector<Job> all = {
      {"A fool", 1, 0.0f},
      {"Computers are", 2, 0.8f},
      {"Once upon a time, in a small village,", 3, 1.0f},
      {"The capital of France", 4, 0.0f},
  };
  return all;
}

// Each job alone, one thread: what every concurrent run must reproduce.
const std::vector<Outcome>& reference() {
  static const std::vector<Outcome> outcomes = [] {
    std::vector<Outcome> all;
    for (const Job& job : jobs()) all.push_back(run(job, 1));
    return all;
  }();
  return outcomes;
}

// Runs every job on its own thread, all released at once, each session with `n_threads` threads.
std::vector<Outcome> run_together(int n_threads) {
  std::vector<Outcome> outcomes(jobs().size());
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (size_t i = 0; i < jobs().size(); ++i) {
    threads.emplace_back([&, i] {
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      outcomes[i] = run(jobs()[i], n_threads);
    });
  }
  go.store(true, std::memory_order_release);
  for (std::thread& thread : threads) thread.join();
  return outcomes;
}

}  // namespace

TEST_CASE("concurrent sessions: each job alone gives a complete, non-trivial result") {
  for (const Outcome& outcome : reference()) {
    REQUIRE(outcome.ok);
    CHECK(outcome.tokens.size() > 20);
  }
}

TEST_CASE("concurrent sessions: four sessions with two threads each decode at once as they do alone") {
  const std::vector<Outcome> together = run_together(2);
  for (size_t i = 0; i < jobs().size(); ++i) {
    CAPTURE(jobs()[i].prompt);
    REQUIRE(together[i].ok);
    CHECK(together[i].tokens == reference()[i].tokens);
    CHECK(together[i].text == reference()[i].text);
  }
}

TEST_CASE("concurrent sessions: sessions come and go while others decode") {
  // Two long-lived workers each run every job in turn (creating and destroying sessions), offset so
  // that creation, prefill, decoding and teardown of different sessions overlap.
  std::vector<std::vector<Outcome>> per_worker(2);
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w) {
    workers.emplace_back([&, w] {
      for (size_t k = 0; k < jobs().size(); ++k) {
        const size_t index = (k + static_cast<size_t>(w) * 2) % jobs().size();
        per_worker[static_cast<size_t>(w)].push_back(run(jobs()[index], 1 + w));
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  for (int w = 0; w < 2; ++w) {
    for (size_t k = 0; k < jobs().size(); ++k) {
      const size_t index = (k + static_cast<size_t>(w) * 2) % jobs().size();
      CAPTURE(w);
      CAPTURE(jobs()[index].prompt);
      const Outcome& got = per_worker[static_cast<size_t>(w)][k];
      REQUIRE(got.ok);
      CHECK(got.tokens == reference()[index].tokens);
      CHECK(got.text == reference()[index].text);
    }
  }
}
