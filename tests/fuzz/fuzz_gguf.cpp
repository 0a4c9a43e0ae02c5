// Why this file exists: a GGUF file is the most common untrusted input bora reads; this feeds the reader
// arbitrary bytes and, whenever they parse, everything built on top of it (typed metadata getters, the
// model configuration, the embedded tokenizer, binding the weights and one forward pass), so a crash,
// an overread or a huge allocation anywhere on that path is a finding.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "fuzz_support.hpp"

namespace {

void read_every_key(const bora::GgufFile& gguf) {
  for (const std::string& key : gguf.keys()) {
    const bora::GgufValue* value = gguf.find(key);
    BORA_FUZZ_CHECK(value != nullptr);
    bora_fuzz::touch(value->raw, value->raw_bytes);
    // Each getter either converts or refuses; none may read outside the value.
    (void)gguf.get_uint(key);
    (void)gguf.get_int(key);
    (void)gguf.get_float(key);
    (void)gguf.get_bool(key);
    (void)gguf.get_string(key);
    (void)gguf.get_string_array(key);
    (void)gguf.get_f32_array(key);
    (void)gguf.get_i32_array(key);
  }
}

void check_tensors_lie_in_file(const bora::GgufFile& gguf, const uint8_t* begin, size_t size) {
  for (const bora::TensorView& tensor : gguf.tensors()) {
    BORA_FUZZ_CHECK(tensor.n_dims >= 0 && tensor.n_dims <= 4);
    if (tensor.bytes == 0) continue;
    BORA_FUZZ_CHECK(tensor.data >= begin && tensor.bytes <= size &&
                    static_cast<size_t>(tensor.data - begin) <= size - tensor.bytes);
    bora_fuzz::touch(tensor.data, tensor.bytes);
    BORA_FUZZ_CHECK(gguf.find_tensor(tensor.name) != nullptr);
  }
}

void exercise_tokenizer(const bora::GgufFile& gguf) {
  auto tokenizer = bora::Tokenizer::from_gguf(gguf);
  if (!tokenizer) return;
  const std::vector<int32_t> ids = tokenizer->encode("Hello, world! \xE2\x96\x81 \xF0\x9F\xA6\x99 [INST] 12345", true);
  for (int32_t id : ids) BORA_FUZZ_CHECK(id >= 0 && static_cast<size_t>(id) < tokenizer->vocab_size());
  (void)tokenizer->decode(ids);
  std::vector<int32_t> every_id;
  for (size_t id = 0; id < tokenizer->vocab_size() && id < 4096; ++id) every_id.push_back(static_cast<int32_t>(id));
  (void)tokenizer->decode(every_id);
}

void exercise_model(const uint8_t* data, size_t size) {
  std::shared_ptr<uint8_t> bytes(new uint8_t[size == 0 ? 1 : size], std::default_delete<uint8_t[]>());
  if (size != 0) std::memcpy(bytes.get(), data, size);
  auto files = bora::ModelFiles::from_gguf_bytes(std::shared_ptr<const uint8_t>(bytes), size, "fuzz.gguf");
  if (!files) return;
  auto model = bora::load_any_model(std::move(*files));
  if (!model) return;
  bora::ContextParams params;
  params.n_ctx = 4;
  params.n_batch = 2;
  auto context = (*model)->create_context(params);
  if (!context) return;
  const int64_t vocab = (*model)->config().vocab_size;
  BORA_FUZZ_CHECK(vocab > 0);
  const int32_t tokens[2] = {0, static_cast<int32_t>(vocab - 1)};
  std::vector<float> logits(static_cast<size_t>(vocab));
  (void)(*model)->forward(**context, tokens, 2, logits.data(), false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<uint8_t[]> copy = bora_fuzz::exact_copy(data, size);
  auto gguf = bora::GgufFile::parse(copy.get(), size, "fuzz.gguf");
  if (!gguf) {
    BORA_FUZZ_CHECK(!gguf.error().str().empty());
    return 0;
  }
  read_every_key(*gguf);
  check_tensors_lie_in_file(*gguf, copy.get(), size);
  (void)bora::config_from_gguf(*gguf);
  exercise_tokenizer(*gguf);
  exercise_model(data, size);
  return 0;
}
