// Why this file exists: a grammar must become, before every sampled token, the set of token ids that
// keep the output a valid prefix, in tens of microseconds over 32,000 tokens. Three things make it
// cheap: the vocabulary is one byte trie walked depth-first (a dead byte prunes every token below it);
// the grammar's pushdown configurations (sets of stacks) are interned into states of a DFA built
// lazily, so a byte is one table lookup after its first time (a new state's transitions are found
// per class of bytes the grammar cannot tell apart, from what each of its stacks becomes, computed
// once per stack); and each state's mask is kept, so a string body or a repeated separator costs a copy. DFA and masks together stay under a byte budget
// (GrammarConstraintOptions::max_cache_bytes): past it the cache starts over and matchers replay their
// own text, so a hostile grammar costs time, never unbounded memory.
// GrammarConstraint is compiled once per grammar and vocabulary and shared (it is thread-safe);
// GrammarMatcher is the per-sequence cursor that SampleParams::constraint creates in each Sampler.
#ifndef BORA_TEXT_GRAMMAR_CONSTRAINT_HPP
#define BORA_TEXT_GRAMMAR_CONSTRAINT_HPP

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bora/base/expected.hpp"
#include "bora/text/grammar.hpp"
#include "bora/text/tokenizer.hpp"
#include "bora/text/vocabulary_trie.hpp"

namespace bora {

struct GrammarConstraintOptions {
  // Tokens forced, in order, before the grammar's text begins; control tokens are allowed here (a
  // tool call's [TOOL_CALLS]).
  std::vector<int32_t> leading_tokens;
  // Upper bound on the lazily built DFA and its cached masks, in bytes. Past it the cache starts
  // over (matchers replay their own text), so a hostile grammar costs time, never unbounded memory.
  size_t max_cache_bytes = size_t{128} << 20;
  // The tokenizer's vocabulary as a trie (VocabularyTrie::build), shared by every constraint made with
  // it; null builds one for this constraint alone (milliseconds for a 32k vocabulary).
  std::shared_ptr<const VocabularyTrie> vocabulary;
};

class GrammarMatcher;

namespace detail {

// 64-bit keys to int32 values in one open-addressed table, emptied in O(1) by a generation stamp per
// slot: the DFA builder looks up stacks and clears its visited set for every closure, which
// node-based hash tables paid for in allocations.
class KeyIndex {
 public:
  // The value of `key`, or -1.
  int32_t find(uint64_t key) const {
    if (keys_.empty()) return -1;
    for (size_t i = slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (stamps_[i] != stamp_) return -1;
      if (keys_[i] == key) return values_[i];
    }
  }
  // Stores key -> value unless the key is there; false (and nothing changes) when it was.
  bool insert(uint64_t key, int32_t value) {
    if (2 * (size_ + 1) > keys_.size()) grow();
    for (size_t i = slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (stamps_[i] != stamp_) {
        stamps_[i] = stamp_;
        keys_[i] = key;
        values_[i] = value;
        ++size_;
        return true;
      }
      if (keys_[i] == key) return false;
    }
  }
  void clear() {
    size_ = 0;
    if (++stamp_ == 0) {  // after 2^32 clears every old stamp could look current again
      std::fill(stamps_.begin(), stamps_.end(), 0u);
      stamp_ = 1;
    }
  }
  size_t size() const { return size_; }

 private:
  size_t slot(uint64_t key) const {
    const uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(h ^ (h >> 29)) & (keys_.size() - 1);
  }
  void grow() {
    std::vector<uint64_t> keys = std::move(keys_);
    std::vector<int32_t> values = std::move(values_);
    std::vector<uint32_t> stamps = std::move(stamps_);
    const size_t capacity = keys.empty() ? 64 : 2 * keys.size();
    keys_.assign(capacity, 0);
    values_.assign(capacity, 0);
    stamps_.assign(capacity, 0u);
    const uint32_t live = stamp_;
    stamp_ = 1;
    size_ = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (stamps[i] == live) insert(keys[i], values[i]);
    }
  }

  std::vector<uint64_t> keys_;
  std::vector<int32_t> values_;
  std::vector<uint32_t> stamps_;  // a slot is taken when its stamp is stamp_
  uint32_t stamp_ = 1;
  size_t size_ = 0;
};

}  // namespace detail

class GrammarConstraint {
 public:
  // The DFA state no byte leads out of and that is not complete.
  static constexpr int32_t kDead = 0;

  // Token bytes are what the tokenizer's streaming decoder shows for each token in mid-text ("▁" as a
  // space, <0xNN> as its byte); control tokens and <unk> are never allowed, EOS only when complete.
  static Expected<std::shared_ptr<const GrammarConstraint>> create(Grammar grammar, const Tokenizer& tokenizer,
                                                                   const GrammarConstraintOptions& options = {}) {
    for (const int32_t token : options.leading_tokens) {
      if (token < 0 || static_cast<size_t>(token) >= tokenizer.vocab_size() || token == tokenizer.eos_id())
        return make_error(ErrorCode::kInvalidArgument, "grammar constraint: leading token %d is not a usable token", token);
    }
    std::shared_ptr<const VocabularyTrie> vocabulary =
        options.vocabulary != nullptr ? options.vocabulary : VocabularyTrie::build(tokenizer);
    if (!vocabulary) return make_error(ErrorCode::kOutOfMemory, "grammar constraint: out of memory");
    if (vocabulary->vocab_size() != tokenizer.vocab_size() || vocabulary->eos_id() != tokenizer.eos_id())
      return make_error(ErrorCode::kInvalidArgument,
                        "grammar constraint: the vocabulary trie (%zu tokens) was built from another tokenizer (%zu)",
                        vocabulary->vocab_size(), tokenizer.vocab_size());
    std::shared_ptr<GrammarConstraint> c(new (std::nothrow) GrammarConstraint(std::move(grammar)));
    if (!c) return make_error(ErrorCode::kOutOfMemory, "grammar constraint: out of memory");
    c->vocab_ = std::move(vocabulary);
    c->eos_id_ = c->vocab_->eos_id();
    c->vocab_size_ = c->vocab_->vocab_size();
    c->leading_tokens_ = options.leading_tokens;
    const size_t mask_bytes = c->mask_words() * sizeof(uint64_t);
    // A quarter of the budget for masks (at least one), the rest for the DFA.
    c->max_masks_ = std::max<size_t>(1, std::min(kMaxCachedMasks, options.max_cache_bytes / 4 / mask_bytes));
    c->max_dfa_bytes_ = std::max<size_t>(options.max_cache_bytes - std::min(options.max_cache_bytes, c->max_masks_ * mask_bytes),
                                         size_t{64} << 10);
    {
      std::lock_guard<std::mutex> lock(c->mutex_);
      c->initial_ = c->start_state();
    }
    if (c->initial_ == kDead) return make_error(ErrorCode::kInvalidArgument, "grammar: the root rule matches nothing");
    return std::shared_ptr<const GrammarConstraint>(std::move(c));
  }

  const Grammar& grammar() const { return grammar_; }
  size_t trie_nodes() const { return vocab_->nodes().size() - 1; }
  // DFA states built so far (they grow with the distinct parser configurations generation meets).
  size_t dfa_states() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return states_.size();
  }
  // What the DFA and the cached masks hold now, in bytes (an estimate of their heap use), and how
  // often the cache has started over.
  size_t cache_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return dfa_bytes_ + mask_pool_.size() * sizeof(uint64_t);
  }
  uint64_t cache_restarts() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return epoch_;
  }
  int32_t eos_id() const { return eos_id_; }
  size_t vocab_size() const { return vocab_size_; }
  size_t mask_words() const { return (vocab_size_ + 63) / 64; }
  const std::vector<int32_t>& leading_tokens() const { return leading_tokens_; }

 private:
  friend class GrammarMatcher;
  static constexpr size_t kMaxCachedMasks = 4096;    // 16 MiB of masks for a 32k vocabulary
  static constexpr size_t kMaxClosureWork = 200000;  // stack expansions per step, for hostile grammars

  // A matcher's place: a DFA state of cache generation `epoch`. The matcher keeps the bytes it has
  // accepted, so a cursor from before a restart of the cache is rebuilt by replaying them.
  struct Cursor {
    int32_t state = kDead;
    uint64_t epoch = 0;
    bool complete = false;
  };

  Cursor start() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return Cursor{initial_, epoch_, states_[static_cast<size_t>(initial_)].accepting};
  }

  // The bytes a token stands for in the grammar; empty for a token never allowed (control, <unk>).
  std::string_view token_text(int32_t token) const { return vocab_->token_text(token); }

  // Moves the cursor past `bytes`; false (cursor unchanged) when they leave the language.
  bool advance(Cursor* cursor, const std::string& history, std::string_view bytes) const {
    std::lock_guard<std::mutex> lock(mutex_);
    refresh(cursor, history);
    int32_t state = cursor->state;
    for (size_t i = 0; i < bytes.size() && state != kDead; ++i) state = step(state, static_cast<uint8_t>(bytes[i]));
    if (state == kDead) return false;
    cursor->state = state;
    cursor->complete = states_[static_cast<size_t>(state)].accepting;
    return true;
  }

  // Bit i of `bits` (mask_words() words) set when token i may come next. EOS is allowed when the state
  // is complete, and also when no token fits (a dead end must still be able to stop).
  void allowed_tokens(Cursor* cursor, const std::string& history, uint64_t* bits) const {
    std::lock_guard<std::mutex> lock(mutex_);
    refresh(cursor, history);
    const int32_t state = cursor->state;
    const size_t words = mask_words();
    if (states_[static_cast<size_t>(state)].mask_slot < 0) {
      if (mask_pool_.size() >= max_masks_ * words) {  // the cache is only a cache: start over
        for (State& other : states_) other.mask_slot = -1;
        mask_pool_.clear();
      }
      const size_t slot = mask_pool_.size() / words;
      mask_pool_.resize(mask_pool_.size() + words, 0);
      walk_trie(state, mask_pool_.data() + slot * words);
      states_[static_cast<size_t>(state)].mask_slot = static_cast<int32_t>(slot);
    }
    std::memcpy(bits, mask_pool_.data() + static_cast<size_t>(states_[static_cast<size_t>(state)].mask_slot) * words,
                words * sizeof(uint64_t));
  }

  // Under mutex_: starts the cache over when it is past its budget, then brings `cursor` into the
  // current generation by replaying the bytes its matcher accepted.
  void refresh(Cursor* cursor, const std::string& history) const {
    if (dfa_bytes_ > max_dfa_bytes_) restart_cache();
    if (cursor->epoch == epoch_) return;
    int32_t state = initial_;
    for (size_t i = 0; i < history.size() && state != kDead; ++i) state = step(state, static_cast<uint8_t>(history[i]));
    cursor->state = state;
    cursor->epoch = epoch_;
    cursor->complete = states_[static_cast<size_t>(state)].accepting;
  }

  // Under mutex_.
  void restart_cache() const {
    states_.resize(1);
    states_[0].mask_slot = -1;
    transitions_.assign(256, kDead);
    stacks_.clear();
    stack_ids_.clear();
    state_ids_.clear();
    mask_pool_.clear();
    advances_.clear();
    advance_pool_.clear();
    dfa_bytes_ = 0;
    ++epoch_;
    initial_ = start_state();
  }

  struct Stack {
    uint32_t position;  // an element of grammar_.elements()
    int32_t parent;     // the frame to return to, -1 at the bottom
  };
  struct State {
    std::vector<int32_t> stacks;  // sorted ids; every top is a byte-set element
    bool accepting = false;
    int32_t mask_slot = -1;
  };
  explicit GrammarConstraint(Grammar grammar) : grammar_(std::move(grammar)) {
    states_.emplace_back();  // kDead
    transitions_.assign(256, kDead);
    find_byte_classes();
  }

  // Bytes that no byte set of the grammar tells apart lead every state to the same place, so a state's
  // transitions are computed once per class of such bytes (a JSON grammar has a few dozen, not 256).
  // Each set splits the classes it cuts: class (c, in set) and (c, not in set) get new numbers.
  void find_byte_classes() {
    uint8_t classes[256] = {};
    size_t count = 1;
    for (size_t i = 0; i < grammar_.byte_set_count() && count < 256; ++i) {
      const ByteSet& set = grammar_.byte_set(static_cast<uint32_t>(i));
      int16_t renumbered[256][2];
      for (size_t c = 0; c < count; ++c) renumbered[c][0] = renumbered[c][1] = -1;
      int16_t next = 0;
      for (unsigned b = 0; b < 256; ++b) {
        int16_t& to = renumbered[classes[b]][set.has(static_cast<uint8_t>(b)) ? 1 : 0];
        if (to < 0) to = next++;
        classes[b] = static_cast<uint8_t>(to);
      }
      count = static_cast<size_t>(next);
    }
    class_byte_.assign(count, 0);
    for (unsigned b = 256; b-- > 0;) {
      byte_class_[b] = classes[b];
      class_byte_[classes[b]] = static_cast<uint8_t>(b);  // ends as the class's lowest byte
    }
  }

  // Under mutex_: sets the bits of every token whose bytes the state accepts.
  void walk_trie(int32_t state, uint64_t* bits) const {
    std::vector<int32_t>& at_depth = walk_states_;
    const std::vector<VocabularyTrie::Node>& nodes = vocab_->nodes();
    const std::vector<int32_t>& token_ids = vocab_->token_ids();
    at_depth.assign(vocab_->max_depth() + 1, kDead);
    at_depth[0] = state;
    const size_t n = nodes.size() - 1;
    bool any = false;
    for (size_t i = 0; i < n;) {
      const VocabularyTrie::Node& node = nodes[i];
      const int32_t from = at_depth[node.depth - 1];
      int32_t next = transitions_[static_cast<size_t>(from) * 256 + node.byte];
      if (next < 0) next = compute_transition(from, node.byte);
      if (next == kDead) {
        i = node.subtree_end;
        continue;
      }
      at_depth[node.depth] = next;
      for (uint32_t t = node.token_begin; t < nodes[i + 1].token_begin; ++t) {
        const int32_t id = token_ids[t];
        bits[id >> 6] |= uint64_t{1} << (id & 63);
        any = true;
      }
      ++i;
    }
    if ((states_[static_cast<size_t>(state)].accepting || !any) && eos_id_ >= 0 &&
        static_cast<size_t>(eos_id_) < vocab_size_) {
      bits[eos_id_ >> 6] |= uint64_t{1} << (eos_id_ & 63);
    }
  }

  // Under mutex_.
  int32_t step(int32_t state, uint8_t byte) const {
    const int32_t next = transitions_[static_cast<size_t>(state) * 256 + byte];
    return next >= 0 ? next : compute_transition(state, byte);
  }

  // Under mutex_.
  int32_t start_state() const {
    begin_closure();
    for (const uint32_t alternative : grammar_.alternatives(grammar_.root())) expand(alternative, -1);
    return intern_state(&closure_out_, closure_accepting_);
  }

  // Fills in every byte's transition out of `from` at once: bytes the same stacks accept lead to the
  // same state, so a string body's ~200 bytes cost a handful of unions. Per class of bytes (see
  // find_byte_classes), `accepted_by` has bit k set when stacks[k] accepts the class's bytes.
  int32_t compute_transition(int32_t from, uint8_t byte) const {
    const std::vector<int32_t> stacks = states_[static_cast<size_t>(from)].stacks;  // states_ may grow
    const size_t row = static_cast<size_t>(from) * 256;
    if (stacks.size() > 64) {  // rare: one union per byte asked for
      transitions_[row + byte] = state_after(stacks, byte, ~uint64_t{0});
      return transitions_[row + byte];
    }
    const size_t classes = class_byte_.size();
    uint64_t accepted_by[256] = {};
    for (size_t k = 0; k < stacks.size(); ++k) {
      const Grammar::Element& e = grammar_.elements()[stacks_[static_cast<size_t>(stacks[k])].position];
      const ByteSet& set = grammar_.byte_set(e.index);
      for (size_t c = 0; c < classes; ++c) {
        if (set.has(class_byte_[c])) accepted_by[c] |= uint64_t{1} << k;
      }
    }
    // Classes the same stacks accept share one state: sorted by that set, each run computes it once.
    uint16_t order[256];
    for (size_t c = 0; c < classes; ++c) order[c] = static_cast<uint16_t>(c);
    std::sort(order, order + classes, [&](uint16_t a, uint16_t b) { return accepted_by[a] < accepted_by[b]; });
    int32_t target[256];
    for (size_t i = 0; i < classes; ++i) {
      const uint16_t c = order[i];
      if (accepted_by[c] == 0) target[c] = kDead;
      else if (i > 0 && accepted_by[order[i - 1]] == accepted_by[c]) target[c] = target[order[i - 1]];
      else target[c] = state_after(stacks, class_byte_[c], accepted_by[c]);
    }
    for (unsigned b = 0; b < 256; ++b) {
      if (transitions_[row + b] < 0) transitions_[row + b] = target[byte_class_[b]];
    }
    return transitions_[row + byte];
  }

  // The state after `byte` from the stacks selected by `which` (bit k: stacks[k], all when > 64
  // stacks): the union of what each of them becomes once its top byte is consumed.
  int32_t state_after(const std::vector<int32_t>& stacks, uint8_t byte, uint64_t which) const {
    std::vector<int32_t> next;
    bool accepting = false;
    for (size_t k = 0; k < stacks.size(); ++k) {
      if (k < 64 && !((which >> k) & 1u)) continue;
      const Stack s = stacks_[static_cast<size_t>(stacks[k])];
      if (!grammar_.byte_set(grammar_.elements()[s.position].index).has(byte)) continue;
      const Advance a = advance(stacks[k]);
      next.insert(next.end(), advance_pool_.begin() + a.begin, advance_pool_.begin() + a.begin + a.count);
      accepting = accepting || a.accepting;
    }
    return intern_state(&next, accepting);
  }

  // What stack `id` becomes once the byte on its top is consumed: every stack expand() reaches from the
  // element after it. That depends neither on the byte nor on the other stacks of a state, so it is
  // computed once per stack (and cache generation) and shared by every state that holds the stack.
  struct Advance {
    uint32_t begin = 0;  // into advance_pool_
    uint32_t count = 0;
    bool accepting = false;  // it can also return from the root: the input so far is complete
    bool known = false;
  };
  Advance advance(int32_t id) const {
    const size_t index = static_cast<size_t>(id);
    if (index < advances_.size() && advances_[index].known) return advances_[index];
    const Stack s = stacks_[index];
    begin_closure();
    expand(s.position + 1, s.parent);
    std::sort(closure_out_.begin(), closure_out_.end());
    closure_out_.erase(std::unique(closure_out_.begin(), closure_out_.end()), closure_out_.end());
    Advance a;
    a.begin = static_cast<uint32_t>(advance_pool_.size());
    a.count = static_cast<uint32_t>(closure_out_.size());
    a.accepting = closure_accepting_;
    a.known = true;
    advance_pool_.insert(advance_pool_.end(), closure_out_.begin(), closure_out_.end());
    if (advances_.size() < stacks_.size()) advances_.resize(stacks_.size());  // expand() may add stacks
    advances_[index] = a;
    dfa_bytes_ += sizeof(Advance) + closure_out_.size() * sizeof(int32_t);
    return a;
  }

  void begin_closure() const {
    closure_out_.clear();
    closure_accepting_ = false;
    visited_.clear();
    work_budget_ = kMaxClosureWork;
  }

  // Adds every stack reachable from (position, parent) whose top is a byte set, descending into rules
  // and returning from finished alternatives; an empty stack means the input so far is complete.
  void expand(uint32_t position, int32_t parent) const {
    work_.clear();
    work_.push_back(Stack{position, parent});
    const std::vector<Grammar::Element>& elements = grammar_.elements();
    while (!work_.empty()) {
      const Stack item = work_.back();
      work_.pop_back();
      const uint64_t key = (uint64_t{item.position} << 32) | static_cast<uint32_t>(item.parent + 1);
      if (!visited_.insert(key, 0)) continue;
      if (work_budget_ == 0) break;  // bounded work: a truncated set only forbids, never allows more
      --work_budget_;
      const Grammar::Element& e = elements[item.position];
      if (e.kind == Grammar::ElementKind::kBytes) {
        closure_out_.push_back(intern_stack(item.position, item.parent));
      } else if (e.kind == Grammar::ElementKind::kEnd) {
        if (item.parent < 0) {
          closure_accepting_ = true;
        } else {
          work_.push_back(stacks_[static_cast<size_t>(item.parent)]);
        }
      } else {
        // A reference in tail position returns straight to our parent: no frame, so a right-recursive
        // loop (x*, a string body) keeps the same stacks, hence the same DFA state and cached mask.
        const int32_t continuation = elements[item.position + 1].kind == Grammar::ElementKind::kEnd
                                         ? item.parent
                                         : intern_stack(item.position + 1, item.parent);
        for (const uint32_t alternative : grammar_.alternatives(e.index)) work_.push_back(Stack{alternative, continuation});
      }
    }
  }

  // The DFA state whose configuration is the set `stacks` (sorted and deduplicated here), made on
  // first sight.
  int32_t intern_state(std::vector<int32_t>* stacks, bool accepting) const {
    if (!std::is_sorted(stacks->begin(), stacks->end())) std::sort(stacks->begin(), stacks->end());
    stacks->erase(std::unique(stacks->begin(), stacks->end()), stacks->end());
    if (stacks->empty() && !accepting) return kDead;
    std::string key(reinterpret_cast<const char*>(stacks->data()), stacks->size() * sizeof(int32_t));
    key.push_back(accepting ? 1 : 0);
    auto found = state_ids_.find(key);
    if (found != state_ids_.end()) return found->second;
    // Past twice the budget within one call (a hostile grammar): no new states, which only forbids;
    // the next call starts the cache over.
    if (dfa_bytes_ > 2 * max_dfa_bytes_) return kDead;
    dfa_bytes_ += 256 * sizeof(int32_t) + sizeof(State) + 2 * key.size() + 96;
    const int32_t id = static_cast<int32_t>(states_.size());
    State state;
    state.stacks = *stacks;
    state.accepting = accepting;
    states_.push_back(std::move(state));
    transitions_.resize(transitions_.size() + 256, -1);
    state_ids_.emplace(std::move(key), id);
    return id;
  }

  int32_t intern_stack(uint32_t position, int32_t parent) const {
    const uint64_t key = (uint64_t{position} << 32) | static_cast<uint32_t>(parent + 1);
    const int32_t found = stack_ids_.find(key);
    if (found >= 0) return found;
    const int32_t id = static_cast<int32_t>(stacks_.size());
    dfa_bytes_ += sizeof(Stack) + 32;
    stacks_.push_back(Stack{position, parent});
    stack_ids_.insert(key, id);
    return id;
  }

  Grammar grammar_;
  int32_t eos_id_ = -1;
  size_t vocab_size_ = 0;
  std::vector<int32_t> leading_tokens_;
  size_t max_masks_ = kMaxCachedMasks;
  size_t max_dfa_bytes_ = size_t{96} << 20;
  uint8_t byte_class_[256] = {};
  std::vector<uint8_t> class_byte_;  // a byte of each class
  // The vocabulary, shared with other constraints (immutable).
  std::shared_ptr<const VocabularyTrie> vocab_;
  // The lazily built DFA and its caches, shared by every matcher, under mutex_.
  mutable std::mutex mutex_;
  mutable std::vector<Stack> stacks_;
  mutable detail::KeyIndex stack_ids_;
  mutable std::vector<State> states_;
  mutable std::unordered_map<std::string, int32_t> state_ids_;
  mutable std::vector<int32_t> transitions_;  // [state * 256 + byte], -1 until computed
  mutable std::vector<Advance> advances_;     // [stack id]
  mutable std::vector<int32_t> advance_pool_;
  mutable std::vector<uint64_t> mask_pool_;
  mutable std::vector<int32_t> walk_states_;
  mutable std::vector<Stack> work_;
  mutable detail::KeyIndex visited_;  // (position, parent) pairs met in the current closure
  mutable std::vector<int32_t> closure_out_;
  mutable bool closure_accepting_ = false;
  mutable size_t work_budget_ = 0;
  mutable int32_t initial_ = kDead;
  mutable size_t dfa_bytes_ = 0;
  mutable uint64_t epoch_ = 0;  // how often the cache started over
};

// One sequence's position in a grammar: which tokens may come next, and the token that came.
class GrammarMatcher {
 public:
  explicit GrammarMatcher(std::shared_ptr<const GrammarConstraint> constraint)
      : constraint_(std::move(constraint)), cursor_(constraint_->start()) {}

  void reset() {
    cursor_ = constraint_->start();
    history_.clear();
    leading_done_ = 0;
    finished_ = false;
    mask_valid_ = false;
  }

  // One bit per vocabulary id: the leading token due, else what the grammar allows (EOS when the
  // value is complete); after EOS, EOS alone.
  const std::vector<uint64_t>& allowed_tokens() {
    if (!mask_valid_) {
      mask_.assign(constraint_->mask_words(), 0);
      if (finished_) {
        set_bit(constraint_->eos_id());
      } else if (leading_done_ < constraint_->leading_tokens().size()) {
        set_bit(constraint_->leading_tokens()[leading_done_]);
      } else {
        constraint_->allowed_tokens(&cursor_, history_, mask_.data());
      }
      mask_valid_ = true;
    }
    return mask_;
  }
  bool is_allowed(int32_t token) {
    if (token < 0 || static_cast<size_t>(token) >= constraint_->vocab_size()) return false;
    return (allowed_tokens()[static_cast<size_t>(token) >> 6] >> (token & 63)) & 1u;
  }

  // Sets every logit the grammar forbids to -infinity (ids past the grammar's vocabulary too).
  void mask_logits(float* logits, int64_t n_vocab) {
    const std::vector<uint64_t>& bits = allowed_tokens();
    const float forbidden = -std::numeric_limits<float>::infinity();
    const int64_t known = std::min<int64_t>(n_vocab, static_cast<int64_t>(constraint_->vocab_size()));
    for (int64_t word = 0; word * 64 < known; ++word) {
      const uint64_t allowed = bits[static_cast<size_t>(word)];
      if (allowed == ~uint64_t{0}) continue;
      const int64_t end = std::min<int64_t>(known, word * 64 + 64);
      for (int64_t id = word * 64; id < end; ++id) {
        if (!((allowed >> (id & 63)) & 1u)) logits[id] = forbidden;
      }
    }
    for (int64_t id = known; id < n_vocab; ++id) logits[id] = forbidden;
  }

  // Moves past `token`; false (and nothing changes) when the grammar does not allow it here.
  bool accept(int32_t token) {
    if (!is_allowed(token)) return false;
    if (token == constraint_->eos_id()) {
      finished_ = true;
      mask_valid_ = false;
      return true;
    }
    if (leading_done_ < constraint_->leading_tokens().size()) {
      ++leading_done_;
      mask_valid_ = false;
      return true;
    }
    return move_past(constraint_->token_text(token));
  }
  // Moves past raw text (a test, or text the caller forces); false and nothing changes when it does
  // not fit, or while leading tokens are due.
  bool accept_text(std::string_view text) {
    if (finished_ || leading_done_ < constraint_->leading_tokens().size()) return false;
    return move_past(text);
  }

  // The output so far is a complete value (EOS may end it).
  bool is_complete() const {
    return finished_ || (leading_done_ == constraint_->leading_tokens().size() && cursor_.complete);
  }
  // EOS was accepted.
  bool is_finished() const { return finished_; }
  const GrammarConstraint& constraint() const { return *constraint_; }

 private:
  bool move_past(std::string_view bytes) {
    const GrammarConstraint::Cursor before = cursor_;
    if (!constraint_->advance(&cursor_, history_, bytes)) return false;
    history_.append(bytes.data(), bytes.size());
    if (cursor_.state != before.state || cursor_.epoch != before.epoch) mask_valid_ = false;
    return true;
  }
  void set_bit(int32_t id) {
    if (id >= 0 && static_cast<size_t>(id) < constraint_->vocab_size()) mask_[static_cast<size_t>(id) >> 6] |= uint64_t{1} << (id & 63);
  }

  std::shared_ptr<const GrammarConstraint> constraint_;
  GrammarConstraint::Cursor cursor_;
  std::string history_;  // every byte accepted (replayed if the constraint's cache starts over)
  size_t leading_done_ = 0;
  bool finished_ = false;
  std::vector<uint64_t> mask_;
  bool mask_valid_ = false;
};

}  // namespace bora

#endif  // BORA_TEXT_GRAMMAR_CONSTRAINT_HPP
