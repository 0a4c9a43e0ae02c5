// Why this file exists: a GBNF grammar is text a user hands the server or the CLI, so the GBNF reader
// must turn any bytes into a grammar or an error that says where, never a crash or a runaway; and a
// grammar it accepts must drive a GrammarMatcher without breaking the matcher's own promises.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bora/text/gbnf.hpp"
#include "bora/text/grammar_constraint.hpp"
#include "fuzz_grammar_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto grammar = bora::parse_gbnf(text);
  if (!grammar) {
    BORA_FUZZ_CHECK(!grammar.error().str().empty());
    return 0;
  }
  bora_fuzz::drive_matcher(std::move(*grammar), text);
  return 0;
}
