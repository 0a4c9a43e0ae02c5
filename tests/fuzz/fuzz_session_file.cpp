// Why this file exists: Session::load reads a session file from disk that anyone may have edited; this
// writes arbitrary bytes to a file and loads it into sessions of a model (one without and one with a
// sliding window), then runs one more token from whatever state was accepted, so neither a hostile
// header nor a hostile cache can crash the loader or the forward pass after it. The model is the micro
// GGUF seed of fuzz_gguf (dim 32, one layer, 16 tokens, window 16): a forward pass of the 2-layer tiny
// test model cost ~40 ms under the sanitizers, this one well under a millisecond.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "fuzz_support.hpp"

namespace {

struct Fixture {
  std::unique_ptr<bora::LanguageModel> model;
  std::vector<bora::Session> sessions;
};

// Also what tests/fuzz/make_corpus.py's session seeds were saved with: change both together.
bora::SessionParams session_params(bool windowed) {
  bora::SessionParams params;
  params.n_ctx = windowed ? 64 : 8;
  params.sliding_window = windowed ? -1 : 0;  // the file's window (16), or none
  params.n_batch = 8;
  params.n_threads = 1;
  return params;
}

Fixture& fixture() {
  static Fixture* made = [] {
    auto* f = new Fixture;  // lives as long as the process
    auto model = bora::load_any(bora_fuzz::corpus_path("gguf/micro-dense-window.gguf"));
    BORA_FUZZ_REQUIRE_SETUP(model.has_value());
    f->model = std::move(*model);
    for (bool windowed : {false, true}) {
      auto session = f->model->session(session_params(windowed));
      BORA_FUZZ_REQUIRE_SETUP(session.has_value());
      f->sessions.push_back(std::move(*session));
    }
    return f;
  }();
  return *made;
}

// The seeds: each session saved empty, after a short prompt, and (windowed) after more tokens than its
// window holds, so the cache has rolled over.
void write_seeds(const std::string& folder) {
  Fixture& f = fixture();
  const char* names[2] = {"plain", "windowed"};
  for (size_t i = 0; i < f.sessions.size(); ++i) {
    bora::Session& session = f.sessions[i];
    for (int n_tokens : {0, 3, 20}) {
      if (n_tokens > 8 && i == 0) continue;  // the plain context holds 8
      session.reset();
      std::vector<int32_t> ids;
      const int32_t vocab = static_cast<int32_t>(f.model->config().vocab_size);
      for (int t = 0; t < n_tokens; ++t) ids.push_back((t * 7 + 1) % vocab);
      BORA_FUZZ_REQUIRE_SETUP(session.feed(ids).has_value());
      const std::string path = folder + "/" + names[i] + "-" + std::to_string(n_tokens) + "-tokens.session";
      BORA_FUZZ_REQUIRE_SETUP(session.save(path).has_value());
      std::printf("wrote %s\n", path.c_str());
    }
  }
}

}  // namespace

// BORA_FUZZ_WRITE_SESSION_SEEDS=<folder>: write the seed corpus there and exit (see make_corpus.py).
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* folder = std::getenv("BORA_FUZZ_WRITE_SESSION_SEEDS")) {
    write_seeds(folder);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = fixture();
  const std::string path = bora_fuzz::scratch_directory() + "/fuzz.session";
  bora_fuzz::write_file(path, data, size);
  const int64_t vocab = f.model->config().vocab_size;
  for (bora::Session& session : f.sessions) {
    session.reset();
    const bora::Status loaded = session.load(path);
    if (!loaded) {
      BORA_FUZZ_CHECK(!loaded.error().str().empty());
      BORA_FUZZ_CHECK(session.tokens().empty() && session.n_past() == 0);  // a refused file changes nothing
      continue;
    }
    BORA_FUZZ_CHECK(static_cast<int64_t>(session.tokens().size()) == session.n_past());
    // A context without a window cannot have consumed more positions than it holds.
    if (&session == &f.sessions[0]) BORA_FUZZ_CHECK(session.n_past() <= session_params(false).n_ctx);
    for (int32_t token : session.tokens()) BORA_FUZZ_CHECK(token >= 0 && token < vocab);
    // Continue from the restored state: it may be refused (a full context), never crash.
    (void)session.feed({static_cast<int32_t>(vocab - 1)});
  }
  return 0;
}
