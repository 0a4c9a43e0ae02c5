// Why this file exists: the oracle interface. It runs a model over a token sequence and prints
// each token's log-probability and the perplexity, or dumps raw logits, so correctness checks
// (ours and anyone's) can drive bora from the command line.
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "args.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: score -m MODEL (--tokens \"1 4 9 ...\" | --text TEXT) [--exact] [--threads N]\n"
               "             [--window N|none] [--batch N] [--dump-logits OUT]\n"
               "  --exact        f32 activations and f32 KV cache (reproduces reference logits)\n"
               "  --window       override the sliding window (none = plain causal attention)\n"
               "  --batch        prefill chunk size (default: all tokens at once)\n"
               "  --dump-logits  write little-endian float32 [n_tokens][vocab]; row i = logits after tokens 0..i\n");
}

int fail(const char* message) {
  std::fprintf(stderr, "score: %s\n", message);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, tokens_text, text, dump_path;
  bool exact = false, have_tokens = false, have_text = false;
  long long threads = 1, batch = 0, window = -1;
  example_args::Parser args(argc, argv, "score", usage);
  while (args.next()) {
    if (args.is("-m", "--model")) model_path = args.text();
    else if (args.is("--tokens")) { tokens_text = args.text(); have_tokens = true; }
    else if (args.is("--text")) { text = args.text(); have_text = true; }
    else if (args.is("--exact")) exact = true;
    else if (args.is("-t", "--threads")) threads = args.integer(1, 1024);
    else if (args.is("--batch")) batch = args.integer(1, INT64_MAX);
    else if (args.is("--window")) window = args.integer_or("none", 0, 1, INT64_MAX);
    else if (args.is("--dump-logits")) dump_path = args.text();
    else if (args.is("-h", "--help")) { usage(); return 0; }
    else args.unknown();
  }
  if (model_path.empty()) args.fail("-m MODEL is required");
  if (have_tokens == have_text) args.fail("give exactly one of --tokens or --text");

  bora::LoadParams load_params;
  load_params.kv_cache_type = exact ? bora::KvCacheType::kF32 : bora::KvCacheType::kF16;
  auto model = bora::load_any(model_path, load_params);
  if (!model) return fail(model.error().message());
  const bora::ModelConfig& config = (*model)->config();

  std::vector<int32_t> tokens;
  if (have_tokens) {
    std::vector<long long> ids;
    std::string bad;
    if (!example_args::parse_integer_list(tokens_text, 0, config.vocab_size - 1, " ,\t\n", &ids, &bad)) {
      std::fprintf(stderr, "score: bad token '%.20s' (vocabulary has %lld ids)\n", bad.c_str(), (long long)config.vocab_size);
      return 1;
    }
    for (long long id : ids) tokens.push_back(static_cast<int32_t>(id));
  } else {
    const bora::Tokenizer* tokenizer = (*model)->tokenizer();
    if (tokenizer == nullptr) return fail("--text: this model's files have no tokenizer; use --tokens");
    tokens = tokenizer->encode(text, tokenizer->add_bos_by_default());
  }
  if (tokens.empty()) return fail("no tokens to score");

  const int64_t n = static_cast<int64_t>(tokens.size());
  bora::ContextParams context_params;
  context_params.n_ctx = n;
  context_params.n_batch = batch > 0 ? batch : n;
  context_params.n_threads = static_cast<int>(threads);
  context_params.sliding_window = window;
  context_params.f32_activations = exact;
  auto context = (*model)->create_context(context_params);
  if (!context) return fail(context.error().message());

  const int64_t vocab = config.vocab_size;
  std::vector<float> logits(static_cast<size_t>(n * vocab));
  bora::Status status = (*model)->forward(**context, tokens.data(), n, logits.data(), /*all_logits=*/true);
  if (!status) return fail(status.error().message());

  double total_nll = 0.0;
  for (int64_t i = 0; i + 1 < n; ++i) {
    const float* row = logits.data() + i * vocab;
    double max_logit = row[0];
    for (int64_t j = 1; j < vocab; ++j) max_logit = std::max<double>(max_logit, row[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(row[j] - max_logit);
    const double log_prob = row[tokens[static_cast<size_t>(i + 1)]] - max_logit - std::log(sum);
    total_nll -= log_prob;
    std::printf("%lld\t%d\t%.6f\n", (long long)(i + 1), tokens[static_cast<size_t>(i + 1)], log_prob);
  }
  if (n > 1) std::printf("perplexity %.6f over %lld tokens\n", std::exp(total_nll / double(n - 1)), (long long)(n - 1));

  if (!dump_path.empty()) {
    FILE* out = std::fopen(dump_path.c_str(), "wb");
    if (!out) return fail(("cannot write " + dump_path).c_str());
    // Logits are written as the host's float32; bora targets little-endian hosts only.
    const size_t written = std::fwrite(logits.data(), sizeof(float), logits.size(), out);
    if (std::fclose(out) != 0 || written != logits.size()) return fail(("cannot write " + dump_path).c_str());
  }
  return 0;
}
