// DirtyBitmap: which parts of a node were written since a point in time, at a granularity
// (QEMU's BdrvDirtyBitmap, in-memory only).
//
// A node records every write-class request (write, write-zeroes, discard, truncate) in each
// bitmap attached to it (Node::add_dirty_bitmap) when the request ends, whether it succeeded
// or not: a failed write may still have changed part of the range. So a range whose bits are
// clear was not written after they were cleared, unless a write to it is still in flight
// (Node::writes_in_flight() tells). The mirror job copies what is dirty and clears it before
// reading, so a write that lands meanwhile makes it dirty again.
//
// Bits cover [i * granularity, (i + 1) * granularity); the last one may reach past `size`.
// Offsets past the size are ignored (a write that grew the node beyond it).
//
// Threading: event loop thread only, like the node it is attached to.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

namespace strata {

class DirtyBitmap {
 public:
  // REQUIRES: granularity is a power of two.
  DirtyBitmap(uint64_t size, uint64_t granularity);

  uint64_t size() const { return size_; }
  uint64_t granularity() const { return granularity_; }

  // Marks every granule that [offset, offset + bytes) touches.
  void set(uint64_t offset, uint64_t bytes);
  // Clears every granule that [offset, offset + bytes) touches.
  void reset(uint64_t offset, uint64_t bytes);
  bool get(uint64_t offset) const;
  // Dirty bytes: dirty granules times the granularity, the last one cut at the size.
  uint64_t count() const;
  // The start of the first dirty granule at or after the granule holding `offset`.
  std::optional<uint64_t> next_dirty(uint64_t offset) const;
  // How many bytes from `offset` (granule-aligned, dirty) on are dirty without a gap, at most
  // `max_bytes`; cut at the size.
  uint64_t dirty_run(uint64_t offset, uint64_t max_bytes) const;

  // Called after set() made at least one clean granule dirty (a job waiting for work).
  void set_on_dirty(std::function<void()> callback) { on_dirty_ = std::move(callback); }

 private:
  uint64_t granules() const { return words_.size() * 64; }
  uint64_t first_granule(uint64_t offset) const { return offset >> shift_; }
  // One past the last granule [offset, offset + bytes) touches, capped at the bitmap's end.
  uint64_t end_granule(uint64_t offset, uint64_t bytes) const;
  bool test(uint64_t granule) const { return (words_[granule / 64] >> (granule % 64)) & 1; }

  uint64_t size_;
  uint64_t granularity_;
  int shift_;
  uint64_t granule_count_;
  uint64_t dirty_granules_ = 0;
  std::vector<uint64_t> words_;
  std::function<void()> on_dirty_;
};

}  // namespace strata
