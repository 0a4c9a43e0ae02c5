// Why this file exists: checks that the GGUF reader sees in the shipped test models exactly what
// their generator wrote (metadata, names, types, shapes, data offsets), and reads every metadata
// value type correctly from hand-built files.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "../support/gguf_writer.hpp"
#include "bora/io/gguf.hpp"
#include "bora/io/safetensors.hpp"
#include "../support/golden.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

using bora_test::data_path;

float bf16_to_f32(const uint8_t* p) {
  const uint32_t bits = (static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float f16_to_f32(const uint8_t* p) {
  const uint16_t h = static_cast<uint16_t>(p[0] | p[1] << 8);
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF, bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exponent = 127 - 15 + 1;
      while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        --exponent;
      }
      bits = sign | exponent << 23 | (mantissa & 0x3FF) << 13;
    }
  } else if (exponent == 31) {
    bits = sign | 0x7F800000 | mantissa << 13;
  } else {
    bits = sign | (exponent + 127 - 15) << 23 | mantissa << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float f32_at(const uint8_t* p) {
  float f;
  std::memcpy(&f, p, 4);
  return f;
}

struct QuantFile {
  const char* file;
  bora::WeightType matrix_type;
};

}  // namespace

TEST_CASE("gguf: every tiny-mistral file has the layout its generator wrote") {
  const QuantFile files[] = {
      {"tiny-mistral/tiny-mistral-F32.gguf", bora::WeightType::kF32},
      {"tiny-mistral/tiny-mistral-BF16.gguf", bora::WeightType::kBF16},
      {"tiny-mistral/tiny-mistral-Q8_0.gguf", bora::WeightType::kQ8_0},
      {"tiny-mistral/tiny-mistral-Q4_0.gguf", bora::WeightType::kQ4_0},
      {"tiny-mistral/tiny-mistral-Q4_K.gguf", bora::WeightType::kQ4_K},
      {"tiny-mistral/tiny-mistral-Q5_K.gguf", bora::WeightType::kQ5_K},
      {"tiny-mistral/tiny-mistral-Q6_K.gguf", bora::WeightType::kQ6_K},
  };
  for (const QuantFile& q : files) {
    CAPTURE(q.file);
    auto gguf = bora::GgufFile::open(data_path(q.file));
    REQUIRE_MESSAGE(gguf.has_value(), (gguf ? "" : gguf.error().message()));
    CHECK(gguf->version() == 3);
    CHECK(gguf->alignment() == 32);
    CHECK(gguf->keys().size() == 27);
    CHECK(gguf->tensors().size() == 21);
    CHECK(gguf->get_string("general.architecture").value() == "llama");
    CHECK(gguf->get_string("general.name").value() == "tiny-mistral");
    CHECK(gguf->get_uint("llama.embedding_length").value() == 256);
    CHECK(gguf->get_uint("llama.block_count").value() == 2);
    CHECK(gguf->get_uint("llama.attention.sliding_window").value() == 16);
    CHECK(gguf->get_float("llama.rope.freq_base").value() == doctest::Approx(10000.0));
    CHECK(gguf->get_bool("tokenizer.ggml.add_bos_token").value() == true);
    CHECK(gguf->get_bool("tokenizer.ggml.add_eos_token").value() == false);

    const bora::TensorView* q_proj = gguf->find_tensor("blk.0.attn_q.weight");
    REQUIRE(q_proj != nullptr);
    CHECK(q_proj->type == q.matrix_type);
    CHECK(q_proj->n_dims == 2);
    CHECK(q_proj->ne[0] == 256);
    CHECK(q_proj->ne[1] == 256);
    const bora::TensorView* k_proj = gguf->find_tensor("blk.1.attn_k.weight");
    REQUIRE(k_proj != nullptr);
    CHECK(k_proj->ne[0] == 256);
    CHECK(k_proj->ne[1] == 64);
    const bora::TensorView* down = gguf->find_tensor("blk.0.ffn_down.weight");
    REQUIRE(down != nullptr);
    CHECK(down->ne[0] == 512);
    CHECK(down->ne[1] == 256);
    const bora::TensorView* norm = gguf->find_tensor("output_norm.weight");
    REQUIRE(norm != nullptr);
    CHECK(norm->type == bora::WeightType::kF32);
    CHECK(norm->n_dims == 1);
    CHECK(norm->bytes == 256 * 4);
    CHECK(gguf->find_tensor("blk.2.attn_q.weight") == nullptr);

    // Every view lies inside the file, aligned, and the last one ends exactly at the end.
    uint64_t furthest_end = 0;
    for (const bora::TensorView& t : gguf->tensors()) {
      CHECK(t.valid());
      uint64_t row_bytes = 0;
      REQUIRE(bora::weight_row_bytes(t.type, static_cast<uint64_t>(t.ne[0]), &row_bytes));
      CHECK(t.bytes == row_bytes * static_cast<uint64_t>(t.rows()));
      const uint64_t offset = static_cast<uint64_t>(t.data - gguf->data());
      CHECK(offset >= gguf->data_offset());
      CHECK((offset - gguf->data_offset()) % 32 == 0);
      const uint64_t end = offset + t.bytes;
      if (end > furthest_end) furthest_end = end;
    }
    CHECK(gguf->tensors().front().name == "token_embd.weight");
    CHECK(furthest_end == gguf->file_size());
  }
}

TEST_CASE("gguf: the Q4_K_M file mixes types as llama.cpp's Q4_K_M does") {
  auto gguf = bora::GgufFile::open(data_path("tiny-mistral/tiny-mistral-Q4_K_M.gguf"));
  REQUIRE(gguf.has_value());
  CHECK(gguf->get_uint("general.file_type").value() == 15);
  const char* q4k[] = {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_output.weight",
                       "blk.1.ffn_gate.weight", "blk.1.ffn_up.weight"};
  const char* q6k[] = {"blk.0.attn_v.weight", "blk.1.ffn_down.weight", "output.weight"};
  for (const char* name : q4k) {
    CAPTURE(name);
    REQUIRE(gguf->find_tensor(name) != nullptr);
    CHECK(gguf->find_tensor(name)->type == bora::WeightType::kQ4_K);
  }
  for (const char* name : q6k) {
    CAPTURE(name);
    REQUIRE(gguf->find_tensor(name) != nullptr);
    CHECK(gguf->find_tensor(name)->type == bora::WeightType::kQ6_K);
  }
  CHECK(gguf->find_tensor("blk.1.attn_norm.weight")->type == bora::WeightType::kF32);
  // Offsets as recorded when the file was written (data section at byte 12960).
  CHECK(gguf->data_offset() == 12960);
  CHECK(gguf->find_tensor("blk.0.attn_norm.weight")->data - gguf->find_tensor("token_embd.weight")->data == 73728);
  CHECK(gguf->find_tensor("output.weight")->data - gguf->find_tensor("token_embd.weight")->data == 781568);
}

TEST_CASE("gguf: tiny-mixtral files hold stacked experts and an F32 router") {
  const QuantFile files[] = {
      {"tiny-mixtral/tiny-mixtral-F16.gguf", bora::WeightType::kF16},
      {"tiny-mixtral/tiny-mixtral-Q8_0.gguf", bora::WeightType::kQ8_0},
      {"tiny-mixtral/tiny-mixtral-Q4_K.gguf", bora::WeightType::kQ4_K},
  };
  for (const QuantFile& q : files) {
    CAPTURE(q.file);
    auto gguf = bora::GgufFile::open(data_path(q.file));
    REQUIRE_MESSAGE(gguf.has_value(), (gguf ? "" : gguf.error().message()));
    CHECK(gguf->keys().size() == 28);
    CHECK(gguf->tensors().size() == 23);
    CHECK(gguf->get_uint("llama.expert_count").value() == 8);
    CHECK(gguf->get_uint("llama.expert_used_count").value() == 2);
    CHECK(gguf->find("llama.attention.sliding_window") == nullptr);
    const bora::TensorView* router = gguf->find_tensor("blk.1.ffn_gate_inp.weight");
    REQUIRE(router != nullptr);
    CHECK(router->type == bora::WeightType::kF32);
    CHECK(router->ne[0] == 256);
    CHECK(router->ne[1] == 8);
    const char* stacked[] = {"blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight", "blk.1.ffn_down_exps.weight"};
    for (const char* name : stacked) {
      CAPTURE(name);
      const bora::TensorView* t = gguf->find_tensor(name);
      REQUIRE(t != nullptr);
      CHECK(t->type == q.matrix_type);
      CHECK(t->n_dims == 3);
      CHECK(t->ne[0] == 256);
      CHECK(t->ne[1] == 256);
      CHECK(t->ne[2] == 8);
      CHECK(t->rows() == 256 * 8);
    }
  }
}

TEST_CASE("gguf: tokenizer metadata arrays of the demo model") {
  auto gguf = bora::GgufFile::open(data_path("demo-mistral/demo-mistral-Q4_0.gguf"));
  REQUIRE(gguf.has_value());
  auto tokens = gguf->get_string_array("tokenizer.ggml.tokens");
  REQUIRE(tokens.has_value());
  REQUIRE(tokens->size() == 32000);
  CHECK((*tokens)[0] == "<unk>");
  CHECK((*tokens)[1] == "<s>");
  CHECK((*tokens)[2] == "</s>");
  CHECK((*tokens)[3] == "<0x00>");
  CHECK((*tokens)[258] == "<0xFF>");
  auto scores = gguf->get_f32_array("tokenizer.ggml.scores");
  REQUIRE(scores.has_value());
  CHECK(scores->size() == 32000);
  auto types = gguf->get_i32_array("tokenizer.ggml.token_type");
  REQUIRE(types.has_value());
  REQUIRE(types->size() == 32000);
  CHECK((*types)[0] == 2);
  CHECK((*types)[1] == 3);
  CHECK((*types)[3] == 6);
  CHECK((*types)[300] == 1);
  CHECK(gguf->get_string("tokenizer.ggml.model").value() == "llama");
  const bora::GgufValue* v = gguf->find("tokenizer.ggml.tokens");
  REQUIRE(v != nullptr);
  CHECK(v->type == bora::GgufType::kArray);
  CHECK(v->array_type == bora::GgufType::kString);
  CHECK(v->array_count == 32000);
  CHECK(gguf->find_tensor("token_embd.weight")->type == bora::WeightType::kQ4_0);
  CHECK(gguf->find_tensor("token_embd.weight")->ne[1] == 32000);
}

TEST_CASE("gguf: tensor bytes are the same numbers as the consolidated safetensors") {
  // The generator rounded all weights to values exact in bf16 and f16, so F32 / F16 GGUF bytes and
  // the BF16 consolidated file must agree value for value: a check on every data offset.
  struct Pair {
    const char* gguf;
    const char* safetensors;
    bora::WeightType type;
  };
  const Pair pairs[] = {
      {"tiny-mistral/tiny-mistral-F32.gguf", "tiny-mistral/native/consolidated.safetensors", bora::WeightType::kF32},
      {"tiny-mixtral/tiny-mixtral-F16.gguf", "tiny-mixtral/native/consolidated.safetensors", bora::WeightType::kF16},
  };
  for (const Pair& p : pairs) {
    CAPTURE(p.gguf);
    auto gguf = bora::GgufFile::open(data_path(p.gguf));
    auto st = bora::SafetensorsFile::open(data_path(p.safetensors));
    REQUIRE(gguf.has_value());
    REQUIRE(st.has_value());
    const char* names[][2] = {{"token_embd.weight", "tok_embeddings.weight"},
                              {"blk.1.attn_v.weight", "layers.1.attention.wv.weight"},
                              {"blk.0.attn_q.weight", "layers.0.attention.wq.weight"},
                              {"output.weight", "output.weight"},
                              {"output_norm.weight", "norm.weight"}};
    for (const auto& n : names) {
      CAPTURE(n[0]);
      const bora::TensorView* a = gguf->find_tensor(n[0]);
      const bora::TensorView* b = st->find_tensor(n[1]);
      REQUIRE(a != nullptr);
      REQUIRE(b != nullptr);
      REQUIRE(a->elements() == b->elements());
      CHECK(a->ne[0] == b->ne[0]);
      CHECK(a->ne[1] == b->ne[1]);
      const bool norm = a->n_dims == 1;
      int64_t mismatches = 0;
      for (int64_t i = 0; i < a->elements(); ++i) {
        const float expected = bf16_to_f32(b->data + 2 * i);
        const float got = (norm || p.type == bora::WeightType::kF32) ? f32_at(a->data + 4 * i) : f16_to_f32(a->data + 2 * i);
        if (got != expected) ++mismatches;
      }
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("gguf: every metadata value type reads back") {
  bora_test::GgufWriter w;
  w.add_u8("u8", 200);
  w.add_i8("i8", -100);
  w.add_u16("u16", 60000);
  w.add_i16("i16", -30000);
  w.add_u32("u32", 4000000000u);
  w.add_i32("i32", -2000000000);
  w.add_u64("u64", 18000000000000000000ull);
  w.add_i64("i64", -9000000000000000000ll);
  w.add_f32("f32", 0.25f);
  w.add_f64("f64", -1.5e300);
  w.add_bool("bool", true);
  w.add_string("string", "h\xc3\xa9llo");
  w.add_string("empty", "");
  w.add_string_array("strings", {"a", "", "ccc"});
  w.add_f32_array("floats", {1.0f, -2.5f});
  w.add_i32_array("ints", {-1, 7, 2147483647});
  {  // an array of arrays of u8: [[1,2],[]]
    bora_test::ByteWriter v;
    v.u32(bora_test::kGgufArray);
    v.u64(2);
    v.u32(bora_test::kGgufU8);
    v.u64(2);
    v.u8(1);
    v.u8(2);
    v.u32(bora_test::kGgufU8);
    v.u64(0);
    w.add_raw("nested", bora_test::kGgufArray, v.bytes());
  }
  {  // u16 array, for get_i32_array's widening
    bora_test::ByteWriter v;
    v.u32(bora_test::kGgufU16);
    v.u64(2);
    v.u16(65535);
    v.u16(3);
    w.add_raw("u16s", bora_test::kGgufArray, v.bytes());
  }
  w.add_tensor("weight", {64, 2}, 0);
  const std::vector<uint8_t> bytes = w.build();
  auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "types.gguf");
  REQUIRE_MESSAGE(gguf.has_value(), (gguf ? "" : gguf.error().message()));
  CHECK(gguf->keys().size() == 18);
  CHECK(gguf->keys()[0] == "u8");

  CHECK(gguf->get_uint("u8").value() == 200);
  CHECK(gguf->get_int("i8").value() == -100);
  CHECK(gguf->get_uint("u16").value() == 60000);
  CHECK(gguf->get_int("i16").value() == -30000);
  CHECK(gguf->get_uint("u32").value() == 4000000000u);
  CHECK(gguf->get_int("u32").value() == 4000000000ll);
  CHECK(gguf->get_int("i32").value() == -2000000000);
  CHECK(gguf->get_uint("u64").value() == 18000000000000000000ull);
  CHECK(gguf->get_int("i64").value() == -9000000000000000000ll);
  CHECK(gguf->get_float("f32").value() == 0.25);
  CHECK(gguf->get_float("f64").value() == -1.5e300);
  CHECK(gguf->get_float("i16").value() == -30000.0);  // integers convert to float
  CHECK(gguf->get_bool("bool").value() == true);
  CHECK(gguf->get_string("string").value() == "h\xc3\xa9llo");
  CHECK(gguf->get_string("empty").value().empty());
  CHECK(gguf->get_string_array("strings").value() == std::vector<std::string>{"a", "", "ccc"});
  CHECK(gguf->get_f32_array("floats").value() == std::vector<float>{1.0f, -2.5f});
  CHECK(gguf->get_i32_array("ints").value() == std::vector<int32_t>{-1, 7, 2147483647});
  CHECK(gguf->get_i32_array("u16s").value() == std::vector<int32_t>{65535, 3});

  const bora::GgufValue* nested = gguf->find("nested");
  REQUIRE(nested != nullptr);
  CHECK(nested->type == bora::GgufType::kArray);
  CHECK(nested->array_type == bora::GgufType::kArray);
  CHECK(nested->array_count == 2);
  CHECK(nested->raw_bytes == 12 + 2 + 12);
  const bora::GgufValue* s = gguf->find("string");
  REQUIRE(s != nullptr);
  CHECK(s->type == bora::GgufType::kString);
  CHECK(s->string_view() == "h\xc3\xa9llo");
  CHECK(gguf->find("absent") == nullptr);

  const bora::TensorView* t = gguf->find_tensor("weight");
  REQUIRE(t != nullptr);
  CHECK(t->data == bytes.data() + w.data_start);
  CHECK(t->bytes == 64 * 2 * 4);
}

TEST_CASE("gguf: typed getters name the file, the key and both types") {
  bora_test::GgufWriter w;
  w.add_string("name", "x");
  w.add_i32("negative", -5);
  w.add_u64("huge", 18000000000000000000ull);
  w.add_f32_array("floats", {1.0f});
  w.add_i32_array("too_big_for_float", {1});
  bora_test::ByteWriter v;
  v.u32(bora_test::kGgufI64);
  v.u64(1);
  v.u64(uint64_t{1} << 40);
  w.add_raw("wide", bora_test::kGgufArray, v.bytes());
  const std::vector<uint8_t> bytes = w.build();
  auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "getters.gguf");
  REQUIRE(gguf.has_value());

  auto missing = gguf->get_uint("llama.block_count");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code() == bora::ErrorCode::kMissing);
  CHECK(missing.error().str().find("getters.gguf") != std::string::npos);
  CHECK(missing.error().str().find("llama.block_count") != std::string::npos);

  auto wrong = gguf->get_uint("name");
  REQUIRE_FALSE(wrong.has_value());
  CHECK(wrong.error().code() == bora::ErrorCode::kFormat);
  CHECK(wrong.error().str().find("'name' has type string, expected an integer") != std::string::npos);

  CHECK(gguf->get_string("negative").error().str().find("has type i32, expected string") != std::string::npos);
  CHECK(gguf->get_uint("negative").error().str().find("non-negative") != std::string::npos);
  CHECK(gguf->get_int("huge").error().str().find("too large") != std::string::npos);
  CHECK(gguf->get_bool("name").error().str().find("expected bool") != std::string::npos);
  CHECK(gguf->get_float("name").error().str().find("expected a number") != std::string::npos);
  CHECK(gguf->get_string_array("floats").error().str().find("array of f32, expected array of string") !=
        std::string::npos);
  CHECK(gguf->get_f32_array("too_big_for_float").error().str().find("array of i32") != std::string::npos);
  CHECK(gguf->get_i32_array("wide").error().str().find("does not fit in i32") != std::string::npos);
  CHECK(gguf->get_i32_array("name").error().str().find("expected array of integers") != std::string::npos);
}

TEST_CASE("gguf: version 2 files, custom alignment and zero tensors are fine") {
  bora_test::GgufWriter w;
  w.version = 2;
  w.alignment = 64;
  w.add_u32("general.alignment", 64);
  w.add_tensor("a", {32}, 8);  // one Q8_0 block
  w.add_tensor("b", {256, 3}, 14);
  const std::vector<uint8_t> bytes = w.build();
  auto gguf = bora::GgufFile::parse(bytes.data(), bytes.size(), "v2.gguf");
  REQUIRE_MESSAGE(gguf.has_value(), (gguf ? "" : gguf.error().message()));
  CHECK(gguf->version() == 2);
  CHECK(gguf->alignment() == 64);
  CHECK(gguf->data_offset() % 64 == 0);
  CHECK(gguf->find_tensor("a")->bytes == 34);
  CHECK(gguf->find_tensor("b")->bytes == 3 * 210);
  CHECK(gguf->find_tensor("b")->data - gguf->find_tensor("a")->data == 64);

  bora_test::GgufWriter empty;
  const std::vector<uint8_t> empty_bytes = empty.build();
  auto none = bora::GgufFile::parse(empty_bytes.data(), empty_bytes.size(), "empty.gguf");
  REQUIRE(none.has_value());
  CHECK(none->tensors().empty());
  CHECK(none->keys().empty());
}

TEST_CASE("gguf: a moved GgufFile keeps its views and metadata valid") {
  auto opened = bora::GgufFile::open(data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"));
  REQUIRE(opened.has_value());
  const bora::TensorView* before = opened->find_tensor("output.weight");
  const uint8_t* data_before = before->data;
  const uint8_t first_byte = data_before[0];
  bora::GgufFile moved = std::move(opened.value());
  const bora::TensorView* after = moved.find_tensor("output.weight");
  CHECK(after == before);
  CHECK(after->data == data_before);
  CHECK(after->data[0] == first_byte);
  CHECK(moved.get_string("general.name").value() == "tiny-mistral");
}
