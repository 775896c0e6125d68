// Which FileIo backend EventLoop::file_io hands out, the io_uring fallback, the thread pool's
// size, and shutting the thread pool down with requests queued.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <asio/io_context.hpp>
#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include "strata/event_loop.h"
#include "strata/file_io.h"
#include "test_files.h"
#include "thread_pool_backend.h"

namespace strata {
namespace {

// Sets an environment variable for the scope of a test and restores the old value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(AioMode, Names) {
  struct Case {
    AioMode mode;
    const char* name;
  };
  for (const Case& c : {Case{AioMode::kAuto, "auto"}, Case{AioMode::kIoUring, "io_uring"},
                        Case{AioMode::kThreads, "threads"}}) {
    EXPECT_EQ(aio_mode_name(c.mode), c.name);
  }
}

TEST(BackendSelection, AutoPicksIoUringWhereItStartsAndSharesOneInstance) {
  ScopedEnv env("STRATA_NO_IO_URING", nullptr);
  EventLoop loop;
  Result<FileIo*> uring = loop.file_io(AioMode::kIoUring);
  ASSERT_TRUE(uring.has_value()) << "io_uring cannot start on this machine: "
                                 << uring.error().message();
  Result<FileIo*> automatic = loop.file_io(AioMode::kAuto);
  ASSERT_TRUE(automatic.has_value());
  EXPECT_EQ(*automatic, *uring);
  EXPECT_EQ((*automatic)->mode(), AioMode::kIoUring);

  Result<FileIo*> threads = loop.file_io(AioMode::kThreads);
  ASSERT_TRUE(threads.has_value());
  EXPECT_EQ((*threads)->mode(), AioMode::kThreads);
  Result<FileIo*> threads_again = loop.file_io(AioMode::kThreads);
  ASSERT_TRUE(threads_again.has_value());
  EXPECT_EQ(*threads_again, *threads);
}

TEST(BackendSelection, NoIoUringEnvMakesAutoFallBackAndExplicitIoUringFail) {
  ScopedEnv env("STRATA_NO_IO_URING", "1");
  EventLoop loop;

  ::testing::internal::CaptureStderr();
  Result<FileIo*> first = loop.file_io(AioMode::kAuto);
  Result<FileIo*> second = loop.file_io(AioMode::kAuto);
  std::string said = ::testing::internal::GetCapturedStderr();

  ASSERT_TRUE(first.has_value()) << first.error().message();
  EXPECT_EQ((*first)->mode(), AioMode::kThreads);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(*second, *first);
  // Said once, however often the fallback is used.
  EXPECT_EQ(said,
            "strata: io_uring is unavailable (disabled by STRATA_NO_IO_URING); file I/O uses "
            "the thread pool\n");

  Result<FileIo*> explicit_uring = loop.file_io(AioMode::kIoUring);
  ASSERT_FALSE(explicit_uring.has_value());
  EXPECT_EQ(explicit_uring.error().message(),
            "io_uring is unavailable: disabled by STRATA_NO_IO_URING");
  EXPECT_EQ(explicit_uring.error().err(), ENOSYS);

  Result<FileIo*> threads = loop.file_io(AioMode::kThreads);
  ASSERT_TRUE(threads.has_value());
  EXPECT_EQ(*threads, *first);
}

TEST(BackendSelection, NoIoUringEnvZeroLeavesIoUringOn) {
  ScopedEnv env("STRATA_NO_IO_URING", "0");
  EventLoop loop;
  Result<FileIo*> automatic = loop.file_io(AioMode::kAuto);
  ASSERT_TRUE(automatic.has_value());
  EXPECT_EQ((*automatic)->mode(), AioMode::kIoUring);
}

TEST(ThreadPool, SizeComesFromStrataIoThreads) {
  struct Case {
    const char* value;
    unsigned threads;
  };
  for (const Case& c : {Case{nullptr, 4}, Case{"1", 1}, Case{"2", 2}, Case{"64", 64}, Case{"0", 4},
                        Case{"65", 4}, Case{"abc", 4}, Case{"3x", 4}, Case{"", 4}, Case{"-1", 4}}) {
    ScopedEnv env("STRATA_IO_THREADS", c.value);
    EXPECT_EQ(ThreadPoolBackend::configured_threads(), c.threads)
        << (c.value ? c.value : "(unset)");
  }
}

TEST(ThreadPool, EventLoopStartsTheConfiguredNumberOfWorkers) {
  ScopedEnv env("STRATA_IO_THREADS", "2");
  EventLoop loop;
  Result<FileIo*> io = loop.file_io(AioMode::kThreads);
  ASSERT_TRUE(io.has_value());
  auto* pool = dynamic_cast<ThreadPoolBackend*>(*io);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(pool->thread_count(), 2u);
}

struct Outcome {
  int completed = 0;
  int cancelled = 0;
  int other = 0;
};

Task<void> read_and_classify(FileIo* io, int fd, IoVec iov, uint64_t offset, Outcome* outcome) {
  // direct=true: no synchronous attempt, so the request is queued for a worker.
  Result<size_t> r = co_await io->preadv(fd, iov, offset, true);
  if (r && *r == iov.size()) {
    ++outcome->completed;
  } else if (!r && r.error().err() == ECANCELED) {
    ++outcome->cancelled;
  } else {
    ++outcome->other;
  }
}

// Destroying the pool lets running requests finish and fails the queued ones with ECANCELED;
// either way each waiting coroutine is resumed through the loop, which can outlive the pool.
TEST(ThreadPool, DestructionFinishesOrCancelsEveryQueuedRequest) {
  testing::TempFile file("/dev/shm");
  ASSERT_GE(file.fd(), 0);
  constexpr int kOps = 200;
  std::vector<char> data(kOps * 512, 'x');
  ASSERT_EQ(::pwrite(file.fd(), data.data(), data.size(), 0), static_cast<ssize_t>(data.size()));

  asio::io_context context(1);
  auto pool = ThreadPoolBackend::create(context, 1);
  ASSERT_TRUE(pool.has_value());
  std::vector<char> buffers(kOps * 512);
  Outcome outcome;
  for (int i = 0; i < kOps; ++i) {
    IoVec iov(buffers.data() + i * 512, 512);
    spawn(read_and_classify(pool->get(), file.fd(), iov, i * 512, &outcome));
  }
  pool->reset();
  EXPECT_EQ(outcome.completed + outcome.cancelled, 0) << "resumed off the loop";
  context.run();
  EXPECT_EQ(outcome.completed + outcome.cancelled, kOps);
  EXPECT_EQ(outcome.other, 0);
}

}  // namespace
}  // namespace strata
