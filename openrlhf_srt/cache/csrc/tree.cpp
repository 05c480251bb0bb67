// Online insertion and exact removal for the depth-bounded suffix tree (see tree.h).
#include "tree.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace srt {

Tree::Tree(int max_depth) : depth_(max_depth) {
  if (max_depth < 1 || max_depth > kMaxDepthLimit)
    throw std::invalid_argument("max_depth must be in [1, " + std::to_string(kMaxDepthLimit) + "]");
  nodes_.push_back(Node{0, 0, NIL, NIL, 0, 0});
}

bool Tree::mergeable(uint32_t x) const {
  if (x == 0 || is_leaf(x)) return false;
  const Node& X = nodes_[x];
  return X.count == X.cont && only_child(x) != NIL;
}

// The child absorbs x's edge (the child keeps its index, so running loci pointing at it
// stay valid; none points at x: no occurrence ends there).
void Tree::merge(uint32_t parent, uint32_t x) {
  const uint32_t c = only_child(x);
  const Node& X = nodes_[x];
  EdgeRef& C = ref(c);
  C.set_ref(C.ref_idx() - X.len(), C.len() + X.len());
  replace_child(parent, x, c);
  release(x);
}

uint32_t Tree::parent_of(uint32_t x, const int32_t* path, uint32_t d) const {
  uint32_t node = 0;
  for (uint32_t depth = 0; depth < d;) {
    const uint32_t c = child(node, path[depth], nullptr);
    if (c == x) return node;
    if (c == NIL) break;
    depth += len_of(c);
    node = c;
  }
  throw std::logic_error("tree corrupt: a node is not on its path");
}

uint32_t Tree::leaf_to_node(uint32_t x, uint32_t c) {
  const Leaf l = leaf(c);
  const uint32_t n = alloc();
  nodes_[n] = Node{1, 0, NIL, NIL, l.ref_seq, l.ref_packed};
  replace_child(x, c, n);
  // The single occurrence is in l.ref_seq's text; if it ends at the running end, that
  // sequence's loci name the leaf.
  for (uint32_t& locus : seqs_[l.ref_seq].loci)
    if (locus == c) locus = n;
  release(c);
  return n;
}

// Our occurrence of path(x) (d tokens) is followed by token t (at index p of text `slot`):
// count the longer occurrence and return the node where it now ends.
uint32_t Tree::extend(uint32_t x, uint32_t d, uint32_t slot, uint32_t p, int32_t t) {
  if (is_leaf(x)) {  // our own single occurrence: the leaf grows
    Leaf& L = leaf(x);
    const uint32_t len = L.len() + 1;
    L.ref_seq = slot;
    L.set_ref(p + 1 - len, len);
    return x;
  }
  if (x == 0) nodes_[0].count += 1;
  nodes_[x].cont += 1;
  uint32_t prev = NIL;
  uint32_t c = child(x, t, &prev);
  if (c == NIL) {
    Node& X = nodes_[x];
    if (x != 0 && X.first_child == NIL && X.count == 1) {  // a leaf only we pass: grow it
      X.cont -= 1;
      uint32_t len = X.len() + 1;
      X.ref_seq = slot;
      X.set_ref(p + 1 - len, len);
      return x;
    }
    uint32_t n = alloc_leaf();
    Leaf& L = leaf(n);
    L.ref_seq = slot;
    L.set_ref(p, 1);
    L.next_sibling = NIL;
    link_sorted(x, n);
    return n;
  }
  if (len_of(c) == 1) {
    if (is_leaf(c)) c = leaf_to_node(x, c);
    nodes_[c].count += 1;
    promote(x, c, prev);
    if (mergeable(x)) merge(parent_of(x, seqs_[slot].data + (p - d), d), x);
    return c;
  }
  Node& X = nodes_[x];
  if (x != 0 && X.count == X.cont && !is_hub(x) && only_child(x) == c) {
    // We were the only occurrence ending at x and x has this one child: slide the
    // boundary one token down instead of splitting (the common lockstep case).
    EdgeRef& C = ref(c);
    uint32_t xl = X.len();
    X.ref_seq = C.ref_seq;
    X.set_ref(C.ref_idx() - xl, xl + 1);
    X.cont -= 1;
    C.set_ref(C.ref_idx() + 1, C.len() - 1);
    return x;
  }
  const uint32_t m = alloc();  // split c after its first token
  const uint32_t cc = count_of(c);
  EdgeRef& C = ref(c);
  nodes_[m] = Node{cc + 1, cc, c, NIL, C.ref_seq, 0};
  nodes_[m].set_ref(C.ref_idx(), 1);
  C.set_ref(C.ref_idx() + 1, C.len() - 1);
  replace_child(x, c, m);
  next_of(c) = NIL;
  promote(x, m, prev);
  if (mergeable(x)) merge(parent_of(x, seqs_[slot].data + (p - d), d), x);
  return m;
}

void Tree::add_seq(int64_t id, bool view) {
  if (has(id)) throw std::invalid_argument("sequence " + std::to_string(id) + " exists");
  if (seqs_.size() >= NIL - 1) throw std::length_error("too many sequences in one tree");
  slot_of_[id] = static_cast<uint32_t>(seqs_.size());
  seqs_.emplace_back();
  TSeq& s = seqs_.back();
  s.id = id;
  s.view = view;
  s.loci.assign(depth_ > 1 ? depth_ - 1 : 0, NIL);
  seq_bytes_ += s.loci.capacity() * sizeof(uint32_t);
}

static size_t held_bytes(const TSeq& s) {
  return s.own.capacity() * sizeof(int32_t) + s.loci.capacity() * sizeof(uint32_t);
}

void Tree::note_seq_bytes(TSeq& s, size_t before) {
  seq_bytes_ = seq_bytes_ + held_bytes(s) - before;
}

static void check_push(const TSeq& s, size_t size) {
  if (!s.running)
    throw std::invalid_argument("sequence " + std::to_string(s.id) + " is finished");
  if (size > kMaxSeqLen)
    throw std::invalid_argument("sequence " + std::to_string(s.id) + " exceeds " +
                                std::to_string(kMaxSeqLen) + " tokens");
}

void Tree::push_slot(uint32_t slot, const int32_t* toks, size_t n) {
  TSeq& s = seqs_[slot];
  check_push(s, s.size + n);
  const size_t before = held_bytes(s);
  if (s.own.size() + n > s.own.capacity())  // geometric: reserve(exact) would copy per call
    s.own.reserve(std::max(s.own.size() + n, s.own.capacity() * 2));
  s.own.insert(s.own.end(), toks, toks + n);
  s.data = s.own.data();
  const size_t from = s.size;
  s.size = static_cast<uint32_t>(s.own.size());
  index(slot, from);
  note_seq_bytes(s, before);
}

void Tree::push_view(uint32_t slot, const int32_t* data, size_t size) {
  TSeq& s = seqs_[slot];
  check_push(s, size);
  s.data = data;
  const size_t from = s.size;
  s.size = static_cast<uint32_t>(size);
  index(slot, from);
}

void Tree::index(uint32_t slot, size_t from) {
  TSeq& s = seqs_[slot];
  const size_t keep = s.loci.size();  // loci kept: depths 1..max_depth-1
  for (size_t q = from; q < s.size; ++q) {
    const uint32_t p = static_cast<uint32_t>(q);
    const int32_t t = s.data[p];
    size_t dmax = std::min<size_t>(p, keep);
    // The loci are scattered nodes: fetch them all before walking (memory-level parallelism).
    for (size_t d = dmax; d >= 1; --d) {
      const uint32_t x = s.loci[d - 1];
      if (is_leaf(x)) __builtin_prefetch(&leaf(x)); else __builtin_prefetch(&nodes_[x]);
    }
    for (size_t d = dmax; d >= 1; --d) {
      const uint32_t x = s.loci[d - 1];
      uint32_t nx = x;
      if (is_leaf(x)) {  // the common deep case, inlined: our leaf grows
        Leaf& L = leaf(x);
        const uint32_t len = L.len() + 1;
        L.ref_seq = slot;
        L.set_ref(p + 1 - len, len);
      } else {
        nx = extend(x, static_cast<uint32_t>(d), slot, p, t);
      }
      if (d < keep) s.loci[d] = nx;
    }
    uint32_t first = extend(0, 0, slot, p, t);
    if (keep) s.loci[0] = first;
  }
  live_tokens_ += s.size - from;
}

void Tree::finish(int64_t id) {
  TSeq& s = seqs_[slot_of_.at(id)];
  const size_t before = held_bytes(s);
  s.running = false;
  std::vector<uint32_t>().swap(s.loci);
  if (!s.view) {
    s.own.shrink_to_fit();
    s.data = s.own.data();
  }
  note_seq_bytes(s, before);
}

void Tree::subtract_path(const int32_t* toks, size_t start, size_t end) {
  uint32_t path[kMaxDepthLimit + 1];
  int k = 0;
  size_t depth = 0;
  uint32_t node = 0;
  while (start + depth < end) {
    node = child(node, toks[start + depth], nullptr);
    if (node == NIL) throw std::logic_error("tree corrupt: removed path not found");
    path[k++] = node;
    depth += len_of(node);
  }
  if (start + depth != end) throw std::logic_error("tree corrupt: removed path ends mid-edge");
  nodes_[0].count -= 1;
  nodes_[0].cont -= 1;
  for (int j = 0; j < k; ++j) {  // a leaf (count 1, no child) can only end the path
    if (is_leaf(path[j])) continue;
    nodes_[path[j]].count -= 1;
    if (j + 1 < k) nodes_[path[j]].cont -= 1;
  }
  for (int j = k - 1; j >= 0; --j) {  // bottom-up: children are fixed before parents
    uint32_t n = path[j];
    uint32_t parent = j > 0 ? path[j - 1] : 0;
    if (is_leaf(n) || nodes_[n].count == 0) {
      unlink(parent, n);
      release(n);
    } else {
      reposition(parent, n);
      if (mergeable(n)) merge(parent, n);
    }
  }
}

void Tree::remove(int64_t id) {
  auto it = slot_of_.find(id);
  if (it == slot_of_.end()) throw std::invalid_argument("unknown sequence " + std::to_string(id));
  TSeq& s = seqs_[it->second];
  const size_t n = s.size;
  const size_t before = held_bytes(s);
  if (s.view) {  // the owner may free the text now; edges may still reference it
    s.own.assign(s.data, s.data + n);
    s.data = s.own.data();
    s.view = false;
  }
  for (size_t i = 0; i < n; ++i) subtract_path(s.data, i, std::min<size_t>(i + depth_, n));
  std::vector<uint32_t>().swap(s.loci);
  note_seq_bytes(s, before);
  s.alive = false;
  s.running = false;
  slot_of_.erase(it);
  live_tokens_ -= n;
  dead_tokens_ += n;
  // Removed texts stay while edges may still reference them; rebuild once they dominate.
  if (dead_tokens_ > live_tokens_ || slot_of_.empty()) compact();
}

// Rebuild from the live texts: drops dead texts and their references, shrinks the arrays.
// Live texts move, buffers and all, so views of them held elsewhere stay valid.
void Tree::compact() {
  Tree fresh(depth_);
  fresh.seqs_.reserve(slot_of_.size());
  for (TSeq& s : seqs_) {
    if (!s.alive) continue;
    fresh.add_seq(s.id, s.view);
    const uint32_t slot = static_cast<uint32_t>(fresh.seqs_.size() - 1);
    TSeq& f = fresh.seqs_.back();
    f.own = std::move(s.own);
    f.data = s.view ? s.data : f.own.data();
    f.size = s.size;
    fresh.seq_bytes_ += f.own.capacity() * sizeof(int32_t);
    fresh.index(slot, 0);
    if (!s.running) fresh.finish(s.id);
  }
  fresh.nodes_.shrink_to_fit();
  fresh.leaves_.shrink_to_fit();
  fresh.epoch_ = epoch_ + 1;
  *this = std::move(fresh);
}

Pos Tree::locus_match_slot(uint32_t slot, int cap) const {
  const TSeq& s = seqs_[slot];
  size_t dmax = std::min<size_t>({s.size, s.loci.size(), static_cast<size_t>(cap)});
  for (size_t d = dmax; d >= 1; --d) {
    const uint32_t x = s.loci[d - 1];
    if (cont_of(x) > 0) return Pos{x, len_of(x), static_cast<uint32_t>(d)};
  }
  return Pos{};
}

Pos Tree::context_match(const int32_t* ctx, size_t n, int cap) const {
  size_t lmax = std::min<size_t>({n, static_cast<size_t>(cap), static_cast<size_t>(depth_ - 1)});
  for (size_t L = lmax; L >= 1; --L) {
    const int32_t* q = ctx + (n - L);
    uint32_t node = root_.find(q[0]);
    uint32_t off = 1;
    bool ok = node != NIL;
    for (size_t i = 1; ok && i < L; ++i) {
      if (off < len_of(node)) {
        ok = edge_tok(node, off) == q[i];
        ++off;
      } else {
        node = child(node, q[i], nullptr);
        ok = node != NIL;
        off = 1;
      }
    }
    if (!ok) continue;
    Pos p{node, off, static_cast<uint32_t>(L)};
    if (denom(p) > 0) return p;
  }
  return Pos{};
}

bool Tree::best_next(const Pos& p, int32_t& tok, uint32_t& count, Pos& next) const {
  if (!p.valid()) return false;
  uint32_t c = NIL;
  if (p.node != 0 && p.off < len_of(p.node)) {
    tok = edge_tok(p.node, p.off);
    count = count_of(p.node);
    next = Pos{p.node, p.off + 1, p.depth + 1};
    return true;
  }
  if (p.depth >= static_cast<uint32_t>(depth_) || p.node == 0 || is_leaf(p.node)) return false;
  if (is_hub(p.node)) {
    hub(p.node).for_each([&](int32_t, uint32_t k) {
      if (c == NIL || before(k, c)) c = k;
      return true;
    });
  } else {
    c = nodes_[p.node].first_child;
  }
  if (c == NIL) return false;
  tok = token_of(c);
  count = count_of(c);
  next = Pos{c, 1, p.depth + 1};
  return true;
}

uint32_t Tree::denom(const Pos& p) const {
  if (!p.valid()) return 0;
  if (p.node != 0 && p.off < len_of(p.node)) return count_of(p.node);
  if (p.depth >= static_cast<uint32_t>(depth_)) return 0;
  return cont_of(p.node);
}

size_t Tree::slot_map_bytes() const {
  return slot_of_.bucket_count() * sizeof(void*) + slot_of_.size() * 32;
}

size_t Tree::child_table_bytes() const {
  return root_.bytes() + hub_bytes_ + hubs_.capacity() * sizeof(RootMap) +
         free_hubs_.capacity() * sizeof(uint32_t);
}

size_t Tree::bytes() const {
  return sizeof(Tree) + nodes_.capacity() * sizeof(Node) + leaves_.capacity() * sizeof(Leaf) +
         child_table_bytes() + seqs_.capacity() * sizeof(TSeq) + seq_bytes_ + slot_map_bytes();
}

void Tree::add_bytes(TreeBytes& b) const {
  const size_t live_nodes = nodes_.size() - free_count_;
  const size_t live_leaves = leaves_.size() - free_leaf_count_;
  b.nodes += live_nodes * sizeof(Node);
  b.node_slack += (nodes_.capacity() - live_nodes) * sizeof(Node);
  b.leaves += live_leaves * sizeof(Leaf);
  b.leaf_slack += (leaves_.capacity() - live_leaves) * sizeof(Leaf);
  for (const TSeq& s : seqs_) {
    b.texts += s.own.capacity() * sizeof(int32_t);
    b.loci += s.loci.capacity() * sizeof(uint32_t);
  }
  b.seq_records += seqs_.capacity() * sizeof(TSeq);
  b.slot_map += slot_map_bytes();
  b.child_tables += child_table_bytes();
  b.fixed += sizeof(Tree);
}

}  // namespace srt
