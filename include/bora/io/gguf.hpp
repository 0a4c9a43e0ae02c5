// Why this file exists: GGUF is how quantized Mistral/Mixtral models ship; this reader maps one file,
// checks every count, length and offset in it against the file size, and exposes metadata and
// zero-copy tensor views, so a truncated or hostile file yields an error naming what is wrong.
#ifndef BORA_IO_GGUF_HPP
#define BORA_IO_GGUF_HPP

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bora/base/bytes.hpp"
#include "bora/base/expected.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/gguf_value.hpp"
#include "bora/io/tensor_view.hpp"
#include "bora/quant/weight_type.hpp"

namespace bora {

// ggml's names for its type ids, so "unsupported type" errors say which type the file used.
inline const char* ggml_type_name(uint32_t id) {
  static const char* const kNames[] = {
      "F32", "F16", "Q4_0", "Q4_1", "Q4_2(removed)", "Q4_3(removed)", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
      "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
      "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16"};
  if (id < sizeof(kNames) / sizeof(kNames[0])) return kNames[id];
  return "unknown";
}

namespace gguf_detail {

constexpr uint64_t kMinKvBytes = 8 + 4 + 1;          // empty key, type, smallest value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // empty name, n_dims, type, offset (0 dims)
constexpr int kMaxArrayDepth = 8;
constexpr int kMaxDims = 4;

// Reads GGUF primitives, reporting where the file ended if a read does not fit.
class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& file) : data_(data), size_(size), file_(file) {}

  uint64_t offset() const { return offset_; }
  uint64_t remaining() const { return size_ - offset_; }
  const uint8_t* here() const { return data_ + offset_; }

  Status need(uint64_t bytes, const char* what, std::string_view subject) const {
    if (bytes > remaining()) {
      const char* quote = subject.empty() ? "" : "'";
      return make_error(ErrorCode::kFormat,
                        "%s: file is truncated: it ends at byte offset %" PRIu64 " while reading %s%s%.*s%s "
                        "(%" PRIu64 " bytes needed)",
                        file_.c_str(), size_, what, quote, static_cast<int>(subject.size()), subject.empty() ? "" : subject.data(), quote,
                        bytes);
    }
    return {};
  }
  Status read_u32(uint32_t* out, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(4, what, subject));
    *out = bytes_detail::load_le_u32(here());
    offset_ += 4;
    return {};
  }
  Status read_u64(uint64_t* out, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(8, what, subject));
    *out = bytes_detail::load_le_u64(here());
    offset_ += 8;
    return {};
  }
  Status skip(uint64_t bytes, const char* what, std::string_view subject = {}) {
    BORA_RETURN_IF_ERROR(need(bytes, what, subject));
    offset_ += bytes;
    return {};
  }
  // A GGUF string: u64 length, then that many bytes.
  Status read_string(std::string_view* out, const char* what, std::string_view subject = {}) {
    uint64_t length = 0;
    const uint64_t length_offset = offset_;
    BORA_RETURN_IF_ERROR(read_u64(&length, what, subject));
    if (length > remaining()) {
      return make_error(ErrorCode::kFormat,
                        "%s: string length %" PRIu64 " at byte offset %" PRIu64
                        " runs past the end of the file (size %" PRIu64 ") while reading %s%s%.*s%s",
                        file_.c_str(), length, length_offset, size_, what, subject.empty() ? "" : "'",
                        static_cast<int>(subject.size()), subject.empty() ? "" : subject.data(), subject.empty() ? "" : "'");
    }
    *out = std::string_view(reinterpret_cast<const char*>(here()), static_cast<size_t>(length));
    offset_ += length;
    return {};
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  const std::string& file_;
  uint64_t offset_ = 0;
};

// Skips over an array's elements (already past its element type and count), validating nested ones.
inline Status skip_array_elements(Cursor& cursor, GgufType element_type, uint64_t count, int depth,
                                  const std::string& file, std::string_view key) {
  const int key_len = static_cast<int>(key.size());
  if (element_type == GgufType::kString) {
    if (count > cursor.remaining() / 8) {
      return make_error(ErrorCode::kFormat,
                        "%s: metadata key '%.*s': array of %" PRIu64 " strings cannot fit in the %" PRIu64
                        " bytes left after byte offset %" PRIu64,
                        file.c_str(), key_len, key.data(), count, cursor.remaining(), cursor.offset());
    }
    for (uint64_t i = 0; i < count; ++i) {
      std::string_view ignored;
      BORA_RETURN_IF_ERROR(cursor.read_string(&ignored, "a string element of metadata key ", key));
    }
    return {};
  }
  if (element_type == GgufType::kArray) {
    if (depth >= kMaxArrayDepth) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s': arrays nested deeper than %d levels",
                        file.c_str(), key_len, key.data(), kMaxArrayDepth);
    }
    if (count > cursor.remaining() / 12) {
      return make_error(ErrorCode::kFormat,
                        "%s: metadata key '%.*s': array of %" PRIu64 " arrays cannot fit in the %" PRIu64
                        " bytes left after byte offset %" PRIu64,
                        file.c_str(), key_len, key.data(), count, cursor.remaining(), cursor.offset());
    }
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t type_offset = cursor.offset();
      uint32_t inner_type_id = 0;
      uint64_t inner_count = 0;
      BORA_RETURN_IF_ERROR(cursor.read_u32(&inner_type_id, "a nested array type of metadata key ", key));
      if (!gguf_type_is_known(inner_type_id)) {
        return make_error(ErrorCode::kFormat,
                          "%s: metadata key '%.*s': nested array has unknown element type %u at byte offset %" PRIu64,
                          file.c_str(), key_len, key.data(), inner_type_id, type_offset);
      }
      BORA_RETURN_IF_ERROR(cursor.read_u64(&inner_count, "a nested array count of metadata key ", key));
      BORA_RETURN_IF_ERROR(
          skip_array_elements(cursor, static_cast<GgufType>(inner_type_id), inner_count, depth + 1, file, key));
    }
    return {};
  }
  uint64_t bytes = 0;
  if (!bytes_detail::checked_mul(count, gguf_scalar_bytes(element_type), &bytes) || bytes > cursor.remaining()) {
    return make_error(ErrorCode::kFormat,
                      "%s: metadata key '%.*s': array of %" PRIu64 " %s values runs past the end of the file "
                      "(%" PRIu64 " bytes left after byte offset %" PRIu64 ")",
                      file.c_str(), key_len, key.data(), count, gguf_type_name(element_type), cursor.remaining(),
                      cursor.offset());
  }
  return cursor.skip(bytes, "array elements of metadata key ", key);
}

}  // namespace gguf_detail

class GgufFile {
 public:
  GgufFile(GgufFile&&) noexcept = default;
  GgufFile& operator=(GgufFile&&) noexcept = default;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // Maps the file read-only and parses it; tensor views point into the mapping, which lives as
  // long as this object (moving the object does not move the mapping).
  static Expected<GgufFile> open(const std::string& path, FileAccess access = FileAccess::kMap,
                                 const ReadProgress& progress = {}) {
    Expected<MappedFile> mapped = MappedFile::open(path, access, progress);
    if (!mapped) return mapped.error();
    auto mapping = std::make_unique<MappedFile>(std::move(mapped.value()));
    Expected<GgufFile> parsed = parse(mapping->data(), mapping->size(), path);
    if (!parsed) return parsed.error();
    parsed->mapping_ = std::move(mapping);
    return parsed;
  }

  // Parses bytes the caller keeps alive for the lifetime of the result (tests, in-memory files).
  static Expected<GgufFile> parse(const uint8_t* data, uint64_t size, std::string name) {
    GgufFile file;
    file.name_ = std::move(name);
    file.data_ = data;
    file.file_size_ = size;
    if (data == nullptr && size != 0) {
      return make_error(ErrorCode::kInvalidArgument, "%s: null data with size %" PRIu64, file.name_.c_str(), size);
    }
    BORA_RETURN_IF_ERROR(file.parse_all());
    return file;
  }

  uint32_t version() const { return version_; }
  const std::string& name() const { return name_; }
  uint64_t file_size() const { return file_size_; }
  const uint8_t* data() const { return data_; }  // the whole file's bytes
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // where the tensor data section starts

  const GgufValue* find(std::string_view key) const {
    auto it = key_index_.find(std::string(key));
    return it == key_index_.end() ? nullptr : &values_[it->second];
  }

  Expected<uint64_t> get_uint(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (!gguf_type_is_integer(v->type)) return wrong_type(key, *v, "an integer");
    const gguf_detail::IntegerValue i = gguf_detail::load_integer(v->type, v->raw);
    if (i.negative) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' is %" PRId64 ", expected a non-negative integer",
                        name_.c_str(), static_cast<int>(key.size()), key.data(), i.as_signed);
    }
    return i.as_unsigned;
  }

  Expected<int64_t> get_int(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (!gguf_type_is_integer(v->type)) return wrong_type(key, *v, "an integer");
    const gguf_detail::IntegerValue i = gguf_detail::load_integer(v->type, v->raw);
    if (!i.negative && i.as_unsigned > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' is %" PRIu64 ", too large for a signed 64-bit integer",
                        name_.c_str(), static_cast<int>(key.size()), key.data(), i.as_unsigned);
    }
    return i.as_signed;
  }

  Expected<double> get_float(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type == GgufType::kF32 || v->type == GgufType::kF64) return gguf_detail::load_scalar_as_double(v->type, v->raw);
    if (gguf_type_is_integer(v->type)) {
      const gguf_detail::IntegerValue i = gguf_detail::load_integer(v->type, v->raw);
      return i.negative ? static_cast<double>(i.as_signed) : static_cast<double>(i.as_unsigned);
    }
    return wrong_type(key, *v, "a number");
  }

  Expected<bool> get_bool(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kBool) return wrong_type(key, *v, "bool");
    return v->raw[0] != 0;
  }

  Expected<std::string> get_string(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kString) return wrong_type(key, *v, "string");
    return std::string(v->string_view());
  }

  Expected<std::vector<std::string>> get_string_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kArray || v->array_type != GgufType::kString) return wrong_type(key, *v, "array of string");
    std::vector<std::string> out;
    out.reserve(static_cast<size_t>(v->array_count));  // validated at parse: count * 8 <= raw_bytes
    const uint8_t* p = v->raw;
    for (uint64_t i = 0; i < v->array_count; ++i) {  // lengths were validated when the file was parsed
      const uint64_t length = bytes_detail::load_le_u64(p);
      out.emplace_back(reinterpret_cast<const char*>(p + 8), static_cast<size_t>(length));
      p += 8 + length;
    }
    return out;
  }

  Expected<std::vector<float>> get_f32_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kArray || (v->array_type != GgufType::kF32 && v->array_type != GgufType::kF64)) {
      return wrong_type(key, *v, "array of f32");
    }
    const uint64_t width = gguf_scalar_bytes(v->array_type);
    std::vector<float> out(static_cast<size_t>(v->array_count));
    for (uint64_t i = 0; i < v->array_count; ++i) {
      out[i] = static_cast<float>(gguf_detail::load_scalar_as_double(v->array_type, v->raw + i * width));
    }
    return out;
  }

  Expected<std::vector<int32_t>> get_i32_array(std::string_view key) const {
    const GgufValue* v = find(key);
    if (v == nullptr) return missing(key);
    if (v->type != GgufType::kArray || !gguf_type_is_integer(v->array_type)) {
      return wrong_type(key, *v, "array of integers");
    }
    const uint64_t width = gguf_scalar_bytes(v->array_type);
    std::vector<int32_t> out(static_cast<size_t>(v->array_count));
    for (uint64_t i = 0; i < v->array_count; ++i) {
      const gguf_detail::IntegerValue e = gguf_detail::load_integer(v->array_type, v->raw + i * width);
      const bool fits = e.negative ? e.as_signed >= std::numeric_limits<int32_t>::min()
                                   : e.as_unsigned <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
      if (!fits) {
        return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s': element %" PRIu64 " does not fit in i32",
                          name_.c_str(), static_cast<int>(key.size()), key.data(), i);
      }
      out[i] = static_cast<int32_t>(e.negative ? e.as_signed : static_cast<int64_t>(e.as_unsigned));
    }
    return out;
  }

  const std::vector<std::string>& keys() const { return keys_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }

  const TensorView* find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(std::string(name));
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }

  // A tensor whose bytes and view may be rewritten (the loader regroups rows, quant/row_tiles.hpp):
  // only when the file was read into private memory; null otherwise.
  TensorView* writable_tensor(std::string_view name) {
    auto it = tensor_index_.find(std::string(name));
    if (it == tensor_index_.end() || !mapping_ || mapping_->writable_data() == nullptr) return nullptr;
    return &tensors_[it->second];
  }

 private:
  GgufFile() = default;

  Error missing(std::string_view key) const {
    return make_error(ErrorCode::kMissing, "%s: metadata key '%.*s' is missing", name_.c_str(),
                      static_cast<int>(key.size()), key.data());
  }
  Error wrong_type(std::string_view key, const GgufValue& v, const char* expected) const {
    if (v.type == GgufType::kArray) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' has type array of %s, expected %s", name_.c_str(),
                        static_cast<int>(key.size()), key.data(), gguf_type_name(v.array_type), expected);
    }
    return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' has type %s, expected %s", name_.c_str(),
                      static_cast<int>(key.size()), key.data(), gguf_type_name(v.type), expected);
  }

  Status parse_all() {
    const char* file = name_.c_str();
    gguf_detail::Cursor cursor(data_, file_size_, name_);
    if (file_size_ < 4 || std::memcmp(data_, "GGUF", 4) != 0) {
      return make_error(ErrorCode::kFormat, "%s: not a GGUF file (the first 4 bytes are not \"GGUF\")", file);
    }
    BORA_RETURN_IF_ERROR(cursor.skip(4, "the magic"));
    BORA_RETURN_IF_ERROR(cursor.read_u32(&version_, "the GGUF version"));
    if (version_ == 1) {
      return make_error(ErrorCode::kUnsupported, "%s: GGUF version 1 is not supported (only versions 2 and 3); "
                        "re-convert the model with a current converter", file);
    }
    if (version_ != 2 && version_ != 3) {
      if ((version_ & 0xFFFFu) == 0 && version_ != 0) {
        return make_error(ErrorCode::kUnsupported, "%s: GGUF version field 0x%08x looks big-endian; only "
                          "little-endian GGUF is supported", file, version_);
      }
      return make_error(ErrorCode::kUnsupported, "%s: GGUF version %u is not supported (only versions 2 and 3)",
                        file, version_);
    }
    uint64_t n_tensors = 0, n_kv = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u64(&n_tensors, "the tensor count"));
    BORA_RETURN_IF_ERROR(cursor.read_u64(&n_kv, "the metadata key/value count"));
    // Counts are checked against the bytes that could hold them before anything is reserved.
    if (n_kv > cursor.remaining() / gguf_detail::kMinKvBytes) {
      return make_error(ErrorCode::kFormat, "%s: metadata count %" PRIu64 " is absurd: %" PRIu64
                        " bytes after the header cannot hold that many key/value pairs (or the file is truncated)", file, n_kv, cursor.remaining());
    }
    if (n_tensors > cursor.remaining() / gguf_detail::kMinTensorInfoBytes ||
        n_kv * gguf_detail::kMinKvBytes + n_tensors * gguf_detail::kMinTensorInfoBytes > cursor.remaining()) {
      return make_error(ErrorCode::kFormat, "%s: tensor count %" PRIu64 " is absurd: %" PRIu64
                        " bytes after the header cannot hold that many tensor infos (and %" PRIu64 " metadata entries)",
                        file, n_tensors, cursor.remaining(), n_kv);
    }

    // Reserve at most a modest amount up front, and never more than the file's own size: a count
    // is only trusted as far as entries parse (an entry in memory is larger than on disk).
    const uint64_t kMaxReserve = 4096;
    auto reservable = [&](uint64_t count, size_t entry_bytes) {
      return static_cast<size_t>(std::min<uint64_t>(std::min<uint64_t>(count, kMaxReserve), file_size_ / entry_bytes));
    };
    keys_.reserve(reservable(n_kv, sizeof(std::string)));
    values_.reserve(reservable(n_kv, sizeof(GgufValue)));
    for (uint64_t i = 0; i < n_kv; ++i) BORA_RETURN_IF_ERROR(parse_kv(cursor, i));

    alignment_ = 32;
    if (const GgufValue* a = find("general.alignment")) {
      if (!gguf_type_is_integer(a->type)) {
        return make_error(ErrorCode::kFormat, "%s: metadata key 'general.alignment' has type %s, expected u32", file,
                          gguf_type_name(a->type));
      }
      const gguf_detail::IntegerValue value = gguf_detail::load_integer(a->type, a->raw);
      if (value.negative || value.as_unsigned == 0 || value.as_unsigned > (uint64_t{1} << 30) ||
          (value.as_unsigned & (value.as_unsigned - 1)) != 0) {
        return make_error(ErrorCode::kFormat, "%s: metadata key 'general.alignment' is %" PRId64
                          ", expected a power of two from 1 to 2^30", file,
                          value.negative ? value.as_signed : static_cast<int64_t>(value.as_unsigned));
      }
      alignment_ = static_cast<uint32_t>(value.as_unsigned);
    }

    // Re-check the tensor count against what the metadata left.
    if (n_tensors > cursor.remaining() / gguf_detail::kMinTensorInfoBytes) {
      return make_error(ErrorCode::kFormat, "%s: tensor count %" PRIu64 " is absurd: only %" PRIu64
                        " bytes remain after the metadata at byte offset %" PRIu64 " (or the file is truncated)", file, n_tensors,
                        cursor.remaining(), cursor.offset());
    }
    tensors_.reserve(reservable(n_tensors, sizeof(TensorView)));
    std::vector<uint64_t> offsets;
    offsets.reserve(reservable(n_tensors, sizeof(uint64_t)));
    for (uint64_t i = 0; i < n_tensors; ++i) BORA_RETURN_IF_ERROR(parse_tensor_info(cursor, i, &offsets));

    const uint64_t infos_end = cursor.offset();
    data_offset_ = infos_end + (alignment_ - infos_end % alignment_) % alignment_;  // infos_end <= size < 2^63
    for (size_t i = 0; i < tensors_.size(); ++i) BORA_RETURN_IF_ERROR(place_tensor(tensors_[i], offsets[i]));
    return {};
  }

  Status parse_kv(gguf_detail::Cursor& cursor, uint64_t index) {
    const char* file = name_.c_str();
    const uint64_t entry_offset = cursor.offset();
    std::string_view key;
    char what[96];
    std::snprintf(what, sizeof(what), "the key of metadata entry %" PRIu64, index);
    BORA_RETURN_IF_ERROR(cursor.read_string(&key, what));
    const int key_len = static_cast<int>(key.size());
    if (key_index_.count(std::string(key)) != 0) {
      return make_error(ErrorCode::kFormat, "%s: duplicate metadata key '%.*s' at byte offset %" PRIu64, file, key_len,
                        key.data(), entry_offset);
    }
    uint32_t type_id = 0;
    const uint64_t type_offset = cursor.offset();
    BORA_RETURN_IF_ERROR(cursor.read_u32(&type_id, "the value type of metadata key ", key));
    if (!gguf_type_is_known(type_id)) {
      return make_error(ErrorCode::kFormat, "%s: metadata key '%.*s' has unknown value type %u at byte offset %" PRIu64,
                        file, key_len, key.data(), type_id, type_offset);
    }
    GgufValue value;
    value.type = static_cast<GgufType>(type_id);
    if (value.type == GgufType::kString) {
      std::string_view text;
      BORA_RETURN_IF_ERROR(cursor.read_string(&text, "the string value of metadata key ", key));
      value.raw = reinterpret_cast<const uint8_t*>(text.data());
      value.raw_bytes = text.size();
    } else if (value.type == GgufType::kArray) {
      uint32_t element_type_id = 0;
      const uint64_t element_type_offset = cursor.offset();
      BORA_RETURN_IF_ERROR(cursor.read_u32(&element_type_id, "the array element type of metadata key ", key));
      if (!gguf_type_is_known(element_type_id)) {
        return make_error(ErrorCode::kFormat,
                          "%s: metadata key '%.*s' is an array of unknown element type %u at byte offset %" PRIu64, file,
                          key_len, key.data(), element_type_id, element_type_offset);
      }
      value.array_type = static_cast<GgufType>(element_type_id);
      BORA_RETURN_IF_ERROR(cursor.read_u64(&value.array_count, "the array length of metadata key ", key));
      const uint64_t start = cursor.offset();
      value.raw = cursor.here();
      BORA_RETURN_IF_ERROR(
          gguf_detail::skip_array_elements(cursor, value.array_type, value.array_count, 1, name_, key));
      value.raw_bytes = cursor.offset() - start;
    } else {
      const uint64_t bytes = gguf_scalar_bytes(value.type);
      value.raw = cursor.here();
      value.raw_bytes = bytes;
      BORA_RETURN_IF_ERROR(cursor.skip(bytes, "the value of metadata key ", key));
    }
    key_index_.emplace(std::string(key), values_.size());
    keys_.emplace_back(key);
    values_.push_back(value);
    return {};
  }

  Status parse_tensor_info(gguf_detail::Cursor& cursor, uint64_t index, std::vector<uint64_t>* offsets) {
    const char* file = name_.c_str();
    const uint64_t info_offset = cursor.offset();
    std::string_view name;
    char what[96];
    std::snprintf(what, sizeof(what), "the name of tensor info %" PRIu64, index);
    BORA_RETURN_IF_ERROR(cursor.read_string(&name, what));
    const int name_len = static_cast<int>(name.size());
    if (tensor_index_.count(std::string(name)) != 0) {
      return make_error(ErrorCode::kFormat, "%s: duplicate tensor name '%.*s' (tensor info %" PRIu64
                        " at byte offset %" PRIu64 ")", file, name_len, name.data(), index, info_offset);
    }
    TensorView view;
    view.name = std::string(name);
    uint32_t n_dims = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u32(&n_dims, "the dimension count of tensor ", name));
    if (n_dims > static_cast<uint32_t>(gguf_detail::kMaxDims)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' has %u dimensions (at most %d are supported)", file,
                        name_len, name.data(), n_dims, gguf_detail::kMaxDims);
    }
    view.n_dims = static_cast<int>(n_dims);
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t extent = 0;
      BORA_RETURN_IF_ERROR(cursor.read_u64(&extent, "a dimension of tensor ", name));
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' dimension %u is %" PRIu64 ", too large", file, name_len,
                          name.data(), d, extent);
      }
      view.ne[d] = static_cast<int64_t>(extent);
    }
    uint64_t elements = 0;
    if (!bytes_detail::checked_elements(view.ne, view.n_dims, &elements)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' has an element count that overflows 64 bits", file,
                        name_len, name.data());
    }
    uint32_t ggml_type = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u32(&ggml_type, "the type of tensor ", name));
    if (!weight_type_from_ggml(ggml_type, &view.type)) {
      return make_error(ErrorCode::kUnsupported, "%s: tensor '%.*s' has ggml type %u (%s), which bora does not support",
                        file, name_len, name.data(), ggml_type, ggml_type_name(ggml_type));
    }
    uint64_t row_bytes = 0;
    const WeightTypeInfo info = weight_type_info(view.type);
    if (!weight_row_bytes(view.type, static_cast<uint64_t>(view.ne[0]), &row_bytes)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' of type %s has rows of %" PRId64
                        " values, not a multiple of the block size %u", file, name_len, name.data(), info.name,
                        view.ne[0], info.block_elements);
    }
    const uint64_t rows = view.ne[0] == 0 ? 0 : elements / static_cast<uint64_t>(view.ne[0]);
    if (!bytes_detail::checked_mul(row_bytes, rows, &view.bytes)) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%.*s' byte size overflows 64 bits", file, name_len, name.data());
    }
    uint64_t offset = 0;
    BORA_RETURN_IF_ERROR(cursor.read_u64(&offset, "the data offset of tensor ", name));
    tensor_index_.emplace(view.name, tensors_.size());
    tensors_.push_back(std::move(view));
    offsets->push_back(offset);
    return {};
  }

  Status place_tensor(TensorView& view, uint64_t offset) {
    const char* file = name_.c_str();
    if (offset % alignment_ != 0) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%s' data offset %" PRIu64 " is not a multiple of the alignment %u",
                        file, view.name.c_str(), offset, alignment_);
    }
    uint64_t begin = 0, end = 0;
    if (!bytes_detail::checked_add(data_offset_, offset, &begin) || !bytes_detail::checked_add(begin, view.bytes, &end) ||
        end > file_size_) {
      return make_error(ErrorCode::kFormat, "%s: tensor '%s' data (%" PRIu64 " bytes at offset %" PRIu64
                        " into the data section, which starts at byte offset %" PRIu64 ") lies outside the file "
                        "(size %" PRIu64 ")", file, view.name.c_str(), view.bytes, offset, data_offset_, file_size_);
    }
    view.data = data_ + begin;
    return {};
  }

  std::string name_;
  const uint8_t* data_ = nullptr;
  uint64_t file_size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::string> keys_;
  std::vector<GgufValue> values_;
  std::unordered_map<std::string, size_t> key_index_;
  std::vector<TensorView> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
  std::unique_ptr<MappedFile> mapping_;  // null for parse(); owns the bytes for open()
};

}  // namespace bora

#endif  // BORA_IO_GGUF_HPP
