// Why this file exists: a model that cannot be loaded must say why (which tensor, which shapes,
// which key, which file) and never crash or allocate wildly; these tests break real models one
// way at a time, feed bora::load_any / bora::load hostile GGUF files while watching every allocation,
// and check `ollama:` names against a fake Ollama store.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

// The one test file that replaces global operator new/delete for the allocation probe.
#define BORA_TEST_ALLOCATION_PROBE_OPERATORS
#include "../support/allocation_probe.hpp"

#include "bora/bora.hpp"
#include "../support/error_text.hpp"
#include "../support/gguf_writer.hpp"
#include "../support/golden.hpp"

namespace {

using bora_test::GgufTensorBytes;
using bora_test::GgufWriter;
using bora_test::ScratchDir;

using bora_test::contains;

// Checks that the error message names every one of `parts`, showing the message when it does not.
void check_names(const bora::Error& error, const std::vector<const char*>& parts) {
  for (const char* part : parts) {
    CHECK_MESSAGE(contains(error, part), "expected '" << std::string(part) << "' in: " << error.str());
  }
}

// How to break a copy of a shipped GGUF file.
struct GgufEdit {
  std::vector<std::string> leave_out_keys;
  void (*add_keys)(GgufWriter&) = nullptr;  // re-adds keys with new values
  std::string leave_out_tensor;
  std::string edited_tensor;      // this tensor gets the changes below
  std::string also_edited_tensor;  // and this one too, when set
  std::vector<uint64_t> new_ne;   // its shape (data cut to fit when smaller)
  int64_t new_type = -1;          // its ggml type id
};

// Writes the shipped `relative` GGUF, changed as `edit` says, to `name` in `dir`; returns its path.
std::string write_edited_copy(const ScratchDir& dir, const std::string& relative, const GgufEdit& edit,
                              const std::string& name = "edited.gguf") {
  auto source = bora::GgufFile::open(bora_test::data_path(relative));
  REQUIRE(source);
  GgufWriter w;
  w.alignment = source->alignment();
  bora_test::copy_gguf_metadata(*source, w, edit.leave_out_keys);
  if (edit.add_keys != nullptr) edit.add_keys(w);
  std::vector<GgufTensorBytes> tensors;
  bool found = edit.edited_tensor.empty();
  for (GgufTensorBytes& t : bora_test::gguf_tensor_bytes(*source)) {
    if (t.name == edit.leave_out_tensor) continue;
    if (t.name == edit.edited_tensor || (!edit.also_edited_tensor.empty() && t.name == edit.also_edited_tensor)) {
      found = found || t.name == edit.edited_tensor;
      if (!edit.new_ne.empty()) {
        t.ne = edit.new_ne;
        const uint64_t bytes = GgufWriter::natural_bytes(t.ne, t.ggml_type);
        if (bytes < t.data.size()) t.data.resize(static_cast<size_t>(bytes));
      }
      if (edit.new_type >= 0) t.ggml_type = static_cast<uint32_t>(edit.new_type);
    }
    tensors.push_back(std::move(t));
  }
  REQUIRE_MESSAGE(found, "no tensor " << edit.edited_tensor << " in " << relative);
  const std::string path = dir.write(name, bora_test::build_gguf_with_tensor_bytes(w, tensors));
  REQUIRE_FALSE(path.empty());
  return path;
}

bora::Error load_error(const std::string& path) {
  auto model = bora::load_any(path);
  REQUIRE_FALSE(model);
  return model.error();
}

const char* const kMistralQ4 = "tiny-mistral/tiny-mistral-Q4_0.gguf";
const char* const kMixtralQ4K = "tiny-mixtral/tiny-mixtral-Q4_K.gguf";

// Every row of logits of `tokens` in one exact pass (f32 activations, as the golden was computed).
std::vector<float> all_logits(const bora::Model& model, const std::vector<int32_t>& tokens) {
  bora::ContextParams params;
  params.n_ctx = static_cast<int64_t>(tokens.size());
  params.n_batch = static_cast<int64_t>(tokens.size());
  params.f32_activations = true;
  auto ctx = model.create_context(params);
  REQUIRE(ctx);
  std::vector<float> logits(tokens.size() * static_cast<size_t>(model.config().vocab_size));
  REQUIRE(model.forward(**ctx, tokens.data(), static_cast<int64_t>(tokens.size()), logits.data(), true));
  return logits;
}

void copy_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(to).parent_path(), ec);
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
  REQUIRE_MESSAGE(!ec, "copying " << from << " to " << to << ": " << ec.message());
}

}  // namespace

TEST_CASE("model errors: a GGUF file missing one tensor names it") {
  ScratchDir dir;
  REQUIRE(dir.ok());
  GgufEdit edit;
  edit.leave_out_tensor = "blk.1.attn_k.weight";
  const bora::Error error = load_error(write_edited_copy(dir, kMistralQ4, edit));
  CHECK(error.code() == bora::ErrorCode::kMissing);
  check_names(error, {"edited.gguf", "missing tensor", "'blk.1.attn_k.weight'"});

  // The same through a preset, and for the last tensor the loader asks for in a Mixtral file.
  auto dense = bora::load<bora::Mistral7B>(dir.file("edited.gguf"));
  REQUIRE_FALSE(dense);
  check_names(dense.error(), {"'blk.1.attn_k.weight'"});
  GgufEdit expert;
  expert.leave_out_tensor = "blk.1.ffn_up_exps.weight";
  const bora::Error moe = load_error(write_edited_copy(dir, kMixtralQ4K, expert, "moe.gguf"));
  CHECK(moe.code() == bora::ErrorCode::kMissing);
  check_names(moe, {"moe.gguf", "blk.1.ffn_up"});
}

TEST_CASE("model errors: a tensor whose shape disagrees with the configuration names the tensor and both shapes") {
  ScratchDir dir;
  REQUIRE(dir.ok());
  SUBCASE("embedding_length changed in the metadata") {
    GgufEdit edit;
    edit.leave_out_keys = {"llama.embedding_length"};
    edit.add_keys = [](GgufWriter& w) { w.add_u32("llama.embedding_length", 128); };
    const bora::Error error = load_error(write_edited_copy(dir, kMistralQ4, edit));
    CHECK(error.code() == bora::ErrorCode::kShape);
    check_names(error, {"'token_embd.weight'", "[256, 512]", "expected [128, 512]"});
  }
  SUBCASE("one matrix has fewer rows") {
    GgufEdit edit;
    edit.edited_tensor = "blk.0.attn_v.weight";
    edit.new_ne = {256, 32};
    const bora::Error error = load_error(write_edited_copy(dir, kMistralQ4, edit));
    CHECK(error.code() == bora::ErrorCode::kShape);
    check_names(error, {"'blk.0.attn_v.weight'", "[256, 32]", "expected [256, 64]"});
  }
  SUBCASE("one norm is too short") {
    GgufEdit edit;
    edit.edited_tensor = "blk.1.ffn_norm.weight";
    edit.new_ne = {128};
    const bora::Error error = load_error(write_edited_copy(dir, kMistralQ4, edit));
    CHECK(error.code() == bora::ErrorCode::kShape);
    check_names(error, {"'blk.1.ffn_norm.weight'", "[128]", "expected [256]"});
  }
  SUBCASE("a stacked expert tensor with 7 experts") {
    GgufEdit edit;
    edit.edited_tensor = "blk.0.ffn_down_exps.weight";
    edit.new_ne = {256, 256, 7};
    const bora::Error error = load_error(write_edited_copy(dir, kMixtralQ4K, edit));
    CHECK(error.code() == bora::ErrorCode::kShape);
    check_names(error, {"'blk.0.ffn_down_exps.weight'", "[256, 256, 7]", "expected [256, 256, 8]"});
  }
}

TEST_CASE("model errors: a tensor of a ggml type bora does not implement") {
  ScratchDir dir;
  REQUIRE(dir.ok());
  struct TypeCase { int64_t id; const char* shown; };
  for (const TypeCase c : {TypeCase{99, "ggml type 99 (unknown)"}, TypeCase{3, "ggml type 3 (Q4_1)"},
                           TypeCase{16, "ggml type 16 (IQ2_XXS)"}}) {
    CAPTURE(c.id);
    GgufEdit edit;
    edit.edited_tensor = "blk.0.attn_q.weight";
    edit.new_type = c.id;
    const bora::Error error = load_error(write_edited_copy(dir, kMistralQ4, edit));
    CHECK(error.code() == bora::ErrorCode::kUnsupported);
    check_names(error, {"edited.gguf", "'blk.0.attn_q.weight'", c.shown, "does not support"});
  }
}

TEST_CASE("model errors: a params.json whose sizes disagree with consolidated.safetensors") {
  // The file holds n_layers 2, hidden_dim 512, n_kv_heads 2 and vocab_size 512; each case changes one.
  struct SizeCase {
    const char* changed;
    int n_layers, hidden_dim, n_kv_heads, vocab_size;
    bora::ErrorCode code;
    std::vector<const char*> names;
  };
  const SizeCase cases[] = {
      {"hidden_dim", 2, 384, 2, 512, bora::ErrorCode::kShape,
       {"'layers.0.feed_forward.w1.weight'", "[256, 512]", "expected [256, 384]"}},
      {"n_kv_heads", 2, 512, 4, 512, bora::ErrorCode::kShape,
       {"'layers.0.attention.wk.weight'", "[256, 64]", "expected [256, 128]"}},
      {"more layers than the file holds", 3, 512, 2, 512, bora::ErrorCode::kMissing, {"missing tensor", "'layers.2."}},
      {"vocab_size", 2, 512, 2, 32000, bora::ErrorCode::kShape,
       {"'tok_embeddings.weight'", "[256, 512]", "expected [256, 32000]"}},
  };
  ScratchDir dir;
  REQUIRE(dir.ok());
  copy_file(bora_test::data_path("tiny-mistral/native/consolidated.safetensors"), dir.file("consolidated.safetensors"));
  for (const SizeCase& c : cases) {
    INFO("changed: " << c.changed);
    dir.write("params.json", R"({"dim": 256, "n_layers": )" + std::to_string(c.n_layers) +
                                 R"(, "head_dim": 32, "hidden_dim": )" + std::to_string(c.hidden_dim) +
                                 R"(, "n_heads": 8, "n_kv_heads": )" + std::to_string(c.n_kv_heads) +
                                 R"(, "norm_eps": 1e-05, "vocab_size": )" + std::to_string(c.vocab_size) +
                                 R"(, "rope_theta": 10000.0, "sliding_window": 16})");
    const bora::Error error = load_error(dir.path());
    CHECK(error.code() == c.code);
    check_names(error, c.names);
  }
}

TEST_CASE("model errors: truncated model files name the file and the truncation") {
  ScratchDir dir;
  REQUIRE(dir.ok());
  const std::vector<uint8_t> whole = bora_test::read_file_bytes(bora_test::data_path(kMistralQ4));
  REQUIRE(whole.size() > 100000);
  SUBCASE("GGUF cut inside the tensor data") {
    const std::string path = dir.write("cut.gguf", whole.data(), whole.size() / 2);
    const bora::Error error = load_error(path);
    CHECK(error.code() == bora::ErrorCode::kFormat);
    check_names(error, {"cut.gguf", "lies outside the file"});
  }
  SUBCASE("GGUF cut inside the metadata") {
    const std::string path = dir.write("cut.gguf", whole.data(), 1000);
    const bora::Error error = load_error(path);
    CHECK(error.code() == bora::ErrorCode::kFormat);
    check_names(error, {"cut.gguf", "'tokenizer.ggml.tokens'", "cannot fit"});
  }
  SUBCASE("GGUF cut one byte short") {
    const std::string path = dir.write("cut.gguf", whole.data(), whole.size() - 1);
    const bora::Error error = load_error(path);
    check_names(error, {"cut.gguf", "'output.weight'", "outside the file"});
  }
  SUBCASE("an empty file") {
    const std::string path = dir.write("empty.gguf", whole.data(), 0);
    const bora::Error error = load_error(path);
    check_names(error, {"empty.gguf"});
  }
  SUBCASE("consolidated.safetensors cut in half") {
    const std::vector<uint8_t> st =
        bora_test::read_file_bytes(bora_test::data_path("tiny-mistral/native/consolidated.safetensors"));
    REQUIRE(st.size() > 100000);
    dir.write("consolidated.safetensors", st.data(), st.size() / 2);
    copy_file(bora_test::data_path("tiny-mistral/native/params.json"), dir.file("params.json"));
    const bora::Error error = load_error(dir.path());
    CHECK(error.code() == bora::ErrorCode::kFormat);
    check_names(error, {"consolidated.safetensors", "data_offsets"});
  }
}

TEST_CASE("model errors: paths that hold no model") {
  SUBCASE("a nonexistent path") {
    const bora::Error error = load_error(bora_test::data_path("tiny-mistral/no-such-model.gguf"));
    CHECK(error.code() == bora::ErrorCode::kIo);
    check_names(error, {"no-such-model.gguf", "no such file or folder"});
  }
  SUBCASE("a Hugging Face folder whose config.json is malformed") {
    ScratchDir dir;
    REQUIRE(dir.ok());
    copy_file(bora_test::data_path("tiny-mistral/hf/model.safetensors"), dir.file("model.safetensors"));
    dir.write("config.json", std::string("{\"model_type\": \"mistral\", \"hidden_size\": 256,"));
    bora::Error error = load_error(dir.path());
    CHECK(error.code() == bora::ErrorCode::kFormat);
    check_names(error, {"config.json", "malformed JSON"});

    dir.write("config.json", std::string(R"({"model_type": "mistral", "hidden_size": "256"})"));
    error = load_error(dir.path());
    check_names(error, {"config.json", "'hidden_size'", "a string, expected an integer"});

    dir.write("config.json", std::string(R"({"model_type": "mistral", "hidden_size": 256})"));
    error = load_error(dir.path());
    CHECK(error.code() == bora::ErrorCode::kMissing);
    check_names(error, {"config.json", "'num_hidden_layers'", "missing"});

    dir.write("config.json", std::string("[1, 2, 3]"));
    error = load_error(dir.path());
    check_names(error, {"config.json", "expected a JSON object"});
  }
}

TEST_CASE("model errors: a Mixtral file using more experts per token than it has") {
  ScratchDir dir;
  REQUIRE(dir.ok());
  GgufEdit edit;
  edit.leave_out_keys = {"llama.expert_used_count"};
  edit.add_keys = [](GgufWriter& w) { w.add_u32("llama.expert_used_count", 9); };
  const bora::Error error = load_error(write_edited_copy(dir, kMixtralQ4K, edit));
  CHECK(error.code() == bora::ErrorCode::kFormat);
  check_names(error, {"edited.gguf", "experts used per token is 9", "1..8"});

  edit.add_keys = [](GgufWriter& w) { w.add_u32("llama.expert_used_count", 0); };
  const bora::Error zero = load_error(write_edited_copy(dir, kMixtralQ4K, edit, "zero.gguf"));
  check_names(zero, {"zero.gguf", "experts used per token is 0"});
}

TEST_CASE("model errors: a preset of the wrong kind refuses the file") {
  auto dense = bora::load<bora::Mistral7B>(bora_test::data_path(kMixtralQ4K));
  REQUIRE_FALSE(dense);
  CHECK(dense.error().code() == bora::ErrorCode::kInvalidArgument);
  check_names(dense.error(), {"tiny-mixtral-Q4_K.gguf", "needs a dense model", "8 experts"});

  auto sparse = bora::load<bora::Mixtral8x7BExact>(bora_test::data_path(kMistralQ4));
  REQUIRE_FALSE(sparse);
  CHECK(sparse.error().code() == bora::ErrorCode::kInvalidArgument);
  check_names(sparse.error(), {"tiny-mistral-Q4_0.gguf", "needs a mixture-of-experts model"});
}

TEST_CASE("model errors: a token outside the vocabulary is refused before anything is computed") {
  auto model = bora::load_any(bora_test::data_path(kMistralQ4));
  REQUIRE(model);
  bora::ContextParams params;
  params.n_ctx = 16;
  auto ctx = (*model)->create_context(params);
  REQUIRE(ctx);
  std::vector<float> logits(512);
  const int32_t good_then_bad[] = {1, 7, 512};
  bora::Status status = (*model)->forward(**ctx, good_then_bad, 3, logits.data(), false);
  REQUIRE_FALSE(status);
  CHECK(status.error().code() == bora::ErrorCode::kInvalidArgument);
  check_names(status.error(), {"token 512 at index 2", "outside the vocabulary (512)"});
  CHECK((*ctx)->n_past() == 0);
  const int32_t negative = -1;
  status = (*model)->forward(**ctx, &negative, 1, logits.data(), false);
  REQUIRE_FALSE(status);
  check_names(status.error(), {"token -1 at index 0"});
  // The context is still usable.
  CHECK((*model)->forward(**ctx, good_then_bad, 2, logits.data(), false));
  CHECK((*ctx)->n_past() == 2);
}

// ---- ollama: names ---------------------------------------------------------------------------------

namespace {

// Sets an environment variable for one scope and puts the old value back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_old_ = true;
      old_ = old;
    }
    set(value.c_str());
  }
  ~ScopedEnv() {
    if (had_old_) {
      set(old_.c_str());
    } else {
#if defined(_WIN32)
      _putenv_s(name_, "");
#else
      unsetenv(name_);
#endif
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  void set(const char* value) {
#if defined(_WIN32)
    _putenv_s(name_, value);
#else
    setenv(name_, value, 1);
#endif
  }
  const char* name_;
  bool had_old_ = false;
  std::string old_;
};

const char* const kBlobHex = "3b9c1f0e5a7d2c4b6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

std::string manifest_json(const std::string& media_type, const std::string& digest) {
  return std::string(R"({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",)") +
         R"("config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:)" +
         std::string(64, '0') + R"(", "size": 10}, "layers": [{"mediaType": "application/vnd.ollama.image.license",)" +
         R"("digest": "sha256:)" + std::string(64, '1') + R"(", "size": 5}, {"mediaType": ")" + media_type +
         R"(", "digest": ")" + digest + R"(", "size": 792224}]})";
}

}  // namespace

TEST_CASE("ollama: a model in a fake Ollama store loads and computes what the file computes") {
  ScratchDir store;
  REQUIRE(store.ok());
  copy_file(bora_test::data_path(kMistralQ4), store.file(std::string("blobs/sha256-") + kBlobHex));
  store.write("manifests/registry.ollama.ai/library/tiny/latest",
              manifest_json("application/vnd.ollama.image.model", std::string("sha256:") + kBlobHex));
  store.write("manifests/registry.ollama.ai/library/tiny/q4",
              manifest_json("application/vnd.ollama.image.model", std::string("sha256:") + kBlobHex));
  ScopedEnv env("OLLAMA_MODELS", store.path());

  auto resolved = bora::resolve_ollama_model("tiny");
  REQUIRE(resolved);
  CHECK(*resolved == store.file(std::string("blobs/sha256-") + kBlobHex));
  for (const char* name : {"tiny:q4", "library/tiny", "registry.ollama.ai/library/tiny:latest"}) {
    CAPTURE(name);
    auto same = bora::resolve_ollama_model(name, store.path());
    if (!same) FAIL_CHECK(same.error().message());
    else CHECK(*same == *resolved);
  }

  bora::LoadParams params;
  params.kv_cache_type = bora::KvCacheType::kF32;
  auto via_ollama = bora::load_any("ollama:tiny", params);
  if (!via_ollama) FAIL_CHECK(via_ollama.error().message());
  REQUIRE(via_ollama);
  auto direct = bora::load_any(bora_test::data_path(kMistralQ4), params);
  REQUIRE(direct);
  CHECK((*via_ollama)->tokenizer() != nullptr);
  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mistral", "Q4_0", &golden));
  const std::vector<int32_t> tokens(golden.tokens.begin(), golden.tokens.begin() + 16);
  const std::vector<float> logits = all_logits(**via_ollama, tokens);
  CHECK(logits == all_logits(**direct, tokens));
  // And it is the real model, not merely the same wrong answer twice.
  const auto expected =
      bora_test::read_floats(bora_test::data_path("tiny-mistral/golden/Q4_0.logits_chunked.f32.bin"));
  REQUIRE(expected.size() == 64 * 512);
  const std::vector<float> first_rows(expected.begin(), expected.begin() + 16 * 512);
  CHECK(bora_test::max_abs_difference(logits, first_rows) < 1e-3f);

  auto preset = bora::load<bora::Mistral7B>("ollama:tiny:q4");
  CHECK(preset);
}

TEST_CASE("ollama: bad names and broken stores give errors") {
  ScratchDir store;
  REQUIRE(store.ok());
  copy_file(bora_test::data_path(kMistralQ4), store.file(std::string("blobs/sha256-") + kBlobHex));
  const std::string good_digest = std::string("sha256:") + kBlobHex;
  store.write("manifests/registry.ollama.ai/library/nomodel/latest",
              manifest_json("application/vnd.ollama.image.template", good_digest));
  store.write("manifests/registry.ollama.ai/library/baddigest/latest",
              manifest_json("application/vnd.ollama.image.model", "sha256:../../../etc/passwd"));
  store.write("manifests/registry.ollama.ai/library/shortdigest/latest",
              manifest_json("application/vnd.ollama.image.model", "sha256:abc"));
  store.write("manifests/registry.ollama.ai/library/upperdigest/latest",
              manifest_json("application/vnd.ollama.image.model", "sha256:" + std::string(64, 'A')));
  store.write("manifests/registry.ollama.ai/library/noblob/latest",
              manifest_json("application/vnd.ollama.image.model", "sha256:" + std::string(64, 'e')));
  store.write("manifests/registry.ollama.ai/library/notjson/latest", std::string("{\"layers\": [ {"));
  store.write("manifests/registry.ollama.ai/library/nolayers/latest", std::string("{\"schemaVersion\": 2}"));
  // A model of that name exists one level up, where a "../" name would lead.
  store.write("manifests/registry.ollama.ai/x/latest",
              manifest_json("application/vnd.ollama.image.model", good_digest));
  ScopedEnv env("OLLAMA_MODELS", store.path());

  struct BadName { const char* name; bora::ErrorCode code; std::vector<const char*> parts; };
  const BadName cases[] = {
      {"../x", bora::ErrorCode::kInvalidArgument, {"ollama:../x", "'..' is not a valid model name part"}},
      {"library/../x", bora::ErrorCode::kInvalidArgument, {"'..' is not a valid model name part"}},
      {"tiny:../../x", bora::ErrorCode::kInvalidArgument, {"ollama:tiny:../../x"}},
      {"nomodel:..", bora::ErrorCode::kInvalidArgument, {"'..' is not a valid model name part"}},
      {"", bora::ErrorCode::kInvalidArgument, {"not a valid model name part"}},
      {"a/b/c/d", bora::ErrorCode::kInvalidArgument, {"expected NAME[:TAG]"}},
      {"we ird", bora::ErrorCode::kInvalidArgument, {"'we ird' is not a valid model name part"}},
      {"missing", bora::ErrorCode::kIo, {"ollama:missing", "no manifest", "OLLAMA_MODELS"}},
      {"tiny:other-tag", bora::ErrorCode::kIo, {"no manifest"}},
      {"nomodel", bora::ErrorCode::kFormat, {"lists no model layer"}},
      {"baddigest", bora::ErrorCode::kFormat, {"bad model digest 'sha256:../../../etc/passwd'"}},
      {"shortdigest", bora::ErrorCode::kFormat, {"bad model digest 'sha256:abc'"}},
      {"upperdigest", bora::ErrorCode::kFormat, {"bad model digest"}},
      {"noblob", bora::ErrorCode::kIo, {"blob sha256-eeee", "is missing"}},
      {"notjson", bora::ErrorCode::kFormat, {"not valid JSON"}},
      {"nolayers", bora::ErrorCode::kFormat, {"no \"layers\" array"}},
  };
  for (const BadName& c : cases) {
    CAPTURE(c.name);
    auto resolved = bora::resolve_ollama_model(c.name, store.path());
    CHECK_FALSE(resolved);
    auto model = bora::load_any(std::string("ollama:") + c.name);
    REQUIRE_FALSE(model);
    CHECK(model.error().code() == c.code);
    check_names(model.error(), c.parts);
  }
}

// ---- allocations while reading hostile files -------------------------------------------------------

namespace {

// A complete tiny llama-architecture model (dim 64, 2 layers, 4 heads of 16, 2 kv heads, ffn 128,
// vocab 32; Q8_0 matrices, F32 norms) that bora loads; its weights are GgufWriter's byte pattern.
// `pad_bytes` adds a string value of that size, so that claims can be "plausible" for the file.
GgufWriter tiny_model_writer(size_t pad_bytes = 0, bool with_tokens = true) {
  GgufWriter w;
  bora_test::add_tiny_llama_sizes(w);
  w.add_u32("llama.vocab_size", 32);
  w.add_string("tokenizer.ggml.model", "llama");
  if (with_tokens) {
    std::vector<std::string> tokens;
    for (int i = 0; i < 32; ++i) tokens.push_back("t" + std::to_string(i));
    w.add_string_array("tokenizer.ggml.tokens", tokens);
  }
  if (pad_bytes > 0) w.add_string("padding", std::string(pad_bytes, 'p'));
  const uint32_t kQ8_0 = 8, kF32 = 0;  // matrices Q8_0 (keeps the file small), norms F32
  w.add_tensor("token_embd.weight", {64, 32}, kQ8_0);
  w.add_tensor("output_norm.weight", {64}, kF32);
  w.add_tensor("output.weight", {64, 32}, kQ8_0);
  for (int l = 0; l < 2; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    w.add_tensor(b + "attn_norm.weight", {64}, kF32);
    w.add_tensor(b + "attn_q.weight", {64, 64}, kQ8_0);
    w.add_tensor(b + "attn_k.weight", {64, 32}, kQ8_0);
    w.add_tensor(b + "attn_v.weight", {64, 32}, kQ8_0);
    w.add_tensor(b + "attn_output.weight", {64, 64}, kQ8_0);
    w.add_tensor(b + "ffn_norm.weight", {64}, kF32);
    w.add_tensor(b + "ffn_gate.weight", {64, 128}, kQ8_0);
    w.add_tensor(b + "ffn_down.weight", {128, 64}, kQ8_0);
    w.add_tensor(b + "ffn_up.weight", {64, 128}, kQ8_0);
  }
  return w;
}

void put_u64(std::vector<uint8_t>& bytes, size_t offset, uint64_t value) {
  REQUIRE(offset + 8 <= bytes.size());
  for (int i = 0; i < 8; ++i) bytes[offset + static_cast<size_t>(i)] = static_cast<uint8_t>(value >> (8 * i));
}

// The tiny model with some u32 metadata values replaced (or added).
std::vector<uint8_t> tiny_model_with(const std::vector<std::pair<std::string, uint32_t>>& values) {
  GgufWriter base = tiny_model_writer();
  const std::vector<uint8_t> built = base.build();
  auto parsed = bora::GgufFile::parse(built.data(), built.size(), "base");
  REQUIRE(parsed);
  GgufWriter w;
  std::vector<std::string> replaced;
  for (const auto& v : values) replaced.push_back(v.first);
  bora_test::copy_gguf_metadata(*parsed, w, replaced);
  for (const auto& v : values) w.add_u32(v.first, v.second);
  return bora_test::build_gguf_with_tensor_bytes(w, bora_test::gguf_tensor_bytes(*parsed));
}

struct HostileFile {
  std::string what;
  std::vector<uint8_t> bytes;
  bool loads = false;  // a claim only a context would act on: the model itself is fine
};

// The hostile variants: counts, lengths and sizes that claim far more than the file holds.
[[maybe_unused]] std::vector<HostileFile> hostile_files() {  // unused where the probe is compiled out (TSan)
  std::vector<HostileFile> files;
  const uint64_t huge[] = {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{1} << 32};
  for (uint64_t count : huge) {
    GgufWriter w = tiny_model_writer();
    w.override_counts = true;
    w.n_kv_override = w.kv_count();
    w.n_tensors_override = count;
    files.push_back({"tensor count " + std::to_string(count), w.build()});
    w.n_tensors_override = 21;
    w.n_kv_override = count;
    files.push_back({"metadata count " + std::to_string(count), w.build()});
  }
  for (size_t pad : {size_t{0}, size_t{50} << 10, size_t{100} << 10}) {
    // Counts as large as the bytes left could hold, with only the real entries present: in small
    // files whose bulk is a string value (room for metadata) or tensor data (room for tensor infos),
    // and in the whole tiny model.
    GgufWriter long_string, big_tensor;
    long_string.add_string("general.architecture", "llama");
    long_string.add_string("padding", std::string(pad, 'p'));
    long_string.add_tensor("token_embd.weight", {64, 32}, 0);
    big_tensor.add_string("general.architecture", "llama");
    big_tensor.add_tensor("token_embd.weight", {64, 32 + pad / 256}, 0);
    GgufWriter model = tiny_model_writer(pad);
    for (GgufWriter* w : {&long_string, &big_tensor, &model}) {
      const size_t size = w->build().size();
      const size_t tensors = w == &model ? 21 : 1;
      w->override_counts = true;
      w->n_tensors_override = tensors;
      w->n_kv_override = (size - 24 - tensors * 24) / 13;
      files.push_back({"plausible metadata count " + std::to_string(w->n_kv_override) + " in " +
                           std::to_string(size) + " bytes", w->build()});
      w->n_kv_override = w->kv_count();
      w->n_tensors_override = (size - w->metadata_end) / 24;
      files.push_back({"plausible tensor count " + std::to_string(w->n_tensors_override) + " in " +
                           std::to_string(size) + " bytes", w->build()});
    }
  }
  {
    // The last key's length, a string value's length, the first tensor name's length.
    GgufWriter w = tiny_model_writer();
    w.add_u32("zz.last", 7);
    std::vector<uint8_t> bytes = w.build();
    const size_t last_kv = w.metadata_end - (8 + 7 + 4 + 4);
    for (uint64_t length : {uint64_t{1} << 62, ~uint64_t{0}, uint64_t{bytes.size()}}) {
      std::vector<uint8_t> key = bytes;
      put_u64(key, last_kv, length);
      files.push_back({"key length " + std::to_string(length), key});
      std::vector<uint8_t> name = bytes;
      put_u64(name, w.metadata_end, length);
      files.push_back({"tensor name length " + std::to_string(length), name});
    }
    for (uint64_t length : {uint64_t{1} << 62, uint64_t{1} << 30}) {
      GgufWriter s = tiny_model_writer();
      bora_test::ByteWriter value;
      value.u64(length);
      value.raw("abc", 3);
      s.add_raw("general.name", bora_test::kGgufString, value.bytes());
      files.push_back({"string value length " + std::to_string(length), s.build()});
    }
  }
  // Arrays claiming more elements than the file holds.
  struct ArrayClaim { uint32_t type; uint64_t count; const char* key; };
  const ArrayClaim arrays[] = {
      {bora_test::kGgufU8, uint64_t{1} << 62, "tokenizer.ggml.token_type"},
      {bora_test::kGgufF32, uint64_t{1} << 62, "tokenizer.ggml.scores"},
      {bora_test::kGgufF32, uint64_t{1} << 20, "tokenizer.ggml.scores"},
      {bora_test::kGgufI32, uint64_t{1} << 40, "tokenizer.ggml.token_type"},
      {bora_test::kGgufString, uint64_t{1} << 61, "tokenizer.ggml.tokens"},
      {bora_test::kGgufString, uint64_t{1} << 20, "tokenizer.ggml.tokens"},
      {bora_test::kGgufArray, uint64_t{1} << 40, "nested"},
  };
  for (const ArrayClaim& a : arrays) {
    const bool tokens = std::string(a.key) == "tokenizer.ggml.tokens";
    GgufWriter w = tiny_model_writer(0, !tokens);
    bora_test::ByteWriter value;
    value.u32(a.type);
    value.u64(a.count);
    if (a.type == bora_test::kGgufString) {
      value.str("t0");
      value.str("t1");
    } else if (a.type == bora_test::kGgufArray) {
      value.u32(bora_test::kGgufU8);
      value.u64(1);
      value.u8(0);
    } else {
      for (int i = 0; i < 16; ++i) value.u8(0);
    }
    w.add_raw(a.key, bora_test::kGgufArray, value.bytes());
    files.push_back({std::string(a.key) + ": array of " + std::to_string(a.count), w.build()});
  }
  // Tensors whose shapes claim more than the file holds.
  {
    GgufWriter w = tiny_model_writer();
    w.add_tensor("huge.weight", {uint64_t{1} << 40, uint64_t{1} << 20}, 0, -1, 32);
    files.push_back({"tensor of 2^60 values", w.build()});
    GgufWriter v = tiny_model_writer();
    v.add_tensor("overflow.weight", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, -1, 32);
    files.push_back({"tensor whose size overflows", v.build()});
  }
  // Sizes in the metadata that the configuration accepts but the tensors do not back.
  const std::vector<std::pair<std::string, uint32_t>> configs[] = {
      {{"llama.vocab_size", (1u << 24) - 1}},
      {{"llama.embedding_length", (1u << 20) - 1}},
      {{"llama.block_count", 4095}},
      {{"llama.feed_forward_length", (1u << 20) - 1}},
      {{"llama.context_length", (1u << 30) - 1}},
      {{"llama.attention.sliding_window", (1u << 30) - 1}},
      {{"llama.expert_count", 4095}, {"llama.expert_used_count", 4095}},
  };
  for (const auto& values : configs) {
    const bool loads = values[0].first == "llama.context_length" || values[0].first == "llama.attention.sliding_window";
    files.push_back({values[0].first + " = " + std::to_string(values[0].second), tiny_model_with(values), loads});
  }
  return files;
}

}  // namespace

TEST_CASE("hostile GGUF files: no single allocation is larger than the file") {
#if defined(BORA_TEST_NO_ALLOCATION_PROBE)
  MESSAGE("built without the allocation probe (BORA_TEST_NO_ALLOCATION_PROBE)");
#else
  REQUIRE(bora_test::AllocationProbe::installed());
  {  // The probe sees allocations, on this thread and others.
    bora_test::AllocationProbe probe;
    void* volatile block = ::operator new(size_t{3} << 20);
    ::operator delete(block);
    std::vector<char> small(1000);
    CHECK(probe.largest() == (size_t{3} << 20));
    CHECK(probe.allocations() >= 2);
  }
  const size_t kSlack = size_t{64} << 10;
  ScratchDir dir;
  REQUIRE(dir.ok());

  // The intact tiny model loads (so the probe also covers a successful load), within the bound.
  {
    GgufWriter w = tiny_model_writer();
    const std::vector<uint8_t> bytes = w.build();
    const std::string path = dir.write("intact.gguf", bytes);
    REQUIRE_FALSE(path.empty());
    bora_test::AllocationProbe probe;
    auto model = bora::load_any(path);
    probe.stop();
    if (!model) FAIL_CHECK(model.error().message());
    CHECK(probe.largest() <= bytes.size() + kSlack);
  }

  const std::vector<HostileFile> files = hostile_files();
  CHECK(files.size() > 30);
  for (const HostileFile& file : files) {
    CAPTURE(file.what);
    CAPTURE(file.bytes.size());
    size_t largest_parse = 0, largest_load = 0;
    {
      bora_test::AllocationProbe probe;
      auto parsed = bora::GgufFile::parse(file.bytes.data(), file.bytes.size(), "hostile.gguf");
      probe.stop();
      largest_parse = probe.largest();
    }
    const std::string path = dir.write("hostile.gguf", file.bytes);
    REQUIRE_FALSE(path.empty());
    {
      bora_test::AllocationProbe probe;
      auto model = bora::load_any(path);
      probe.stop();
      largest_load = probe.largest();
      CHECK(bool(model) == file.loads);
      if (!model) CHECK(contains(model.error(), "hostile.gguf"));
    }
    CAPTURE(largest_parse);
    CAPTURE(largest_load);
    CHECK(largest_parse <= file.bytes.size() + kSlack);
    CHECK(largest_load <= file.bytes.size() + kSlack);
  }
#endif
}

TEST_CASE("model errors: a tokenizer with more pieces than the model has token embeddings is refused") {
  // A consistent model of 256 token rows (metadata, embedding and output agree) whose tokenizer still
  // lists all 512 pieces: encoding some text would produce ids past the embedding table.
  ScratchDir dir;
  REQUIRE(dir.ok());
  GgufEdit edit;
  edit.leave_out_keys = {"llama.vocab_size"};
  edit.add_keys = [](GgufWriter& w) { w.add_u32("llama.vocab_size", 256); };
  edit.edited_tensor = "token_embd.weight";
  edit.also_edited_tensor = "output.weight";
  edit.new_ne = {256, 256};
  const std::string path = write_edited_copy(dir, "tiny-mistral/tiny-mistral-F32.gguf", edit);
  auto weights = bora::load_any_model(path);  // the weights alone are consistent
  REQUIRE_MESSAGE(weights, (weights ? "" : weights.error().message()));
  CHECK((*weights)->config().vocab_size == 256);
  const bora::Error error = load_error(path);
  CHECK(error.code() == bora::ErrorCode::kShape);
  check_names(error, {"edited.gguf", "512 pieces", "256 token embeddings"});
}
