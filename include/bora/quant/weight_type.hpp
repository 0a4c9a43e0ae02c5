// Why this file exists: one table of the weight encodings bora reads (ggml's numbering, shared by
// GGUF and by our safetensors loader), so every layer agrees on block sizes and byte counts.
#ifndef BORA_QUANT_WEIGHT_TYPE_HPP
#define BORA_QUANT_WEIGHT_TYPE_HPP

#include <cstdint>

namespace bora {

// Values are ggml's type ids, as stored in GGUF tensor infos.
enum class WeightType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct WeightTypeInfo {
  const char* name;
  uint32_t block_elements;  // values per block
  uint32_t block_bytes;     // bytes per block
};

// Returns false for ggml types bora does not implement.
inline bool weight_type_from_ggml(uint32_t ggml_type, WeightType* out) {
  switch (ggml_type) {
    case 0: case 1: case 2: case 8: case 12: case 13: case 14: case 30:
      *out = static_cast<WeightType>(ggml_type);
      return true;
    default:
      return false;
  }
}

inline WeightTypeInfo weight_type_info(WeightType type) {
  switch (type) {
    case WeightType::kF32: return {"F32", 1, 4};
    case WeightType::kF16: return {"F16", 1, 2};
    case WeightType::kBF16: return {"BF16", 1, 2};
    case WeightType::kQ8_0: return {"Q8_0", 32, 34};
    case WeightType::kQ4_0: return {"Q4_0", 32, 18};
    case WeightType::kQ4_K: return {"Q4_K", 256, 144};
    case WeightType::kQ5_K: return {"Q5_K", 256, 176};
    case WeightType::kQ6_K: return {"Q6_K", 256, 210};
  }
  return {"?", 1, 0};
}

inline const char* weight_type_name(WeightType type) { return weight_type_info(type).name; }

// Float rows (one value per "block") take the f32 kernels; the others are integer block formats.
inline bool is_float_weight_type(WeightType type) {
  return type == WeightType::kF32 || type == WeightType::kF16 || type == WeightType::kBF16;
}

// Bytes of one row of `elements` values; false when `elements` is not a whole number of blocks.
inline bool weight_row_bytes(WeightType type, uint64_t elements, uint64_t* bytes) {
  const WeightTypeInfo info = weight_type_info(type);
  if (info.block_bytes == 0 || elements % info.block_elements != 0) return false;
  *bytes = elements / info.block_elements * info.block_bytes;
  return true;
}

}  // namespace bora

#endif  // BORA_QUANT_WEIGHT_TYPE_HPP
