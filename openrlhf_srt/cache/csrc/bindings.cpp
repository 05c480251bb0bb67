// nanobind module openrlhf_srt.cache._tree: the forest, its named results (Draft,
// BatchDrafts), the stats dict, the state export/import and the limits. The typed API is
// openrlhf_srt/cache/cache.py; this layer converts arrays and releases the GIL around native
// work.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <type_traits>

#include "cache.h"

namespace nb = nanobind;
using namespace nb::literals;
using srt::BatchDrafts;
using srt::Cache;
using srt::Draft;

namespace {

template <class T>
using In = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out = nb::ndarray<nb::numpy, T, nb::ndim<1>>;
template <class T>
using View = nb::ndarray<nb::numpy, const T, nb::ndim<1>>;  // numpy marks it read-only

// A numpy array that takes over the vector (no copy).
template <class T>
Out<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return Out<T>(heap->data(), {heap->size()}, owner);
}

// A read-only numpy view of v[a:b]; it keeps `owner`, the Python object holding v, alive.
template <class T>
View<T> view(const std::vector<T>& v, nb::handle owner, size_t a = 0, size_t b = SIZE_MAX) {
  b = std::min(b, v.size());
  return View<T>(v.data() + a, {b - a}, owner);
}

// Getters of read-only array properties: C::field, or C::part.field.
template <class C, class T>
auto array_of(const std::vector<T> C::*field) {
  return [field](nb::pointer_and_handle<C> self) { return view(self.p->*field, self.h); };
}

template <class C, class P, class T>
auto array_of(P C::*part, const std::vector<T> P::*field) {
  return [part, field](nb::pointer_and_handle<C> self) {
    return view((self.p->*part).*field, self.h);
  };
}

template <size_t N>
nb::tuple names(const char* const (&table)[N]) {
  nb::list out;
  for (const char* s : table) out.append(s);
  return nb::tuple(out);
}

int rule_code(const std::string& rule) {
  const auto& t = srt::kRuleNames;
  auto it = std::find_if(std::begin(t), std::end(t), [&](const char* s) { return rule == s; });
  if (it == std::end(t)) {
    std::string known;
    for (const char* s : t) known += (known.empty() ? "" : ", ") + std::string(s);
    throw std::invalid_argument("rule must be one of " + known + ", got '" + rule + "'");
  }
  return static_cast<int>(it - std::begin(t));
}

template <class T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, uint64_t>) return "uint64";
  else if constexpr (std::is_same_v<T, int64_t>) return "int64";
  else if constexpr (std::is_same_v<T, uint32_t>) return "uint32";
  else if constexpr (std::is_same_v<T, int32_t>) return "int32";
  else return "uint8";
}

constexpr const char* kDraftDoc = R"(A draft for one context (read-only).

tokens (int32), probs (float32): the best single path (greedily the most frequent
    continuation) and the path probability after each token; what a chain verifier checks.
tree_tokens (int32), tree_parents (int32), tree_probs (float32): the best-first draft tree;
    parents index into tree_tokens, -1 for children of the matched context. Empty unless the
    call asked for a tree.
match_len: length of the matched context suffix (0: no match, empty draft).
score: sum of the path probabilities = expected accepted tokens of the path.
source: "prompt", "global", "merged" (both trees pooled) or None (no match).
The arrays are read-only views into the draft.)";

constexpr const char* kBatchDoc = R"(Best paths of one engine step in CSR form (read-only).

Sequence i owns tokens[offsets[i]:offsets[i+1]]. offsets (int64, n + 1), tokens (int32),
probs (float32, path probability after each token); per sequence: match_len (int32),
score (float32, expected accepted tokens of its path), source (int8: index into SOURCES,
-1 no match). len(b) is n; b[i] is (tokens, probs) of sequence i; b.lists() the token ids
per sequence as Python lists. The arrays are read-only views into the result.)";

}  // namespace

NB_MODULE(_tree, m) {
  m.doc() = "Native per-prompt suffix-tree cache (see openrlhf_srt.cache)";
  m.attr("MIN_DEPTH_LIMIT") = srt::kMinDepthLimit;
  m.attr("MAX_DEPTH_LIMIT") = srt::kMaxDepthLimit;
  m.attr("MAX_SEQ_LEN") = srt::kMaxSeqLen;
  m.attr("MAX_DRAFT_TOKENS") = srt::kMaxDraftTokens;
  m.attr("MIN_BYTE_BUDGET") = srt::kMinByteBudget;
  m.attr("RULES") = names(srt::kRuleNames);
  m.attr("TAGS") = names(srt::kTagNames);
  m.attr("SOURCES") = names(srt::kSourceNames);

  nb::class_<Draft>(m, "Draft", kDraftDoc)
      .def_prop_ro("tokens", array_of(&Draft::path, &srt::Chain::toks))
      .def_prop_ro("probs", array_of(&Draft::path, &srt::Chain::probs))
      .def_prop_ro("tree_tokens", array_of(&Draft::tree, &srt::DraftTree::toks))
      .def_prop_ro("tree_parents", array_of(&Draft::tree, &srt::DraftTree::parents))
      .def_prop_ro("tree_probs", array_of(&Draft::tree, &srt::DraftTree::probs))
      .def_ro("match_len", &Draft::match_len)
      .def_prop_ro("score", [](const Draft& d) { return d.path.score; })
      .def_prop_ro("source",
                   [](const Draft& d) -> nb::object {
                     if (d.source < 0) return nb::none();
                     return nb::str(srt::kSourceNames[d.source]);
                   })
      .def("__repr__", [](const Draft& d) {
        std::string src =
            d.source < 0 ? "None" : std::string("'") + srt::kSourceNames[d.source] + "'";
        return "Draft(" + std::to_string(d.path.toks.size()) + " tokens, " +
               std::to_string(d.tree.toks.size()) + " tree tokens, match_len=" +
               std::to_string(d.match_len) + ", score=" + std::to_string(d.path.score) +
               ", source=" + src + ")";
      });

  nb::class_<BatchDrafts>(m, "BatchDrafts", kBatchDoc)
      .def_prop_ro("offsets", array_of(&BatchDrafts::offsets))
      .def_prop_ro("tokens", array_of(&BatchDrafts::toks))
      .def_prop_ro("probs", array_of(&BatchDrafts::probs))
      .def_prop_ro("match_len", array_of(&BatchDrafts::match_len))
      .def_prop_ro("score", array_of(&BatchDrafts::score))
      .def_prop_ro("source", array_of(&BatchDrafts::source))
      .def("__len__",
           [](const BatchDrafts& b) { return b.offsets.empty() ? 0 : b.offsets.size() - 1; })
      .def("__getitem__",
           [](nb::pointer_and_handle<BatchDrafts> b, int64_t i) {
             const int64_t n = b.p->offsets.empty() ? 0 : b.p->offsets.size() - 1;
             if (i < 0) i += n;
             if (i < 0 || i >= n) throw nb::index_error("sequence index out of range");
             size_t lo = b.p->offsets[i], hi = b.p->offsets[i + 1];
             return nb::make_tuple(view(b.p->toks, b.h, lo, hi), view(b.p->probs, b.h, lo, hi));
           })
      .def("lists",
           [](const BatchDrafts& b) {
             nb::list out;
             for (size_t i = 0; i + 1 < b.offsets.size(); ++i) {
               nb::list row;
               for (int64_t k = b.offsets[i]; k < b.offsets[i + 1]; ++k) row.append(b.toks[k]);
               out.append(row);
             }
             return out;
           },
           "Draft token ids per sequence as Python lists (what vLLM's proposer returns).");

  nb::class_<Cache>(m, "Cache")
      .def("__init__",
           [](Cache* self, int max_depth, uint64_t byte_budget, const std::string& rule,
              double global_weight) {
             new (self) Cache(srt::Config{max_depth, byte_budget, rule_code(rule), global_weight});
           },
           nb::kw_only(), "max_depth"_a, "byte_budget"_a, "rule"_a, "global_weight"_a)
      .def("add_sequence",
           [](Cache& c, int64_t seq, uint64_t key, In<int32_t> prompt, int64_t step, int tag) {
             nb::gil_scoped_release rel;
             c.add_sequence(seq, key, prompt.data(), prompt.shape(0), step, tag);
           })
      .def("extend",
           [](Cache& c, int64_t seq, In<int32_t> toks) {
             nb::gil_scoped_release rel;
             c.extend(seq, toks.data(), toks.shape(0));
           })
      .def("finish", &Cache::finish, nb::call_guard<nb::gil_scoped_release>())
      .def("remove", &Cache::remove, nb::call_guard<nb::gil_scoped_release>())
      .def("drop_steps_before", &Cache::drop_steps_before,
           nb::call_guard<nb::gil_scoped_release>())
      .def("draft", &Cache::draft, nb::call_guard<nb::gil_scoped_release>())
      .def("draft_context",
           [](Cache& c, uint64_t key, In<int32_t> ctx, size_t response_start, int max_tokens,
              double min_prob, bool want_tree) {
             nb::gil_scoped_release rel;
             return c.draft_context(key, ctx.data(), ctx.shape(0), response_start, max_tokens,
                                    min_prob, want_tree);
           })
      .def("step",
           [](Cache& c, In<int64_t> seqs, In<int32_t> toks, In<int32_t> counts,
              In<int32_t> budgets, double min_prob) {
             if (counts.shape(0) != seqs.shape(0) || budgets.shape(0) != seqs.shape(0))
               throw std::invalid_argument("seq_ids, new_token_counts and budgets differ in length");
             BatchDrafts out;
             {
               nb::gil_scoped_release rel;
               c.step(seqs.data(), seqs.shape(0), toks.data(), toks.shape(0), counts.data(),
                      budgets.data(), min_prob, out);
             }
             return out;  // moved into the Python object, no copy
           })
      .def("resize", &Cache::resize, nb::call_guard<nb::gil_scoped_release>())
      .def("clear", &Cache::clear, nb::call_guard<nb::gil_scoped_release>())
      .def("check", &Cache::check, nb::call_guard<nb::gil_scoped_release>())
      .def("stats",
           [](Cache& c) {
             srt::Stats s;
             {
               nb::gil_scoped_release rel;
               s = c.stats();
             }
             nb::dict d;
             srt::for_each_figure(s, [&](const char* name, size_t v) { d[name] = v; });
             return d;
           })
      .def("memory",
           [](Cache& c) {
             std::vector<std::pair<std::string, size_t>> parts;
             {
               nb::gil_scoped_release rel;
               parts = c.memory();
             }
             nb::dict d;
             for (auto& [name, v] : parts) d[name.c_str()] = v;
             return d;
           })
      .def("dump",
           [](Cache& c, bool global, uint64_t key) {
             std::vector<std::vector<int32_t>> paths;
             std::vector<uint32_t> counts, conts;
             c.dump(global, key, paths, counts, conts);
             return nb::make_tuple(paths, counts, conts);
           })
      .def("export_state",
           [](Cache& c) {
             srt::State s;
             {
               nb::gil_scoped_release rel;
               s = c.export_state();
             }
             nb::dict d;
             srt::for_each_array(s, [&](const char* name, auto& v) {
               d[name] = to_numpy(std::move(v));
             });
             return d;
           },
           "The state's arrays by name (srt::State in cache.h says what each holds).")
      .def("import_state",
           [](Cache& c, nb::dict arrays) {
             srt::State s;
             srt::for_each_array(s, [&](const char* name, auto& v) {
               using T = typename std::decay_t<decltype(v)>::value_type;
               In<T> a;
               if (!arrays.contains(name) || !nb::try_cast(arrays[name], a, false))
                 throw std::invalid_argument(std::string("state: ") + name + " must be a 1-D " +
                                             "contiguous " + dtype_name<T>() + " array");
               v.assign(a.data(), a.data() + a.shape(0));
             });
             nb::gil_scoped_release rel;
             c.import_state(s);
           },
           "Rebuild an empty cache from export_state()'s arrays; a bad state changes nothing.");
}
