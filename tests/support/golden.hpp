// Why this file exists: the model tests all need the same things from tests/data — the golden token
// sequence, golden logits files and a max-abs comparison — so they are read one way, here.
#ifndef BORA_TESTS_SUPPORT_GOLDEN_HPP
#define BORA_TESTS_SUPPORT_GOLDEN_HPP

#include <simdjson.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#ifndef BORA_TEST_DATA_DIR
#define BORA_TEST_DATA_DIR "tests/data"
#endif

namespace bora_test {

inline std::string data_path(const std::string& relative) { return std::string(BORA_TEST_DATA_DIR) + "/" + relative; }

// Mistral's tokenizer files and the goldens made from them (tests/data/tokenizer/).
inline std::string tokenizer_path(const std::string& file) { return data_path("tokenizer/" + file); }

inline std::vector<float> read_floats(const std::string& path) {
  std::vector<float> values;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return values;
  float buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, sizeof(float), 4096, f)) > 0) values.insert(values.end(), buffer, buffer + got);
  std::fclose(f);
  return values;
}

inline float max_abs_difference(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size() || a.empty()) return INFINITY;
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) {
    const float d = std::fabs(a[i] - b[i]);
    if (!(d <= worst)) worst = d;  // NaN counts as worst
  }
  return worst;
}

// golden.json of a tiny model: its token sequence and, for MoE, the experts chosen per layer and position.
struct Golden {
  std::vector<int32_t> tokens;
  // selected[variant][layer][position][k]
  std::vector<std::vector<std::vector<int32_t>>> selected_experts;
};

inline bool load_golden(const std::string& model, const std::string& variant, Golden* out) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.load(data_path(model + "/golden/golden.json")).get(root)) return false;
  simdjson::dom::array tokens;
  if (root["tokens"].get_array().get(tokens)) return false;
  for (simdjson::dom::element t : tokens) {
    int64_t v;
    if (t.get_int64().get(v)) return false;
    out->tokens.push_back(static_cast<int32_t>(v));
  }
  simdjson::dom::array layers;
  if (!root["variants"][variant]["moe_selected_experts_full_pass"].get_array().get(layers)) {
    for (simdjson::dom::element layer : layers) {
      std::vector<std::vector<int32_t>> positions;
      simdjson::dom::array pos_array;
      if (layer.get_array().get(pos_array)) return false;
      for (simdjson::dom::element position : pos_array) {
        std::vector<int32_t> ids;
        simdjson::dom::array id_array;
        if (position.get_array().get(id_array)) return false;
        for (simdjson::dom::element id : id_array) {
          int64_t v;
          if (id.get_int64().get(v)) return false;
          ids.push_back(static_cast<int32_t>(v));
        }
        positions.push_back(ids);
      }
      out->selected_experts.push_back(positions);
    }
  }
  return true;
}

}  // namespace bora_test

#endif  // BORA_TESTS_SUPPORT_GOLDEN_HPP
