#include "file_lock.h"

#include <fcntl.h>

#include <array>
#include <cerrno>

namespace strata::file_lock {
namespace {

constexpr std::array<Perm, 4> kBits{Perm::kConsistentRead, Perm::kWrite, Perm::kWriteUnchanged,
                                    Perm::kResize};

int byte_of(int base, Perm bit) { return base + __builtin_ctz(bits(bit)); }

// One byte, shared-locked or unlocked, on the open file description of `fd`.
int set_byte(int fd, int byte, bool lock) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  fl.l_type = lock ? F_RDLCK : F_UNLCK;
  return fcntl(fd, F_OFD_SETLK, &fl) == -1 ? errno : 0;
}

// True if another open file holds a lock on `byte` (probed with a write lock).
Result<bool> byte_taken(int fd, int byte) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  fl.l_type = F_WRLCK;
  if (fcntl(fd, F_OFD_GETLK, &fl) == -1) return errno_error(errno, "Failed to probe lock");
  return fl.l_type != F_UNLCK;
}

}  // namespace

Result<void> apply(int fd, Perm perm, Perm shared, bool unlock_rest) {
  for (Perm bit : kBits) {
    struct {
      int byte;
      bool want;
    } const slots[] = {{byte_of(kPermBase, bit), has_any(perm, bit)},
                       {byte_of(kSharedBase, bit), !has_any(shared, bit)}};
    for (const auto& slot : slots) {
      if (!slot.want && !unlock_rest) continue;
      if (int err = set_byte(fd, slot.byte, slot.want)) {
        return Error(err, fmt::format("Failed to {} byte {}", slot.want ? "lock" : "unlock",
                                      slot.byte));
      }
    }
  }
  return {};
}

Result<void> check(int fd, Perm perm, Perm shared, std::string_view filename) {
  auto conflict = [&](std::string_view what, Perm bit) {
    return fail(EAGAIN, "Failed to get {}\"{}\" lock", what, perm_names(bit))
        .with_hint(fmt::format("Is another process using the image [{}]?", filename));
  };
  // Using a permission conflicts with someone who does not share it (200 + i); QEMU checks all
  // of these first, so the first conflict reported is the same as QEMU's.
  for (Perm bit : kBits) {
    if (!has_any(perm, bit)) continue;
    auto taken = byte_taken(fd, byte_of(kSharedBase, bit));
    if (!taken) return taken.error();
    if (*taken) return conflict("", bit);
  }
  // Not sharing a permission conflicts with someone who uses it (100 + i).
  for (Perm bit : kBits) {
    if (has_any(shared, bit)) continue;
    auto taken = byte_taken(fd, byte_of(kPermBase, bit));
    if (!taken) return taken.error();
    if (*taken) return conflict("shared ", bit);
  }
  return {};
}

bool supported(int fd) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;
  fl.l_type = F_WRLCK;
  return fcntl(fd, F_OFD_GETLK, &fl) == 0;
}

}  // namespace strata::file_lock
