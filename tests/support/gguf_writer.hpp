// Why this file exists: the reader tests need GGUF (and safetensors) files that are small, exactly
// known, and deliberately broken in one place, and model tests need real files rearranged or broken on
// disk; this builds them in memory (GGUF with the library's own writer) and puts them in scratch folders.
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

#include "bora/base/bytes.hpp"
#include "bora/io/gguf.hpp"  // only for the copying helpers at the end
#include "bora/io/gguf_writer.hpp"

namespace bora_test {

// The library's writer (bora/io/gguf_writer.hpp) with what only reader tests want: default data sizes
// even for unknown types, declared counts that differ from the real ones, a data section filled with a
// byte pattern, and the layout of the last file built.
using ByteWriter = bora::GgufByteWriter;

// GGUF value type ids, spelled out here rather than taken from bora::GgufType so the tests check the
// reader against the format's numbers, not against the reader's own enum.
enum GgufTypeId : uint32_t {
  kGgufU8 = 0, kGgufI8 = 1, kGgufU16 = 2, kGgufI16 = 3, kGgufU32 = 4, kGgufI32 = 5, kGgufF32 = 6,
  kGgufBool = 7, kGgufString = 8, kGgufArray = 9, kGgufU64 = 10, kGgufI64 = 11, kGgufF64 = 12,
};

class GgufWriter : public bora::GgufWriter {
 public:
  bool override_counts = false;  // write n_tensors / n_kv below instead of the real counts
  uint64_t n_tensors_override = 0;
  uint64_t n_kv_override = 0;

  // Data bytes default to what the type and shape need (32 when that is unknown); `offset` < 0 means
  // "next aligned slot".
  void add_tensor(const std::string& name, const std::vector<uint64_t>& ne, uint32_t ggml_type,
                  int64_t offset = -1, int64_t data_bytes = -1) {
    const uint64_t bytes = data_bytes < 0 ? natural_bytes(ne, ggml_type) : static_cast<uint64_t>(data_bytes);
    bora::GgufWriter::add_tensor(name, ne, ggml_type, bytes, offset < 0 ? kNextSlot : offset);
  }

  // Layout: header, metadata, tensor infos, padding to `alignment`, data (a byte pattern, unpadded).
  std::vector<uint8_t> build() {
    const Layout plan = layout();
    metadata_end = plan.metadata_end;
    infos_end = plan.infos_end;
    data_start = plan.head.size();
    ByteWriter w;
    w.raw(plan.head.data(), plan.head.size());
    if (override_counts) {
      bora::bytes_detail::store_le(w.bytes().data() + 8, n_tensors_override, 8);
      bora::bytes_detail::store_le(w.bytes().data() + 16, n_kv_override, 8);
    }
    for (uint64_t i = 0; i < plan.data_bytes; ++i) w.u8(static_cast<uint8_t>(i * 7 + 1));
    return w.bytes();
  }

  // Filled in by build().
  size_t metadata_end = 0;
  size_t infos_end = 0;
  size_t data_start = 0;

  static uint64_t natural_bytes(const std::vector<uint64_t>& ne, uint32_t ggml_type) {
    uint64_t bytes = 0;
    return tensor_bytes(ne, ggml_type, &bytes) ? bytes : 32;
  }
};

// The tiny llama architecture's sizes: dim 64, 2 layers, 4 heads, 2 kv heads, ffn 128.
inline void add_tiny_llama_sizes(GgufWriter& w) {
  w.add_string("general.architecture", "llama");
  w.add_u32("general.alignment", 32);
  w.add_u32("llama.embedding_length", 64);
  w.add_u32("llama.block_count", 2);
  w.add_u32("llama.feed_forward_length", 128);
  w.add_u32("llama.attention.head_count", 4);
  w.add_u32("llama.attention.head_count_kv", 2);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
}

// A minimal llama-architecture GGUF that config_from_gguf accepts: the tiny sizes and vocab 32
// (from tokenizer.ggml.tokens unless vocab_size is added).
inline void add_tiny_llama_metadata(GgufWriter& w) {
  add_tiny_llama_sizes(w);
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
// writer (and tools/make_tiny_models.py) lays them out: the library writer's own build.
inline std::vector<uint8_t> build_gguf_with_tensor_bytes(GgufWriter& w, const std::vector<GgufTensorBytes>& tensors) {
  for (const GgufTensorBytes& t : tensors)
    w.add_tensor(t.name, t.ne, t.ggml_type, -1, static_cast<int64_t>(t.data.size()));
  const bora::GgufWriter& library_writer = w;
  return library_writer.build([&](size_t index, uint8_t* out, uint64_t bytes) {
    if (bytes != 0) std::memcpy(out, tensors[index].data.data(), static_cast<size_t>(bytes));
  });
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
