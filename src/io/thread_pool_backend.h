// ThreadPoolBackend: FileIo over blocking system calls run by a small pool of worker threads.
//
// The fallback where io_uring cannot start, and selectable with aio=threads. Buffered reads
// and writes first try SyncFastPath on the loop thread; everything else is queued (mutex and
// condition variable) for a worker, which runs the blocking call and posts the completion back
// to the loop, where the waiting coroutine resumes. Workers never resume coroutines.
//
// While a request is queued or running it holds work on the loop's io_context, so run() does
// not return with requests in flight.
//
// Threading: create, use and destroy on the loop thread. The destructor lets requests that a
// worker has started finish, fails the queued ones with ECANCELED (their completions still go
// through the loop), and joins the workers.
#pragma once

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "strata/file_io.h"
#include "sync_io.h"

namespace strata {

class ThreadPoolBackend final : public FileIo {
 public:
  static constexpr unsigned kDefaultThreads = 4;
  static constexpr unsigned kMaxThreads = 64;

  // The pool size: STRATA_IO_THREADS when it is a number from 1 to kMaxThreads, otherwise
  // kDefaultThreads.
  static unsigned configured_threads();

  // Starts `threads` workers (at least one). Fails only when no thread can be started.
  static Result<std::unique_ptr<ThreadPoolBackend>> create(asio::io_context& context,
                                                           unsigned threads);
  ~ThreadPoolBackend() override;

  unsigned thread_count() const { return static_cast<unsigned>(workers_.size()); }

  AioMode mode() const override { return AioMode::kThreads; }
  Task<Result<size_t>> preadv(int fd, IoVec iov, uint64_t offset, bool direct) override;
  Task<Result<size_t>> pwritev(int fd, IoVec iov, uint64_t offset, bool direct, bool fua) override;
  void register_file(int fd) override { fast_path_.register_file(fd); }
  void forget_file(int fd) override { fast_path_.forget_file(fd); }
  Task<Result<void>> fdatasync(int fd) override;
  Task<Result<void>> fallocate(int fd, int mode, uint64_t offset, uint64_t len) override;

  using WorkGuard = asio::executor_work_guard<asio::io_context::executor_type>;

  // One request. It lives in the awaiting coroutine's frame until its completion resumes it.
  struct Job {
    enum class Kind { kRead, kWrite, kFdatasync, kFallocate };
    Kind kind;
    int fd;
    const IoVec* iov = nullptr;
    uint64_t offset = 0;
    int rw_flags = 0;  // RWF_* for reads and writes
    int fallocate_mode = 0;
    uint64_t len = 0;    // fallocate
    ssize_t result = 0;  // a count or -errno
    std::coroutine_handle<> waiter;
    std::optional<WorkGuard> work;  // taken by the worker that runs the job
    Job* next = nullptr;            // queue link
  };

 private:
  class JobAwaiter;

  explicit ThreadPoolBackend(asio::io_context& context) : context_(context) {}

  void enqueue(Job* job);
  void worker_main();
  // Posts `job`'s completion to the loop; `work` keeps the loop running until it is handled.
  void complete(Job* job, WorkGuard work);
  static ssize_t run_blocking(const Job& job);

  asio::io_context& context_;
  SyncFastPath fast_path_;

  std::mutex mutex_;
  std::condition_variable wake_;
  Job* head_ = nullptr;    // guarded by mutex_
  Job* tail_ = nullptr;    // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
  std::vector<std::thread> workers_;
};

}  // namespace strata
