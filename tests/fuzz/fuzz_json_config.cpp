// Why this file exists: a model folder's config.json (Hugging Face) or params.json (Mistral) is untrusted
// JSON whose numbers size every buffer later; this feeds both readers arbitrary bytes and requires that
// whatever they accept is a configuration the loader's own checks accept too.
#include <cstdint>
#include <string>
#include <string_view>

#include "bora/io/json_config.hpp"
#include "fuzz_support.hpp"

namespace {

void check_accepted(const bora::Expected<bora::ModelConfig>& config, const std::string& name) {
  if (!config) {
    BORA_FUZZ_CHECK(!config.error().str().empty());
    return;
  }
  BORA_FUZZ_CHECK(bora::validate_model_config(*config, name).has_value());
  BORA_FUZZ_CHECK(config->architecture == "mistral" || config->architecture == "mixtral" ||
                  config->architecture == "llama");
  BORA_FUZZ_CHECK(config->bos_id >= 0 && config->eos_id >= 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  const std::string hf_name = "config.json", params_name = "params.json";
  check_accepted(bora::parse_hf_config(json, hf_name), hf_name);
  check_accepted(bora::parse_mistral_params(json, params_name), params_name);
  return 0;
}
