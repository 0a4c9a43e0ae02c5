// Why this file exists: the main job in one small program a user can copy — load a model, give it a
// prompt (or a chat turn), and stream the generated text to stdout; or give it a file of prompts and
// get their completions from one batch scheduler, several sequences decoded together.
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "args.hpp"
#include "constraint_options.hpp"
#include "generation_options.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: generate -m MODEL -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P]\n"
               "                [--repeat-penalty R] [--seed S] [--threads N] [--chat] [--window N|none] [--kv-type T]\n"
               "                [--json-schema FILE | --grammar FILE.gbnf | --json]\n"
               "       generate -m MODEL --prompts FILE [--parallel K] [the same options]\n"
               "  MODEL: a .gguf file, a Hugging Face or Mistral model folder, or ollama:NAME[:TAG]\n"
               "  --chat  wrap the prompt in the model's chat template (a user turn)\n"
               "  --kv-type f16|q8_0|f32  how the KV cache stores keys and values (default f16; q8_0 reads half\n"
               "      the bytes of a long context)\n"
               "  --prompts FILE  one prompt per line (empty lines are skipped, they are not prompts), all run\n"
               "      through one batch scheduler. Prints one JSON line per prompt, in file order, as soon as it and\n"
               "      every prompt before it have finished: {\"index\": I, \"text\": \"the completion only\"} with I\n"
               "      counting prompts from 0, or {\"index\": I, \"error\": \"...\"} for a prompt that failed (the exit\n"
               "      status is then 1). Every sequence samples with the same options and a generator of its own,\n"
               "      seeded with --seed S (each with S), so a prompt's text depends neither on the other prompts\n"
               "      nor on --parallel; each holds its prompt plus -n positions (4096 more with -n -1)\n"
               "  --parallel K  decode at most K sequences at once (default 4); 1 runs the prompts one at a time\n");
  std::fputs(example_args::ConstraintOptions::help(), stderr);
}

// `text` as a JSON string. The scheduler's text is valid UTF-8 (bad bytes became U+FFFD), but any
// malformed byte still becomes U+FFFD here, so the line is always valid JSON.
std::string json_string(std::string_view text) {
  std::string out = "\"";
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    size_t length = 1;
    const bool valid = bora::utf8::decode_one(bytes + offset, text.size() - offset, &length);
    const unsigned char c = bytes[offset];
    if (!valid) {
      out += bora::utf8::kReplacementCharacter;
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
      out += escaped;
    } else {
      out.append(text.data() + offset, length);
    }
    offset += length;
  }
  return out + "\"";
}

// The chat template the model's files imply, as Session::chat_template() finds it.
// --prompts: every prompt through one scheduler, at most `parallel` at once; one JSON line each, in order.
int run_prompts(const bora::LanguageModel& model, const std::vector<std::string>& prompts, bool chat, int parallel,
                const example_args::GenerationOptions& options) {
  const bora::Tokenizer* tokenizer = model.tokenizer();
  if (tokenizer == nullptr) {
    std::fprintf(stderr, "generate: %s has no tokenizer\n", options.model_path.c_str());
    return 1;
  }
  bora::SchedulerParams params;
  params.n_threads = options.session.n_threads;
  params.n_threads_batch = options.session.n_threads_batch;
  params.max_sequences = parallel;
  // Room for one token of every generating sequence and a whole prompt chunk beside them.
  params.n_batch = std::max<int64_t>(512, parallel + params.prefill_chunk);
  auto scheduler = model.scheduler(params);
  if (!scheduler) { std::fprintf(stderr, "generate: %s\n", scheduler.error().message()); return 1; }
  const bora::ChatTemplate chat_template = chat ? bora::chat_template_for(model.files(), *tokenizer) : bora::ChatTemplate{};

  // Queued in file order, which is the order the scheduler admits them in.
  std::vector<bora::Expected<bora::SequenceId>> submitted;
  for (const std::string& prompt : prompts) {
    bora::Request request;
    request.sample = options.sample;
    request.sliding_window = options.session.sliding_window;
    if (chat) {
      auto ids = bora::apply_chat_template(*tokenizer, chat_template, {{"user", prompt}});
      if (!ids) {
        submitted.push_back(ids.error());
        continue;
      }
      request.tokens = std::move(*ids);
      request.starts_text = true;  // a reply is a text of its own
    } else {
      request.prompt = prompt;
    }
    submitted.push_back((*scheduler)->submit(std::move(request)));
  }

  bool failed = false;
  size_t next = 0;  // the first prompt not printed yet
  auto print_line = [&](const char* key, const std::string& value) {
    std::printf("{\"index\": %zu, \"%s\": %s}\n", next, key, json_string(value).c_str());
    std::fflush(stdout);
    failed = failed || std::string(key) == "error";
    ++next;
  };
  auto print_finished = [&] {
    while (next < submitted.size()) {
      if (!submitted[next]) {
        print_line("error", submitted[next].error().message());
        continue;
      }
      const bora::SequenceId id = *submitted[next];
      auto status = (*scheduler)->status(id);
      if (!status) {
        print_line("error", status.error().message());
        continue;
      }
      if (status->state != bora::SequenceState::kFinished) return;
      std::string text = (*scheduler)->take_text(id);
      (*scheduler)->release(id);
      if (status->stop_reason == bora::StopReason::kError) {
        print_line("error", status->error ? "the sequence failed" : status->error.error().message());
        continue;
      }
      print_line("text", text);
    }
  };
  print_finished();
  while (!(*scheduler)->idle()) {
    bora::Status step = (*scheduler)->step();
    if (!step) {  // the whole step failed (out of memory): nothing more will finish
      while (next < submitted.size()) print_line("error", step.error().message());
      return 1;
    }
    print_finished();
  }
  print_finished();
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string prompt, prompts_path;
  bool chat = false, have_prompt = false, have_parallel = false;
  int parallel = 4;
  example_args::GenerationOptions options(128);
  example_args::ConstraintOptions constraint;
  bora::SampleParams& sample = options.sample;
  bora::SessionParams& session_params = options.session;
  example_args::Parser args(argc, argv, "generate", usage);
  while (args.next()) {
    if (options.read(args) || constraint.read(args)) continue;
    if (args.is("-p", "--prompt")) { prompt = args.text(); have_prompt = true; }
    else if (args.is("-n", "--n-predict")) sample.max_tokens = static_cast<int>(args.integer(-1, 1000000000));
    else if (args.is("--top-k")) sample.top_k = static_cast<int>(args.integer(0, 1000000000));
    else if (args.is("--top-p")) sample.top_p = static_cast<float>(args.real(0, 1));
    else if (args.is("--min-p")) sample.min_p = static_cast<float>(args.real(0, 1));
    else if (args.is("--repeat-penalty")) sample.repeat_penalty = static_cast<float>(args.real(0, 100));
    else if (args.is("--window")) session_params.sliding_window = args.integer_or("none", 0, 1, INT64_MAX);
    else if (args.is("--chat")) chat = true;
    else if (args.is("--prompts")) prompts_path = args.text();
    else if (args.is("--parallel")) { parallel = static_cast<int>(args.integer(1, 4096)); have_parallel = true; }
    else if (args.is("-h", "--help")) { usage(); return 0; }
    else args.unknown();
  }
  if (options.model_path.empty()) args.fail("-m MODEL is required");
  if (have_prompt && !prompts_path.empty()) args.fail("give -p PROMPT or --prompts FILE, not both");
  if (!have_prompt && prompts_path.empty()) args.fail("-p PROMPT (or --prompts FILE) is required");
  if (have_parallel && prompts_path.empty()) args.fail("--parallel needs --prompts FILE");
  std::vector<std::string> prompts;
  if (!prompts_path.empty()) {
    std::ifstream file(prompts_path, std::ios::binary);
    if (!file) args.fail("cannot read " + prompts_path);
    for (std::string line; std::getline(file, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
      if (!line.empty()) prompts.push_back(line);
    }
    if (prompts.empty()) args.fail(prompts_path + " has no prompts (no line that is not empty)");
  }

  // A schema or grammar mistake is reported before the model loads.
  bora::Expected<bora::Grammar> grammar = constraint.given() ? constraint.grammar() : bora::Expected<bora::Grammar>(bora::Grammar());
  if (!grammar) { std::fprintf(stderr, "generate: %s\n", grammar.error().message()); return 1; }

  auto model = bora::load_any(options.model_path, options.load);
  if (!model) { std::fprintf(stderr, "generate: %s\n", model.error().message()); return 1; }
  if (constraint.given()) {
    if ((*model)->tokenizer() == nullptr) { std::fprintf(stderr, "generate: %s has no tokenizer\n", options.model_path.c_str()); return 1; }
    auto compiled = bora::GrammarConstraint::create(std::move(*grammar), *(*model)->tokenizer());
    if (!compiled) { std::fprintf(stderr, "generate: %s\n", compiled.error().message()); return 1; }
    sample.constraint = std::move(*compiled);
  }
  if (!prompts.empty()) return run_prompts(**model, prompts, chat, parallel, options);
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
