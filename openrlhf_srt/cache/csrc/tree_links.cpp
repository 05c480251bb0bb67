// Node storage and the children of a node: sorted sibling lists, hub tables, the root map.
#include <algorithm>
#include <stdexcept>

#include "tree.h"

namespace srt {

uint32_t Tree::alloc() {
  if (free_head_ != NIL) {
    uint32_t n = free_head_;
    free_head_ = nodes_[n].next_sibling;
    --free_count_;
    return n;
  }
  if (nodes_.size() >= kLeafBit - 1) throw std::length_error("tree node index space exhausted");
  // Grow by 1/4: slack is counted against the budget, and copies stay amortized O(1).
  if (nodes_.size() == nodes_.capacity()) nodes_.reserve(nodes_.size() + nodes_.size() / 4 + 16);
  nodes_.push_back(Node{});
  return static_cast<uint32_t>(nodes_.size() - 1);
}

uint32_t Tree::alloc_leaf() {
  if (free_leaf_head_ != NIL) {
    uint32_t n = free_leaf_head_;
    free_leaf_head_ = leaf(n).next_sibling;
    --free_leaf_count_;
    return n;
  }
  if (leaves_.size() >= kLeafBit - 1) throw std::length_error("tree leaf index space exhausted");
  if (leaves_.size() == leaves_.capacity())
    leaves_.reserve(leaves_.size() + leaves_.size() / 4 + 16);
  leaves_.push_back(Leaf{});
  return kLeafBit | static_cast<uint32_t>(leaves_.size() - 1);
}

void Tree::release(uint32_t n) {
  if (is_leaf(n)) {
    leaf(n) = Leaf{{0, 0}, free_leaf_head_};
    free_leaf_head_ = n;
    ++free_leaf_count_;
    return;
  }
  if (is_hub(n)) drop_hub(n);
  nodes_[n] = Node{0, 0, NIL, free_head_, 0, 0};
  free_head_ = n;
  ++free_count_;
}

void Tree::make_hub(uint32_t x) {
  uint32_t idx;
  if (!free_hubs_.empty()) {
    idx = free_hubs_.back();
    free_hubs_.pop_back();
  } else {
    idx = static_cast<uint32_t>(hubs_.size());
    hubs_.emplace_back();
  }
  RootMap& m = hubs_[idx];
  for (uint32_t c = nodes_[x].first_child, nx; c != NIL; c = nx) {
    nx = next_of(c);
    next_of(c) = NIL;
    m.insert(token_of(c), c);
  }
  hub_bytes_ += m.bytes();
  nodes_[x].first_child = kHubBit | idx;
}

// The last child left a hub: back to an (empty) sibling list.
void Tree::drop_hub(uint32_t x) {
  uint32_t idx = nodes_[x].first_child & ~kHubBit;
  hub_bytes_ -= hubs_[idx].bytes();
  hubs_[idx] = RootMap();
  free_hubs_.push_back(idx);
  nodes_[x].first_child = NIL;
}

uint32_t Tree::only_child(uint32_t x) const {
  if (is_leaf(x)) return NIL;
  const uint32_t f = nodes_[x].first_child;
  if (f == NIL) return NIL;
  if (f & kHubBit) {
    if (hub(x).size() != 1) return NIL;
    uint32_t only = NIL;
    hub(x).for_each([&](int32_t, uint32_t c) { only = c; return false; });
    return only;
  }
  return next_of(f) == NIL ? f : NIL;
}

void Tree::sorted_children(uint32_t x, std::vector<uint32_t>& out) const {
  out.clear();
  if (is_leaf(x)) return;
  if (!is_hub(x)) {
    for (uint32_t c = nodes_[x].first_child; c != NIL; c = next_of(c)) out.push_back(c);
    return;
  }
  hub(x).for_each([&](int32_t, uint32_t c) { out.push_back(c); return true; });
  std::sort(out.begin(), out.end(), [this](uint32_t a, uint32_t b) { return before(a, b); });
}

uint32_t Tree::child(uint32_t x, int32_t t, uint32_t* prev) const {
  if (x == 0) return root_.find(t);
  if (is_leaf(x)) return NIL;
  if (is_hub(x)) return hub(x).find(t);
  uint32_t p = NIL;
  for (uint32_t c = nodes_[x].first_child; c != NIL; p = c, c = next_of(c)) {
    if (token_of(c) == t) {
      if (prev) *prev = p;
      return c;
    }
  }
  return NIL;
}

void Tree::link_sorted(uint32_t x, uint32_t c) {
  if (x == 0) { root_.insert(token_of(c), c); return; }
  if (is_hub(x)) {
    RootMap& m = hub(x);
    size_t before_bytes = m.bytes();
    m.insert(token_of(c), c);
    hub_bytes_ = hub_bytes_ + m.bytes() - before_bytes;
    next_of(c) = NIL;
    return;
  }
  uint32_t p = NIL, s = nodes_[x].first_child;
  int walked = 0;
  while (s != NIL && !before(c, s)) { p = s; s = next_of(s); ++walked; }
  next_of(c) = s;
  if (p == NIL) nodes_[x].first_child = c; else next_of(p) = c;
  if (walked >= kHubMin) make_hub(x);
}

void Tree::unlink(uint32_t x, uint32_t c) {
  if (x == 0) { root_.erase(token_of(c)); return; }
  if (is_hub(x)) {
    hub(x).erase(token_of(c));  // tables do not shrink: bytes unchanged
    if (hub(x).size() == 0) drop_hub(x);
    return;
  }
  uint32_t p = NIL, s = nodes_[x].first_child;
  while (s != c) { p = s; s = next_of(s); }
  if (p == NIL) nodes_[x].first_child = next_of(c);
  else next_of(p) = next_of(c);
  next_of(c) = NIL;
}

void Tree::replace_child(uint32_t x, uint32_t old_c, uint32_t new_c) {
  if (x == 0) { root_.set(token_of(new_c), new_c); return; }
  if (is_hub(x)) {
    hub(x).set(token_of(new_c), new_c);
    next_of(new_c) = NIL;
    return;
  }
  next_of(new_c) = next_of(old_c);
  if (nodes_[x].first_child == old_c) { nodes_[x].first_child = new_c; return; }
  uint32_t s = nodes_[x].first_child;
  while (next_of(s) != old_c) s = next_of(s);
  next_of(s) = new_c;
}

// c's count went up: move it towards the head if its predecessor now sorts after it.
void Tree::promote(uint32_t x, uint32_t c, uint32_t prev) {
  if (x == 0 || prev == NIL || is_hub(x) || !before(c, prev)) return;
  next_of(prev) = next_of(c);
  link_sorted(x, c);
}

// c's count went down: move it towards the tail if its successor now sorts before it.
void Tree::reposition(uint32_t x, uint32_t c) {
  if (x == 0 || is_hub(x)) return;
  uint32_t nx = next_of(c);
  if (nx == NIL || !before(nx, c)) return;
  unlink(x, c);
  link_sorted(x, c);
}

}  // namespace srt
