// Why this file exists: Mixtral GGUF files converted before 2024 store one tensor per expert
// (blk.N.ffn_gate.E.weight) instead of stacked blk.N.ffn_gate_exps.weight; people still have them, so
// bora must load them and compute exactly what the stacked file computes. The test rebuilds that
// layout from the shipped stacked Q8_0 file (the expert bytes are the same, so the Q8_0 golden applies).
#include <doctest/doctest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bora/bora.hpp"
#include "../support/gguf_writer.hpp"
#include "../support/golden.hpp"

namespace {

// "blk.1.ffn_down_exps.weight" -> prefix "blk.1.", role "ffn_down"; false for any other name.
bool split_stacked_expert_name(const std::string& name, std::string* prefix, std::string* role) {
  const std::string suffix = "_exps.weight";
  if (name.rfind("blk.", 0) != 0 || name.size() <= suffix.size() ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return false;
  }
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return false;
  *prefix = name.substr(0, dot + 1);
  *role = name.substr(dot + 1, name.size() - suffix.size() - dot - 1);
  return true;
}

// The same model in the pre-2024 layout: all metadata copied in order, every stacked [D, H, E]
// expert tensor replaced, where it stood, by E tensors [D, H] holding slice E of its bytes.
std::vector<uint8_t> legacy_layout_of(const bora::GgufFile& stacked, const std::string& leave_out_tensor = "") {
  bora_test::GgufWriter w;
  w.alignment = stacked.alignment();
  bora_test::copy_gguf_metadata(stacked, w);
  std::vector<bora_test::GgufTensorBytes> tensors;
  for (bora_test::GgufTensorBytes& t : bora_test::gguf_tensor_bytes(stacked)) {
    std::string prefix, role;
    if (!split_stacked_expert_name(t.name, &prefix, &role)) {
      tensors.push_back(std::move(t));
      continue;
    }
    REQUIRE(t.ne.size() == 3);
    const uint64_t n_experts = t.ne[2];
    REQUIRE(t.data.size() % n_experts == 0);
    const size_t expert_bytes = static_cast<size_t>(t.data.size() / n_experts);
    for (uint64_t e = 0; e < n_experts; ++e) {
      bora_test::GgufTensorBytes one;
      one.name = prefix + role + "." + std::to_string(e) + ".weight";
      if (one.name == leave_out_tensor) continue;
      one.ne = {t.ne[0], t.ne[1]};
      one.ggml_type = t.ggml_type;
      one.data.assign(t.data.begin() + static_cast<std::ptrdiff_t>(e * expert_bytes),
                      t.data.begin() + static_cast<std::ptrdiff_t>((e + 1) * expert_bytes));
      tensors.push_back(std::move(one));
    }
  }
  return bora_test::build_gguf_with_tensor_bytes(w, tensors);
}

// Every row of logits for `tokens` in one exact pass (f32 activations), recording the experts chosen.
std::vector<float> all_logits(const bora::Model& model, const std::vector<int32_t>& tokens,
                              std::vector<int32_t>* trace) {
  bora::ContextParams params;
  params.n_ctx = static_cast<int64_t>(tokens.size());
  params.n_batch = static_cast<int64_t>(tokens.size());
  params.expert_trace = trace;
  params.f32_activations = true;  // the reference's arithmetic, which the golden holds
  auto ctx = model.create_context(params);
  REQUIRE(ctx);
  std::vector<float> logits(tokens.size() * static_cast<size_t>(model.config().vocab_size));
  const bora::Status status =
      model.forward(**ctx, tokens.data(), static_cast<int64_t>(tokens.size()), logits.data(), true);
  if (!status) FAIL_CHECK(status.error().message());
  REQUIRE(status);
  return logits;
}

std::unique_ptr<bora::Model> load_exact(const std::string& path) {
  bora::LoadParams params;
  params.kv_cache_type = bora::KvCacheType::kF32;
  auto model = bora::load_any(path, params);
  if (!model) FAIL_CHECK(model.error().message());
  REQUIRE(model);
  return std::move(*model);
}

}  // namespace

TEST_CASE("legacy Mixtral GGUF: one tensor per expert reproduces the Q8_0 golden and its expert choices") {
  const std::string stacked_path = bora_test::data_path("tiny-mixtral/tiny-mixtral-Q8_0.gguf");
  auto stacked = bora::GgufFile::open(stacked_path);
  REQUIRE(stacked);
  const std::vector<uint8_t> legacy = legacy_layout_of(*stacked);

  // The rebuilt file really has the old layout: 2 layers x 3 roles x 8 experts = 48 expert tensors,
  // 58 Q8_0 + 7 F32 in all, no stacked tensor, and each expert holds its slice of the stacked bytes.
  auto parsed = bora::GgufFile::parse(legacy.data(), legacy.size(), "legacy.gguf");
  REQUIRE(parsed);
  int q8_0 = 0, f32 = 0;
  for (const bora::TensorView& t : parsed->tensors()) {
    CHECK(t.name.find("_exps") == std::string::npos);
    q8_0 += t.type == bora::WeightType::kQ8_0;
    f32 += t.type == bora::WeightType::kF32;
  }
  CHECK(q8_0 == 58);
  CHECK(f32 == 7);
  CHECK(parsed->tensors().size() == 65);
  const bora::TensorView* down7 = parsed->find_tensor("blk.1.ffn_down.7.weight");
  const bora::TensorView* stacked_down = stacked->find_tensor("blk.1.ffn_down_exps.weight");
  REQUIRE(down7 != nullptr);
  REQUIRE(stacked_down != nullptr);
  CHECK(down7->n_dims == 2);
  CHECK(down7->ne[0] == 256);
  CHECK(down7->ne[1] == 256);
  REQUIRE(down7->bytes * 8 == stacked_down->bytes);
  CHECK(std::equal(down7->data, down7->data + down7->bytes, stacked_down->data + 7 * down7->bytes));
  CHECK(parsed->keys() == stacked->keys());

  bora_test::ScratchDir dir;
  REQUIRE(dir.ok());
  const std::string legacy_path = dir.write("tiny-mixtral-legacy-Q8_0.gguf", legacy);
  REQUIRE_FALSE(legacy_path.empty());
  auto model = load_exact(legacy_path);
  CHECK(model->config().n_experts == 8);
  CHECK(model->config().n_experts_used == 2);
  CHECK(std::string(model->preset_name()) == "mixtral");
  CHECK(model->files().find_tensor("blk.0.ffn_gate.3.weight") != nullptr);
  CHECK(model->files().find_tensor("blk.0.ffn_gate_exps.weight") == nullptr);

  bora_test::Golden golden;
  REQUIRE(bora_test::load_golden("tiny-mixtral", "Q8_0", &golden));
  REQUIRE(golden.tokens.size() == 64);
  REQUIRE(golden.selected_experts.size() == 2);
  const auto expected = bora_test::read_floats(bora_test::data_path("tiny-mixtral/golden/Q8_0.logits_chunked.f32.bin"));
  REQUIRE(expected.size() == 64 * 512);

  std::vector<int32_t> trace;
  const std::vector<float> logits = all_logits(*model, golden.tokens, &trace);
  CHECK(bora_test::max_abs_difference(logits, expected) < 1e-3f);
  // trace: layer, position, then the chosen experts in top-k order, per token and layer.
  REQUIRE(trace.size() == 2 * 64 * 4);
  int mismatches = 0;
  for (size_t i = 0; i < trace.size(); i += 4) {
    const auto& want = golden.selected_experts[static_cast<size_t>(trace[i])][static_cast<size_t>(trace[i + 1])];
    REQUIRE(want.size() == 2);
    if (want[0] != trace[i + 2] || want[1] != trace[i + 3]) ++mismatches;
  }
  CHECK(mismatches == 0);

  // Same bytes, same kernels: the two layouts agree bit for bit, not just within the tolerance.
  auto stacked_model = load_exact(stacked_path);
  std::vector<int32_t> stacked_trace;
  CHECK(all_logits(*stacked_model, golden.tokens, &stacked_trace) == logits);
  CHECK(stacked_trace == trace);
}

TEST_CASE("legacy Mixtral GGUF: a missing expert tensor is named in the error") {
  auto stacked = bora::GgufFile::open(bora_test::data_path("tiny-mixtral/tiny-mixtral-Q4_K.gguf"));
  REQUIRE(stacked);
  bora_test::ScratchDir dir;
  REQUIRE(dir.ok());
  const std::string path = dir.write("broken.gguf", legacy_layout_of(*stacked, "blk.1.ffn_up.5.weight"));
  REQUIRE_FALSE(path.empty());
  auto model = bora::load_any(path);
  REQUIRE_FALSE(model);
  CHECK(model.error().code() == bora::ErrorCode::kMissing);
  CHECK_MESSAGE(model.error().str().find("blk.1.ffn_up.5.weight") != std::string::npos, model.error().message());
}
