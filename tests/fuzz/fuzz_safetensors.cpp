// Why this file exists: a .safetensors header is untrusted JSON that says where each tensor lies in the
// file; this feeds the reader arbitrary bytes and requires that every tensor it accepts lies inside the
// file and has exactly the bytes its shape and dtype need.
#include <cstdint>
#include <memory>

#include "bora/io/safetensors.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<uint8_t[]> copy = bora_fuzz::exact_copy(data, size);
  auto file = bora::SafetensorsFile::parse(copy.get(), size, "fuzz.safetensors");
  if (!file) {
    BORA_FUZZ_CHECK(!file.error().str().empty());
    return 0;
  }
  BORA_FUZZ_CHECK(file->data_offset() >= 8 && file->data_offset() <= size);
  const uint8_t* data_section = copy.get() + file->data_offset();
  const uint64_t data_bytes = size - file->data_offset();
  for (const bora::TensorView& tensor : file->tensors()) {
    BORA_FUZZ_CHECK(tensor.n_dims >= 0 && tensor.n_dims <= 4);
    uint64_t elements = 1;
    for (int d = 0; d < 4; ++d) {
      BORA_FUZZ_CHECK(tensor.ne[d] >= 0);
      elements *= static_cast<uint64_t>(tensor.ne[d]);  // cannot overflow: the reader checked the product
    }
    BORA_FUZZ_CHECK(tensor.bytes == elements * bora::weight_type_info(tensor.type).block_bytes);
    BORA_FUZZ_CHECK(tensor.data >= data_section && tensor.bytes <= data_bytes &&
                    static_cast<uint64_t>(tensor.data - data_section) <= data_bytes - tensor.bytes);
    bora_fuzz::touch(tensor.data, tensor.bytes);
    BORA_FUZZ_CHECK(file->find_tensor(tensor.name) == &tensor);
  }
  return 0;
}
