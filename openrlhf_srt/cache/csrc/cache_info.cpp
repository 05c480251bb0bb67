// Live figures, invariant checks, dumps and snapshot export of the forest.
#include <algorithm>

#include "cache.h"

namespace srt {

Stats Cache::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.prompts = prompts_.size();
  for (auto& [id, info] : seqs_) {
    if (info.detached) { s.detached += 1; continue; }
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
  s.bytes = total_bytes();
  s.global_bytes = global_.bytes();
  s.byte_budget = cfg_.byte_budget;
  s.evicted_prompts = evicted_prompts_;
  s.evicted_running = evicted_running_;
  return s;
}

std::string Cache::check() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string err = global_.check();
  if (!err.empty()) return "global tree: " + err;
  size_t sum = 0;
  for (auto& [key, e] : prompts_) {
    err = e->tree.check();
    if (!err.empty()) return "prompt " + std::to_string(key) + ": " + err;
    size_t running = 0;
    for (int64_t seq : e->seqs) {
      const SeqInfo& info = seqs_.at(seq);
      if (info.key != key || info.detached) return "sequence bookkeeping differs";
      running += info.running ? 1 : 0;
      if (!global_.has(seq) || !e->tree.has(seq)) return "sequence missing from a tree";
    }
    if (running != e->running) return "running count differs";
    sum += e->bytes;
  }
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

void Cache::export_state(std::vector<std::pair<uint64_t, std::vector<int32_t>>>& prompts,
                         std::vector<SeqExport>& seqs) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> order;  // least recently used first
  for (auto& [key, e] : prompts_) order.emplace_back(e->last_use, key);
  std::sort(order.begin(), order.end());
  for (auto& [use, key] : order) {
    PromptEntry& e = *prompts_.at(key);
    prompts.emplace_back(key, e.prompt);
    for (int64_t id : e.seqs) {
      const SeqInfo& info = seqs_.at(id);
      seqs.push_back(SeqExport{id, key, info.step, info.tag, info.running, global_.text(id)});
    }
  }
}

}  // namespace srt
