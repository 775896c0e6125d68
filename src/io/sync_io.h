// Synchronous file system calls shared by the two FileIo backends.
//
// - within_iov_max cuts a request to what one system call takes (IOV_MAX buffers).
// - The blocking calls are what thread-pool workers run; they retry EINTR and return the
//   result or a negative errno, like an io_uring completion, so both backends turn results into
//   Errors the same way (io_count_result, io_void_result).
// - SyncFastPath is the attempt both backends make on the loop thread before going
//   asynchronous: a read or write that cannot wait for a device is done right away, because an
//   asynchronous round trip costs far more than the copy (on this kernel io_uring punts a
//   4 KiB tmpfs read to a worker thread: ~60 us, against ~1 us for the system call).
//
// Threading: the blocking calls are safe anywhere. A SyncFastPath belongs to one backend and is
// used only on its loop thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "strata/iovec.h"
#include "strata/result.h"

namespace strata {

// preadv2/pwritev2 with `rw_flags` (RWF_*); bytes transferred or -errno.
ssize_t blocking_preadv(int fd, std::span<const iovec> iov, uint64_t offset, int rw_flags);
ssize_t blocking_pwritev(int fd, std::span<const iovec> iov, uint64_t offset, int rw_flags);
// 0 or -errno.
int blocking_fdatasync(int fd);
int blocking_fallocate(int fd, int mode, uint64_t offset, uint64_t len);

// `iov` cut to its first IOV_MAX elements, the most one system call takes. The request then
// transfers less than asked, which callers handle like any other short count.
IoVec within_iov_max(IoVec iov);

// A byte count from `res` (>= 0), or an Error "<what>: <strerror>" carrying -res.
Result<size_t> io_count_result(ssize_t res, std::string_view what);
// Success when `res` is 0, else as above.
Result<void> io_void_result(int res, std::string_view what);

// Decides whether a buffered read or write can be done synchronously without blocking the
// loop, and does it if so.
//
// 1. preadv2/pwritev2 with RWF_NOWAIT: served from the page cache, or EAGAIN when it would wait.
//    Skipped for FUA writes: the flush that RWF_DSYNC adds may wait for the device.
// 2. If the file system does not support RWF_NOWAIT (EOPNOTSUPP) but the fd is a regular file
//    whose data lives in memory (tmpfs, ramfs), a plain call cannot wait for a device either,
//    so it is made directly. Such files are remembered by fd, device and inode, so the next
//    request on them costs one fstat() before the call instead of three extra system calls;
//    the fstat() catches an fd number that was closed and reused for another file.
// 3. Once a disk file system has answered EOPNOTSUPP, step 1 is no longer tried for that kind
//    of request by this backend: the kernel or file system does not support it, and trying
//    would only waste a system call per request.
class SyncFastPath {
 public:
  // The bytes read or -errno when the read was done synchronously (a short count is returned
  // as is); nullopt when the caller must go asynchronous.
  std::optional<ssize_t> try_preadv(int fd, const IoVec& iov, uint64_t offset);
  std::optional<ssize_t> try_pwritev(int fd, const IoVec& iov, uint64_t offset, bool fua);

  // The front both backends put before going asynchronous: an empty list is done at once, the
  // list is cut to IOV_MAX, and buffered (not `direct`) requests try the synchronous path. A
  // value means the request is finished; nullopt means submit `iov` (possibly cut) asynchronously.
  std::optional<Result<size_t>> start_preadv(int fd, IoVec& iov, uint64_t offset, bool direct);
  std::optional<Result<size_t>> start_pwritev(int fd, IoVec& iov, uint64_t offset, bool direct,
                                              bool fua);

  // Files registered by their owner (FileIo::register_file): checked once here, then trusted
  // without the per-request fstat() until forgotten.
  void register_file(int fd);
  void forget_file(int fd);

 private:
  using VectorCall = ssize_t (*)(int, std::span<const iovec>, uint64_t, int);
  struct MemoryFile {
    int fd;
    dev_t dev;
    ino_t ino;
  };
  static constexpr size_t kMaxMemoryFiles = 16;

  std::optional<ssize_t> try_sync(VectorCall call, bool& nowait, bool allow_nowait, int fd,
                                  const IoVec& iov, uint64_t offset, int rw_flags);
  // Whether `fd` is still the in-memory file remembered for it (forgetting it if not).
  bool is_known_memory_file(int fd);
  // Whether `fd` is a regular file on tmpfs/ramfs; remembers it if so.
  bool check_memory_file(int fd);

  bool read_nowait_ = true;
  bool write_nowait_ = true;
  std::vector<MemoryFile> memory_files_;  // most recently found last
  std::vector<int> registered_memory_fds_;
};

}  // namespace strata
