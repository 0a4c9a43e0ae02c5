// Why this file exists: an instruct model only answers well when the conversation is laid out in the
// exact tokens it was trained on; this renders messages the way Mistral's own tooling
// (mistral-common's instruct tokenizers v1, v2 and v3, with function calling for v2/v3) does, and
// picks the version from the model file.
//
// The rules, as mistral-common applies them to a chat request:
//   * system messages are taken out of the conversation and joined with "\n\n" into one system prompt;
//   * consecutive messages of the same role are joined with "\n\n" (empty contents are skipped);
//   * a conversation that does not start with a user message gets an empty user message in front;
//   * v1: [BOS], each user turn is the plain text "[INST] " + content + " [/INST]" (so its "[INST]" is
//     ordinary pieces), the system prompt goes in front of the FIRST user message;
//   * v2/v3: [BOS], each user turn is the control token [INST] + content + control token [/INST],
//     the system prompt goes in front of the LAST user message; assistant text loses trailing spaces;
//   * every assistant turn ends with [EOS], except a final one being continued.
// With tools (v2/v3 only; v1 has no tool tokens): [AVAILABLE_TOOLS] json [/AVAILABLE_TOOLS] right before
// the LAST user turn's [INST]; an assistant's calls are [TOOL_CALLS] json [EOS]; a tool's result is
// [TOOL_RESULTS] json [/TOOL_RESULTS] (v2 a list of {name, content}, v3 {content, call_id}); v2 drops
// calls and results older than the last user turn. JSON is spelled as Python's json.dumps (tool_calls.hpp).
// A conversation ending with a user turn (or a tool result) is a prompt ready for generation.
#ifndef BORA_TEXT_CHAT_TEMPLATE_HPP
#define BORA_TEXT_CHAT_TEMPLATE_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/model_files.hpp"
#include "bora/io/vocabulary.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/text/tool_calls.hpp"

namespace bora {

enum class ChatTemplate { kMistralV1, kMistralV2, kMistralV3 };

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string role_name, std::string text) : role(std::move(role_name)), content(std::move(text)) {}

  std::string role;  // "system", "user", "assistant" or "tool"
  std::string content;
  std::vector<ToolCall> tool_calls;  // an assistant's calls (then content is empty)
  std::string tool_call_id;          // a tool's result: the call it answers (v3)
  std::string name;                  // a tool's result: the function's name (v2)
};

struct ChatTemplateOptions {
  // The conversation ends with a partial assistant message the model should continue: no [EOS]
  // after it (mistral-common's continue_final_message).
  bool continue_final_message = false;
  // The functions the model may call: a JSON array of {"type": "function", "function": {"name",
  // "description", "parameters"}} (OpenAI's and mistral-common's shape). Empty: no tools.
  std::string tools;
};

inline const char* chat_template_name(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::kMistralV1: return "mistral-v1";
    case ChatTemplate::kMistralV2: return "mistral-v2";
    case ChatTemplate::kMistralV3: return "mistral-v3";
  }
  return "unknown";
}

// For command-line overrides: "v1", "mistral-v1", "1" (and v2, v3 likewise).
inline Expected<ChatTemplate> parse_chat_template_name(std::string_view name) {
  if (name.size() > 8 && name.substr(0, 8) == "mistral-") name.remove_prefix(8);
  if (name == "v1" || name == "1") return ChatTemplate::kMistralV1;
  if (name == "v2" || name == "2") return ChatTemplate::kMistralV2;
  if (name == "v3" || name == "3") return ChatTemplate::kMistralV3;
  return make_error(ErrorCode::kInvalidArgument, "unknown chat template '%.*s' (expected v1, v2 or v3)",
                    static_cast<int>(name.size()), name.data());
}

namespace chat_template_detail {

inline bool has_control_piece(const Vocabulary& vocab, std::string_view piece) {
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == token_type::kControl && vocab.pieces[i] == piece) return true;
  }
  return false;
}

struct Turn {
  enum Kind { kUser, kAssistant, kToolCalls, kToolResult };
  Kind kind;
  std::string content;
  std::vector<ToolCall> calls;
  std::string call_id, name;
};

// The tools list as mistral-common writes it: only type, function.name, description and parameters.
inline Expected<std::string> tools_json(std::string_view tools) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array list;
  const simdjson::padded_string padded(tools);
  if (parser.parse(padded).get(root) || root.get_array().get(list))
    return make_error(ErrorCode::kInvalidArgument, "tools: expected a JSON array of {\"type\": \"function\", \"function\": {...}}");
  std::string out = "[";
  size_t index = 0;
  for (simdjson::dom::element tool : list) {
    simdjson::dom::element function;
    std::string_view name, description;
    if (tool["function"].get(function) || function["name"].get_string().get(name))
      return make_error(ErrorCode::kInvalidArgument, "tools[%zu]: expected {\"type\": \"function\", \"function\": {\"name\": ...}}", index);
    if (index++ > 0) out += ", ";
    out += "{\"type\": \"function\", \"function\": {\"name\": ";
    tool_calls_detail::append_python_string(name, &out);
    out += ", \"description\": ";
    if (function["description"].get_string().get(description)) description = "";
    tool_calls_detail::append_python_string(description, &out);
    out += ", \"parameters\": ";
    simdjson::dom::element parameters;
    if (function["parameters"].get(parameters)) out += "{}";
    else append_python_json(parameters, &out);
    out += "}}";
  }
  return out + "]";
}

}  // namespace chat_template_detail

// The vocabulary decides: the v2/v3 instruct tokenizers have [INST]/[/INST] control tokens, v1 does
// not. v3 (240323) added [IMG] and the [REFERENCE_DOC_n] pieces; a GGUF tokenizer.chat_template that
// renders tool results with "call_id" (v3's tool format) also means v3. For conversations without
// tools v2 and v3 give identical tokens.
inline ChatTemplate detect_chat_template(const Vocabulary& vocab, std::string_view gguf_chat_template = {}) {
  using chat_template_detail::has_control_piece;
  if (!has_control_piece(vocab, "[INST]") || !has_control_piece(vocab, "[/INST]")) return ChatTemplate::kMistralV1;
  if (has_control_piece(vocab, "[IMG]")) return ChatTemplate::kMistralV3;
  for (size_t i = 0; i < vocab.pieces.size(); ++i) {
    if (vocab.types[i] == token_type::kUserDefined && vocab.pieces[i].compare(0, 15, "[REFERENCE_DOC_") == 0) {
      return ChatTemplate::kMistralV3;
    }
  }
  if (gguf_chat_template.find("call_id") != std::string_view::npos) return ChatTemplate::kMistralV3;
  return ChatTemplate::kMistralV2;
}

// The chat template a GGUF file declares (its tokenizer.chat_template text), or "" for other files.
inline std::string declared_chat_template(const ModelFiles& files) {
  const GgufFile* gguf = files.gguf();
  if (gguf == nullptr || gguf->find("tokenizer.chat_template") == nullptr) return std::string();
  auto text = gguf->get_string("tokenizer.chat_template");
  return text ? *text : std::string();
}

// The template a model's files imply: its tokenizer's control pieces and the GGUF's declared text.
inline ChatTemplate chat_template_for(const ModelFiles& files, const Tokenizer& tokenizer) {
  return detect_chat_template(tokenizer.vocabulary(), declared_chat_template(files));
}

// Renders a conversation into token ids (starting with BOS).
inline Expected<std::vector<int32_t>> apply_chat_template(const Tokenizer& tokenizer, ChatTemplate chat_template,
                                                         const std::vector<ChatMessage>& messages,
                                                         const ChatTemplateOptions& options = {}) {
  using chat_template_detail::Turn;
  const bool plain_text_inst = chat_template == ChatTemplate::kMistralV1;
  const bool is_v2 = chat_template == ChatTemplate::kMistralV2;

  std::string system_prompt;
  bool has_system_prompt = false;
  std::vector<Turn> turns;
  bool uses_tools = !options.tools.empty();
  // The role of the run being collected: 0 none, 1 user, 2 assistant text, 3 system (which ends a run
  // without contributing a turn, as mistral-common's aggregation does), 4 a tool call or result.
  int current_role = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    int role = 0;
    if (message.role == "user") role = 1;
    else if (message.role == "assistant") role = message.tool_calls.empty() ? 2 : 4;
    else if (message.role == "system") role = 3;
    else if (message.role == "tool") role = 4;
    else {
      return make_error(ErrorCode::kInvalidArgument, "chat message %zu has role '%s' (expected system, user, assistant or tool)",
                        i, message.role.c_str());
    }
    if (role == 3) {
      if (!message.content.empty()) {
        if (has_system_prompt) system_prompt += "\n\n";
        system_prompt += message.content;
        has_system_prompt = true;
      }
    } else if (role == 4) {
      uses_tools = true;
      Turn turn{message.role == "tool" ? Turn::kToolResult : Turn::kToolCalls, message.content, message.tool_calls,
                message.tool_call_id, message.name};
      if (turn.kind == Turn::kToolCalls && !message.content.empty())
        return make_error(ErrorCode::kInvalidArgument, "chat message %zu has both content and tool calls", i);
      if (turn.kind == Turn::kToolResult && message.tool_call_id.empty() && message.name.empty())
        return make_error(ErrorCode::kInvalidArgument, "chat message %zu (a tool result) has no tool_call_id or name", i);
      turns.push_back(std::move(turn));
    } else {
      const Turn::Kind kind = role == 1 ? Turn::kUser : Turn::kAssistant;
      if (role != current_role) turns.push_back(Turn{kind, std::string(), {}, std::string(), std::string()});
      if (!message.content.empty()) {
        std::string& content = turns.back().content;
        if (!content.empty()) content += "\n\n";
        content += message.content;
      }
    }
    current_role = role;
  }
  if (turns.empty() || turns.front().kind != Turn::kUser)
    turns.insert(turns.begin(), Turn{Turn::kUser, std::string(), {}, std::string(), std::string()});
  if (options.continue_final_message && turns.back().kind != Turn::kAssistant) {
    return make_error(ErrorCode::kInvalidArgument, "continue_final_message needs the conversation to end with an assistant message");
  }
  if (uses_tools && plain_text_inst) {
    return make_error(ErrorCode::kUnsupported,
                      "chat template mistral-v1 has no tool tokens (Mistral 7B v0.1/v0.2, Mixtral 8x7B v0.1): use "
                      "constrained output (a JSON schema) for structure with these models");
  }

  int32_t begin_inst = -1;
  int32_t end_inst = -1;
  if (!plain_text_inst) {
    begin_inst = tokenizer.token_to_id("[INST]");
    end_inst = tokenizer.token_to_id("[/INST]");
    if (begin_inst < 0 || end_inst < 0 || !tokenizer.is_control(begin_inst) || !tokenizer.is_control(end_inst)) {
      return make_error(ErrorCode::kUnsupported,
                        "chat template %s needs [INST] and [/INST] control tokens, which this vocabulary lacks",
                        chat_template_name(chat_template));
    }
  }
  if (tokenizer.bos_id() < 0 || tokenizer.eos_id() < 0) {
    return make_error(ErrorCode::kUnsupported, "the vocabulary has no BOS or EOS token for a chat template");
  }
  // The tool control tokens, when the conversation needs them.
  int32_t tool_ids[5] = {-1, -1, -1, -1, -1};
  static const char* const kToolPieces[5] = {"[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]",
                                             "[/TOOL_RESULTS]"};
  if (uses_tools) {
    for (int k = 0; k < 5; ++k) {
      tool_ids[k] = tokenizer.token_to_id(kToolPieces[k]);
      if (tool_ids[k] < 0 || !tokenizer.is_control(tool_ids[k]))
        return make_error(ErrorCode::kUnsupported, "this vocabulary has no %s control token for tool calling", kToolPieces[k]);
    }
  }
  std::string available_tools;
  if (!options.tools.empty()) {
    auto written = chat_template_detail::tools_json(options.tools);
    if (!written) return written.error();
    available_tools = std::move(*written);
  }

  size_t first_user = turns.size();
  size_t last_user = 0;
  for (size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].kind != Turn::kUser) continue;
    if (first_user == turns.size()) first_user = i;
    last_user = i;
  }

  std::vector<int32_t> ids;
  ids.push_back(tokenizer.bos_id());
  for (size_t i = 0; i < turns.size(); ++i) {
    const Turn& turn = turns[i];
    if (turn.kind == Turn::kUser) {
      const bool gets_system = has_system_prompt && i == (plain_text_inst ? first_user : last_user);
      const std::string content = gets_system ? system_prompt + "\n\n" + turn.content : turn.content;
      if (plain_text_inst) {
        tokenizer.encode_append("[INST] " + content + " [/INST]", &ids);
      } else {
        if (i == last_user && !available_tools.empty()) {
          ids.push_back(tool_ids[0]);
          tokenizer.encode_append(available_tools, &ids);
          ids.push_back(tool_ids[1]);
        }
        ids.push_back(begin_inst);
        tokenizer.encode_append(content, &ids);
        ids.push_back(end_inst);
      }
    } else if (turn.kind == Turn::kToolCalls || turn.kind == Turn::kToolResult) {
      if (is_v2 && i < last_user) continue;  // v2 keeps no tool history before the last user turn
      std::string json;
      if (turn.kind == Turn::kToolCalls) {
        json = "[";
        for (size_t c = 0; c < turn.calls.size(); ++c) {
          const ToolCall& call = turn.calls[c];
          if (c > 0) json += ", ";
          json += "{\"name\": ";
          tool_calls_detail::append_python_string(call.name, &json);
          json += ", \"arguments\": ";
          append_python_json_or_string(call.arguments, &json);
          if (!is_v2 && !call.id.empty() && call.id != "null") {
            json += ", \"id\": ";
            tool_calls_detail::append_python_string(call.id, &json);
          }
          json += "}";
        }
        json += "]";
        ids.push_back(tool_ids[2]);
        tokenizer.encode_append(json, &ids);
        ids.push_back(tokenizer.eos_id());
      } else {
        if (is_v2) {
          json = "[{\"name\": ";
          tool_calls_detail::append_python_string(turn.name, &json);
          json += ", \"content\": ";
          append_python_json_or_string(turn.content, &json);
          json += "}]";
        } else {
          json = "{\"content\": ";
          append_python_json_or_string(turn.content, &json);
          json += ", \"call_id\": ";
          tool_calls_detail::append_python_string(turn.call_id, &json);
          json += "}";
        }
        ids.push_back(tool_ids[3]);
        tokenizer.encode_append(json, &ids);
        ids.push_back(tool_ids[4]);
      }
    } else {
      if (turn.content.empty()) {
        return make_error(ErrorCode::kInvalidArgument, "assistant turn %zu has no content", i);
      }
      std::string_view content = turn.content;
      if (!plain_text_inst) {
        while (!content.empty() && content.back() == ' ') content.remove_suffix(1);
      }
      tokenizer.encode_append(content, &ids);
      const bool continued = options.continue_final_message && i + 1 == turns.size();
      if (!continued) ids.push_back(tokenizer.eos_id());
    }
  }
  return ids;
}

}  // namespace bora

#endif  // BORA_TEXT_CHAT_TEMPLATE_HPP
