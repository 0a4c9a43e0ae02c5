// Why this file exists: structured output is only worth having if the token mask costs next to nothing
// beside a forward pass; this measures it on a real vocabulary (average, p99, worst; cold and cached),
// and optionally the generation speed of a model with and without the constraint.
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "args.hpp"
#include "constraint_options.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: mask_bench -m MODEL (--json-schema FILE | --grammar FILE.gbnf | --json) [--walks N] [--tokens N]\n"
               "                  [--seed S] [--generate N [-p PROMPT] [-t THREADS]]\n"
               "  -m  a .gguf file or a tokenizer.model: its vocabulary is what the masks cover\n"
               "  --walks N  outputs to build (default 50), each by taking a uniformly random allowed token per step,\n"
               "      up to --tokens N tokens (default 200): every mask along the way is timed\n"
               "  --generate N  also generate N tokens with the model (temperature 1), without and with the\n"
               "      constraint, and report both speeds\n");
  std::fputs(example_args::ConstraintOptions::help(), stderr);
}

double microseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
}

void report(const char* what, std::vector<double> times) {
  if (times.empty()) return;
  std::sort(times.begin(), times.end());
  double total = 0;
  for (const double t : times) total += t;
  std::printf("%-28s %7zu masks  avg %8.1f us  p50 %8.1f us  p99 %8.1f us  max %9.1f us\n", what, times.size(),
              total / static_cast<double>(times.size()), times[times.size() / 2], times[times.size() * 99 / 100],
              times.back());
}

// Tokens per second of one completion; `generated` receives the count.
double generation_speed(const bora::LanguageModel& model, const std::string& prompt, bora::SampleParams sample,
                        int threads, int64_t* generated) {
  bora::SessionParams params;
  params.n_threads = threads;
  auto session = model.session(params);
  if (!session) return 0;
  auto ids = model.tokenizer()->encode(prompt, true);
  if (!session->feed(ids)) return 0;
  const auto start = std::chrono::steady_clock::now();
  auto result = session->generate(sample, nullptr);
  const double seconds = microseconds_since(start) / 1e6;
  *generated = result ? result->n_generated : 0;
  return seconds > 0 ? static_cast<double>(*generated) / seconds : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, prompt = "Here is the JSON:";
  example_args::ConstraintOptions constraint_options;
  int walks = 50, max_tokens = 200, generate = 0, threads = 2;
  uint64_t seed = 1;
  example_args::Parser args(argc, argv, "mask_bench", usage);
  while (args.next()) {
    if (constraint_options.read(args)) continue;
    if (args.is("-m", "--model")) model_path = args.text();
    else if (args.is("--walks")) walks = static_cast<int>(args.integer(1, 1000000));
    else if (args.is("--tokens")) max_tokens = static_cast<int>(args.integer(1, 1000000));
    else if (args.is("--seed")) seed = args.unsigned_integer();
    else if (args.is("--generate")) generate = static_cast<int>(args.integer(1, 1000000));
    else if (args.is("-p", "--prompt")) prompt = args.text();
    else if (args.is("-t", "--threads")) threads = static_cast<int>(args.integer(1, 1024));
    else if (args.is("-h", "--help")) { usage(); return 0; }
    else args.unknown();
  }
  if (model_path.empty()) args.fail("-m MODEL is required");
  if (!constraint_options.given()) args.fail("give --json-schema FILE, --grammar FILE.gbnf or --json");

  auto tokenizer = bora::Tokenizer::from_file(model_path);
  if (!tokenizer) { std::fprintf(stderr, "mask_bench: %s\n", tokenizer.error().message()); return 1; }
  auto start = std::chrono::steady_clock::now();
  auto grammar = constraint_options.grammar();
  if (!grammar) { std::fprintf(stderr, "mask_bench: %s\n", grammar.error().message()); return 1; }
  const double compile_us = microseconds_since(start);
  const size_t rules = grammar->rule_count();
  start = std::chrono::steady_clock::now();
  auto constraint = bora::GrammarConstraint::create(std::move(*grammar), *tokenizer);
  if (!constraint) { std::fprintf(stderr, "mask_bench: %s\n", constraint.error().message()); return 1; }
  const double create_us = microseconds_since(start);
  std::printf("vocabulary %zu tokens, trie %zu nodes; grammar %zu rules compiled in %.2f ms, constraint built in %.2f ms\n",
              tokenizer->vocab_size(), (*constraint)->trie_nodes(), rules, compile_us / 1000, create_us / 1000);

  // Uniformly random allowed tokens: a harsher walk than a model's (more distinct states), so the
  // figures are an upper bound for the same number of masks.
  bora::Xoshiro256 rng(seed);
  std::vector<double> all, first_walk, later_walks, all_cpu;
  std::vector<int32_t> allowed;
  int completed = 0;
  for (int walk = 0; walk < walks; ++walk) {
    bora::GrammarMatcher matcher(*constraint);
    for (int step = 0; step < max_tokens; ++step) {
      // Wall time, and the process's CPU time (on a shared machine the wall clock also counts the
      // time other programs held the core).
      const std::clock_t cpu_start = std::clock();
      start = std::chrono::steady_clock::now();
      const std::vector<uint64_t>& bits = matcher.allowed_tokens();
      const double us = microseconds_since(start);
      all_cpu.push_back(1e6 * static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC);
      all.push_back(us);
      (walk == 0 ? first_walk : later_walks).push_back(us);
      allowed.clear();
      for (size_t word = 0; word < bits.size(); ++word) {
        for (uint64_t w = bits[word]; w != 0; w &= w - 1) allowed.push_back(static_cast<int32_t>(word * 64 + __builtin_ctzll(w)));
      }
      const int32_t token = allowed[static_cast<size_t>(rng.next_double() * static_cast<double>(allowed.size()))];
      matcher.accept(token);
      if (matcher.is_finished()) { ++completed; break; }
    }
  }
  report("all (wall clock)", all);
  report("all (CPU time)", all_cpu);
  report("first walk (cold caches)", first_walk);
  report("later walks", later_walks);
  std::printf("%d of %d walks reached EOS within %d tokens; %zu DFA states\n", completed, walks, max_tokens,
              (*constraint)->dfa_states());

  if (generate > 0) {
    auto model = bora::load_any(model_path);
    if (!model) { std::fprintf(stderr, "mask_bench: %s\n", model.error().message()); return 1; }
    bora::SampleParams sample;
    sample.temperature = 1.0f;
    sample.seed = seed;
    sample.max_tokens = generate;
    int64_t free_tokens = 0, constrained_tokens = 0;
    const double free_speed = generation_speed(**model, prompt, sample, threads, &free_tokens);
    sample.constraint = *constraint;
    const double constrained_speed = generation_speed(**model, prompt, sample, threads, &constrained_tokens);
    std::printf("generation: %.2f tokens/s unconstrained (%lld tokens), %.2f tokens/s constrained (%lld tokens): %.2fx\n",
                free_speed, (long long)free_tokens, constrained_speed, (long long)constrained_tokens,
                free_speed > 0 ? constrained_speed / free_speed : 0.0);
  }
  return 0;
}
