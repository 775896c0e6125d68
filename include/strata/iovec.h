// IoVec: a scatter-gather list of caller-owned buffers, passed down the graph without copies.
//
// An IoVec does not own the memory it points to; the caller of a read or write keeps the
// buffers alive until the request completes. Slicing makes a new list over the same memory, so
// the core can split a request at max-transfer or hand a driver part of a padded request.
// Small lists (the common case of one to four buffers) live inline, without heap allocation.
//
// Thread safety: a plain value.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace strata {

class IoVec {
 public:
  IoVec() = default;
  // One buffer of `len` bytes.
  IoVec(void* base, std::size_t len) { push_back(base, len); }
  explicit IoVec(std::span<const iovec> vecs);

  IoVec(const IoVec& other);
  IoVec& operator=(const IoVec& other);
  IoVec(IoVec&& other) noexcept;
  IoVec& operator=(IoVec&& other) noexcept;

  // Appends a buffer; zero-length buffers are skipped.
  void push_back(void* base, std::size_t len);
  // Appends the elements of `other` (same memory, no copy of data).
  void append(const IoVec& other);

  // Total bytes described by the list.
  std::size_t size() const { return bytes_; }
  bool empty() const { return bytes_ == 0; }
  // The elements, for preadv/pwritev/io_uring.
  std::span<const iovec> iovecs() const { return {data(), count_}; }
  std::size_t count() const { return count_; }

  // The sub-list covering bytes [offset, offset + len) of this one.
  // REQUIRES: offset + len <= size().
  IoVec slice(std::size_t offset, std::size_t len) const;

  // Copies `len` bytes between the list at byte `offset` and a flat buffer.
  // REQUIRES: offset + len <= size().
  void copy_from(std::size_t offset, const void* src, std::size_t len);
  void copy_to(std::size_t offset, void* dst, std::size_t len) const;
  // Fills `len` bytes at `offset` with `byte`.
  void fill(std::size_t offset, int byte, std::size_t len);
  // True if every byte is zero.
  bool is_zero() const;

 private:
  static constexpr std::size_t kInline = 4;
  iovec* data() { return heap_.empty() ? inline_.data() : heap_.data(); }
  const iovec* data() const { return heap_.empty() ? inline_.data() : heap_.data(); }

  std::array<iovec, kInline> inline_{};
  std::vector<iovec> heap_;  // used once the list outgrows inline_
  std::size_t count_ = 0;
  std::size_t bytes_ = 0;
};

}  // namespace strata
