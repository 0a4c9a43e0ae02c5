// Why this file exists: speed claims need a measuring tool people trust; this mirrors llama-bench
// (same tests, same JSON keys) so bora and llama.cpp can be compared on the same file and threads, and
// llama-batched-bench (--parallel) for many sequences decoded together.
// The kernels are compiled once for all examples (examples/shared/bora_implementation.cpp); a program
// of one file defines BORA_IMPLEMENTATION just before this include instead.
#include "bora/bora.hpp"
#include "args.hpp"
#include "generation_options.hpp"
#include "synthetic_model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
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
               "usage: bench -m MODEL [-p 512] [-n 128] [-d 0] [-t 2] [-r 3] [-mmp 0|1] [--parallel 1,2,4] [--bandwidth]\n"
               "             [--peak] [--kv-type T] [--json]\n"
               "  -m  a .gguf file, a model folder, ollama:NAME[:TAG], or synthetic:PRESET:TYPE with random\n"
               "      weights built in memory (PRESET mistral-7b, mixtral-8x7b, mixtral-8x7b-4l, tiny;\n"
               "      TYPE f32 f16 bf16 q8_0 q4_0 q4_k q5_k q6_k q4_k_m)\n"
               "  -p  prompt tokens processed at once (0 = skip), -n tokens generated one by one (0 = skip)\n"
               "  -d, --depth  tokens already in the context when the timed prompt or generation starts (a\n"
               "      comma-separated list runs each; rows are named 'tg32 @ d2048', JSON key n_depth); the depth\n"
               "      is processed once, untimed, and restored from a saved state before each repetition\n"
               "  --kv-type f16|q8_0|f32  how the KV cache stores keys and values (default f16)\n"
               "  -t  threads, a comma-separated list runs each; -r repetitions; --json prints llama-bench-style JSON\n"
               "  -mmp 1 maps the file instead of reading it into memory (instant open, slower decoding on some machines)\n"
               "  --bandwidth  before each generation run, measures how fast its threads read memory, and reports\n"
               "      the decoding limit (read rate / weight bytes per token) and the share of it generation reached\n"
               "      (the peak RSS then includes the 256 MiB it reads; with --parallel the limit counts the weights\n"
               "      once per step of N tokens, of a mixture of experts the experts those tokens routed to, on\n"
               "      average per layer, which the row also reports)\n"
               "  --parallel N1,N2,...  for each count N, N sequences at once as llama-batched-bench does: a pp row times\n"
               "      every sequence processing -p tokens (in steps of at most 2048 tokens, each sequence an equal\n"
               "      share), a tg row -n steps of one token for each sequence after each has processed the -p\n"
               "      tokens (untimed, as llama-batched-bench's -npp: rows named 'tg32 @ d128'); t/s is the\n"
               "      aggregate over all sequences, and rows gain an n_parallel column (JSON key)\n"
               "  --peak  for each thread count, measures the int8 x int8 multiply-accumulates per second the cores reach\n"
               "      with the instruction the int8 weight kernels use (vpdpbusd with AVX-512 VNNI), from registers, on\n"
               "      every thread at once, and reports the share of it pp rows (and tg rows with --parallel) reach,\n"
               "      counting one multiply-accumulate per weight value a token multiplies (of a mixture of experts,\n"
               "      the experts it uses; the output head only for tokens whose logits are computed; not the second\n"
               "      int8 level of the attention projections nor attention over the cache)\n");
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

// --peak: the int8 multiply-accumulates per second `threads` threads reach together, each running
// ops::int8_dot_peak at once on a thread of a pool; the median of three passes.
double int8_peak(int threads) {
  bora::ThreadPool pool(threads);
  std::vector<double> passes, rates(static_cast<size_t>(threads));
  for (int pass = 0; pass < 3; ++pass) {
    pool.parallel_for(threads, [&rates](int64_t begin, int64_t end, int) {
      for (int64_t t = begin; t < end; ++t) rates[static_cast<size_t>(t)] = bora::ops::int8_dot_peak(0.2);
    });
    double sum = 0;
    for (double rate : rates) sum += rate;
    passes.push_back(sum);
  }
  std::sort(passes.begin(), passes.end());
  return passes[1];
}

// Multiply-accumulates of weight values: those of one token through every layer (each matrix's rows x
// columns; of a mixture of experts the router and the experts a token uses), and those of the output
// head, which only tokens whose logits are computed pay.
struct WeightMacs {
  double layers_per_token = 0;
  double output_head = 0;
};

WeightMacs weight_macs(const bora::ModelConfig& c) {
  const double dim = static_cast<double>(c.dim), q_dim = static_cast<double>(c.n_heads * c.head_dim),
               kv_dim = static_cast<double>(c.n_kv_heads * c.head_dim), hidden = static_cast<double>(c.hidden_dim);
  const double attention = 2 * dim * q_dim + 2 * dim * kv_dim;  // wq, wo; wk, wv
  const double experts = c.n_experts > 0 ? static_cast<double>(c.n_experts_used) : 1;
  const double router = c.n_experts > 0 ? dim * static_cast<double>(c.n_experts) : 0;
  WeightMacs macs;
  macs.layers_per_token = static_cast<double>(c.n_layers) * (attention + router + experts * 3 * dim * hidden);
  macs.output_head = dim * static_cast<double>(c.vocab_size);
  return macs;
}

struct Result {
  std::string test;
  int threads, n_prompt, n_gen;
  int n_parallel;  // sequences at once with --parallel; 0 without it (one sequence, no such column)
  int n_depth;     // tokens in each sequence's context before the timed tokens (-d)
  std::vector<double> samples_ns;
  std::vector<double> read_rates;  // --bandwidth: bytes per second read just before each sample
  double macs = 0;        // --peak: weight multiply-accumulates of one sample
  double peak_macs = 0;   // --peak: the int8 peak of these threads, when this row is compared with it
  double experts_read = 0;  // --bandwidth, a mixture of experts: distinct experts per layer and step
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
  int64_t tokens() const { return int64_t{std::max(1, n_parallel)} * (n_prompt + n_gen); }
  double macs_per_s() const { return avg_ts() * macs / tokens(); }
  double read_rate() const {
    double sum = 0;
    for (double rate : read_rates) sum += rate;
    return read_rates.empty() ? 0 : sum / static_cast<double>(read_rates.size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string model_path;
  std::vector<int> prompts = {512}, gens = {128}, threads = {2}, depths = {0};
  int repetitions = 3;
  std::vector<int> parallel;  // --parallel: sequence counts
  bool json = false, use_mmap = false, bandwidth = false, peak = false;
  bora::LoadParams load_params;
  example_args::Parser args(argc, argv, "bench", usage);
  while (args.next()) {
    if (args.is("-m", "--model")) model_path = args.text();
    else if (args.is("-p", "--n-prompt")) prompts = to_ints(args.integer_list(0, 1 << 20));
    else if (args.is("-n", "--n-gen")) gens = to_ints(args.integer_list(0, 1 << 20));
    else if (args.is("-d", "--n-depth") || args.is("--depth")) depths = to_ints(args.integer_list(0, 1 << 20));
    else if (args.is("-t", "--threads")) threads = to_ints(args.integer_list(1, 1 << 20));
    else if (args.is("-r", "--repetitions")) repetitions = static_cast<int>(args.integer(1, 1 << 20));
    else if (args.is("-mmp")) use_mmap = args.integer(0, 1) != 0;
    else if (args.is("--parallel")) parallel = to_ints(args.integer_list(1, 4096));
    else if (args.is("--bandwidth")) bandwidth = true;
    else if (args.is("--kv-type")) load_params.kv_cache_type = example_args::kv_cache_type(args);
    else if (args.is("--peak")) peak = true;
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
  auto model = bora::load_any(std::move(*files), load_params);
  if (!model) { std::fprintf(stderr, "bench: %s\n", model.error().message()); return 1; }
  const double load_seconds = seconds_since(load_start);
  const bora::ModelConfig& config = (*model)->config();

  std::vector<Result> results;
  std::vector<int32_t> tokens;
  uint32_t state = 12345;
  // Enough for the longest run, each sequence starting one token further (the same first 65536 as ever).
  int64_t token_count = 1 << 16;
  for (int p : prompts)
    for (int g : gens)
      for (int d : depths)
        for (int n : parallel.empty() ? std::vector<int>{1} : parallel)
          token_count = std::max<int64_t>(token_count, int64_t{n} + d + p + g);
  for (int64_t i = 0; i < token_count; ++i) {
    state = state * 1664525u + 1013904223u;
    tokens.push_back(static_cast<int32_t>((state >> 8) % static_cast<uint32_t>(config.vocab_size)));
  }
  std::vector<float> logits(static_cast<size_t>(config.vocab_size));
  std::unique_ptr<ReadBuffer> read_buffer;
  if (bandwidth) read_buffer.reset(new ReadBuffer(size_t{1} << 26));  // 256 MiB of floats
  const WeightMacs macs = weight_macs(config);
  // What one sample of a row multiplies: every sequence's tokens through the layers, and the output
  // head for its last prompt token and each generated one.
  auto row_macs = [&](const Result& r) {
    return std::max(1, r.n_parallel) * (static_cast<double>(r.n_prompt + r.n_gen) * macs.layers_per_token +
                                         static_cast<double>((r.n_prompt > 0 ? 1 : 0) + r.n_gen) * macs.output_head);
  };
  auto print_row = [&](const Result& result) {
    if (json) return;
    if (parallel.empty()) {
      std::printf("| %-28s | %8.2f GiB | %7d | %-6s | %14.2f ± %.2f |\n", model_path.c_str(),
                  static_cast<double>(model_bytes) / (1 << 30), result.threads, result.test.c_str(), result.avg_ts(),
                  result.stddev_ts());
    } else {
      std::printf("| %-28s | %8.2f GiB | %7d | %10d | %-6s | %14.2f ± %.2f |\n", model_path.c_str(),
                  static_cast<double>(model_bytes) / (1 << 30), result.threads, result.n_parallel, result.test.c_str(),
                  result.avg_ts(), result.stddev_ts());
    }
    std::fflush(stdout);
  };
  std::vector<std::pair<int, double>> peaks;  // --peak: (threads, multiply-accumulates per second)
  for (int n_threads : threads) {
    const double peak_macs = peak ? int8_peak(n_threads) : 0;
    if (peak) peaks.emplace_back(n_threads, peak_macs);
    // With --peak, pp rows are compared with the int8 peak, and tg rows too when sequences are batched.
    auto finish_row = [&](Result& result) {
      result.macs = row_macs(result);
      if (peak && (result.n_prompt > 0 || result.n_parallel > 0)) result.peak_macs = peak_macs;
      results.push_back(result);
      print_row(result);
    };
    // N sequences at once (--parallel): one workspace, prompts split into steps of equal shares.
    // The test name, llama-bench's way: "pp512", "tg128", "tg32 @ d2048".
    auto test_name = [](int n_prompt, int n_gen, int depth) {
      return (n_prompt ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen)) +
             (depth > 0 ? " @ d" + std::to_string(depth) : std::string());
    };
    constexpr int64_t kDepthChunk = 512;  // tokens per forward step while filling the depth
    auto run_batched = [&](int n_parallel, int n_prompt, int n_gen, int depth) -> bool {
      if (n_prompt + n_gen == 0) return true;
      constexpr int64_t kMaxBatch = 2048;
      bora::WorkspaceParams workspace_params;
      workspace_params.n_batch = std::max<int64_t>({int64_t{n_parallel}, std::min<int64_t>(depth, kDepthChunk),
                                                    std::min<int64_t>(int64_t{n_parallel} * n_prompt, kMaxBatch)});
      workspace_params.n_threads = n_threads;
      // --bandwidth over a mixture of experts: which experts each step's tokens chose, to count what it read.
      const bool trace_experts = read_buffer && n_prompt == 0 && config.n_experts > 0;
      std::vector<int32_t> expert_trace;
      if (trace_experts) workspace_params.expert_trace = &expert_trace;
      auto workspace = (*model)->create_workspace(workspace_params);
      if (!workspace) { std::fprintf(stderr, "bench: %s\n", workspace.error().message()); return false; }
      bora::SequenceParams sequence_params;
      sequence_params.n_ctx = depth + n_prompt + n_gen + 1;
      std::vector<std::unique_ptr<bora::KvSequence>> sequences;
      for (int i = 0; i < n_parallel; ++i) {
        auto sequence = (*model)->create_sequence(sequence_params);
        if (!sequence) { std::fprintf(stderr, "bench: %s\n", sequence.error().message()); return false; }
        sequences.push_back(std::move(*sequence));
      }
      std::vector<float> batch_logits(static_cast<size_t>(n_parallel) * static_cast<size_t>(config.vocab_size));
      std::vector<bora::BatchSegment> segments(static_cast<size_t>(n_parallel));
      const int64_t share = workspace_params.n_batch / n_parallel;  // each sequence's prompt tokens per step
      auto step = [&](int64_t offset, int64_t n, bool with_logits) {
        for (int i = 0; i < n_parallel; ++i) {
          bora::BatchSegment& segment = segments[static_cast<size_t>(i)];
          segment.sequence = sequences[static_cast<size_t>(i)].get();
          segment.tokens = tokens.data() + i + depth + offset;
          segment.n_tokens = n;
          segment.logits = with_logits ? batch_logits.data() + static_cast<size_t>(i) * config.vocab_size : nullptr;
        }
        bora::Status s = (*model)->forward_batch(**workspace, segments.data(), segments.size());
        if (!s) std::fprintf(stderr, "bench: %s\n", s.error().message());
        return static_cast<bool>(s);
      };
      // Every sequence starts from the same depth: filled once in the first, then copied.
      std::vector<uint8_t> depth_state;
      for (int64_t done = 0; done < depth; done += workspace_params.n_batch) {
        bora::BatchSegment segment;
        segment.sequence = sequences.front().get();
        segment.tokens = tokens.data() + done;
        segment.n_tokens = std::min<int64_t>(workspace_params.n_batch, depth - done);
        bora::Status s = (*model)->forward_batch(**workspace, &segment, 1);
        if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
      }
      if (depth > 0) depth_state = sequences.front()->save_state();
      Result result{test_name(n_prompt, n_gen, depth), n_threads, n_prompt, n_gen, n_parallel, depth, {}, {}};
      double experts_read_sum = 0;  // over the timed (layer, step) pairs
      int64_t layer_steps = 0;
      const size_t trace_per_token = 2 + static_cast<size_t>(std::max<int64_t>(config.n_experts_used, 1));
      for (int r = -1; r < repetitions; ++r) {  // r = -1 warms caches and pages
        expert_trace.clear();
        expert_trace.reserve(static_cast<size_t>(n_gen) * n_parallel * static_cast<size_t>(config.n_layers) * trace_per_token);
        for (auto& sequence : sequences) {
          if (depth == 0) {
            sequence->reset();
            continue;
          }
          bora::Status s = sequence->restore_state(depth_state.data(), depth_state.size(), depth);
          if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        }
        if (read_buffer && n_prompt == 0 && r >= 0) result.read_rates.push_back(read_bandwidth(*read_buffer, n_threads));
        const auto start = std::chrono::steady_clock::now();
        for (int64_t done = 0; done < n_prompt; done += share) {
          const int64_t n = std::min<int64_t>(share, n_prompt - done);
          if (!step(done, n, done + n == n_prompt)) return false;  // logits for each prompt's last token
        }
        for (int g = 0; g < n_gen; ++g) if (!step(n_prompt + g, 1, true)) return false;
        if (r >= 0) result.samples_ns.push_back(seconds_since(start) * 1e9);
        if (r >= 0 && trace_experts) {
          // Every sequence decodes the same position in a step, so (layer, position) names a layer's step.
          std::map<std::pair<int32_t, int32_t>, std::set<int32_t>> chosen;
          for (size_t at = 0; at + trace_per_token <= expert_trace.size(); at += trace_per_token)
            chosen[{expert_trace[at], expert_trace[at + 1]}].insert(expert_trace.begin() + static_cast<std::ptrdiff_t>(at) + 2,
                                                                    expert_trace.begin() + static_cast<std::ptrdiff_t>(at + trace_per_token));
          for (const auto& layer_step : chosen) experts_read_sum += static_cast<double>(layer_step.second.size());
          layer_steps += static_cast<int64_t>(chosen.size());
        }
      }
      if (layer_steps > 0) result.experts_read = experts_read_sum / static_cast<double>(layer_steps);
      finish_row(result);
      return true;
    };
    auto run = [&](int n_prompt, int n_gen, int depth) -> bool {
      if (n_prompt + n_gen == 0) return true;
      bora::ContextParams params;
      params.n_ctx = depth + n_prompt + n_gen + 1;
      params.n_batch = n_prompt > 0 ? n_prompt : std::max<int64_t>(1, std::min<int64_t>(depth, kDepthChunk));
      params.n_threads = n_threads;
      auto ctx = (*model)->create_context(params);
      if (!ctx) { std::fprintf(stderr, "bench: %s\n", ctx.error().message()); return false; }
      std::vector<uint8_t> depth_state;
      if (depth > 0) {
        bora::Status s = (*model)->forward(**ctx, tokens.data(), depth, nullptr, false);
        if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        depth_state = (*ctx)->save_state();
      }
      const int32_t* timed_tokens = tokens.data() + depth;
      Result result{test_name(n_prompt, n_gen, depth), n_threads, n_prompt, n_gen, 0, depth, {}, {}};
      for (int r = -1; r < repetitions; ++r) {  // r = -1 warms caches and pages
        if (depth == 0) {
          (*ctx)->reset();
        } else {
          bora::Status s = (*ctx)->restore_state(depth_state.data(), depth_state.size(), depth);
          if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        }
        if (read_buffer && n_prompt == 0 && r >= 0) result.read_rates.push_back(read_bandwidth(*read_buffer, n_threads));
        const auto start = std::chrono::steady_clock::now();
        if (n_prompt > 0) {
          bora::Status s = (*model)->forward(**ctx, timed_tokens, n_prompt, logits.data(), false);
          if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        }
        for (int g = 0; g < n_gen; ++g) {
          bora::Status s = (*model)->forward(**ctx, timed_tokens + n_prompt + g, 1, logits.data(), false);
          if (!s) { std::fprintf(stderr, "bench: %s\n", s.error().message()); return false; }
        }
        if (r >= 0) result.samples_ns.push_back(seconds_since(start) * 1e9);
      }
      finish_row(result);
      return true;
    };
    if (!json && n_threads == threads.front() && parallel.empty()) {
      std::printf("| %-28s | %12s | %7s | %-6s | %19s |\n", "model", "size", "threads", "test", "t/s");
      std::printf("| %-28s | %12s | %7s | %-6s | %19s |\n", "---", "---:", "---:", "---", "---:");
    } else if (!json && n_threads == threads.front()) {
      std::printf("| %-28s | %12s | %7s | %10s | %-6s | %19s |\n", "model", "size", "threads", "n_parallel", "test", "t/s");
      std::printf("| %-28s | %12s | %7s | %10s | %-6s | %19s |\n", "---", "---:", "---:", "---:", "---", "---:");
    }
    for (int depth : depths) {
      if (parallel.empty()) {
        for (int p : prompts) if (p > 0 && !run(p, 0, depth)) return 1;
        for (int n : gens) if (n > 0 && !run(0, n, depth)) return 1;
      }
      for (int n_parallel : parallel) {
        for (int p : prompts) if (p > 0 && !run_batched(n_parallel, p, 0, depth)) return 1;
        // Each sequence decodes after its prompt, as llama-batched-bench's generation does.
        for (int p : prompts)
          for (int n : gens) if (n > 0 && !run_batched(n_parallel, 0, n, depth + p)) return 1;
      }
    }
  }
  const uint64_t peak_rss = peak_rss_bytes();
  const uint64_t bytes_per_token = (*model)->weight_bytes_per_token();
  // Batched sequences share each step's weight reads (of a mixture of experts, those of every expert
  // their tokens chose).
  auto limit_ts = [&](const Result& r) {
    const uint64_t bytes = r.experts_read > 0 ? (*model)->weight_bytes_per_step(r.experts_read) : bytes_per_token;
    return std::max(1, r.n_parallel) * r.read_rate() / static_cast<double>(bytes);
  };
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
      if (!parallel.empty()) std::printf("    \"n_parallel\": %d,\n", r.n_parallel);
      std::printf("    \"n_depth\": %d,\n", r.n_depth);
      if (r.peak_macs > 0)
        std::printf("    \"int8_peak_macs_per_s\": %.0f,\n    \"macs_per_s\": %.0f,\n", r.peak_macs, r.macs_per_s());
      if (!r.read_rates.empty())
        std::printf("    \"read_bytes_per_s\": %.0f,\n    \"limit_ts\": %.6f,\n", r.read_rate(), limit_ts(r));
      if (r.experts_read > 0) std::printf("    \"experts_read_per_layer\": %.3f,\n", r.experts_read);
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
    auto sequences = [](const Result& r) {
      return r.n_parallel > 0 ? ", " + std::to_string(r.n_parallel) + (r.n_parallel == 1 ? " sequence" : " sequences")
                              : std::string();
    };
    for (const Result& r : results) {
      if (r.read_rates.empty()) continue;
      char experts[96] = "";
      if (r.experts_read > 0)
        std::snprintf(experts, sizeof experts, "; its tokens chose %.2f of %lld experts per layer and step", r.experts_read,
                      static_cast<long long>(config.n_experts));
      std::printf("%s, %d threads%s: %.2f t/s is %.0f%% of the memory limit %.2f t/s (reading %.1f GB/s%s)\n",
                  r.test.c_str(), r.threads, sequences(r).c_str(), r.avg_ts(), 100.0 * r.avg_ts() / limit_ts(r),
                  limit_ts(r), r.read_rate() / 1e9, experts);
    }
    for (const auto& p : peaks) {
      std::printf("int8 peak, %d threads: %.1f G multiply-accumulates/s\n", p.first, p.second / 1e9);
    }
    for (const Result& r : results) {
      if (r.peak_macs <= 0) continue;
      std::printf("%s, %d threads%s: %.1f G int8 multiply-accumulates/s is %.1f%% of the peak %.1f G/s\n",
                  r.test.c_str(), r.threads, sequences(r).c_str(), r.macs_per_s() / 1e9,
                  100.0 * r.macs_per_s() / r.peak_macs, r.peak_macs / 1e9);
    }
  }
  return 0;
}
