// IoUringBackend: FileIo over one io_uring per EventLoop.
//
// Requests are queued as SQEs and submitted together once per loop turn: the first SQE of a
// batch posts one "submit" handler, so a burst of requests from many coroutines costs one
// io_uring_enter. Completions are signalled through an eventfd registered with the ring and
// watched by asio, so the same loop serves sockets, timers and files; those the kernel finished
// during the submission itself are reaped straight away. Either way they resume their
// coroutines in the order the kernel posted them.
//
// At most kQueueDepth requests are in the ring (queued or in flight); more wait in a FIFO
// backlog and enter as slots free up, so the submission queue never overflows and the
// completion queue (twice as large) never drops entries.
//
// Buffered reads and writes first try SyncFastPath on the loop thread.
//
// Threading: create, use and destroy on the loop thread.
#pragma once

#include <liburing.h>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <vector>

#include "strata/file_io.h"
#include "sync_io.h"

namespace strata {

class IoUringBackend final : public FileIo {
 public:
  static constexpr unsigned kQueueDepth = 256;

  // Sets up the ring and its eventfd. Fails when the kernel refuses io_uring (disabled by
  // sysctl or seccomp, too old, out of locked memory) or lacks an operation Strata needs; the
  // Error's message is the reason, e.g. "io_uring_queue_init: Operation not permitted".
  static Result<std::unique_ptr<IoUringBackend>> create(asio::io_context& context);
  ~IoUringBackend() override;

  AioMode mode() const override { return AioMode::kIoUring; }
  Task<Result<size_t>> preadv(int fd, IoVec iov, uint64_t offset, bool direct) override;
  Task<Result<size_t>> pwritev(int fd, IoVec iov, uint64_t offset, bool direct, bool fua) override;
  void register_file(int fd) override { fast_path_.register_file(fd); }
  void forget_file(int fd) override { fast_path_.forget_file(fd); }
  Task<Result<void>> fdatasync(int fd) override;
  Task<Result<void>> fallocate(int fd, int mode, uint64_t offset, uint64_t len) override;

  // One request. It lives in the awaiting coroutine's frame until its completion resumes it.
  struct Op {
    enum class Kind { kRead, kWrite, kFdatasync, kFallocate };
    Kind kind;
    int fd;
    const IoVec* iov = nullptr;
    uint64_t offset = 0;
    int rw_flags = 0;  // RWF_* for reads and writes
    int fallocate_mode = 0;
    uint64_t len = 0;  // fallocate
    int result = 0;    // the CQE's res: a count or -errno
    std::coroutine_handle<> waiter;
    Op* next = nullptr;  // backlog link
  };

 private:
  class OpAwaiter;
  struct Completion {
    Op* op;
    int res;
  };

  IoUringBackend(asio::io_context& context, int event_fd);

  void enqueue(Op* op);
  void prepare(Op* op);
  void post_submit();
  // The posted "submit" handler: submits the batch, reaps what completed inline, and makes
  // sure the eventfd is watched while requests are in the kernel.
  void submit();
  void submit_queued();
  void arm();
  void on_event(const asio::error_code& ec);
  void reap();
  void admit_backlog();

  asio::io_context& context_;
  io_uring ring_{};
  bool ring_ready_ = false;
  asio::posix::stream_descriptor event_;
  SyncFastPath fast_path_;

  unsigned in_ring_ = 0;      // queued + submitted, not yet reaped
  unsigned unsubmitted_ = 0;  // queued in the SQ, not yet passed to the kernel
  bool submit_posted_ = false;
  bool armed_ = false;
  Op* backlog_head_ = nullptr;
  Op* backlog_tail_ = nullptr;
  std::vector<Completion> completions_;  // reused by reap()
};

}  // namespace strata
