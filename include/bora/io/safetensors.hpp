// Why this file exists: Mistral's consolidated checkpoints and Hugging Face models ship as
// .safetensors (a JSON header, then raw tensors); this maps one file, checks the header against the
// file size, and exposes the F32/F16/BF16 tensors as zero-copy views.
#ifndef BORA_IO_SAFETENSORS_HPP
#define BORA_IO_SAFETENSORS_HPP

#include <simdjson.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bora/base/bytes.hpp"
#include "bora/base/expected.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/tensor_view.hpp"
#include "bora/quant/weight_type.hpp"

namespace bora {

class SafetensorsFile {
 public:
  // The format's own limit (real headers are kilobytes; Mixtral 8x7B's is ~100 KB).
  static constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Maps the file; tensor views point into the mapping, which lives (and stays put) as long as
  // this object, even when the object is moved.
  static Expected<SafetensorsFile> open(const std::string& path, FileAccess access = FileAccess::kMap,
                                        const ReadProgress& progress = {}) {
    Expected<MappedFile> mapped = MappedFile::open(path, access, progress);
    if (!mapped) return mapped.error();
    auto mapping = std::make_unique<MappedFile>(std::move(mapped.value()));
    Expected<SafetensorsFile> parsed = parse(mapping->data(), mapping->size(), path);
    if (!parsed) return parsed.error();
    parsed->mapping_ = std::move(mapping);
    return parsed;
  }

  // Parses bytes the caller keeps alive for the lifetime of the result.
  static Expected<SafetensorsFile> parse(const uint8_t* data, uint64_t size, std::string name) {
    SafetensorsFile file;
    file.name_ = std::move(name);
    file.data_ = data;
    file.file_size_ = size;
    if (data == nullptr && size != 0) {
      return make_error(ErrorCode::kInvalidArgument, "%s: null data with size %" PRIu64, file.name_.c_str(), size);
    }
    BORA_RETURN_IF_ERROR(file.parse_header());
    return file;
  }

  const std::string& name() const { return name_; }
  uint64_t file_size() const { return file_size_; }
  const uint8_t* data() const { return data_; }  // the whole file's bytes
  uint64_t data_offset() const { return data_offset_; }  // 8 + header length
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }

 private:
  SafetensorsFile() = default;

  static bool weight_type_from_dtype(std::string_view dtype, WeightType* out) {
    if (dtype == "F32") *out = WeightType::kF32;
    else if (dtype == "F16") *out = WeightType::kF16;
    else if (dtype == "BF16") *out = WeightType::kBF16;
    else return false;
    return true;
  }

  Status parse_header() {
    const char* file = name_.c_str();
    if (file_size_ < 8) {
      return make_error(ErrorCode::kFormat, "%s: %" PRIu64 " bytes is too small for a safetensors file (8-byte header "
                        "length missing)", file, file_size_);
    }
    const uint64_t header_bytes = bytes_detail::load_le_u64(data_);
    if (header_bytes > file_size_ - 8) {
      return make_error(ErrorCode::kFormat, "%s: header length %" PRIu64 " runs past the end of the file (size %" PRIu64
                        ")", file, header_bytes, file_size_);
    }
    if (header_bytes < 2 || header_bytes > kMaxHeaderBytes) {
      return make_error(ErrorCode::kFormat, "%s: header length %" PRIu64 " is not sane (expected 2..%" PRIu64 ")", file,
                        header_bytes, kMaxHeaderBytes);
    }
    data_offset_ = 8 + header_bytes;
    const uint64_t data_bytes = file_size_ - data_offset_;

    simdjson::padded_string header(reinterpret_cast<const char*>(data_ + 8), static_cast<size_t>(header_bytes));
    if (header.data() == nullptr) return make_error(ErrorCode::kIo, "%s: out of memory copying the header", file);
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    const simdjson::error_code parse_error = parser.parse(header).get(root);
    if (parse_error != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: header is malformed JSON: %s", file,
                        simdjson::error_message(parse_error));
    }
    simdjson::dom::object entries;
    if (root.get_object().get(entries) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: header is not a JSON object", file);
    }
    tensors_.reserve(entries.size());
    for (simdjson::dom::key_value_pair entry : entries) {
      if (entry.key == "__metadata__") continue;
      BORA_RETURN_IF_ERROR(parse_tensor(entry.key, entry.value, data_bytes));
    }
    return check_data_fully_indexed(data_bytes);
  }

  // The format requires the tensors to tile the data section exactly: no byte claimed twice (two tensors
  // aliasing one another) and none left over, as the reference library enforces.
  Status check_data_fully_indexed(uint64_t data_bytes) const {
    std::vector<const TensorView*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const TensorView& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](const TensorView* a, const TensorView* b) {
      return a->data != b->data ? a->data < b->data : a->bytes < b->bytes;
    });
    const uint8_t* section = data_ + data_offset_;
    uint64_t covered = 0;
    for (const TensorView* t : by_offset) {
      const uint64_t begin = static_cast<uint64_t>(t->data - section);
      if (begin != covered) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%s' starts at data offset %" PRIu64 ", but the tensors before "
                          "it end at %" PRIu64 " (%s)", name_.c_str(), t->name.c_str(), begin, covered,
                          begin < covered ? "overlapping data" : "a hole in the data section");
      }
      covered = begin + t->bytes;
    }
    if (covered != data_bytes) {
      return make_error(ErrorCode::kFormat, "%s: the tensors cover %" PRIu64 " of the %" PRIu64 "-byte data section "
                        "(the format allows no unindexed bytes)", name_.c_str(), covered, data_bytes);
    }
    return {};
  }

  Status parse_tensor(std::string_view name, simdjson::dom::element description, uint64_t data_bytes) {
    const char* file = name_.c_str();
    const int name_len = static_cast<int>(name.size());
    if (index_.count(std::string(name)) != 0) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' appears twice in the header", file, name_len, name.data());
    }
    simdjson::dom::object fields;
    if (description.get_object().get(fields) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': its description is not a JSON object", file, name_len,
                        name.data());
    }
    TensorView view;
    view.name = std::string(name);

    std::string_view dtype;
    if (fields.at_key("dtype").get_string().get(dtype) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': 'dtype' is missing or not a string", file, name_len,
                        name.data());
    }
    if (!weight_type_from_dtype(dtype, &view.type)) {
      return make_error(ErrorCode::kUnsupported, "%s: tensor '%.*s' has dtype %.*s; bora reads F32, F16 and BF16", file,
                        name_len, name.data(), static_cast<int>(dtype.size()), dtype.data());
    }

    simdjson::dom::array shape;
    if (fields.at_key("shape").get_array().get(shape) != simdjson::SUCCESS) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': 'shape' is missing or not an array", file, name_len,
                        name.data());
    }
    const size_t n_dims = shape.size();
    if (n_dims > 4) {
      return make_error(ErrorCode::kUnsupported, "%s: tensor '%.*s' has %zu dimensions (at most 4 are supported)", file,
                        name_len, name.data(), n_dims);
    }
    // Torch order is outermost first; ggml's ne[0] is the innermost, so the shape is reversed.
    view.n_dims = static_cast<int>(n_dims);
    size_t d = 0;
    for (simdjson::dom::element extent_element : shape) {
      int64_t extent = 0;
      if (extent_element.get_int64().get(extent) != simdjson::SUCCESS || extent < 0) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': shape entry %zu is not a non-negative integer", file,
                          name_len, name.data(), d);
      }
      view.ne[n_dims - 1 - d] = extent;
      ++d;
    }
    uint64_t elements = 0, bytes = 0;
    if (!bytes_detail::checked_elements(view.ne, view.n_dims, &elements) ||
        !bytes_detail::checked_mul(elements, weight_type_info(view.type).block_bytes, &bytes)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': its shape overflows 64 bits", file, name_len,
                        name.data());
    }
    view.bytes = bytes;

    simdjson::dom::array offsets;
    uint64_t range[2] = {0, 0};
    if (fields.at_key("data_offsets").get_array().get(offsets) != simdjson::SUCCESS || offsets.size() != 2) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': 'data_offsets' is missing or not [begin, end]", file,
                        name_len, name.data());
    }
    int i = 0;
    for (simdjson::dom::element offset_element : offsets) {
      if (offset_element.get_uint64().get(range[i]) != simdjson::SUCCESS) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': data_offsets[%d] is not a non-negative integer", file,
                          name_len, name.data(), i);
      }
      ++i;
    }
    if (range[0] > range[1] || range[1] > data_bytes) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64
                        "] lie outside the %" PRIu64 "-byte data section (file byte offset %" PRIu64 " onward)", file,
                        name_len, name.data(), range[0], range[1], data_bytes, data_offset_);
    }
    if (range[1] - range[0] != bytes) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                        " bytes, but a %.*s tensor of that shape needs %" PRIu64, file, name_len, name.data(), range[0],
                        range[1], range[1] - range[0], static_cast<int>(dtype.size()), dtype.data(), bytes);
    }
    view.data = data_ + data_offset_ + range[0];
    index_.emplace(view.name, tensors_.size());
    tensors_.push_back(std::move(view));
    return {};
  }

  std::string name_;
  const uint8_t* data_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::unique_ptr<MappedFile> mapping_;  // null for parse(); owns the bytes for open()
};

}  // namespace bora

#endif  // BORA_IO_SAFETENSORS_HPP
