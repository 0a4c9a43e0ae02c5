// Why this file exists: the JSON-schema and GBNF targets both end the same way — a grammar the compiler
// accepted is made into a GrammarConstraint over the real Mistral vocabulary and a matcher is walked a
// few steps, so the DFA, the mask and the replay after a cache restart all run on fuzzed grammars.
#ifndef BORA_TESTS_FUZZ_FUZZ_GRAMMAR_SUPPORT_HPP
#define BORA_TESTS_FUZZ_FUZZ_GRAMMAR_SUPPORT_HPP

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "bora/text/grammar.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/text/vocabulary_trie.hpp"
#include "fuzz_support.hpp"

namespace bora_fuzz {

inline const bora::Tokenizer& grammar_tokenizer() {
  static const bora::Tokenizer* tokenizer = [] {
    auto loaded = bora::Tokenizer::from_file(data_path("tokenizer/tokenizer.model.v1"));
    BORA_FUZZ_REQUIRE_SETUP(loaded.has_value());
    return new bora::Tokenizer(std::move(*loaded));  // lives as long as the process
  }();
  return *tokenizer;
}

// Its vocabulary trie, built once: every input's constraint shares it, as serve's requests do.
inline const std::shared_ptr<const bora::VocabularyTrie>& grammar_vocabulary() {
  static const std::shared_ptr<const bora::VocabularyTrie> vocabulary = [] {
    auto built = bora::VocabularyTrie::build(grammar_tokenizer());
    BORA_FUZZ_REQUIRE_SETUP(built != nullptr);
    return built;
  }();
  return vocabulary;
}

// The allowed token ids in `bits`, the `choice`-th modulo their count (so the input steers which), or -1.
inline int32_t pick_allowed(const std::vector<uint64_t>& bits, uint8_t choice) {
  std::vector<int32_t> ids;
  for (size_t word = 0; word < bits.size(); ++word) {
    for (uint64_t rest = bits[word]; rest != 0; rest &= rest - 1)
      ids.push_back(static_cast<int32_t>(word * 64 + static_cast<size_t>(__builtin_ctzll(rest))));
  }
  return ids.empty() ? -1 : ids[choice % ids.size()];
}

// Builds a constraint from `grammar` (a small cache budget, so restarts happen too), feeds a matcher
// a few bytes of `input` as text, then a few tokens its own mask allows.
inline void drive_matcher(bora::Grammar grammar, std::string_view input) {
  bora::GrammarConstraintOptions options;
  options.max_cache_bytes = size_t{1} << 20;
  options.vocabulary = grammar_vocabulary();
  auto constraint = bora::GrammarConstraint::create(std::move(grammar), grammar_tokenizer(), options);
  if (!constraint) {
    BORA_FUZZ_CHECK(!constraint.error().str().empty());
    return;
  }
  bora::GrammarMatcher matcher(*constraint);
  // Text the grammar may or may not accept: a refusal must leave the matcher where it was.
  const std::string_view probe = input.substr(0, 8);
  const bool took = matcher.accept_text(probe);
  if (!took) BORA_FUZZ_CHECK(!matcher.is_finished());
  for (int step = 0; step < 4; ++step) {
    const std::vector<uint64_t> allowed = matcher.allowed_tokens();
    BORA_FUZZ_CHECK(allowed.size() == (*constraint)->mask_words());
    const uint8_t choice = input.size() > static_cast<size_t>(step) ? static_cast<uint8_t>(input[input.size() - 1 - step]) : 0;
    const int32_t token = pick_allowed(allowed, choice);
    if (token < 0) {
      BORA_FUZZ_CHECK(!matcher.is_complete());  // a complete value always allows EOS
      break;
    }
    BORA_FUZZ_CHECK(matcher.accept(token));
    if (matcher.is_finished()) break;
  }
}

}  // namespace bora_fuzz

#endif  // BORA_TESTS_FUZZ_FUZZ_GRAMMAR_SUPPORT_HPP
