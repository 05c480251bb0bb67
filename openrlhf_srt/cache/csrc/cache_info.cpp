// Live figures, invariant checks, dumps, and the state export/import of the forest.
#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "cache.h"

namespace srt {

Stats Cache::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.prompts = prompts_.size();
  for (auto& [id, info] : seqs_) {
    if (info.detached) continue;
    s.sequences += 1;
    s.running += info.running ? 1 : 0;
    s.runahead += info.tag == kRunahead ? 1 : 0;
  }
  for (auto& [key, e] : prompts_) {
    s.nodes += e->tree.num_nodes();
    s.hubs += e->tree.num_hubs();
    s.tokens += e->prompt.size();
  }
  s.global_nodes = global_.num_nodes();
  s.nodes += s.global_nodes;
  s.hubs += global_.num_hubs();
  s.tokens += global_.live_tokens();  // response tokens
  s.detached = detached_;
  s.dropped = dropped_;
  const Bytes b = bytes_by_part();
  s.bytes = b.total();
  s.prompt_bytes = b.prompts;
  s.global_bytes = b.global;
  s.record_bytes = b.records;
  s.detached_bytes = b.detached;
  s.byte_budget = cfg_.byte_budget;
  s.evicted_prompts = evicted_prompts_;
  s.evicted_running = evicted_running_;
  s.dropped_running = dropped_running_;
  return s;
}

std::vector<std::pair<std::string, size_t>> Cache::memory() {
  std::lock_guard<std::mutex> lock(mu_);
  TreeBytes pb, gb;
  size_t entries = prompt_table_bytes();
  for (auto& [key, e] : prompts_) {
    e->tree.add_bytes(pb);
    entries += entry_bytes(*e);
  }
  global_.add_bytes(gb);
  const Bytes b = bytes_by_part();
  std::vector<std::pair<std::string, size_t>> out;
  for_each_part(pb, [&](const char* name, size_t v) { out.emplace_back(std::string("prompt_") + name, v); });
  for_each_part(gb, [&](const char* name, size_t v) { out.emplace_back(std::string("global_") + name, v); });
  out.emplace_back("prompt_entries", entries);
  out.emplace_back("records", b.records);
  out.emplace_back("detached", b.detached);
  return out;
}

std::string Cache::check() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string err = global_.check();
  if (!err.empty()) return "global tree: " + err;
  size_t sum = 0, listed = 0;
  for (auto& [key, e] : prompts_) {
    err = e->tree.check();
    if (!err.empty()) return "prompt " + std::to_string(key) + ": " + err;
    size_t running = 0;
    for (int64_t seq : e->seqs) {
      auto it = seqs_.find(seq);
      if (it == seqs_.end()) return "prompt " + std::to_string(key) + " lists an unknown sequence";
      const SeqInfo& info = it->second;
      if (info.key != key || info.detached || info.entry != e.get())
        return "sequence bookkeeping differs";
      running += info.running ? 1 : 0;
      if (!global_.has(seq) || !e->tree.has(seq)) return "sequence missing from a tree";
      // The global tree's text is the response part of the prompt tree's: a view of it
      // (an empty one points nowhere until its first token).
      const uint32_t ps = e->tree.slot(seq), gs = global_.slot(seq);
      const size_t plen = e->prompt.size();
      if (e->tree.text_size(ps) != plen + global_.text_size(gs) ||
          !std::equal(e->prompt.begin(), e->prompt.end(), e->tree.text_data(ps)) ||
          (global_.text_size(gs) > 0 && global_.text_data(gs) != e->tree.text_data(ps) + plen))
        return "sequence " + std::to_string(seq) + ": the global tree's text is not a view of "
               "its prompt tree's";
    }
    if (running != e->running) return "running count differs";
    sum += e->bytes;
    listed += e->seqs.size();
  }
  size_t detached = 0;
  for (auto& [id, info] : seqs_) detached += info.detached ? 1 : 0;
  if (detached != detached_) return "detached count differs";
  if (listed + detached != seqs_.size()) return "a sequence record belongs to no prompt";
  if (sum != prompt_bytes_) return "byte accounting drifted";
  if (total_bytes() > cfg_.byte_budget) return "byte budget exceeded";
  return "";
}

void Cache::dump(bool global, uint64_t key, std::vector<std::vector<int32_t>>& paths,
                 std::vector<uint32_t>& counts, std::vector<uint32_t>& conts) {
  std::lock_guard<std::mutex> lock(mu_);
  if (global) { global_.dump(paths, counts, conts); return; }
  auto it = prompts_.find(key);
  if (it == prompts_.end()) throw std::invalid_argument("unknown prompt key");
  it->second->tree.dump(paths, counts, conts);
}

State Cache::export_state() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> order;  // least recently used first
  for (auto& [key, e] : prompts_) order.emplace_back(e->last_use, key);
  std::sort(order.begin(), order.end());
  State s;
  for (auto& [use, key] : order) {
    const PromptEntry& e = *prompts_.at(key);
    s.prompt_keys.push_back(key);
    s.prompt_lens.push_back(static_cast<uint32_t>(e.prompt.size()));
    s.prompt_tokens.insert(s.prompt_tokens.end(), e.prompt.begin(), e.prompt.end());
    for (int64_t id : e.seqs) {
      const SeqInfo& info = seqs_.at(id);
      const uint32_t slot = global_.slot(id);
      const int32_t* resp = global_.text_data(slot);
      const size_t len = global_.text_size(slot);
      s.seq_ids.push_back(id);
      s.seq_keys.push_back(key);
      s.steps.push_back(info.step);
      s.tags.push_back(static_cast<uint8_t>(info.tag));
      s.running.push_back(info.running ? 1 : 0);
      s.response_lens.push_back(static_cast<uint32_t>(len));
      s.response_tokens.insert(s.response_tokens.end(), resp, resp + len);
    }
  }
  return s;
}

void Cache::import_state(const State& s) {
  using std::to_string;
  auto bad = [](const std::string& why) { return std::invalid_argument("state: " + why); };
  const size_t np = s.prompt_keys.size(), ns = s.seq_ids.size();
  if (s.prompt_lens.size() != np) throw bad("prompt_keys and prompt_lens differ in length");
  for (size_t n : {s.seq_keys.size(), s.steps.size(), s.tags.size(), s.running.size(),
                   s.response_lens.size()})
    if (n != ns) throw bad("the per-sequence arrays differ in length");
  auto sum = [](const std::vector<uint32_t>& v) {
    return std::accumulate(v.begin(), v.end(), uint64_t{0});
  };
  if (sum(s.prompt_lens) != s.prompt_tokens.size())
    throw bad("prompt_lens do not add up to the prompt_tokens");
  if (sum(s.response_lens) != s.response_tokens.size())
    throw bad("response_lens do not add up to the response_tokens");
  validate_tokens(s.prompt_tokens.data(), s.prompt_tokens.size(), "prompt_tokens");
  validate_tokens(s.response_tokens.data(), s.response_tokens.size(), "response_tokens");
  std::unordered_map<uint64_t, std::pair<size_t, uint32_t>> prompt;  // key -> (offset, length)
  size_t off = 0;
  for (size_t i = 0; i < np; ++i) {
    if (s.prompt_lens[i] == 0) throw bad("prompt " + to_string(i) + " is empty");
    if (!prompt.emplace(s.prompt_keys[i], std::make_pair(off, s.prompt_lens[i])).second)
      throw bad("prompt key " + to_string(s.prompt_keys[i]) + " is listed twice");
    off += s.prompt_lens[i];
  }
  std::unordered_set<int64_t> ids;
  for (size_t j = 0; j < ns; ++j) {
    const std::string which = "sequence " + to_string(s.seq_ids[j]);
    auto it = prompt.find(s.seq_keys[j]);
    if (it == prompt.end()) throw bad(which + " names a prompt key the state does not hold");
    if (!ids.insert(s.seq_ids[j]).second) throw bad(which + " is listed twice");
    if (s.tags[j] != kRollout && s.tags[j] != kRunahead) throw bad(which + " has an unknown tag");
    if (s.running[j] > 1) throw bad(which + ": running must be 0 or 1");
    if (static_cast<uint64_t>(it->second.second) + s.response_lens[j] > kMaxSeqLen)
      throw bad(which + " exceeds " + to_string(kMaxSeqLen) + " tokens");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!prompts_.empty() || !seqs_.empty()) throw bad("imported into a cache that is not empty");
  off = 0;  // sequences in order: their prompts' least recently used order comes back
  for (size_t j = 0; j < ns; ++j) {
    auto [start, len] = prompt.at(s.seq_keys[j]);
    const int64_t id = s.seq_ids[j];
    add_locked(id, s.seq_keys[j], s.prompt_tokens.data() + start, len, s.steps[j], s.tags[j]);
    extend_locked(id, s.response_tokens.data() + off, s.response_lens[j]);
    finish_locked(id);  // nothing runs across an import, whatever ran at export (State)
    // Under a smaller budget than the exporter's, the least recently used prompts go, as
    // they would have there; one sequence at a time, so the peak stays near the budget.
    enforce_budget();
    off += s.response_lens[j];
  }
}

}  // namespace srt
