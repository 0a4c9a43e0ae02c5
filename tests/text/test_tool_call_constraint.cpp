// Why this file exists: with tool_choice "any"/"required" or a named function, every reply must be
// calls an app can run. So: the demo model at temperature 1 over many seeds, every reply parsed with
// parse_tool_calls() and each call's arguments checked against its tool's parameter schema by the
// independent validator in tests/support; the v3 vocabulary's [TOOL_CALLS] token forced first; the
// exact spelling Mistral's template (and so the model's training) uses accepted token by token; and
// errors that name the tool.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "bora/text/tool_call_constraint.hpp"
#include "../support/demo_model.hpp"
#include "../support/golden.hpp"
#include "../support/json_schema_check.hpp"

namespace {

const char* const kNpcTools = R"([
  {"type": "function", "function": {"name": "move_to", "description": "Walk somewhere",
    "parameters": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 99},
      "y": {"type": "integer", "minimum": 0, "maximum": 99}, "run": {"type": "boolean"}},
      "required": ["x", "y"], "additionalProperties": false}}},
  {"type": "function", "function": {"name": "say", "description": "Speak a line",
    "parameters": {"type": "object", "properties": {"line": {"type": "string", "maxLength": 12},
      "mood": {"enum": ["calm", "angry", "sad"]}}, "required": ["line", "mood"]}}},
  {"type": "function", "function": {"name": "give", "description": "Hand over items",
    "parameters": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"},
      "minItems": 1, "maxItems": 2}}, "required": ["items"],
      "$defs": {"item": {"type": "object", "properties": {"id": {"type": "string", "maxLength": 4},
        "count": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["id", "count"]}}}}},
  {"type": "function", "function": {"name": "wait", "description": "Do nothing"}}
])";

const bora::Tokenizer& v3_vocabulary_for_tool_calls() {
  static const bora::Tokenizer tokenizer = [] {
    auto loaded = bora::Tokenizer::from_file(bora_test::tokenizer_path("mistral_instruct_tokenizer_240323.model.v3"));
    REQUIRE(loaded);
    return std::move(*loaded);
  }();
  return tokenizer;
}

// The tool's parameters schema (an element of `tools`), or a null element when it has none.
bool find_tool_parameters(simdjson::dom::element tools, const std::string& name, simdjson::dom::element* parameters,
                          bool* has_parameters) {
  simdjson::dom::array list;
  if (tools.get_array().get(list)) return false;
  for (simdjson::dom::element tool : list) {
    std::string_view tool_name;
    if (tool["function"]["name"].get_string().get(tool_name) || tool_name != name) continue;
    *has_parameters = tool["function"]["parameters"].get(*parameters) == simdjson::SUCCESS;
    return true;
  }
  return false;
}

// Generates constrained calls from each seed on the demo model and checks every reply independently.
void check_constrained_calls(const bora::ToolCallGrammarOptions& options, int seeds) {
  const bora::LanguageModel& model = bora_test::demo_model();
  auto constraint = bora::tool_calls_constraint(kNpcTools, *model.tokenizer(), options);
  REQUIRE_MESSAGE(constraint, (constraint ? "" : constraint.error().str()));
  simdjson::dom::parser tools_parser;
  simdjson::dom::element tools;
  REQUIRE(tools_parser.parse(kNpcTools, std::strlen(kNpcTools)).get(tools) == simdjson::SUCCESS);
  for (int seed = 0; seed < seeds; ++seed) {
    auto session = model.session(bora::SessionParams());
    REQUIRE(session);
    bora::SampleParams sample;
    sample.temperature = 1.0f;
    sample.top_k = 0;
    sample.top_p = 1.0f;
    sample.min_p = 0.0f;
    sample.seed = static_cast<uint64_t>(seed) * 104729 + 3;
    sample.max_tokens = 500;
    sample.constraint = *constraint;
    auto reply = session->complete("The guard decides what to do:", sample, nullptr);
    REQUIRE(reply);
    CAPTURE(seed);
    CAPTURE(reply->text);
    REQUIRE(reply->stop_reason == bora::StopReason::kEndOfSequence);
    // Independently of the engine: the reply is a JSON list of {"name", "arguments"} objects.
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    simdjson::dom::array list;
    REQUIRE(parser.parse(reply->text).get(root) == simdjson::SUCCESS);
    REQUIRE(root.get_array().get(list) == simdjson::SUCCESS);
    CHECK(list.size() >= 1);
    CHECK(list.size() <= static_cast<size_t>(options.max_calls));
    for (simdjson::dom::element call : list) {
      std::string_view name;
      simdjson::dom::element arguments, parameters;
      REQUIRE(call["name"].get_string().get(name) == simdjson::SUCCESS);
      REQUIRE(call["arguments"].get(arguments) == simdjson::SUCCESS);
      simdjson::dom::object fields;
      REQUIRE(call.get_object().get(fields) == simdjson::SUCCESS);
      CHECK(fields.size() == 2);
      if (!options.only_function.empty()) CHECK(name == options.only_function);
      bool has_parameters = false;
      REQUIRE_MESSAGE(find_tool_parameters(tools, std::string(name), &parameters, &has_parameters), name);
      CHECK(arguments.is_object());
      std::string why;
      if (has_parameters) CHECK_MESSAGE(bora_test::validate(arguments, parameters, parameters, &why), why);
    }
    // And the library's own reader agrees.
    auto calls = bora::parse_tool_calls(reply->text);
    REQUIRE_MESSAGE(calls, (calls ? "" : calls.error().str()));
    CHECK(calls->size() == list.size());
  }
}

}  // namespace

TEST_CASE("tool call constraint: every reply of the demo model parses and validates (temperature 1, many seeds)") {
  bora::ToolCallGrammarOptions options;
  options.max_calls = 3;
  options.json.max_whitespace = 2;  // random weights love whitespace: keep replies short
  options.json.max_string_length = 8;
  options.json.max_members = 3;
  check_constrained_calls(options, 24);
  options.only_function = "give";  // a named tool_choice
  check_constrained_calls(options, 8);
  options.only_function = "wait";  // no parameters: any object
  options.max_calls = 1;           // parallel_tool_calls: false
  check_constrained_calls(options, 4);
}

TEST_CASE("tool call constraint: [TOOL_CALLS] first, then exactly the spelling Mistral's template writes") {
  const bora::Tokenizer& tokenizer = v3_vocabulary_for_tool_calls();
  const int32_t tool_calls = bora::tool_calls_token(tokenizer);
  REQUIRE(tool_calls >= 0);
  auto constraint = bora::tool_calls_constraint(kNpcTools, tokenizer);
  REQUIRE_MESSAGE(constraint, (constraint ? "" : constraint.error().str()));
  bora::GrammarMatcher matcher(*constraint);
  // Only [TOOL_CALLS] may come first; no text before it.
  size_t allowed = 0;
  for (const uint64_t word : matcher.allowed_tokens()) allowed += static_cast<size_t>(__builtin_popcountll(word));
  CHECK(allowed == 1);
  CHECK(matcher.is_allowed(tool_calls));
  CHECK_FALSE(matcher.is_complete());
  CHECK_FALSE(matcher.accept_text("[{"));
  REQUIRE(matcher.accept(tool_calls));
  CHECK_FALSE(matcher.is_allowed(tokenizer.eos_id()));

  // An assistant turn with calls, rendered by the v3 template as the model was trained to write it:
  // every token after [TOOL_CALLS] is allowed in turn, and EOS after the last.
  bora::ChatMessage turn{"assistant", ""};
  turn.tool_calls.push_back(bora::ToolCall{"", "move_to", R"({"x": 12, "y": 7, "run": true})"});
  turn.tool_calls.push_back(bora::ToolCall{"", "say", R"({"line": "Halt! Who?", "mood": "angry"})"});
  turn.tool_calls.push_back(bora::ToolCall{"", "give", R"({"items": [{"id": "ax", "count": 1}]})"});
  bora::ChatTemplateOptions template_options;
  template_options.tools = kNpcTools;
  auto ids = bora::apply_chat_template(tokenizer, bora::ChatTemplate::kMistralV3, {{"user", "Hi"}, turn}, template_options);
  REQUIRE_MESSAGE(ids, (ids ? "" : ids.error().str()));
  size_t at = 0;
  while (at < ids->size() && (*ids)[at] != tool_calls) ++at;
  REQUIRE(at < ids->size());
  std::string text;
  for (size_t i = at + 1; i < ids->size() && (*ids)[i] != tokenizer.eos_id(); ++i) {
    CAPTURE(text);
    REQUIRE(matcher.accept((*ids)[i]));
    text += tokenizer.piece_text((*ids)[i]);
  }
  CHECK(matcher.is_complete());
  CHECK(matcher.accept(tokenizer.eos_id()));
  auto calls = bora::parse_tool_calls(text);
  REQUIRE(calls);
  CHECK(calls->size() == 3);

  // Wrong names, arguments outside a schema, and a named choice's other tools are refused.
  for (const char* wrong : {R"( [{"name": "fly", "arguments": {}}])", R"( [{"name": "move_to", "arguments": {"x": 100, "y": 1}}])",
                            R"( [{"name": "say", "arguments": {"line": "hi"}}])", R"( [{"arguments": {}, "name": "wait"}])"}) {
    CAPTURE(wrong);
    bora::GrammarMatcher fresh(*constraint);
    REQUIRE(fresh.accept(tool_calls));
    CHECK_FALSE((fresh.accept_text(wrong) && fresh.is_complete()));
  }
  bora::ToolCallGrammarOptions only_say;
  only_say.only_function = "say";
  auto named = bora::tool_calls_constraint(kNpcTools, tokenizer, only_say);
  REQUIRE(named);
  bora::GrammarMatcher say(*named);
  REQUIRE(say.accept(tool_calls));
  CHECK_FALSE(say.accept_text(R"([{"name": "wait")"));
  CHECK(say.accept_text(R"([{"name": "say", "arguments": {"line": "", "mood": "sad"}}])"));
  CHECK(say.is_complete());
}

TEST_CASE("tool call constraint: errors name the tool, the function and the schema keyword") {
  auto error_text = [](const char* tools, const char* only) {
    bora::ToolCallGrammarOptions options;
    options.only_function = only;
    auto grammar = bora::tool_calls_grammar(tools, options);
    return grammar ? std::string() : grammar.error().str();
  };
  CHECK(error_text(kNpcTools, "fly").find("'fly', which is not among the tools") != std::string::npos);
  CHECK(error_text("[]", "").find("empty") != std::string::npos);
  CHECK(error_text("{}", "").find("expected a JSON array") != std::string::npos);
  CHECK(error_text(R"([{"type": "function", "function": {"name": "a b"}}])", "").find("tools[0]: function name 'a b'") !=
        std::string::npos);
  const std::string bad_schema =
      error_text(R"([{"type": "function", "function": {"name": "ok"}}, {"type": "function", "function": {"name": "f",
                   "parameters": {"type": "object", "properties": {"p": {"type": "string", "pattern": "a+"}}}}}])", "");
  CHECK(bad_schema.find("tools[1] (f) parameters") != std::string::npos);
  CHECK(bad_schema.find("\"pattern\" at #/properties/p") != std::string::npos);
}
