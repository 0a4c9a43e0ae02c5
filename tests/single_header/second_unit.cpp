// Why this file exists: a second translation unit that includes the single header without
// BORA_IMPLEMENTATION, so the link fails if anything in it is defined non-inline (twice).
#include "bora.hpp"

#include <cstdint>
#include <string>

int64_t vocabulary_size_from_second_unit(const std::string& model_path) {
  auto files = bora::ModelFiles::open(model_path);
  return files ? files->config().vocab_size : -1;
}
