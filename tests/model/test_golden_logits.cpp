// Why this file exists: the forward pass must compute what Mistral AI's reference computes, from every
// file format and weight type; these tests hold each tiny model to the reference's golden logits.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

struct ModelCase {
  const char* model;    // folder under tests/data
  const char* file;     // file or folder within it
  const char* variant;  // golden variant describing its weights
};

const ModelCase kMistralCases[] = {
    {"tiny-mistral", "tiny-mistral-F32.gguf", "exact"},   {"tiny-mistral", "tiny-mistral-BF16.gguf", "exact"},
    {"tiny-mistral", "native", "exact"},                  {"tiny-mistral", "hf", "exact"},
    {"tiny-mistral", "tiny-mistral-Q8_0.gguf", "Q8_0"},   {"tiny-mistral", "tiny-mistral-Q4_0.gguf", "Q4_0"},
    {"tiny-mistral", "tiny-mistral-Q4_K.gguf", "Q4_K"},   {"tiny-mistral", "tiny-mistral-Q5_K.gguf", "Q5_K"},
    {"tiny-mistral", "tiny-mistral-Q6_K.gguf", "Q6_K"},   {"tiny-mistral", "tiny-mistral-Q4_K_M.gguf", "Q4_K_M"},
};
const ModelCase kMixtralCases[] = {
    {"tiny-mixtral", "tiny-mixtral-F16.gguf", "exact"}, {"tiny-mixtral", "native", "exact"},
    {"tiny-mixtral", "hf", "exact"},                    {"tiny-mixtral", "tiny-mixtral-Q8_0.gguf", "Q8_0"},
    {"tiny-mixtral", "tiny-mixtral-Q4_K.gguf", "Q4_K"},
};

// Runs the golden sequence through `model` in chunks of `batch` tokens (0 = all at once) and returns
// every row of logits.
std::vector<float> run_logits(const bora::Model& model, const std::vector<int32_t>& tokens, int64_t window,
                              int64_t batch, int threads = 1, std::vector<int32_t>* trace = nullptr,
                              const std::vector<int64_t>& chunk_sizes = {}, bool f32_activations = true) {
  bora::ContextParams params;
  params.f32_activations = f32_activations;
  params.n_ctx = static_cast<int64_t>(tokens.size());
  params.n_batch = batch > 0 ? batch : static_cast<int64_t>(tokens.size());
  params.n_threads = threads;
  params.sliding_window = window;
  params.expert_trace = trace;
  auto ctx = model.create_context(params);
  REQUIRE(ctx);
  const int64_t vocab = model.config().vocab_size;
  std::vector<float> logits(tokens.size() * static_cast<size_t>(vocab));
  if (chunk_sizes.empty()) {
    REQUIRE(model.forward(**ctx, tokens.data(), static_cast<int64_t>(tokens.size()), logits.data(), true));
  } else {
    int64_t done = 0;
    for (size_t i = 0; done < static_cast<int64_t>(tokens.size()); ++i) {
      const int64_t want = chunk_sizes[i % chunk_sizes.size()];
      const int64_t count = std::min<int64_t>(want, static_cast<int64_t>(tokens.size()) - done);
      REQUIRE(model.forward(**ctx, tokens.data() + done, count, logits.data() + done * vocab, true));
      done += count;
    }
  }
  return logits;
}

std::unique_ptr<bora::Model> open_exact(const ModelCase& c) {
  bora::LoadParams params;
  params.kv_cache_type = bora::KvCacheType::kF32;
  auto model = bora::load_any(bora_test::data_path(std::string(c.model) + "/" + c.file), params);
  if (!model) FAIL_CHECK(model.error().message());
  REQUIRE(model);
  return std::move(*model);
}

}  // namespace

TEST_CASE("tiny-mistral: every format reproduces the reference's W-key window and no-window logits") {
  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mistral", "exact", &golden));
  REQUIRE(golden.tokens.size() == 64);
  for (const ModelCase& c : kMistralCases) {
    CAPTURE(c.file);
    auto model = open_exact(c);
    CHECK(model->config().sliding_window == 16);
    const std::string prefix = bora_test::data_path(std::string(c.model) + "/golden/" + c.variant);
    const auto chunked = bora_test::read_floats(prefix + ".logits_chunked.f32.bin");
    const auto nowindow = bora_test::read_floats(prefix + ".logits_nowindow.f32.bin");
    REQUIRE(chunked.size() == 64 * 512);
    CHECK(bora_test::max_abs_difference(run_logits(*model, golden.tokens, -1, 0), chunked) < 1e-3f);
    CHECK(bora_test::max_abs_difference(run_logits(*model, golden.tokens, 0, 0), nowindow) < 1e-3f);
  }
}

TEST_CASE("tiny-mistral: prefill in chunks of any size, straddling the window, equals one pass") {
  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mistral", "exact", &golden));
  auto model = open_exact(kMistralCases[0]);
  const auto chunked = bora_test::read_floats(bora_test::data_path("tiny-mistral/golden/exact.logits_chunked.f32.bin"));
  const auto full = run_logits(*model, golden.tokens, -1, 0);
  // n_batch limits (internal split) and caller-side chunks, both uneven, across the 16-key window.
  for (int64_t batch : {1, 3, 7, 10, 15, 16, 17, 33}) {
    CAPTURE(batch);
    const auto split = run_logits(*model, golden.tokens, -1, batch);
    CHECK(bora_test::max_abs_difference(split, full) < 1e-4f);
    CHECK(bora_test::max_abs_difference(split, chunked) < 1e-3f);
  }
  const auto uneven = run_logits(*model, golden.tokens, -1, 0, 1, nullptr, {10, 1, 1, 5, 23, 2, 19});
  CHECK(bora_test::max_abs_difference(uneven, chunked) < 1e-3f);
  const auto one_by_one = run_logits(*model, golden.tokens, -1, 0, 1, nullptr, {1});
  CHECK(bora_test::max_abs_difference(one_by_one, chunked) < 1e-3f);
}

TEST_CASE("the thread count does not change a single bit of the logits") {
  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mistral", "exact", &golden));
  for (const ModelCase& c : {kMistralCases[6], kMixtralCases[3]}) {
    CAPTURE(c.file);
    auto model = open_exact(c);
    const auto one = run_logits(*model, golden.tokens, -1, 0, 1);
    CHECK(run_logits(*model, golden.tokens, -1, 0, 2) == one);
    CHECK(run_logits(*model, golden.tokens, -1, 0, 3) == one);
    CHECK(run_logits(*model, golden.tokens, -1, 0, 2, nullptr, {1}) == run_logits(*model, golden.tokens, -1, 0, 1, nullptr, {1}));
    // The int8-activation fast path too.
    const auto fast_one = run_logits(*model, golden.tokens, -1, 0, 1, nullptr, {}, false);
    CHECK(run_logits(*model, golden.tokens, -1, 0, 2, nullptr, {}, false) == fast_one);
    CHECK(run_logits(*model, golden.tokens, -1, 0, 3, nullptr, {}, false) == fast_one);
  }
}

TEST_CASE("tiny-mixtral: every format reproduces the reference logits and its expert choices") {
  for (const ModelCase& c : kMixtralCases) {
    CAPTURE(c.file);
    bora_test::Golden golden;
    REQUIRE(bora_test::load_golden("tiny-mixtral", c.variant, &golden));
    REQUIRE(golden.selected_experts.size() == 2);
    auto model = open_exact(c);
    CHECK(model->config().n_experts == 8);
    CHECK(model->config().n_experts_used == 2);
    const auto expected = bora_test::read_floats(bora_test::data_path(std::string(c.model) + "/golden/" + c.variant +
                                                                      ".logits_chunked.f32.bin"));
    std::vector<int32_t> trace;
    CHECK(bora_test::max_abs_difference(run_logits(*model, golden.tokens, -1, 0, 1, &trace), expected) < 1e-3f);
    // trace: layer, position, expert, expert per token and layer.
    REQUIRE(trace.size() == 2 * 64 * 4);
    int mismatches = 0;
    for (size_t i = 0; i < trace.size(); i += 4) {
      const auto& want = golden.selected_experts[static_cast<size_t>(trace[i])][static_cast<size_t>(trace[i + 1])];
      if (want[0] != trace[i + 2] || want[1] != trace[i + 3]) ++mismatches;
    }
    CHECK(mismatches == 0);
    CHECK(bora_test::max_abs_difference(run_logits(*model, golden.tokens, -1, 0, 1, nullptr, {10, 1, 7, 3}), expected) < 1e-3f);
  }
}

TEST_CASE("an f16 KV cache stays within the documented f16 tolerance") {
  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mistral", "exact", &golden));
  auto model = bora::load_any(bora_test::data_path("tiny-mistral/tiny-mistral-F32.gguf"));  // f16 cache
  REQUIRE(model);
  auto exact_model = open_exact(kMistralCases[0]);
  const auto chunked = bora_test::read_floats(bora_test::data_path("tiny-mistral/golden/exact.logits_chunked.f32.bin"));
  // One token at a time, so every key and value is read back from the cache.
  const auto f16_cache = run_logits(**model, golden.tokens, -1, 0, 1, nullptr, {1});
  const auto f32_cache = run_logits(*exact_model, golden.tokens, -1, 0, 1, nullptr, {1});
  CHECK(bora_test::max_abs_difference(f16_cache, chunked) < 0.05f);
  CHECK(bora_test::max_abs_difference(f32_cache, chunked) < 1e-3f);
  CHECK(bora_test::max_abs_difference(f16_cache, f32_cache) > 1e-4f);  // it really is an f16 cache
}

TEST_CASE("the context refuses positions it cannot hold, and rolls when the window allows") {
  auto model = open_exact(kMistralCases[0]);
  bora::ContextParams params;
  params.n_ctx = 8;
  params.sliding_window = 0;
  auto ctx = model->create_context(params);
  REQUIRE(ctx);
  std::vector<int32_t> tokens(9, 5);
  bora::Status status = model->forward(**ctx, tokens.data(), 9, nullptr, false);
  REQUIRE_FALSE(status);
  CHECK(status.error().code() == bora::ErrorCode::kContextFull);
  params.n_ctx = 16;
  params.sliding_window = -1;  // the file's window of 16: the cache rolls forever
  auto rolling = model->create_context(params);
  REQUIRE(rolling);
  CHECK((*rolling)->kv_capacity() == 16);
  for (int i = 0; i < 5; ++i) CHECK(model->forward(**rolling, tokens.data(), 9, nullptr, false));
  CHECK((*rolling)->n_past() == 45);
  const int32_t bad = 512;
  CHECK_FALSE(model->forward(**rolling, &bad, 1, nullptr, false));
}
