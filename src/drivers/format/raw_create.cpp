// raw image creation, as file-posix's raw_co_create does it for `qemu-img create -f raw`: the
// file is created or truncated to zero, then grown to the size (rounded up to 512 bytes) with
// the preallocation asked for: off (sparse), falloc (posix_fallocate) or full (zeroes written).
// The registry of creatable formats (strata/driver.h find_image_creator) lives here too.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "format/qcow2/qcow2_create.h"
#include "strata/driver.h"
#include "strata/result.h"

namespace strata {
namespace {

using Type = CreateOptionType;

// raw's own option, then file-posix's, in QEMU 7.2's order.
constexpr CreateOptionDesc kRawOptions[] = {
    {"size", Type::kSize, "Virtual disk size", ""},
    {"nocow", Type::kBool, "Turn off copy-on-write (valid only on btrfs)", ""},
    {"preallocation", Type::kString, "Preallocation mode (allowed values: off, falloc, full)", ""},
    {"extent_size_hint", Type::kSize, "Extent size hint for the image file, 0 to disable", ""},
};

Result<void> write_zeroes(int fd, uint64_t from, uint64_t to) {
  const std::vector<char> zeroes(1 << 20, 0);
  while (from < to) {
    const ssize_t n =
        ::pwrite(fd, zeroes.data(), std::min<uint64_t>(zeroes.size(), to - from), off_t(from));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errno_error(n < 0 ? errno : EIO, "Could not write zeros for preallocation");
    from += uint64_t(n);
  }
  return {};
}

Result<void> grow(int fd, uint64_t size, PreallocMode mode) {
  switch (mode) {
    case PreallocMode::kFalloc:
      if (size > 0) {
        const int err = ::posix_fallocate(fd, 0, off_t(size));
        if (err != 0) return errno_error(err, "Could not preallocate new data");
      }
      return {};
    case PreallocMode::kFull: {
      if (::ftruncate(fd, off_t(size)) != 0) return errno_error(errno, "Could not resize file");
      return write_zeroes(fd, 0, size);
    }
    default:
      if (::ftruncate(fd, off_t(size)) != 0) return errno_error(errno, "Could not resize file");
      return {};
  }
}

Result<void> create_raw(const std::string& filename, const CreateOptionValues& values) {
  uint64_t size = 0;
  if (auto it = values.find("size"); it != values.end()) {
    size = std::strtoull(it->second.c_str(), nullptr, 10);
  }
  size = (size + 511) / 512 * 512;
  PreallocMode mode = PreallocMode::kOff;
  if (auto it = values.find("preallocation"); it != values.end()) {
    bool known = false;
    for (PreallocMode m : {PreallocMode::kOff, PreallocMode::kMetadata, PreallocMode::kFalloc,
                           PreallocMode::kFull}) {
      if (prealloc_mode_name(m) == it->second) mode = m, known = true;
    }
    if (!known) return fail(EINVAL, "invalid parameter value: {}", it->second);
  }
  const int fd = ::open(filename.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error(errno, fmt::format("Could not create '{}'", filename));
  Result<void> r;
  if (::ftruncate(fd, 0) != 0) {
    r = errno_error(errno, "Could not resize file");
  } else if (mode == PreallocMode::kMetadata) {
    // file-posix refuses it only when growing the new (now empty) file, which then stays.
    r = fail(ENOTSUP, "Unsupported preallocation mode: {}", prealloc_mode_name(mode));
  } else {
    r = grow(fd, size, mode);
  }
  if (r && ::fsync(fd) != 0) r = errno_error(errno, "Could not flush file");
  ::close(fd);
  return r;
}

const ImageCreator kRawCreator = {"raw", kRawOptions, 1, false, create_raw};

}  // namespace

const ImageCreator* find_image_creator(std::string_view format) {
  for (const ImageCreator* c : {&kRawCreator, &qcow2::kQcow2Creator}) {
    if (c->format == format) return c;
  }
  return nullptr;
}

std::optional<bool> parse_create_bool(std::string_view text) {
  if (text == "on" || text == "yes" || text == "true" || text == "y") return true;
  if (text == "off" || text == "no" || text == "false" || text == "n") return false;
  return std::nullopt;
}

}  // namespace strata
