// Why this file exists: the text tests that run many sessions or sequences share one loaded demo model
// (real vocabulary, small weights), loaded once per test binary, read-only, so several threads may use it.
#ifndef BORA_TESTS_SUPPORT_DEMO_MODEL_HPP
#define BORA_TESTS_SUPPORT_DEMO_MODEL_HPP

#include <doctest/doctest.h>

#include <memory>
#include <utility>

#include "bora/bora.hpp"
#include "golden.hpp"

namespace bora_test {

inline const bora::LanguageModel& demo_model() {
  static const std::unique_ptr<bora::LanguageModel> model = [] {
    auto loaded = bora::load_any(data_path("demo-mistral/demo-mistral-Q4_0.gguf"));
    REQUIRE(loaded);
    REQUIRE((*loaded)->tokenizer() != nullptr);
    return std::move(*loaded);
  }();
  return *model;
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_DEMO_MODEL_HPP
