// Why this file exists: the fast path (int8 activations, f16 KV cache) trades accuracy for speed;
// this holds it to being at least as close to the reference as llama.cpp is on the same files,
// while the exact path keeps reproducing the goldens.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <cmath>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/closeness.hpp"
#include "../support/golden.hpp"

namespace {

using bora_test::Closeness;
using bora_test::compare;

struct FileCase {
  const char* model;
  const char* file;
  const char* golden;  // the reference run llama.cpp is compared with (no window)
};

}  // namespace

TEST_CASE("the fast path is at least as close to the reference as llama.cpp on every GGUF file") {
  const FileCase cases[] = {
      {"tiny-mistral", "tiny-mistral-F32.gguf", "exact.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-BF16.gguf", "exact.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-Q8_0.gguf", "Q8_0.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-Q4_0.gguf", "Q4_0.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-Q4_K.gguf", "Q4_K.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-Q5_K.gguf", "Q5_K.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-Q6_K.gguf", "Q6_K.logits_nowindow"},
      {"tiny-mistral", "tiny-mistral-Q4_K_M.gguf", "Q4_K_M.logits_nowindow"},
      {"tiny-mixtral", "tiny-mixtral-F16.gguf", "exact.logits_chunked"},
      {"tiny-mixtral", "tiny-mixtral-Q8_0.gguf", "Q8_0.logits_chunked"},
      {"tiny-mixtral", "tiny-mixtral-Q4_K.gguf", "Q4_K.logits_chunked"},
  };
  simdjson::dom::parser parser;
  simdjson::dom::element llamacpp;
  REQUIRE_FALSE(parser.load(bora_test::data_path("llamacpp_vs_golden.json")).get(llamacpp));
  for (const FileCase& c : cases) {
    CAPTURE(c.file);
    bora_test::Golden golden;
    REQUIRE(bora_test::load_golden(c.model, "exact", &golden));
    const auto reference = bora_test::read_floats(bora_test::data_path(std::string(c.model) + "/golden/" + c.golden + ".f32.bin"));
    REQUIRE(reference.size() == 64 * 512);

    // Defaults: f16 KV cache, int8 activations for quantized weights; no window, like llama.cpp.
    auto model = bora::load_any(bora_test::data_path(std::string(c.model) + "/" + c.file));
    REQUIRE(model);
    bora::ContextParams params;
    params.n_ctx = 64;
    params.sliding_window = 0;
    auto ctx = (*model)->create_context(params);
    REQUIRE(ctx);
    std::vector<float> ours(64 * 512);
    REQUIRE((*model)->forward(**ctx, golden.tokens.data(), 64, ours.data(), true));
    const Closeness mine = compare(reference, ours, 512);

    double their_kl = 0, their_agree = 0;
    REQUIRE_FALSE(llamacpp["files"][c.file]["mean_kl"].get_double().get(their_kl));
    REQUIRE_FALSE(llamacpp["files"][c.file]["argmax_agree"].get_double().get(their_agree));
    MESSAGE(std::string(c.file) << ": bora KL " << mine.mean_kl << " top-1 " << mine.argmax_agree << " | llama.cpp KL " << their_kl
                   << " top-1 " << their_agree);
    CHECK(mine.mean_kl <= their_kl);
    CHECK(mine.argmax_agree >= their_agree);
  }
}
