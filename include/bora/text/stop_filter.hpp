// Why this file exists: generated text must stop at a stop string without ever showing any of it,
// yet stream everything else at once. Sessions and the batch scheduler share this one filter.
#ifndef BORA_TEXT_STOP_FILTER_HPP
#define BORA_TEXT_STOP_FILTER_HPP

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace bora {

// Holds back the longest tail of the text that could still become a stop string.
class StopFilter {
 public:
  explicit StopFilter(std::vector<std::string> stop = {}) : stop_(std::move(stop)) {}

  // Adds a piece; `ready` receives the text that can be shown now. Returns true when a stop string
  // appeared: `ready` then ends just before it and the filter holds nothing more.
  bool push(const std::string& piece, std::string* ready) {
    ready->clear();
    pending_ += piece;
    size_t first_stop = std::string::npos;
    for (const std::string& s : stop_) {
      const size_t at = s.empty() ? std::string::npos : pending_.find(s);
      if (at != std::string::npos) first_stop = std::min(first_stop, at);
    }
    if (first_stop != std::string::npos) {
      ready->assign(pending_, 0, first_stop);
      pending_.clear();
      return true;
    }
    size_t keep = 0;
    for (const std::string& s : stop_) {
      for (size_t len = std::min(s.size() - (s.empty() ? 0 : 1), pending_.size()); len > keep; --len) {
        if (pending_.compare(pending_.size() - len, len, s, 0, len) == 0) {
          keep = len;
          break;
        }
      }
    }
    ready->assign(pending_, 0, pending_.size() - keep);
    pending_.erase(0, pending_.size() - keep);
    return false;
  }

  // The text held back when generation ends for another reason: it was no stop string after all.
  std::string flush() {
    std::string rest;
    rest.swap(pending_);
    return rest;
  }

 private:
  std::vector<std::string> stop_;
  std::string pending_;
};

}  // namespace bora

#endif  // BORA_TEXT_STOP_FILTER_HPP
