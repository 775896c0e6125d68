// Coroutine frame recycling (declared in strata/task.h).
//
// Every request through the graph creates a handful of coroutine frames, so frames are kept on
// per-thread free lists by size class instead of going back to malloc. A frame is pushed on the
// list of the thread that frees it, whichever thread allocated it: the lists hold plain blocks
// from operator new, so any thread may reuse any block. No locks are needed because a list is
// only ever touched by its own thread.
#include <array>
#include <cstddef>
#include <cstdint>
#include <new>

#include "strata/task.h"

namespace strata::detail {
namespace {

constexpr std::size_t kClassBytes = 64;
constexpr std::size_t kClassCount = 64;  // classes of 64, 128, ... 4096 bytes
constexpr std::size_t kMaxPooledBytes = kClassBytes * kClassCount;
// A list keeps at most this many bytes of idle frames (and at least kMinFreePerClass frames),
// so a thread that frees frames allocated elsewhere cannot hoard memory without bound.
constexpr std::size_t kMaxIdleBytesPerClass = 256 * 1024;
constexpr std::uint32_t kMinFreePerClass = 16;

struct FreeFrame {
  FreeFrame* next;
};

constexpr std::size_t class_of(std::size_t size) {
  return (size + kClassBytes - 1) / kClassBytes - 1;
}
constexpr std::size_t class_bytes(std::size_t cls) { return (cls + 1) * kClassBytes; }
constexpr std::uint32_t class_capacity(std::size_t cls) {
  std::size_t by_bytes = kMaxIdleBytesPerClass / class_bytes(cls);
  return by_bytes < kMinFreePerClass ? kMinFreePerClass : static_cast<std::uint32_t>(by_bytes);
}

// Set once this thread's pool has been destroyed. A trivially destructible thread_local, so it
// stays readable while other thread_local destructors run at thread exit (and may free frames).
thread_local bool tls_pool_gone = false;

class FramePool {
 public:
  constexpr FramePool() = default;
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  ~FramePool() {
    for (FreeFrame*& head : heads_) {
      while (head != nullptr) {
        FreeFrame* next = head->next;
        ::operator delete(head);
        head = next;
      }
    }
    tls_pool_gone = true;
  }

  void* allocate(std::size_t cls) {
    FreeFrame* frame = heads_[cls];
    if (frame == nullptr) return ::operator new(class_bytes(cls));
    heads_[cls] = frame->next;
    --counts_[cls];
    return frame;
  }

  void release(void* block, std::size_t cls) noexcept {
    if (counts_[cls] >= class_capacity(cls)) {
      ::operator delete(block);
      return;
    }
    auto* frame = static_cast<FreeFrame*>(block);
    frame->next = heads_[cls];
    heads_[cls] = frame;
    ++counts_[cls];
  }

 private:
  std::array<FreeFrame*, kClassCount> heads_{};
  std::array<std::uint32_t, kClassCount> counts_{};
};

thread_local FramePool tls_pool;

}  // namespace

void* allocate_frame(std::size_t size) {
  if (size == 0 || size > kMaxPooledBytes) return ::operator new(size);
  std::size_t cls = class_of(size);
  if (tls_pool_gone) return ::operator new(class_bytes(cls));
  return tls_pool.allocate(cls);
}

void free_frame(void* frame, std::size_t size) noexcept {
  // Pooled blocks were allocated with their class size and large ones with `size`; the unsized
  // operator delete is correct for both.
  if (size == 0 || size > kMaxPooledBytes || tls_pool_gone) {
    ::operator delete(frame);
    return;
  }
  tls_pool.release(frame, class_of(size));
}

}  // namespace strata::detail
