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

// An edge label: a reference into the tokens of one sequence that contains an occurrence
// of the node's whole path (invariant), so the tokens above the edge precede it there.
struct EdgeRef {
  uint32_t ref_seq;       // slot of the sequence holding the edge label
  uint32_t ref_packed;    // ref index (24 bits) << 8 | edge length (8 bits)
  uint32_t ref_idx() const { return ref_packed >> 8; }
  uint32_t len() const { return ref_packed & 0xFFu; }
  void set_ref(uint32_t idx, uint32_t length) { ref_packed = (idx << 8) | length; }
};

// 24 bytes. Indices instead of pointers. No token: it is the edge's first token, read from
// the text. No parent: the one operation that needs it (a merge) finds it by walking the
// node's path from the root.
struct Node : EdgeRef {
  uint32_t count;         // occurrences of the path
  uint32_t cont;          // occurrences followed by a token = sum of children's counts
  uint32_t first_child;   // children sorted by (count desc, token asc); root, hubs: RootMap
  uint32_t next_sibling;  // also the free-list link
  Node() = default;
  Node(uint32_t n, uint32_t c, uint32_t first, uint32_t next, uint32_t seq, uint32_t packed)
      : EdgeRef{seq, packed}, count(n), cont(c), first_child(first), next_sibling(next) {}
};
static_assert(sizeof(Node) == 24, "Node must stay 24 bytes");

// 12 bytes: a childless node with a single occurrence (count 1, cont 0), most of every
// depth-bounded suffix tree (about one per start position whose max_depth-gram is unique).
// A leaf turns into a Node before it gets a second
// occurrence or a child. Index space: kLeafBit | index into leaves_; its edge references
// the text of that single occurrence.
constexpr uint32_t kLeafBit = 0x40000000u;
struct Leaf : EdgeRef {
  uint32_t next_sibling;  // also the free-list link
};
static_assert(sizeof(Leaf) == 12, "Leaf must stay 12 bytes");

// A position in the tree: `off` tokens of node's edge consumed (off == len: at the node).
struct Pos {
  uint32_t node = NIL;
  uint32_t off = 0;
  uint32_t depth = 0;
  bool valid() const { return node != NIL; }
};

// A text: its own tokens, or a view of tokens another tree owns (the global tree views the
// response part of the prompt tree's text: one copy of each response). A view stays valid
// while its owner holds the text; the forest re-points it when the owner's buffer moves
// (append, finish) and takes a copy when it removes the text (Tree::remove), before the
// owner may free it.
struct TSeq {
  int64_t id = 0;
  const int32_t* data = nullptr;  // own.data() or the view
  uint32_t size = 0;
  bool alive = true;
  bool running = true;
  bool view = false;
  std::vector<int32_t> own;
  std::vector<uint32_t> loci;  // loci[d-1]: node where the text's suffix of length d ends
};

// Where a tree's bytes are; their sum is Tree::bytes(). Names as for_each_part gives them.
struct TreeBytes {
  size_t nodes = 0;         // live Nodes (the root included), 32 bytes each
  size_t node_slack = 0;    // Node array capacity beyond them (growth, free list)
  size_t leaves = 0;        // live Leaves, 12 bytes each
  size_t leaf_slack = 0;    // Leaf array capacity beyond them
  size_t texts = 0;         // token arrays of the sequences (by capacity)
  size_t loci = 0;          // running sequences' locus arrays
  size_t seq_records = 0;   // the sequence table (TSeq) by capacity
  size_t slot_map = 0;      // id -> slot hash map
  size_t child_tables = 0;  // the root's and the hubs' token -> child tables
  size_t fixed = 0;         // the Tree object
};
template <class F>
void for_each_part(const TreeBytes& b, F&& f) {
  f("nodes", b.nodes);
  f("node_slack", b.node_slack);
  f("leaves", b.leaves);
  f("leaf_slack", b.leaf_slack);
  f("texts", b.texts);
  f("loci", b.loci);
  f("seq_records", b.seq_records);
  f("slot_map", b.slot_map);
  f("child_tables", b.child_tables);
  f("fixed", b.fixed);
}

class Tree {
 public:
  explicit Tree(int max_depth);

  int max_depth() const { return depth_; }
  bool has(int64_t id) const { return slot_of_.count(id) != 0; }
  void add_seq(int64_t id, bool view = false);  // an empty running text
  void push(int64_t id, const int32_t* toks, size_t n) { push_slot(slot_of_.at(id), toks, n); }
  // Slots name texts without a hash lookup; they change only when epoch() changes.
  uint32_t slot(int64_t id) const { return slot_of_.at(id); }
  uint64_t epoch() const { return epoch_; }
  void push_slot(uint32_t slot, const int32_t* toks, size_t n);  // an owned text
  // A view text: its tokens are now data[0:size] (the first ones as before); indexes the new.
  void push_view(uint32_t slot, const int32_t* data, size_t size);
  void set_view(uint32_t slot, const int32_t* data) { seqs_[slot].data = data; }
  void finish(int64_t id);  // keeps the text, frees the running loci
  void remove(int64_t id);  // subtracts every occurrence of the text exactly
  // Drop growth slack (> 1/8) once nothing runs: one copy of the node arrays, small next to
  // the cost of inserting the sequence that made them grow.
  void shrink() {
    if (nodes_.capacity() * 7 > nodes_.size() * 8) nodes_.shrink_to_fit();
    if (leaves_.capacity() * 7 > leaves_.size() * 8) leaves_.shrink_to_fit();
  }
  const int32_t* text_data(uint32_t slot) const { return seqs_[slot].data; }
  size_t text_size(uint32_t slot) const { return seqs_[slot].size; }

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
  void add_bytes(TreeBytes& b) const;  // adds this tree's parts (slow: visits every sequence)
  size_t num_nodes() const {
    return nodes_.size() - free_count_ - 1 + leaves_.size() - free_leaf_count_;
  }
  size_t live_tokens() const { return live_tokens_; }
  size_t num_hubs() const { return hubs_.size() - free_hubs_.size(); }
  size_t num_seqs() const { return slot_of_.size(); }
  std::string check() const;  // "" if every invariant holds, else the first violation
  // (path, count, cont) of every node, for tests.
  void dump(std::vector<std::vector<int32_t>>& paths, std::vector<uint32_t>& counts,
            std::vector<uint32_t>& conts) const;

 private:
  int32_t tok_at(uint32_t seq, uint32_t idx) const { return seqs_[seq].data[idx]; }
  void index(uint32_t slot, size_t from);  // count the occurrences ending at data[from:size]
  // Any node index, Node or Leaf (never NIL: it has kLeafBit set too).
  static bool is_leaf(uint32_t x) { return (x & kLeafBit) != 0; }
  Leaf& leaf(uint32_t x) { return leaves_[x & ~kLeafBit]; }
  const Leaf& leaf(uint32_t x) const { return leaves_[x & ~kLeafBit]; }
  EdgeRef& ref(uint32_t x) {
    return is_leaf(x) ? static_cast<EdgeRef&>(leaf(x)) : static_cast<EdgeRef&>(nodes_[x]);
  }
  const EdgeRef& ref(uint32_t x) const {
    return is_leaf(x) ? static_cast<const EdgeRef&>(leaf(x))
                      : static_cast<const EdgeRef&>(nodes_[x]);
  }
  uint32_t count_of(uint32_t x) const { return is_leaf(x) ? 1 : nodes_[x].count; }
  uint32_t cont_of(uint32_t x) const { return is_leaf(x) ? 0 : nodes_[x].cont; }
  uint32_t len_of(uint32_t x) const { return ref(x).len(); }
  int32_t token_of(uint32_t x) const {  // the edge's first token (x is not the root)
    const EdgeRef& r = ref(x);
    return tok_at(r.ref_seq, r.ref_idx());
  }
  uint32_t& next_of(uint32_t x) { return is_leaf(x) ? leaf(x).next_sibling : nodes_[x].next_sibling; }
  uint32_t next_of(uint32_t x) const {
    return is_leaf(x) ? leaf(x).next_sibling : nodes_[x].next_sibling;
  }
  bool is_hub(uint32_t x) const {
    if (is_leaf(x)) return false;
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
  int32_t edge_tok(uint32_t x, uint32_t k) const {
    const EdgeRef& r = ref(x);
    return tok_at(r.ref_seq, r.ref_idx() + k);
  }
  bool before(uint32_t a, uint32_t b) const {  // sibling order
    const uint32_t ca = count_of(a), cb = count_of(b);
    return ca > cb || (ca == cb && token_of(a) < token_of(b));
  }
  size_t slot_map_bytes() const;
  size_t child_table_bytes() const;
  uint32_t alloc();
  uint32_t alloc_leaf();
  void release(uint32_t n);  // a Node or a Leaf
  // The leaf c (child of x) gets a second occurrence: it becomes a Node, same place among
  // x's children; the running loci naming it are renamed. Returns the Node.
  uint32_t leaf_to_node(uint32_t x, uint32_t c);
  uint32_t child(uint32_t x, int32_t t, uint32_t* prev) const;
  void link_sorted(uint32_t x, uint32_t c);
  void unlink(uint32_t x, uint32_t c);
  void replace_child(uint32_t x, uint32_t old_c, uint32_t new_c);
  void promote(uint32_t x, uint32_t c, uint32_t prev);
  void reposition(uint32_t x, uint32_t c);
  // A node with one child and no occurrence ending at it is not canonical: merge it.
  bool mergeable(uint32_t x) const;
  void merge(uint32_t parent, uint32_t x);
  // The parent of x, whose path is the d tokens at `path` (a walk from the root).
  uint32_t parent_of(uint32_t x, const int32_t* path, uint32_t d) const;
  uint32_t extend(uint32_t x, uint32_t d, uint32_t slot, uint32_t p, int32_t t);
  void subtract_path(const int32_t* toks, size_t start, size_t end);
  void compact();
  void note_seq_bytes(TSeq& s, size_t before);
  std::string check_node(uint32_t n, std::vector<int32_t>& path) const;

  int depth_;
  std::vector<Node> nodes_;  // nodes_[0] is the root
  uint32_t free_head_ = NIL;
  size_t free_count_ = 0;
  std::vector<Leaf> leaves_;
  uint32_t free_leaf_head_ = NIL;
  size_t free_leaf_count_ = 0;
  RootMap root_;
  std::vector<TSeq> seqs_;
  std::unordered_map<int64_t, uint32_t> slot_of_;
  size_t live_tokens_ = 0;
  size_t dead_tokens_ = 0;
  size_t seq_bytes_ = 0;  // capacity of every owned text and loci vector
  uint64_t epoch_ = 0;    // bumped by compact(), which renumbers slots
  std::vector<RootMap> hubs_;
  std::vector<uint32_t> free_hubs_;
  size_t hub_bytes_ = 0;  // capacity of every hub table
};

template <class F>
void Tree::for_each_next(const Pos& p, F&& f) const {
  if (!p.valid()) return;
  if (p.node != 0 && p.off < len_of(p.node)) {  // inside an edge: one continuation, probability 1
    f(edge_tok(p.node, p.off), count_of(p.node), Pos{p.node, p.off + 1, p.depth + 1});
    return;
  }
  if (p.depth >= static_cast<uint32_t>(depth_) || is_leaf(p.node)) return;
  if (p.node == 0) {  // root children are unordered; drafting never starts at the root
    root_.for_each([&](int32_t t, uint32_t c) {
      return f(t, count_of(c), Pos{c, 1, 1});
    });
    return;
  }
  if (is_hub(p.node)) {
    std::vector<uint32_t> kids;
    sorted_children(p.node, kids);
    for (uint32_t c : kids)
      if (!f(token_of(c), count_of(c), Pos{c, 1, p.depth + 1})) return;
    return;
  }
  for (uint32_t c = nodes_[p.node].first_child; c != NIL; c = next_of(c)) {
    if (!f(token_of(c), count_of(c), Pos{c, 1, p.depth + 1})) return;
  }
}

}  // namespace srt
