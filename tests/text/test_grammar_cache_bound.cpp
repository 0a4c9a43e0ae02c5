// Why this file exists: a grammar constraint is shared by every sequence that uses it (a server keeps
// one per schema), and its lazily built DFA grows with every new parser configuration generation meets.
// A hostile or merely varied workload must not grow it without bound: past max_cache_bytes the cache
// starts over, and matchers in the middle of their text replay it and go on exactly as before.
#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

#include "bora/base/random.hpp"
#include "bora/bora.hpp"
#include "bora/text/gbnf.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "../support/demo_model.hpp"

TEST_CASE("grammar cache: the DFA and masks stay under max_cache_bytes, and matchers stay exact across restarts") {
  // Every distinct prefix of brackets is a distinct stack of the parser, hence a distinct DFA state.
  const char* const kNested = "root ::= \"[\" root \"]\" | \"(\" root \")\" | \"x\"\n";
  const bora::Tokenizer& tokenizer = *bora_test::demo_model().tokenizer();
  bora::GrammarConstraintOptions small;
  small.max_cache_bytes = size_t{1} << 20;
  auto grammar = bora::parse_gbnf(kNested);
  REQUIRE(grammar);
  auto bounded = bora::GrammarConstraint::create(*grammar, tokenizer, small);
  REQUIRE(bounded);
  auto unbounded = bora::GrammarConstraint::create(std::move(*grammar), tokenizer);
  REQUIRE(unbounded);

  bora::Xoshiro256 rng(7);
  size_t largest = 0;
  for (int round = 0; round < 12; ++round) {
    // Three matchers advance in turn over one shared bounded constraint, so restarts caused by one
    // happen in the middle of the others' texts.
    std::vector<std::string> texts(3);
    for (std::string& text : texts) {
      for (int depth = 0; depth < 60; ++depth) text.push_back(rng.next_double() < 0.5 ? '[' : '(');
      text.push_back('x');
      for (size_t i = text.size() - 1; i-- > 0;) text.push_back(text[i] == '[' ? ']' : ')');
    }
    std::vector<bora::GrammarMatcher> matchers, references;
    for (int k = 0; k < 3; ++k) {
      matchers.emplace_back(*bounded);
      references.emplace_back(*unbounded);
    }
    for (size_t at = 0; at < texts[0].size(); ++at) {
      for (size_t k = 0; k < 3; ++k) {
        const std::string one(1, texts[k][at]);
        REQUIRE(matchers[k].accept_text(one));
        REQUIRE(references[k].accept_text(one));
        if (at % 16 == 0) {
          CAPTURE(at);
          CHECK(matchers[k].allowed_tokens() == references[k].allowed_tokens());
        }
        CHECK(matchers[k].is_complete() == references[k].is_complete());
      }
      largest = std::max(largest, (*bounded)->cache_bytes());
    }
    for (size_t k = 0; k < 3; ++k) {
      CHECK(matchers[k].is_complete());
      CHECK_FALSE(matchers[k].accept_text("]"));
    }
  }
  // Restarts happened, and between them the cache never held much more than its budget (within one
  // call it may reach twice the DFA's share before the next call starts over).
  CHECK((*bounded)->cache_restarts() > 0);
  CHECK(largest <= 2 * small.max_cache_bytes);
  CHECK((*unbounded)->cache_restarts() == 0);
  CHECK((*unbounded)->cache_bytes() > small.max_cache_bytes);
}
