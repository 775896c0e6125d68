#include "io_uring_backend.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <cerrno>
#include <utility>

namespace strata {
namespace {

struct RequiredOp {
  int opcode;
  const char* name;
};

constexpr RequiredOp kRequiredOps[] = {
    {IORING_OP_READV, "IORING_OP_READV"},
    {IORING_OP_WRITEV, "IORING_OP_WRITEV"},
    {IORING_OP_FSYNC, "IORING_OP_FSYNC"},
    {IORING_OP_FALLOCATE, "IORING_OP_FALLOCATE"},
};

// Checks that the kernel behind `ring` implements every operation the backend issues, so a
// missing one shows up as "io_uring is unavailable" at start rather than as EINVAL per request.
Result<void> check_operations(io_uring* ring) {
  io_uring_probe* probe = io_uring_get_probe_ring(ring);
  if (probe == nullptr) return fail(ENOSYS, "the kernel cannot list its io_uring operations");
  Result<void> out;
  for (const RequiredOp& op : kRequiredOps) {
    if (!io_uring_opcode_supported(probe, op.opcode)) {
      out = fail(ENOSYS, "the kernel lacks io_uring operation {}", op.name);
      break;
    }
  }
  io_uring_free_probe(probe);
  return out;
}

}  // namespace

// Suspends the calling coroutine until `op` completes; returns the CQE's result.
class IoUringBackend::OpAwaiter {
 public:
  OpAwaiter(IoUringBackend* backend, Op* op) : backend_(backend), op_(op) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> waiter) {
    op_->waiter = waiter;
    backend_->enqueue(op_);
  }
  int await_resume() const noexcept { return op_->result; }

 private:
  IoUringBackend* backend_;
  Op* op_;
};

IoUringBackend::IoUringBackend(asio::io_context& context, int event_fd)
    : context_(context), event_(context) {
  completions_.reserve(kQueueDepth);
  asio::error_code ec;
  event_.assign(event_fd, ec);
  if (ec) ::close(event_fd);
}

Result<std::unique_ptr<IoUringBackend>> IoUringBackend::create(asio::io_context& context) {
  int event_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd < 0) return errno_error(errno, "eventfd");
  std::unique_ptr<IoUringBackend> backend(new IoUringBackend(context, event_fd));
  if (!backend->event_.is_open()) return fail(EIO, "cannot watch the eventfd");

  int ret = io_uring_queue_init(kQueueDepth, &backend->ring_, 0);
  if (ret < 0) return errno_error(-ret, "io_uring_queue_init");
  backend->ring_ready_ = true;
  if (auto ops = check_operations(&backend->ring_); !ops) return ops.error();
  ret = io_uring_register_eventfd(&backend->ring_, event_fd);
  if (ret < 0) return errno_error(-ret, "io_uring_register_eventfd");
  return backend;
}

IoUringBackend::~IoUringBackend() {
  // Requests still in the ring belong to coroutines that will never be resumed now (the loop
  // is going away); the kernel cancels them when the ring is torn down.
  if (ring_ready_) io_uring_queue_exit(&ring_);
}

Task<Result<size_t>> IoUringBackend::preadv(int fd, IoVec iov, uint64_t offset, bool direct) {
  std::optional<Result<size_t>> done = fast_path_.start_preadv(fd, iov, offset, direct);
  if (done) co_return std::move(*done);
  Op op{.kind = Op::Kind::kRead, .fd = fd, .iov = &iov, .offset = offset};
  OpAwaiter awaiter(this, &op);
  int res = co_await awaiter;
  co_return io_count_result(res, "preadv");
}

Task<Result<size_t>> IoUringBackend::pwritev(int fd, IoVec iov, uint64_t offset, bool direct,
                                             bool fua) {
  std::optional<Result<size_t>> done = fast_path_.start_pwritev(fd, iov, offset, direct, fua);
  if (done) co_return std::move(*done);
  Op op{.kind = Op::Kind::kWrite,
        .fd = fd,
        .iov = &iov,
        .offset = offset,
        .rw_flags = fua ? RWF_DSYNC : 0};
  OpAwaiter awaiter(this, &op);
  int res = co_await awaiter;
  co_return io_count_result(res, "pwritev");
}

Task<Result<void>> IoUringBackend::fdatasync(int fd) {
  Op op{.kind = Op::Kind::kFdatasync, .fd = fd};
  OpAwaiter awaiter(this, &op);
  int res = co_await awaiter;
  co_return io_void_result(res, "fdatasync");
}

Task<Result<void>> IoUringBackend::fallocate(int fd, int mode, uint64_t offset, uint64_t len) {
  Op op{
      .kind = Op::Kind::kFallocate, .fd = fd, .offset = offset, .fallocate_mode = mode, .len = len};
  OpAwaiter awaiter(this, &op);
  int res = co_await awaiter;
  co_return io_void_result(res, "fallocate");
}

void IoUringBackend::enqueue(Op* op) {
  // Requests already waiting go first, so a steady stream of new ones cannot starve them.
  if (in_ring_ >= kQueueDepth || backlog_head_ != nullptr) {
    op->next = nullptr;
    if (backlog_tail_ != nullptr) {
      backlog_tail_->next = op;
    } else {
      backlog_head_ = op;
    }
    backlog_tail_ = op;
    return;
  }
  prepare(op);
}

void IoUringBackend::admit_backlog() {
  while (backlog_head_ != nullptr && in_ring_ < kQueueDepth) {
    Op* op = backlog_head_;
    backlog_head_ = op->next;
    if (backlog_head_ == nullptr) backlog_tail_ = nullptr;
    prepare(op);
  }
}

void IoUringBackend::prepare(Op* op) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The SQ holds kQueueDepth entries and in_ring_ never exceeds that, so this should not
    // happen; if it does, hand the queued entries to the kernel and retry.
    submit_queued();
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      op->next = backlog_head_;
      backlog_head_ = op;
      if (backlog_tail_ == nullptr) backlog_tail_ = op;
      post_submit();
      return;
    }
  }
  const auto count = [op] { return static_cast<unsigned>(op->iov->count()); };
  switch (op->kind) {
    case Op::Kind::kRead:
      io_uring_prep_readv2(sqe, op->fd, op->iov->iovecs().data(), count(), op->offset,
                           op->rw_flags);
      break;
    case Op::Kind::kWrite:
      io_uring_prep_writev2(sqe, op->fd, op->iov->iovecs().data(), count(), op->offset,
                            op->rw_flags);
      break;
    case Op::Kind::kFdatasync:
      io_uring_prep_fsync(sqe, op->fd, IORING_FSYNC_DATASYNC);
      break;
    case Op::Kind::kFallocate:
      io_uring_prep_fallocate(sqe, op->fd, op->fallocate_mode, static_cast<off_t>(op->offset),
                              static_cast<off_t>(op->len));
      break;
  }
  io_uring_sqe_set_data(sqe, op);
  ++in_ring_;
  ++unsubmitted_;
  post_submit();
}

void IoUringBackend::post_submit() {
  if (submit_posted_) return;
  submit_posted_ = true;
  asio::post(context_, [this] {
    submit_posted_ = false;
    submit();
  });
}

void IoUringBackend::submit() {
  submit_queued();
  // Requests the kernel could complete during the submission (page-cache hits on file systems
  // that support non-blocking reads) are already in the CQ: hand them back now rather than
  // after a trip through the eventfd.
  if (io_uring_cq_ready(&ring_) > 0) {
    reap();
  } else {
    arm();
  }
}

void IoUringBackend::submit_queued() {
  while (unsubmitted_ > 0) {
    int ret = io_uring_submit(&ring_);
    if (ret == -EINTR) continue;
    if (ret <= 0) {
      // EAGAIN/EBUSY: the kernel is short of memory or wants completions reaped first. Retry
      // after the next completions, or on the next loop turn if none are pending.
      if (in_ring_ == unsubmitted_) post_submit();
      return;
    }
    unsigned submitted = static_cast<unsigned>(ret);
    unsubmitted_ -= submitted < unsubmitted_ ? submitted : unsubmitted_;
  }
}

void IoUringBackend::arm() {
  if (armed_ || in_ring_ == unsubmitted_) return;  // nothing is in the kernel's hands
  armed_ = true;
  event_.async_wait(asio::posix::stream_descriptor::wait_read,
                    [this](const asio::error_code& ec) { on_event(ec); });
}

void IoUringBackend::on_event(const asio::error_code& ec) {
  // Aborted only when the descriptor is closed, i.e. this backend is being destroyed.
  if (ec == asio::error::operation_aborted) return;
  armed_ = false;
  reap();
}

void IoUringBackend::reap() {
  // Reset the eventfd before looking at the CQ: a completion posted after the look signals it
  // again and wakes the next wait.
  uint64_t signals = 0;
  [[maybe_unused]] ssize_t ignored = ::read(event_.native_handle(), &signals, sizeof signals);

  // Take the batch out of the member, so a coroutine resumed below could even reap again.
  std::vector<Completion> batch;
  batch.swap(completions_);
  batch.clear();
  unsigned head = 0;
  unsigned seen = 0;
  io_uring_cqe* cqe = nullptr;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    batch.push_back({static_cast<Op*>(io_uring_cqe_get_data(cqe)), cqe->res});
    ++seen;
  }
  io_uring_cq_advance(&ring_, seen);
  in_ring_ -= seen;
  admit_backlog();

  // Resume in the order the kernel completed the requests.
  for (const Completion& done : batch) {
    if (done.res == -EAGAIN || done.res == -EINTR) {
      enqueue(done.op);
      continue;
    }
    done.op->result = done.res;
    done.op->waiter.resume();
  }
  if (completions_.empty()) completions_.swap(batch);
  if (unsubmitted_ > 0) post_submit();
  arm();
}

}  // namespace strata
