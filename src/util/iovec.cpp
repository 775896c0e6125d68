#include "strata/iovec.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace strata {

IoVec::IoVec(std::span<const iovec> vecs) {
  for (const iovec& v : vecs) push_back(v.iov_base, v.iov_len);
}

IoVec::IoVec(const IoVec& other) { append(other); }

IoVec& IoVec::operator=(const IoVec& other) {
  if (this != &other) {
    heap_.clear();
    count_ = 0;
    bytes_ = 0;
    append(other);
  }
  return *this;
}

IoVec::IoVec(IoVec&& other) noexcept
    : inline_(other.inline_), heap_(std::move(other.heap_)), count_(other.count_),
      bytes_(other.bytes_) {
  other.heap_.clear();
  other.count_ = 0;
  other.bytes_ = 0;
}

IoVec& IoVec::operator=(IoVec&& other) noexcept {
  if (this != &other) {
    inline_ = other.inline_;
    heap_ = std::move(other.heap_);
    count_ = other.count_;
    bytes_ = other.bytes_;
    other.heap_.clear();
    other.count_ = 0;
    other.bytes_ = 0;
  }
  return *this;
}

void IoVec::push_back(void* base, std::size_t len) {
  if (len == 0) return;
  if (heap_.empty() && count_ < kInline) {
    inline_[count_] = iovec{base, len};
  } else {
    if (heap_.empty()) heap_.assign(inline_.begin(), inline_.begin() + count_);
    heap_.push_back(iovec{base, len});
  }
  ++count_;
  bytes_ += len;
}

void IoVec::append(const IoVec& other) {
  for (const iovec& v : other.iovecs()) push_back(v.iov_base, v.iov_len);
}

IoVec IoVec::slice(std::size_t offset, std::size_t len) const {
  assert(offset + len <= bytes_);
  IoVec out;
  for (const iovec& v : iovecs()) {
    if (len == 0) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    std::size_t take = std::min(v.iov_len - offset, len);
    out.push_back(static_cast<char*>(v.iov_base) + offset, take);
    offset = 0;
    len -= take;
  }
  return out;
}

void IoVec::copy_from(std::size_t offset, const void* src, std::size_t len) {
  assert(offset + len <= bytes_);
  const char* s = static_cast<const char*>(src);
  for (const iovec& v : iovecs()) {
    if (len == 0) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    std::size_t take = std::min(v.iov_len - offset, len);
    std::memcpy(static_cast<char*>(v.iov_base) + offset, s, take);
    s += take;
    offset = 0;
    len -= take;
  }
}

void IoVec::copy_to(std::size_t offset, void* dst, std::size_t len) const {
  assert(offset + len <= bytes_);
  char* d = static_cast<char*>(dst);
  for (const iovec& v : iovecs()) {
    if (len == 0) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    std::size_t take = std::min(v.iov_len - offset, len);
    std::memcpy(d, static_cast<const char*>(v.iov_base) + offset, take);
    d += take;
    offset = 0;
    len -= take;
  }
}

void IoVec::fill(std::size_t offset, int byte, std::size_t len) {
  assert(offset + len <= bytes_);
  for (const iovec& v : iovecs()) {
    if (len == 0) break;
    if (offset >= v.iov_len) {
      offset -= v.iov_len;
      continue;
    }
    std::size_t take = std::min(v.iov_len - offset, len);
    std::memset(static_cast<char*>(v.iov_base) + offset, byte, take);
    offset = 0;
    len -= take;
  }
}

bool IoVec::is_zero() const {
  for (const iovec& v : iovecs()) {
    const auto* p = static_cast<const unsigned char*>(v.iov_base);
    if (!std::all_of(p, p + v.iov_len, [](unsigned char c) { return c == 0; })) return false;
  }
  return true;
}

}  // namespace strata
