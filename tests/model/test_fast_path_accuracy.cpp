// Why this file exists: the fast path (int8 activations, f16 KV cache) trades accuracy for speed;
// this holds it to being at least as close to the reference as llama.cpp is on the same files,
// while the exact path keeps reproducing the goldens.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <cmath>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

struct Closeness {
  double mean_kl = 0;        // mean over positions of KL(reference || ours)
  double argmax_agree = 0;   // share of positions with the same top token
};

Closeness compare(const std::vector<float>& reference, const std::vector<float>& ours, int64_t vocab) {
  Closeness c;
  const int64_t rows = static_cast<int64_t>(reference.size()) / vocab;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = reference.data() + r * vocab;
    const float* q = ours.data() + r * vocab;
    double max_p = p[0], max_q = q[0];
    int64_t arg_p = 0, arg_q = 0;
    for (int64_t i = 1; i < vocab; ++i) {
      if (p[i] > max_p) { max_p = p[i]; arg_p = i; }
      if (q[i] > max_q) { max_q = q[i]; arg_q = i; }
    }
    double sum_p = 0, sum_q = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      sum_p += std::exp(p[i] - max_p);
      sum_q += std::exp(q[i] - max_q);
    }
    const double log_z_p = max_p + std::log(sum_p), log_z_q = max_q + std::log(sum_q);
    double kl = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      const double log_p = p[i] - log_z_p, log_q = q[i] - log_z_q;
      kl += std::exp(log_p) * (log_p - log_q);
    }
    c.mean_kl += kl / static_cast<double>(rows);
    c.argmax_agree += (arg_p == arg_q ? 1.0 : 0.0) / static_cast<double>(rows);
  }
  return c;
}

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
