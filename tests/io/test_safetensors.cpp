// Why this file exists: checks the safetensors reader on the shipped HF and consolidated files
// (names, dtypes, reversed shapes, offsets) and on broken headers, which must fail with an error
// that says what is wrong.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "../support/error_text.hpp"
#include "../support/gguf_writer.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/safetensors.hpp"
#include "../support/golden.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

using bora_test::data_path;

bora::Expected<bora::SafetensorsFile> parse_copy(const std::vector<uint8_t>& bytes, const char* name = "bad.safetensors") {
  static std::vector<uint8_t> keep;  // exact-size copy: overreads are heap overflows under ASan
  keep = bytes;
  return bora::SafetensorsFile::parse(keep.data(), keep.size(), name);
}

using bora_test::contains;

std::vector<uint8_t> zeros(size_t n) { return std::vector<uint8_t>(n, 0); }

}  // namespace

TEST_CASE("safetensors: tiny-mistral HF and consolidated files") {
  auto hf = bora::SafetensorsFile::open(data_path("tiny-mistral/hf/model.safetensors"));
  REQUIRE_MESSAGE(hf.has_value(), (hf ? "" : hf.error().message()));
  CHECK(hf->tensors().size() == 21);
  CHECK(hf->data_offset() == 8 + 2216);
  const bora::TensorView* embed = hf->find_tensor("model.embed_tokens.weight");
  REQUIRE(embed != nullptr);
  CHECK(embed->type == bora::WeightType::kBF16);
  CHECK(embed->n_dims == 2);
  CHECK(embed->ne[0] == 256);  // torch [512, 256] reversed
  CHECK(embed->ne[1] == 512);
  CHECK(embed->bytes == 512 * 256 * 2);
  CHECK(embed->data == hf->data() + hf->data_offset());
  const bora::TensorView* k = hf->find_tensor("model.layers.0.self_attn.k_proj.weight");
  REQUIRE(k != nullptr);
  CHECK(k->ne[0] == 256);
  CHECK(k->ne[1] == 64);
  CHECK(k->data - hf->data() - static_cast<int64_t>(hf->data_offset()) == 393728);
  const bora::TensorView* down = hf->find_tensor("model.layers.1.mlp.down_proj.weight");
  REQUIRE(down != nullptr);
  CHECK(down->ne[0] == 512);
  CHECK(down->ne[1] == 256);
  const bora::TensorView* norm = hf->find_tensor("model.norm.weight");
  REQUIRE(norm != nullptr);
  CHECK(norm->n_dims == 1);
  CHECK(norm->ne[0] == 256);
  CHECK(norm->ne[1] == 1);
  CHECK(hf->find_tensor("lm_head.weight") != nullptr);
  CHECK(hf->find_tensor("layers.0.attention.wq.weight") == nullptr);

  auto native = bora::SafetensorsFile::open(data_path("tiny-mistral/native/consolidated.safetensors"));
  REQUIRE(native.has_value());
  CHECK(native->tensors().size() == 21);
  const bora::TensorView* wv = native->find_tensor("layers.1.attention.wv.weight");
  REQUIRE(wv != nullptr);
  CHECK(wv->ne[0] == 256);
  CHECK(wv->ne[1] == 64);
  // v_proj is not permuted by the HF conversion: the same bytes in both files.
  const bora::TensorView* v_proj = hf->find_tensor("model.layers.1.self_attn.v_proj.weight");
  REQUIRE(v_proj != nullptr);
  REQUIRE(v_proj->bytes == wv->bytes);
  CHECK(std::equal(wv->data, wv->data + wv->bytes, v_proj->data));
  // q_proj is permuted: different bytes, same multiset of rows.
  const bora::TensorView* wq = native->find_tensor("layers.0.attention.wq.weight");
  const bora::TensorView* q_proj = hf->find_tensor("model.layers.0.self_attn.q_proj.weight");
  REQUIRE(wq != nullptr);
  REQUIRE(q_proj != nullptr);
  CHECK_FALSE(std::equal(wq->data, wq->data + wq->bytes, q_proj->data));
}

TEST_CASE("safetensors: tiny-mixtral experts") {
  auto native = bora::SafetensorsFile::open(data_path("tiny-mixtral/native/consolidated.safetensors"));
  REQUIRE(native.has_value());
  CHECK(native->tensors().size() == 65);  // 3 + 2 * (6 + 1 + 8 * 3)
  const bora::TensorView* gate = native->find_tensor("layers.1.feed_forward.gate.weight");
  REQUIRE(gate != nullptr);
  CHECK(gate->ne[0] == 256);
  CHECK(gate->ne[1] == 8);
  CHECK(native->find_tensor("layers.0.feed_forward.experts.7.w2.weight") != nullptr);
  auto hf = bora::SafetensorsFile::open(data_path("tiny-mixtral/hf/model.safetensors"));
  REQUIRE(hf.has_value());
  CHECK(hf->tensors().size() == 65);
  CHECK(hf->find_tensor("model.layers.0.block_sparse_moe.experts.3.w1.weight") != nullptr);
  CHECK(hf->find_tensor("model.layers.1.block_sparse_moe.gate.weight") != nullptr);
}

TEST_CASE("safetensors: hand-built files with every supported dtype and metadata") {
  std::vector<bora_test::SafetensorsEntry> entries = {
      {"a", "F32", {2, 3}, zeros(24), ""},
      {"b", "F16", {4}, zeros(8), ""},
      {"c", "BF16", {2, 1, 3, 2}, zeros(24), ""},
      {"scalar", "F32", {}, zeros(4), ""},
      {"empty", "BF16", {0, 5}, {}, ""},
  };
  const std::vector<uint8_t> bytes = bora_test::build_safetensors(entries, "{\"format\":\"pt\"}");
  auto file = parse_copy(bytes, "ok.safetensors");
  REQUIRE_MESSAGE(file.has_value(), (file ? "" : file.error().message()));
  CHECK(file->tensors().size() == 5);
  CHECK(file->find_tensor("__metadata__") == nullptr);
  const bora::TensorView* c = file->find_tensor("c");
  REQUIRE(c != nullptr);
  CHECK(c->type == bora::WeightType::kBF16);
  CHECK(c->n_dims == 4);
  CHECK(c->ne[0] == 2);
  CHECK(c->ne[1] == 3);
  CHECK(c->ne[2] == 1);
  CHECK(c->ne[3] == 2);
  CHECK(file->find_tensor("b")->type == bora::WeightType::kF16);
  CHECK(file->find_tensor("scalar")->n_dims == 0);
  CHECK(file->find_tensor("scalar")->elements() == 1);
  CHECK(file->find_tensor("empty")->bytes == 0);
}

TEST_CASE("safetensors: broken headers name the problem") {
  SUBCASE("too small") {
    auto r = parse_copy({1, 2, 3});
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "bad.safetensors"));
    CHECK(contains(r.error(), "too small"));
  }
  SUBCASE("header length past the end") {
    auto r = parse_copy(bora_test::build_safetensors_raw("{}", 0, 1000));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "header length 1000 runs past the end"));
    auto huge = parse_copy(bora_test::build_safetensors_raw("{}", 0, ~uint64_t{0}));
    REQUIRE_FALSE(huge.has_value());
    CHECK(contains(huge.error(), "runs past the end"));
  }
  SUBCASE("header length not sane") {
    auto r = parse_copy(bora_test::build_safetensors_raw("{}", 0, 1));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "header length 1 is not sane"));
  }
  SUBCASE("malformed JSON") {
    const std::string header = "{\"a\": {\"dtype\": \"F32\", ";
    auto r = parse_copy(bora_test::build_safetensors_raw(header, 8, header.size()));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "malformed JSON"));
  }
  SUBCASE("not an object") {
    const std::string header = "[1, 2]";
    auto r = parse_copy(bora_test::build_safetensors_raw(header, 0, header.size()));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "header is not a JSON object"));
  }
  SUBCASE("unsupported dtype") {
    auto r = parse_copy(bora_test::build_safetensors({{"model.embed_tokens.weight", "I64", {2}, zeros(16), ""}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == bora::ErrorCode::kUnsupported);
    CHECK(contains(r.error(), "tensor 'model.embed_tokens.weight' has dtype I64"));
  }
  SUBCASE("dtype missing or not a string") {
    auto r = parse_copy(bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": 5, \"shape\": [1], \"data_offsets\": [0, 4]}"}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w': 'dtype' is missing or not a string"));
  }
  SUBCASE("description not an object") {
    auto r = parse_copy(bora_test::build_safetensors({{"w", "", {}, {}, "[1]"}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w': its description is not a JSON object"));
  }
  SUBCASE("too many dimensions") {
    auto r = parse_copy(bora_test::build_safetensors({{"w", "F32", {1, 1, 1, 1, 1}, zeros(4), ""}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w' has 5 dimensions"));
  }
  SUBCASE("negative or non-integer shape") {
    auto r = parse_copy(bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}"}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w': shape entry 0 is not a non-negative integer"));
    auto r2 = parse_copy(bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [2, 1.5], \"data_offsets\": [0, 4]}"}}));
    REQUIRE_FALSE(r2.has_value());
    CHECK(contains(r2.error(), "shape entry 1"));
  }
  SUBCASE("shape overflow") {
    auto r = parse_copy(bora_test::build_safetensors(
        {{"w", "", {}, {},
          "{\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}"}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w': its shape overflows"));
  }
  SUBCASE("offsets out of range") {
    std::vector<uint8_t> bytes = bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}"}});
    bytes.resize(bytes.size() + 8);  // only 8 data bytes
    auto r = parse_copy(bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w': data_offsets [0, 16] lie outside the 8-byte data section"));
  }
  SUBCASE("offsets reversed") {
    std::vector<uint8_t> bytes = bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [16, 0]}"}});
    bytes.resize(bytes.size() + 32);
    auto r = parse_copy(bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "data_offsets [16, 0] lie outside"));
  }
  SUBCASE("offsets disagree with the shape") {
    std::vector<uint8_t> bytes = bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [0, 16]}"}});
    bytes.resize(bytes.size() + 16);
    auto r = parse_copy(bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "hold 16 bytes, but a BF16 tensor of that shape needs 8"));
  }
  SUBCASE("offsets missing, wrong length or negative") {
    const char* descriptions[] = {
        "{\"dtype\": \"F32\", \"shape\": [1]}",
        "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}",
        "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": \"0-4\"}",
    };
    for (const char* d : descriptions) {
      CAPTURE(d);
      auto r = parse_copy(bora_test::build_safetensors({{"w", "", {}, {}, d}}));
      REQUIRE_FALSE(r.has_value());
      CHECK(contains(r.error(), "'data_offsets' is missing or not [begin, end]"));
    }
    auto r = parse_copy(bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}"}}));
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "data_offsets[0] is not a non-negative integer"));
  }
  SUBCASE("duplicate tensor") {
    std::vector<uint8_t> bytes = bora_test::build_safetensors(
        {{"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}"},
         {"w", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}"}});
    bytes.resize(bytes.size() + 4);
    auto r = parse_copy(bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'w' appears twice"));
  }
  SUBCASE("overlapping tensors are refused (the format requires the data section tiled exactly)") {
    std::vector<uint8_t> bytes = bora_test::build_safetensors(
        {{"a", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}"},
         {"b", "", {}, {}, "{\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}"}});
    bytes.resize(bytes.size() + 8);
    auto r = parse_copy(bytes);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'b' starts at data offset 4"));
  }
}

TEST_CASE("safetensors: a real file cut anywhere fails cleanly") {
  auto mapped = bora::MappedFile::open(data_path("tiny-mistral/native/consolidated.safetensors"));
  REQUIRE(mapped.has_value());
  const std::vector<uint8_t> full(mapped->data(), mapped->data() + mapped->size());
  for (size_t cut = 0; cut < full.size(); cut += (cut < 2100 ? 1 : 65521)) {
    CAPTURE(cut);
    auto r = parse_copy(std::vector<uint8_t>(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(cut)));
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == bora::ErrorCode::kFormat);
  }
  CHECK(parse_copy(full).has_value());
}

TEST_CASE("safetensors: tensors must tile the data section, with no overlap and no hole") {
  auto with_header = [](const std::string& tensors, size_t data_bytes) {
    std::string header = "{" + tensors + "}";
    while ((8 + header.size()) % 8 != 0) header += ' ';
    return parse_copy(bora_test::build_safetensors_raw(header, data_bytes, header.size()));
  };
  SUBCASE("exactly tiled, in any header order: accepted") {
    auto r = with_header("\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 16);
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message()));
  }
  SUBCASE("two tensors on the same bytes") {
    auto r = with_header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code() == bora::ErrorCode::kFormat);
    CHECK(contains(r.error(), "overlapping data"));
  }
  SUBCASE("partly overlapping") {
    auto r = with_header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}", 12);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "tensor 'b' starts at data offset 4"));
    CHECK(contains(r.error(), "overlapping data"));
  }
  SUBCASE("a hole between tensors") {
    auto r = with_header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}", 20);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "a hole in the data section"));
  }
  SUBCASE("bytes left over after the last tensor") {
    auto r = with_header("\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 12);
    REQUIRE_FALSE(r.has_value());
    CHECK(contains(r.error(), "cover 8 of the 12-byte data section"));
  }
}
