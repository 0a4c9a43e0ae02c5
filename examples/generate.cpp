// Why this file exists: the main job in one small program a user can copy — load a model, give it a
// prompt (or a chat turn), and stream the generated text to stdout.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: generate -m MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]\n"
               "                [--repeat-penalty R] [--seed S] [--threads N] [--chat] [--window N|none]\n"
               "  MODEL: a .gguf file, a Hugging Face or Mistral model folder, or ollama:NAME[:TAG]\n"
               "  --chat  wrap the prompt in the model's chat template (a user turn)\n");
}

bool number(const char* text, double* out) {
  char* end = nullptr;
  errno = 0;
  *out = std::strtod(text, &end);
  return end != text && *end == '\0' && errno == 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, prompt;
  bool chat = false, have_prompt = false;
  bora::SampleParams sample;
  sample.max_tokens = 128;
  bora::SessionParams session_params;
  session_params.n_threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    double value = 0;
    auto numeric = [&](double low, double high) {
      if (!has_value || !number(argv[++i], &value) || value < low || value > high) {
        std::fprintf(stderr, "generate: %s needs a number in [%g, %g]\n", arg.c_str(), low, high);
        std::exit(2);
      }
      return value;
    };
    if ((arg == "-m" || arg == "--model") && has_value) model_path = argv[++i];
    else if ((arg == "-p" || arg == "--prompt") && has_value) { prompt = argv[++i]; have_prompt = true; }
    else if (arg == "-n" || arg == "--n-predict") sample.max_tokens = static_cast<int>(numeric(-1, 1e9));
    else if (arg == "--temp") sample.temperature = static_cast<float>(numeric(0, 100));
    else if (arg == "--top-k") sample.top_k = static_cast<int>(numeric(0, 1e9));
    else if (arg == "--top-p") sample.top_p = static_cast<float>(numeric(0, 1));
    else if (arg == "--min-p") sample.min_p = static_cast<float>(numeric(0, 1));
    else if (arg == "--repeat-penalty") sample.repeat_penalty = static_cast<float>(numeric(0, 100));
    else if (arg == "--seed") sample.seed = static_cast<uint64_t>(numeric(0, 1.8e19));
    else if (arg == "--threads" || arg == "-t") {
      session_params.n_threads = static_cast<int>(numeric(1, 1024));
    } else if (arg == "--window" && has_value) {
      const char* w = argv[++i];
      if (std::strcmp(w, "none") == 0) session_params.sliding_window = 0;
      else if (number(w, &value) && value >= 1) session_params.sliding_window = static_cast<int64_t>(value);
      else { std::fprintf(stderr, "generate: --window needs a number or 'none'\n"); return 2; }
    } else if (arg == "--chat") chat = true;
    else if (arg == "-h" || arg == "--help") { usage(); return 0; }
    else { usage(); std::fprintf(stderr, "generate: unknown or incomplete argument '%s'\n", arg.c_str()); return 2; }
  }
  if (model_path.empty() || !have_prompt) { usage(); return 2; }

  auto model = bora::load_any(model_path);
  if (!model) { std::fprintf(stderr, "generate: %s\n", model.error().message()); return 1; }
  auto session = (*model)->session(session_params);
  if (!session) { std::fprintf(stderr, "generate: %s\n", session.error().message()); return 1; }

  auto print = [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  };
  if (!chat) std::fwrite(prompt.data(), 1, prompt.size(), stdout);  // a completion continues the prompt
  auto report = [](const bora::Error& error) {
    std::fprintf(stderr, "\ngenerate: %s\n", error.message());
    return 1;
  };
  if (chat) {
    auto result = session->chat({{"user", prompt}}, sample, print);
    if (!result) return report(result.error());
  } else {
    auto result = session->complete(prompt, sample, print);
    if (!result) return report(result.error());
  }
  std::printf("\n");
  return 0;
}
