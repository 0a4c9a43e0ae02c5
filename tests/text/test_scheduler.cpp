// Why this file exists: the batch scheduler is what a game or a server talks to, so its promises are
// checked here end to end on the demo model (real vocabulary): a sequence's logits and text are the
// same bits alone or in a crowd, at any thread count; sequences join, leave, are cancelled and forked;
// limits end only the sequence that hits them; several threads may submit while another steps.
#include <doctest/doctest.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bora/bora.hpp"
#include "../support/demo_model.hpp"
#include "../support/golden.hpp"

namespace {

using bora_test::demo_model;

bora::SchedulerParams scheduler_params(int threads) {
  bora::SchedulerParams params;
  params.n_batch = 64;
  params.prefill_chunk = 8;  // prompts take several steps, interleaved with other sequences' decoding
  params.n_threads = threads;
  params.n_threads_batch = threads;
  return params;
}

struct Recorded {
  std::string text;
  std::vector<float> logits;  // every distribution sampled from, concatenated
};

bora::Request request_for(const std::string& prompt, uint64_t seed, int max_tokens, Recorded* record) {
  bora::Request request;
  request.prompt = prompt;
  request.sample.temperature = 0.9f;
  request.sample.seed = seed;
  request.sample.max_tokens = max_tokens;
  if (record != nullptr) {
    request.on_logits = [record](bora::SequenceId, float* logits, int64_t n) {
      record->logits.insert(record->logits.end(), logits, logits + n);
    };
    request.on_piece = [record](bora::SequenceId, std::string_view piece) {
      record->text += std::string(piece);
      return true;
    };
  }
  return request;
}

const char* const kPrompts[] = {
    "Once upon a time, in a village by the sea,",
    "The blacksmith looked up from the anvil and said",
    "Tom",
    "It was the coldest winter anyone could remember, and the wolves had come down from the hills again.",
    "\"Where are you going?\" asked the guard.",
    "She opened the old book",
    "Three ships sailed into the harbour at dawn, their sails torn by the storm that had followed them for days.",
    "Hello",
};

Recorded alone(const std::string& prompt, uint64_t seed, int threads, int max_tokens = 12) {
  Recorded record;
  auto scheduler = demo_model().scheduler(scheduler_params(threads));
  REQUIRE(scheduler);
  REQUIRE((*scheduler)->submit(request_for(prompt, seed, max_tokens, &record)));
  REQUIRE((*scheduler)->run());
  return record;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && !a.empty() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("a sequence samples from the same bits alone or among 7 others that join at other steps") {
  const Recorded reference = alone(kPrompts[0], 42, 1);
  REQUIRE(!reference.text.empty());
  CHECK(same_bits(reference.logits, alone(kPrompts[0], 42, 2).logits));
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    auto scheduler = demo_model().scheduler(scheduler_params(threads));
    REQUIRE(scheduler);
    std::vector<Recorded> records(8);
    // Others first, so the target joins a batch already prefilling and decoding.
    for (int i = 1; i < 5; ++i) REQUIRE((*scheduler)->submit(request_for(kPrompts[i], 100 + i, 10 + i, &records[i])));
    REQUIRE((*scheduler)->step());
    REQUIRE((*scheduler)->step());
    auto target = (*scheduler)->submit(request_for(kPrompts[0], 42, 12, &records[0]));
    REQUIRE(target);
    for (int i = 5; i < 8; ++i) {
      REQUIRE((*scheduler)->step());
      REQUIRE((*scheduler)->submit(request_for(kPrompts[i], 100 + i, 6 + i, &records[i])));
    }
    REQUIRE((*scheduler)->run());
    CHECK(same_bits(reference.logits, records[0].logits));
    CHECK(reference.text == records[0].text);
    auto status = (*scheduler)->status(*target);
    REQUIRE(status);
    CHECK(status->state == bora::SequenceState::kFinished);
    CHECK(status->n_generated <= 12);
    CHECK((*scheduler)->take_text(*target) == records[0].text);  // polling sees what the callback saw
    // Every other sequence also matches its run alone.
    for (int i = 1; i < 8; ++i) {
      const int max_tokens = i < 5 ? 10 + i : 6 + i;
      CHECK(same_bits(alone(kPrompts[i], 100 + i, 1, max_tokens).logits, records[static_cast<size_t>(i)].logits));
    }
  }
}

TEST_CASE("every sequence of a crowd gets the text it gets alone") {
  auto scheduler = demo_model().scheduler(scheduler_params(2));
  REQUIRE(scheduler);
  std::vector<Recorded> records(8);
  for (int i = 0; i < 8; ++i) REQUIRE((*scheduler)->submit(request_for(kPrompts[i], 7 + i, 12, &records[i])));
  REQUIRE((*scheduler)->run());
  for (int i = 0; i < 8; ++i) {
    CAPTURE(i);
    const Recorded solo = alone(kPrompts[i], 7 + i, 1);
    CHECK(solo.text == records[i].text);
    CHECK(same_bits(solo.logits, records[i].logits));
  }
}

TEST_CASE("cancelling a sequence mid-prompt or mid-stream leaves the others untouched") {
  const Recorded reference = alone(kPrompts[3], 5, 1);
  auto scheduler = demo_model().scheduler(scheduler_params(1));
  REQUIRE(scheduler);
  Recorded kept, cut_early, cut_late;
  auto keep = (*scheduler)->submit(request_for(kPrompts[3], 5, 12, &kept));
  auto early = (*scheduler)->submit(request_for(kPrompts[6], 6, 12, &cut_early));  // a long prompt
  auto late = (*scheduler)->submit(request_for(kPrompts[1], 7, 40, &cut_late));
  REQUIRE(keep);
  REQUIRE(early);
  REQUIRE(late);
  REQUIRE((*scheduler)->step());  // the long prompt is still prefilling
  CHECK((*scheduler)->status(*early)->state == bora::SequenceState::kPrefilling);
  (*scheduler)->cancel(*early);
  for (int i = 0; i < 6; ++i) REQUIRE((*scheduler)->step());
  (*scheduler)->cancel(*late);
  REQUIRE((*scheduler)->run());
  CHECK((*scheduler)->status(*early)->stop_reason == bora::StopReason::kCancelled);
  CHECK(cut_early.text.empty());
  CHECK((*scheduler)->status(*late)->stop_reason == bora::StopReason::kCancelled);
  CHECK((*scheduler)->status(*late)->n_generated < 40);
  CHECK(same_bits(reference.logits, kept.logits));
  // Released sequences are forgotten; running ones cannot be released.
  CHECK((*scheduler)->release(*early));
  CHECK_FALSE((*scheduler)->status(*early));
}

TEST_CASE("a forked sequence equals recomputing its prefix, and sixteen forks share one prefill") {
  // The prefix is a whole number of prefill chunks, so recomputing prefix + continuation splits the
  // prompt at the same places the fork does.
  const bora::Tokenizer& tokenizer = *demo_model().tokenizer();
  std::vector<int32_t> prefix = tokenizer.encode("The innkeeper wiped the counter and greeted every traveller.", true);
  prefix.resize(16);
  auto scheduler = demo_model().scheduler(scheduler_params(2));
  REQUIRE(scheduler);
  bora::Request base;
  base.tokens = prefix;
  base.sample.max_tokens = 0;  // prefill only
  base.keep = true;
  base.n_ctx = 64;
  auto parent = (*scheduler)->submit(base);
  REQUIRE(parent);
  REQUIRE((*scheduler)->run());
  CHECK((*scheduler)->status(*parent)->stop_reason == bora::StopReason::kMaxTokens);

  std::vector<Recorded> forks(16);
  std::vector<std::string> lines;
  for (int i = 0; i < 16; ++i) lines.push_back(" Traveller " + std::to_string(i) + " asked for");
  for (int i = 0; i < 16; ++i) REQUIRE((*scheduler)->fork(*parent, request_for(lines[i], 300 + i, 8, &forks[i])));
  REQUIRE((*scheduler)->run());

  for (int i : {0, 7, 15}) {
    CAPTURE(i);
    std::vector<int32_t> whole = prefix;
    tokenizer.encode_append(lines[i], &whole);
    auto fresh = demo_model().scheduler(scheduler_params(1));
    REQUIRE(fresh);
    Recorded recomputed;
    bora::Request request = request_for("", 300 + i, 8, &recomputed);
    request.tokens = whole;
    request.n_ctx = 64;
    REQUIRE((*fresh)->submit(request));
    REQUIRE((*fresh)->run());
    CHECK(same_bits(recomputed.logits, forks[i].logits));
    CHECK(recomputed.text == forks[i].text);
  }
  CHECK((*scheduler)->release(*parent));
  CHECK_FALSE((*scheduler)->fork(*parent, request_for(" more", 1, 4, nullptr)));  // gone
}

TEST_CASE("limits end the sequence that hits them, with a reason; bad requests are refused at once") {
  auto scheduler = demo_model().scheduler(scheduler_params(1));
  REQUIRE(scheduler);
  bora::Request too_long = request_for(kPrompts[6], 1, 8, nullptr);
  too_long.n_ctx = 8;  // the prompt alone needs more
  too_long.sliding_window = 0;
  bora::Request fills = request_for(kPrompts[2], 2, 100, nullptr);
  fills.n_ctx = 10;
  fills.sliding_window = 0;
  bora::Request huge = request_for(kPrompts[2], 3, 4, nullptr);
  huge.n_ctx = int64_t{1} << 40;
  huge.sliding_window = 0;
  Recorded normal;
  auto a = (*scheduler)->submit(too_long);
  auto b = (*scheduler)->submit(fills);
  auto c = (*scheduler)->submit(huge);
  auto d = (*scheduler)->submit(request_for(kPrompts[0], 42, 12, &normal));
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  REQUIRE(d);
  REQUIRE((*scheduler)->run());
  auto status_a = (*scheduler)->status(*a);
  CHECK(status_a->stop_reason == bora::StopReason::kError);
  CHECK(status_a->error.error().code() == bora::ErrorCode::kContextFull);
  CHECK((*scheduler)->status(*b)->stop_reason == bora::StopReason::kContextFull);
  auto status_c = (*scheduler)->status(*c);
  CHECK(status_c->stop_reason == bora::StopReason::kError);
  CHECK(status_c->error.error().code() == bora::ErrorCode::kOutOfMemory);
  CHECK(same_bits(alone(kPrompts[0], 42, 1).logits, normal.logits));

  bora::Request outside;
  outside.tokens = {1, static_cast<int32_t>(demo_model().config().vocab_size)};
  CHECK_FALSE((*scheduler)->submit(outside));
  bora::SchedulerParams wrong = scheduler_params(1);
  wrong.prefill_chunk = wrong.n_batch + 1;
  CHECK_FALSE(demo_model().scheduler(wrong));
}

TEST_CASE("more streams than a step holds take turns, and a callback can stop its own sequence") {
  bora::SchedulerParams params = scheduler_params(1);
  params.n_batch = 8;
  params.prefill_chunk = 8;
  auto scheduler = demo_model().scheduler(params);
  REQUIRE(scheduler);
  std::vector<Recorded> records(12);
  std::vector<bora::SequenceId> ids;
  for (int i = 0; i < 12; ++i) {
    auto id = (*scheduler)->submit(request_for(kPrompts[i % 8], 50 + i, 6, &records[i]));
    REQUIRE(id);
    ids.push_back(*id);
  }
  int pieces = 0;
  bora::Request stopper = request_for(kPrompts[1], 9, 50, nullptr);
  stopper.on_piece = [&pieces](bora::SequenceId, std::string_view) { return ++pieces < 3; };
  auto stopped = (*scheduler)->submit(stopper);
  REQUIRE(stopped);
  REQUIRE((*scheduler)->run());
  for (int i = 0; i < 12; ++i) {
    CAPTURE(i);
    auto status = (*scheduler)->status(ids[static_cast<size_t>(i)]);
    CHECK(status->state == bora::SequenceState::kFinished);
    const bool ended = status->stop_reason == bora::StopReason::kEndOfSequence && status->n_generated < 6;
    CHECK((ended || (status->stop_reason == bora::StopReason::kMaxTokens && status->n_generated == 6)));
  }
  CHECK(same_bits(alone(kPrompts[4], 54, 1, 6).logits, records[4].logits));
  CHECK((*scheduler)->status(*stopped)->stop_reason == bora::StopReason::kCallback);
  CHECK(pieces == 3);
}

TEST_CASE("several threads submit while another steps, and each gets its text alone") {
  auto scheduler = demo_model().scheduler(scheduler_params(2));
  REQUIRE(scheduler);
  constexpr int kThreads = 3, kEach = 2;
  std::vector<Recorded> records(kThreads * kEach);
  std::vector<bora::SequenceId> ids(kThreads * kEach);
  std::atomic<int> submitted{0};
  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int k = 0; k < kEach; ++k) {
        const int i = t * kEach + k;
        auto id = (*scheduler)->submit(request_for(kPrompts[i], 900 + i, 8, &records[static_cast<size_t>(i)]));
        if (id) ids[static_cast<size_t>(i)] = *id;
        submitted.fetch_add(1);
        std::this_thread::yield();
      }
    });
  }
  int steps = 0;
  while ((submitted.load() < kThreads * kEach || !(*scheduler)->idle()) && steps < 10000) {
    REQUIRE((*scheduler)->step());
    ++steps;
  }
  for (std::thread& t : submitters) t.join();
  REQUIRE((*scheduler)->run());
  for (int i = 0; i < kThreads * kEach; ++i) {
    CAPTURE(i);
    CHECK((*scheduler)->status(ids[static_cast<size_t>(i)])->state == bora::SequenceState::kFinished);
    CHECK(alone(kPrompts[i], 900 + i, 1, 8).text == records[static_cast<size_t>(i)].text);
  }
}

TEST_CASE("a host's job system can run the parallel loops, with the same results") {
  struct Host {
    std::atomic<int> calls{0};
    static void run(void* self, int parts, void (*task)(void*, int), void* job) {
      static_cast<Host*>(self)->calls.fetch_add(1);
      std::vector<std::thread> workers;
      for (int p = 1; p < parts; ++p) workers.emplace_back(task, job, p);
      task(job, 0);
      for (std::thread& w : workers) w.join();
    }
  } host;
  bora::SchedulerParams params = scheduler_params(2);
  params.host_threads.run = &Host::run;
  params.host_threads.host = &host;
  params.host_threads.n_threads = 2;
  auto scheduler = demo_model().scheduler(params);
  REQUIRE(scheduler);
  Recorded record;
  REQUIRE((*scheduler)->submit(request_for(kPrompts[0], 42, 12, &record)));
  REQUIRE((*scheduler)->run());
  CHECK(host.calls.load() > 0);
  CHECK(same_bits(alone(kPrompts[0], 42, 1).logits, record.logits));
}
