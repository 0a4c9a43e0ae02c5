// Why this file exists: every reader (GGUF, safetensors) hands the model the same thing, a typed,
// shaped window onto bytes it does not own, so the model never cares which file format it came from.
#ifndef BORA_IO_TENSOR_VIEW_HPP
#define BORA_IO_TENSOR_VIEW_HPP

#include <cstdint>
#include <string>

#include "bora/quant/weight_type.hpp"

namespace bora {

// Dimensions follow ggml: ne[0] is the innermost (row length = input features of a matrix),
// so a torch/safetensors [out, in] matrix has ne = {in, out, 1, 1}. Unused dims are 1.
struct TensorView {
  std::string name;
  WeightType type = WeightType::kF32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  const uint8_t* data = nullptr;  // points into a mapped file (or a buffer the loader owns)
  uint64_t bytes = 0;
  // Q4_0 / Q8_0 rows regrouped 16 at a time for the VNNI kernels (quant/row_tiles.hpp): row(r) does not
  // apply, the ops functions read either layout.
  bool row_tiles = false;

  int64_t row_length() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  int64_t elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  uint64_t row_bytes() const {
    uint64_t b = 0;
    weight_row_bytes(type, static_cast<uint64_t>(ne[0]), &b);
    return b;
  }
  const uint8_t* row(int64_t r) const { return data + static_cast<uint64_t>(r) * row_bytes(); }
  bool valid() const { return data != nullptr; }
};

}  // namespace bora

#endif  // BORA_IO_TENSOR_VIEW_HPP
