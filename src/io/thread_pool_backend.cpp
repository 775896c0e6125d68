#include "thread_pool_backend.h"

#include <pthread.h>
#include <signal.h>

#include <asio/post.hpp>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>
#include <utility>

namespace strata {

// Suspends the calling coroutine until a worker has run `job` and the loop has picked up its
// completion.
class ThreadPoolBackend::JobAwaiter {
 public:
  JobAwaiter(ThreadPoolBackend* pool, Job* job) : pool_(pool), job_(job) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> waiter) {
    job_->waiter = waiter;
    pool_->enqueue(job_);
  }
  ssize_t await_resume() const noexcept { return job_->result; }

 private:
  ThreadPoolBackend* pool_;
  Job* job_;
};

unsigned ThreadPoolBackend::configured_threads() {
  const char* env = std::getenv("STRATA_IO_THREADS");
  if (env == nullptr) return kDefaultThreads;
  std::string_view text(env);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 1 || value > kMaxThreads)
    return kDefaultThreads;
  return value;
}

Result<std::unique_ptr<ThreadPoolBackend>> ThreadPoolBackend::create(asio::io_context& context,
                                                                     unsigned threads) {
  std::unique_ptr<ThreadPoolBackend> pool(new ThreadPoolBackend(context));
  if (threads < 1) threads = 1;
  if (threads > kMaxThreads) threads = kMaxThreads;

  // Workers start with every signal blocked, so signals reach the threads that handle them.
  sigset_t all;
  sigset_t saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  std::string failure;
  pool->workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    try {
      pool->workers_.emplace_back([p = pool.get()] { p->worker_main(); });
      pthread_setname_np(pool->workers_.back().native_handle(), "strata-io");
    } catch (const std::system_error& e) {
      failure = e.what();
      break;
    }
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pool->workers_.empty()) return fail(EAGAIN, "cannot start an I/O thread: {}", failure);
  return pool;
}

ThreadPoolBackend::~ThreadPoolBackend() {
  Job* cancelled = nullptr;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    cancelled = std::exchange(head_, nullptr);
    tail_ = nullptr;
  }
  wake_.notify_all();
  while (cancelled != nullptr) {
    Job* next = cancelled->next;
    cancelled->result = -ECANCELED;
    WorkGuard work = std::move(*cancelled->work);
    complete(cancelled, std::move(work));
    cancelled = next;
  }
  for (std::thread& worker : workers_) worker.join();
}

Task<Result<size_t>> ThreadPoolBackend::preadv(int fd, IoVec iov, uint64_t offset, bool direct) {
  std::optional<Result<size_t>> done = fast_path_.start_preadv(fd, iov, offset, direct);
  if (done) co_return std::move(*done);
  Job job{.kind = Job::Kind::kRead, .fd = fd, .iov = &iov, .offset = offset};
  JobAwaiter awaiter(this, &job);
  ssize_t res = co_await awaiter;
  co_return io_count_result(res, "preadv");
}

Task<Result<size_t>> ThreadPoolBackend::pwritev(int fd, IoVec iov, uint64_t offset, bool direct,
                                                bool fua) {
  std::optional<Result<size_t>> done = fast_path_.start_pwritev(fd, iov, offset, direct, fua);
  if (done) co_return std::move(*done);
  Job job{.kind = Job::Kind::kWrite,
          .fd = fd,
          .iov = &iov,
          .offset = offset,
          .rw_flags = fua ? RWF_DSYNC : 0};
  JobAwaiter awaiter(this, &job);
  ssize_t res = co_await awaiter;
  co_return io_count_result(res, "pwritev");
}

Task<Result<void>> ThreadPoolBackend::fdatasync(int fd) {
  Job job{.kind = Job::Kind::kFdatasync, .fd = fd};
  JobAwaiter awaiter(this, &job);
  ssize_t res = co_await awaiter;
  co_return io_void_result(static_cast<int>(res), "fdatasync");
}

Task<Result<void>> ThreadPoolBackend::fallocate(int fd, int mode, uint64_t offset, uint64_t len) {
  Job job{.kind = Job::Kind::kFallocate,
          .fd = fd,
          .offset = offset,
          .fallocate_mode = mode,
          .len = len};
  JobAwaiter awaiter(this, &job);
  ssize_t res = co_await awaiter;
  co_return io_void_result(static_cast<int>(res), "fallocate");
}

void ThreadPoolBackend::enqueue(Job* job) {
  job->work.emplace(context_.get_executor());
  job->next = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (tail_ != nullptr) {
      tail_->next = job;
    } else {
      head_ = job;
    }
    tail_ = job;
  }
  wake_.notify_one();
}

void ThreadPoolBackend::worker_main() {
  for (;;) {
    Job* job = nullptr;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return head_ != nullptr || stopping_; });
      if (head_ == nullptr) return;  // stopping, and the destructor took what was queued
      job = head_;
      head_ = job->next;
      if (head_ == nullptr) tail_ = nullptr;
    }
    WorkGuard work = std::move(*job->work);
    job->result = run_blocking(*job);
    complete(job, std::move(work));
  }
}

void ThreadPoolBackend::complete(Job* job, WorkGuard work) {
  // After this post the job belongs to the loop thread again: nothing here touches it later.
  asio::post(context_, [job, work = std::move(work)]() mutable {
    job->waiter.resume();
    work.reset();
  });
}

ssize_t ThreadPoolBackend::run_blocking(const Job& job) {
  switch (job.kind) {
    case Job::Kind::kRead:
      return blocking_preadv(job.fd, job.iov->iovecs(), job.offset, job.rw_flags);
    case Job::Kind::kWrite:
      return blocking_pwritev(job.fd, job.iov->iovecs(), job.offset, job.rw_flags);
    case Job::Kind::kFdatasync:
      return blocking_fdatasync(job.fd);
    case Job::Kind::kFallocate:
      return blocking_fallocate(job.fd, job.fallocate_mode, job.offset, job.len);
  }
  return -EINVAL;
}

}  // namespace strata
