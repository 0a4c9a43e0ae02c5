// Why this file exists: the oracle interface. It runs a model over a token sequence and prints
// each token's log-probability and the perplexity, or dumps raw logits, so correctness checks
// (ours and anyone's) can drive bora from the command line.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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

bool parse_int(const char* text, long long* out) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0) return false;
  *out = value;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, tokens_text, text, dump_path;
  bool exact = false, have_tokens = false, have_text = false;
  long long threads = 1, batch = 0, window = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "score: %s needs a value\n", what);
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "-m" || arg == "--model") model_path = next("-m");
    else if (arg == "--tokens") { tokens_text = next("--tokens"); have_tokens = true; }
    else if (arg == "--text") { text = next("--text"); have_text = true; }
    else if (arg == "--exact") exact = true;
    else if (arg == "--threads" || arg == "-t") {
      if (!parse_int(next("--threads"), &threads) || threads < 1 || threads > 1024) return fail("--threads must be 1..1024");
    } else if (arg == "--batch") {
      if (!parse_int(next("--batch"), &batch) || batch < 1) return fail("--batch must be a positive number");
    } else if (arg == "--window") {
      const char* value = next("--window");
      if (std::strcmp(value, "none") == 0) window = 0;
      else if (!parse_int(value, &window) || window < 1) return fail("--window must be a positive number or 'none'");
    } else if (arg == "--dump-logits") dump_path = next("--dump-logits");
    else if (arg == "-h" || arg == "--help") { usage(); return 0; }
    else {
      usage();
      std::fprintf(stderr, "score: unknown argument '%s'\n", arg.c_str());
      return 2;
    }
  }
  if (model_path.empty()) { usage(); return fail("-m MODEL is required"); }
  if (have_tokens == have_text) { usage(); return fail("give exactly one of --tokens or --text"); }

  bora::LoadParams load_params;
  load_params.kv_cache_type = exact ? bora::KvCacheType::kF32 : bora::KvCacheType::kF16;
  auto model = bora::load_any(model_path, load_params);
  if (!model) return fail(model.error().message());
  const bora::ModelConfig& config = (*model)->config();

  std::vector<int32_t> tokens;
  if (have_tokens) {
    const char* p = tokens_text.c_str();
    while (*p) {
      while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') ++p;
      if (!*p) break;
      char* end = nullptr;
      errno = 0;
      const long long id = std::strtoll(p, &end, 10);
      if (end == p || errno != 0 || id < 0 || id >= config.vocab_size) {
        std::fprintf(stderr, "score: bad token near '%.20s' (vocabulary has %lld ids)\n", p, (long long)config.vocab_size);
        return 1;
      }
      tokens.push_back(static_cast<int32_t>(id));
      p = end;
    }
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
