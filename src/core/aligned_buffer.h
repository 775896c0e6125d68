// AlignedBuffer: an owned byte buffer whose start is aligned (bounce buffers for O_DIRECT-style
// memory alignment and for read-modify-write padding). Private to the core.
//
// Thread safety: a plain value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <utility>

namespace strata {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // `align` is raised to at least the pointer size, as posix_memalign requires. On allocation
  // failure the buffer is empty (operator bool is false).
  AlignedBuffer(std::size_t size, std::size_t align) {
    void* p = nullptr;
    if (align < sizeof(void*)) align = sizeof(void*);
    if (posix_memalign(&p, align, size == 0 ? 1 : size) == 0) data_ = static_cast<uint8_t*>(p);
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(AlignedBuffer&& other) noexcept : data_(std::exchange(other.data_, nullptr)) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() const { return data_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  uint8_t* data_ = nullptr;
};

}  // namespace strata
