// Why this file exists: the main job in one small program a user can copy — load a model, give it a
// prompt (or a chat turn), and stream the generated text to stdout.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

#include "args.hpp"
#include "generation_options.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: generate -m MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]\n"
               "                [--repeat-penalty R] [--seed S] [--threads N] [--chat] [--window N|none]\n"
               "  MODEL: a .gguf file, a Hugging Face or Mistral model folder, or ollama:NAME[:TAG]\n"
               "  --chat  wrap the prompt in the model's chat template (a user turn)\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string prompt;
  bool chat = false, have_prompt = false;
  example_args::GenerationOptions options(128);
  bora::SampleParams& sample = options.sample;
  bora::SessionParams& session_params = options.session;
  example_args::Parser args(argc, argv, "generate", usage);
  while (args.next()) {
    if (options.read(args)) continue;
    if (args.is("-p", "--prompt")) { prompt = args.text(); have_prompt = true; }
    else if (args.is("-n", "--n-predict")) sample.max_tokens = static_cast<int>(args.integer(-1, 1000000000));
    else if (args.is("--top-k")) sample.top_k = static_cast<int>(args.integer(0, 1000000000));
    else if (args.is("--top-p")) sample.top_p = static_cast<float>(args.real(0, 1));
    else if (args.is("--min-p")) sample.min_p = static_cast<float>(args.real(0, 1));
    else if (args.is("--repeat-penalty")) sample.repeat_penalty = static_cast<float>(args.real(0, 100));
    else if (args.is("--window")) session_params.sliding_window = args.integer_or("none", 0, 1, INT64_MAX);
    else if (args.is("--chat")) chat = true;
    else if (args.is("-h", "--help")) { usage(); return 0; }
    else args.unknown();
  }
  if (options.model_path.empty()) args.fail("-m MODEL is required");
  if (!have_prompt) args.fail("-p PROMPT is required");

  auto model = bora::load_any(options.model_path);
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
