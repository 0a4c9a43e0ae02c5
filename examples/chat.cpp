// Why this file exists: an interactive conversation in the terminal with the model's own chat
// template; each turn reuses the KV cache of the conversation so far.
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "args.hpp"
#include "generation_options.hpp"

namespace {

void usage() { std::fprintf(stderr, "usage: chat -m MODEL [--system TEXT] [--temp T] [--seed S] [--threads N] [--kv-type f16|q8_0|f32]\n"); }

}  // namespace

int main(int argc, char** argv) {
  std::string system_prompt;
  example_args::GenerationOptions options(512);
  example_args::Parser args(argc, argv, "chat", usage);
  while (args.next()) {
    if (options.read(args)) continue;
    if (args.is("--system")) system_prompt = args.text();
    else args.unknown();
  }
  if (options.model_path.empty()) args.fail("-m MODEL is required");
  auto model = bora::load_any(options.model_path, options.load);
  if (!model) { std::fprintf(stderr, "chat: %s\n", model.error().message()); return 1; }
  auto session = (*model)->session(options.session);
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
    auto reply = session->chat(conversation, options.sample, [](std::string_view piece) {
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
