// Why this file exists: a game loop or an engine's own scheduler drives a Session one token per call
// (Session::step), so the steps must carry the random state, half-decoded characters and stop strings
// from call to call: run to the end they are the same tokens and text as one complete() / chat() call,
// and a character split across byte tokens comes out whole, never as U+FFFD.
#include <doctest/doctest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bora/bora.hpp"
#include "../support/demo_model.hpp"

namespace {

using bora_test::demo_model;

bora::SampleParams sampled(uint64_t seed, int max_tokens) {
  bora::SampleParams sample;
  sample.temperature = 0.9f;
  sample.seed = seed;
  sample.max_tokens = max_tokens;
  return sample;
}

struct Stepped {
  std::string text;
  std::vector<std::string> pieces;
  std::vector<int32_t> tokens;
  bora::StopReason stop_reason = bora::StopReason::kEndOfSequence;
};

Stepped step_to_the_end(bora::Session& session) {
  Stepped out;
  for (int guard = 0; guard < 10000; ++guard) {
    auto step = session.step();
    REQUIRE(step);
    out.text += step->text;
    out.pieces.push_back(step->text);
    if (step->token >= 0) out.tokens.push_back(step->token);
    if (step->done) {
      out.stop_reason = step->stop_reason;
      CHECK_FALSE(session.generating());
      return out;
    }
    CHECK(session.generating());
  }
  FAIL("the generation never ended");
  return out;
}

// The demo model's weights, but the logits after the prompt name the tokens of `script` one by one
// (greedy sampling then picks them): a generation that must produce given byte tokens.
class ScriptedModel final : public bora::Model {
 public:
  ScriptedModel(const bora::Model& inner, int64_t prompt_length, std::vector<int32_t> script)
      : inner_(&inner), prompt_length_(prompt_length), script_(std::move(script)) {}
  const bora::ModelConfig& config() const override { return inner_->config(); }
  const bora::ModelFiles& files() const override { return inner_->files(); }
  const char* preset_name() const override { return inner_->preset_name(); }
  uint64_t weight_bytes_per_token() const override { return inner_->weight_bytes_per_token(); }
  uint64_t weight_bytes_per_step(double experts) const override { return inner_->weight_bytes_per_step(experts); }
  bora::Expected<std::unique_ptr<bora::KvSequence>> create_sequence(const bora::SequenceParams& p) const override {
    return inner_->create_sequence(p);
  }
  bora::Expected<std::unique_ptr<bora::Workspace>> create_workspace(const bora::WorkspaceParams& p) const override {
    return inner_->create_workspace(p);
  }
  bora::Status forward_batch(bora::Workspace& workspace, const bora::BatchSegment* segments, size_t count) const override {
    BORA_RETURN_IF_ERROR(inner_->forward_batch(workspace, segments, count));
    const int64_t vocab = config().vocab_size;
    for (size_t i = 0; i < count; ++i) {
      if (segments[i].logits == nullptr || segments[i].all_logits) continue;
      const int64_t next = segments[i].sequence->n_past() - prompt_length_;
      const int32_t wanted = next >= 0 && next < static_cast<int64_t>(script_.size())
                                 ? script_[static_cast<size_t>(next)]
                                 : static_cast<int32_t>(config().eos_id);
      for (int64_t v = 0; v < vocab; ++v) segments[i].logits[v] = 0.0f;
      segments[i].logits[wanted] = 10.0f;
    }
    return bora::Status();
  }

 private:
  const bora::Model* inner_;
  int64_t prompt_length_;
  std::vector<int32_t> script_;
};

int32_t byte_token(const bora::Tokenizer& tokenizer, unsigned value) {
  char name[8];
  std::snprintf(name, sizeof(name), "<0x%02X>", value);
  for (int32_t id = 0; id < static_cast<int32_t>(tokenizer.vocabulary().pieces.size()); ++id) {
    if (tokenizer.piece(id) == name) return id;
  }
  FAIL("no byte piece " << name);
  return -1;
}

}  // namespace

TEST_CASE("steps run to the end are complete()'s tokens and text for the same seed") {
  const char* const prompts[] = {"Computers are", "The best way to", "A fool"};
  for (int i = 0; i < 3; ++i) {
    CAPTURE(prompts[i]);
    const bora::SampleParams sample = sampled(7 + static_cast<uint64_t>(i), 24);
    const std::vector<std::string> stop = i == 2 ? std::vector<std::string>{"Wall"} : std::vector<std::string>{};
    auto whole = demo_model().session(bora::SessionParams());
    REQUIRE(whole);
    std::string streamed;
    auto result = whole->complete(prompts[i], sample, [&](std::string_view piece) {
      streamed += std::string(piece);
      return true;
    }, stop);
    REQUIRE(result);

    auto stepped_session = demo_model().session(bora::SessionParams());
    REQUIRE(stepped_session);
    REQUIRE(stepped_session->begin_completion(prompts[i], sample, stop));
    const Stepped stepped = step_to_the_end(*stepped_session);
    CHECK(stepped.text == result->text);
    CHECK(stepped.text == streamed);
    CHECK(stepped.stop_reason == result->stop_reason);
    CHECK(stepped_session->tokens() == whole->tokens());
    CHECK(static_cast<int64_t>(stepped.tokens.size()) == result->n_generated);
    // Each sampled token is one step; the step that ends returns what was held back.
    CHECK(stepped.pieces.size() >= stepped.tokens.size());
  }
}

TEST_CASE("a chat reply step by step equals chat(), and later turns continue the same cache") {
  const std::vector<bora::ChatMessage> first = {{"user", "Tell me a fortune."}};
  const bora::SampleParams sample = sampled(11, 16);
  auto whole = demo_model().session(bora::SessionParams());
  auto stepped_session = demo_model().session(bora::SessionParams());
  REQUIRE(whole);
  REQUIRE(stepped_session);
  auto reply = whole->chat(first, sample, nullptr);
  REQUIRE(reply);
  REQUIRE(stepped_session->begin_chat(first, sample));
  const Stepped stepped = step_to_the_end(*stepped_session);
  CHECK(stepped.text == reply->text);
  CHECK(stepped_session->tokens() == whole->tokens());

  std::vector<bora::ChatMessage> second = first;
  second.push_back({"assistant", reply->text});
  second.push_back({"user", "And another."});
  auto again = whole->chat(second, sample, nullptr);
  REQUIRE(again);
  REQUIRE(stepped_session->begin_chat(second, sample));
  CHECK(step_to_the_end(*stepped_session).text == again->text);
  CHECK(stepped_session->tokens() == whole->tokens());
}

TEST_CASE("a character split across byte tokens comes out whole, never as U+FFFD") {
  const bora::Tokenizer& tokenizer = *demo_model().tokenizer();
  // "€" (E2 82 AC) and "🍀" (F0 9F 8D 80) as byte tokens, between ordinary pieces.
  const std::vector<int32_t> prompt = tokenizer.encode("Price:", true);
  std::vector<int32_t> script = tokenizer.encode("five", false);
  for (unsigned byte : {0xE2u, 0x82u, 0xACu, 0xF0u, 0x9Fu, 0x8Du, 0x80u}) script.push_back(byte_token(tokenizer, byte));
  tokenizer.encode_append("luck", &script);
  const ScriptedModel scripted(demo_model(), static_cast<int64_t>(prompt.size()), script);
  auto context = scripted.create_context(bora::SessionParams());
  REQUIRE(context);
  bora::Session session(scripted, &tokenizer, std::move(*context), bora::SessionParams());
  REQUIRE(session.feed(prompt));
  bora::SampleParams greedy;
  greedy.temperature = 0.0f;
  greedy.max_tokens = 64;
  REQUIRE(session.begin_generation(greedy));
  const Stepped stepped = step_to_the_end(session);
  CHECK(stepped.tokens == script);
  CHECK(stepped.stop_reason == bora::StopReason::kEndOfSequence);
  CHECK(stepped.text == " five€🍀 luck");
  CHECK(stepped.text.find("\xEF\xBF\xBD") == std::string::npos);
  const size_t five = tokenizer.encode("five", false).size();
  // The steps that feed the first bytes of a character return nothing; the last byte returns it whole.
  REQUIRE(stepped.pieces.size() >= five + 7);
  CHECK(stepped.pieces[five] == "");
  CHECK(stepped.pieces[five + 1] == "");
  CHECK(stepped.pieces[five + 2] == "€");
  CHECK(stepped.pieces[five + 3] == "");
  CHECK(stepped.pieces[five + 6] == "🍀");
}

TEST_CASE("step() needs a generation, repeats its end, and ends at max_tokens without another step") {
  auto session = demo_model().session(bora::SessionParams());
  REQUIRE(session);
  auto none = session->step();
  REQUIRE_FALSE(none);
  CHECK(none.error().code() == bora::ErrorCode::kInvalidArgument);
  CHECK_FALSE(session->begin_generation(sampled(1, 4)));  // nothing fed yet

  REQUIRE(session->begin_completion("Hello", sampled(1, 0)));
  auto at_once = session->step();
  REQUIRE(at_once);
  CHECK(at_once->done);
  CHECK(at_once->token == -1);
  CHECK(at_once->stop_reason == bora::StopReason::kMaxTokens);

  REQUIRE(session->begin_generation(sampled(1, 3)));
  int steps = 0;
  bora::StopReason reason = bora::StopReason::kError;
  for (;;) {
    auto step = session->step();
    REQUIRE(step);
    ++steps;
    if (step->done) {
      reason = step->stop_reason;
      break;
    }
  }
  REQUIRE(steps <= 3);
  if (reason == bora::StopReason::kMaxTokens) CHECK(steps == 3);  // the third token's step ends it
  auto after = session->step();
  REQUIRE(after);
  CHECK(after->done);
  CHECK(after->text.empty());
  CHECK(after->stop_reason == reason);

  REQUIRE(session->begin_generation(sampled(1, 3)));
  CHECK(session->generating());
  session->reset();
  CHECK_FALSE(session->generating());
  CHECK_FALSE(session->step());
}
