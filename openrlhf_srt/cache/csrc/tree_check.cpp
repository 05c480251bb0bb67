// Invariant checks and a full dump of the tree, used by the tests (not on any hot path).
#include <string>
#include <vector>

#include "tree.h"

namespace srt {

#define SRT_REQUIRE(cond)                                                                  \
  do {                                                                                     \
    if (!(cond)) return "node " + std::to_string(n) + ": violated " + std::string(#cond); \
  } while (0)

std::string Tree::check_node(uint32_t n, std::vector<int32_t>& path) const {
  if (is_leaf(n)) {
    SRT_REQUIRE((n & ~kLeafBit) < leaves_.size());
  } else {
    SRT_REQUIRE(n < nodes_.size());
  }
  const EdgeRef& x = ref(n);
  const uint32_t count = count_of(n), cont = cont_of(n);
  SRT_REQUIRE(count > 0);
  SRT_REQUIRE(x.len() >= 1);
  SRT_REQUIRE(x.ref_seq < seqs_.size());
  SRT_REQUIRE(!is_leaf(n) || seqs_[x.ref_seq].alive);  // a leaf's text is its occurrence
  const int32_t* ref = seqs_[x.ref_seq].data;
  const size_t depth = path.size() + x.len();
  SRT_REQUIRE(depth <= static_cast<size_t>(depth_));
  SRT_REQUIRE(x.ref_idx() + x.len() <= seqs_[x.ref_seq].size);
  SRT_REQUIRE(x.ref_idx() >= path.size());
  for (size_t i = 0; i < path.size(); ++i)  // the reference is an occurrence of the whole path
    SRT_REQUIRE(ref[x.ref_idx() - path.size() + i] == path[i]);
  uint64_t sum = 0;
  std::vector<uint32_t> kids;
  sorted_children(n, kids);
  for (size_t i = 0; i < kids.size(); ++i) {
    uint32_t c = kids[i];
    sum += count_of(c);
    if (is_hub(n)) {
      SRT_REQUIRE(next_of(c) == NIL && hub(n).find(token_of(c)) == c);
    } else if (next_of(c) != NIL) {
      SRT_REQUIRE(before(c, next_of(c)));
    }
  }
  SRT_REQUIRE(sum == cont);
  SRT_REQUIRE(count >= cont);
  SRT_REQUIRE(kids.size() >= 2 || count > cont);  // canonical
  for (uint32_t k = 0; k < x.len(); ++k) path.push_back(ref[x.ref_idx() + k]);
  for (uint32_t c : kids) {
    std::string err = check_node(c, path);
    if (!err.empty()) return err;
  }
  path.resize(path.size() - x.len());
  return "";
}

std::string Tree::check() const {
  uint32_t n = 0;
  const Node& root = nodes_[0];
  SRT_REQUIRE(root.count == root.cont);
  SRT_REQUIRE(root.count == live_tokens_);
  uint64_t sum = 0;
  std::string err;
  std::vector<int32_t> path;
  root_.for_each([&](int32_t t, uint32_t c) {
    sum += count_of(c);
    if (token_of(c) != t) err = "root map key differs from child token";
    if (err.empty()) err = check_node(c, path);
    return err.empty();
  });
  if (!err.empty()) return err;
  SRT_REQUIRE(sum == root.cont);
  size_t free_seen = 0;
  for (uint32_t f = free_head_; f != NIL; f = nodes_[f].next_sibling) ++free_seen;
  SRT_REQUIRE(free_seen == free_count_);
  free_seen = 0;
  for (uint32_t f = free_leaf_head_; f != NIL; f = leaf(f).next_sibling) ++free_seen;
  SRT_REQUIRE(free_seen == free_leaf_count_);
  for (const TSeq& s : seqs_) {
    if (!s.alive || !s.running) continue;
    size_t dmax = std::min<size_t>(s.size, s.loci.size());
    for (size_t d = 1; d <= dmax; ++d) {  // each locus ends an occurrence of the suffix
      n = s.loci[d - 1];
      SRT_REQUIRE(is_leaf(n) ? (n & ~kLeafBit) < leaves_.size() : n < nodes_.size());
      SRT_REQUIRE(count_of(n) > cont_of(n));
    }
  }
  return "";
}

void Tree::dump(std::vector<std::vector<int32_t>>& paths, std::vector<uint32_t>& counts,
                std::vector<uint32_t>& conts) const {
  std::vector<std::pair<uint32_t, std::vector<int32_t>>> stack;
  root_.for_each([&](int32_t, uint32_t c) {
    stack.push_back({c, {}});
    return true;
  });
  while (!stack.empty()) {
    auto [n, prefix] = std::move(stack.back());
    stack.pop_back();
    for (uint32_t k = 0; k < len_of(n); ++k) prefix.push_back(edge_tok(n, k));
    paths.push_back(prefix);
    counts.push_back(count_of(n));
    conts.push_back(cont_of(n));
    std::vector<uint32_t> kids;
    sorted_children(n, kids);
    for (uint32_t c : kids) stack.push_back({c, prefix});
  }
}

}  // namespace srt
