#include "protocol/file_sys.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>

#include "strata/align.h"

namespace strata::drivers {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void UniqueFd::reset() {
  // close(2) is not retried on EINTR: on Linux the descriptor is gone either way.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Result<UniqueFd> open_image(const std::string& filename, bool writable, bool direct) {
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  if (direct) flags |= O_DIRECT;
  int fd;
  do {
    fd = ::open(filename.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno_error(errno, fmt::format("Could not open '{}'", filename));
  return UniqueFd(fd);
}

Result<FileKind> file_kind(int fd, std::string_view filename) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error(errno, "Could not stat file");
  if (S_ISREG(st.st_mode)) return FileKind::kRegular;
  if (S_ISBLK(st.st_mode)) return FileKind::kBlockDevice;
  // QEMU's text; unlike QEMU's 'file', Strata's also takes block devices (its host_device).
  return fail(EINVAL, "'file' driver requires '{}' to be a regular file", filename);
}

Result<uint64_t> file_length(int fd, FileKind kind) {
  if (kind == FileKind::kBlockDevice) {
    uint64_t bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &bytes) != 0) {
      return errno_error(errno, "Could not get the device size");
    }
    return bytes;
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error(errno, "Could not stat file");
  return static_cast<uint64_t>(st.st_size);
}

Result<void> check_device_writable(int fd, FileKind kind) {
  if (kind != FileKind::kBlockDevice) return {};
  int read_only = 0;
  if (::ioctl(fd, BLKROGET, &read_only) != 0) {
    return errno_error(errno, "The device is not writable");
  }
  if (read_only) return errno_error(EACCES, "The device is not writable");
  return {};
}

Result<uint32_t> logical_block_size(int fd) {
  int size = 0;
  if (::ioctl(fd, BLKSSZGET, &size) != 0) {
    return errno_error(errno, "Could not get the logical block size");
  }
  if (size <= 0 || !is_power_of_2(static_cast<uint64_t>(size))) {
    return fail(EINVAL, "Invalid logical block size {}", size);
  }
  return static_cast<uint32_t>(size);
}

namespace {

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

bool plausible_alignment(uint32_t a) { return is_power_of_2(a) && a <= 1024 * 1024; }

// statx(STATX_DIOALIGN), Linux 6.1+: what the file system itself says. {0, 0} if unknown.
DirectAlignment statx_alignment(int fd) {
#ifdef STATX_DIOALIGN
  struct statx stx = {};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) != 0 && plausible_alignment(stx.stx_dio_offset_align) &&
      plausible_alignment(stx.stx_dio_mem_align)) {
    return {stx.stx_dio_offset_align, stx.stx_dio_mem_align};
  }
#else
  (void)fd;
#endif
  return {};
}

}  // namespace

DirectAlignment find_direct_alignment(int fd, FileKind kind) {
  DirectAlignment from_statx = statx_alignment(fd);
  if (from_statx.request != 0) return from_statx;

  constexpr size_t kBuf = 8192;
  std::unique_ptr<char, FreeDeleter> buf(static_cast<char*>(std::aligned_alloc(4096, kBuf)));
  auto read_ok = [fd](char* p, size_t len) {
    ssize_t r;
    do {
      r = ::pread(fd, p, len, 0);
    } while (r < 0 && errno == EINTR);
    // Only EINVAL means "misaligned"; another error (a failing disk) says nothing about it.
    return r >= 0 || errno != EINVAL;
  };
  DirectAlignment probed = probe_direct_alignment(read_ok, buf.get());
  if (kind == FileKind::kBlockDevice) {
    auto lbs = logical_block_size(fd);
    if (lbs) probed.request = *lbs;
  }
  return probed;
}

Result<void> block_device_zero_out(int fd, uint64_t offset, uint64_t len) {
  uint64_t range[2] = {offset, len};
  if (::ioctl(fd, BLKZEROOUT, range) != 0) return errno_error(errno, "BLKZEROOUT");
  return {};
}

Result<void> block_device_discard(int fd, uint64_t offset, uint64_t len) {
  uint64_t range[2] = {offset, len};
  if (::ioctl(fd, BLKDISCARD, range) != 0) return errno_error(errno, "BLKDISCARD");
  return {};
}

Result<void> truncate_fd(int fd, uint64_t size, std::string_view what) {
  int r;
  do {
    r = ::ftruncate(fd, static_cast<off_t>(size));
  } while (r != 0 && errno == EINTR);
  if (r != 0) return errno_error(errno, what);
  return {};
}

Extent find_extent(int fd, uint64_t offset, uint64_t length) {
  off_t data = ::lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
  if (data < 0) {
    // ENXIO: no data at or after offset, so a hole runs to the end of the file.
    if (errno == ENXIO) return {Extent::Kind::kHole, length};
    return {};
  }
  if (static_cast<uint64_t>(data) > offset) return {Extent::Kind::kHole, uint64_t(data)};
  off_t hole = ::lseek(fd, static_cast<off_t>(offset), SEEK_HOLE);
  if (hole < 0 || static_cast<uint64_t>(hole) <= offset) return {};
  return {Extent::Kind::kData, static_cast<uint64_t>(hole)};
}

}  // namespace strata::drivers
