#include "sync_io.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>

namespace strata {
namespace {

// Runs `call` until it is not interrupted by a signal; returns its result or -errno.
template <class Call>
auto retry_eintr(Call call) {
  for (;;) {
    auto res = call();
    if (res >= 0) return res;
    if (errno != EINTR) return static_cast<decltype(res)>(-errno);
  }
}

int iov_count(std::span<const iovec> iov) { return static_cast<int>(iov.size()); }

}  // namespace

ssize_t blocking_preadv(int fd, std::span<const iovec> iov, uint64_t offset, int rw_flags) {
  return retry_eintr([&] {
    return ::preadv2(fd, iov.data(), iov_count(iov), static_cast<off_t>(offset), rw_flags);
  });
}

ssize_t blocking_pwritev(int fd, std::span<const iovec> iov, uint64_t offset, int rw_flags) {
  return retry_eintr([&] {
    return ::pwritev2(fd, iov.data(), iov_count(iov), static_cast<off_t>(offset), rw_flags);
  });
}

int blocking_fdatasync(int fd) {
  return retry_eintr([&] { return ::fdatasync(fd); });
}

int blocking_fallocate(int fd, int mode, uint64_t offset, uint64_t len) {
  return retry_eintr(
      [&] { return ::fallocate(fd, mode, static_cast<off_t>(offset), static_cast<off_t>(len)); });
}

IoVec within_iov_max(IoVec iov) {
  if (iov.count() <= IOV_MAX) return iov;
  size_t bytes = 0;
  for (const iovec& v : iov.iovecs().first(IOV_MAX)) bytes += v.iov_len;
  return iov.slice(0, bytes);
}

Result<size_t> io_count_result(ssize_t res, std::string_view what) {
  if (res < 0) return errno_error(static_cast<int>(-res), what);
  return static_cast<size_t>(res);
}

Result<void> io_void_result(int res, std::string_view what) {
  if (res < 0) return errno_error(-res, what);
  return {};
}

std::optional<ssize_t> SyncFastPath::try_preadv(int fd, const IoVec& iov, uint64_t offset) {
  return try_sync(blocking_preadv, read_nowait_, true, fd, iov, offset, 0);
}

std::optional<ssize_t> SyncFastPath::try_pwritev(int fd, const IoVec& iov, uint64_t offset,
                                                 bool fua) {
  return try_sync(blocking_pwritev, write_nowait_, !fua, fd, iov, offset, fua ? RWF_DSYNC : 0);
}

std::optional<ssize_t> SyncFastPath::try_sync(VectorCall call, bool& nowait, bool allow_nowait,
                                              int fd, const IoVec& iov, uint64_t offset,
                                              int rw_flags) {
  if (std::find(registered_memory_fds_.begin(), registered_memory_fds_.end(), fd) !=
          registered_memory_fds_.end() ||
      is_known_memory_file(fd)) {
    return call(fd, iov.iovecs(), offset, rw_flags);
  }
  bool unsupported = false;
  if (nowait && allow_nowait) {
    ssize_t n = call(fd, iov.iovecs(), offset, rw_flags | RWF_NOWAIT);
    if (n > 0) return n;
    // EAGAIN (would block), 0 (end of file, or nothing cached) and real errors all go the
    // asynchronous way, which gives the authoritative answer.
    if (n != -EOPNOTSUPP) return std::nullopt;
    unsupported = true;
  }
  if (check_memory_file(fd)) return call(fd, iov.iovecs(), offset, rw_flags);
  if (unsupported) nowait = false;
  return std::nullopt;
}

std::optional<Result<size_t>> SyncFastPath::start_preadv(int fd, IoVec& iov, uint64_t offset,
                                                         bool direct) {
  if (iov.empty()) return Result<size_t>(size_t{0});
  iov = within_iov_max(std::move(iov));
  if (direct) return std::nullopt;
  std::optional<ssize_t> done = try_preadv(fd, iov, offset);
  if (!done) return std::nullopt;
  return io_count_result(*done, "preadv");
}

std::optional<Result<size_t>> SyncFastPath::start_pwritev(int fd, IoVec& iov, uint64_t offset,
                                                          bool direct, bool fua) {
  if (iov.empty()) return Result<size_t>(size_t{0});
  iov = within_iov_max(std::move(iov));
  if (direct) return std::nullopt;
  std::optional<ssize_t> done = try_pwritev(fd, iov, offset, fua);
  if (!done) return std::nullopt;
  return io_count_result(*done, "pwritev");
}

void SyncFastPath::register_file(int fd) {
  forget_file(fd);
  if (!check_memory_file(fd)) return;
  // check_memory_file remembered it for fstat() checks; the owner's promise replaces those.
  std::erase_if(memory_files_, [fd](const MemoryFile& m) { return m.fd == fd; });
  registered_memory_fds_.push_back(fd);
}

void SyncFastPath::forget_file(int fd) {
  std::erase(registered_memory_fds_, fd);
  std::erase_if(memory_files_, [fd](const MemoryFile& m) { return m.fd == fd; });
}

bool SyncFastPath::is_known_memory_file(int fd) {
  auto it = std::find_if(memory_files_.begin(), memory_files_.end(),
                         [fd](const MemoryFile& m) { return m.fd == fd; });
  if (it == memory_files_.end()) return false;
  struct stat st {};
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == it->dev && st.st_ino == it->ino)
    return true;
  memory_files_.erase(it);
  return false;
}

bool SyncFastPath::check_memory_file(int fd) {
  struct statfs fs {};
  if (fstatfs(fd, &fs) != 0) return false;
  if (fs.f_type != TMPFS_MAGIC && fs.f_type != RAMFS_MAGIC) return false;
  // A block device node in /dev reports devtmpfs, which calls itself tmpfs: its I/O goes to the
  // device. Only regular files keep their data in the file system itself.
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (memory_files_.size() == kMaxMemoryFiles) memory_files_.erase(memory_files_.begin());
  memory_files_.push_back({fd, st.st_dev, st.st_ino});
  return true;
}

}  // namespace strata
