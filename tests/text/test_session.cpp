// Why this file exists: sessions are what applications use — prompt in, streamed text out — so their
// promises (greedy equals the reference, seeds reproduce, stops stop, state survives a save, sessions
// share a model across threads, a full context is reported) are checked end to end on the demo model.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

std::unique_ptr<bora::LanguageModel> demo_model(bool exact) {
  bora::LoadParams params;
  params.kv_cache_type = exact ? bora::KvCacheType::kF32 : bora::KvCacheType::kF16;
  auto model = bora::load_any(bora_test::data_path("demo-mistral/demo-mistral-Q4_0.gguf"), params);
  REQUIRE(model);
  REQUIRE((*model)->tokenizer() != nullptr);
  return std::move(*model);
}

bora::SessionParams exact_session() {
  bora::SessionParams params;
  params.n_ctx = 256;
  params.f32_activations = true;
  return params;
}

bora::SampleParams greedy(int max_tokens) {
  bora::SampleParams sample;
  sample.temperature = 0.0f;
  sample.max_tokens = max_tokens;
  return sample;
}

}  // namespace

TEST_CASE("greedy completion reproduces the reference's greedy text for the demo prompts") {
  auto model = demo_model(true);
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE_FALSE(parser.load(bora_test::data_path("demo-mistral/golden/golden.json")).get(root));
  simdjson::dom::array prompts;
  REQUIRE_FALSE(root["greedy"].get_array().get(prompts));
  int checked = 0;
  for (simdjson::dom::element prompt : prompts) {
    std::string_view prompt_text;
    int64_t matching = 0;
    REQUIRE_FALSE(prompt["prompt_text"].get_string().get(prompt_text));
    // The reference's greedy run on the de-quantized Q4_0 weights, and how far it is trustworthy.
    REQUIRE_FALSE(prompt["dequant_torch_greedy"]["Q4_0"]["n_matching_prefix"].get_int64().get(matching));
    std::vector<int32_t> expected_ids;
    simdjson::dom::array ids;
    REQUIRE_FALSE(prompt["dequant_torch_greedy"]["Q4_0"]["ids"].get_array().get(ids));
    for (simdjson::dom::element id : ids) {
      int64_t value = 0;
      REQUIRE_FALSE(id.get_int64().get(value));
      expected_ids.push_back(static_cast<int32_t>(value));
    }
    CAPTURE(std::string(prompt_text));
    auto session = model->session(exact_session());
    REQUIRE(session);
    std::string streamed;
    auto result = session->complete(prompt_text, greedy(32), [&](std::string_view piece) {
      streamed.append(piece);
      return true;
    });
    REQUIRE(result);
    CHECK(result->n_generated == 32);
    CHECK(result->stop_reason == bora::StopReason::kMaxTokens);
    CHECK(streamed == result->text);
    const std::vector<int32_t>& all = session->tokens();
    const std::vector<int32_t> generated(all.end() - 32, all.end());
    CHECK(generated == expected_ids);
    // Streamed text is the decoded continuation, with its leading space.
    CHECK(streamed == model->tokenizer()->decode(all).substr(prompt_text.size()));
    ++checked;
  }
  CHECK(checked == 3);
}

TEST_CASE("a seed reproduces sampled text, whatever the thread count") {
  auto model = demo_model(false);
  bora::SampleParams sample;
  sample.temperature = 0.9f;
  sample.seed = 7;
  sample.max_tokens = 24;
  std::string texts[3];
  const int threads[3] = {1, 2, 1};
  for (int i = 0; i < 3; ++i) {
    bora::SessionParams params;
    params.n_threads = threads[i];
    auto session = model->session(params);
    REQUIRE(session);
    auto result = session->complete("Computers are", sample, nullptr);
    REQUIRE(result);
    texts[i] = result->text;
  }
  CHECK(texts[0] == texts[1]);
  CHECK(texts[0] == texts[2]);
  sample.seed = 8;
  auto other = model->session(bora::SessionParams());
  REQUIRE(other);
  auto different = other->complete("Computers are", sample, nullptr);
  REQUIRE(different);
  CHECK(different->text != texts[0]);
}

TEST_CASE("stop strings, the callback and max_tokens end generation") {
  auto model = demo_model(true);
  {
    auto session = model->session(exact_session());
    REQUIRE(session);
    auto result = session->complete("A fool", greedy(32), nullptr, {"Wall"});
    REQUIRE(result);
    CHECK(result->stop_reason == bora::StopReason::kStopString);
    CHECK(result->text == " is a\n\t\t-- Larry ");
  }
  {
    auto session = model->session(exact_session());
    REQUIRE(session);
    int calls = 0;
    auto result = session->complete("A fool", greedy(32), [&](std::string_view) { return ++calls < 3; });
    REQUIRE(result);
    CHECK(calls == 3);
    CHECK(result->stop_reason == bora::StopReason::kCallback);
  }
  {
    auto session = model->session(exact_session());
    REQUIRE(session);
    auto result = session->complete("A fool", greedy(5), nullptr);
    REQUIRE(result);
    CHECK(result->n_generated == 5);
    CHECK(session->tokens().size() == 3 + 5);
  }
}

TEST_CASE("a saved session continues exactly where it stopped") {
  auto model = demo_model(true);
  auto original = model->session(exact_session());
  REQUIRE(original);
  REQUIRE(original->complete("The best way to", greedy(6), nullptr));
  const std::string path = "bora_test_session.bin";
  REQUIRE(original->save(path));
  auto continued = original->generate(greedy(10), nullptr);
  REQUIRE(continued);

  auto restored = model->session(exact_session());
  REQUIRE(restored);
  REQUIRE(restored->load(path));
  CHECK(restored->tokens().size() == 5 + 6);
  auto again = restored->generate(greedy(10), nullptr);
  REQUIRE(again);
  CHECK(again->text == continued->text);

  // A file from other settings, or garbage, is refused with a reason.
  bora::SessionParams other_settings = exact_session();
  other_settings.n_ctx = 128;
  other_settings.sliding_window = 0;
  auto mismatched = model->session(other_settings);
  REQUIRE(mismatched);
  bora::Status refused = mismatched->load(path);
  REQUIRE_FALSE(refused);
  CHECK(std::string(refused.error().message()).find("different model") != std::string::npos);
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  REQUIRE(f);
  std::fseek(f, 80, SEEK_SET);
  const uint64_t absurd = ~0ull;
  std::fwrite(&absurd, sizeof(absurd), 1, f);  // n_tokens
  std::fclose(f);
  CHECK_FALSE(restored->load(path));
  std::remove(path.c_str());
}

TEST_CASE("sessions on different threads share one model and get the same results") {
  auto model = demo_model(true);
  auto run = [&](const char* prompt) {
    auto session = model->session(exact_session());
    auto result = session->complete(prompt, greedy(16), nullptr);
    return result ? result->text : std::string("error");
  };
  const std::string a = run("A fool"), b = run("Computers are");
  std::string thread_a, thread_b;
  std::thread first([&] { thread_a = run("A fool"); });
  std::thread second([&] { thread_b = run("Computers are"); });
  first.join();
  second.join();
  CHECK(thread_a == a);
  CHECK(thread_b == b);
}

TEST_CASE("a full context is reported, and a sliding window rolls on instead") {
  auto model = demo_model(false);
  bora::SessionParams params;
  params.n_ctx = 16;
  params.sliding_window = 0;
  auto bounded = model->session(params);
  REQUIRE(bounded);
  auto result = bounded->complete("A fool", greedy(100), nullptr);
  REQUIRE(result);
  CHECK(result->stop_reason == bora::StopReason::kContextFull);
  CHECK(bounded->tokens().size() == 16);

  params.sliding_window = -1;  // the file's window of 64: a cache of 64 slots that rolls
  params.n_ctx = 64;
  auto rolling = model->session(params);
  REQUIRE(rolling);
  std::string long_prompt;
  for (int i = 0; i < 12; ++i) long_prompt += "A fool and his money are soon parted. ";
  result = rolling->complete(long_prompt, greedy(10), nullptr);
  REQUIRE(result);
  CHECK(rolling->tokens().size() > 100);
  CHECK(result->n_generated > 0);
  CHECK(result->stop_reason != bora::StopReason::kContextFull);
}

TEST_CASE("an abort callback stops a long prompt") {
  auto model = demo_model(false);
  bora::SessionParams params;
  std::atomic<int> calls{0};
  params.abort_user_data = &calls;
  params.abort_callback = [](void* data) { return ++*static_cast<std::atomic<int>*>(data) > 2; };
  auto session = model->session(params);
  REQUIRE(session);
  std::string long_prompt;
  for (int i = 0; i < 50; ++i) long_prompt += "A fool and his money are soon parted. ";
  auto result = session->complete(long_prompt, greedy(4), nullptr);
  REQUIRE_FALSE(result);
  CHECK(result.error().code() == bora::ErrorCode::kCancelled);
}

TEST_CASE("a chat reuses the cache of the conversation so far") {
  auto model = demo_model(false);
  auto session = model->session(bora::SessionParams());
  REQUIRE(session);
  std::vector<bora::ChatMessage> conversation = {{"user", "Tell me a fortune."}};
  auto first = session->chat(conversation, greedy(8), nullptr);
  REQUIRE(first);
  const auto expected = bora::apply_chat_template(*model->tokenizer(), bora::ChatTemplate::kMistralV1, conversation);
  REQUIRE(expected);
  CHECK(first->n_prompt_tokens == static_cast<int64_t>(expected->size()));
  conversation.push_back({"assistant", first->text});
  conversation.push_back({"user", "Another one."});
  auto second = session->chat(conversation, greedy(8), nullptr);
  REQUIRE(second);
  const auto rendered = bora::apply_chat_template(*model->tokenizer(), bora::ChatTemplate::kMistralV1, conversation);
  REQUIRE(rendered);
  // Only what follows the reused prefix (at least the first turn's prompt) is prefilled again.
  CHECK(second->n_prompt_tokens <= static_cast<int64_t>(rendered->size() - expected->size()));
  CHECK(session->tokens().size() == rendered->size() + static_cast<size_t>(second->n_generated));
}

TEST_CASE("a session saved with other weights of the same shape is refused") {
  // Q4_0 and Q8_0 of the tiny model have identical shapes: only the weights fingerprint tells them apart.
  auto saved_with = bora::load_any(bora_test::data_path("tiny-mistral/tiny-mistral-Q4_0.gguf"));
  auto loaded_with = bora::load_any(bora_test::data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"));
  REQUIRE(saved_with);
  REQUIRE(loaded_with);
  bora::SessionParams params;
  params.n_ctx = 64;
  auto original = (*saved_with)->session(params);
  REQUIRE(original);
  REQUIRE(original->feed({1, 5, 9, 17}));
  const std::string path = "bora_test_session_other_weights.bin";
  REQUIRE(original->save(path));

  auto same_weights = (*saved_with)->session(params);
  REQUIRE(same_weights);
  CHECK(same_weights->load(path));
  auto other_weights = (*loaded_with)->session(params);
  REQUIRE(other_weights);
  bora::Status refused = other_weights->load(path);
  REQUIRE_FALSE(refused);
  CHECK(std::string(refused.error().message()).find("other weights") != std::string::npos);
  std::remove(path.c_str());
}

TEST_CASE("a model whose files carry no tokenizer gives a chat template and refuses text with a reason") {
  auto model = bora::load_any(bora_test::data_path("tiny-mistral/hf"));
  REQUIRE(model);
  REQUIRE((*model)->tokenizer() == nullptr);
  auto session = (*model)->session(bora::SessionParams());
  REQUIRE(session);
  CHECK(session->chat_template() == bora::ChatTemplate::kMistralV1);
  auto reply = session->chat({{"user", "hello"}}, greedy(4), nullptr);
  REQUIRE_FALSE(reply);
  CHECK(reply.error().code() == bora::ErrorCode::kMissing);
  CHECK(session->feed({1, 5, 9}));  // the forward pass itself needs no tokenizer
}
