// Why this file exists: a JSON Schema arrives from a client (response_format, a tool's parameters), so
// the schema compiler must turn any bytes into a grammar or an error, never a crash or a runaway; and a
// grammar it accepts must drive a GrammarMatcher without breaking the matcher's own promises (every
// token the mask allows is accepted).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "bora/text/grammar_constraint.hpp"
#include "bora/text/json_schema.hpp"
#include "bora/text/tokenizer.hpp"
#include "fuzz_grammar_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view schema(reinterpret_cast<const char*>(data), size);
  bora::JsonGrammarOptions options;
  options.max_members = 4;  // the server's bound when a schema sets none, so grammars stay small
  auto grammar = bora::json_schema_grammar(schema, options);
  if (!grammar) {
    BORA_FUZZ_CHECK(!grammar.error().str().empty());
    return 0;
  }
  bora_fuzz::drive_matcher(std::move(*grammar), schema);
  return 0;
}
