// The host side of the file driver: the blocking system calls it makes outside the I/O path
// (open, stat, size, O_DIRECT alignment, block-device ioctls). Data transfers go through FileIo;
// what is here is either done once at open or is quick metadata work.
//
// Threading: plain functions; the file driver calls them on the event loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "strata/result.h"

namespace strata::drivers {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

// What a file node's storage is. Character devices, directories and the like are refused.
enum class FileKind { kRegular, kBlockDevice };

// Opens `filename` read-write or read-only, with O_DIRECT when `direct`, always O_CLOEXEC.
// Errors keep the errno and use QEMU's text: "Could not open '<filename>': <strerror>".
[[nodiscard]] Result<UniqueFd> open_image(const std::string& filename, bool writable, bool direct);

// The kind of file behind `fd`. Errors: "'file' driver requires '<filename>' to be a regular
// file" (EINVAL) for anything that is neither a regular file nor a block device.
[[nodiscard]] Result<FileKind> file_kind(int fd, std::string_view filename);

// The current size in bytes: st_size for a regular file, BLKGETSIZE64 for a block device.
[[nodiscard]] Result<uint64_t> file_length(int fd, FileKind kind);

// Fails with "The device is not writable: Permission denied" (EACCES) for a block device that
// is set read-only (blockdev --setro); open(2) with O_RDWR succeeds on those, writes do not.
[[nodiscard]] Result<void> check_device_writable(int fd, FileKind kind);

// A block device's logical block size (BLKSSZGET), the unit of its zeroing and discard ioctls.
[[nodiscard]] Result<uint32_t> logical_block_size(int fd);

// The alignments O_DIRECT requests on `fd` must keep.
struct DirectAlignment {
  uint32_t request = 0;  // offsets and lengths
  uint32_t memory = 0;   // buffer addresses
};

// Finds out the O_DIRECT alignments of `fd`, best source first: statx(STATX_DIOALIGN) where the
// kernel and file system report them; for a block device its logical block size; probing reads
// of 512 and 4096 bytes; and 4096, which every Linux direct I/O path accepts, where nothing
// answers. Both results are powers of two.
[[nodiscard]] DirectAlignment find_direct_alignment(int fd, FileKind kind);

// The probing step of find_direct_alignment, with the read injected so that tests can play a
// device. `read_ok(buf, len)` reads `len` bytes at offset 0 into `buf` and says whether the
// kernel accepted the request's alignment (a read refused with EINVAL did not).
template <class ReadOk>
DirectAlignment probe_direct_alignment(ReadOk read_ok, char* buf4k_aligned_8k);

// The zeroing and discard ioctls of a block device, for kernels without fallocate(2) on block
// devices. REQUIRES: offset and len are multiples of the logical block size.
[[nodiscard]] Result<void> block_device_zero_out(int fd, uint64_t offset, uint64_t len);
[[nodiscard]] Result<void> block_device_discard(int fd, uint64_t offset, uint64_t len);

// ftruncate(2), retried on EINTR; the error is "<what>: <strerror>".
[[nodiscard]] Result<void> truncate_fd(int fd, uint64_t size, std::string_view what);

// The extent of [offset, ...) as lseek(SEEK_DATA/SEEK_HOLE) sees it.
struct Extent {
  enum class Kind { kData, kHole, kUnknown } kind = Kind::kUnknown;
  uint64_t end = 0;  // first byte after the extent (kData, kHole)
};
// kHole to `length` when no data follows `offset` (ENXIO from SEEK_DATA: a trailing hole);
// kUnknown when the file system cannot say (the caller reports data).
[[nodiscard]] Extent find_extent(int fd, uint64_t offset, uint64_t length);

// ---- implementation of the template above ----

template <class ReadOk>
DirectAlignment probe_direct_alignment(ReadOk read_ok, char* buf) {
  constexpr uint32_t kSafe = 4096;
  // A one-byte read that succeeds says nothing (reads of holes or at end of file can succeed
  // whatever their shape on some file systems), so fall back to the safe value then.
  if (read_ok(buf, 1)) return {kSafe, kSafe};
  DirectAlignment a;
  for (uint32_t align : {512u, kSafe}) {
    if (read_ok(buf, align)) {
      a.request = align;
      break;
    }
  }
  if (a.request == 0) return {kSafe, kSafe};
  a.memory = read_ok(buf + 512, a.request) ? 512 : kSafe;
  return a;
}

}  // namespace strata::drivers
