// Why this file exists: the promise of structured output is "every output parses and validates", and
// it must hold for any model, even one with random weights. So: many schemas x seeds at temperature 1
// on the demo model and the tiny random models, through Session and the Scheduler, each output parsed
// with simdjson and checked by an independent validator (tests/support/json_schema_check.hpp), not by
// the engine under test.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "bora/text/json_schema.hpp"
#include "../support/demo_model.hpp"
#include "../support/golden.hpp"
#include "../support/json_schema_check.hpp"

namespace {

using simdjson::dom::element;
using bora_test::validate;

const char* const kSchemas[] = {
    R"({"type":"object","properties":{"name":{"type":"string","maxLength":6},"hp":{"type":"integer","minimum":0,"maximum":100},
        "hostile":{"type":"boolean"}},"required":["name","hp","hostile"],"additionalProperties":false})",
    R"({"type":"object","properties":{"action":{"enum":["attack","flee","talk","trade"]},"target":{"anyOf":[{"type":"null"},
        {"type":"string","minLength":1,"maxLength":4}]},"delay":{"type":"number"}},"required":["action"]})",
    R"({"type":"array","items":{"type":"integer","minimum":-20,"maximum":20},"minItems":1,"maxItems":4})",
    R"({"type":"object","properties":{"pos":{"$ref":"#/$defs/point"},"path":{"type":"array","items":{"$ref":"#/$defs/point"},
        "maxItems":2}},"required":["pos","path"],"$defs":{"point":{"type":"object","properties":{"x":{"type":"integer",
        "minimum":0,"maximum":9},"y":{"type":"integer","minimum":0,"maximum":9}},"required":["x","y"]}}})",
    R"({"type":["string","null"],"maxLength":3})",
    R"({"const":{"kind":"ack","ok":true}})",
    R"({"type":"object","properties":{"mood":{"type":"string","enum":["calm","angry"]},"say":{"type":"string","maxLength":5}},
        "additionalProperties":false})",
};

// Generates with `schema` from each seed and checks every output; returns how many finished with EOS.
int check_outputs(const bora::LanguageModel& model, const char* schema_text, int seeds, int max_tokens) {
  bora::JsonGrammarOptions options;
  options.max_whitespace = 4;  // random models love whitespace: keep the outputs short
  auto grammar = bora::json_schema_grammar(schema_text, options);
  REQUIRE_MESSAGE(grammar, (grammar ? "" : grammar.error().str()));
  auto constraint = bora::GrammarConstraint::create(std::move(*grammar), *model.tokenizer());
  REQUIRE(constraint);
  simdjson::dom::parser schema_parser;
  element schema;
  REQUIRE(schema_parser.parse(schema_text, std::strlen(schema_text)).get(schema) == simdjson::SUCCESS);
  int finished = 0;
  for (int seed = 0; seed < seeds; ++seed) {
    auto session = model.session(bora::SessionParams());
    REQUIRE(session);
    bora::SampleParams sample;
    sample.temperature = 1.0f;
    sample.top_k = 0;
    sample.top_p = 1.0f;
    sample.min_p = 0.0f;
    sample.seed = static_cast<uint64_t>(seed) * 7919 + 1;
    sample.max_tokens = max_tokens;
    sample.constraint = *constraint;
    auto result = session->complete("JSON:", sample, nullptr);
    REQUIRE(result);
    CAPTURE(schema_text);
    CAPTURE(result->text);
    // The completion continues the prompt's text: it is exactly the bytes the grammar saw.
    REQUIRE(result->stop_reason == bora::StopReason::kEndOfSequence);
    simdjson::dom::parser parser;
    element value;
    REQUIRE(parser.parse(result->text).get(value) == simdjson::SUCCESS);
    std::string why;
    CHECK_MESSAGE(validate(value, schema, schema, &why), why);
    ++finished;
  }
  return finished;
}

}  // namespace

TEST_CASE("structured output: every output of the demo model parses and validates (temperature 1, many seeds)") {
  for (const char* schema : kSchemas) CHECK(check_outputs(bora_test::demo_model(), schema, 3, 400) == 3);
}

TEST_CASE("structured output: the tiny random models finish and validate too") {
  for (const char* file : {"tiny-mistral/tiny-mistral-Q8_0.gguf", "tiny-mixtral/tiny-mixtral-Q8_0.gguf"}) {
    CAPTURE(file);
    auto model = bora::load_any(bora_test::data_path(file));
    REQUIRE(model);
    REQUIRE((*model)->tokenizer() != nullptr);
    for (const char* schema : kSchemas) CHECK(check_outputs(**model, schema, 3, 400) == 3);
  }
}

TEST_CASE("structured output: the scheduler applies the constraint per sequence, and any-object mode") {
  const bora::LanguageModel& model = bora_test::demo_model();
  bora::JsonGrammarOptions options;
  options.max_whitespace = 2;
  options.max_string_length = 6;
  options.max_members = 3;
  auto constraint = bora::GrammarConstraint::create(*bora::json_object_grammar(options), *model.tokenizer());
  REQUIRE(constraint);
  bora::SchedulerParams params;
  params.n_batch = 64;
  params.prefill_chunk = 8;
  auto scheduler = model.scheduler(params);
  REQUIRE(scheduler);
  std::vector<bora::SequenceId> ids;
  for (int i = 0; i < 4; ++i) {
    bora::Request request;
    request.prompt = i % 2 ? "An NPC's state as JSON:" : "Inventory:";
    request.sample.temperature = 1.0f;
    request.sample.seed = static_cast<uint64_t>(i) + 11;
    request.sample.max_tokens = 600;
    if (i < 3) request.sample.constraint = *constraint;  // the last one runs free beside them
    auto id = (*scheduler)->submit(std::move(request));
    REQUIRE(id);
    ids.push_back(*id);
  }
  REQUIRE((*scheduler)->run());
  for (int i = 0; i < 3; ++i) {
    const std::string text = (*scheduler)->take_text(ids[static_cast<size_t>(i)]);
    CAPTURE(text);
    auto status = (*scheduler)->status(ids[static_cast<size_t>(i)]);
    REQUIRE(status);
    CHECK(status->stop_reason == bora::StopReason::kEndOfSequence);
    simdjson::dom::parser parser;
    element value;
    REQUIRE(parser.parse(text).get(value) == simdjson::SUCCESS);
    CHECK(value.is_object());
  }
}

TEST_CASE("structured output: greedy sampling and a chat reply stay inside the grammar") {
  const bora::LanguageModel& model = bora_test::demo_model();
  auto grammar = bora::json_schema_grammar(R"({"enum":["yes","no"]})");
  REQUIRE(grammar);
  auto constraint = bora::GrammarConstraint::create(std::move(*grammar), *model.tokenizer());
  REQUIRE(constraint);
  for (float temperature : {0.0f, 1.0f}) {
    auto session = model.session(bora::SessionParams());
    REQUIRE(session);
    bora::SampleParams sample;
    sample.temperature = temperature;
    sample.constraint = *constraint;
    auto reply = session->chat({{"user", "Is the door open?"}}, sample, nullptr);
    REQUIRE(reply);
    CHECK((reply->text == "\"yes\"" || reply->text == "\"no\""));
    CHECK(reply->stop_reason == bora::StopReason::kEndOfSequence);
  }
}
