// Why this file exists: shows exactly which token ids bora produces for a text, a file or a chat
// conversation (and the text for ids), so tokenization can be compared with SentencePiece and
// mistral-common from the shell.
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <sys/stat.h>

#include "args.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: tokenize -m MODEL_OR_TOKENIZER [--bos] (--text T | --file F | --decode \"ids\" | --chat FILE.json)\n"
               "  MODEL_OR_TOKENIZER: a .gguf file, a SentencePiece tokenizer.model, a model folder, or ollama:NAME[:TAG]\n"
               "  --file encodes the file's bytes exactly as they are; --chat renders a mistral-common request (messages,\n"
               "  and tools, tool calls and tool results for the v2/v3 templates)\n");
}

int fail(const std::string& message) {
  std::fprintf(stderr, "tokenize: %s\n", message.c_str());
  return 1;
}

bool read_file(const std::string& path, std::string* out) {
  auto mapped = bora::MappedFile::open(path);
  if (!mapped) return false;
  out->assign(reinterpret_cast<const char*>(mapped->data()), static_cast<size_t>(mapped->size()));
  return true;
}

bool is_model_path(const std::string& path) {
  if (path.rfind("ollama:", 0) == 0) return true;
  if (path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return true;
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

void print_ids(const std::vector<int32_t>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) std::printf(i ? " %d" : "%d", ids[i]);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string source, text, file, decode, chat;
  bool bos = false;
  int modes = 0;
  example_args::Parser args(argc, argv, "tokenize", usage);
  while (args.next()) {
    if (args.is("-m", "--model")) source = args.text();
    else if (args.is("--bos")) bos = true;
    else if (args.is("--text")) { text = args.text(); ++modes; }
    else if (args.is("--file")) { file = args.text(); ++modes; }
    else if (args.is("--decode")) { decode = args.text(); ++modes; }
    else if (args.is("--chat")) { chat = args.text(); ++modes; }
    else args.unknown();
  }
  if (source.empty()) args.fail("-m MODEL_OR_TOKENIZER is required");
  if (modes != 1) args.fail("give exactly one of --text, --file, --decode or --chat");

  // A model (.gguf, folder, ollama:) brings its tokenizer and chat template; any other file is
  // read as a tokenizer on its own (SentencePiece .model, or GGUF recognised by its magic).
  std::shared_ptr<const bora::Tokenizer> tokenizer;
  std::string declared_template;
  if (is_model_path(source)) {
    auto files = bora::open_model_files(source, bora::FileAccess::kMap);  // only the tokenizer is needed
    if (!files) return fail(files.error().message());
    auto loaded = bora::load_model_tokenizer(*files);
    if (!loaded) return fail(loaded.error().message());
    tokenizer = *loaded;
    if (!tokenizer) return fail(source + " has no tokenizer");
    declared_template = bora::declared_chat_template(*files);
  } else {
    auto loaded = bora::Tokenizer::from_file(source);
    if (!loaded) return fail(loaded.error().message());
    tokenizer = std::make_shared<bora::Tokenizer>(std::move(*loaded));
  }

  if (!decode.empty()) {
    std::vector<long long> parsed;
    std::string bad;
    const long long last_id = static_cast<long long>(tokenizer->vocab_size()) - 1;
    if (!example_args::parse_integer_list(decode, 0, last_id, " ,\t\n", &parsed, &bad))
      return fail("bad token id '" + bad.substr(0, 20) + "' (ids go from 0 to " + std::to_string(last_id) + ")");
    std::vector<int32_t> ids;
    for (long long id : parsed) ids.push_back(static_cast<int32_t>(id));
    const std::string out = tokenizer->decode(ids);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::printf("\n");
    return 0;
  }
  if (!chat.empty()) {
    std::string json;
    if (!read_file(chat, &json)) return fail("cannot read " + chat);
    bora::ChatTemplateOptions options;  // the request's tools, tool calls and tool results come along
    auto messages = bora::parse_chat_request(json, chat, &options.tools);
    if (!messages) return fail(messages.error().message());
    const bora::ChatTemplate chosen = bora::detect_chat_template(tokenizer->vocabulary(), declared_template);
    auto ids = bora::apply_chat_template(*tokenizer, chosen, *messages, options);
    if (!ids) return fail(ids.error().message());
    print_ids(*ids);
    return 0;
  }
  if (!file.empty() && !read_file(file, &text)) return fail("cannot read " + file);
  print_ids(tokenizer->encode(text, bos));
  return 0;
}
