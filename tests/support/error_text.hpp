// Why this file exists: tests check that an error names what went wrong (the file, the key, the
// tensor) by looking for words in its message; this is the one way they look.
#ifndef BORA_TESTS_SUPPORT_ERROR_TEXT_HPP
#define BORA_TESTS_SUPPORT_ERROR_TEXT_HPP

#include <string>
#include <string_view>

#include "bora/base/expected.hpp"

namespace bora_test {

// True when the error message contains `text`.
inline bool contains(const bora::Error& error, std::string_view text) {
  return error.str().find(text) != std::string::npos;
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_ERROR_TEXT_HPP
