// Why this file exists: every grammar constraint walks the vocabulary as one byte trie, and building it
// (every piece's text, sorted) costs milliseconds, far more than compiling a small grammar. A
// VocabularyTrie is built once per tokenizer and shared, read-only, by every GrammarConstraint made
// with it (GrammarConstraintOptions::vocabulary), as a server does for each request's schema.
#ifndef BORA_TEXT_VOCABULARY_TRIE_HPP
#define BORA_TEXT_VOCABULARY_TRIE_HPP

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/text/tokenizer.hpp"

namespace bora {

class VocabularyTrie {
 public:
  struct Node {
    uint8_t byte;
    uint16_t depth;        // 1 for a first byte
    uint32_t subtree_end;  // the first node after this one's subtree (preorder)
    uint32_t token_begin;  // tokens ending here: token_ids()[token_begin .. next node's token_begin)
  };

  // Token bytes are what the tokenizer's streaming decoder shows for each token in mid-text ("▁" as a
  // space, <0xNN> as its byte); control tokens, <unk> and unused ones have none and are never in the trie.
  // Null only when memory runs out.
  static std::shared_ptr<const VocabularyTrie> build(const Tokenizer& tokenizer) {
    std::shared_ptr<VocabularyTrie> trie(new (std::nothrow) VocabularyTrie());
    if (!trie) return nullptr;
    trie->eos_id_ = tokenizer.eos_id();
    trie->vocab_size_ = tokenizer.vocab_size();
    std::vector<std::pair<std::string, int32_t>> entries;
    entries.reserve(trie->vocab_size_);
    trie->token_bytes_.assign(trie->vocab_size_, TokenBytes());
    for (size_t id = 0; id < trie->vocab_size_; ++id) {
      const int32_t token = static_cast<int32_t>(id);
      const int32_t type = tokenizer.token_type(token);
      if (type == token_type::kControl || type == token_type::kUnknown || type == token_type::kUnused) continue;
      std::string text = tokenizer.piece_text(token);
      if (text.empty() || text.size() > 0xFFFF) continue;
      trie->token_bytes_[id] = TokenBytes{static_cast<uint32_t>(trie->arena_.size()), static_cast<uint32_t>(text.size())};
      trie->arena_.insert(trie->arena_.end(), text.begin(), text.end());
      entries.emplace_back(std::move(text), token);
    }
    std::sort(entries.begin(), entries.end());
    // Sorted strings give the trie in preorder: each string shares a prefix with the path so far.
    std::vector<uint32_t> path;  // node indices from the root down
    std::string previous;
    std::vector<Node>& nodes = trie->nodes_;
    for (const auto& entry : entries) {
      const std::string& text = entry.first;
      size_t common = 0;
      while (common < previous.size() && common < text.size() && previous[common] == text[common]) ++common;
      while (path.size() > common) {
        nodes[path.back()].subtree_end = static_cast<uint32_t>(nodes.size());
        path.pop_back();
      }
      for (size_t i = common; i < text.size(); ++i) {
        path.push_back(static_cast<uint32_t>(nodes.size()));
        nodes.push_back(Node{static_cast<uint8_t>(text[i]), static_cast<uint16_t>(i + 1), 0,
                             static_cast<uint32_t>(trie->token_ids_.size())});
      }
      trie->token_ids_.push_back(entry.second);  // always the node made (or reached) last
      previous = text;
      if (text.size() > trie->max_depth_) trie->max_depth_ = text.size();
    }
    while (!path.empty()) {
      nodes[path.back()].subtree_end = static_cast<uint32_t>(nodes.size());
      path.pop_back();
    }
    nodes.push_back(Node{0, 0, 0, static_cast<uint32_t>(trie->token_ids_.size())});  // sentinel
    return trie;
  }

  // Preorder nodes and a sentinel last (its token_begin ends the last node's tokens).
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  size_t max_depth() const { return max_depth_; }
  int32_t eos_id() const { return eos_id_; }
  size_t vocab_size() const { return vocab_size_; }

  // The bytes a token stands for; empty for a token never allowed (control, <unk>, out of range).
  std::string_view token_text(int32_t token) const {
    if (token < 0 || static_cast<size_t>(token) >= vocab_size_) return std::string_view();
    const TokenBytes& t = token_bytes_[static_cast<size_t>(token)];
    return std::string_view(reinterpret_cast<const char*>(arena_.data()) + t.offset, t.size);
  }

 private:
  struct TokenBytes {
    uint32_t offset = 0;
    uint32_t size = 0;
  };
  VocabularyTrie() = default;

  std::vector<Node> nodes_;
  std::vector<int32_t> token_ids_;
  std::vector<TokenBytes> token_bytes_;
  std::vector<uint8_t> arena_;
  size_t max_depth_ = 0;
  int32_t eos_id_ = -1;
  size_t vocab_size_ = 0;
};

}  // namespace bora

#endif  // BORA_TEXT_VOCABULARY_TRIE_HPP
