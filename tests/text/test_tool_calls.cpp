// Why this file exists: function calling only works if the conversation is laid out in exactly the
// tokens Mistral trained on; mistral-common's own tool samples (chat_samples/get_weather_full,
// get_weather_no_history, several_calls with tokens_v3.json, copied verbatim) are the goldens here,
// beside the parsing of the model's [TOOL_CALLS] output, well-formed and broken.
#include <doctest/doctest.h>
#include <simdjson.h>

#include <string>
#include <vector>

#include "bora/base/random.hpp"
#include "bora/text/chat_request.hpp"
#include "bora/text/chat_template.hpp"
#include "bora/text/tool_calls.hpp"
#include "../support/golden.hpp"

namespace {


std::string read(const std::string& path) {
  simdjson::padded_string text;
  REQUIRE_MESSAGE(simdjson::padded_string::load(path).get(text) == simdjson::SUCCESS, path);
  return std::string(text.data(), text.size());
}

const bora::Tokenizer& tokenizer(const char* file) {
  static std::vector<std::pair<std::string, bora::Tokenizer>> cache;
  for (auto& entry : cache)
    if (entry.first == file) return entry.second;
  auto loaded = bora::Tokenizer::from_file(bora_test::tokenizer_path(file));
  REQUIRE(loaded);
  cache.reserve(2);
  cache.emplace_back(file, std::move(*loaded));
  return cache.back().second;
}
const bora::Tokenizer& v1() { return tokenizer("tokenizer.model.v1"); }
const bora::Tokenizer& v3() { return tokenizer("mistral_instruct_tokenizer_240323.model.v3"); }

std::vector<int32_t> golden_tokens(const std::string& sample) {
  const std::string json = read(bora_test::tokenizer_path(std::string("chat_samples/") + sample + "/tokens_v3.json"));
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array tokens;
  REQUIRE(parser.parse(json).get(root) == simdjson::SUCCESS);
  REQUIRE(root["tokens"].get_array().get(tokens) == simdjson::SUCCESS);
  std::vector<int32_t> ids;
  for (simdjson::dom::element token : tokens) ids.push_back(static_cast<int32_t>(token.get_int64().value_unsafe()));
  return ids;
}

}  // namespace

TEST_CASE("chat template v3 with tools: mistral-common's tool samples, token for token") {
  for (const char* sample : {"get_weather_full", "get_weather_no_history", "several_calls"}) {
    CAPTURE(sample);
    std::string tools;
    auto messages = bora::parse_chat_request(read(bora_test::tokenizer_path(std::string("chat_samples/") + sample + "/sample.json")), sample, &tools);
    REQUIRE_MESSAGE(messages, (messages ? "" : messages.error().str()));
    CHECK_FALSE(tools.empty());
    bora::ChatTemplateOptions options;
    options.tools = tools;
    auto ids = bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV3, *messages, options);
    REQUIRE_MESSAGE(ids, (ids ? "" : ids.error().str()));
    CHECK(*ids == golden_tokens(sample));
    std::string rendered;
    for (const int32_t id : *ids) rendered += v3().piece(id);
    std::string text = read(bora_test::tokenizer_path(std::string("chat_samples/") + sample + "/text_v3.txt"));
    while (!text.empty() && text.back() == '\n') text.pop_back();
    CHECK(rendered == text);

    // v1 has no tool tokens: a clear error, not a silently different prompt.
    auto refused = bora::apply_chat_template(v1(), bora::ChatTemplate::kMistralV1, *messages, options);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code() == bora::ErrorCode::kUnsupported);
    CHECK(refused.error().str().find("no tool tokens") != std::string::npos);
  }
}

TEST_CASE("chat template v2 with tools: list-shaped results, no tool history before the last user turn") {
  std::vector<bora::ChatMessage> messages = {{"user", "Weather in Paris?"}, {"assistant", ""}, {"tool", "22"},
                                             {"assistant", "It is 22."}, {"user", "And Rome?"}};
  messages[1].tool_calls.push_back(bora::ToolCall{"abcDEF123", "get_weather", "{\"city\":\"Paris\"}"});
  messages[2].name = "get_weather";
  messages[2].tool_call_id = "abcDEF123";
  messages.push_back(messages[1]);
  messages.back().tool_calls[0].arguments = "{\"city\":\"Rome\",\"days\":1.5}";
  messages.push_back(messages[2]);
  messages.back().content = "{\"t\": 30}";
  bora::ChatTemplateOptions options;
  options.tools = R"([{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object"},"strict":true}}])";
  auto v2 = bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV2, messages, options);
  REQUIRE(v2);
  std::string rendered;
  for (const int32_t id : *v2) rendered += v3().piece(id);
  CHECK(rendered ==
        "<s>[INST]▁Weather▁in▁Paris?[/INST]▁It▁is▁22.</s>[AVAILABLE_TOOLS]▁[{\"type\":▁\"function\",▁\"function\":▁{\"name\":"
        "▁\"get_weather\",▁\"description\":▁\"Weather\",▁\"parameters\":▁{\"type\":▁\"object\"}}}][/AVAILABLE_TOOLS][INST]▁And▁Rome?"
        "[/INST][TOOL_CALLS]▁[{\"name\":▁\"get_weather\",▁\"arguments\":▁{\"city\":▁\"Rome\",▁\"days\":▁1.5}}]</s>[TOOL_RESULTS]▁"
        "[{\"name\":▁\"get_weather\",▁\"content\":▁{\"t\":▁30}}][/TOOL_RESULTS]");
  // A tool result must say which call it answers; content and calls do not mix.
  CHECK_FALSE(bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV3, {{"user", "a"}, {"tool", "x"}}));
  messages[1].content = "text too";
  CHECK_FALSE(bora::apply_chat_template(v3(), bora::ChatTemplate::kMistralV3, messages, options));
}

TEST_CASE("tool calls: the model's [TOOL_CALLS] output parses into calls; broken output is an error") {
  auto calls = bora::parse_tool_calls(
      R"([{"name": "get_weather", "arguments": {"city": "Paris", "n": 1.5}, "id": "abcDEF123"}, {"name": "noop", "arguments": {}}])");
  REQUIRE(calls);
  REQUIRE(calls->size() == 2);
  CHECK((*calls)[0].name == "get_weather");
  CHECK((*calls)[0].arguments == R"({"city":"Paris","n":1.5})");
  CHECK((*calls)[0].id == "abcDEF123");
  CHECK((*calls)[1].arguments == "{}");
  CHECK((*calls)[1].id.empty());
  auto single = bora::parse_tool_calls(R"({"name": "wave", "arguments": "{\"hand\": \"left\"}"})");
  REQUIRE(single);
  CHECK((*single)[0].arguments == "{\"hand\": \"left\"}");
  for (const char* broken : {"[{\"name\": \"x\", \"arguments\": {\"a\": ", "[{\"arguments\": {}}]", "[{\"name\": \"x\", \"arguments\": 3}]", ""}) {
    CAPTURE(broken);
    auto parsed = bora::parse_tool_calls(broken);
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error().code() == bora::ErrorCode::kFormat);
  }
  bora::Xoshiro256 rng(7);
  for (int i = 0; i < 20; ++i) {
    const std::string id = bora::make_tool_call_id(rng);
    CHECK(id.size() == 9);
    for (const char c : id) CHECK(((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')));
  }
}

TEST_CASE("tool calls: JSON is spelled as Python's json.dumps") {
  std::string out;
  for (double value : {22.0, 0.1, 1e16, 1e-5, 123.456, 1e15, -0.5, 3e-4}) {
    bora::tool_calls_detail::append_python_float(value, &out);
    out += ' ';
  }
  CHECK(out == "22.0 0.1 1e+16 1e-05 123.456 1000000000000000.0 -0.5 0.0003 ");
  out.clear();
  bora::append_python_json_or_string("{\"a\":[1,true,null,\"\xC3\xA9\\n\"],\"b\":{}}", &out);
  CHECK(out == "{\"a\": [1, true, null, \"\xC3\xA9\\n\"], \"b\": {}}");
  out.clear();
  bora::append_python_json_or_string("not json \"quoted\"", &out);
  CHECK(out == "\"not json \\\"quoted\\\"\"");
}
