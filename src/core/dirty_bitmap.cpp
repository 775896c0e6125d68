#include "strata/dirty_bitmap.h"

#include <algorithm>
#include <bit>
#include <cassert>

namespace strata {

DirtyBitmap::DirtyBitmap(uint64_t size, uint64_t granularity)
    : size_(size),
      granularity_(granularity),
      shift_(std::countr_zero(granularity)),
      granule_count_((size + granularity - 1) / granularity),
      words_((granule_count_ + 63) / 64, 0) {
  assert(std::has_single_bit(granularity));
}

uint64_t DirtyBitmap::end_granule(uint64_t offset, uint64_t bytes) const {
  if (bytes == 0 || offset >= size_) return first_granule(offset);
  uint64_t last = std::min(size_, offset + std::min(bytes, size_ - offset)) - 1;
  return (last >> shift_) + 1;
}

void DirtyBitmap::set(uint64_t offset, uint64_t bytes) {
  uint64_t end = end_granule(offset, bytes);
  uint64_t newly = 0;
  for (uint64_t g = first_granule(offset); g < end; ++g) {
    uint64_t& word = words_[g / 64];
    uint64_t bit = uint64_t{1} << (g % 64);
    if ((word & bit) == 0) {
      word |= bit;
      ++newly;
    }
  }
  dirty_granules_ += newly;
  if (newly > 0 && on_dirty_) on_dirty_();
}

void DirtyBitmap::reset(uint64_t offset, uint64_t bytes) {
  uint64_t end = end_granule(offset, bytes);
  for (uint64_t g = first_granule(offset); g < end; ++g) {
    uint64_t& word = words_[g / 64];
    uint64_t bit = uint64_t{1} << (g % 64);
    if ((word & bit) != 0) {
      word &= ~bit;
      --dirty_granules_;
    }
  }
}

bool DirtyBitmap::get(uint64_t offset) const {
  return offset < size_ && test(first_granule(offset));
}

uint64_t DirtyBitmap::count() const {
  uint64_t bytes = dirty_granules_ << shift_;
  // The last granule may reach past the size.
  if (granule_count_ > 0 && test(granule_count_ - 1)) bytes -= (granule_count_ << shift_) - size_;
  return bytes;
}

std::optional<uint64_t> DirtyBitmap::next_dirty(uint64_t offset) const {
  uint64_t g = first_granule(offset);
  if (g >= granule_count_ || dirty_granules_ == 0) return std::nullopt;
  uint64_t w = g / 64;
  uint64_t word = words_[w] & (~uint64_t{0} << (g % 64));
  while (word == 0) {
    if (++w == words_.size()) return std::nullopt;
    word = words_[w];
  }
  return (w * 64 + static_cast<uint64_t>(std::countr_zero(word))) << shift_;
}

uint64_t DirtyBitmap::dirty_run(uint64_t offset, uint64_t max_bytes) const {
  uint64_t g = first_granule(offset);
  uint64_t max_granules = std::max<uint64_t>(1, max_bytes >> shift_);
  uint64_t n = 0;
  while (g + n < granule_count_ && n < max_granules && test(g + n)) ++n;
  uint64_t start = g << shift_;
  return std::min((g + n) << shift_, size_) - std::min(start, size_);
}

}  // namespace strata
