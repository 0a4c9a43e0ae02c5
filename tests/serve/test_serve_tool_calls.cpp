// Why this file exists: the demo model behind tests/serve/run.sh has a v1 vocabulary, so the node
// tests can only see serve refuse tools. The parts of examples/serve that carry a tool conversation are
// checked here with mistral-common's v3 tokenizer instead: an OpenAI request with tools, an assistant's
// tool_calls and a tool result becomes exactly the tokens the v3 template gives, and replies with calls
// have OpenAI's shape (message.tool_calls, arguments as a string, streamed delta.tool_calls with index).
#include <doctest/doctest.h>

#include <simdjson.h>

#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../../examples/serve/api_request.hpp"
#include "../../examples/serve/api_response.hpp"
#include "../../examples/serve/prompt.hpp"
#include "../support/golden.hpp"

namespace {

const bora::Tokenizer& serve_v3_tokenizer() {
  static const bora::Tokenizer tokenizer = [] {
    auto loaded = bora::Tokenizer::from_file(bora_test::tokenizer_path("mistral_instruct_tokenizer_240323.model.v3"));
    REQUIRE(loaded);
    return std::move(*loaded);
  }();
  return tokenizer;
}

const char* const kWeatherRequest = R"({
  "model": "m",
  "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "abcDEF123", "type": "function",
      "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "abcDEF123", "content": "{\"celsius\": 22}"}
  ],
  "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
  "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
  "parallel_tool_calls": false
})";

}  // namespace

TEST_CASE("serve: an OpenAI tool conversation becomes the v3 template's tokens") {
  serve::GenerationRequest request;
  serve::ApiError error;
  REQUIRE_MESSAGE(serve::parse_generation_request(serve::Api::kChat, kWeatherRequest, &request, &error), error.message);
  CHECK(request.tool_choice == serve::ToolChoice::kNamed);
  CHECK(request.tool_choice_name == "get_weather");
  CHECK_FALSE(request.parallel_tool_calls);
  REQUIRE(request.messages.size() == 3);
  REQUIRE(request.messages[1].tool_calls.size() == 1);
  CHECK(request.messages[1].tool_calls[0].id == "abcDEF123");
  CHECK(request.messages[2].tool_call_id == "abcDEF123");
  CHECK(request.messages[2].name == "get_weather");  // found from the call it answers (the v2 template needs it)

  const bora::Tokenizer& tokenizer = serve_v3_tokenizer();
  serve::PromptBuilder prompts(tokenizer, bora::ChatTemplate::kMistralV3);
  std::vector<int32_t> ids;
  REQUIRE_MESSAGE(prompts.build(request, &ids, &error), error.message);
  bora::ChatTemplateOptions options;
  options.tools = request.tools;
  auto expected = bora::apply_chat_template(tokenizer, bora::ChatTemplate::kMistralV3, request.messages, options);
  REQUIRE(expected);
  CHECK(ids == *expected);
  std::string rendered;
  for (const int32_t id : ids) rendered += tokenizer.piece(id);
  CHECK(rendered.find("[AVAILABLE_TOOLS]") != std::string::npos);
  CHECK(rendered.find("[TOOL_CALLS]") != std::string::npos);
  CHECK(rendered.find("[TOOL_RESULTS]") != std::string::npos);

  // tool_choice "none": the tools are not shown (the history still renders).
  request.tool_choice = serve::ToolChoice::kNone;
  REQUIRE(prompts.build(request, &ids, &error));
  rendered.clear();
  for (const int32_t id : ids) rendered += tokenizer.piece(id);
  CHECK(rendered.find("[AVAILABLE_TOOLS]") == std::string::npos);
  CHECK(rendered.find("[TOOL_RESULTS]") != std::string::npos);

  // The constraint a named choice gets forces [TOOL_CALLS] and then that function only.
  bora::ToolCallGrammarOptions call_options;
  call_options.only_function = "get_weather";
  call_options.max_calls = 1;
  auto constraint = bora::tool_calls_constraint(request.tools, tokenizer, call_options);
  REQUIRE(constraint);
  bora::GrammarMatcher matcher(*constraint);
  REQUIRE(matcher.accept(bora::tool_calls_token(tokenizer)));
  CHECK_FALSE(matcher.accept_text(R"( [{"name": "get_weather", "arguments": {"city": "Rome"}}, {)"));
  CHECK(matcher.accept_text(R"( [{"name": "get_weather", "arguments": {"city": "Rome"}}])"));
  CHECK(matcher.is_complete());
}

TEST_CASE("serve: replies with tool calls have OpenAI's shape") {
  std::vector<bora::ToolCall> calls = {{"abcDEF123", "get_weather", R"({"city":"Paris"})"}, {"xyz987ABC", "noop", "{}"}};
  const serve::ResponseHeader header{"chatcmpl-1", 1700000000, "m"};
  simdjson::dom::parser parser;
  simdjson::dom::element body;
  const std::string whole = serve::completion_body(serve::Api::kChat, header, "", "tool_calls", serve::Usage{5, 7}, calls);
  REQUIRE(parser.parse(whole).get(body) == simdjson::SUCCESS);
  simdjson::dom::element choice = body["choices"].at(0).value_unsafe();
  CHECK(std::string_view(choice["finish_reason"].get_string().value_unsafe()) == "tool_calls");
  simdjson::dom::element message = choice["message"].value_unsafe();
  CHECK(message["content"].is_null());
  simdjson::dom::array listed;
  REQUIRE(message["tool_calls"].get_array().get(listed) == simdjson::SUCCESS);
  REQUIRE(listed.size() == 2);
  simdjson::dom::element first = listed.at(0).value_unsafe();
  CHECK(std::string_view(first["id"].get_string().value_unsafe()) == "abcDEF123");
  CHECK(std::string_view(first["type"].get_string().value_unsafe()) == "function");
  CHECK(std::string_view(first["function"]["name"].get_string().value_unsafe()) == "get_weather");
  CHECK(std::string_view(first["function"]["arguments"].get_string().value_unsafe()) == R"({"city":"Paris"})");
  CHECK(first["index"].error() == simdjson::NO_SUCH_FIELD);

  const std::string chunk = serve::tool_calls_chunk_body(header, calls, true);
  simdjson::dom::parser chunk_parser;
  REQUIRE(chunk_parser.parse(chunk).get(body) == simdjson::SUCCESS);
  CHECK(std::string_view(body["object"].get_string().value_unsafe()) == "chat.completion.chunk");
  simdjson::dom::element delta = body["choices"].at(0)["delta"].value_unsafe();
  REQUIRE(delta["tool_calls"].get_array().get(listed) == simdjson::SUCCESS);
  CHECK(listed.at(1)["index"].get_int64().value_unsafe() == 1);
  CHECK(std::string_view(listed.at(1)["id"].get_string().value_unsafe()) == "xyz987ABC");
  CHECK(body["usage"].is_null());

  // Text the model wrote before its calls stays as content.
  const std::string with_text = serve::completion_body(serve::Api::kChat, header, "Let me look.", "tool_calls", serve::Usage{}, calls);
  simdjson::dom::parser text_parser;
  REQUIRE(text_parser.parse(with_text).get(body) == simdjson::SUCCESS);
  CHECK(std::string_view(body["choices"].at(0)["message"]["content"].get_string().value_unsafe()) == "Let me look.");

  // Call ids as vLLM's Mistral parser expects: 9 characters of [a-zA-Z0-9].
  bora::Xoshiro256 rng(42);
  for (int i = 0; i < 100; ++i) {
    const std::string id = bora::make_tool_call_id(rng);
    CHECK(id.size() == 9);
    for (const char c : id) CHECK(((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')));
  }
}

TEST_CASE("serve: malformed tool requests are 400s naming their param") {
  struct Case {
    const char* body;
    const char* param;
  };
  const Case cases[] = {
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]})", "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]})", "tools"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"})", "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "function", "function": {"name": "f"}}})", "tool_choice"},
      {R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}})", "response_format"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]})", "messages"},
      {R"({"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"function": {"name": "f"}}]}, {"role": "user", "content": "x"}]})", "messages[0]"},
      {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}, {"role": "user", "content": "x"}]})", "messages[0].tool_calls"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.body);
    serve::GenerationRequest request;
    serve::ApiError error;
    CHECK_FALSE(serve::parse_generation_request(serve::Api::kChat, c.body, &request, &error));
    CHECK(error.status == 400);
    CHECK(error.param == c.param);
  }
  // Completions have no tools.
  serve::GenerationRequest request;
  serve::ApiError error;
  CHECK_FALSE(serve::parse_generation_request(serve::Api::kCompletion, R"({"prompt": "x", "tools": [{"type": "function"}]})",
                                              &request, &error));
  CHECK(error.param == "tools");
}
