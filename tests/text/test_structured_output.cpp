// Why this file exists: the promise of structured output is "every output parses and validates", and
// it must hold for any model, even one with random weights. So: many schemas x seeds at temperature 1
// on the demo model and the tiny random models, through Session and the Scheduler, each output parsed
// with simdjson and checked by a small validator written here (not by the engine under test).
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

namespace {

using simdjson::dom::element;

size_t codepoints(std::string_view text) {
  size_t count = 0;
  for (const char c : text) count += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return count;
}

// The JSON Schema subset, checked independently: true when `value` satisfies `schema`.
bool validate(element value, element schema, element root, std::string* why) {
  auto fail = [&](const std::string& what) {
    *why = what + " at " + simdjson::minify(value);
    return false;
  };
  bool flag = false;
  if (schema.get_bool().get(flag) == simdjson::SUCCESS) return flag || fail("schema false");
  std::string_view ref;
  if (schema["$ref"].get_string().get(ref) == simdjson::SUCCESS) {
    element target = root;
    const std::string pointer(ref.substr(2));  // "#/$defs/x"
    size_t start = 0;
    while (start < pointer.size()) {
      size_t end = pointer.find('/', start);
      if (end == std::string::npos) end = pointer.size();
      if (target[pointer.substr(start, end - start)].get(target)) return fail("bad ref");
      start = end + 1;
    }
    return validate(value, target, root, why);
  }
  simdjson::dom::array list;
  if (schema["anyOf"].get_array().get(list) == simdjson::SUCCESS) {
    for (element option : list)
      if (validate(value, option, root, why)) return true;
    return fail("no anyOf option");
  }
  if (schema["enum"].get_array().get(list) == simdjson::SUCCESS) {
    for (element option : list)
      if (simdjson::minify(option) == simdjson::minify(value)) return true;
    return fail("not in enum");
  }
  element constant;
  if (schema["const"].get(constant) == simdjson::SUCCESS && simdjson::minify(constant) != simdjson::minify(value))
    return fail("not the const");
  std::string_view type;
  if (schema["type"].get_string().get(type) == simdjson::SUCCESS) {
    const auto t = value.type();
    using T = simdjson::dom::element_type;
    const bool is_integer = t == T::INT64 || t == T::UINT64;
    const bool ok = (type == "object" && t == T::OBJECT) || (type == "array" && t == T::ARRAY) ||
                    (type == "string" && t == T::STRING) || (type == "integer" && is_integer) ||
                    (type == "number" && (is_integer || t == T::DOUBLE)) || (type == "boolean" && t == T::BOOL) ||
                    (type == "null" && t == T::NULL_VALUE);
    if (!ok) return fail("not of type " + std::string(type));
  }
  int64_t bound = 0;
  if (value.is_int64()) {
    const int64_t v = value.get_int64().value_unsafe();
    if (schema["minimum"].get_int64().get(bound) == simdjson::SUCCESS && v < bound) return fail("below minimum");
    if (schema["maximum"].get_int64().get(bound) == simdjson::SUCCESS && v > bound) return fail("above maximum");
  }
  std::string_view text;
  if (value.get_string().get(text) == simdjson::SUCCESS) {
    if (schema["minLength"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(codepoints(text)) < bound)
      return fail("too short");
    if (schema["maxLength"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(codepoints(text)) > bound)
      return fail("too long");
  }
  simdjson::dom::array items;
  if (value.get_array().get(items) == simdjson::SUCCESS) {
    if (schema["minItems"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(items.size()) < bound)
      return fail("too few items");
    if (schema["maxItems"].get_int64().get(bound) == simdjson::SUCCESS && static_cast<int64_t>(items.size()) > bound)
      return fail("too many items");
    element item_schema;
    if (schema["items"].get(item_schema) == simdjson::SUCCESS) {
      for (element item : items)
        if (!validate(item, item_schema, root, why)) return false;
    }
  }
  simdjson::dom::object object;
  if (value.get_object().get(object) == simdjson::SUCCESS) {
    simdjson::dom::object properties;
    const bool has_properties = schema["properties"].get_object().get(properties) == simdjson::SUCCESS;
    if (schema["required"].get_array().get(list) == simdjson::SUCCESS) {
      for (element name : list) {
        element ignored;
        if (object[name.get_string().value_unsafe()].get(ignored)) return fail("missing required property");
      }
    }
    element additional;
    const bool has_additional = schema["additionalProperties"].get(additional) == simdjson::SUCCESS;
    for (auto field : object) {
      element property_schema;
      if (has_properties && properties[field.key].get(property_schema) == simdjson::SUCCESS) {
        if (!validate(field.value, property_schema, root, why)) return false;
      } else if (has_additional && !validate(field.value, additional, root, why)) {
        return false;
      }
    }
  }
  return true;
}

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
