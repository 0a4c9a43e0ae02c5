// Why this file exists: chat and generate both load a model and sample from a session; the options
// that choose the model, the sampling temperature and seed, and the thread count are read one way here.
#ifndef BORA_EXAMPLES_GENERATION_OPTIONS_HPP
#define BORA_EXAMPLES_GENERATION_OPTIONS_HPP

#include <string>

#include "args.hpp"
#include "bora/bora.hpp"

namespace example_args {

struct GenerationOptions {
  std::string model_path;
  bora::SampleParams sample;
  bora::SessionParams session;

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
    else return false;
    return true;
  }
};

}  // namespace example_args

#endif  // BORA_EXAMPLES_GENERATION_OPTIONS_HPP
