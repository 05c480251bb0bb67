// The cache's limits, defined once. The bindings expose them (openrlhf_srt.cache._tree:
// MIN_DEPTH_LIMIT, MAX_DEPTH_LIMIT, MAX_SEQ_LEN, MAX_DRAFT_TOKENS, MIN_BYTE_BUDGET); Python
// validates configs and arguments against the same values.
#pragma once

#include <cstdint>

namespace srt {

constexpr int kMinDepthLimit = 2;                // one matched token plus one drafted token
constexpr int kMaxDepthLimit = 255;              // edge length is stored in 8 bits
constexpr uint32_t kMaxSeqLen = (1u << 24) - 1;  // edge start index is stored in 24 bits
// Longest draft per call: vLLM's limit on num_speculative_tokens (MAX_SPEC_LEN of its
// rejection sampler); no verifier the cache serves takes more.
constexpr int kMaxDraftTokens = 128;
// An empty forest takes a few KiB; below this budget nothing fits.
constexpr uint64_t kMinByteBudget = 64 * 1024;

}  // namespace srt
