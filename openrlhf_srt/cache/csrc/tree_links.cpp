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
  if (nodes_.size() >= kHubBit - 1) throw std::length_error("tree node index space exhausted");
  // Grow by 1/4: slack is counted against the budget, and copies stay amortized O(1).
  if (nodes_.size() == nodes_.capacity()) nodes_.reserve(nodes_.size() + nodes_.size() / 4 + 16);
  nodes_.push_back(Node{});
  return static_cast<uint32_t>(nodes_.size() - 1);
}

void Tree::release(uint32_t n) {
  if (is_hub(n)) drop_hub(n);
  nodes_[n] = Node{-1, 0, 0, NIL, free_head_, NIL, 0, 0};
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
    nx = nodes_[c].next_sibling;
    nodes_[c].next_sibling = NIL;
    m.insert(nodes_[c].token, c);
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
  const uint32_t f = nodes_[x].first_child;
  if (f == NIL) return NIL;
  if (f & kHubBit) {
    if (hub(x).size() != 1) return NIL;
    uint32_t only = NIL;
    hub(x).for_each([&](int32_t, uint32_t c) { only = c; return false; });
    return only;
  }
  return nodes_[f].next_sibling == NIL ? f : NIL;
}

void Tree::sorted_children(uint32_t x, std::vector<uint32_t>& out) const {
  out.clear();
  if (!is_hub(x)) {
    for (uint32_t c = nodes_[x].first_child; c != NIL; c = nodes_[c].next_sibling) out.push_back(c);
    return;
  }
  hub(x).for_each([&](int32_t, uint32_t c) { out.push_back(c); return true; });
  std::sort(out.begin(), out.end(), [this](uint32_t a, uint32_t b) { return before(a, b); });
}

uint32_t Tree::child(uint32_t x, int32_t t, uint32_t* prev) const {
  if (x == 0) return root_.find(t);
  if (is_hub(x)) return hub(x).find(t);
  uint32_t p = NIL;
  for (uint32_t c = nodes_[x].first_child; c != NIL; p = c, c = nodes_[c].next_sibling) {
    if (nodes_[c].token == t) {
      if (prev) *prev = p;
      return c;
    }
  }
  return NIL;
}

void Tree::link_sorted(uint32_t x, uint32_t c) {
  nodes_[c].parent = x;
  if (x == 0) { root_.insert(nodes_[c].token, c); return; }
  if (is_hub(x)) {
    RootMap& m = hub(x);
    size_t before_bytes = m.bytes();
    m.insert(nodes_[c].token, c);
    hub_bytes_ = hub_bytes_ + m.bytes() - before_bytes;
    nodes_[c].next_sibling = NIL;
    return;
  }
  uint32_t p = NIL, s = nodes_[x].first_child;
  int walked = 0;
  while (s != NIL && !before(c, s)) { p = s; s = nodes_[s].next_sibling; ++walked; }
  nodes_[c].next_sibling = s;
  if (p == NIL) nodes_[x].first_child = c; else nodes_[p].next_sibling = c;
  if (walked >= kHubMin) make_hub(x);
}

void Tree::unlink(uint32_t x, uint32_t c) {
  if (x == 0) { root_.erase(nodes_[c].token); return; }
  if (is_hub(x)) {
    hub(x).erase(nodes_[c].token);  // tables do not shrink: bytes unchanged
    if (hub(x).size() == 0) drop_hub(x);
    return;
  }
  uint32_t p = NIL, s = nodes_[x].first_child;
  while (s != c) { p = s; s = nodes_[s].next_sibling; }
  if (p == NIL) nodes_[x].first_child = nodes_[c].next_sibling;
  else nodes_[p].next_sibling = nodes_[c].next_sibling;
  nodes_[c].next_sibling = NIL;
}

void Tree::replace_child(uint32_t x, uint32_t old_c, uint32_t new_c) {
  nodes_[new_c].parent = x;
  if (x == 0) { root_.set(nodes_[new_c].token, new_c); return; }
  if (is_hub(x)) {
    hub(x).set(nodes_[new_c].token, new_c);
    nodes_[new_c].next_sibling = NIL;
    return;
  }
  nodes_[new_c].next_sibling = nodes_[old_c].next_sibling;
  if (nodes_[x].first_child == old_c) { nodes_[x].first_child = new_c; return; }
  uint32_t s = nodes_[x].first_child;
  while (nodes_[s].next_sibling != old_c) s = nodes_[s].next_sibling;
  nodes_[s].next_sibling = new_c;
}

// c's count went up: move it towards the head if its predecessor now sorts after it.
void Tree::promote(uint32_t x, uint32_t c, uint32_t prev) {
  if (x == 0 || prev == NIL || is_hub(x) || !before(c, prev)) return;
  nodes_[prev].next_sibling = nodes_[c].next_sibling;
  link_sorted(x, c);
}

// c's count went down: move it towards the tail if its successor now sorts before it.
void Tree::reposition(uint32_t x, uint32_t c) {
  if (x == 0 || is_hub(x)) return;
  uint32_t nx = nodes_[c].next_sibling;
  if (nx == NIL || !before(nx, c)) return;
  unlink(x, c);
  link_sorted(x, c);
}

}  // namespace srt
