// Why this file exists: the program of the installed-package test (see CMakeLists.txt): it loads a
// model through the installed headers and runs a forward pass, as the README's first lines promise.
#define BORA_IMPLEMENTATION
#include <bora/bora.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

const char* simd_target_from_second_unit();  // second_unit.cpp includes bora without the implementation

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bora_package_test MODEL\n");
    return 2;
  }
  auto model = bora::load_any(argv[1]);
  if (!model) {
    std::fprintf(stderr, "bora_package_test: %s\n", model.error().message());
    return 1;
  }
  auto context = (*model)->create_context(bora::ContextParams{});
  if (!context) {
    std::fprintf(stderr, "bora_package_test: %s\n", context.error().message());
    return 1;
  }
  const std::vector<int32_t> tokens = {1, 434, 154, 118};
  std::vector<float> logits(static_cast<size_t>((*model)->config().vocab_size));
  bora::Status status = (*model)->forward(**context, tokens.data(), static_cast<int64_t>(tokens.size()),
                                          logits.data(), /*all_logits=*/false);
  if (!status) {
    std::fprintf(stderr, "bora_package_test: %s\n", status.error().message());
    return 1;
  }
  size_t best = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (!std::isfinite(logits[i])) {
      std::fprintf(stderr, "bora_package_test: logit %zu is not finite\n", i);
      return 1;
    }
    if (logits[i] > logits[best]) best = i;
  }
  std::printf("installed bora %d.%d.%d: %s on %s, next token after 4 = %zu\n", BORA_VERSION_MAJOR,
              BORA_VERSION_MINOR, BORA_VERSION_PATCH, (*model)->preset_name(), simd_target_from_second_unit(), best);
  return 0;
}
