// Depth-bounded, path-compressed suffix tree with exact occurrence counts.
//
// A node stands for a string u (its path from the root, |u| <= max_depth); count(u) is the
// number of occurrences of u in the indexed texts, cont(u) the number of those occurrences
// that are followed by another token (the sum of the children's counts). The tree is kept
// canonical at all times: a non-root node exists iff it has >= 2 children or some
// occurrence ends there (end of a text, the running end of a sequence, or depth
// max_depth). So the node set depends only on the multiset of texts, never on the order
// of insertion or removal, which is what lets tests compare against a rebuilt tree.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "limits.h"
#include "root_map.h"

namespace srt {

constexpr uint32_t NIL = 0xFFFFFFFFu;
// A node with many children keeps them in a token -> child table instead of the sorted
// sibling list (first_child then holds kHubBit | table index): appends through such a hub
// would otherwise walk the list, one cache miss per sibling. Hub children are sorted when
// a draft enumerates them, so the observable order is the same.
constexpr uint32_t kHubBit = 0x80000000u;
constexpr int kHubMin = 32;

// 32 bytes. Indices instead of pointers; the edge label is a reference into the tokens of
// one sequence that contains an occurrence of the node's whole path (invariant).
struct Node {
  int32_t token;          // first token of the edge
  uint32_t count;         // occurrences of the path
  uint32_t cont;          // occurrences followed by a token = sum of children's counts
  uint32_t first_child;   // children sorted by (count desc, token asc); root, hubs: RootMap
  uint32_t next_sibling;  // also the free-list link
  uint32_t parent;
  uint32_t ref_seq;       // slot of the sequence holding the edge label
  uint32_t ref_packed;    // ref index (24 bits) << 8 | edge length (8 bits)
  uint32_t ref_idx() const { return ref_packed >> 8; }
  uint32_t len() const { return ref_packed & 0xFFu; }
  void set_ref(uint32_t idx, uint32_t length) { ref_packed = (idx << 8) | length; }
};
static_assert(sizeof(Node) == 32, "Node must stay 32 bytes");

// A position in the tree: `off` tokens of node's edge consumed (off == len: at the node).
struct Pos {
  uint32_t node = NIL;
  uint32_t off = 0;
  uint32_t depth = 0;
  bool valid() const { return node != NIL; }
};

struct TSeq {
  int64_t id = 0;
  std::vector<int32_t> toks;
  std::vector<uint32_t> loci;  // loci[d-1]: node where the text's suffix of length d ends
  bool alive = true;
  bool running = true;
};

class Tree {
 public:
  explicit Tree(int max_depth);

  int max_depth() const { return depth_; }
  bool has(int64_t id) const { return slot_of_.count(id) != 0; }
  void add_seq(int64_t id);  // an empty running text
  void push(int64_t id, const int32_t* toks, size_t n) { push_slot(slot_of_.at(id), toks, n); }
  // Slots name texts without a hash lookup; they change only when epoch() changes.
  uint32_t slot(int64_t id) const { return slot_of_.at(id); }
  uint64_t epoch() const { return epoch_; }
  void push_slot(uint32_t slot, const int32_t* toks, size_t n);
  void finish(int64_t id);  // keeps the text, frees the running loci
  void remove(int64_t id);  // subtracts every occurrence of the text exactly
  // Drop growth slack (> 1/8) once nothing runs: one copy of the node array, small next to
  // the cost of inserting the sequence that made it grow.
  void shrink() {
    if (nodes_.capacity() * 7 > nodes_.size() * 8) nodes_.shrink_to_fit();
  }
  const std::vector<int32_t>& text(int64_t id) const { return seqs_[slot_of_.at(id)].toks; }

  // Deepest suffix (<= cap tokens) of a registered text that has a continuation.
  Pos locus_match(int64_t id, int cap) const { return locus_match_slot(slot_of_.at(id), cap); }
  Pos locus_match_slot(uint32_t slot, int cap) const;
  // Same for an arbitrary context, found by walking from the root.
  Pos context_match(const int32_t* ctx, size_t n, int cap) const;

  // Next-token view of a position: denominator and the i-th best continuation.
  uint32_t denom(const Pos& p) const;
  // The most frequent continuation (ties: smaller token); false if there is none.
  bool best_next(const Pos& p, int32_t& tok, uint32_t& count, Pos& next) const;
  // Calls f(token, count, next_pos) for continuations in (count desc, token asc) order
  // until f returns false.
  template <class F>
  void for_each_next(const Pos& p, F&& f) const;

  size_t bytes() const;
  size_t num_nodes() const { return nodes_.size() - free_count_ - 1; }
  size_t live_tokens() const { return live_tokens_; }
  size_t num_hubs() const { return hubs_.size() - free_hubs_.size(); }
  size_t num_seqs() const { return slot_of_.size(); }
  std::string check() const;  // "" if every invariant holds, else the first violation
  // (path, count, cont) of every node, for tests.
  void dump(std::vector<std::vector<int32_t>>& paths, std::vector<uint32_t>& counts,
            std::vector<uint32_t>& conts) const;

 private:
  int32_t tok_at(uint32_t seq, uint32_t idx) const { return seqs_[seq].toks[idx]; }
  bool is_hub(uint32_t x) const {
    const uint32_t f = nodes_[x].first_child;
    return f != NIL && (f & kHubBit);
  }
  RootMap& hub(uint32_t x) { return hubs_[nodes_[x].first_child & ~kHubBit]; }
  const RootMap& hub(uint32_t x) const { return hubs_[nodes_[x].first_child & ~kHubBit]; }
  void make_hub(uint32_t x);
  void drop_hub(uint32_t x);
  uint32_t only_child(uint32_t x) const;  // the single child, NIL if none or several
  // Children of x in sibling order (count desc, token asc), hubs included.
  void sorted_children(uint32_t x, std::vector<uint32_t>& out) const;
  int32_t edge_tok(const Node& n, uint32_t k) const { return tok_at(n.ref_seq, n.ref_idx() + k); }
  bool before(uint32_t a, uint32_t b) const {  // sibling order
    const Node& x = nodes_[a];
    const Node& y = nodes_[b];
    return x.count > y.count || (x.count == y.count && x.token < y.token);
  }
  uint32_t alloc();
  void release(uint32_t n);
  uint32_t child(uint32_t x, int32_t t, uint32_t* prev) const;
  void link_sorted(uint32_t x, uint32_t c);
  void unlink(uint32_t x, uint32_t c);
  void replace_child(uint32_t x, uint32_t old_c, uint32_t new_c);
  void promote(uint32_t x, uint32_t c, uint32_t prev);
  void reposition(uint32_t x, uint32_t c);
  void maybe_merge(uint32_t x);
  uint32_t extend(uint32_t x, uint32_t slot, uint32_t p, int32_t t);
  void subtract_path(const std::vector<int32_t>& toks, size_t start, size_t end);
  void compact();
  void note_seq_bytes(TSeq& s, size_t before);
  std::string check_node(uint32_t n, uint32_t parent, std::vector<int32_t>& path) const;

  int depth_;
  std::vector<Node> nodes_;  // nodes_[0] is the root
  uint32_t free_head_ = NIL;
  size_t free_count_ = 0;
  RootMap root_;
  std::vector<TSeq> seqs_;
  std::unordered_map<int64_t, uint32_t> slot_of_;
  size_t live_tokens_ = 0;
  size_t dead_tokens_ = 0;
  size_t seq_bytes_ = 0;  // capacity of every text and loci vector
  uint64_t epoch_ = 0;    // bumped by compact(), which renumbers slots
  std::vector<RootMap> hubs_;
  std::vector<uint32_t> free_hubs_;
  size_t hub_bytes_ = 0;  // capacity of every hub table
};

template <class F>
void Tree::for_each_next(const Pos& p, F&& f) const {
  if (!p.valid()) return;
  const Node& n = nodes_[p.node];
  if (p.node != 0 && p.off < n.len()) {  // inside an edge: one continuation, probability 1
    f(edge_tok(n, p.off), n.count, Pos{p.node, p.off + 1, p.depth + 1});
    return;
  }
  if (p.depth >= static_cast<uint32_t>(depth_)) return;
  if (p.node == 0) {  // root children are unordered; drafting never starts at the root
    root_.for_each([&](int32_t t, uint32_t c) {
      return f(t, nodes_[c].count, Pos{c, 1, 1});
    });
    return;
  }
  if (is_hub(p.node)) {
    std::vector<uint32_t> kids;
    sorted_children(p.node, kids);
    for (uint32_t c : kids)
      if (!f(nodes_[c].token, nodes_[c].count, Pos{c, 1, p.depth + 1})) return;
    return;
  }
  for (uint32_t c = n.first_child; c != NIL; c = nodes_[c].next_sibling) {
    if (!f(nodes_[c].token, nodes_[c].count, Pos{c, 1, p.depth + 1})) return;
  }
}

}  // namespace srt
