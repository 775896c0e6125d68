// EventLoop: the single thread on which Strata's coroutines run.
//
// An Engine and everything in its graph live on one EventLoop. All coroutines are resumed on the
// loop's thread; work done elsewhere (thread-pool file I/O) posts its completion back to the
// loop. The loop is an asio::io_context, so sockets (QMP, NBD) and timers share it.
//
// Threading: construct, run and destroy on one thread. post() is the only member that may be
// called from other threads.
#pragma once

#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <coroutine>
#include <memory>
#include <optional>
#include <utility>

#include "strata/file_io.h"
#include "strata/task.h"

namespace strata {

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  asio::io_context& context() { return context_; }

  // Runs handlers until stop() is called or no work is left.
  void run();
  // Runs handlers that are ready now, without blocking; returns how many ran.
  std::size_t poll();
  // Makes run() return. Safe from any thread.
  void stop();

  // Runs `fn` on the loop thread. Safe from any thread.
  template <class Fn>
  void post(Fn&& fn) {
    asio::post(context_, std::forward<Fn>(fn));
  }

  // Awaitable: suspends the calling coroutine and resumes it from the loop, after the handlers
  // already queued. Lets long loops give others a turn.
  auto yield() {
    struct Awaiter {
      EventLoop* loop;
      bool await_ready() const noexcept { return false; }
      void await_suspend(std::coroutine_handle<> h) {
        loop->post([h] { h.resume(); });
      }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }

  // Awaitable: resumes the calling coroutine after `ms` milliseconds.
  Task<void> sleep_ms(uint64_t ms);

  // The file I/O backend for `mode`, created on first use. kAuto picks io_uring and falls back
  // to the thread pool when io_uring cannot start on this machine (said once on stderr).
  // Explicitly asking for io_uring where it cannot start is an error.
  Result<FileIo*> file_io(AioMode mode);

 private:
  asio::io_context context_;
  std::unique_ptr<FileIo> io_uring_;
  std::unique_ptr<FileIo> threads_;
  bool io_uring_failed_ = false;
  std::optional<Error> io_uring_error_;
};

// Runs `task` on `loop` until it completes and returns its value. For tools and tests: the loop
// is run on the calling thread. REQUIRES: the loop is not already running on this thread.
template <class T>
T run_sync(EventLoop& loop, Task<T> task) {
  std::optional<T> out;
  bool done = false;
  auto wrapper = [](Task<T> t, std::optional<T>* o, bool* d, EventLoop* l) -> Task<void> {
    o->emplace(co_await t);
    *d = true;
    l->stop();
  };
  spawn(wrapper(std::move(task), &out, &done, &loop));
  while (!done) {
    loop.context().restart();
    loop.run();
  }
  return std::move(*out);
}

inline void run_sync(EventLoop& loop, Task<void> task) {
  bool done = false;
  auto wrapper = [](Task<void> t, bool* d, EventLoop* l) -> Task<void> {
    co_await t;
    *d = true;
    l->stop();
  };
  spawn(wrapper(std::move(task), &done, &loop));
  while (!done) {
    loop.context().restart();
    loop.run();
  }
}

}  // namespace strata
