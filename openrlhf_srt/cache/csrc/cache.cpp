// Sequence lifecycle, the batched engine step, and drafting rules over the forest.
#include "cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace srt {

using std::to_string;

void validate_tokens(const int32_t* toks, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (toks[i] < 0)
      throw std::invalid_argument("token id " + to_string(toks[i]) + " at position " +
                                  to_string(i) + " of " + what + " is negative");
}

// Checked before global_ is built, so a bad config fails with its own message.
static const Config& checked(const Config& cfg) {
  if (cfg.max_depth < kMinDepthLimit || cfg.max_depth > kMaxDepthLimit)
    throw std::invalid_argument("max_depth must be in [" + to_string(kMinDepthLimit) + ", " +
                                to_string(kMaxDepthLimit) + "]");
  if (cfg.byte_budget < kMinByteBudget)
    throw std::invalid_argument("byte_budget must be >= " + to_string(kMinByteBudget));
  if (cfg.rule < kPrompt || cfg.rule > kMerge) throw std::invalid_argument("unknown draft rule");
  return cfg;
}

Cache::Cache(const Config& cfg) : cfg_(checked(cfg)), global_(cfg.max_depth) {}

static void check_budget(int max_tokens, const char* what) {
  if (max_tokens < 0 || max_tokens > kMaxDraftTokens)
    throw std::invalid_argument(std::string(what) + " must be in [0, " +
                                to_string(kMaxDraftTokens) + "], got " + to_string(max_tokens));
}

SeqInfo* Cache::find_seq(int64_t seq) {
  auto it = seqs_.find(seq);
  if (it != seqs_.end()) return &it->second;
  if (dropped_ == 0) throw std::invalid_argument("unknown seq_id " + to_string(seq));
  return nullptr;
}

size_t Cache::entry_bytes(const PromptEntry& e) {
  return e.prompt.capacity() * sizeof(int32_t) + e.seqs.capacity() * sizeof(int64_t) +
         sizeof(PromptEntry) + 48;
}

size_t Cache::prompt_table_bytes() const {
  return prompts_.size() * 32 + prompts_.bucket_count() * sizeof(void*);
}

void Cache::remeasure(PromptEntry& e) {
  size_t now = e.tree.bytes() + entry_bytes(e);
  prompt_bytes_ = prompt_bytes_ + now - e.bytes;
  e.bytes = now;
}

Cache::Bytes Cache::bytes_by_part() const {
  // Hash-map nodes: key + value + next pointer + cached hash, rounded to the allocator's 16.
  const size_t seq_node = (sizeof(int64_t) + sizeof(SeqInfo) + 16 + 15) / 16 * 16;
  Bytes b;
  b.prompts = prompt_bytes_ + prompt_table_bytes();
  b.global = global_.bytes();
  b.detached = detached_ * seq_node;
  // the record table and the cache object itself (its global tree counted in b.global)
  b.records = sizeof(Cache) - sizeof(Tree) + (seqs_.size() - detached_) * seq_node +
              seqs_.bucket_count() * sizeof(void*);
  return b;
}

void Cache::add_sequence(int64_t seq, uint64_t key, const int32_t* prompt, size_t n,
                         int64_t step, int tag) {
  std::lock_guard<std::mutex> lock(mu_);
  add_locked(seq, key, prompt, n, step, tag);
  enforce_budget();
}

void Cache::add_locked(int64_t seq, uint64_t key, const int32_t* prompt, size_t n, int64_t step,
                       int tag) {
  if (n == 0) throw std::invalid_argument("prompt_token_ids is empty");
  if (n > kMaxSeqLen)
    throw std::invalid_argument("prompt_token_ids exceeds " + to_string(kMaxSeqLen) + " tokens");
  if (tag != kRollout && tag != kRunahead) throw std::invalid_argument("unknown tag");
  validate_tokens(prompt, n, "prompt_token_ids");
  if (seqs_.count(seq)) throw std::invalid_argument("duplicate seq_id " + to_string(seq));
  auto it = prompts_.find(key);
  if (it == prompts_.end()) {
    auto e = std::make_unique<PromptEntry>(cfg_.max_depth);
    e->prompt.assign(prompt, prompt + n);
    it = prompts_.emplace(key, std::move(e)).first;
  } else if (it->second->prompt.size() != n ||
             !std::equal(prompt, prompt + n, it->second->prompt.begin())) {
    throw std::invalid_argument("prompt_token_ids differ from the prompt cached under key " +
                                to_string(key));
  }
  PromptEntry& e = *it->second;
  e.tree.add_seq(seq);
  e.tree.push(seq, prompt, n);
  global_.add_seq(seq, /*view=*/true);  // of the response part of the prompt tree's text
  e.seqs.push_back(seq);
  e.running += 1;
  e.last_use = ++tick_;
  SeqInfo info;
  info.key = key;
  info.step = step;
  info.tag = tag;
  info.entry = &e;
  seqs_[seq] = info;
  remeasure(e);
}

uint32_t Cache::pslot(int64_t seq, SeqInfo& info) {
  const Tree& t = info.entry->tree;
  if (info.pepoch != t.epoch()) {
    info.pslot = t.slot(seq);
    info.pepoch = t.epoch();
  }
  return info.pslot;
}

uint32_t Cache::gslot(int64_t seq, SeqInfo& info) {
  if (info.gepoch != global_.epoch()) {
    info.gslot = global_.slot(seq);
    info.gepoch = global_.epoch();
  }
  return info.gslot;
}

void Cache::append(int64_t seq, SeqInfo& info, const int32_t* toks, size_t n) {
  PromptEntry& e = *info.entry;
  const uint32_t ps = pslot(seq, info);
  e.tree.push_slot(ps, toks, n);
  const size_t plen = e.prompt.size();  // the global tree views the response part
  global_.push_view(gslot(seq, info), e.tree.text_data(ps) + plen, e.tree.text_size(ps) - plen);
  e.last_use = ++tick_;
  remeasure(e);
}

void Cache::extend(int64_t seq, const int32_t* toks, size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  extend_locked(seq, toks, n);
  enforce_budget();
}

void Cache::extend_locked(int64_t seq, const int32_t* toks, size_t n) {
  SeqInfo* info = find_seq(seq);
  if (info && !info->running)
    throw std::invalid_argument("seq_id " + to_string(seq) + " is finished");
  validate_tokens(toks, n, "tokens");
  if (!info || info->detached || n == 0) return;  // detached or dropped: not indexed
  append(seq, *info, toks, n);
}

void Cache::finish(int64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  finish_locked(seq);
  enforce_budget();
}

void Cache::finish_locked(int64_t seq) {
  SeqInfo* found = find_seq(seq);
  if (!found) { dropped_ -= 1; return; }
  SeqInfo& info = *found;
  if (!info.running)
    throw std::invalid_argument("seq_id " + to_string(seq) + " is already finished");
  if (info.detached) { seqs_.erase(seq); detached_ -= 1; return; }
  PromptEntry& e = entry(info.key);
  e.tree.finish(seq);  // may move the text: the global tree's view follows
  global_.finish(seq);
  global_.set_view(gslot(seq, info), e.tree.text_data(pslot(seq, info)) + e.prompt.size());
  e.running -= 1;
  info.running = false;
  if (e.running == 0) e.tree.shrink();  // an idle prompt tree stops growing until reused
  remeasure(e);
}

void Cache::remove_locked(int64_t seq) {
  SeqInfo* found = find_seq(seq);
  if (!found) { dropped_ -= 1; return; }
  SeqInfo& info = *found;
  if (info.detached) { seqs_.erase(seq); detached_ -= 1; return; }
  auto it = prompts_.find(info.key);
  PromptEntry& e = *it->second;
  global_.remove(seq);  // first: it copies the text it views, which the prompt tree may free
  e.tree.remove(seq);
  e.seqs.erase(std::find(e.seqs.begin(), e.seqs.end(), seq));
  if (info.running) e.running -= 1;
  seqs_.erase(seq);
  if (e.seqs.empty()) {
    prompt_bytes_ -= e.bytes;
    prompts_.erase(it);
  } else {
    remeasure(e);
  }
}

void Cache::remove(int64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  remove_locked(seq);
  enforce_budget();
}

size_t Cache::drop_steps_before(int64_t step) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int64_t> victims;
  for (auto& [id, info] : seqs_)  // running sequences stay until they finish
    if (info.step < step && !info.running) victims.push_back(id);
  std::sort(victims.begin(), victims.end());
  for (int64_t id : victims) remove_locked(id);
  enforce_budget();
  return victims.size();
}

void Cache::evict(uint64_t key) {
  auto it = prompts_.find(key);
  PromptEntry& e = *it->second;
  for (int64_t seq : e.seqs) {
    global_.remove(seq);
    SeqInfo& info = seqs_.at(seq);
    if (info.running) {
      info.detached = true;
      info.entry = nullptr;
      detached_ += 1;
      evicted_running_ += 1;
    } else {
      seqs_.erase(seq);
    }
  }
  prompt_bytes_ -= e.bytes;
  prompts_.erase(it);
  evicted_prompts_ += 1;
}

bool Cache::within_budget() {
  if (total_bytes() <= cfg_.byte_budget) return true;
  // Hash tables keep their bucket arrays as they empty; a sparse one is sized down to its
  // contents (amortized: only after it halved), so that evicting everything always fits.
  if (seqs_.bucket_count() > 2 * seqs_.size() + 16) seqs_.rehash(0);
  if (prompts_.bucket_count() > 2 * prompts_.size() + 16) prompts_.rehash(0);
  return total_bytes() <= cfg_.byte_budget;
}

// Every public call that changes the forest ends here, so the budget holds after each one.
// Order: idle prompts, least recently used first; then the detached records, lowest id
// first (they are dropped: no record; they draft nothing, so they go before any running
// prompt); then prompts with a running sequence (theirs are detached), and their records.
// With every prompt and record gone the forest is a few KiB, below kMinByteBudget.
void Cache::enforce_budget() {
  if (within_budget()) return;
  if (evict_lru(false) || drop_detached() || evict_lru(true)) return;
  drop_detached();
}

bool Cache::evict_lru(bool running) {
  std::vector<std::pair<uint64_t, uint64_t>> order;  // (last_use, key)
  for (auto& [key, e] : prompts_)
    if ((e->running > 0) == running) order.emplace_back(e->last_use, key);
  std::sort(order.begin(), order.end());
  for (auto& [use, key] : order) {
    if (within_budget()) return true;
    evict(key);
  }
  return within_budget();
}

bool Cache::drop_detached() {
  std::vector<int64_t> ids;
  for (auto& [id, info] : seqs_)
    if (info.detached) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (int64_t id : ids) {
    if (within_budget()) return true;
    seqs_.erase(id);
    detached_ -= 1;
    dropped_ += 1;
    dropped_running_ += 1;
  }
  return within_budget();
}

int Cache::match_cap(int budget) const {
  return std::max(1, std::min(cfg_.max_depth - 1, cfg_.max_depth - budget));
}

void Cache::make_draft(const Tree* a, Pos pa, const Tree* b, Pos pb, int budget,
                       double min_prob, bool want_tree, Draft& r) {
  r.path.toks.clear();
  r.path.probs.clear();
  r.path.score = 0.0;
  r.tree = DraftTree{};
  r.match_len = 0;
  r.source = kNoMatch;
  if (budget <= 0) return;
  Source src;
  if (cfg_.rule == kBest) {
    Source sa{a, pa, nullptr, Pos{}, 1.0}, sb{nullptr, Pos{}, b, pb, 1.0};
    draft_chain(sa, budget, min_prob, r.path);
    // A full-length chain of probability-1 tokens cannot be beaten (ties go to the prompt).
    if (r.path.score >= static_cast<double>(budget))
      alt_.toks.clear(), alt_.probs.clear(), alt_.score = 0.0;
    else
      draft_chain(sb, budget, min_prob, alt_);
    bool use_b = alt_.score > r.path.score || (!pa.valid() && pb.valid());
    if (use_b) std::swap(r.path, alt_);
    src = use_b ? sb : sa;
    r.match_len = use_b ? pb.depth : pa.depth;
    r.source = (use_b ? pb : pa).valid() ? (use_b ? kFromGlobal : kFromPrompt) : kNoMatch;
  } else {
    if (cfg_.rule != kGlobal) { src.a = a; src.pa = pa; }
    if (cfg_.rule != kPrompt) { src.b = b; src.pb = pb; }
    src.weight_b = cfg_.global_weight;
    draft_chain(src, budget, min_prob, r.path);
    bool va = src.pa.valid(), vb = src.pb.valid();
    r.match_len = std::max(va ? src.pa.depth : 0u, vb ? src.pb.depth : 0u);
    r.source = va && vb ? kFromBoth : va ? kFromPrompt : vb ? kFromGlobal : kNoMatch;
  }
  if (want_tree) draft_tree(src, budget, min_prob, r.tree);
}

Draft Cache::draft(int64_t seq, int max_tokens, double min_prob, bool want_tree) {
  std::lock_guard<std::mutex> lock(mu_);
  check_budget(max_tokens, "max_tokens");
  SeqInfo* found = find_seq(seq);
  if (found && !found->running)
    throw std::invalid_argument("seq_id " + to_string(seq) + " is finished; only running "
                                "sequences are drafted for (use draft_context)");
  if (!found || found->detached || max_tokens == 0) return Draft{};
  SeqInfo& info = *found;
  PromptEntry& e = entry(info.key);
  e.last_use = ++tick_;
  int cap = match_cap(max_tokens);
  Draft r;
  make_draft(&e.tree, e.tree.locus_match(seq, cap), &global_, global_.locus_match(seq, cap),
             max_tokens, min_prob, want_tree, r);
  return r;
}

Draft Cache::draft_context(uint64_t key, const int32_t* ctx, size_t n, size_t response_start,
                           int max_tokens, double min_prob, bool want_tree) {
  std::lock_guard<std::mutex> lock(mu_);
  check_budget(max_tokens, "max_tokens");
  if (n == 0) throw std::invalid_argument("context_tokens is empty");
  if (response_start > n) throw std::invalid_argument("response_start exceeds the context");
  validate_tokens(ctx, n, "context_tokens");
  if (max_tokens == 0) return Draft{};
  int cap = match_cap(max_tokens);
  const Tree* a = nullptr;
  Pos pa;
  auto it = prompts_.find(key);
  if (it != prompts_.end()) {
    it->second->last_use = ++tick_;
    a = &it->second->tree;
    pa = a->context_match(ctx, n, cap);
  }
  Pos pb = global_.context_match(ctx + response_start, n - response_start, cap);
  Draft r;
  make_draft(a, pa, &global_, pb, max_tokens, min_prob, want_tree, r);
  return r;
}

void Cache::step(const int64_t* seqs, size_t nseq, const int32_t* toks, size_t ntok,
                 const int32_t* counts, const int32_t* budgets, double min_prob,
                 BatchDrafts& out) {
  std::lock_guard<std::mutex> lock(mu_);
  // Validate everything first so that a bad call changes nothing.
  std::vector<SeqInfo*> infos(nseq);  // nullptr: a dropped sequence, nothing to do
  size_t total = 0;
  for (size_t i = 0; i < nseq; ++i) {
    infos[i] = find_seq(seqs[i]);
    if (infos[i] && !infos[i]->running)
      throw std::invalid_argument("seq_id " + to_string(seqs[i]) + " is finished");
    if (counts[i] < 0) throw std::invalid_argument("new_token_counts[" + to_string(i) + "] is negative");
    if (budgets[i] < 0) throw std::invalid_argument("budgets[" + to_string(i) + "] is negative");
    if (budgets[i] > kMaxDraftTokens)
      throw std::invalid_argument("budgets[" + to_string(i) + "] exceeds " +
                                  to_string(kMaxDraftTokens));
    total += static_cast<size_t>(counts[i]);
  }
  if (total != ntok)
    throw std::invalid_argument("new_token_counts sum to " + to_string(total) + " but " +
                                to_string(ntok) + " new tokens were given");
  const uint64_t stamp = ++step_calls_;
  for (size_t i = 0; i < nseq; ++i) {
    if (!infos[i]) continue;
    if (infos[i]->stamp == stamp)
      throw std::invalid_argument("seq_ids contain " + to_string(seqs[i]) + " twice");
    infos[i]->stamp = stamp;
  }
  validate_tokens(toks, ntok, "new_tokens");
  size_t off = 0;
  for (size_t i = 0; i < nseq; ++i) {  // all appends first: siblings see this step's tokens
    if (counts[i] > 0 && infos[i] && !infos[i]->detached)
      append(seqs[i], *infos[i], toks + off, counts[i]);
    off += static_cast<size_t>(counts[i]);
  }
  const size_t dropped_before = dropped_running_;
  enforce_budget();
  if (dropped_running_ != dropped_before) {  // records dropped just now are gone
    for (size_t i = 0; i < nseq; ++i) {
      if (!infos[i]) continue;
      auto it = seqs_.find(seqs[i]);
      infos[i] = it == seqs_.end() ? nullptr : &it->second;
    }
  }
  out.offsets.assign(1, 0);
  out.match_len.assign(nseq, 0);
  out.score.assign(nseq, 0.0f);
  out.source.assign(nseq, kNoMatch);
  out.toks.clear();
  out.probs.clear();
  for (size_t i = 0; i < nseq; ++i) {
    if (budgets[i] > 0 && infos[i] && !infos[i]->detached) {
      SeqInfo& info = *infos[i];
      PromptEntry& e = *info.entry;
      int cap = match_cap(budgets[i]);
      Draft& r = scratch_;
      make_draft(&e.tree, e.tree.locus_match_slot(pslot(seqs[i], info), cap), &global_,
                 global_.locus_match_slot(gslot(seqs[i], info), cap), budgets[i], min_prob,
                 false, r);
      out.toks.insert(out.toks.end(), r.path.toks.begin(), r.path.toks.end());
      out.probs.insert(out.probs.end(), r.path.probs.begin(), r.path.probs.end());
      out.match_len[i] = r.match_len;
      out.score[i] = static_cast<float>(r.path.score);
      out.source[i] = static_cast<int8_t>(r.source);
    }
    out.offsets.push_back(static_cast<int64_t>(out.toks.size()));
  }
}

void Cache::resize(uint64_t byte_budget) {
  std::lock_guard<std::mutex> lock(mu_);
  if (byte_budget < kMinByteBudget)
    throw std::invalid_argument("byte_budget must be >= " + to_string(kMinByteBudget));
  cfg_.byte_budget = byte_budget;
  enforce_budget();
}

void Cache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  prompts_.clear();
  seqs_.clear();
  global_ = Tree(cfg_.max_depth);
  prompt_bytes_ = 0;
  detached_ = dropped_ = 0;
}

}  // namespace srt
