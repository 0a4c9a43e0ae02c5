// Why this file exists: the demo model is trained, so its held-out perplexity is a sharp end-to-end
// check of tokenizer + forward pass + sliding window together; this follows the demo's protocol and
// must reproduce the reference's figure for the bundled file.
#include <doctest/doctest.h>

#include <simdjson.h>

#include <cmath>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

// heldout.txt split on blank lines; each entry becomes <s> + encode(entry) + </s>, all concatenated.
std::vector<int32_t> heldout_tokens(const bora::Tokenizer& tokenizer) {
  std::string text;
  {
    auto file = bora::MappedFile::open(bora_test::data_path("demo-mistral/heldout.txt"));
    REQUIRE(file);
    text.assign(reinterpret_cast<const char*>(file->data()), static_cast<size_t>(file->size()));
  }
  // The file ends with a newline after its last entry; the protocol's entries carry none.
  while (!text.empty() && text.back() == '\n') text.pop_back();
  std::vector<int32_t> ids;
  size_t begin = 0;
  for (;;) {
    const size_t end = text.find("\n\n", begin);
    const std::string entry = text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    ids.push_back(tokenizer.bos_id());
    const std::vector<int32_t> encoded = tokenizer.encode(entry, false);
    ids.insert(ids.end(), encoded.begin(), encoded.end());
    ids.push_back(tokenizer.eos_id());
    if (end == std::string::npos) break;
    begin = end + 2;
  }
  return ids;
}

double golden_perplexity(const char* weights, const char* method) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE_FALSE(parser.load(bora_test::data_path("demo-mistral/golden/golden.json")).get(root));
  double ppl = 0;
  REQUIRE_FALSE(root["perplexity"][weights][method]["ppl"].get_double().get(ppl));
  return ppl;
}

// Chunks of 128 tokens, each from position 0; predictions of tokens 1..n-1 of each chunk are scored.
double chunked_perplexity(const bora::Model& model, const std::vector<int32_t>& ids, int64_t window, int threads) {
  bora::ContextParams params;
  params.n_ctx = 128;
  params.n_batch = 128;
  params.n_threads = threads;
  params.sliding_window = window;
  params.f32_activations = true;
  auto ctx = model.create_context(params);
  REQUIRE(ctx);
  const int64_t vocab = model.config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(128 * vocab));
  double nll = 0;
  int64_t scored = 0;
  for (size_t start = 0; start < ids.size(); start += 128) {
    const int64_t n = std::min<int64_t>(128, static_cast<int64_t>(ids.size() - start));
    (*ctx)->reset();
    REQUIRE(model.forward(**ctx, ids.data() + start, n, logits.data(), true));
    for (int64_t i = 0; i + 1 < n; ++i) {
      const float* row = logits.data() + i * vocab;
      double max_logit = row[0];
      for (int64_t j = 1; j < vocab; ++j) max_logit = std::max<double>(max_logit, row[j]);
      double sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(row[j] - max_logit);
      nll -= row[ids[start + static_cast<size_t>(i) + 1]] - max_logit - std::log(sum);
      ++scored;
    }
  }
  CHECK(scored == 8636);
  return std::exp(nll / static_cast<double>(scored));
}

}  // namespace

TEST_CASE("demo-mistral Q4_0: held-out perplexity equals the reference's, with and without the window" *
          doctest::test_suite("slow")) {
  bora::LoadParams load_params;
  load_params.kv_cache_type = bora::KvCacheType::kF32;
  auto model = bora::load_any(bora_test::data_path("demo-mistral/demo-mistral-Q4_0.gguf"), load_params);
  REQUIRE(model);
  REQUIRE((*model)->tokenizer() != nullptr);
  CHECK((*model)->config().sliding_window == 64);
  const std::vector<int32_t> ids = heldout_tokens(*(*model)->tokenizer());
  REQUIRE(ids.size() == 8704);

  const double window_golden = golden_perplexity("Q4_0", "reference_window");
  const double window_ppl = chunked_perplexity(**model, ids, -1, 2);
  CHECK(std::fabs(window_ppl / window_golden - 1.0) < 1e-4);

  const double nowindow_golden = golden_perplexity("Q4_0", "reference_nowindow");
  const double nowindow_ppl = chunked_perplexity(**model, ids, 0, 2);
  CHECK(std::fabs(nowindow_ppl / nowindow_golden - 1.0) < 1e-4);
}
