// Why this file exists: findings of the session-file fuzzer (tests/fuzz/fuzz_session_file.cpp) and of
// reading Session::save/load beside it, kept as tests so the bugs they found stay fixed.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/gguf_writer.hpp"
#include "../support/golden.hpp"

namespace {

std::unique_ptr<bora::LanguageModel> tiny_model() {
  auto model = bora::load_any(bora_test::data_path("tiny-mistral/tiny-mistral-Q8_0.gguf"));
  REQUIRE(model);
  return std::move(*model);
}

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

// save() used to write the last logits whenever it held some while load() expects logits only when the
// file has tokens, and reset() kept the logits, so a session saved after reset() could not be loaded.
TEST_CASE("session file: a session saved after reset() loads again") {
  auto model = tiny_model();
  bora::SessionParams params;
  params.n_ctx = 32;
  auto session = model->session(params);
  REQUIRE(session);
  bora::SampleParams greedy;
  greedy.temperature = 0.0f;
  greedy.max_tokens = 2;
  REQUIRE(session->complete("Hello", greedy, nullptr));
  session->reset();
  bora_test::ScratchDir scratch;
  REQUIRE(scratch.ok());
  const std::string path = scratch.file("after-reset.session");
  REQUIRE(session->save(path));
  const bora::Status loaded = session->load(path);
  CHECK_MESSAGE(loaded.has_value(), (loaded ? "" : loaded.error().message()));
}

// load() used to restore n_past from the file's token count without comparing it to the context, so a
// file claiming more positions than a context without a sliding window holds was accepted.
TEST_CASE("session file: more tokens than a window-less context holds is refused") {
  auto model = tiny_model();
  bora::SessionParams params;
  params.n_ctx = 8;
  params.sliding_window = 0;
  auto session = model->session(params);
  REQUIRE(session);
  REQUIRE(session->feed({1, 5, 9}));
  bora_test::ScratchDir scratch;
  REQUIRE(scratch.ok());
  const std::string path = scratch.file("too-many-tokens.session");
  REQUIRE(session->save(path));
  // The header is magic[8], fingerprint[8 x i64], weights u64, then n_tokens u64 at byte 80; the
  // tokens follow the 96-byte header. Claim 20 tokens and insert the 17 extra ones.
  std::vector<uint8_t> bytes = read_file_bytes(path);
  REQUIRE(bytes.size() > 96 + 3 * 4);
  const uint64_t n_tokens = 20;
  std::memcpy(bytes.data() + 80, &n_tokens, sizeof(n_tokens));
  std::vector<uint8_t> extra(17 * 4, 0);
  for (size_t i = 0; i < 17; ++i) extra[i * 4] = 7;
  bytes.insert(bytes.begin() + 96 + 3 * 4, extra.begin(), extra.end());
  write_all(path, bytes);
  session->reset();
  const bora::Status loaded = session->load(path);
  CHECK_FALSE(loaded.has_value());
}
