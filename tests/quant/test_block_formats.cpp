// Why this file exists: the scalar dequantizers are the reference every SIMD kernel is held to, so
// they are checked here against hand-built blocks, known IEEE encodings, round trips, and real
// blocks from the tiny GGUF test models (whose expected hashes come from an independent decoder).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bora/ops/ops.hpp"
#include "bora/quant/dequantize.hpp"
#include "bora/quant/row_tiles.hpp"

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace {

using bora::WeightType;
namespace quant = bora::quant;

uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

std::vector<float> dequantized(WeightType type, const std::vector<uint8_t>& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  bora::dequantize_row(type, bytes.data(), out.data(), n);
  return out;
}

// 64-bit FNV-1a over the little-endian float32 bytes: a compact fingerprint of a whole tensor.
uint64_t fnv1a_of_floats(const std::vector<float>& values) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (float v : values) {
    const uint32_t b = float_bits(v);
    for (int k = 0; k < 4; ++k) {
      hash ^= (b >> (8 * k)) & 0xFF;
      hash *= 0x100000001b3ull;
    }
  }
  return hash;
}

// A deliberately small GGUF walker for tests only (the library's reader lives in io/): finds one
// tensor by name and returns its type, shape and bytes, with bounds checks on every read.
struct TestTensor {
  WeightType type = WeightType::kF32;
  int64_t ne0 = 0, rows = 0;
  std::vector<uint8_t> bytes;
};

struct ByteCursor {
  const std::vector<uint8_t>& file;
  size_t pos = 0;
  bool ok = true;
  uint64_t read(int width) {
    if (!ok || pos + static_cast<size_t>(width) > file.size()) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (int k = 0; k < width; ++k) v |= static_cast<uint64_t>(file[pos + k]) << (8 * k);
    pos += static_cast<size_t>(width);
    return v;
  }
  std::string read_string() {
    const uint64_t length = read(8);
    if (!ok || length > file.size() - pos) {
      ok = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(file.data() + pos), static_cast<size_t>(length));
    pos += static_cast<size_t>(length);
    return s;
  }
  void skip_value(uint32_t type) {
    static const int kWidths[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (type == 8) {
      read_string();
    } else if (type == 9) {
      const uint32_t element_type = static_cast<uint32_t>(read(4));
      const uint64_t count = read(8);
      for (uint64_t i = 0; ok && i < count; ++i) skip_value(element_type);
    } else if (type < 13) {
      read(kWidths[type]);
    } else {
      ok = false;
    }
  }
};

bool load_test_tensor(const std::string& path, const std::string& wanted, TestTensor* out) {
  std::vector<uint8_t> file;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  uint8_t chunk[65536];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), f)) > 0) file.insert(file.end(), chunk, chunk + got);
  std::fclose(f);

  ByteCursor c{file};
  if (c.read(4) != 0x46554747u || c.read(4) != 3) return false;
  const uint64_t n_tensors = c.read(8), n_kv = c.read(8);
  uint64_t alignment = 32;
  for (uint64_t i = 0; c.ok && i < n_kv; ++i) {
    const std::string key = c.read_string();
    const uint32_t type = static_cast<uint32_t>(c.read(4));
    if (key == "general.alignment" && type == 4) {
      alignment = c.read(4);
    } else {
      c.skip_value(type);
    }
  }
  bool found = false;
  uint64_t offset = 0;
  for (uint64_t i = 0; c.ok && i < n_tensors; ++i) {
    const std::string name = c.read_string();
    const uint32_t n_dims = static_cast<uint32_t>(c.read(4));
    if (n_dims > 4) return false;
    int64_t ne[4] = {1, 1, 1, 1};
    for (uint32_t d = 0; d < n_dims; ++d) ne[d] = static_cast<int64_t>(c.read(8));
    const uint32_t ggml_type = static_cast<uint32_t>(c.read(4));
    const uint64_t tensor_offset = c.read(8);
    if (name == wanted) {
      if (!bora::weight_type_from_ggml(ggml_type, &out->type)) return false;
      out->ne0 = ne[0];
      out->rows = ne[1] * ne[2] * ne[3];
      offset = tensor_offset;
      found = true;
    }
  }
  if (!c.ok || !found || alignment == 0) return false;
  const uint64_t data_start = (c.pos + alignment - 1) / alignment * alignment;
  uint64_t row_bytes = 0;
  if (!bora::weight_row_bytes(out->type, static_cast<uint64_t>(out->ne0), &row_bytes)) return false;
  const uint64_t size = row_bytes * static_cast<uint64_t>(out->rows);
  if (data_start + offset > file.size() || size > file.size() - data_start - offset) return false;
  out->bytes.assign(file.begin() + static_cast<std::ptrdiff_t>(data_start + offset),
                    file.begin() + static_cast<std::ptrdiff_t>(data_start + offset + size));
  return true;
}

}  // namespace

TEST_CASE("f16: known encodings, rounding to nearest even, specials") {
  CHECK(quant::f32_to_f16(0.0f) == 0x0000);
  CHECK(quant::f32_to_f16(-0.0f) == 0x8000);
  CHECK(quant::f32_to_f16(1.0f) == 0x3C00);
  CHECK(quant::f32_to_f16(-2.0f) == 0xC000);
  CHECK(quant::f32_to_f16(0.333251953125f) == 0x3555);
  CHECK(quant::f32_to_f16(65504.0f) == 0x7BFF);
  CHECK(quant::f32_to_f16(65519.99f) == 0x7BFF);
  CHECK(quant::f32_to_f16(65520.0f) == 0x7C00);  // the tie rounds to even: infinity
  CHECK(quant::f32_to_f16(1e10f) == 0x7C00);
  CHECK(quant::f32_to_f16(-std::numeric_limits<float>::infinity()) == 0xFC00);
  const uint16_t nan = quant::f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7C00) == 0x7C00);
  CHECK((nan & 0x03FF) != 0);
  // Ties between representable halves go to the even mantissa.
  CHECK(quant::f32_to_f16(1.0f + 1.0f / 2048) == 0x3C00);
  CHECK(quant::f32_to_f16(1.0f + 3.0f / 2048) == 0x3C02);
  CHECK(quant::f32_to_f16(1.0f + 1.0f / 2048 + 1.0f / 65536) == 0x3C01);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to 0; 3*2^-25 ties to 2*2^-24.
  CHECK(quant::f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(quant::f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);
  CHECK(quant::f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);
  CHECK(quant::f32_to_f16(-std::ldexp(1023.0f, -24)) == 0x83FF);
  CHECK(quant::f32_to_f16(std::ldexp(1.0f, -14)) == 0x0400);
  CHECK(quant::f32_to_f16(std::ldexp(2047.0f, -25)) == 0x0400);  // rounds up into the normals

  CHECK(quant::f16_to_f32(0x3C00) == 1.0f);
  CHECK(quant::f16_to_f32(0xC000) == -2.0f);
  CHECK(quant::f16_to_f32(0x7BFF) == 65504.0f);
  CHECK(quant::f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(quant::f16_to_f32(0x83FF) == -std::ldexp(1023.0f, -24));
  CHECK(std::isinf(quant::f16_to_f32(0x7C00)));
  CHECK(std::isnan(quant::f16_to_f32(0x7E01)));
  CHECK(float_bits(quant::f16_to_f32(0x8000)) == 0x80000000u);

  // Every non-NaN half survives the round trip exactly.
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = quant::f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    if (quant::f32_to_f16(f) != h) {
      FAIL("half round trip broke at " << h);
    }
  }
}

TEST_CASE("bf16: upper half of f32, round to nearest even") {
  CHECK(quant::bf16_to_f32(0x3F80) == 1.0f);
  CHECK(quant::bf16_to_f32(0xC040) == -3.0f);
  CHECK(quant::f32_to_bf16(1.0f) == 0x3F80);
  CHECK(quant::f32_to_bf16(bits_float(0x3F808000u)) == 0x3F80);  // tie, even stays
  CHECK(quant::f32_to_bf16(bits_float(0x3F818000u)) == 0x3F82);  // tie, odd rounds up
  CHECK(quant::f32_to_bf16(bits_float(0x3F808001u)) == 0x3F81);
  CHECK(quant::f32_to_bf16(bits_float(0x7F7FFFFFu)) == 0x7F80);  // max float rounds to infinity
  CHECK(std::isnan(quant::bf16_to_f32(quant::f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  const std::vector<uint8_t> row = {0x80, 0x3F, 0x40, 0xC0};
  const std::vector<float> values = dequantized(WeightType::kBF16, row, 2);
  CHECK(values[0] == 1.0f);
  CHECK(values[1] == -3.0f);
}

TEST_CASE("Q8_0: hand-built block with a negative scale") {
  std::vector<uint8_t> block(34);
  block[0] = 0x00;
  block[1] = 0xB8;  // f16 -0.5
  for (int i = 0; i < 32; ++i) block[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i * 8 - 128));
  const std::vector<float> values = dequantized(WeightType::kQ8_0, block, 32);
  for (int i = 0; i < 32; ++i) CHECK(values[i] == -0.5f * static_cast<float>(i * 8 - 128));
  CHECK(values[0] == 64.0f);
}

TEST_CASE("Q4_0: low nibbles are elements 0..15, high nibbles 16..31") {
  std::vector<uint8_t> block(18);
  block[0] = 0x00;
  block[1] = 0xB4;  // f16 -0.25
  for (int j = 0; j < 16; ++j) block[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const std::vector<float> values = dequantized(WeightType::kQ4_0, block, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(values[j] == -0.25f * static_cast<float>(j - 8));
    CHECK(values[j + 16] == -0.25f * static_cast<float>(7 - j));
  }
}

namespace {

// Builds the 12 packed scale bytes from the layout description (REFERENCE.md §7), written from the
// packing side so that the unpacking in quant/ is checked, not restated.
void pack_scales_by_hand(const int* sc, const int* m, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = static_cast<uint8_t>((sc[j] & 0x3F) + 64 * (sc[j + 4] / 16));
    out[j + 4] = static_cast<uint8_t>((m[j] & 0x3F) + 64 * (m[j + 4] / 16));
    out[j + 8] = static_cast<uint8_t>((sc[j + 4] % 16) + 16 * (m[j + 4] % 16));
  }
}

}  // namespace

TEST_CASE("Q4_K and Q5_K: 6-bit packed scales with high bits, nibble order, fifth bit") {
  const int sc[8] = {1, 2, 13, 63, 40, 17, 50, 33};
  const int m[8] = {0, 5, 62, 7, 48, 1, 20, 63};
  const float d = 0.5f, dmin = 0.25f;  // f16 0x3800, 0x3400
  auto q_of = [](int j, int l, int levels) { return (l * 7 + j * 3) % levels; };

  SUBCASE("Q4_K") {
    std::vector<uint8_t> block(144);
    block[1] = 0x38;
    block[3] = 0x34;
    pack_scales_by_hand(sc, m, block.data() + 4);
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) block[16 + 32 * (j / 2) + l] |= static_cast<uint8_t>(q_of(j, l, 16) << (4 * (j % 2)));
    }
    const std::vector<float> values = dequantized(WeightType::kQ4_K, block, 256);
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) {
        const float expected = d * static_cast<float>(sc[j] * q_of(j, l, 16)) - dmin * static_cast<float>(m[j]);
        if (values[32 * j + l] != expected) FAIL("Q4_K mismatch at sub-block " << j << " element " << l);
      }
    }
  }
  SUBCASE("Q5_K") {
    std::vector<uint8_t> block(176);
    block[1] = 0x38;
    block[3] = 0x34;
    pack_scales_by_hand(sc, m, block.data() + 4);
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) {
        const int q = q_of(j, l, 32);
        block[48 + 32 * (j / 2) + l] |= static_cast<uint8_t>((q % 16) << (4 * (j % 2)));
        block[16 + l] |= static_cast<uint8_t>((q / 16) << j);
      }
    }
    const std::vector<float> values = dequantized(WeightType::kQ5_K, block, 256);
    int high_bits_seen = 0;
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) {
        const int q = q_of(j, l, 32);
        high_bits_seen += q / 16;
        const float expected = d * static_cast<float>(sc[j] * q) - dmin * static_cast<float>(m[j]);
        if (values[32 * j + l] != expected) FAIL("Q5_K mismatch at sub-block " << j << " element " << l);
      }
    }
    CHECK(high_bits_seen > 64);
  }
}

TEST_CASE("the word-wise K-quant scale unpacking agrees with the per-pair rule") {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    uint8_t packed[12];
    for (auto& b : packed) b = static_cast<uint8_t>(rng());
    uint8_t scale[8], min[8];
    quant::unpack_k_scales_mins(packed, scale, min);
    for (int j = 0; j < 8; ++j) {
      int expected_scale = 0, expected_min = 0;
      quant::unpack_k_scale_min(packed, j, &expected_scale, &expected_min);
      CHECK(scale[j] == expected_scale);
      CHECK(min[j] == expected_min);
    }
  }
}

TEST_CASE("Q6_K: interleaved 6-bit quants, signed scales and a negative d") {
  std::vector<uint8_t> block(210);
  int8_t scales[16];
  for (int s = 0; s < 16; ++s) scales[s] = static_cast<int8_t>((s % 2 ? -1 : 1) * (s * 8 + 1));
  scales[15] = -128;
  auto q_of = [](int i) { return (i * 37 + 11) % 64; };
  for (int i = 0; i < 256; ++i) {
    const int half = i / 128, within = i % 128, group = within / 32, l = within % 32;
    const int q = q_of(i);
    // group 0: low nibble of ql[l], 1: low nibble of ql[l+32], 2: high of ql[l], 3: high of ql[l+32]
    const int ql_index = 64 * half + l + (group % 2 ? 32 : 0);
    block[ql_index] |= static_cast<uint8_t>((q & 15) << (group >= 2 ? 4 : 0));
    block[128 + 32 * half + l] |= static_cast<uint8_t>((q >> 4) << (2 * group));
  }
  std::memcpy(block.data() + 192, scales, 16);
  block[208] = 0x00;
  block[209] = 0xB0;  // f16 -0.125
  const std::vector<float> values = dequantized(WeightType::kQ6_K, block, 256);
  for (int i = 0; i < 256; ++i) {
    const float expected = -0.125f * static_cast<float>(scales[i / 16]) * static_cast<float>(q_of(i) - 32);
    if (values[i] != expected) FAIL("Q6_K mismatch at element " << i);
  }
}

TEST_CASE("quantize -> dequantize round trips stay within each format's step") {
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 1024;
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  x[5] = 7.5f;  // an outlier, as real weights have
  x[300] = -6.0f;

  struct Case {
    WeightType type;
    double max_relative_rms;  // rms error / rms value
  };
  const Case cases[] = {
      {WeightType::kF16, 1e-3},  {WeightType::kBF16, 5e-3}, {WeightType::kQ8_0, 0.01},
      {WeightType::kQ4_0, 0.15}, {WeightType::kQ4_K, 0.12}, {WeightType::kQ5_K, 0.06},
      {WeightType::kQ6_K, 0.04},
  };
  for (const Case& c : cases) {
    const std::string type_name = bora::weight_type_name(c.type);
    CAPTURE(type_name);
    uint64_t bytes = 0;
    REQUIRE(bora::weight_row_bytes(c.type, n, &bytes));
    std::vector<uint8_t> packed(bytes);
    bora::quantize_row(c.type, x.data(), packed.data(), n);
    const std::vector<float> y = dequantized(c.type, packed, n);
    double err2 = 0, ref2 = 0, worst = 0;
    for (int64_t i = 0; i < n; ++i) {
      err2 += double(y[i] - x[i]) * double(y[i] - x[i]);
      ref2 += double(x[i]) * double(x[i]);
      worst = std::fmax(worst, std::fabs(double(y[i] - x[i])));
    }
    const double relative_rms = std::sqrt(err2 / ref2);
    CHECK(relative_rms < c.max_relative_rms);
    CHECK(relative_rms > 0.0);  // every format here is lossy on random data
    CHECK(worst < 1.0);
  }

  // Q8_0 and Q4_0 have a provable per-element bound: half a step (Q8_0), one step (Q4_0, whose
  // positive end is clamped at +7).
  for (int64_t b = 0; b < n / 32; ++b) {
    uint8_t q8[34], q4[18];
    quant::quantize_block_q8_0(x.data() + 32 * b, q8);
    quant::quantize_block_q4_0(x.data() + 32 * b, q4);
    float y8[32], y4[32];
    quant::dequantize_block_q8_0(q8, y8);
    quant::dequantize_block_q4_0(q4, y4);
    const float d8 = std::fabs(quant::load_f16(q8)), d4 = std::fabs(quant::load_f16(q4));
    for (int i = 0; i < 32; ++i) {
      CHECK(std::fabs(y8[i] - x[32 * b + i]) <= 0.5f * d8 * 1.0001f);
      CHECK(std::fabs(y4[i] - x[32 * b + i]) <= d4 * 1.0001f);
    }
  }
}

TEST_CASE("quantizers produce the signed and packed fields the formats allow") {
  std::mt19937 rng(99);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(256);
  for (auto& v : x) v = normal(rng);
  x[3] = -9.0f;  // dominant negative value: Q4_0 d and some Q6_K scales turn positive/negative
  uint8_t q6[210];
  quant::quantize_block_q6_k(x.data(), q6);
  int negative_scales = 0, positive_scales = 0;
  for (int s = 0; s < 16; ++s) {
    const int8_t v = static_cast<int8_t>(q6[192 + s]);
    negative_scales += v < 0;
    positive_scales += v > 0;
  }
  CHECK(negative_scales > 0);
  CHECK(positive_scales > 0);
  uint8_t q4[144];
  quant::quantize_block_q4_k(x.data(), q4);
  int high_bits = 0;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    quant::unpack_k_scale_min(q4 + 4, j, &sc, &m);
    high_bits += (sc >= 16) + (m >= 16);
  }
  CHECK(high_bits > 0);
}

TEST_CASE("real blocks from the tiny models decode to the independent decoder's values") {
  // Expected FNV-1a hashes of the float32 values, computed with shared/tools/tinyfmt.py's numpy
  // dequantizers (an independent implementation, checked bit-identical to ggml's to_float).
  struct Case {
    const char* file;
    const char* tensor;
    WeightType type;
    uint64_t expected_hash;
  };
  const Case cases[] = {
      {"tiny-mistral/tiny-mistral-F32.gguf", "blk.1.ffn_down.weight", WeightType::kF32, 0x19813e955f440dc8ull},
      {"tiny-mistral/tiny-mistral-BF16.gguf", "blk.1.ffn_down.weight", WeightType::kBF16, 0x19813e955f440dc8ull},
      {"tiny-mistral/tiny-mistral-Q8_0.gguf", "blk.1.ffn_down.weight", WeightType::kQ8_0, 0x839e4eeed8088874ull},
      {"tiny-mistral/tiny-mistral-Q4_0.gguf", "blk.1.ffn_down.weight", WeightType::kQ4_0, 0xcad82e34413867a6ull},
      {"tiny-mistral/tiny-mistral-Q4_K.gguf", "blk.1.ffn_down.weight", WeightType::kQ4_K, 0xb65b4cb06dfc6bd9ull},
      {"tiny-mistral/tiny-mistral-Q5_K.gguf", "blk.1.ffn_down.weight", WeightType::kQ5_K, 0x3782222836d91cdcull},
      {"tiny-mistral/tiny-mistral-Q6_K.gguf", "blk.1.ffn_down.weight", WeightType::kQ6_K, 0x9f91d0288849481dull},
      {"tiny-mistral/tiny-mistral-Q4_K_M.gguf", "blk.0.ffn_down.weight", WeightType::kQ6_K, 0x51556ad97956ba3cull},
      {"tiny-mistral/tiny-mistral-Q4_K_M.gguf", "blk.0.ffn_up.weight", WeightType::kQ4_K, 0x05dc9ec198de90e6ull},
      {"tiny-mixtral/tiny-mixtral-F16.gguf", "blk.0.attn_q.weight", WeightType::kF16, 0x82cd5f0e88cd4d83ull},
  };
  for (const Case& c : cases) {
    const std::string where = std::string(c.file) + " " + c.tensor;
    CAPTURE(where);
    TestTensor t;
    REQUIRE(load_test_tensor(std::string(BORA_TEST_DATA_DIR) + "/" + c.file, c.tensor, &t));
    REQUIRE(t.type == c.type);
    const int64_t n = t.ne0 * t.rows;
    const std::vector<float> values = dequantized(t.type, t.bytes, n);
    CHECK(fnv1a_of_floats(values) == c.expected_hash);

    // The SIMD kernels must reproduce the scalar values bit for bit: matvec with one-hot
    // activations picks single weights (one exact product plus exact zeros).
    bora::TensorView view;
    view.type = t.type;
    view.n_dims = 2;
    view.ne[0] = t.ne0;
    view.ne[1] = t.rows;
    view.data = t.bytes.data();
    view.bytes = t.bytes.size();
    std::vector<float> one_hot(static_cast<size_t>(t.ne0), 0.0f), column(static_cast<size_t>(t.rows));
    for (int64_t i : {int64_t{0}, int64_t{17}, int64_t{100}, t.ne0 - 1}) {
      one_hot[static_cast<size_t>(i)] = 1.0f;
      bora::ops::matvec_f32(view, one_hot.data(), column.data(), 0, t.rows);
      one_hot[static_cast<size_t>(i)] = 0.0f;
      for (int64_t r = 0; r < t.rows; ++r) {
        if (column[static_cast<size_t>(r)] != values[static_cast<size_t>(r * t.ne0 + i)]) {
          FAIL("SIMD value differs at row " << r << " column " << i);
        }
      }
    }
  }
}

TEST_CASE("row tiles put row i's f16 scale fields at 32k + 2i, byte fields after them at 16k + i and value bytes 4g..4g+3 at 16 * header + 64g + 4i, and untile back") {
  for (WeightType type : {WeightType::kQ4_0, WeightType::kQ8_0, WeightType::kQ4_K, WeightType::kQ5_K, WeightType::kQ6_K}) {
    CAPTURE(bora::weight_type_name(type));
    const quant::TileFormat f = quant::tile_format(type);
    const int64_t n = 3 * f.values, rows = 32, blocks = 3, block_bytes = quant::tile_block_bytes(type);
    uint64_t row_bytes = 0;
    REQUIRE(bora::weight_row_bytes(type, n, &row_bytes));
    REQUIRE(static_cast<int64_t>(row_bytes) == blocks * block_bytes);
    std::vector<uint8_t> original(static_cast<size_t>(row_bytes * rows));
    std::mt19937 rng(7);
    for (uint8_t& byte : original) byte = static_cast<uint8_t>(rng());
    std::vector<uint8_t> tiled = original, scratch(static_cast<size_t>(16 * row_bytes));
    CHECK(quant::row_tiles_apply(type, rows));
    CHECK_FALSE(quant::row_tiles_apply(type, rows + 8));
    quant::tile_rows_in_place(type, tiled.data(), n, rows, scratch.data());
    CHECK(tiled != original);
    int misplaced = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r % 16;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* block = original.data() + r * row_bytes + b * block_bytes;
        const uint8_t* tile = tiled.data() + ((r / 16) * blocks + b) * 16 * block_bytes;
        for (int64_t k = 0; k < f.half_fields; ++k)
          misplaced += std::memcmp(tile + 32 * k + 2 * i, block + f.half_at + 2 * k, 2) != 0;
        for (int64_t k = 0; k < f.header - 2 * f.half_fields; ++k)
          misplaced += tile[32 * f.half_fields + 16 * k + i] != block[f.bytes_at + k];
        for (int64_t g = 0; g < (block_bytes - f.header) / 4; ++g)
          misplaced += std::memcmp(tile + 16 * f.header + 64 * g + 4 * i, block + f.values_at + 4 * g, 4) != 0;
      }
    }
    CHECK(misplaced == 0);
    std::vector<uint8_t> back(original.size());
    quant::untile_rows(type, tiled.data(), n, 0, rows, back.data());
    CHECK(back == original);
    std::vector<uint8_t> some(static_cast<size_t>(3 * row_bytes));
    quant::untile_rows(type, tiled.data(), n, 14, 3, some.data());  // across a tile's edge
    CHECK(std::memcmp(some.data(), original.data() + 14 * row_bytes, some.size()) == 0);
  }
  CHECK_FALSE(quant::row_tiles_apply(WeightType::kBF16, 32));
  CHECK_FALSE(quant::row_tiles_apply(WeightType::kF16, 32));
}
