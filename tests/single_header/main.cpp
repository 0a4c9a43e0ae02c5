// Why this file exists: proof that single_include/bora.hpp works on its own. This program is compiled
// with only that one header (plus Highway and simdjson), in two translation units as a real project
// would be, and must reproduce the reference logits of a bundled tiny model.
//
//   g++ -std=c++17 -Isingle_include tests/single_header/main.cpp tests/single_header/second_unit.cpp
//       -lhwy -lsimdjson -pthread -o single_header_test   (one line), then: ./single_header_test tests/data
#define BORA_IMPLEMENTATION
#include "bora.hpp"

#include <simdjson.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

// Defined in second_unit.cpp, which includes bora.hpp without BORA_IMPLEMENTATION.
int64_t vocabulary_size_from_second_unit(const std::string& model_path);

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "single_header_test: %s\n", message.c_str());
  return 1;
}

bool read_golden_tokens(const std::string& path, std::vector<int32_t>* tokens) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array array;
  if (parser.load(path).get(root) || root["tokens"].get_array().get(array)) return false;
  for (simdjson::dom::element element : array) {
    int64_t token = 0;
    if (element.get_int64().get(token)) return false;
    tokens->push_back(static_cast<int32_t>(token));
  }
  return !tokens->empty();
}

bool read_floats(const std::string& path, std::vector<float>* values) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) return false;
  float buffer[4096];
  size_t got = 0;
  while ((got = std::fread(buffer, sizeof(float), 4096, file)) > 0) values->insert(values->end(), buffer, buffer + got);
  std::fclose(file);
  return !values->empty();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string data_dir = argc > 1 ? argv[1] : "tests/data";
  const std::string model_path = data_dir + "/tiny-mistral/tiny-mistral-Q8_0.gguf";

  std::vector<int32_t> tokens;
  if (!read_golden_tokens(data_dir + "/tiny-mistral/golden/golden.json", &tokens)) {
    return fail("cannot read the golden tokens under " + data_dir);
  }
  std::vector<float> golden;
  if (!read_floats(data_dir + "/tiny-mistral/golden/Q8_0.logits_chunked.f32.bin", &golden)) {
    return fail("cannot read the golden logits under " + data_dir);
  }

  bora::LoadParams load_params;
  load_params.kv_cache_type = bora::KvCacheType::kF32;  // the exact path: what the golden is checked against
  auto model = bora::load_any(model_path, load_params);
  if (!model) return fail(model.error().message());
  const int64_t vocab = (*model)->config().vocab_size;
  if (vocab != vocabulary_size_from_second_unit(model_path)) return fail("the two translation units disagree");

  const int64_t n = static_cast<int64_t>(tokens.size());
  if (golden.size() != static_cast<size_t>(n * vocab)) return fail("golden logits have an unexpected size");

  bora::ContextParams context_params;
  context_params.n_ctx = n;
  context_params.n_batch = 10;  // prefill in chunks of 10, straddling the window edge
  context_params.f32_activations = true;  // exact mode, as `score --exact`
  auto context = (*model)->create_context(context_params);
  if (!context) return fail(context.error().message());
  std::vector<float> logits(golden.size());
  bora::Status status = (*model)->forward(**context, tokens.data(), n, logits.data(), /*all_logits=*/true);
  if (!status) return fail(status.error().message());

  float worst = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float difference = std::fabs(logits[i] - golden[i]);
    if (!(difference <= worst)) worst = difference;  // NaN counts as the worst
  }
  std::printf("single header: %s, simd target %s, %lld tokens, max |logit - golden| = %g\n",
              (*model)->preset_name(), bora::ops::simd_target_name(), static_cast<long long>(n), worst);
  if (!(worst <= 1e-3f)) return fail("logits differ from the golden by more than 1e-3");
  return 0;
}
