// FileIo: asynchronous positional I/O on file descriptors, the bottom of the request path.
//
// Two backends implement it: io_uring, and a thread pool of blocking system calls. Both try the
// operation synchronously first where that cannot block (preadv2/pwritev2 with RWF_NOWAIT, so a
// read the page cache can serve costs one system call, not an asynchronous round trip) and go
// asynchronous only when it would block. Completions always resume the awaiting coroutine on
// the event loop's thread.
//
// Results: a byte count (which may be short at end of file; callers loop) or an Error whose
// errno is the system call's. Buffers belong to the caller and must stay valid until the
// operation completes.
//
// Threading: call only from the owning EventLoop's thread.
#pragma once

#include <cstdint>
#include <string_view>

#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

// The `aio` option: which backend a file node uses.
enum class AioMode { kAuto, kIoUring, kThreads };
std::string_view aio_mode_name(AioMode mode);  // "io_uring", "threads", "auto"

class FileIo {
 public:
  virtual ~FileIo() = default;

  virtual AioMode mode() const = 0;

  // preadv(2) at `offset`; returns bytes read (0 at end of file). `direct` says the fd was
  // opened with O_DIRECT: no synchronous attempt is made then, since RWF_NOWAIT does not stop
  // direct I/O from waiting for the device.
  virtual Task<Result<size_t>> preadv(int fd, IoVec iov, uint64_t offset, bool direct) = 0;
  // pwritev(2) at `offset`; with `fua`, the data is durable on completion (RWF_DSYNC).
  virtual Task<Result<size_t>> pwritev(int fd, IoVec iov, uint64_t offset, bool direct,
                                       bool fua) = 0;
  // Declares that `fd` stays open on the same file until forget_file(fd). The backend may then
  // remember what it learns about the file once, instead of checking the descriptor on every
  // request (a file on tmpfs keeps its data in memory, so its transfers are done synchronously).
  virtual void register_file(int fd) = 0;
  virtual void forget_file(int fd) = 0;

  // fdatasync(2).
  virtual Task<Result<void>> fdatasync(int fd) = 0;
  // fallocate(2) with `mode` (FALLOC_FL_* bits).
  virtual Task<Result<void>> fallocate(int fd, int mode, uint64_t offset, uint64_t len) = 0;
};

}  // namespace strata
