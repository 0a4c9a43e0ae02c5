// Why this file exists: the model layer knows weights and the forward pass, text/ knows tokens; an
// application wants both at once. LanguageModel binds a model's weights to the tokenizer its files
// carry and makes the sessions that talk text, and load<Preset>() / load_any() open the pair.
#ifndef BORA_TEXT_LANGUAGE_MODEL_HPP
#define BORA_TEXT_LANGUAGE_MODEL_HPP

#include <memory>
#include <string>
#include <utility>

#include "bora/base/expected.hpp"
#include "bora/io/model_files.hpp"
#include "bora/model/load.hpp"
#include "bora/model/transformer.hpp"
#include "bora/text/scheduler.hpp"
#include "bora/text/session.hpp"
#include "bora/text/model_tokenizer.hpp"
#include "bora/text/tokenizer.hpp"

namespace bora {

// A model together with its tokenizer. It is a Model itself (every call goes to the weights), so code
// that runs the forward pass takes it as it takes any composition; sessions come from here.
class LanguageModel final : public Model {
 public:
  // `tokenizer` may be null: the forward pass works, text in and out does not.
  LanguageModel(std::unique_ptr<Model> weights, std::shared_ptr<const Tokenizer> tokenizer)
      : weights_(std::move(weights)), tokenizer_(std::move(tokenizer)) {}

  // The tokenizer that came with the model (GGUF metadata, or tokenizer.model beside the
  // safetensors); null when the files have none.
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  // The composition underneath (bora::Mistral7B, ...).
  const Model& weights() const { return *weights_; }

  // A new stream of text over this model. Sessions share the model read-only, so several may run
  // on different threads at once; the model must outlive them.
  Expected<Session> session(const SessionParams& params) const {
    auto context = create_context(params);
    if (!context) return context.error();
    return Session(*this, tokenizer_.get(), std::move(*context), params);
  }

  // Many sequences at once over this model, in one forward pass per step (text/scheduler.hpp).
  Expected<std::unique_ptr<Scheduler>> scheduler(const SchedulerParams& params) const {
    return Scheduler::create(*this, tokenizer_.get(), params);
  }

  const ModelConfig& config() const override { return weights_->config(); }
  const ModelFiles& files() const override { return weights_->files(); }
  const char* preset_name() const override { return weights_->preset_name(); }
  uint64_t weight_bytes_per_token() const override { return weights_->weight_bytes_per_token(); }
  uint64_t weight_bytes_per_step(double experts) const override { return weights_->weight_bytes_per_step(experts); }
  Expected<std::unique_ptr<KvSequence>> create_sequence(const SequenceParams& params) const override {
    return weights_->create_sequence(params);
  }
  Expected<std::unique_ptr<Workspace>> create_workspace(const WorkspaceParams& params) const override {
    return weights_->create_workspace(params);
  }
  Status forward_batch(Workspace& workspace, const BatchSegment* segments, size_t count) const override {
    return weights_->forward_batch(workspace, segments, count);
  }

 private:
  std::unique_ptr<Model> weights_;
  std::shared_ptr<const Tokenizer> tokenizer_;
};

namespace detail {
template <class LoadWeights>
Expected<std::unique_ptr<LanguageModel>> bind_tokenizer(ModelFiles files, LoadWeights load_weights) {
  auto tokenizer = load_model_tokenizer(files);
  if (!tokenizer) return tokenizer.error();
  // Every id the tokenizer can produce must have an embedding row, or encoding some text would read
  // past the table.
  const int64_t rows = files.config().vocab_size;
  if (*tokenizer && static_cast<int64_t>((*tokenizer)->vocabulary().size()) > rows) {
    return make_error(ErrorCode::kShape, "%s: the tokenizer has %zu pieces but the model has only %lld token embeddings",
                      files.path().c_str(), (*tokenizer)->vocabulary().size(), (long long)rows);
  }
  auto weights = load_weights(std::move(files));
  if (!weights) return weights.error();
  return std::make_unique<LanguageModel>(std::unique_ptr<Model>(std::move(*weights)), std::move(*tokenizer));
}
}  // namespace detail

// Opens `files` as the composition `Preset`, with its tokenizer.
template <class Preset>
Expected<std::unique_ptr<LanguageModel>> load(ModelFiles files, const LoadParams& params = {}) {
  return detail::bind_tokenizer(std::move(files),
                                [&](ModelFiles weights) { return load_model<Preset>(std::move(weights), params); });
}

// Opens `path` (a .gguf file, a model folder, or ollama:NAME[:TAG]) as the composition `Preset`.
template <class Preset>
Expected<std::unique_ptr<LanguageModel>> load(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load<Preset>(std::move(*files), params);
}

// Opens any supported model with its tokenizer, choosing the composition from the file (see
// load_any_model).
inline Expected<std::unique_ptr<LanguageModel>> load_any(ModelFiles files, const LoadParams& params = {}) {
  return detail::bind_tokenizer(std::move(files),
                                [&](ModelFiles weights) { return load_any_model(std::move(weights), params); });
}

inline Expected<std::unique_ptr<LanguageModel>> load_any(const std::string& path, const LoadParams& params = {}) {
  auto files = open_model_files(path, params);
  if (!files) return files.error();
  return load_any(std::move(*files), params);
}

}  // namespace bora

#endif  // BORA_TEXT_LANGUAGE_MODEL_HPP
