// Why this file exists: a GGUF library writes GGUF as well as reading it. Programs build models in
// memory (benchmark models with random weights, models reassembled from other files) and the reader's
// tests build small, exactly known and deliberately broken files; this is the one writer they share.
#ifndef BORA_IO_GGUF_WRITER_HPP
#define BORA_IO_GGUF_WRITER_HPP

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bora/base/bytes.hpp"
#include "bora/io/gguf.hpp"
#include "bora/quant/weight_type.hpp"

namespace bora {

// Appends little-endian values, GGUF strings (u64 length + bytes) and padding to a byte vector.
class GgufByteWriter {
 public:
  void u8(uint8_t v) { bytes_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void f32(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    u32(bits);
  }
  void f64(double v) {
    uint64_t bits;
    std::memcpy(&bits, &v, 8);
    u64(bits);
  }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  void pad_to(size_t alignment, uint8_t fill = 0) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(fill);
  }
  size_t size() const { return bytes_.size(); }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  void put(uint64_t v, int n_bytes) {
    uint8_t encoded[8] = {};
    bytes_detail::store_le(encoded, v, n_bytes);
    raw(encoded, static_cast<size_t>(n_bytes));
  }
  std::vector<uint8_t> bytes_;
};

// Builds a GGUF file (version 3 unless `version` says 2, whose layout is the same): metadata in the
// order added, then tensor infos, then the data section.
class GgufWriter {
 public:
  uint32_t version = 3;
  // The data section's alignment. A value other than GGUF's default of 32 must also be declared with
  // add_u32("general.alignment", ...): the writer lays out with this number and does not add the key.
  uint32_t alignment = 32;

  // ---- metadata ----------------------------------------------------------------------------------
  void add_u8(const std::string& key, uint8_t v) { add_scalar(key, GgufType::kU8, v, 1); }
  void add_i8(const std::string& key, int8_t v) { add_scalar(key, GgufType::kI8, static_cast<uint8_t>(v), 1); }
  void add_u16(const std::string& key, uint16_t v) { add_scalar(key, GgufType::kU16, v, 2); }
  void add_i16(const std::string& key, int16_t v) { add_scalar(key, GgufType::kI16, static_cast<uint16_t>(v), 2); }
  void add_u32(const std::string& key, uint32_t v) { add_scalar(key, GgufType::kU32, v, 4); }
  void add_i32(const std::string& key, int32_t v) { add_scalar(key, GgufType::kI32, static_cast<uint32_t>(v), 4); }
  void add_u64(const std::string& key, uint64_t v) { add_scalar(key, GgufType::kU64, v, 8); }
  void add_i64(const std::string& key, int64_t v) { add_scalar(key, GgufType::kI64, static_cast<uint64_t>(v), 8); }
  void add_bool(const std::string& key, bool v) { add_scalar(key, GgufType::kBool, v ? 1 : 0, 1); }
  void add_f32(const std::string& key, float v) {
    GgufByteWriter w;
    w.f32(v);
    add_raw(key, static_cast<uint32_t>(GgufType::kF32), w.bytes());
  }
  void add_f64(const std::string& key, double v) {
    GgufByteWriter w;
    w.f64(v);
    add_raw(key, static_cast<uint32_t>(GgufType::kF64), w.bytes());
  }
  void add_string(const std::string& key, const std::string& v) {
    GgufByteWriter w;
    w.str(v);
    add_raw(key, static_cast<uint32_t>(GgufType::kString), w.bytes());
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& values) {
    GgufByteWriter w;
    array_header(w, GgufType::kString, values.size());
    for (const std::string& s : values) w.str(s);
    add_raw(key, static_cast<uint32_t>(GgufType::kArray), w.bytes());
  }
  void add_f32_array(const std::string& key, const std::vector<float>& values) {
    GgufByteWriter w;
    array_header(w, GgufType::kF32, values.size());
    for (float f : values) w.f32(f);
    add_raw(key, static_cast<uint32_t>(GgufType::kArray), w.bytes());
  }
  void add_i32_array(const std::string& key, const std::vector<int32_t>& values) {
    GgufByteWriter w;
    array_header(w, GgufType::kI32, values.size());
    for (int32_t v : values) w.u32(static_cast<uint32_t>(v));
    add_raw(key, static_cast<uint32_t>(GgufType::kArray), w.bytes());
  }
  // A value given as its type id and encoded bytes: values the helpers above do not cover (nested
  // arrays, values copied from another file), and for readers' tests, invalid ones.
  void add_raw(const std::string& key, uint32_t type_id, const std::vector<uint8_t>& encoded_value) {
    GgufByteWriter w;
    w.str(key);
    w.u32(type_id);
    w.raw(encoded_value.data(), encoded_value.size());
    metadata_.insert(metadata_.end(), w.bytes().begin(), w.bytes().end());
    ++kv_count_;
  }
  size_t kv_count() const { return kv_count_; }

  // ---- tensors -----------------------------------------------------------------------------------
  static constexpr int64_t kNextSlot = -1;

  // The data bytes of a tensor of shape `ne` (innermost first) and ggml type id `ggml_type`; false
  // for unknown types, rows that are not whole blocks, or sizes that do not fit 64 bits.
  static bool tensor_bytes(const std::vector<uint64_t>& ne, uint32_t ggml_type, uint64_t* out) {
    WeightType type;
    uint64_t total = 0;
    if (ne.empty() || !weight_type_from_ggml(ggml_type, &type) || !weight_row_bytes(type, ne[0], &total)) return false;
    for (size_t i = 1; i < ne.size(); ++i) {
      if (!bytes_detail::checked_mul(total, ne[i], &total)) return false;
    }
    *out = total;
    return true;
  }

  // Adds a tensor info whose data is `data_bytes` at `offset` in the data section. kNextSlot places it
  // at the first multiple of `alignment` after every tensor added before. A given offset is written as
  // is and takes no room of its own (tensors sharing bytes; for readers' tests, offsets a reader must
  // reject), though tensors placed after it start past its end.
  void add_tensor(const std::string& name, const std::vector<uint64_t>& ne, uint32_t ggml_type, uint64_t data_bytes,
                  int64_t offset = kNextSlot) {
    tensors_.push_back(Tensor{name, ne, ggml_type, offset, data_bytes});
  }
  size_t tensor_count() const { return tensors_.size(); }

  // ---- the file ----------------------------------------------------------------------------------
  struct Layout {
    std::vector<uint8_t> head;       // header, metadata, tensor infos and padding: the data section follows
    std::vector<uint64_t> offsets;   // of each tensor's data in the data section, in the order added
    uint64_t data_bytes = 0;         // end of the last tensor placed at kNextSlot
    size_t metadata_end = 0;         // where the tensor infos begin
    size_t infos_end = 0;            // where the padding before the data section begins
  };

  // Everything but the data, and where the data goes: a program filling gigabytes of tensor data can
  // allocate the file itself and write each tensor in place.
  Layout layout() const {
    Layout out;
    GgufByteWriter w;
    w.raw("GGUF", 4);
    w.u32(version);
    w.u64(tensors_.size());
    w.u64(kv_count_);
    w.raw(metadata_.data(), metadata_.size());
    out.metadata_end = w.size();
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      const uint64_t offset = t.offset == kNextSlot ? next : static_cast<uint64_t>(t.offset);
      out.offsets.push_back(offset);
      const uint64_t end = offset + t.data_bytes;
      if (end > next) next = align_up(end);
      if (t.offset == kNextSlot && end > out.data_bytes) out.data_bytes = end;
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      w.str(t.name);
      w.u32(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t e : t.ne) w.u64(e);
      w.u32(t.ggml_type);
      w.u64(out.offsets[i]);
    }
    out.infos_end = w.size();
    w.pad_to(alignment);
    out.head = std::move(w.bytes());
    return out;
  }

  // The whole file, the data section zeroed and padded to `alignment`; `fill(index, out, data_bytes)`,
  // when given, writes the data of each tensor placed at kNextSlot.
  std::vector<uint8_t> build(const std::function<void(size_t, uint8_t*, uint64_t)>& fill = {}) const {
    Layout plan = layout();
    std::vector<uint8_t> file = std::move(plan.head);
    const size_t data_start = file.size();
    file.resize(data_start + static_cast<size_t>(align_up(plan.data_bytes)), 0);
    if (fill) {
      for (size_t i = 0; i < tensors_.size(); ++i) {
        if (tensors_[i].offset == kNextSlot) fill(i, file.data() + data_start + plan.offsets[i], tensors_[i].data_bytes);
      }
    }
    return file;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t ggml_type;
    int64_t offset;
    uint64_t data_bytes;
  };
  uint64_t align_up(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
  static void array_header(GgufByteWriter& w, GgufType element_type, size_t count) {
    w.u32(static_cast<uint32_t>(element_type));
    w.u64(count);
  }
  void add_scalar(const std::string& key, GgufType type, uint64_t v, int n_bytes) {
    uint8_t encoded[8] = {};
    bytes_detail::store_le(encoded, v, n_bytes);
    add_raw(key, static_cast<uint32_t>(type), std::vector<uint8_t>(encoded, encoded + n_bytes));
  }

  std::vector<uint8_t> metadata_;
  size_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace bora

#endif  // BORA_IO_GGUF_WRITER_HPP
