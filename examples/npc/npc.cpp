// Why this file exists: the game loop the C API is for. Several NPCs talk at once through one batch
// scheduler, one scheduler step per frame, and the main thread must never wait for the model: it only
// polls text and statuses, submits new lines and cancels an NPC that walks away, while a worker thread
// runs the steps. It measures what the library costs the main thread per frame (the budget at 60
// frames/s is 16.7 ms, of which bora should take at most 2 ms).
//
//     npc [-m MODEL] [--frames N] [--fps F] [-t THREADS] [--npcs N] [--lines N] [--seed S]
//
// Design: each frame whose worker is idle reads the last step's text and statuses, submits and
// cancels, then kicks the next step on the worker; a frame that finds the step still running leaves the
// scheduler alone (a step longer than a frame delays the next step, never the frame). So the main
// thread never waits for the worker: bora_scheduler_take_text / _status / _cancel / _release take the
// scheduler's lock for a copy while nobody else holds it, _submit tokenizes a short prompt. The forward
// pass and sampling run on the worker.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bora/bora.h"

#ifndef BORA_DEMO_MODEL
#define BORA_DEMO_MODEL "tests/data/demo-mistral/demo-mistral-Q4_0.gguf"
#endif

namespace {

using Clock = std::chrono::steady_clock;

double milliseconds(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Runs bora_scheduler_step on its own thread, one step per request.
class StepWorker {
 public:
  explicit StepWorker(bora_scheduler* scheduler) : scheduler_(scheduler), thread_([this] { loop(); }) {
    std::lock_guard<std::mutex> lock(mutex_);
    step_ms_.reserve(1 << 16);  // no reallocation while the main thread may wait for the lock
  }
  ~StepWorker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  // Starts one step unless the previous one is still running; never waits. False when busy.
  bool try_start_step() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (busy_) return false;
      busy_ = true;
    }
    wake_.notify_one();  // outside the lock: the worker does not wake up only to wait for it
    return true;
  }

  // Step times in ms, and the first failure (BORA_OK when none); call once the worker is idle.
  std::vector<double> step_times() {
    std::lock_guard<std::mutex> lock(mutex_);
    return step_ms_;
  }
  bora_status failure() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
  }
  std::string failure_message() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_message_;
  }
  bool busy() {
    std::lock_guard<std::mutex> lock(mutex_);
    return busy_;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return busy_ || stopping_; });
      if (stopping_) return;
      lock.unlock();
      const Clock::time_point began = Clock::now();
      const bora_status status = bora_scheduler_step(scheduler_);
      const double took = milliseconds(Clock::now() - began);
      const std::string message = status == BORA_OK ? "" : bora_last_error_message();
      lock.lock();
      step_ms_.push_back(took);
      if (status != BORA_OK && failure_ == BORA_OK) {
        failure_ = status;
        failure_message_ = message;
      }
      busy_ = false;
    }
  }

  bora_scheduler* scheduler_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool busy_ = false;
  bool stopping_ = false;
  std::vector<double> step_ms_;
  bora_status failure_ = BORA_OK;
  std::string failure_message_;
  std::thread thread_;  // last: starts once everything above exists
};

struct Npc {
  Npc(const char* npc_name, const char* npc_opening) : name(npc_name), opening(npc_opening) {}
  const char* name;
  const char* opening;
  bora_seq_id id = 0;
  bool talking = false;
  bool gone = false;
  int lines = 0;
  std::string line;       // the line being spoken
  std::string last_line;  // the last line finished
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t at = std::min(values.size() - 1, static_cast<size_t>(p * static_cast<double>(values.size())));
  return values[at];
}

double mean(const std::vector<double>& values) {
  double sum = 0.0;
  for (double v : values) sum += v;
  return values.empty() ? 0.0 : sum / static_cast<double>(values.size());
}

const char* arg_value(int argc, char** argv, int* i) {
  if (*i + 1 >= argc) {
    std::fprintf(stderr, "%s needs a value\n", argv[*i]);
    std::exit(2);
  }
  return argv[++*i];
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = BORA_DEMO_MODEL;
  int frames = 3600, fps = 60, threads = 1, n_npcs = 4, lines_each = 40;
  uint64_t seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-m") model_path = arg_value(argc, argv, &i);
    else if (a == "--frames") frames = std::atoi(arg_value(argc, argv, &i));
    else if (a == "--fps") fps = std::atoi(arg_value(argc, argv, &i));
    else if (a == "-t") threads = std::atoi(arg_value(argc, argv, &i));
    else if (a == "--npcs") n_npcs = std::atoi(arg_value(argc, argv, &i));
    else if (a == "--lines") lines_each = std::atoi(arg_value(argc, argv, &i));
    else if (a == "--seed") seed = std::strtoull(arg_value(argc, argv, &i), nullptr, 10);
    else {
      std::fprintf(stderr, "usage: npc [-m MODEL] [--frames N] [--fps F] [-t THREADS] [--npcs N] [--lines N] [--seed S]\n");
      return 2;
    }
  }
  std::vector<Npc> npcs = {{"Blacksmith", "The blacksmith wipes his brow and says: \""},
                           {"Guard", "The guard leans on his spear and says: \""},
                           {"Baker", "The baker dusts the flour off her hands and says: \""},
                           {"Bard", "The bard strums his lute and sings: \""},
                           {"Witch", "The old witch stirs her pot and mutters: \""},
                           {"Child", "A child tugs at your sleeve and says: \""}};
  n_npcs = std::max(1, std::min(n_npcs, static_cast<int>(npcs.size())));
  npcs.erase(npcs.begin() + n_npcs, npcs.end());
  if (frames < 1 || fps < 1 || threads < 1 || lines_each < 1) {
    std::fprintf(stderr, "npc: --frames, --fps, -t and --lines must be >= 1\n");
    return 2;
  }

  bora_model* model = bora_model_load(model_path.c_str(), nullptr);
  if (model == nullptr) {
    std::fprintf(stderr, "npc: %s\n", bora_last_error_message());
    return 1;
  }
  bora_scheduler_params params = bora_scheduler_default_params();
  params.n_threads = threads;  // the worker thread plus threads - 1 of the scheduler's pool
  params.n_batch = 64;
  params.prefill_chunk = 16;   // a new line's prompt takes a few steps, never one long one
  bora_scheduler* scheduler = bora_scheduler_create(model, &params);
  if (scheduler == nullptr) {
    std::fprintf(stderr, "npc: %s\n", bora_last_error_message());
    bora_model_free(model);
    return 1;
  }

  const char* const stop[] = {"\"", "\n"};
  uint64_t line_seed = seed;
  // Only the library's calls (and the worker's wake-up) count, not the printing around them.
  Clock::duration library_time{};
  auto timed = [&library_time](auto call) {
    const Clock::time_point began = Clock::now();
    auto result = call();
    library_time += Clock::now() - began;
    return result;
  };
  auto say_next_line = [&](Npc& npc, const Npc* heard) -> bool {
    std::string prompt = npc.opening;
    if (heard != nullptr && !heard->last_line.empty()) {
      prompt = std::string(heard->name) + " said: \"" + heard->last_line + "\"\n" + npc.opening;
    }
    bora_request_params request = bora_request_default_params();
    request.prompt = prompt.c_str();
    request.sample.temperature = 0.8f;
    request.sample.seed = line_seed++;
    request.sample.max_tokens = 32;
    request.sample.stop_strings = stop;
    request.sample.n_stop_strings = 2;
    if (timed([&] { return bora_scheduler_submit(scheduler, &request, &npc.id); }) != BORA_OK) {
      std::fprintf(stderr, "npc: %s\n", bora_last_error_message());
      return false;
    }
    npc.talking = true;
    npc.line.clear();
    return true;
  };

  StepWorker worker(scheduler);
  const size_t leaving = npcs.size() > 1 ? npcs.size() - 1 : npcs.size();  // the last NPC walks away
  std::vector<double> main_thread_ms, handoff_ms;
  int tokens = 0, busy_frames = 0, frame = 0;
  const Clock::duration frame_length = std::chrono::microseconds(1000000 / fps);
  Clock::time_point next_frame = Clock::now();
  const Clock::time_point started = next_frame;
  bool failed = false;

  for (Npc& npc : npcs) failed = failed || !say_next_line(npc, nullptr);
  for (; frame < frames && !failed; ++frame) {
    // ---- the library's share of the frame, on the main thread ----
    library_time = Clock::duration{};
    // While a step runs, its thread holds the scheduler's lock at moments, and a thread preempted there
    // would make the main thread wait; so the main thread talks to the scheduler only between steps.
    // Nothing is lost: text and statuses change only when a step ends.
    if (timed([&] { return worker.busy(); })) {
      ++busy_frames;
      main_thread_ms.push_back(milliseconds(library_time));
      next_frame += frame_length;
      std::this_thread::sleep_until(next_frame);
      continue;
    }
    bool anyone_talking = false;
    for (size_t n = 0; n < npcs.size(); ++n) {
      Npc& npc = npcs[n];
      if (!npc.talking) continue;
      size_t length = 0;
      const char* text = timed([&] { return bora_scheduler_take_text(scheduler, npc.id, &length); });
      npc.line.append(text, length);
      bora_sequence_status status;
      if (timed([&] { return bora_scheduler_status(scheduler, npc.id, &status); }) != BORA_OK) continue;
      if (n == leaving && !npc.gone && npc.lines == 1 && !npc.line.empty()) {  // mid-way through its second line
        timed([&] { return bora_scheduler_cancel(scheduler, npc.id); });  // takes effect at the next step
        npc.gone = true;
      }
      if (status.state != BORA_SEQUENCE_FINISHED) {
        anyone_talking = true;
        continue;
      }
      tokens += static_cast<int>(status.n_generated);
      timed([&] { return bora_scheduler_release(scheduler, npc.id); });
      npc.talking = false;
      if (status.stop_reason == BORA_STOP_CANCELLED) {
        std::printf("[frame %4d] %s walks away mid-sentence (\"%s...\")\n", frame, npc.name, npc.line.c_str());
        continue;
      }
      npc.last_line = npc.line;
      ++npc.lines;
      std::printf("[frame %4d] %s: \"%s\"\n", frame, npc.name, npc.line.c_str());
      if (!npc.gone && npc.lines < lines_each) {
        const Npc& neighbour = npcs[(n + 1) % npcs.size()];
        failed = !say_next_line(npc, &neighbour);
        anyone_talking = anyone_talking || npc.talking;
      }
    }
    // The next step, on the worker: a thread hand-off (the OS may run the worker at once and make
    // the main thread wait for a core), timed apart from the library's calls.
    const Clock::time_point handing_off = Clock::now();
    worker.try_start_step();
    handoff_ms.push_back(milliseconds(Clock::now() - handing_off));
    main_thread_ms.push_back(milliseconds(library_time));
    if (worker.failure() != BORA_OK) {
      std::fprintf(stderr, "npc: step failed: %s\n", worker.failure_message().c_str());
      failed = true;
    }
    if (!anyone_talking) break;
    // ---- the rest of the game's frame ----
    next_frame += frame_length;
    std::this_thread::sleep_until(next_frame);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  while (worker.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  const std::vector<double> steps = worker.step_times();
  std::printf("\n%d frames at %d fps (%.1f s), %zu steps, %d tokens (%.1f tokens/s)\n", frame, fps, seconds,
              steps.size(), tokens, seconds > 0 ? tokens / seconds : 0.0);
  std::printf("main thread, library per frame: mean %.3f ms, p99 %.3f ms, max %.3f ms (budget 2 ms)\n",
              mean(main_thread_ms), percentile(main_thread_ms, 0.99),
              main_thread_ms.empty() ? 0.0 : *std::max_element(main_thread_ms.begin(), main_thread_ms.end()));
  std::printf("main thread, waking the worker: mean %.3f ms, p99 %.3f ms, max %.3f ms\n", mean(handoff_ms),
              percentile(handoff_ms, 0.99),
              handoff_ms.empty() ? 0.0 : *std::max_element(handoff_ms.begin(), handoff_ms.end()));
  std::printf("worker thread, one step: mean %.2f ms, p99 %.2f ms; frames that found the step still running: %d\n",
              mean(steps), percentile(steps, 0.99), busy_frames);
  bora_scheduler_free(scheduler);
  bora_model_free(model);
  return failed ? 1 : 0;
}
