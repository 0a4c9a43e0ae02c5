// Why this file exists: an instruct model only answers well when the conversation is laid out in the
// exact tokens it was trained on; this renders messages the way Mistral's own tooling
// (mistral-common's instruct tokenizers v1, v2 and v3, before tools) does, and picks the version
// from the model file.
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
// A conversation ending with a user turn is a prompt ready for generation.
#ifndef BORA_TEXT_CHAT_TEMPLATE_HPP
#define BORA_TEXT_CHAT_TEMPLATE_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/model_files.hpp"
#include "bora/io/vocabulary.hpp"
#include "bora/text/tokenizer.hpp"

namespace bora {

enum class ChatTemplate { kMistralV1, kMistralV2, kMistralV3 };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatTemplateOptions {
  // The conversation ends with a partial assistant message the model should continue: no [EOS]
  // after it (mistral-common's continue_final_message).
  bool continue_final_message = false;
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
  bool is_user;
  std::string content;
};

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

  std::string system_prompt;
  bool has_system_prompt = false;
  std::vector<Turn> turns;
  // The role of the run being collected: 0 none, 1 user, 2 assistant, 3 system (which ends a run
  // without contributing a turn, as mistral-common's aggregation does).
  int current_role = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    int role = 0;
    if (message.role == "user") role = 1;
    else if (message.role == "assistant") role = 2;
    else if (message.role == "system") role = 3;
    else {
      return make_error(ErrorCode::kInvalidArgument, "chat message %zu has role '%s' (expected system, user or assistant)",
                        i, message.role.c_str());
    }
    if (role == 3) {
      if (!message.content.empty()) {
        if (has_system_prompt) system_prompt += "\n\n";
        system_prompt += message.content;
        has_system_prompt = true;
      }
    } else {
      if (role != current_role) turns.push_back(Turn{role == 1, std::string()});
      if (!message.content.empty()) {
        std::string& content = turns.back().content;
        if (!content.empty()) content += "\n\n";
        content += message.content;
      }
    }
    current_role = role;
  }
  if (turns.empty() || !turns.front().is_user) turns.insert(turns.begin(), Turn{true, std::string()});
  if (options.continue_final_message && turns.back().is_user) {
    return make_error(ErrorCode::kInvalidArgument, "continue_final_message needs the conversation to end with an assistant message");
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

  size_t first_user = turns.size();
  size_t last_user = 0;
  for (size_t i = 0; i < turns.size(); ++i) {
    if (!turns[i].is_user) continue;
    if (first_user == turns.size()) first_user = i;
    last_user = i;
  }

  std::vector<int32_t> ids;
  ids.push_back(tokenizer.bos_id());
  for (size_t i = 0; i < turns.size(); ++i) {
    const Turn& turn = turns[i];
    if (turn.is_user) {
      const bool gets_system = has_system_prompt && i == (plain_text_inst ? first_user : last_user);
      const std::string content = gets_system ? system_prompt + "\n\n" + turn.content : turn.content;
      if (plain_text_inst) {
        tokenizer.encode_append("[INST] " + content + " [/INST]", &ids);
      } else {
        ids.push_back(begin_inst);
        tokenizer.encode_append(content, &ids);
        ids.push_back(end_inst);
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
