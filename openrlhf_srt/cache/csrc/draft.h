// Drafting from one tree or from two trees whose next-token counts are pooled.
#pragma once

#include <cstdint>
#include <vector>

#include "tree.h"

namespace srt {

// Where drafting continues in each tree; an invalid Pos means the tree takes no part.
struct Source {
  const Tree* a = nullptr;  // per-prompt tree
  Pos pa;
  const Tree* b = nullptr;  // global tree
  Pos pb;
  double weight_b = 1.0;    // weight of b's counts when both take part
};

struct Chain {
  std::vector<int32_t> toks;
  std::vector<float> probs;  // path probability after each token
  double score = 0.0;        // sum of path probabilities = expected accepted tokens
};

struct DraftTree {
  std::vector<int32_t> toks;
  std::vector<int32_t> parents;  // index into toks, -1 for children of the match
  std::vector<float> probs;
};

// Greedy chain: the most frequent continuation at each step (ties: smaller token id) while
// the path probability stays >= min_prob, at most `budget` tokens.
void draft_chain(const Source& src, int budget, double min_prob, Chain& out);
// Best-first tree: repeatedly the frontier token of highest path probability (ties: the one
// pushed first), at most `budget` tokens, none below min_prob.
void draft_tree(const Source& src, int budget, double min_prob, DraftTree& out);

}  // namespace srt
