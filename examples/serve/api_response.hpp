// Why this file exists: the bodies examples/serve answers with, in the exact shapes the official
// clients parse (OpenAI's and Mistral's SDKs validate them field by field): chat completions (tool
// calls included) and their streamed chunks, completions, the model list, errors, and Bedrock's
// InvokeModel output.
#ifndef BORA_EXAMPLES_SERVE_API_RESPONSE_HPP
#define BORA_EXAMPLES_SERVE_API_RESPONSE_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "api_request.hpp"
#include "json_writer.hpp"

namespace serve {

// What every answer to one request shares.
struct ResponseHeader {
  std::string id;     // "chatcmpl-..." / "cmpl-...", the same in every chunk of a stream
  int64_t created = 0;  // Unix seconds
  std::string model;  // the served model's name
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

inline void write_usage(JsonWriter& w, const Usage& usage) {
  w.key("usage").object();
  w.key("prompt_tokens").integer(usage.prompt_tokens);
  w.key("completion_tokens").integer(usage.completion_tokens);
  w.key("total_tokens").integer(usage.prompt_tokens + usage.completion_tokens);
  w.end();
}

inline void write_header(JsonWriter& w, const ResponseHeader& header, const char* object) {
  w.key("id").string(header.id);
  w.key("object").string(object);
  w.key("created").integer(header.created);
  w.key("model").string(header.model);
}

inline std::string error_body(const ApiError& error) {
  JsonWriter w;
  w.object().key("error").object();
  w.key("message").string(error.message);
  w.key("type").string(error.type);
  w.key("param");
  if (error.param.empty()) w.null(); else w.string(error.param);
  w.key("code");
  if (error.code.empty()) w.null(); else w.string(error.code);
  w.end().end();
  return w.take();
}

// message.tool_calls / delta.tool_calls: [{"index"?, "id", "type": "function", "function": {"name",
// "arguments"}}], arguments as a JSON string.
inline void write_tool_calls(JsonWriter& w, const std::vector<bora::ToolCall>& calls, bool with_index) {
  w.key("tool_calls").array();
  for (size_t i = 0; i < calls.size(); ++i) {
    w.object();
    if (with_index) w.key("index").integer(static_cast<int64_t>(i));
    w.key("id").string(calls[i].id).key("type").string("function");
    w.key("function").object().key("name").string(calls[i].name).key("arguments").string(calls[i].arguments).end();
    w.end();
  }
  w.end();
}

// The whole answer of a request that was not streamed. With tool calls, a chat message's content is
// null unless the model wrote text before them.
inline std::string completion_body(Api api, const ResponseHeader& header, const std::string& text,
                                   const char* finish_reason, const Usage& usage,
                                   const std::vector<bora::ToolCall>& calls = {}) {
  JsonWriter w;
  w.object();
  write_header(w, header, api == Api::kChat ? "chat.completion" : "text_completion");
  w.key("choices").array().object();
  w.key("index").integer(0);
  if (api == Api::kChat) {
    w.key("message").object().key("role").string("assistant").key("content");
    if (calls.empty() || !text.empty()) w.string(text); else w.null();
    if (!calls.empty()) write_tool_calls(w, calls, false);
    w.end();
  } else {
    w.key("text").string(text);
  }
  w.key("logprobs").null();
  w.key("finish_reason").string(finish_reason);
  w.end().end();
  write_usage(w, usage);
  w.end();
  return w.take();
}

// One streamed chunk with one choice: `role` only in a chat stream's first chunk, `finish_reason`
// only in the last; `with_usage_null` when the client asked for usage (every chunk then carries
// "usage": null but the extra final one).
inline std::string chunk_body(Api api, const ResponseHeader& header, const char* role, std::string_view text,
                              const char* finish_reason, bool with_usage_null) {
  JsonWriter w;
  w.object();
  write_header(w, header, api == Api::kChat ? "chat.completion.chunk" : "text_completion");
  w.key("choices").array().object();
  w.key("index").integer(0);
  if (api == Api::kChat) {
    w.key("delta").object();
    if (role != nullptr) w.key("role").string(role);
    if (role != nullptr || finish_reason == nullptr) w.key("content").string(text);
    w.end();
  } else {
    w.key("text").string(text);
  }
  w.key("logprobs").null();
  w.key("finish_reason");
  if (finish_reason != nullptr) w.string(finish_reason); else w.null();
  w.end().end();
  if (with_usage_null) w.key("usage").null();
  w.end();
  return w.take();
}

// A chat stream's chunk carrying the reply's tool calls, each whole (sent once they have parsed).
inline std::string tool_calls_chunk_body(const ResponseHeader& header, const std::vector<bora::ToolCall>& calls,
                                         bool with_usage_null) {
  JsonWriter w;
  w.object();
  write_header(w, header, "chat.completion.chunk");
  w.key("choices").array().object();
  w.key("index").integer(0);
  w.key("delta").object();
  write_tool_calls(w, calls, true);
  w.end();
  w.key("logprobs").null();
  w.key("finish_reason").null();
  w.end().end();
  if (with_usage_null) w.key("usage").null();
  w.end();
  return w.take();
}

// The extra last chunk of a stream with stream_options.include_usage: no choices, the usage.
inline std::string usage_chunk_body(Api api, const ResponseHeader& header, const Usage& usage) {
  JsonWriter w;
  w.object();
  write_header(w, header, api == Api::kChat ? "chat.completion.chunk" : "text_completion");
  w.key("choices").array().end();
  write_usage(w, usage);
  w.end();
  return w.take();
}

inline std::string models_body(const std::string& model, int64_t created) {
  JsonWriter w;
  w.object().key("object").string("list").key("data").array().object();
  w.key("id").string(model).key("object").string("model").key("created").integer(created);
  w.key("owned_by").string("bora");
  w.end().end().end();
  return w.take();
}

// Bedrock InvokeModel for Mistral models: {"outputs": [{"text", "stop_reason"}]}.
inline std::string bedrock_body(const std::string& text, const char* stop_reason) {
  JsonWriter w;
  w.object().key("outputs").array().object();
  w.key("text").string(text).key("stop_reason").string(stop_reason);
  w.end().end().end();
  return w.take();
}

// Bedrock's errors: {"message"}, with the exception's name in the x-amzn-ErrorType header.
inline std::string bedrock_error_body(const std::string& message) {
  JsonWriter w;
  w.object().key("message").string(message).end();
  return w.take();
}

}  // namespace serve

#endif  // BORA_EXAMPLES_SERVE_API_RESPONSE_HPP
