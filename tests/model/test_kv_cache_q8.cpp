// Why this file exists: RollingKvCache<q8_0> stores keys and values in half the bytes of f16; this
// measures what that costs in accuracy, as KL divergence against the f16 cache on the same file and
// tokens (the way llama.cpp's perplexity tool compares its -ctk/-ctv q8_0 run), and checks that the
// composition behaves like any other cache: it rolls, forks and saves.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/closeness.hpp"
#include "../support/golden.hpp"

namespace {

std::vector<float> all_logits(const bora::LanguageModel& model, const std::vector<int32_t>& tokens, int64_t window) {
  bora::ContextParams params;
  params.n_ctx = static_cast<int64_t>(tokens.size());
  params.n_batch = 32;  // several prompt chunks, so chunks meet the cache
  params.sliding_window = window;
  auto ctx = model.create_context(params);
  REQUIRE(ctx);
  const int64_t vocab = model.config().vocab_size;
  std::vector<float> logits(tokens.size() * static_cast<size_t>(vocab));
  REQUIRE(model.forward(**ctx, tokens.data(), static_cast<int64_t>(tokens.size()), logits.data(), true));
  return logits;
}

std::unique_ptr<bora::LanguageModel> load(const std::string& file, bora::KvCacheType type) {
  bora::LoadParams params;
  params.kv_cache_type = type;
  auto model = bora::load_any(bora_test::data_path(file), params);
  REQUIRE(model);
  return std::move(*model);
}

}  // namespace

TEST_CASE("a q8_0 KV cache stays within KL 0.005 of the f16 cache on the demo model and the tiny models") {
  SUBCASE("demo model, 384 tokens of held-out text, window 128 (three turns)") {
    std::ifstream in(bora_test::data_path("demo-mistral/heldout.txt"), std::ios::binary);
    REQUIRE(in);
    std::stringstream text;
    text << in.rdbuf();
    auto f16 = load("demo-mistral/demo-mistral-Q4_0.gguf", bora::KvCacheType::kF16);
    auto q8 = load("demo-mistral/demo-mistral-Q4_0.gguf", bora::KvCacheType::kQ8_0);
    std::vector<int32_t> tokens = f16->tokenizer()->encode(text.str(), true);
    REQUIRE(tokens.size() >= 384);
    tokens.resize(384);
    const bora_test::Closeness c = bora_test::compare(all_logits(*f16, tokens, 128), all_logits(*q8, tokens, 128),
                                                      f16->config().vocab_size);
    MESSAGE("demo model: q8_0 cache vs f16 cache, mean KL " << c.mean_kl << ", top-1 agreement " << c.argmax_agree);
    CHECK(c.mean_kl < 0.005);
    CHECK(c.argmax_agree > 0.95);
  }
  SUBCASE("tiny models, the golden tokens, window 16 and none") {
    const char* const files[] = {"tiny-mistral/tiny-mistral-Q8_0.gguf", "tiny-mixtral/tiny-mixtral-Q8_0.gguf"};
    for (const std::string file : files) {
      CAPTURE(file);
      bora_test::Golden golden;
      REQUIRE(bora_test::load_golden(file.substr(0, file.find('/')), "exact", &golden));
      auto f16 = load(file, bora::KvCacheType::kF16);
      auto q8 = load(file, bora::KvCacheType::kQ8_0);
      for (int64_t window : {int64_t{16}, int64_t{0}}) {
        const bora_test::Closeness c = bora_test::compare(all_logits(*f16, golden.tokens, window),
                                                          all_logits(*q8, golden.tokens, window), f16->config().vocab_size);
        MESSAGE(file << " window " << window << ": q8_0 cache vs f16 cache, mean KL " << c.mean_kl << ", top-1 agreement "
                     << c.argmax_agree);
        CHECK(c.mean_kl < 0.005);
        CHECK(c.argmax_agree > 0.9);
      }
    }
  }
}

TEST_CASE("a q8_0 KV cache forks, saves and restores like the others, in half the bytes of f16") {
  auto f16 = load("tiny-mistral/tiny-mistral-Q8_0.gguf", bora::KvCacheType::kF16);
  auto q8 = load("tiny-mistral/tiny-mistral-Q8_0.gguf", bora::KvCacheType::kQ8_0);
  bora::ContextParams params;
  params.n_ctx = 64;
  auto small = f16->create_context(params);
  auto ctx = q8->create_context(params);
  REQUIRE(small);
  REQUIRE(ctx);
  // 32 values take 64 bytes in f16 and 34 in q8_0.
  CHECK((*ctx)->state_bytes() * 64 == (*small)->state_bytes() * 34);

  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mistral", "exact", &golden));
  const int64_t vocab = q8->config().vocab_size;
  std::vector<float> first(static_cast<size_t>(vocab)), again(static_cast<size_t>(vocab));
  REQUIRE(q8->forward(**ctx, golden.tokens.data(), 40, nullptr, false));
  const std::vector<uint8_t> state = (*ctx)->save_state();
  REQUIRE(q8->forward(**ctx, golden.tokens.data() + 40, 10, first.data(), false));
  REQUIRE((*ctx)->restore_state(state.data(), state.size(), 40));
  REQUIRE(q8->forward(**ctx, golden.tokens.data() + 40, 10, again.data(), false));
  CHECK(std::memcmp(first.data(), again.data(), first.size() * sizeof(float)) == 0);
}
