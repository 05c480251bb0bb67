// Next-token candidates from one or two trees, greedy chains and best-first draft trees.
#include "draft.h"

#include <algorithm>
#include <queue>

namespace srt {
namespace {

struct State {
  Pos a, b;
};

struct Cand {
  int32_t tok;
  double p;  // conditional probability of tok after the state
  State st;
};

// The `limit` most probable continuations of `s`, sorted by (p desc, token asc).
void candidates(const Source& src, const State& s, size_t limit, std::vector<Cand>& out) {
  out.clear();
  const uint32_t da = src.a ? src.a->denom(s.a) : 0;
  const uint32_t db = src.b ? src.b->denom(s.b) : 0;
  if (limit == 0 || (da == 0 && db == 0)) return;
  if (db == 0 || da == 0) {  // one tree: its sibling order is already the answer
    const Tree* t = da ? src.a : src.b;
    const double d = da ? da : db;
    const bool is_a = da != 0;
    t->for_each_next(is_a ? s.a : s.b, [&](int32_t tok, uint32_t cnt, const Pos& np) {
      out.push_back(Cand{tok, cnt / d, is_a ? State{np, Pos{}} : State{Pos{}, np}});
      return out.size() < limit;
    });
    return;
  }
  struct Item {
    int32_t tok;
    uint32_t ca, cb;
    Pos pa, pb;
  };
  std::vector<Item> items;
  src.a->for_each_next(s.a, [&](int32_t tok, uint32_t cnt, const Pos& np) {
    items.push_back(Item{tok, cnt, 0, np, Pos{}});
    return true;
  });
  size_t na = items.size();
  std::sort(items.begin(), items.end(), [](const Item& x, const Item& y) { return x.tok < y.tok; });
  src.b->for_each_next(s.b, [&](int32_t tok, uint32_t cnt, const Pos& np) {
    auto it = std::lower_bound(items.begin(), items.begin() + na, tok,
                               [](const Item& x, int32_t t) { return x.tok < t; });
    if (it != items.begin() + na && it->tok == tok) {
      it->cb = cnt;
      it->pb = np;
    } else {
      items.push_back(Item{tok, 0, cnt, Pos{}, np});
    }
    return true;
  });
  const double w = src.weight_b;
  const double denom = da + w * db;
  out.reserve(items.size());
  for (const Item& it : items) out.push_back(Cand{it.tok, (it.ca + w * it.cb) / denom, {it.pa, it.pb}});
  auto order = [](const Cand& x, const Cand& y) { return x.p > y.p || (x.p == y.p && x.tok < y.tok); };
  if (out.size() > limit) {
    std::partial_sort(out.begin(), out.begin() + limit, out.end(), order);
    out.resize(limit);
  } else {
    std::sort(out.begin(), out.end(), order);
  }
}

}  // namespace

void draft_chain(const Source& src, int budget, double min_prob, Chain& out) {
  out.toks.clear();
  out.probs.clear();
  out.score = 0.0;
  if (budget <= 0) return;
  const bool one_tree = !(src.a && src.pa.valid() && src.b && src.pb.valid());
  if (one_tree) {  // hot path: the head of each sibling list is the argmax
    const Tree* t = (src.a && src.pa.valid()) ? src.a : src.b;
    Pos p = (src.a && src.pa.valid()) ? src.pa : src.pb;
    if (!t || !p.valid()) return;
    double prob = 1.0;
    for (int k = 0; k < budget; ++k) {
      const uint32_t d = t->denom(p);
      if (d == 0) break;
      int32_t tok = 0;
      uint32_t cnt = 0;
      Pos np;
      if (!t->best_next(p, tok, cnt, np)) break;
      double q = prob * (cnt / static_cast<double>(d));
      if (q < min_prob) break;
      prob = q;
      out.toks.push_back(tok);
      out.probs.push_back(static_cast<float>(q));
      out.score += q;
      p = np;
    }
    return;
  }
  State s{src.pa, src.pb};
  double prob = 1.0;
  std::vector<Cand> c;
  for (int k = 0; k < budget; ++k) {
    candidates(src, s, 1, c);
    if (c.empty()) break;
    double q = prob * c[0].p;
    if (q < min_prob) break;
    prob = q;
    out.toks.push_back(c[0].tok);
    out.probs.push_back(static_cast<float>(q));
    out.score += q;
    s = c[0].st;
  }
}

void draft_tree(const Source& src, int budget, double min_prob, DraftTree& out) {
  out = DraftTree{};
  struct Item {
    double q;
    uint64_t seq;
    int32_t tok;
    int32_t parent;
    State st;
  };
  auto worse = [](const Item& x, const Item& y) { return x.q < y.q || (x.q == y.q && x.seq > y.seq); };
  std::priority_queue<Item, std::vector<Item>, decltype(worse)> heap(worse);
  uint64_t seq = 0;
  std::vector<Cand> c;
  auto push_children = [&](const State& s, double prob, int32_t parent) {
    size_t room = static_cast<size_t>(budget) - out.toks.size();
    candidates(src, s, room, c);
    for (const Cand& x : c) heap.push(Item{prob * x.p, seq++, x.tok, parent, x.st});
  };
  if (budget <= 0) return;
  push_children(State{src.pa, src.pb}, 1.0, -1);
  while (!heap.empty() && out.toks.size() < static_cast<size_t>(budget)) {
    Item it = heap.top();
    heap.pop();
    if (it.q < min_prob) break;
    int32_t idx = static_cast<int32_t>(out.toks.size());
    out.toks.push_back(it.tok);
    out.parents.push_back(it.parent);
    out.probs.push_back(static_cast<float>(it.q));
    if (out.toks.size() < static_cast<size_t>(budget)) push_children(it.st, it.q, idx);
  }
}

}  // namespace srt
