// CoMutex: a mutex for coroutines on one event loop.
//
// Coroutines on one loop never run at the same time, but a coroutine that suspends in the middle
// of a multi-step update (a qcow2 allocation: read a refcount block, update it, write an L2
// entry) lets others run. CoMutex keeps such updates whole: lock() suspends until the mutex is
// free, and unlock() hands it to the longest waiter, which resumes from the loop (not inside
// unlock, so the unlocking coroutine finishes its step first). Fair: FIFO.
//
//   auto guard = co_await mutex.lock();   // a CoMutex::Guard; unlocks when it goes away
//
// Threading: one event loop thread.
#pragma once

#include <coroutine>
#include <deque>
#include <utility>

#include "strata/event_loop.h"

namespace strata {

class CoMutex {
 public:
  explicit CoMutex(EventLoop& loop) : loop_(&loop) {}
  CoMutex(const CoMutex&) = delete;
  CoMutex& operator=(const CoMutex&) = delete;

  class Guard {
   public:
    Guard() = default;
    explicit Guard(CoMutex* m) : m_(m) {}
    Guard(Guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        m_ = std::exchange(o.m_, nullptr);
      }
      return *this;
    }
    ~Guard() { release(); }
    // Unlocks early (for a step that must run without the lock).
    void release() {
      if (m_ != nullptr) std::exchange(m_, nullptr)->unlock();
    }
    bool owns() const { return m_ != nullptr; }

   private:
    CoMutex* m_ = nullptr;
  };

  struct LockAwaiter {
    CoMutex* m;
    bool await_ready() const noexcept {
      if (m->locked_) return false;
      m->locked_ = true;
      return true;
    }
    void await_suspend(std::coroutine_handle<> h) { m->waiters_.push_back(h); }
    // Ownership was handed over by unlock() before this coroutine was resumed.
    Guard await_resume() const noexcept { return Guard(m); }
  };
  [[nodiscard]] LockAwaiter lock() { return LockAwaiter{this}; }

  bool locked() const { return locked_; }

 private:
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    std::coroutine_handle<> next = waiters_.front();
    waiters_.pop_front();
    loop_->post([next] { next.resume(); });
  }

  EventLoop* loop_;
  bool locked_ = false;
  std::deque<std::coroutine_handle<>> waiters_;
};

}  // namespace strata
