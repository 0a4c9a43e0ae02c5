// Why this file exists: the reader tests need GGUF (and safetensors) files that are small, exactly
// known, and deliberately broken in one place; this builds them byte by byte in memory.
#ifndef BORA_TESTS_SUPPORT_GGUF_WRITER_HPP
#define BORA_TESTS_SUPPORT_GGUF_WRITER_HPP

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "bora/io/gguf.hpp"  // only for the copying helpers at the end
#include "bora/quant/weight_type.hpp"

namespace bora_test {

// Little-endian byte sink.
class ByteWriter {
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
  void str(const std::string& s) {  // GGUF string: u64 length + bytes
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
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> bytes_;
};

// GGUF value type ids (as in bora::GgufType), repeated so the writer does not depend on the reader.
enum GgufTypeId : uint32_t {
  kGgufU8 = 0, kGgufI8 = 1, kGgufU16 = 2, kGgufI16 = 3, kGgufU32 = 4, kGgufI32 = 5, kGgufF32 = 6,
  kGgufBool = 7, kGgufString = 8, kGgufArray = 9, kGgufU64 = 10, kGgufI64 = 11, kGgufF64 = 12,
};

// Builds a GGUF file. Values are stored pre-encoded, so tests can write any (also invalid) bytes.
class GgufWriter {
 public:
  uint32_t version = 3;
  uint32_t alignment = 32;       // used for layout; add a general.alignment key to declare it
  bool override_counts = false;  // write n_tensors / n_kv below instead of the real counts
  uint64_t n_tensors_override = 0;
  uint64_t n_kv_override = 0;
  char magic[4] = {'G', 'G', 'U', 'F'};

  // ---- metadata --------------------------------------------------------------------------------
  // type id + already-encoded value bytes (for hostile tests).
  void add_raw(const std::string& key, uint32_t type_id, const std::vector<uint8_t>& value) {
    ByteWriter w;
    w.str(key);
    w.u32(type_id);
    w.raw(value.data(), value.size());
    append_kv(w);
  }
  void add_u8(const std::string& k, uint8_t v) { scalar(k, kGgufU8, v, 1); }
  void add_i8(const std::string& k, int8_t v) { scalar(k, kGgufI8, static_cast<uint8_t>(v), 1); }
  void add_u16(const std::string& k, uint16_t v) { scalar(k, kGgufU16, v, 2); }
  void add_i16(const std::string& k, int16_t v) { scalar(k, kGgufI16, static_cast<uint16_t>(v), 2); }
  void add_u32(const std::string& k, uint32_t v) { scalar(k, kGgufU32, v, 4); }
  void add_i32(const std::string& k, int32_t v) { scalar(k, kGgufI32, static_cast<uint32_t>(v), 4); }
  void add_u64(const std::string& k, uint64_t v) { scalar(k, kGgufU64, v, 8); }
  void add_i64(const std::string& k, int64_t v) { scalar(k, kGgufI64, static_cast<uint64_t>(v), 8); }
  void add_bool(const std::string& k, bool v) { scalar(k, kGgufBool, v ? 1 : 0, 1); }
  void add_f32(const std::string& k, float v) {
    ByteWriter w;
    w.f32(v);
    add_raw(k, kGgufF32, w.bytes());
  }
  void add_f64(const std::string& k, double v) {
    ByteWriter w;
    w.f64(v);
    add_raw(k, kGgufF64, w.bytes());
  }
  void add_string(const std::string& k, const std::string& v) {
    ByteWriter w;
    w.str(v);
    add_raw(k, kGgufString, w.bytes());
  }
  void add_string_array(const std::string& k, const std::vector<std::string>& values) {
    ByteWriter w;
    w.u32(kGgufString);
    w.u64(values.size());
    for (const std::string& s : values) w.str(s);
    add_raw(k, kGgufArray, w.bytes());
  }
  void add_f32_array(const std::string& k, const std::vector<float>& values) {
    ByteWriter w;
    w.u32(kGgufF32);
    w.u64(values.size());
    for (float f : values) w.f32(f);
    add_raw(k, kGgufArray, w.bytes());
  }
  void add_i32_array(const std::string& k, const std::vector<int32_t>& values) {
    ByteWriter w;
    w.u32(kGgufI32);
    w.u64(values.size());
    for (int32_t v : values) w.u32(static_cast<uint32_t>(v));
    add_raw(k, kGgufArray, w.bytes());
  }
  size_t kv_count() const { return n_kv_; }

  // ---- tensors ---------------------------------------------------------------------------------
  // Data bytes default to what the type and shape need; `offset` < 0 means "next aligned slot".
  void add_tensor(const std::string& name, const std::vector<uint64_t>& ne, uint32_t ggml_type,
                  int64_t offset = -1, int64_t data_bytes = -1) {
    Tensor t{name, ne, ggml_type, offset, data_bytes};
    if (t.data_bytes < 0) t.data_bytes = static_cast<int64_t>(natural_bytes(ne, ggml_type));
    tensors_.push_back(t);
  }

  // Layout: header, metadata, tensor infos, padding to `alignment`, data (a byte pattern).
  std::vector<uint8_t> build() {
    ByteWriter w;
    w.raw(magic, 4);
    w.u32(version);
    w.u64(override_counts ? n_tensors_override : tensors_.size());
    w.u64(override_counts ? n_kv_override : n_kv_);
    w.raw(kv_bytes_.data(), kv_bytes_.size());
    metadata_end = w.size();
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      uint64_t offset = t.offset >= 0 ? static_cast<uint64_t>(t.offset) : next;
      offsets.push_back(offset);
      const uint64_t end = offset + static_cast<uint64_t>(t.data_bytes);
      if (end > next) next = (end + alignment - 1) / alignment * alignment;
    }
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      w.str(t.name);
      w.u32(static_cast<uint32_t>(t.ne.size()));
      for (uint64_t e : t.ne) w.u64(e);
      w.u32(t.ggml_type);
      w.u64(offsets[i]);
    }
    infos_end = w.size();
    w.pad_to(alignment);
    data_start = w.size();
    uint64_t data_size = 0;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const uint64_t end = offsets[i] + static_cast<uint64_t>(tensors_[i].data_bytes);
      if (tensors_[i].offset < 0 && end > data_size) data_size = end;
    }
    for (uint64_t i = 0; i < data_size; ++i) w.u8(static_cast<uint8_t>(i * 7 + 1));
    return w.bytes();
  }

  // Filled in by build().
  size_t metadata_end = 0;
  size_t infos_end = 0;
  size_t data_start = 0;

  static uint64_t natural_bytes(const std::vector<uint64_t>& ne, uint32_t ggml_type) {
    bora::WeightType type;
    if (!bora::weight_type_from_ggml(ggml_type, &type) || ne.empty()) return 32;
    uint64_t row = 0;
    if (!bora::weight_row_bytes(type, ne[0], &row)) return 32;
    uint64_t total = row;
    for (size_t i = 1; i < ne.size(); ++i) total *= ne[i];
    return total;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    uint32_t ggml_type;
    int64_t offset;
    int64_t data_bytes;
  };
  void scalar(const std::string& k, uint32_t type, uint64_t v, int n) {
    ByteWriter w;
    for (int i = 0; i < n; ++i) w.u8(static_cast<uint8_t>(v >> (8 * i)));
    add_raw(k, type, w.bytes());
  }
  void append_kv(ByteWriter& w) {
    kv_bytes_.insert(kv_bytes_.end(), w.bytes().begin(), w.bytes().end());
    ++n_kv_;
  }
  std::vector<uint8_t> kv_bytes_;
  size_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

// A minimal llama-architecture GGUF that config_from_gguf accepts: dim 64, 2 layers, 4 heads,
// 2 kv heads, ffn 128, vocab 32 (from tokenizer.ggml.tokens unless vocab_size is added).
inline void add_tiny_llama_metadata(GgufWriter& w) {
  w.add_string("general.architecture", "llama");
  w.add_u32("general.alignment", 32);
  w.add_u32("llama.embedding_length", 64);
  w.add_u32("llama.block_count", 2);
  w.add_u32("llama.feed_forward_length", 128);
  w.add_u32("llama.attention.head_count", 4);
  w.add_u32("llama.attention.head_count_kv", 2);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_f32("llama.rope.freq_base", 1e6f);
  w.add_u32("llama.context_length", 4096);
  std::vector<std::string> tokens;
  for (int i = 0; i < 32; ++i) tokens.push_back("t" + std::to_string(i));
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
}

// ---- safetensors ---------------------------------------------------------------------------------
// One tensor of a hand-built safetensors file; `json` (when non-empty) replaces the generated
// description so tests can write broken entries.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> data;
  std::string json;
};

// Header JSON padded with spaces to 8 bytes, as the reference writer does; returns the whole file.
inline std::vector<uint8_t> build_safetensors(const std::vector<SafetensorsEntry>& entries,
                                              const std::string& metadata_json = "") {
  std::string header = "{";
  if (!metadata_json.empty()) header += "\"__metadata__\":" + metadata_json;
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    if (header.size() > 1) header += ",";
    header += "\"" + e.name + "\":";
    if (!e.json.empty()) {
      header += e.json;
      continue;
    }
    header += "{\"dtype\":\"" + e.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < e.shape.size(); ++i) header += (i ? "," : "") + std::to_string(e.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + e.data.size()) + "]}";
    offset += e.data.size();
  }
  header += "}";
  while ((8 + header.size()) % 8 != 0) header += ' ';
  ByteWriter w;
  w.u64(header.size());
  w.raw(header.data(), header.size());
  for (const SafetensorsEntry& e : entries) {
    if (e.json.empty()) w.raw(e.data.data(), e.data.size());
  }
  return w.bytes();
}

// Raw safetensors file from a header string and a data section (for broken headers).
inline std::vector<uint8_t> build_safetensors_raw(const std::string& header, size_t data_bytes,
                                                  uint64_t declared_length) {
  ByteWriter w;
  w.u64(declared_length);
  w.raw(header.data(), header.size());
  for (size_t i = 0; i < data_bytes; ++i) w.u8(static_cast<uint8_t>(i));
  return w.bytes();
}

// ---- files with real tensor bytes -----------------------------------------------------------------
// GgufWriter::build() fills the data section with a byte pattern, which is all a reader test needs;
// model tests need real weights, often taken from a shipped file and rearranged or broken.

// One tensor with its bytes; `ne` innermost first, as GGUF stores it.
struct GgufTensorBytes {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t ggml_type = 0;
  std::vector<uint8_t> data;
};

// Adds `tensors` to `w` (which must hold no tensors yet) and returns the file with their bytes, each
// starting at the next multiple of w.alignment in the data section and zero padded, as llama.cpp's
// writer (and tools/make_tiny_models.py) lays them out.
inline std::vector<uint8_t> build_gguf_with_tensor_bytes(GgufWriter& w, const std::vector<GgufTensorBytes>& tensors) {
  for (const GgufTensorBytes& t : tensors)
    w.add_tensor(t.name, t.ne, t.ggml_type, -1, static_cast<int64_t>(t.data.size()));
  std::vector<uint8_t> file = w.build();
  file.resize(w.data_start);  // drop the pattern; build() placed tensor i exactly where the loop below does
  auto pad = [&] {
    while ((file.size() - w.data_start) % w.alignment != 0) file.push_back(0);
  };
  for (const GgufTensorBytes& t : tensors) {
    pad();
    file.insert(file.end(), t.data.begin(), t.data.end());
  }
  pad();
  return file;
}

// ---- copying a real GGUF file ---------------------------------------------------------------------
// These read the source with bora's own reader, so only model-level tests (which trust the reader,
// tested on its own with the writer above) should use them.

// The encoded bytes of one metadata value, as GgufWriter::add_raw takes them.
inline std::vector<uint8_t> encoded_gguf_value(const bora::GgufValue& value) {
  ByteWriter w;
  if (value.type == bora::GgufType::kString) w.u64(value.raw_bytes);
  if (value.type == bora::GgufType::kArray) {
    w.u32(static_cast<uint32_t>(value.array_type));
    w.u64(value.array_count);
  }
  w.raw(value.raw, static_cast<size_t>(value.raw_bytes));
  return w.bytes();
}

// Copies the metadata of `source` into `w` in file order, leaving out the keys in `leave_out`
// (a test re-adds those with the values it wants).
inline void copy_gguf_metadata(const bora::GgufFile& source, GgufWriter& w,
                               const std::vector<std::string>& leave_out = {}) {
  for (const std::string& key : source.keys()) {
    bool skip = false;
    for (const std::string& left : leave_out) skip = skip || left == key;
    if (skip) continue;
    const bora::GgufValue* value = source.find(key);
    w.add_raw(key, static_cast<uint32_t>(value->type), encoded_gguf_value(*value));
  }
}

// The tensors of `source` with copies of their bytes, in file order.
inline std::vector<GgufTensorBytes> gguf_tensor_bytes(const bora::GgufFile& source) {
  std::vector<GgufTensorBytes> tensors;
  for (const bora::TensorView& view : source.tensors()) {
    GgufTensorBytes t;
    t.name = view.name;
    for (int d = 0; d < view.n_dims; ++d) t.ne.push_back(static_cast<uint64_t>(view.ne[d]));
    t.ggml_type = static_cast<uint32_t>(view.type);  // WeightType values are ggml's type ids
    t.data.assign(view.data, view.data + view.bytes);
    tensors.push_back(std::move(t));
  }
  return tensors;
}

// ---- putting built files on disk ------------------------------------------------------------------
// Loaders open paths, so model tests write what they built into a fresh folder under the system temp
// folder, removed with its contents when the ScratchDir goes out of scope.
class ScratchDir {
 public:
  ScratchDir() {
    namespace fs = std::filesystem;
    static std::atomic<unsigned> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    std::error_code ec;
    const fs::path base = fs::temp_directory_path(ec);
    path_ = ((ec ? fs::path(".") : base) /
             ("bora_test_" + std::to_string(stamp) + "_" + std::to_string(counter++))).string();
    fs::create_directories(path_, ec);
    ok_ = !ec;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  bool ok() const { return ok_; }  // false when the folder could not be created
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

  // Writes `size` bytes to `name` (folders in it are created); returns the path, or "" on failure.
  std::string write(const std::string& name, const void* data, size_t size) const {
    const std::string target = file(name);
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(target).parent_path(), ec);
    std::FILE* out = std::fopen(target.c_str(), "wb");
    if (out == nullptr) return "";
    const bool written = size == 0 || std::fwrite(data, 1, size, out) == size;
    return std::fclose(out) == 0 && written ? target : "";
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    return write(name, bytes.data(), bytes.size());
  }
  std::string write(const std::string& name, const std::string& text) const {
    return write(name, text.data(), text.size());
  }

 private:
  std::string path_;
  bool ok_ = false;
};

// The whole of a (small) file, or an empty vector when it cannot be read.
inline std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::vector<uint8_t> bytes;
  std::FILE* in = std::fopen(path.c_str(), "rb");
  if (in == nullptr) return bytes;
  uint8_t buffer[1 << 16];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof(buffer), in)) > 0) bytes.insert(bytes.end(), buffer, buffer + got);
  std::fclose(in);
  return bytes;
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_GGUF_WRITER_HPP
