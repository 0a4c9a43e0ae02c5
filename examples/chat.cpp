// Why this file exists: an interactive conversation in the terminal with the model's own chat
// template; each turn reuses the KV cache of the conversation so far.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  std::string model_path, system_prompt;
  bora::SampleParams sample;
  sample.max_tokens = 512;
  bora::SessionParams session_params;
  session_params.n_threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "-m" || arg == "--model") && i + 1 < argc) model_path = argv[++i];
    else if (arg == "--system" && i + 1 < argc) system_prompt = argv[++i];
    else if (arg == "--temp" && i + 1 < argc) sample.temperature = std::strtof(argv[++i], nullptr);
    else if (arg == "--seed" && i + 1 < argc) sample.seed = std::strtoull(argv[++i], nullptr, 10);
    else if ((arg == "--threads" || arg == "-t") && i + 1 < argc) session_params.n_threads = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: chat -m MODEL [--system TEXT] [--temp T] [--seed S] [--threads N]\n");
      return 2;
    }
  }
  if (model_path.empty()) {
    std::fprintf(stderr, "usage: chat -m MODEL [--system TEXT] [--temp T] [--seed S] [--threads N]\n");
    return 2;
  }
  auto model = bora::load_any(model_path);
  if (!model) { std::fprintf(stderr, "chat: %s\n", model.error().message()); return 1; }
  auto session = (*model)->session(session_params);
  if (!session) { std::fprintf(stderr, "chat: %s\n", session.error().message()); return 1; }

  std::vector<bora::ChatMessage> conversation;
  if (!system_prompt.empty()) conversation.push_back({"system", system_prompt});
  std::string line;
  for (;;) {
    std::printf("> ");
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    conversation.push_back({"user", line});
    auto reply = session->chat(conversation, sample, [](std::string_view piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    if (!reply) { std::fprintf(stderr, "chat: %s\n", reply.error().message()); return 1; }
    conversation.push_back({"assistant", reply->text});
  }
  return 0;
}
