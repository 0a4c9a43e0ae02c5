// Why this file exists: speed claims need a measuring tool people trust; this mirrors llama-bench
// (same tests, same JSON keys) so bora and llama.cpp can be compared on the same file and threads.
#define BORA_IMPLEMENTATION
#include "bora/bora.hpp"
#include "args.hpp"
#include "synthetic_model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#include <psapi.h>
#else
#include <sys/mman.h>
#include <sys/resource.h>
#endif

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: bench -m MODEL [-p 512] [-n 128] [-t 2] [-r 3] [-mmp 0|1] [--bandwidth] [--json]\n"
               "  -m  a .gguf file, a model folder, ollama:NAME[:TAG], or synthetic:PRESET:TYPE with random\n"
               "      weights built in memory (PRESET mistral-7b, mixtral-8x7b, mixtral-8x7b-4l, tiny;\n"
               "      TYPE f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m)\n"
               "  -p  prompt tokens processed at once (0 = skip), -n tokens generated one by one (0 = skip)\n"
               "  -t  threads, a comma-separated list runs each; -r repetitions; --json prints llama-bench-style JSON\n"
               "  -mmp 1 maps the file instead of reading it into memory (instant open, slower decoding on some machines)\n"
               "  --bandwidth  before each generation run, measures how fast its threads read memory, and reports\n"
               "      the decoding limit (read rate / weight bytes per token) and the share of it generation reached\n"
               "      (the peak RSS then includes the 256 MiB it reads)\n");
}

std::vector<int> to_ints(const std::vector<long long>& values) {
  std::vector<int> out;
  for (long long v : values) out.push_back(static_cast<int>(v));
  return out;
}

uint64_t peak_rss_bytes() {
#if defined(_WIN32)
  PROCESS_MEMORY_COUNTERS counters;
  GetProcessMemoryInfo(GetCurrentProcess(), &counters, sizeof(counters));
  return counters.PeakWorkingSetSize;
#else
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
#endif
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A buffer far larger than any cache, in huge pages where the system has them (as the loaded
// weights are), filled so that every page is really there.
class ReadBuffer {
 public:
  explicit ReadBuffer(size_t floats) : floats_(floats) {
#if !defined(_WIN32) && defined(MAP_ANONYMOUS)
    void* p = mmap(nullptr, floats * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
#if defined(MADV_HUGEPAGE)
      madvise(p, floats * sizeof(float), MADV_HUGEPAGE);
#endif
      data_ = static_cast<float*>(p);
    }
#endif
    if (data_ == nullptr) {
      fallback_.resize(floats);
      data_ = fallback_.data();
    }
    std::fill(data_, data_ + floats, 1.0f);
  }
  ~ReadBuffer() {
#if !defined(_WIN32) && defined(MAP_ANONYMOUS)
    if (fallback_.empty()) munmap(data_, floats_ * sizeof(float));
#endif
  }
  ReadBuffer(const ReadBuffer&) = delete;
  ReadBuffer& operator=(const ReadBuffer&) = delete;
  const float* data() const { return data_; }
  size_t size() const { return floats_; }

 private:
  size_t floats_;
  float* data_ = nullptr;
  std::vector<float> fallback_;
};

// Bytes per second `threads` threads read from memory with the library's own SIMD dot product (each
// thread one slice, once), the median of five passes. Generation reads every weight byte once per
// token, so this over Model::weight_bytes_per_token() is the fastest it can go; the rate drifts from
// minute to minute on shared machines, hence one measurement right before each timed generation run.
double read_bandwidth(const ReadBuffer& buffer, int threads) {
  std::vector<double> rates;
  std::vector<float> sums(static_cast<size_t>(threads));
  for (int pass = 0; pass < 5; ++pass) {
    std::vector<std::thread> workers;
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&buffer, &sums, threads, t] {
        const size_t begin = buffer.size() * t / threads, end = buffer.size() * (t + 1) / threads;
        const float* slice = buffer.data() + begin;
        sums[t] = bora::ops::dot(slice, slice, static_cast<int64_t>(end - begin));
      });
    }
    for (std::thread& w : workers) w.join();
    rates.push_back(static_cast<double>(buffer.size() * sizeof(float)) / seconds_since(start));
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

struct Result {
  std::string test;
  int threads, n_prompt, n_gen;
  std::vector<double> samples_ns;
  std::vector<double> read_rates;  // --bandwidth: bytes per second read just before each sample
  double avg_ts() const {
    double sum = 0;
    for (double ns : samples_ns) sum += tokens() / (ns * 1e-9);
    return sum / static_cast<double>(samples_ns.size());
  }
  double stddev_ts() const {
    if (samples_ns.size() < 2) return 0;
    const double mean = avg_ts();
    double sum = 0;
    for (double ns : samples_ns) sum += std::pow(tokens() / (ns * 1e-9) - mean, 2);
    return std::sqrt(sum / static_cast<double>(samples_ns.size() - 1));
  }
  int tokens() const { return n_prompt + n_gen; }
  double read_rate() const {
    double sum = 0;
    for (double rate : read_rates) sum += rate;
    return read_rates.empty() ? 0 : sum / static_cast<double>(read_rates.size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  std::vector<int> prompts = {512}, gens = {128}, threads = {2};
  int repetitions = 3;
  bool json = false, use_mmap = false, bandwidth = false;
  example_args::Parser args(argc, argv, "bench", usage);
  while (args.next()) {
    if (args.is("-m", "--model")) model_path = args.text();
    else if (args.is("-p", "--n-prompt")) prompts = to_ints(args.integer_list(0, 1 << 20));
    else if (args.is("-n", "--n-gen")) gens = to_ints(args.integer_list(0, 1 << 20));
    else if (args.is("-t", "--threads")) threads = to_ints(args.integer_list(1, 1 << 20));
    else if (args.is("-r", "--repetitions")) repetitions = static_cast<int>(args.integer(1, 1 << 20));
    else if (args.is("-mmp")) use_mmap = args.integer(0, 1) != 0;
    else if (args.is("--bandwidth")) bandwidth = true;
    else if (args.is("--json")) json = true;
    else if (args.is("-o")) {
      if (args.text() != "json") args.fail("-o knows only 'json'");
      json = true;
    } else args.unknown();
  }
  if (model_path.empty()) args.fail("-m MODEL is required");

  const auto load_start = std::chrono::steady_clock::now();
  bora::Expected<bora::ModelFiles> files =
      model_path.rfind("synthetic:", 0) == 0 ? synthetic::make_model(model_path.substr(10)) : bora::open_model_files(model_path, use_mmap ? bora::FileAccess::kMap : bora::FileAccess::kRead);
  if (!files) { std::fprintf(stderr, "bench: %s\n", files.error().message()); return 1; }
  const uint64_t model_bytes = files->total_bytes();
  auto model = bora::load_any(std::move(*files));
  if (!model) { std::fprintf(stderr, "bench: %s\n", model.error().message()); return 1; }
  const double load_seconds = seconds_since(load_start);
  const bora::ModelConfig& config = (*model)->config();

  std::vector<Result> results;
  std::vector<int32_t> tokens;
  uint32_t state = 12345;
  for (int i = 0; i < 1 << 16; ++i) {
    state = state * 1664525u + 1013904223u;
    tokens.push_back(static_cast<int32_t>((state >> 8) % static_cast<uint32_t>(config.vocab_size)));
  }
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  std::unique_ptr<ReadBuffer> read_buffer;
  if (bandwidth) read_buffer.reset(new ReadBuffer(size_t{1} << 26));  // 256 MiB of floats
  for (int n_threads : threads) {
    auto run = [&](int n_prompt, int n_gen) -> bool {
      if (n_prompt + n_gen == 0) return true;
      bora::ContextParams params;
      params.n_ctx = n_prompt + n_gen + 1;
      params.n_batch = std::max(1, n_prompt);
      params.n_threads = n_threads;
      auto ctx = (*model)->create_context(params);
      if (!ctx) { std::fprintf(stderr, "bench: %s\n", ctx.error().message()); return false; }
      Result result{n_prompt ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen), n_threads, n_prompt, n_gen, {}, {}};
      for (int r = -1; r < repetitions; ++r) {  // r = -1 warms caches and pages
        (*ctx)->reset();
        if (read_buffer && n_prompt == 0 && r >= 0) result.read_rates.push_back(read_bandwidth(*read_buffer, n_threads));
        const auto start = std::chrono::steady_clock::now();
        if (n_prompt > 0) {
          bora::Status s = (*model)->forward(**ctx, tokens.data(), n_prompt, logits.data(), false);
          if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        }
        for (int g = 0; g < n_gen; ++g) {
          bora::Status s = (*model)->forward(**ctx, tokens.data() + n_prompt + g, 1, logits.data(), false);
          if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        }
        if (r >= 0) result.samples_ns.push_back(seconds_since(start) * 1e9);
      }
      results.push_back(result);
      if (!json) {
        std::printf("| %-28s | %8.2f GiB | %7d | %-6s | %14.2f ± %.2f |\n", model_path.c_str(),
                    static_cast<double>(model_bytes) / (1 << 30), n_threads, result.test.c_str(), result.avg_ts(),
                    result.stddev_ts());
        std::fflush(stdout);
      }
      return true;
    };
    if (!json && n_threads == threads.front()) {
      std::printf("| %-28s | %12s | %7s | %-6s | %19s |\n", "model", "size", "threads", "test", "t/s");
      std::printf("| %-28s | %12s | %7s | %-6s | %19s |\n", "---", "---:", "---:", "---", "---:");
    }
    for (int p : prompts) if (p > 0 && !run(p, 0)) return 1;
    for (int n : gens) if (n > 0 && !run(0, n)) return 1;
  }
  const uint64_t peak_rss = peak_rss_bytes();
  const uint64_t bytes_per_token = (*model)->weight_bytes_per_token();
  auto limit_ts = [&](const Result& r) { return r.read_rate() / static_cast<double>(bytes_per_token); };
  if (json) {
    std::printf("[\n");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::printf("  {\n    \"model_filename\": \"%s\",\n    \"model_type\": \"%s\",\n    \"model_size\": %llu,\n"
                  "    \"backend\": \"CPU\",\n    \"simd_target\": \"%s\",\n    \"n_threads\": %d,\n    \"n_prompt\": %d,\n"
                  "    \"n_gen\": %d,\n    \"load_ms\": %.1f,\n    \"peak_rss_bytes\": %llu,\n"
                  "    \"weight_bytes_per_token\": %llu,\n    \"avg_ns\": %.0f,\n",
                  model_path.c_str(), (*model)->preset_name(), (unsigned long long)model_bytes, bora::ops::simd_target_name(),
                  r.threads, r.n_prompt, r.n_gen, load_seconds * 1e3, (unsigned long long)peak_rss,
                  (unsigned long long)bytes_per_token,
                  [&] { double s = 0; for (double ns : r.samples_ns) s += ns; return s / r.samples_ns.size(); }());
      if (!r.read_rates.empty())
        std::printf("    \"read_bytes_per_s\": %.0f,\n    \"limit_ts\": %.6f,\n", r.read_rate(), limit_ts(r));
      std::printf("    \"samples_ns\": [");
      for (size_t j = 0; j < r.samples_ns.size(); ++j) std::printf("%s%.0f", j ? ", " : "", r.samples_ns[j]);
      std::printf("],\n    \"avg_ts\": %.6f,\n    \"stddev_ts\": %.6f\n  }%s\n", r.avg_ts(), r.stddev_ts(),
                  i + 1 < results.size() ? "," : "");
    }
    std::printf("]\n");
  } else {
    std::printf("\nload %.2f s, peak RSS %.2f GiB, SIMD target %s, %.2f GiB of weights read per generated token\n",
                load_seconds, static_cast<double>(peak_rss) / (1 << 30), bora::ops::simd_target_name(),
                static_cast<double>(bytes_per_token) / (1 << 30));
    for (const Result& r : results) {
      if (r.read_rates.empty()) continue;
      std::printf("%s, %d threads: %.2f t/s is %.0f%% of the memory limit %.2f t/s (reading %.1f GB/s)\n",
                  r.test.c_str(), r.threads, r.avg_ts(), 100.0 * r.avg_ts() / limit_ts(r), limit_ts(r),
                  r.read_rate() / 1e9);
    }
  }
  return 0;
}
