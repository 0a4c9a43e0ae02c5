// Why this file exists: a request body is untrusted JSON from any client. This reads the three
// request shapes examples/serve answers (OpenAI chat completions, OpenAI completions, Bedrock's
// InvokeModel for Mistral) with simdjson into one GenerationRequest, response_format, tools and tool
// messages included, checking every field's type and range, so a wrong type, an unknown role, a bad
// number or a malformed string becomes a 400 that names the field, never a crash or a silently
// ignored mistake.
#ifndef BORA_EXAMPLES_SERVE_API_REQUEST_HPP
#define BORA_EXAMPLES_SERVE_API_REQUEST_HPP

#include <simdjson.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bora/bora.hpp"

namespace serve {

// An answer other than 200, in OpenAI's shape {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string code;   // empty: null
  std::string param;  // empty: null
};

inline ApiError invalid_request(std::string message, std::string param = {}, std::string code = {}) {
  ApiError error;
  error.message = std::move(message);
  error.param = std::move(param);
  error.code = std::move(code);
  return error;
}

enum class Api { kChat, kCompletion, kBedrock };

// What Mistral's API puts in front of the conversation when a request sets safe_prompt (docs.mistral.ai,
// "Guardrailing": a system prompt prepended to the messages).
constexpr const char kMistralSafetyPrompt[] =
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, "
    "unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity.";

// OpenAI's tool_choice; Mistral's "any" is kRequired.
enum class ToolChoice { kNone, kAuto, kRequired, kNamed };
// OpenAI's response_format.
enum class ResponseFormat { kText, kJsonObject, kJsonSchema };

struct GenerationRequest {
  Api api = Api::kChat;
  std::vector<bora::ChatMessage> messages;  // kChat
  bool continue_final_message = false;      // kChat: Mistral's assistant "prefix": true
  std::string prompt;                       // kCompletion, kBedrock
  std::vector<int32_t> prompt_tokens;       // kCompletion given as token ids
  bool prompt_is_tokens = false;
  bora::SampleParams sample;
  bool seed_given = false;
  bool max_tokens_given = false;
  std::vector<std::string> stop;
  std::string model;  // as the client named it (answers name the served model)
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;  // vLLM's extra: generate max_tokens whatever the model says (benchmarks)
  ResponseFormat response_format = ResponseFormat::kText;
  std::string json_schema;  // kJsonSchema: the schema's JSON text
  std::string tools;        // kChat: the tools' JSON array as given, "" without tools
  ToolChoice tool_choice = ToolChoice::kAuto;
  std::string tool_choice_name;  // kNamed
  bool parallel_tool_calls = true;
};

namespace request_detail {

inline bool is_valid_utf8(std::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    size_t length = 1;
    if (bytes[i] >= 0x80 && !bora::utf8::decode_one(bytes + i, text.size() - i, &length)) return false;
    i += length;
  }
  return true;
}

// Reads the optional fields of one JSON object. Each reader returns false only for a present field
// of the wrong type or range (setting the error); an absent or null field leaves `*out` alone.
class Fields {
 public:
  Fields(simdjson::dom::object object, ApiError* error) : object_(object), error_(error) {}

  // The field, or nothing when it is absent or null.
  std::optional<simdjson::dom::element> get(const char* name) const {
    simdjson::dom::element value;
    if (object_.at_key(name).get(value) || value.is_null()) return std::nullopt;
    return value;
  }

  bool number(const char* name, double low, double high, float* out) {
    auto value = get(name);
    if (!value) return true;
    double number = 0;
    if (value->get_double().get(number) || !(number >= low && number <= high)) {
      return fail(name, "a number from " + text_of(low) + " to " + text_of(high));
    }
    *out = static_cast<float>(number);
    return true;
  }
  bool integer(const char* name, int64_t low, int64_t high, int64_t* out, bool* given = nullptr) {
    auto value = get(name);
    if (!value) return true;
    int64_t number = 0;
    if (value->get_int64().get(number) || number < low || number > high) {
      return fail(name, "a whole number from " + std::to_string(low) + " to " + std::to_string(high));
    }
    *out = number;
    if (given != nullptr) *given = true;
    return true;
  }
  // Any whole number that fits 64 bits, signed or not (seeds).
  bool seed(const char* name, uint64_t* out, bool* given) {
    auto value = get(name);
    if (!value) return true;
    int64_t as_signed = 0;
    uint64_t as_unsigned = 0;
    if (!value->get_int64().get(as_signed)) {
      *out = static_cast<uint64_t>(as_signed);
    } else if (!value->get_uint64().get(as_unsigned)) {
      *out = as_unsigned;
    } else {
      return fail(name, "a whole number");
    }
    *given = true;
    return true;
  }
  bool boolean(const char* name, bool* out) {
    auto value = get(name);
    if (!value) return true;
    if (value->get_bool().get(*out)) return fail(name, "true or false");
    return true;
  }
  bool string(const char* name, std::string* out) {
    auto value = get(name);
    if (!value) return true;
    std::string_view text;
    if (value->get_string().get(text)) return fail(name, "a string");
    if (!is_valid_utf8(text)) return fail_utf8(name);
    *out = std::string(text);
    return true;
  }
  // A string or a list of strings (stop sequences); empty strings are dropped.
  bool strings(const char* name, size_t max_count, std::vector<std::string>* out) {
    auto value = get(name);
    if (!value) return true;
    std::string_view text;
    if (!value->get_string().get(text)) {
      if (!is_valid_utf8(text)) return fail_utf8(name);
      if (!text.empty()) out->push_back(std::string(text));
      return true;
    }
    simdjson::dom::array list;
    if (value->get_array().get(list)) return fail(name, "a string or a list of strings");
    for (simdjson::dom::element item : list) {
      if (item.get_string().get(text)) return fail(name, "a string or a list of strings");
      if (!is_valid_utf8(text)) return fail_utf8(name);
      if (!text.empty()) out->push_back(std::string(text));
    }
    if (out->size() > max_count) return fail(name, "at most " + std::to_string(max_count) + " strings");
    return true;
  }

  // A field this server does not implement: accepted only with its neutral value (absent, null,
  // `neutral_number`, false, "", an empty list or object), so no request is silently answered otherwise
  // than it asked.
  bool neutral(const char* name, double neutral_number = 0) {
    auto value = get(name);
    if (!value) return true;
    double number = 0;
    bool flag = false;
    std::string_view text;
    simdjson::dom::array list;
    simdjson::dom::object object;
    if (!value->get_double().get(number) && number == neutral_number) return true;
    if (!value->get_bool().get(flag) && !flag) return true;
    if (!value->get_string().get(text) && text.empty()) return true;
    if (!value->get_array().get(list) && list.size() == 0) return true;
    if (!value->get_object().get(object) && object.size() == 0) return true;
    *error_ = invalid_request(std::string("'") + name + "' is not supported by this server", name, "unsupported_parameter");
    return false;
  }

  bool fail(const char* name, const std::string& expected) {
    *error_ = invalid_request(std::string("'") + name + "' must be " + expected, name, "invalid_type");
    return false;
  }
  bool fail_utf8(const char* name) {
    *error_ = invalid_request(std::string("'") + name + "' is not valid UTF-8 (a lone surrogate escape?)", name,
                              "invalid_utf8");
    return false;
  }

 private:
  static std::string text_of(double value) {
    char buffer[32];
    std::snprintf(buffer, sizeof(buffer), "%g", value);
    return buffer;
  }

  simdjson::dom::object object_;
  ApiError* error_;
};

// A message's content: a string, or a list of text parts [{"type": "text", "text": ...}].
inline bool read_content(simdjson::dom::element content, const std::string& where, std::string* out,
                         ApiError* error) {
  std::string_view text;
  if (!content.get_string().get(text)) {
    if (!is_valid_utf8(text)) {
      *error = invalid_request(where + ".content is not valid UTF-8", where, "invalid_utf8");
      return false;
    }
    *out = std::string(text);
    return true;
  }
  simdjson::dom::array parts;
  if (content.get_array().get(parts)) {
    *error = invalid_request(where + ".content must be a string or a list of text parts", where, "invalid_type");
    return false;
  }
  for (simdjson::dom::element part : parts) {
    std::string_view type;
    if (part["type"].get_string().get(type) || type != "text" || part["text"].get_string().get(text)) {
      *error = invalid_request(where + ".content: only parts {\"type\": \"text\", \"text\": string} are supported", where,
                               "unsupported_content");
      return false;
    }
    if (!is_valid_utf8(text)) {
      *error = invalid_request(where + ".content is not valid UTF-8", where, "invalid_utf8");
      return false;
    }
    out->append(text.data(), text.size());
  }
  return true;
}

// An assistant message's calls: [{"id", "type": "function", "function": {"name", "arguments": string}}].
inline bool read_tool_calls(Fields& fields, const std::string& where, std::vector<bora::ToolCall>* out, ApiError* error) {
  auto value = fields.get("tool_calls");
  if (!value) return true;
  simdjson::dom::array calls;
  const std::string field = where + ".tool_calls";
  auto bad = [&](const std::string& why) {
    *error = invalid_request(field + why, field, "invalid_type");
    return false;
  };
  if (value->get_array().get(calls)) return bad(" must be a list of calls");
  for (simdjson::dom::element call : calls) {
    bora::ToolCall parsed;
    std::string_view text, type;
    simdjson::dom::element function, arguments;
    if (call["type"].get_string().get(type) == simdjson::SUCCESS && type != "function")
      return bad(": only calls of \"type\": \"function\" are supported");
    if (call["function"].get(function) || function["name"].get_string().get(text) || !is_valid_utf8(text))
      return bad(": each call needs function.name");
    parsed.name = std::string(text);
    if (function["arguments"].get(arguments) == simdjson::SUCCESS) {
      if (arguments.get_string().get(text) == simdjson::SUCCESS) {
        if (!is_valid_utf8(text)) return bad(": function.arguments is not valid UTF-8");
        parsed.arguments = std::string(text);
      } else if (arguments.is_object()) {
        parsed.arguments = simdjson::minify(arguments);
      } else {
        return bad(": function.arguments must be a JSON string");
      }
    }
    if (call["id"].get_string().get(text) == simdjson::SUCCESS) parsed.id = std::string(text);
    out->push_back(std::move(parsed));
  }
  return true;
}

// "tools": [{"type": "function", "function": {"name", "description"?, "parameters"?}}], kept as JSON text;
// "tool_choice" and "parallel_tool_calls".
inline bool read_tools(Fields& fields, GenerationRequest* out, ApiError* error) {
  std::vector<std::string> names;
  if (auto value = fields.get("tools")) {
    simdjson::dom::array tools;
    if (value->get_array().get(tools)) return fields.fail("tools", "a list of {\"type\": \"function\", \"function\": {...}}");
    size_t index = 0;
    for (simdjson::dom::element tool : tools) {
      const std::string where = "tools[" + std::to_string(index++) + "]";
      std::string_view type, name, description;
      simdjson::dom::element function, parameters;
      auto bad = [&](const std::string& why) {
        *error = invalid_request(where + why, "tools", "invalid_type");
        return false;
      };
      if (tool["type"].get_string().get(type) || type != "function") return bad(".type must be \"function\"");
      if (tool["function"].get(function) || !function.is_object()) return bad(".function must be an object");
      if (function["name"].get_string().get(name) || !bora::is_valid_function_name(name))
        return bad(".function.name must be 1 to 64 of a-z, A-Z, 0-9, _ and -");
      if (function["description"].get(parameters) == simdjson::SUCCESS && !parameters.is_null() &&
          parameters.get_string().get(description))
        return bad(".function.description must be a string");
      if (function["parameters"].get(parameters) == simdjson::SUCCESS && !parameters.is_null() && !parameters.is_object())
        return bad(".function.parameters must be a JSON Schema object");
      for (const std::string& seen : names) {
        if (seen == name) return bad(": the name '" + seen + "' is given twice");
      }
      names.emplace_back(name);
    }
    if (tools.size() > 0) out->tools = simdjson::minify(tools);
  }
  if (!fields.boolean("parallel_tool_calls", &out->parallel_tool_calls)) return false;
  auto choice = fields.get("tool_choice");
  if (!choice) return true;
  std::string_view text;
  simdjson::dom::element function;
  if (choice->get_string().get(text) == simdjson::SUCCESS) {
    if (text == "none") out->tool_choice = ToolChoice::kNone;
    else if (text == "auto") out->tool_choice = ToolChoice::kAuto;
    else if (text == "required" || text == "any") out->tool_choice = ToolChoice::kRequired;
    else return fields.fail("tool_choice", "\"none\", \"auto\", \"required\", \"any\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
  } else if ((*choice)["function"].get(function) == simdjson::SUCCESS && function["name"].get_string().get(text) == simdjson::SUCCESS) {
    out->tool_choice = ToolChoice::kNamed;
    out->tool_choice_name = std::string(text);
    bool known = false;
    for (const std::string& name : names) known = known || name == text;
    if (!known) {
      *error = invalid_request("'tool_choice' names function '" + std::string(text.substr(0, 64)) + "', which is not in 'tools'",
                               "tool_choice");
      return false;
    }
  } else {
    return fields.fail("tool_choice", "\"none\", \"auto\", \"required\", \"any\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
  }
  if (out->tools.empty() && (out->tool_choice == ToolChoice::kRequired || out->tool_choice == ToolChoice::kNamed)) {
    *error = invalid_request("'tool_choice' asks for a tool call, but the request has no 'tools'", "tool_choice");
    return false;
  }
  return true;
}

// "response_format": {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": ...}}.
inline bool read_response_format(Fields& fields, GenerationRequest* out, ApiError* error) {
  auto format = fields.get("response_format");
  if (!format) return true;
  std::string_view type;
  auto bad = [&](const std::string& why) {
    *error = invalid_request("'response_format' " + why, "response_format", "invalid_type");
    return false;
  };
  if ((*format)["type"].get_string().get(type))
    return bad("must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or {\"type\": \"json_schema\", \"json_schema\": {\"schema\": ...}}");
  if (type == "text") return true;
  if (type == "json_object") {
    out->response_format = ResponseFormat::kJsonObject;
    return true;
  }
  if (type != "json_schema") return bad("has type '" + std::string(type.substr(0, 40)) + "' (text, json_object or json_schema)");
  simdjson::dom::element schema;
  if ((*format)["json_schema"]["schema"].get(schema) || !(schema.is_object() || schema.is_bool()))
    return bad("of type json_schema needs json_schema.schema, a JSON Schema object");
  out->response_format = ResponseFormat::kJsonSchema;
  out->json_schema = simdjson::minify(schema);
  return true;
}

inline bool read_messages(simdjson::dom::object root, GenerationRequest* out, ApiError* error) {
  simdjson::dom::array messages;
  simdjson::dom::element value;
  if (root.at_key("messages").get(value) || value.get_array().get(messages)) {
    *error = invalid_request("'messages' must be a list of messages", "messages", "invalid_type");
    return false;
  }
  if (messages.size() == 0) {
    *error = invalid_request("'messages' must not be empty", "messages");
    return false;
  }
  size_t index = 0;
  bool last_is_prefix = false;
  std::string last_role;
  for (simdjson::dom::element message : messages) {
    const std::string where = "messages[" + std::to_string(index++) + "]";
    simdjson::dom::object fields;
    if (message.get_object().get(fields)) {
      *error = invalid_request(where + " must be an object", where, "invalid_type");
      return false;
    }
    std::string_view role;
    if (fields["role"].get_string().get(role)) {
      *error = invalid_request(where + ".role must be a string", where, "invalid_type");
      return false;
    }
    std::string chat_role(role);
    if (role == "developer") chat_role = "system";  // OpenAI's newer name for the system role
    if (chat_role != "system" && chat_role != "user" && chat_role != "assistant" && chat_role != "tool") {
      const bool known = role == "function";
      std::string shown(role.substr(0, 40));
      *error = invalid_request(where + " has role '" + shown + "'" +
                                   (known ? ": the legacy 'function' role is not supported (use 'tool')"
                                          : ": expected system, user, assistant or tool"),
                               where, known ? "unsupported_role" : "invalid_role");
      return false;
    }
    Fields message_fields(fields, error);
    bool prefix = false;
    if (!message_fields.boolean("prefix", &prefix)) return false;
    bora::ChatMessage chat{chat_role, std::string()};
    if (chat_role == "assistant") {
      if (!read_tool_calls(message_fields, where, &chat.tool_calls, error)) return false;
    } else if (!message_fields.neutral("tool_calls")) {
      return false;
    }
    if (auto content = message_fields.get("content")) {
      if (!read_content(*content, where, &chat.content, error)) return false;
    } else if (chat_role != "assistant") {
      *error = invalid_request(where + " has no content", where);
      return false;
    }
    if (!chat.tool_calls.empty() && !chat.content.empty()) {
      *error = invalid_request(where + ": an assistant message with tool_calls must have no content", where);
      return false;
    }
    if (chat_role == "tool") {
      if (!message_fields.string("tool_call_id", &chat.tool_call_id)) return false;
      if (chat.tool_call_id.empty()) {
        *error = invalid_request(where + ": a tool message needs the tool_call_id of the call it answers", where,
                                 "missing_tool_call_id");
        return false;
      }
      // The v2 template names the function a result came from: the call with this id says which.
      for (const bora::ChatMessage& earlier : out->messages) {
        for (const bora::ToolCall& call : earlier.tool_calls) {
          if (call.id == chat.tool_call_id) chat.name = call.name;
        }
      }
      if (!message_fields.string("name", &chat.name)) return false;
    }
    if (prefix && chat_role != "assistant") {
      *error = invalid_request(where + ": only an assistant message can be a prefix", where);
      return false;
    }
    if (chat_role != "system") {
      last_role = chat_role;
      last_is_prefix = prefix;
    }
    out->messages.push_back(std::move(chat));
  }
  if (last_role == "assistant") {
    if (!last_is_prefix || out->messages.back().role != "assistant" || !out->messages.back().tool_calls.empty()) {
      *error = invalid_request(
          "the last message must be from the user or a tool (or an assistant message with \"prefix\": true)", "messages");
      return false;
    }
    if (out->messages.back().content.empty()) {
      *error = invalid_request("an assistant prefix must not be empty", "messages");
      return false;
    }
    out->continue_final_message = true;
  }
  return true;
}

// A completion's prompt: a string, a list of one string, token ids, or a list of one list of ids.
inline bool read_completion_prompt(simdjson::dom::object root, GenerationRequest* out, ApiError* error) {
  simdjson::dom::element value;
  if (root.at_key("prompt").get(value)) {
    *error = invalid_request("'prompt' is required", "prompt");
    return false;
  }
  auto bad = [&](const char* why) {
    *error = invalid_request(std::string("'prompt' ") + why, "prompt", "invalid_type");
    return false;
  };
  std::string_view text;
  if (!value.get_string().get(text)) {
    if (!is_valid_utf8(text)) return bad("is not valid UTF-8");
    out->prompt = std::string(text);
    return true;
  }
  simdjson::dom::array list;
  if (value.get_array().get(list)) return bad("must be a string, a list of token ids, or a list of one of those");
  if (list.size() == 1) {
    simdjson::dom::element only = list.at(0).value_unsafe();
    if (!only.get_string().get(text)) {
      if (!is_valid_utf8(text)) return bad("is not valid UTF-8");
      out->prompt = std::string(text);
      return true;
    }
    simdjson::dom::array inner;
    if (!only.get_array().get(inner)) list = inner;
  }
  for (simdjson::dom::element item : list) {
    int64_t id = 0;
    if (item.get_int64().get(id) || id < 0 || id > INT32_MAX) {
      return bad("must be one prompt: a string or a list of token ids (several prompts in one request are not supported)");
    }
    out->prompt_tokens.push_back(static_cast<int32_t>(id));
  }
  if (out->prompt_tokens.empty()) return bad("must not be empty");
  out->prompt_is_tokens = true;
  return true;
}

}  // namespace request_detail

// Parses a request body for `api`. On failure returns false with `*error` filled (always a 400).
inline bool parse_generation_request(Api api, std::string_view body, GenerationRequest* out, ApiError* error) {
  using request_detail::Fields;
  out->api = api;
  simdjson::dom::parser parser;
  simdjson::dom::element root_element;
  const simdjson::padded_string padded(body);
  const simdjson::error_code parsed = parser.parse(padded).get(root_element);
  if (parsed == simdjson::UTF8_ERROR) {
    *error = invalid_request("the request body is not valid UTF-8", "", "invalid_utf8");
    return false;
  }
  if (parsed) {
    *error = invalid_request(std::string("the request body is not valid JSON (") + simdjson::error_message(parsed) + ")", "",
                             "invalid_json");
    return false;
  }
  simdjson::dom::object root;
  if (root_element.get_object().get(root)) {
    *error = invalid_request("the request body must be a JSON object", "", "invalid_type");
    return false;
  }
  Fields fields(root, error);

  // Defaults: OpenAI's (plain sampling from the whole distribution) for its endpoints, and what
  // Bedrock documents for its Mistral 7B / Mixtral models.
  bora::SampleParams& sample = out->sample;
  const bool bedrock = api == Api::kBedrock;
  sample.temperature = bedrock ? 0.5f : 1.0f;
  sample.top_p = bedrock ? 0.9f : 1.0f;
  sample.top_k = bedrock ? 50 : 0;
  sample.min_p = 0.0f;
  sample.repeat_penalty = 1.0f;
  sample.max_tokens = bedrock ? 512 : (api == Api::kCompletion ? 16 : -1);

  if (!fields.string("model", &out->model)) return false;
  if (api == Api::kChat) {
    if (!request_detail::read_messages(root, out, error)) return false;
    bool safe_prompt = false;
    if (!fields.boolean("safe_prompt", &safe_prompt)) return false;
    if (safe_prompt) out->messages.insert(out->messages.begin(), bora::ChatMessage{"system", kMistralSafetyPrompt});
  } else if (api == Api::kCompletion) {
    if (!request_detail::read_completion_prompt(root, out, error)) return false;
  } else {
    auto prompt = fields.get("prompt");
    if (!prompt) {
      *error = invalid_request("'prompt' is required", "prompt");
      return false;
    }
    if (!fields.string("prompt", &out->prompt)) return false;
  }

  int64_t max_tokens = sample.max_tokens;
  constexpr int64_t kMaxTokens = int64_t{1} << 30;
  if (!fields.integer("max_tokens", 1, kMaxTokens, &max_tokens, &out->max_tokens_given)) return false;
  if (api == Api::kChat && !fields.integer("max_completion_tokens", 1, kMaxTokens, &max_tokens, &out->max_tokens_given))
    return false;
  sample.max_tokens = static_cast<int>(max_tokens);
  if (!fields.number("temperature", 0, 2, &sample.temperature)) return false;
  if (!fields.number("top_p", 0, 1, &sample.top_p)) return false;
  int64_t top_k = sample.top_k;
  if (!fields.integer("top_k", -1, 1000000000, &top_k)) return false;
  sample.top_k = static_cast<int>(top_k);  // 0 or -1: no limit
  if (!fields.strings("stop", 16, &out->stop)) return false;
  if (bedrock) return true;

  // OpenAI's fields, the extras llama.cpp and vLLM accept, and Mistral's spellings.
  if (!fields.number("min_p", 0, 1, &sample.min_p)) return false;
  if (!fields.number("repeat_penalty", 0.01, 100, &sample.repeat_penalty)) return false;
  if (!fields.number("repetition_penalty", 0.01, 100, &sample.repeat_penalty)) return false;
  if (!fields.seed("seed", &sample.seed, &out->seed_given)) return false;
  if (!fields.seed("random_seed", &sample.seed, &out->seed_given)) return false;
  int64_t n = 1;
  if (!fields.integer("n", INT64_MIN, INT64_MAX, &n)) return false;
  if (n != 1) {
    *error = invalid_request("'n' must be 1: this server returns one choice per request", "n");
    return false;
  }
  if (!fields.boolean("ignore_eos", &out->ignore_eos)) return false;
  if (!fields.boolean("stream", &out->stream)) return false;
  if (auto options = fields.get("stream_options")) {
    simdjson::dom::object stream_options;
    if (options->get_object().get(stream_options)) return fields.fail("stream_options", "an object");
    Fields option_fields(stream_options, error);
    if (!option_fields.boolean("include_usage", &out->include_usage)) return false;
  }
  // Accepted only as "off" until this server implements them.
  for (const char* name : {"presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "logit_bias", "functions",
                           "echo", "suffix"}) {
    if (!fields.neutral(name)) return false;
  }
  if (!fields.neutral("best_of", 1)) return false;
  if (!request_detail::read_response_format(fields, out, error)) return false;
  if (api != Api::kChat) return fields.neutral("tools") && fields.neutral("tool_choice");
  if (!request_detail::read_tools(fields, out, error)) return false;
  if (out->response_format != ResponseFormat::kText && !out->tools.empty() && out->tool_choice != ToolChoice::kNone) {
    *error = invalid_request("'response_format' json_object/json_schema cannot be combined with 'tools' unless 'tool_choice' is \"none\"",
                             "response_format");
    return false;
  }
  return true;
}

}  // namespace serve

#endif  // BORA_EXAMPLES_SERVE_API_REQUEST_HPP
