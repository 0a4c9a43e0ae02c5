// Why this file exists: bora's tokenizer claims to produce SentencePiece's exact ids faster than the
// SentencePiece C++ library itself; this program measures both on the same texts and checks the ids.
// It is the one example that needs libsentencepiece (Debian: libsentencepiece-dev, link -lsentencepiece).
//
//   tokenize_bench [--model tokenizer.model] [--goldens tokenizer_goldens.json] [--english FILE] [--seconds S]
#include <sentencepiece_processor.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "args.hpp"
#include "bora/text/tokenizer.hpp"

namespace {

struct Sample {
  std::string name;
  std::string text;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Runs `encode` until `min_seconds` have passed; returns megabytes (1e6 bytes) of text per second.
template <class Encode>
double throughput(const std::string& text, double min_seconds, Encode encode) {
  encode();  // warm caches and allocator
  size_t runs = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0.0;
  do {
    encode();
    ++runs;
    elapsed = seconds_since(start);
  } while (elapsed < min_seconds);
  return static_cast<double>(text.size()) * static_cast<double>(runs) / elapsed / 1e6;
}

bool read_file(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  *out = buffer.str();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "tests/data/tokenizer/tokenizer.model.v1";
  std::string goldens_path = "tests/data/tokenizer/tokenizer_goldens.json";
  std::string english_path = "tests/data/demo-mistral/heldout.txt";
  double min_seconds = 1.0;
  example_args::Parser args(argc, argv, "tokenize_bench");
  while (args.next()) {
    if (args.is("--model")) model_path = args.text();
    else if (args.is("--goldens")) goldens_path = args.text();
    else if (args.is("--english")) english_path = args.text();
    else if (args.is("--seconds")) min_seconds = args.real(0, 3600);
    else args.unknown();
  }

  auto load_start = std::chrono::steady_clock::now();
  bora::Expected<bora::Tokenizer> tokenizer = bora::Tokenizer::from_file(model_path);
  const double bora_load_ms = seconds_since(load_start) * 1e3;
  if (!tokenizer) {
    std::fprintf(stderr, "bora: %s\n", tokenizer.error().message());
    return 1;
  }
  load_start = std::chrono::steady_clock::now();
  sentencepiece::SentencePieceProcessor processor;
  const auto status = processor.Load(model_path);
  const double sp_load_ms = seconds_since(load_start) * 1e3;
  if (!status.ok()) {
    std::fprintf(stderr, "sentencepiece: %s\n", status.ToString().c_str());
    return 1;
  }

  std::vector<Sample> samples;
  simdjson::padded_string json;
  if (simdjson::padded_string::load(goldens_path).get(json) != simdjson::SUCCESS) {
    std::fprintf(stderr, "cannot read %s\n", goldens_path.c_str());
    return 1;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  simdjson::dom::array corpus;
  if (parser.parse(json).get(root) != simdjson::SUCCESS || root["corpus"].get_array().get(corpus) != simdjson::SUCCESS) {
    std::fprintf(stderr, "%s: no corpus array\n", goldens_path.c_str());
    return 1;
  }
  std::string everything;
  for (simdjson::dom::element item : corpus) {
    std::string_view name;
    std::string_view text;
    if (item["name"].get_string().get(name) != simdjson::SUCCESS ||
        item["text"].get_string().get(text) != simdjson::SUCCESS) {
      continue;
    }
    everything.append(text.data(), text.size()).push_back('\n');
    if (name == "chinese_article_full" || name == "english_prose" || name == "code_python" || name == "code_cpp") {
      samples.push_back({std::string(name), std::string(text)});
    }
  }
  samples.push_back({"whole_corpus", everything});
  std::string english;
  if (read_file(english_path, &english)) samples.push_back({"english_30k (" + english_path + ")", english});

  std::printf("load: bora %.1f ms, sentencepiece %.1f ms (%s, %zu pieces)\n", bora_load_ms, sp_load_ms,
              model_path.c_str(), tokenizer->vocab_size());
  std::printf("%-44s %9s %8s %12s %12s %8s %s\n", "text", "bytes", "tokens", "bora MB/s", "spm MB/s", "ratio",
              "ids");
  bool all_equal = true;
  for (const Sample& sample : samples) {
    const std::vector<int32_t> ours = tokenizer->encode(sample.text, false);
    std::vector<int> theirs;
    processor.Encode(sample.text, &theirs);
    const bool equal = ours.size() == theirs.size() && std::equal(ours.begin(), ours.end(), theirs.begin());
    all_equal = all_equal && equal;

    size_t sink = 0;
    const double bora_mbps = throughput(sample.text, min_seconds, [&] {
      sink += tokenizer->encode(sample.text, false).size();
    });
    const double sp_mbps = throughput(sample.text, min_seconds, [&] {
      std::vector<int> ids;
      processor.Encode(sample.text, &ids);
      sink += ids.size();
    });
    std::printf("%-44s %9zu %8zu %12.2f %12.2f %7.2fx %s\n", sample.name.c_str(), sample.text.size(), ours.size(),
                bora_mbps, sp_mbps, bora_mbps / sp_mbps, equal ? "equal" : "DIFFERENT");
    if (sink == 0) std::printf("(nothing encoded)\n");
  }
  return all_equal ? 0 : 1;
}
