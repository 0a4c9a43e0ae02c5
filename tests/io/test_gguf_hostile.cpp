// Why this file exists: a GGUF file is untrusted input; these tests feed the reader truncated,
// inflated and inconsistent files and require a clear error (never a crash, an overread or a huge
// allocation). Run them under ASan/UBSan.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../support/error_text.hpp"
#include "../support/gguf_writer.hpp"
#include "bora/base/mapped_file.hpp"
#include "bora/io/gguf.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

// Parses an exact-size heap copy, so a read past `size` is a heap overflow ASan reports.
bora::Expected<bora::GgufFile> parse_copy(const uint8_t* data, size_t size, const char* name = "broken.gguf") {
  static std::vector<uint8_t> keep;  // the views of a successful parse point into it
  keep.assign(data, data + size);
  return bora::GgufFile::parse(keep.data(), keep.size(), name);
}

bora::Expected<bora::GgufFile> parse_bytes(const std::vector<uint8_t>& bytes) {
  return parse_copy(bytes.data(), bytes.size());
}

using bora_test::contains;

// A small file using every kind of value, including nested arrays, and three tensors.
std::vector<uint8_t> build_rich_file(bora_test::GgufWriter* out = nullptr) {
  bora_test::GgufWriter w;
  bora_test::add_tiny_llama_metadata(w);
  w.add_f32_array("scores", {0.5f, 1.5f, -3.0f});
  w.add_i64("signed", -7);
  w.add_bool("flag", false);
  bora_test::ByteWriter nested;
  nested.u32(bora_test::kGgufArray);
  nested.u64(2);
  nested.u32(bora_test::kGgufString);
  nested.u64(1);
  nested.str("inner");
  nested.u32(bora_test::kGgufU16);
  nested.u64(3);
  nested.u16(1);
  nested.u16(2);
  nested.u16(3);
  w.add_raw("nested", bora_test::kGgufArray, nested.bytes());
  w.add_tensor("token_embd.weight", {64, 32}, 8);
  w.add_tensor("blk.0.attn_norm.weight", {64}, 0);
  w.add_tensor("output.weight", {256, 2}, 12);
  std::vector<uint8_t> bytes = w.build();
  if (out != nullptr) *out = w;
  return bytes;
}

// The error of a truncated file names the truncation.
bool names_truncation(const bora::Error& e) {
  return contains(e, "truncated") || contains(e, "past the end") || contains(e, "outside the file") ||
         contains(e, "cannot fit") || contains(e, "absurd") || contains(e, "not a GGUF file");
}

}  // namespace

TEST_CASE("gguf hostile: a hand-built file cut at every byte is rejected with a clear error") {
  bora_test::GgufWriter layout;
  const std::vector<uint8_t> full = build_rich_file(&layout);
  REQUIRE(parse_bytes(full).has_value());
  for (size_t cut = 0; cut < full.size(); ++cut) {
    CAPTURE(cut);
    auto parsed = parse_copy(full.data(), cut);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(parsed.error().code() == bora::ErrorCode::kFormat);
    CHECK(contains(parsed.error(), "broken.gguf"));
    CHECK_MESSAGE(names_truncation(parsed.error()), parsed.error().message());
    if (cut >= layout.infos_end) CHECK(contains(parsed.error(), "outside the file"));
  }
}

TEST_CASE("gguf hostile: a real model cut through its whole header region and beyond") {
  auto mapped = bora::MappedFile::open(std::string(BORA_TEST_DATA_DIR) + "/tiny-mistral/tiny-mistral-Q4_0.gguf");
  REQUIRE(mapped.has_value());
  const uint64_t header_region = 12960;  // metadata + tensor infos + padding of this file
  REQUIRE(mapped->size() > header_region);
  std::vector<uint64_t> cuts;
  for (uint64_t cut = 0; cut <= header_region; ++cut) cuts.push_back(cut);
  for (uint64_t cut = header_region; cut < mapped->size(); cut += 9973) cuts.push_back(cut);  // a sample beyond
  cuts.push_back(mapped->size() - 1);
  for (uint64_t cut : cuts) {
    CAPTURE(cut);
    auto parsed = parse_copy(mapped->data(), static_cast<size_t>(cut), "cut.gguf");
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "cut.gguf"));
    CHECK_MESSAGE(names_truncation(parsed.error()), parsed.error().message());
  }
  CHECK(parse_copy(mapped->data(), static_cast<size_t>(mapped->size())).has_value());
}

TEST_CASE("gguf hostile: absurd tensor and metadata counts fail before any allocation") {
  const uint64_t absurd[] = {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{1} << 40, 1000};
  for (uint64_t count : absurd) {
    CAPTURE(count);
    bora_test::GgufWriter w;
    w.add_u32("a", 1);
    w.override_counts = true;
    w.n_kv_override = 1;
    w.n_tensors_override = count;
    auto tensors = parse_bytes(w.build());
    REQUIRE_FALSE(tensors.has_value());
    CHECK(contains(tensors.error(), "tensor count"));
    CHECK(contains(tensors.error(), "absurd"));

    w.n_kv_override = count;
    w.n_tensors_override = 0;
    auto kvs = parse_bytes(w.build());
    REQUIRE_FALSE(kvs.has_value());
    CHECK(contains(kvs.error(), "metadata count"));
    CHECK(contains(kvs.error(), "absurd"));
  }
}

TEST_CASE("gguf hostile: array counts and string lengths past the end") {
  SUBCASE("scalar array count") {
    bora_test::ByteWriter v;
    v.u32(bora_test::kGgufF32);
    v.u64(uint64_t{1} << 62);  // times 4 overflows 64 bits
    v.f32(1.0f);
    bora_test::GgufWriter w;
    w.add_raw("tokenizer.ggml.scores", bora_test::kGgufArray, v.bytes());
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tokenizer.ggml.scores"));
    CHECK(contains(parsed.error(), "runs past the end"));
  }
  SUBCASE("string array count") {
    bora_test::ByteWriter v;
    v.u32(bora_test::kGgufString);
    v.u64(uint64_t{1} << 60);
    v.str("a");
    bora_test::GgufWriter w;
    w.add_raw("tokenizer.ggml.tokens", bora_test::kGgufArray, v.bytes());
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tokenizer.ggml.tokens"));
    CHECK(contains(parsed.error(), "cannot fit"));
  }
  SUBCASE("string length inside an array") {
    bora_test::ByteWriter v;
    v.u32(bora_test::kGgufString);
    v.u64(2);
    v.str("ok");
    v.u64(1000000);  // second string claims a megabyte
    v.raw("xx", 2);
    bora_test::GgufWriter w;
    w.add_raw("tokens", bora_test::kGgufArray, v.bytes());
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "string length 1000000"));
    CHECK(contains(parsed.error(), "'tokens'"));
  }
  SUBCASE("string value length") {
    bora_test::ByteWriter v;
    v.u64(~uint64_t{0});
    bora_test::GgufWriter w;
    w.add_raw("general.name", bora_test::kGgufString, v.bytes());
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "string length 18446744073709551615"));
    CHECK(contains(parsed.error(), "general.name"));
  }
  SUBCASE("key length") {
    bora_test::ByteWriter file;
    file.raw("GGUF", 4);
    file.u32(3);
    file.u64(0);
    file.u64(1);
    file.u64(uint64_t{1} << 50);  // key length
    file.raw("abcdefghijklmnop", 16);
    auto parsed = parse_bytes(file.bytes());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "the key of metadata entry 0"));
    CHECK(contains(parsed.error(), "past the end"));
  }
  SUBCASE("tensor name length") {
    bora_test::GgufWriter w;
    w.add_tensor(std::string(40, 'n'), {32}, 0);
    std::vector<uint8_t> bytes = w.build();
    // The tensor info starts right after the header (no metadata); make its name length huge.
    bytes[24 + 7] = 0x7f;
    auto parsed = parse_bytes(bytes);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "the name of tensor info 0"));
  }
  SUBCASE("nested arrays too deep") {
    bora_test::ByteWriter v;
    for (int depth = 0; depth < 12; ++depth) {
      v.u32(bora_test::kGgufArray);
      v.u64(1);
    }
    v.u32(bora_test::kGgufU8);
    v.u64(0);
    bora_test::GgufWriter w;
    w.add_raw("deep", bora_test::kGgufArray, v.bytes());
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "'deep'"));
    CHECK(contains(parsed.error(), "nested deeper"));
  }
  SUBCASE("nested array with an unknown element type") {
    bora_test::ByteWriter v;
    v.u32(bora_test::kGgufArray);
    v.u64(1);
    v.u32(77);
    v.u64(0);
    bora_test::GgufWriter w;
    w.add_raw("odd", bora_test::kGgufArray, v.bytes());
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "unknown element type 77"));
  }
}

TEST_CASE("gguf hostile: unknown value types, duplicate keys") {
  bora_test::GgufWriter unknown;
  unknown.add_raw("mystery", 13, {1, 2, 3, 4});
  auto a = parse_bytes(unknown.build());
  REQUIRE_FALSE(a.has_value());
  CHECK(contains(a.error(), "'mystery' has unknown value type 13"));

  bora_test::GgufWriter array_of_unknown;
  array_of_unknown.add_raw("arr", bora_test::kGgufArray, {200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  auto b = parse_bytes(array_of_unknown.build());
  REQUIRE_FALSE(b.has_value());
  CHECK(contains(b.error(), "'arr' is an array of unknown element type 200"));

  bora_test::GgufWriter duplicate;
  duplicate.add_u32("llama.block_count", 2);
  duplicate.add_u32("llama.block_count", 3);
  auto c = parse_bytes(duplicate.build());
  REQUIRE_FALSE(c.has_value());
  CHECK(contains(c.error(), "duplicate metadata key 'llama.block_count'"));
}

TEST_CASE("gguf hostile: magic and version") {
  std::vector<uint8_t> bytes = build_rich_file();
  SUBCASE("bad magic") {
    bytes[0] = 'g';
    auto parsed = parse_bytes(bytes);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "not a GGUF file"));
  }
  SUBCASE("version 1") {
    bytes[4] = 1;
    auto parsed = parse_bytes(bytes);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(parsed.error().code() == bora::ErrorCode::kUnsupported);
    CHECK(contains(parsed.error(), "version 1 is not supported"));
  }
  SUBCASE("version 4") {
    bytes[4] = 4;
    auto parsed = parse_bytes(bytes);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "version 4 is not supported"));
  }
  SUBCASE("big-endian") {
    bytes[4] = 0;
    bytes[7] = 3;
    auto parsed = parse_bytes(bytes);
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "big-endian"));
  }
  SUBCASE("empty input") {
    auto parsed = bora::GgufFile::parse(nullptr, 0, "nothing.gguf");
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "nothing.gguf: not a GGUF file"));
  }
}

TEST_CASE("gguf hostile: alignment") {
  const uint32_t bad[] = {0, 3, 48, 0x80000000u};
  for (uint32_t alignment : bad) {
    CAPTURE(alignment);
    bora_test::GgufWriter w;
    w.add_u32("general.alignment", alignment);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "general.alignment"));
    CHECK(contains(parsed.error(), "power of two"));
  }
  bora_test::GgufWriter wrong_type;
  wrong_type.add_string("general.alignment", "32");
  auto parsed = parse_bytes(wrong_type.build());
  REQUIRE_FALSE(parsed.has_value());
  CHECK(contains(parsed.error(), "'general.alignment' has type string"));
}

TEST_CASE("gguf hostile: tensor infos") {
  SUBCASE("data outside the file") {
    bora_test::GgufWriter w;
    w.add_tensor("blk.0.attn_q.weight", {64, 64}, 0, /*offset=*/1 << 20);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'blk.0.attn_q.weight'"));
    CHECK(contains(parsed.error(), "outside the file"));
  }
  SUBCASE("data end overflows 64 bits") {
    bora_test::GgufWriter w;
    w.add_tensor("t", {64}, 0, /*offset=*/static_cast<int64_t>(~uint64_t{0} - 31), 0);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "outside the file"));
  }
  SUBCASE("data partly outside the file") {
    bora_test::GgufWriter w;
    w.add_tensor("a", {64}, 0);
    w.add_tensor("b", {64}, 0, /*offset=*/256, /*data_bytes=*/0);  // data section holds only 256 bytes
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'b'"));
    CHECK(contains(parsed.error(), "256 bytes at offset 256"));
  }
  SUBCASE("misaligned offset") {
    bora_test::GgufWriter w;
    w.add_tensor("a", {64}, 0, /*offset=*/16);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'a' data offset 16 is not a multiple of the alignment 32"));
  }
  SUBCASE("unknown or unsupported ggml type") {
    bora_test::GgufWriter w;
    w.add_tensor("blk.3.ffn_up.weight", {64, 64}, 3);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(parsed.error().code() == bora::ErrorCode::kUnsupported);
    CHECK(contains(parsed.error(), "tensor 'blk.3.ffn_up.weight' has ggml type 3 (Q4_1)"));

    bora_test::GgufWriter w2;
    w2.add_tensor("x", {64}, 4000);
    auto parsed2 = parse_bytes(w2.build());
    REQUIRE_FALSE(parsed2.has_value());
    CHECK(contains(parsed2.error(), "ggml type 4000 (unknown)"));
  }
  SUBCASE("duplicate tensor names") {
    bora_test::GgufWriter w;
    w.add_tensor("same", {32}, 0);
    w.add_tensor("same", {32}, 0);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "duplicate tensor name 'same'"));
  }
  SUBCASE("too many dimensions") {
    bora_test::GgufWriter w;
    w.add_tensor("five", {1, 1, 1, 1, 1}, 0);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'five' has 5 dimensions"));
  }
  SUBCASE("element count overflow") {
    bora_test::GgufWriter w;
    w.add_tensor("huge", {uint64_t{1} << 32, uint64_t{1} << 32, 4}, 0, 0, 0);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'huge' has an element count that overflows"));

    bora_test::GgufWriter w2;
    w2.add_tensor("neg", {~uint64_t{0}}, 0, 0, 0);
    auto parsed2 = parse_bytes(w2.build());
    REQUIRE_FALSE(parsed2.has_value());
    CHECK(contains(parsed2.error(), "tensor 'neg' dimension 0"));
  }
  SUBCASE("byte size overflow") {
    bora_test::GgufWriter w;
    w.add_tensor("wide", {uint64_t{1} << 40, uint64_t{1} << 22}, 0, 0, 0);  // 2^62 elements * 4 bytes
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'wide' byte size overflows"));
  }
  SUBCASE("row length not a whole number of blocks") {
    bora_test::GgufWriter w;
    w.add_tensor("blk.0.attn_k.weight", {100, 2}, 12, 0, 0);
    auto parsed = parse_bytes(w.build());
    REQUIRE_FALSE(parsed.has_value());
    CHECK(contains(parsed.error(), "tensor 'blk.0.attn_k.weight' of type Q4_K has rows of 100 values"));
    CHECK(contains(parsed.error(), "block size 256"));
  }
}
