#include "strata/event_loop.h"

#include <fmt/format.h>

#include <algorithm>
#include <asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "io_uring_backend.h"
#include "thread_pool_backend.h"

namespace strata {
namespace {

// STRATA_NO_IO_URING set to anything but "" or "0" makes io_uring unavailable, so tests and
// users can exercise the thread-pool fallback on machines where io_uring works.
bool io_uring_disabled_by_env() {
  const char* env = std::getenv("STRATA_NO_IO_URING");
  return env != nullptr && std::string_view(env) != "" && std::string_view(env) != "0";
}

// Resumes the awaiting coroutine when `timer` expires.
struct TimerAwaiter {
  asio::steady_timer* timer;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> waiter) {
    timer->async_wait([waiter](const asio::error_code&) { waiter.resume(); });
  }
  void await_resume() const noexcept {}
};

}  // namespace

// Concurrency hint 1: only the loop thread runs handlers (post() from other threads stays safe),
// which lets asio skip locking on handlers posted from the loop thread itself.
EventLoop::EventLoop() : context_(1) {}

EventLoop::~EventLoop() {
  // The backends post to and watch descriptors on context_, so they go first (the member order
  // already says so; this makes it explicit).
  threads_.reset();
  io_uring_.reset();
}

// asio leaves an io_context stopped once it runs out of work (or is stopped), and a stopped
// context runs nothing until restarted. A loop whose run() returned must be able to run again
// when new work arrives, so run() and poll() restart it first. The price: a stop() made while
// nothing is running is forgotten; stop() ends the run() in progress.
void EventLoop::run() {
  if (context_.stopped()) context_.restart();
  context_.run();
}

std::size_t EventLoop::poll() {
  if (context_.stopped()) context_.restart();
  return context_.poll();
}

void EventLoop::stop() { context_.stop(); }

Task<void> EventLoop::sleep_ms(uint64_t ms) {
  // Longer than any real sleep, short enough not to overflow the clock's nanosecond count.
  constexpr uint64_t kMaxMs = uint64_t{1} << 40;
  asio::steady_timer timer(context_, std::chrono::milliseconds(std::min(ms, kMaxMs)));
  TimerAwaiter awaiter{&timer};
  co_await awaiter;
}

Result<FileIo*> EventLoop::file_io(AioMode mode) {
  if (mode != AioMode::kThreads) {
    if (!io_uring_ && !io_uring_error_) {
      if (io_uring_disabled_by_env()) {
        io_uring_error_ = fail(ENOSYS, "disabled by STRATA_NO_IO_URING");
      } else if (auto backend = IoUringBackend::create(context_); backend) {
        io_uring_ = std::move(*backend);
      } else {
        io_uring_error_ = backend.error();
      }
    }
    if (io_uring_) return io_uring_.get();
    if (mode == AioMode::kIoUring) return io_uring_error_->prefixed("io_uring is unavailable");
    if (!io_uring_failed_) {
      io_uring_failed_ = true;
      fmt::print(stderr, "strata: io_uring is unavailable ({}); file I/O uses the thread pool\n",
                 io_uring_error_->message());
    }
  }
  if (!threads_) {
    auto backend = ThreadPoolBackend::create(context_, ThreadPoolBackend::configured_threads());
    if (!backend) return backend.error().prefixed("thread pool");
    threads_ = std::move(*backend);
  }
  return threads_.get();
}

}  // namespace strata
