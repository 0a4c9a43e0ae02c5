// Why this file exists: ModelFiles is what the model code opens; these tests open every shipped
// model in all three formats, build sharded folders on the fly, check that views survive moves,
// and check the errors for incomplete or hostile folders.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <vector>

#include "../support/error_text.hpp"
#include "../support/gguf_writer.hpp"
#include "bora/io/model_files.hpp"
#include "../support/golden.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

namespace fs = std::filesystem;

using bora_test::data_path;

using bora_test::contains;

// A fresh folder under the system temp dir, removed with its contents at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    std::error_code ec;
    path_ = (fs::temp_directory_path(ec) /
             ("bora_io_test_" + std::to_string(stamp) + "_" + std::to_string(counter++))).string();
    fs::create_directories(path_, ec);
    REQUIRE_FALSE(ec);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::string& text) const { write(name, text.data(), text.size()); }
  void write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    write(name, reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }

 private:
  void write(const std::string& name, const char* data, size_t size) const {
    std::ofstream out(file(name), std::ios::binary);
    out.write(data, static_cast<std::streamsize>(size));
    REQUIRE(out.good());
  }
  std::string path_;
};

std::string read_mapped_text(const std::string& path) {
  auto mapped = bora::MappedFile::open(path);
  REQUIRE(mapped.has_value());
  return std::string(reinterpret_cast<const char*>(mapped->data()), static_cast<size_t>(mapped->size()));
}

const char* dtype_of(bora::WeightType type) {
  switch (type) {
    case bora::WeightType::kF32: return "F32";
    case bora::WeightType::kF16: return "F16";
    default: return "BF16";
  }
}

// Copies tensors [begin, end) of `source` into a safetensors entry list (shape back to torch order).
std::vector<bora_test::SafetensorsEntry> entries_of(const bora::SafetensorsFile& source, size_t begin, size_t end) {
  std::vector<bora_test::SafetensorsEntry> entries;
  for (size_t i = begin; i < end; ++i) {
    const bora::TensorView& t = source.tensors()[i];
    bora_test::SafetensorsEntry e;
    e.name = t.name;
    e.dtype = dtype_of(t.type);
    for (int d = t.n_dims - 1; d >= 0; --d) e.shape.push_back(static_cast<uint64_t>(t.ne[d]));
    e.data.assign(t.data, t.data + t.bytes);
    entries.push_back(e);
  }
  return entries;
}

std::string weight_map_json(const std::vector<std::pair<std::string, std::string>>& map) {
  std::string json = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
  for (size_t i = 0; i < map.size(); ++i) {
    json += (i ? "," : "") + std::string("\"") + map[i].first + "\":\"" + map[i].second + "\"";
  }
  return json + "}}";
}

// tiny-mistral's HF tensors split over two shards with an index, in `dir`.
void write_sharded_hf(const TempDir& dir, const bora::SafetensorsFile& source,
                      std::vector<std::pair<std::string, std::string>>* map) {
  dir.write("config.json", read_mapped_text(data_path("tiny-mistral/hf/config.json")));
  const size_t half = source.tensors().size() / 2;
  dir.write("model-00001-of-00002.safetensors", bora_test::build_safetensors(entries_of(source, 0, half)));
  dir.write("model-00002-of-00002.safetensors",
            bora_test::build_safetensors(entries_of(source, half, source.tensors().size())));
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    map->emplace_back(source.tensors()[i].name,
                      i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
  }
}

}  // namespace

TEST_CASE("model files: every shipped model opens in its format with the right config") {
  struct Case {
    const char* path;
    bora::ModelFormat format;
    size_t tensors;
    int64_t experts;
    const char* some_tensor;
  };
  const Case cases[] = {
      {"tiny-mistral/native", bora::ModelFormat::kConsolidated, 21, 0, "layers.1.feed_forward.w2.weight"},
      {"tiny-mistral/hf", bora::ModelFormat::kHuggingFace, 21, 0, "model.layers.1.mlp.down_proj.weight"},
      {"tiny-mistral/tiny-mistral-Q6_K.gguf", bora::ModelFormat::kGguf, 21, 0, "blk.1.ffn_down.weight"},
      {"tiny-mixtral/native/", bora::ModelFormat::kConsolidated, 65, 8, "layers.1.feed_forward.experts.7.w2.weight"},
      {"tiny-mixtral/hf/config.json", bora::ModelFormat::kHuggingFace, 65, 8,
       "model.layers.1.block_sparse_moe.experts.7.w2.weight"},
      {"tiny-mixtral/tiny-mixtral-Q4_K.gguf", bora::ModelFormat::kGguf, 23, 8, "blk.1.ffn_down_exps.weight"},
      {"demo-mistral/demo-mistral-Q4_0.gguf", bora::ModelFormat::kGguf, 39, 0, "blk.3.ffn_down.weight"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.path);
    auto model = bora::ModelFiles::open(data_path(c.path));
    REQUIRE_MESSAGE(model.has_value(), (model ? "" : model.error().message()));
    CHECK(model->format() == c.format);
    CHECK(model->config().n_layers == (c.tensors == 39 ? 4 : 2));
    CHECK(model->config().dim == 256);
    CHECK(model->config().n_experts == c.experts);
    CHECK(model->tensor_names().size() == c.tensors);
    const bora::TensorView* t = model->find_tensor(c.some_tensor);
    REQUIRE(t != nullptr);
    CHECK(t->valid());
    CHECK(model->find_tensor("no.such.tensor") == nullptr);
    CHECK((model->gguf() != nullptr) == (c.format == bora::ModelFormat::kGguf));
    CHECK(model->config().rope_pairing ==
          (c.format == bora::ModelFormat::kHuggingFace ? bora::RopePairing::kHalfSplit : bora::RopePairing::kAdjacent));
    for (const std::string& name : model->tensor_names()) CHECK(model->find_tensor(name) != nullptr);
  }
  auto gguf = bora::ModelFiles::open(data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"));
  REQUIRE(gguf.has_value());
  CHECK(gguf->total_bytes() == 1480352);
  CHECK(gguf->gguf()->get_string("tokenizer.ggml.model").value() == "llama");
  auto hf = bora::ModelFiles::open(data_path("tiny-mixtral/hf"));
  REQUIRE(hf.has_value());
  CHECK(hf->total_bytes() == 7489520);
  CHECK(hf->path() == data_path("tiny-mixtral/hf"));
}

TEST_CASE("model files: moving a ModelFiles keeps every view and its bytes where they were") {
  const char* paths[] = {"tiny-mistral/hf", "tiny-mistral/tiny-mistral-F32.gguf", "tiny-mixtral/native"};
  for (const char* path : paths) {
    CAPTURE(path);
    auto opened = bora::ModelFiles::open(data_path(path));
    REQUIRE(opened.has_value());
    std::vector<const bora::TensorView*> views;
    std::vector<uint8_t> first_bytes;
    for (const std::string& name : opened->tensor_names()) {
      views.push_back(opened->find_tensor(name));
      first_bytes.push_back(views.back()->data[0]);
    }
    const bora::GgufFile* gguf_before = opened->gguf();
    bora::ModelFiles moved = std::move(opened.value());
    bora::ModelFiles moved_again = std::move(moved);
    CHECK(moved_again.gguf() == gguf_before);
    const std::vector<std::string> names = moved_again.tensor_names();
    REQUIRE(names.size() == views.size());
    for (size_t i = 0; i < names.size(); ++i) {
      CHECK(moved_again.find_tensor(names[i]) == views[i]);
      CHECK(views[i]->data[0] == first_bytes[i]);
      CHECK(views[i]->name == names[i]);
    }
  }
}

TEST_CASE("model files: a sharded Hugging Face folder") {
  auto source = bora::SafetensorsFile::open(data_path("tiny-mistral/hf/model.safetensors"));
  REQUIRE(source.has_value());
  TempDir dir;
  std::vector<std::pair<std::string, std::string>> map;
  write_sharded_hf(dir, *source, &map);

  SUBCASE("opens, finds every tensor with the original bytes") {
    dir.write("model.safetensors.index.json", weight_map_json(map));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_MESSAGE(model.has_value(), (model ? "" : model.error().message()));
    CHECK(model->format() == bora::ModelFormat::kHuggingFace);
    CHECK(model->safetensors_files().size() == 2);
    CHECK(model->tensor_names().size() == 21);
    CHECK(model->config().sliding_window == 16);
    for (const bora::TensorView& original : source->tensors()) {
      CAPTURE(original.name);
      const bora::TensorView* t = model->find_tensor(original.name);
      REQUIRE(t != nullptr);
      CHECK(t->type == original.type);
      CHECK(t->ne[0] == original.ne[0]);
      CHECK(t->ne[1] == original.ne[1]);
      REQUIRE(t->bytes == original.bytes);
      CHECK(std::equal(t->data, t->data + t->bytes, original.data));
    }
  }
  SUBCASE("a shard name that leaves the folder") {
    map[3].second = "../model-00001-of-00002.safetensors";
    dir.write("model.safetensors.index.json", weight_map_json(map));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "model.safetensors.index.json"));
    CHECK(contains(model.error(), "not a plain file name"));
  }
  SUBCASE("a missing shard file") {
    map[0].second = "model-00003-of-00002.safetensors";
    dir.write("model.safetensors.index.json", weight_map_json(map));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(model.error().code() == bora::ErrorCode::kIo);
    CHECK(contains(model.error(), "model-00003-of-00002.safetensors"));
  }
  SUBCASE("a tensor listed under the wrong shard") {
    map[0].second = "model-00002-of-00002.safetensors";
    dir.write("model.safetensors.index.json", weight_map_json(map));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(model.error().code() == bora::ErrorCode::kMissing);
    CHECK(contains(model.error(), "tensor 'model.embed_tokens.weight' is listed in shard "
                                  "'model-00002-of-00002.safetensors', which does not contain it"));
  }
  SUBCASE("a tensor in two shards") {
    dir.write("model-00002-of-00002.safetensors", bora_test::build_safetensors(entries_of(*source, 0, 21)));
    dir.write("model.safetensors.index.json", weight_map_json(map));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "also appears in another shard"));
  }
  SUBCASE("an index without weight_map, or malformed") {
    dir.write("model.safetensors.index.json", "{\"metadata\": {}}");
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "'weight_map' is missing"));
    dir.write("model.safetensors.index.json", "{\"weight_map\": {\"a\": 7}}");
    auto numeric = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(numeric.has_value());
    CHECK(contains(numeric.error(), "weight_map entry 'a' is not a file name string"));
    dir.write("model.safetensors.index.json", "{\"weight_map\": {");
    auto broken = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(broken.has_value());
    CHECK(contains(broken.error(), "malformed JSON"));
  }
}

TEST_CASE("model files: a consolidated folder with several consolidated.NN shards") {
  auto source = bora::SafetensorsFile::open(data_path("tiny-mixtral/native/consolidated.safetensors"));
  REQUIRE(source.has_value());
  TempDir dir;
  dir.write("params.json", read_mapped_text(data_path("tiny-mixtral/native/params.json")));
  dir.write("consolidated.00.safetensors", bora_test::build_safetensors(entries_of(*source, 0, 30)));
  dir.write("consolidated.01.safetensors", bora_test::build_safetensors(entries_of(*source, 30, 65)));
  dir.write("notes.txt", "not a shard");
  auto model = bora::ModelFiles::open(dir.path());
  REQUIRE_MESSAGE(model.has_value(), (model ? "" : model.error().message()));
  CHECK(model->format() == bora::ModelFormat::kConsolidated);
  CHECK(model->safetensors_files().size() == 2);
  CHECK(model->tensor_names().size() == 65);
  CHECK(model->tensor_names().front() == source->tensors().front().name);
  CHECK(model->config().n_experts == 8);
  for (const bora::TensorView& original : source->tensors()) {
    const bora::TensorView* t = model->find_tensor(original.name);
    REQUIRE(t != nullptr);
    CHECK(std::equal(t->data, t->data + t->bytes, original.data));
  }
}

TEST_CASE("model files: incomplete or broken folders") {
  SUBCASE("no such path") {
    auto model = bora::ModelFiles::open(data_path("no/such/model.gguf"));
    REQUIRE_FALSE(model.has_value());
    CHECK(model.error().code() == bora::ErrorCode::kIo);
    CHECK(contains(model.error(), "no such file or folder"));
  }
  SUBCASE("an empty folder") {
    TempDir dir;
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "not a model folder"));
  }
  SUBCASE("config.json without weights") {
    TempDir dir;
    dir.write("config.json", read_mapped_text(data_path("tiny-mistral/hf/config.json")));
    dir.write("pytorch_model.bin", "x");
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(model.error().code() == bora::ErrorCode::kMissing);
    CHECK(contains(model.error(), "neither model.safetensors nor model.safetensors.index.json"));
  }
  SUBCASE("params.json without consolidated safetensors") {
    TempDir dir;
    dir.write("params.json", read_mapped_text(data_path("tiny-mistral/native/params.json")));
    dir.write("consolidated.00.pth", "x");
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "no consolidated*.safetensors"));
  }
  SUBCASE("a malformed config.json names the file") {
    TempDir dir;
    dir.write("config.json", "{\"hidden_size\": 256,");
    dir.write("model.safetensors", bora_test::build_safetensors({}));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "config.json: malformed JSON"));
  }
  SUBCASE("a broken shard names the shard") {
    TempDir dir;
    dir.write("params.json", read_mapped_text(data_path("tiny-mistral/native/params.json")));
    dir.write("consolidated.safetensors", std::string("\x10\0\0\0\0\0\0\0{}", 10));
    auto model = bora::ModelFiles::open(dir.path());
    REQUIRE_FALSE(model.has_value());
    CHECK(contains(model.error(), "consolidated.safetensors: header length 16 runs past the end"));
  }
  SUBCASE("a lone .safetensors file or a non-GGUF file") {
    auto st = bora::ModelFiles::open(data_path("tiny-mistral/hf/model.safetensors"));
    REQUIRE_FALSE(st.has_value());
    CHECK(contains(st.error(), "open the folder"));
    auto json = bora::ModelFiles::open(data_path("llamacpp_vs_golden.json"));
    REQUIRE_FALSE(json.has_value());
    CHECK(contains(json.error(), "not a GGUF file"));
  }
}
