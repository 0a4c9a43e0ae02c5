// Why this file exists: chat and generate both load a model and sample from a session; the options
// that choose the model, its KV cache type, the sampling temperature and seed, and the thread count
// are read one way here.
#ifndef BORA_EXAMPLES_GENERATION_OPTIONS_HPP
#define BORA_EXAMPLES_GENERATION_OPTIONS_HPP

#include <string>

#include "args.hpp"
#include "bora/bora.hpp"

namespace example_args {

// --kv-type: how the KV cache keeps keys and values (q8_0 halves what a long context reads).
inline bora::KvCacheType kv_cache_type(Parser& args) {
  const std::string value = args.text();
  if (value == "f16") return bora::KvCacheType::kF16;
  if (value == "f32") return bora::KvCacheType::kF32;
  if (value != "q8_0") args.fail("--kv-type needs f16, f32 or q8_0, not '" + value + "'");
  return bora::KvCacheType::kQ8_0;
}

struct GenerationOptions {
  std::string model_path;
  bora::SampleParams sample;
  bora::SessionParams session;
  bora::LoadParams load;

  explicit GenerationOptions(int max_tokens) {
    sample.max_tokens = max_tokens;
    session.n_threads = 2;
  }

  // Reads the parser's current option if it is one of the shared ones; false leaves it to the caller.
  bool read(Parser& args) {
    if (args.is("-m", "--model")) model_path = args.text();
    else if (args.is("--temp")) sample.temperature = static_cast<float>(args.real(0, 100));
    else if (args.is("--seed")) sample.seed = args.unsigned_integer();
    else if (args.is("-t", "--threads")) session.n_threads = static_cast<int>(args.integer(1, 1024));
    else if (args.is("--kv-type")) load.kv_cache_type = kv_cache_type(args);
    else return false;
    return true;
  }
};

}  // namespace example_args

#endif  // BORA_EXAMPLES_GENERATION_OPTIONS_HPP
