// nanobind module openrlhf_srt.cache._tree. The typed API is openrlhf_srt/cache/cache.py;
// this layer only converts arrays and releases the GIL around native work.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "cache.h"

namespace nb = nanobind;
using namespace nb::literals;
using srt::Cache;

namespace {

template <class T>
using In = nb::ndarray<const T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <class T>
using Out = nb::ndarray<nb::numpy, T, nb::ndim<1>>;

template <class T>
Out<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  nb::capsule owner(heap, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return Out<T>(heap->data(), {heap->size()}, owner);
}

nb::tuple draft_tuple(srt::DraftResult&& r) {
  double score = r.path.score;
  return nb::make_tuple(to_numpy(std::move(r.path.toks)), to_numpy(std::move(r.path.probs)),
                        to_numpy(std::move(r.tree.toks)), to_numpy(std::move(r.tree.parents)),
                        to_numpy(std::move(r.tree.probs)), r.match_len, score, r.source);
}

}  // namespace

NB_MODULE(_tree, m) {
  m.doc() = "Native per-prompt suffix-tree cache (see openrlhf_srt.cache)";
  m.attr("MIN_DEPTH_LIMIT") = srt::kMinDepthLimit;
  m.attr("MAX_DEPTH_LIMIT") = srt::kMaxDepthLimit;
  m.attr("MAX_SEQ_LEN") = srt::kMaxSeqLen;
  m.attr("MAX_DRAFT_TOKENS") = srt::kMaxDraftTokens;
  m.attr("MIN_BYTE_BUDGET") = srt::kMinByteBudget;
  nb::class_<Cache>(m, "Cache")
      .def("__init__",
           [](Cache* self, int max_depth, uint64_t byte_budget, int rule, double min_prob,
              int max_draft_tokens, double global_weight) {
             srt::Config c{max_depth, byte_budget, rule, min_prob, max_draft_tokens, global_weight};
             new (self) Cache(c);
           },
           "max_depth"_a, "byte_budget"_a, "rule"_a, "min_prob"_a, "max_draft_tokens"_a,
           "global_weight"_a)
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
      .def("draft",
           [](Cache& c, int64_t seq, int max_tokens, double min_prob, bool want_tree) {
             srt::DraftResult r;
             {
               nb::gil_scoped_release rel;
               r = c.draft(seq, max_tokens, min_prob, want_tree);
             }
             return draft_tuple(std::move(r));
           })
      .def("draft_context",
           [](Cache& c, uint64_t key, In<int32_t> ctx, size_t response_start, int max_tokens,
              double min_prob, bool want_tree) {
             srt::DraftResult r;
             {
               nb::gil_scoped_release rel;
               r = c.draft_context(key, ctx.data(), ctx.shape(0), response_start, max_tokens,
                                   min_prob, want_tree);
             }
             return draft_tuple(std::move(r));
           })
      .def("step",
           [](Cache& c, In<int64_t> seqs, In<int32_t> toks, In<int32_t> counts,
              In<int32_t> budgets, double min_prob) {
             if (counts.shape(0) != seqs.shape(0) || budgets.shape(0) != seqs.shape(0))
               throw std::invalid_argument("seq_ids, new_token_counts and budgets differ in length");
             srt::StepOut o;
             {
               nb::gil_scoped_release rel;
               c.step(seqs.data(), seqs.shape(0), toks.data(), toks.shape(0), counts.data(),
                      budgets.data(), min_prob, o);
             }
             return nb::make_tuple(to_numpy(std::move(o.offsets)), to_numpy(std::move(o.toks)),
                                   to_numpy(std::move(o.probs)), to_numpy(std::move(o.match_len)),
                                   to_numpy(std::move(o.score)), to_numpy(std::move(o.source)));
           })
      .def("resize", &Cache::resize, nb::call_guard<nb::gil_scoped_release>())
      .def("clear", &Cache::clear, nb::call_guard<nb::gil_scoped_release>())
      .def("check", &Cache::check, nb::call_guard<nb::gil_scoped_release>())
      .def("stats",
           [](Cache& c) {
             srt::Stats s = c.stats();
             nb::dict d;
             d["prompts"] = s.prompts;
             d["sequences"] = s.sequences;
             d["running"] = s.running;
             d["detached"] = s.detached;
             d["runahead"] = s.runahead;
             d["nodes"] = s.nodes;
             d["global_nodes"] = s.global_nodes;
             d["hubs"] = s.hubs;
             d["bytes"] = s.bytes;
             d["global_bytes"] = s.global_bytes;
             d["tokens"] = s.tokens;
             d["evicted_prompts"] = s.evicted_prompts;
             d["evicted_running"] = s.evicted_running;
             return d;
           })
      .def("dump",
           [](Cache& c, bool global, uint64_t key) {
             std::vector<std::vector<int32_t>> paths;
             std::vector<uint32_t> counts, conts;
             c.dump(global, key, paths, counts, conts);
             return nb::make_tuple(paths, counts, conts);
           })
      .def("export_state", [](Cache& c) {
        std::vector<std::pair<uint64_t, std::vector<int32_t>>> prompts;
        std::vector<srt::SeqExport> seqs;
        c.export_state(prompts, seqs);
        nb::list lp, ls;
        for (auto& [key, toks] : prompts) lp.append(nb::make_tuple(key, to_numpy(std::move(toks))));
        for (auto& s : seqs)
          ls.append(nb::make_tuple(s.id, s.key, s.step, s.tag, s.running,
                                   to_numpy(std::move(s.response))));
        return nb::make_tuple(lp, ls);
      });
}
