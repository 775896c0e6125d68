// Image locks compatible with QEMU's file-posix driver.
//
// Processes that share an image file (Strata, qemu-img, qemu-io, QEMU itself) tell each other
// what they do with it through open-file-description (OFD) byte-range locks on the image:
//   byte 100 + i is read-locked while this open file uses permission bit i;
//   byte 200 + i is read-locked while this open file does not share permission bit i.
// Only shared (read) locks are ever taken. Before using permission i, a user checks that nobody
// holds 200 + i; before refusing to share i, it checks that nobody holds 100 + i. The checks
// probe with F_OFD_GETLK, which ignores locks held by the probing open file itself, so checks
// are made on the descriptor that already holds this node's locks.
//
// Thread safety: plain functions on a descriptor; callers serialise per node.
#pragma once

#include <string_view>

#include "strata/perm.h"
#include "strata/result.h"

namespace strata::file_lock {

constexpr int kPermBase = 100;
constexpr int kSharedBase = 200;

// Sets the lock bytes of `fd`: 100+i for each bit in `perm`, 200+i for each bit not in
// `shared`. With `unlock_rest`, every other byte of the layout is unlocked; without it, locks
// are only added (the prepare phase of a permission change holds the union of old and new).
// Errors: "Failed to lock byte <n>" / "Failed to unlock byte <n>" with the errno of fcntl.
Result<void> apply(int fd, Perm perm, Perm shared, bool unlock_rest);

// Checks that another open file of the image does not conflict with using `perm` and sharing
// only `shared`. Errors (EAGAIN), in QEMU's words:
//   Failed to get "write" lock
//   Failed to get shared "write" lock
// with the hint "Is another process using the image [<filename>]?".
Result<void> check(int fd, Perm perm, Perm shared, std::string_view filename);

// True if the file system supports OFD locks on `fd` (locking=auto uses them only then).
bool supported(int fd);

}  // namespace strata::file_lock
