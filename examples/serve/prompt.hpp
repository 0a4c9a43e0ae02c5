// Why this file exists: each API hands the model its prompt in its own way: chat requests as messages
// the model's chat template lays out, completions and Bedrock as text that may spell control tokens
// ("<s>[INST] ... [/INST]", "</s>" between turns, as Bedrock's Mistral prompts do). This turns every
// request into the token ids the scheduler runs, on the handler's thread.
#ifndef BORA_EXAMPLES_SERVE_PROMPT_HPP
#define BORA_EXAMPLES_SERVE_PROMPT_HPP

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bora/bora.hpp"
#include "api_request.hpp"

namespace serve {

// The template Session::chat() would use: the one the model's files imply.
inline bora::ChatTemplate chat_template_of(const bora::LanguageModel& model) {
  return bora::chat_template_for(model.files(), *model.tokenizer());
}

class PromptBuilder {
 public:
  PromptBuilder(const bora::Tokenizer& tokenizer, bora::ChatTemplate chat_template)
      : tokenizer_(tokenizer), chat_template_(chat_template) {
    const bora::Vocabulary& vocab = tokenizer.vocabulary();
    for (size_t id = 0; id < vocab.pieces.size(); ++id) {
      const std::string& piece = vocab.pieces[id];
      if (vocab.types[id] != bora::token_type::kControl || piece.size() < 3) continue;
      const char open = piece.front(), close = piece.back();
      if (!((open == '<' && close == '>') || (open == '[' && close == ']'))) continue;
      control_ids_.emplace(piece, static_cast<int32_t>(id));
      if (piece.size() > longest_control_) longest_control_ = piece.size();
    }
  }

  bora::ChatTemplate chat_template() const { return chat_template_; }
  int32_t eos_id() const { return tokenizer_.eos_id(); }

  // The request's prompt as token ids, or a 400 saying why it cannot be one.
  bool build(const GenerationRequest& request, std::vector<int32_t>* ids, ApiError* error) const {
    if (request.api == Api::kChat) {
      bora::ChatTemplateOptions options;
      options.continue_final_message = request.continue_final_message;
      // tool_choice "none": the model is not shown the tools (history with calls still renders).
      if (request.tool_choice != ToolChoice::kNone) options.tools = request.tools;
      auto rendered = bora::apply_chat_template(tokenizer_, chat_template_, request.messages, options);
      if (!rendered) {
        *error = invalid_request(rendered.error().str(), "messages");
        return false;
      }
      *ids = std::move(*rendered);
    } else if (request.prompt_is_tokens) {
      *ids = request.prompt_tokens;
    } else {
      *ids = encode_with_control_tokens(request.prompt);
    }
    if (ids->empty()) {
      *error = invalid_request("the prompt is empty", request.api == Api::kChat ? "messages" : "prompt");
      return false;
    }
    return true;
  }

  // Text in which the spelling of a control token ("<s>", "</s>", "[INST]" when the vocabulary has
  // it as a control token) is that token, as Bedrock's Mistral prompts and llama.cpp's and vLLM's
  // completions read it; the text between is encoded as usual. BOS goes in front unless the text
  // starts with it.
  std::vector<int32_t> encode_with_control_tokens(std::string_view text) const {
    std::vector<int32_t> ids;
    const int32_t bos = tokenizer_.bos_id();
    size_t segment_begin = 0;
    auto flush = [&](size_t end) {
      if (end > segment_begin) tokenizer_.encode_append(text.substr(segment_begin, end - segment_begin), &ids);
    };
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] != '<' && text[i] != '[') continue;
      const char close = text[i] == '<' ? '>' : ']';
      // Only as far as the longest control piece: a text of many '<' stays linear.
      const size_t length = text.substr(i, longest_control_).find(close, 1);
      if (length == std::string_view::npos) continue;
      const size_t end = i + length;
      auto found = control_ids_.find(std::string(text.substr(i, length + 1)));
      if (found == control_ids_.end()) continue;
      flush(i);
      ids.push_back(found->second);
      segment_begin = end + 1;
      i = end;
    }
    flush(text.size());
    if (bos >= 0 && tokenizer_.add_bos_by_default() && (ids.empty() || ids.front() != bos)) ids.insert(ids.begin(), bos);
    return ids;
  }

 private:
  const bora::Tokenizer& tokenizer_;
  bora::ChatTemplate chat_template_;
  std::unordered_map<std::string, int32_t> control_ids_;
  size_t longest_control_ = 0;
};

}  // namespace serve

#endif  // BORA_EXAMPLES_SERVE_PROMPT_HPP
