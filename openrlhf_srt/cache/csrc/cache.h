// The forest: one tree per prompt (prompt + responses), one global tree (responses of all
// prompts), running sequences, the byte budget with LRU eviction of whole prompts.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "draft.h"
#include "tree.h"

namespace srt {

// Names are exposed to Python (RULES, TAGS, SOURCES), index = code, so each mapping is
// defined here once.
enum Rule : int { kPrompt = 0, kGlobal = 1, kBest = 2, kMerge = 3 };
inline constexpr const char* kRuleNames[] = {"prompt", "global", "best", "merge"};
enum Tag : int { kRollout = 0, kRunahead = 1 };
inline constexpr const char* kTagNames[] = {"rollout", "runahead"};
// Which trees a draft came from; kNoMatch: none matched, the draft is empty.
enum DraftSource : int8_t { kNoMatch = -1, kFromPrompt = 0, kFromGlobal = 1, kFromBoth = 2 };
inline constexpr const char* kSourceNames[] = {"prompt", "global", "merged"};

// No defaults: every field is passed in from openrlhf_srt.cache.CacheConfig, the one
// definition of the defaults (the rule's included).
struct Config {
  int max_depth;
  uint64_t byte_budget;
  int rule;
  double global_weight;  // weight of the global tree's counts under kMerge
};

// A draft for one context (exposed to Python as openrlhf_srt.cache.Draft).
struct Draft {
  Chain path;      // the best single path, what a chain verifier checks
  DraftTree tree;  // best-first draft tree (empty unless asked for)
  int match_len = 0;
  int source = kNoMatch;
};

// Best paths of one engine step, CSR: sequence i owns toks[offsets[i]:offsets[i+1]]
// (exposed to Python as openrlhf_srt.cache.BatchDrafts).
struct BatchDrafts {
  std::vector<int64_t> offsets;
  std::vector<int32_t> toks;
  std::vector<float> probs;  // path probability after each token
  std::vector<int32_t> match_len;
  std::vector<float> score;  // expected accepted tokens of each path
  std::vector<int8_t> source;  // DraftSource per sequence
};

// Live figures; Python gets them as a dict keyed by the names for_each_figure gives them
// (docs/cache.md says what each means). bytes = prompt_bytes + global_bytes + record_bytes
// + detached_bytes.
struct Stats {
  size_t prompts = 0, sequences = 0, running = 0, detached = 0, dropped = 0, runahead = 0;
  size_t nodes = 0, global_nodes = 0, hubs = 0, tokens = 0;
  size_t bytes = 0, prompt_bytes = 0, global_bytes = 0, record_bytes = 0, detached_bytes = 0;
  size_t byte_budget = 0, evicted_prompts = 0, evicted_running = 0, dropped_running = 0;
};

template <class F>
void for_each_figure(const Stats& s, F&& f) {
  f("prompts", s.prompts);
  f("sequences", s.sequences);
  f("running", s.running);
  f("detached", s.detached);
  f("dropped", s.dropped);
  f("runahead", s.runahead);
  f("nodes", s.nodes);
  f("global_nodes", s.global_nodes);
  f("hubs", s.hubs);
  f("tokens", s.tokens);
  f("bytes", s.bytes);
  f("prompt_bytes", s.prompt_bytes);
  f("global_bytes", s.global_bytes);
  f("record_bytes", s.record_bytes);
  f("detached_bytes", s.detached_bytes);
  f("byte_budget", s.byte_budget);
  f("evicted_prompts", s.evicted_prompts);
  f("evicted_running", s.evicted_running);
  f("dropped_running", s.dropped_running);
}

// What a rebuild needs, in flat arrays: the cached prompts (least recently used first; prompt
// i owns prompt_lens[i] tokens of prompt_tokens) and every registered sequence that is not
// detached, grouped by prompt in the same order (sequence j owns response_lens[j] tokens of
// response_tokens). Trees are canonical, so importing it gives identical trees. `running`
// says what ran at export; an import restores every sequence finished: no caller extends
// or finishes a sequence of the new cache, so one restored running would never finish.
struct State {
  std::vector<uint64_t> prompt_keys;
  std::vector<uint32_t> prompt_lens;
  std::vector<int32_t> prompt_tokens;
  std::vector<int64_t> seq_ids;
  std::vector<uint64_t> seq_keys;
  std::vector<int64_t> steps;
  std::vector<uint8_t> tags;     // Tag
  std::vector<uint8_t> running;  // 1: still running, 0: finished
  std::vector<uint32_t> response_lens;
  std::vector<int32_t> response_tokens;
};

// Calls f(name, array) for every array of a State: the one list of their names.
template <class S, class F>
void for_each_array(S& s, F&& f) {
  f("prompt_keys", s.prompt_keys);
  f("prompt_lens", s.prompt_lens);
  f("prompt_tokens", s.prompt_tokens);
  f("seq_ids", s.seq_ids);
  f("seq_keys", s.seq_keys);
  f("steps", s.steps);
  f("tags", s.tags);
  f("running", s.running);
  f("response_lens", s.response_lens);
  f("response_tokens", s.response_tokens);
}

struct PromptEntry {
  std::vector<int32_t> prompt;
  Tree tree;
  uint64_t last_use = 0;
  size_t running = 0;
  size_t bytes = 0;  // tree.bytes() when last measured
  std::vector<int64_t> seqs;
  explicit PromptEntry(int depth) : tree(depth) {}
};

struct SeqInfo {
  uint64_t key = 0;
  int64_t step = 0;
  int tag = kRollout;
  bool running = true;
  bool detached = false;  // its prompt was evicted while it ran
  // Cached lookups for the step() hot path; a slot is valid while its tree's epoch holds.
  PromptEntry* entry = nullptr;  // null once detached
  uint64_t stamp = 0;  // last step() call that named it, to find duplicates
  uint32_t pslot = 0, gslot = 0;
  uint64_t pepoch = ~0ull, gepoch = ~0ull;
};

class Cache {
 public:
  explicit Cache(const Config& cfg);
  const Config& config() const { return cfg_; }

  void add_sequence(int64_t seq, uint64_t key, const int32_t* prompt, size_t n, int64_t step,
                    int tag);
  void extend(int64_t seq, const int32_t* toks, size_t n);
  void finish(int64_t seq);
  void remove(int64_t seq);
  size_t drop_steps_before(int64_t step);
  Draft draft(int64_t seq, int max_tokens, double min_prob, bool want_tree);
  Draft draft_context(uint64_t key, const int32_t* ctx, size_t n, size_t response_start,
                      int max_tokens, double min_prob, bool want_tree);
  void step(const int64_t* seqs, size_t nseq, const int32_t* toks, size_t ntok,
            const int32_t* counts, const int32_t* budgets, double min_prob, BatchDrafts& out);
  void resize(uint64_t byte_budget);
  void clear();
  Stats stats();
  // Where the bytes are, finer than Stats: each tree part (TreeBytes) as prompt_<part> (all
  // prompt trees) and global_<part>, then prompt_entries (prompt arrays, entries, the prompt
  // table), records, detached. Adds up to Stats::bytes.
  std::vector<std::pair<std::string, size_t>> memory();
  std::string check();
  void dump(bool global, uint64_t key, std::vector<std::vector<int32_t>>& paths,
            std::vector<uint32_t>& counts, std::vector<uint32_t>& conts);
  State export_state();
  // Rebuild from an exported state under this cache's config (depth, budget: the state holds
  // raw token sequences); only into an empty cache. Every sequence comes back finished
  // (State). Validates the whole state first, so a bad one changes nothing.
  void import_state(const State& s);

 private:
  // Bytes by where they are (Stats: prompt_bytes, global_bytes, record_bytes,
  // detached_bytes); one computation for the budget and the figures.
  struct Bytes {
    size_t prompts = 0, global = 0, records = 0, detached = 0;
    size_t total() const { return prompts + global + records + detached; }
  };
  // The record of seq; nullptr for an id the cache does not hold while dropped sequences are
  // outstanding (it is taken for one of them); otherwise an unknown id throws.
  SeqInfo* find_seq(int64_t seq);
  // The public calls' work, under mu_ already held; the public call enforces the budget.
  void add_locked(int64_t seq, uint64_t key, const int32_t* prompt, size_t n, int64_t step,
                  int tag);
  void extend_locked(int64_t seq, const int32_t* toks, size_t n);
  void finish_locked(int64_t seq);
  void remove_locked(int64_t seq);
  PromptEntry& entry(uint64_t key) { return *prompts_.at(key); }
  void append(int64_t seq, SeqInfo& info, const int32_t* toks, size_t n);
  uint32_t pslot(int64_t seq, SeqInfo& info);
  uint32_t gslot(int64_t seq, SeqInfo& info);
  void remeasure(PromptEntry& e);
  static size_t entry_bytes(const PromptEntry& e);  // beyond its tree
  size_t prompt_table_bytes() const;
  Bytes bytes_by_part() const;
  size_t total_bytes() const { return bytes_by_part().total(); }
  bool within_budget();  // sizes sparse hash tables down when over
  void enforce_budget();
  bool evict_lru(bool running);  // prompts with (or without) a running sequence; true: fits
  bool drop_detached();          // true: fits
  void evict(uint64_t key);
  void make_draft(const Tree* a, Pos pa, const Tree* b, Pos pb, int budget, double min_prob,
                  bool want_tree, Draft& r);
  int match_cap(int budget) const;

  std::mutex mu_;  // one lock for the whole forest; see docs/cache.md
  Config cfg_;
  Tree global_;
  std::unordered_map<uint64_t, std::unique_ptr<PromptEntry>> prompts_;
  std::unordered_map<int64_t, SeqInfo> seqs_;
  uint64_t tick_ = 0;
  uint64_t step_calls_ = 0;
  size_t prompt_bytes_ = 0;  // sum of PromptEntry::bytes and their prompt arrays
  size_t detached_ = 0;      // records in seqs_ with detached set
  // Running sequences dropped by the budget and not yet finished or removed by the caller:
  // they have no record, only this count (a record per id would not be bounded).
  size_t dropped_ = 0;
  size_t evicted_prompts_ = 0, evicted_running_ = 0, dropped_running_ = 0;
  Chain alt_;             // scratch for rule "best" (guarded by mu_)
  Draft scratch_;         // scratch for step()
};

void validate_tokens(const int32_t* toks, size_t n, const char* what);

}  // namespace srt
