// Why this file exists: LoadParams::progress_callback is what a loading screen shows and how a user
// cancels a multi-gigabyte load; it must report while the weights are being read (not only after),
// rise steadily to 1, and stop the read when it says so.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/golden.hpp"

namespace {

struct Recorder {
  std::vector<float> seen;
  int cancel_at_call = -1;  // -1: never cancel
};

bool record(float progress, void* user_data) {
  Recorder* recorder = static_cast<Recorder*>(user_data);
  recorder->seen.push_back(progress);
  return static_cast<int>(recorder->seen.size()) != recorder->cancel_at_call;
}

bora::LoadParams reading_with(Recorder* recorder) {
  bora::LoadParams params;
  params.use_mmap = false;  // read into memory: the slow part a user waits for
  params.progress_callback = record;
  params.progress_user_data = recorder;
  return params;
}

}  // namespace

TEST_CASE("load progress is reported while the weights are read, rises to 1, for GGUF and safetensors") {
  for (const char* path : {"tiny-mistral/tiny-mistral-Q8_0.gguf", "tiny-mistral/hf", "tiny-mixtral/native"}) {
    CAPTURE(path);
    Recorder recorder;
    auto model = bora::load_any(bora_test::data_path(path), reading_with(&recorder));
    REQUIRE(model);
    REQUIRE(recorder.seen.size() >= 3);
    CHECK(recorder.seen.front() < 0.5f);  // during the read, before the weights are bound
    for (size_t i = 1; i < recorder.seen.size(); ++i) CHECK(recorder.seen[i] >= recorder.seen[i - 1]);
    CHECK(recorder.seen.back() == 1.0f);
  }
}

TEST_CASE("cancelling during the read stops the load with kCancelled") {
  Recorder recorder;
  recorder.cancel_at_call = 1;
  auto model = bora::load_any(bora_test::data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"), reading_with(&recorder));
  REQUIRE_FALSE(model);
  CHECK(model.error().code() == bora::ErrorCode::kCancelled);
  CHECK(std::string(model.error().message()).find("cancelled after") != std::string::npos);
  REQUIRE(recorder.seen.size() == 1);
  CHECK(recorder.seen[0] < 0.5f);

  Recorder mapped;
  mapped.cancel_at_call = 1;
  bora::LoadParams map_params = reading_with(&mapped);
  map_params.use_mmap = true;
  auto cancelled_map = bora::load_any(bora_test::data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"), map_params);
  REQUIRE_FALSE(cancelled_map);
  CHECK(cancelled_map.error().code() == bora::ErrorCode::kCancelled);
}
