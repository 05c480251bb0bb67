// Open-addressed token -> node table for the root's children. The root of a tree has one
// child per distinct token (thousands in the global tree) and is visited once per appended
// token, so a sibling list would be the slowest part of every append.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace srt {

class RootMap {
 public:
  static constexpr int32_t kEmpty = -1;  // token ids are >= 0

  RootMap() { slots_.assign(8, Slot{kEmpty, 0}); }

  uint32_t find(int32_t t) const {
    for (size_t i = hash(t) & mask();; i = (i + 1) & mask()) {
      if (slots_[i].key == t) return slots_[i].val;
      if (slots_[i].key == kEmpty) return 0xFFFFFFFFu;
    }
  }
  void insert(int32_t t, uint32_t v) {  // t must be absent
    if ((size_ + 1) * 4 > slots_.size() * 3) grow();  // load <= 3/4: linear probes stay short
    put(t, v);
    ++size_;
  }
  void set(int32_t t, uint32_t v) {  // t must be present
    for (size_t i = hash(t) & mask();; i = (i + 1) & mask()) {
      if (slots_[i].key == t) { slots_[i].val = v; return; }
    }
  }
  void erase(int32_t t) {  // backward-shift deletion keeps probe chains intact
    size_t i = hash(t) & mask();
    while (slots_[i].key != t) {
      if (slots_[i].key == kEmpty) return;
      i = (i + 1) & mask();
    }
    size_t j = i;
    for (;;) {
      j = (j + 1) & mask();
      if (slots_[j].key == kEmpty) break;
      size_t home = hash(slots_[j].key) & mask();
      bool movable = (i <= j) ? (home <= i || home > j) : (home <= i && home > j);
      if (movable) { slots_[i] = slots_[j]; i = j; }
    }
    slots_[i].key = kEmpty;
    --size_;
  }
  size_t size() const { return size_; }
  size_t bytes() const { return slots_.capacity() * sizeof(Slot); }
  template <class F>
  void for_each(F&& f) const {  // f(token, node) -> bool (false stops)
    for (const Slot& s : slots_)
      if (s.key != kEmpty && !f(s.key, s.val)) return;
  }

 private:
  struct Slot {
    int32_t key;
    uint32_t val;
  };
  size_t mask() const { return slots_.size() - 1; }
  static size_t hash(int32_t t) {
    uint64_t x = static_cast<uint32_t>(t) * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(x >> 29);
  }
  void put(int32_t t, uint32_t v) {
    size_t i = hash(t) & mask();
    while (slots_[i].key != kEmpty) i = (i + 1) & mask();
    slots_[i] = Slot{t, v};
  }
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, Slot{kEmpty, 0});
    for (const Slot& s : old)
      if (s.key != kEmpty) put(s.key, s.val);
  }
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

}  // namespace srt
