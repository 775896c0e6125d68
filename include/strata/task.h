// Task<T>: the coroutine type every asynchronous operation in Strata returns.
//
// A Task is lazy: it starts running when it is co_awaited. If it finishes without suspending,
// its awaiter simply carries on without suspending; if it suspends, it resumes its awaiter when
// it finishes (symmetric transfer). So a loop of a million awaits that complete synchronously
// uses no stack in any build: it does not rely on the compiler turning symmetric transfer into
// a tail call, which GCC only does at -O2 and without ASan. Stack use grows only with how
// deeply awaits are nested. A Task owns its coroutine frame; destroying an unfinished,
// never-started Task frees it.
//
//   Task<Result<size_t>> read_header(Child& file) {
//     IoVec iov(buf, 512);
//     auto r = co_await file.read(0, 512, iov);
//     if (!r) co_return r.error();
//     co_return 512;
//   }
//
// Coroutine habits that avoid real GCC 12 bugs: take parameters by value (or by reference only
// when the caller provably outlives the coroutine), name a value before co_await-ing an
// expression that also builds a temporary or a lambda, and never write capturing-lambda
// coroutines.
//
// Threading: a Task runs on the thread that resumes it; in Strata that is the event loop's
// thread. Exceptions escaping a coroutine terminate the process (errors are values).
#pragma once

#include <atomic>
#include <cassert>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <optional>
#include <utility>

namespace strata {

template <class T = void>
class Task;

namespace detail {

// Coroutine frames are recycled through per-thread free lists by size class, so the request
// path does not pay for malloc/free on every request.
void* allocate_frame(std::size_t size);
void free_frame(void* frame, std::size_t size) noexcept;

struct PromiseBase {
  std::coroutine_handle<> continuation = std::noop_coroutine();
  bool detached = false;
  // Set by whichever comes second: the task finishing, or its awaiter deciding to suspend
  // after starting it. The second one knows the other is done and takes over (see
  // Task::await_suspend and FinalAwaiter).
  std::atomic<bool> handoff{false};

  static void* operator new(std::size_t size) { return allocate_frame(size); }
  static void operator delete(void* frame, std::size_t size) noexcept { free_frame(frame, size); }

  std::suspend_always initial_suspend() noexcept { return {}; }

  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <class Promise>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> h) noexcept {
      PromiseBase& p = h.promise();
      if (p.detached) {
        h.destroy();
        return std::noop_coroutine();
      }
      // First: the awaiter is still inside resume() and will carry on by itself.
      if (!p.handoff.exchange(true, std::memory_order_acq_rel)) return std::noop_coroutine();
      return p.continuation;
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }

  void unhandled_exception() noexcept { std::terminate(); }
};

}  // namespace detail

template <class T>
class [[nodiscard]] Task {
 public:
  struct promise_type : detail::PromiseBase {
    std::optional<T> value;
    Task get_return_object() {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    void return_value(T v) { value.emplace(std::move(v)); }
  };

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  bool await_ready() const noexcept { return false; }
  // Runs the task until it finishes or suspends. Returns false (do not suspend) if it finished.
  bool await_suspend(std::coroutine_handle<> awaiter) noexcept {
    handle_.promise().continuation = awaiter;
    handle_.resume();
    return !handle_.promise().handoff.exchange(true, std::memory_order_acq_rel);
  }
  T await_resume() {
    assert(handle_.promise().value.has_value());
    return std::move(*handle_.promise().value);
  }

  // Starts the task and lets it run to completion on its own; the frame frees itself at the
  // end and the result is dropped. Used by spawn().
  void start_detached() && {
    auto h = std::exchange(handle_, {});
    h.promise().detached = true;
    h.resume();
  }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : handle_(h) {}
  void reset() {
    if (handle_) handle_.destroy();
    handle_ = {};
  }
  std::coroutine_handle<promise_type> handle_;
};

template <>
class [[nodiscard]] Task<void> {
 public:
  struct promise_type : detail::PromiseBase {
    Task get_return_object() {
      return Task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    void return_void() {}
  };

  Task(Task&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      reset();
      handle_ = std::exchange(other.handle_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  bool await_ready() const noexcept { return false; }
  // Runs the task until it finishes or suspends. Returns false (do not suspend) if it finished.
  bool await_suspend(std::coroutine_handle<> awaiter) noexcept {
    handle_.promise().continuation = awaiter;
    handle_.resume();
    return !handle_.promise().handoff.exchange(true, std::memory_order_acq_rel);
  }
  void await_resume() {}

  void start_detached() && {
    auto h = std::exchange(handle_, {});
    h.promise().detached = true;
    h.resume();
  }

 private:
  explicit Task(std::coroutine_handle<promise_type> h) : handle_(h) {}
  void reset() {
    if (handle_) handle_.destroy();
    handle_ = {};
  }
  std::coroutine_handle<promise_type> handle_;
};

// Starts `task` now, on the calling thread, without waiting for it. The caller must keep
// whatever the task references alive until it finishes (e.g. by counting in-flight tasks).
inline void spawn(Task<void> task) { std::move(task).start_detached(); }

}  // namespace strata
