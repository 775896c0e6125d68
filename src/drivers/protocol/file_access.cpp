#include "protocol/file_access.h"

#include <fcntl.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <utility>

#include "protocol/file_lock.h"

namespace strata::drivers {

AccessPolicy access_policy(bool read_only, bool auto_read_only) {
  if (read_only) return AccessPolicy::kReadOnly;
  return auto_read_only ? AccessPolicy::kAutoReadOnly : AccessPolicy::kReadWrite;
}

bool wants_read_write(AccessPolicy policy, Perm perm) {
  switch (policy) {
    case AccessPolicy::kReadOnly:
      return false;
    case AccessPolicy::kReadWrite:
      return true;
    case AccessPolicy::kAutoReadOnly:
      return has_any(perm, kWritePerms);
  }
  return false;
}

FileAccess::FileAccess(UniqueFd fd, bool read_write, Config config)
    : fd_(std::move(fd)), read_write_(read_write), config_(std::move(config)) {}

namespace {

// The errors that mean "this storage does not let us write" rather than "something broke".
bool refuses_writes(int err) { return err == EACCES || err == EPERM || err == EROFS; }

}  // namespace

Error FileAccess::refused_write_access(Error cause) const {
  if (!refuses_writes(cause.err())) return cause;
  // QEMU only reports the open error here; naming the node, the option and the cause tells the
  // user why a node that is not read-only refuses a writer.
  return std::move(cause).prefixed(
      fmt::format("Block node '{}' is read-only because of auto-read-only=on and its storage "
                  "refuses write access",
                  config_.node_name));
}

Result<std::optional<UniqueFd>> FileAccess::open_switched(bool read_write, bool direct,
                                                          AccessPolicy policy) const {
  const bool auto_read_only = policy == AccessPolicy::kAutoReadOnly;
  auto fd = open_image(config_.filename, read_write, direct);
  if (!fd) {
    // Losing write access late only costs the least privilege; keeping the read-write
    // descriptor is safe (the core refuses writes the permissions do not allow). A new
    // O_DIRECT flag cannot be kept that way.
    if (!read_write && direct == config_.direct) return std::optional<UniqueFd>();
    if (!read_write || !auto_read_only || !refuses_writes(fd.error().err())) return fd.error();
    return refused_write_access(errno_error(
        fd.error().err(), fmt::format("Could not open '{}' read-write", config_.filename)));
  }
  if (read_write) {
    auto writable = check_device_writable(fd->get(), config_.kind);
    if (!writable) {
      return auto_read_only ? refused_write_access(writable.error()) : writable.error();
    }
  }
  return std::optional<UniqueFd>(std::move(*fd));
}

Result<void> FileAccess::prepare(Perm perm, Perm shared, AccessPolicy policy, bool direct) {
  assert(!pending_);
  Pending next{perm, shared, UniqueFd(), read_write_, config_.direct};
  bool want_read_write = wants_read_write(policy, perm);
  if (want_read_write != read_write_ || direct != config_.direct) {
    // Opened before any lock changes, so that a refusal leaves nothing to undo. O_DIRECT is
    // not one of the flags F_SETFL may change on a shared open file, so it takes an open too.
    auto fd = open_switched(want_read_write, direct, policy);
    if (!fd) return fd.error();
    if (*fd) {
      next.fd = std::move(**fd);
      next.read_write = want_read_write;
      next.direct = direct;
    }
  }
  if (config_.locking) {
    // Checked on the current descriptor before the new one holds anything: F_OFD_GETLK ignores
    // only the probing open file's own locks, so locks on the new descriptor would conflict
    // with the node itself.
    auto locked = prepare_locks(perm, shared);
    if (!locked) return locked;
    if (next.fd) {
      auto copied = file_lock::apply(next.fd.get(), perm_ | perm, shared_ & shared, false);
      if (!copied) {
        restore_locks();
        return copied;
      }
    }
  }
  pending_ = std::move(next);
  return {};
}

Result<void> FileAccess::prepare_locks(Perm perm, Perm shared) {
  // Only loosening (using less, sharing more): there is nothing to lock or check, and the
  // change must not fail for a conflict that another process created meanwhile (QEMU too).
  if ((perm_ | perm) == perm_ && (shared_ & shared) == shared_) return {};
  auto r = file_lock::apply(fd_.get(), perm_ | perm, shared_ & shared, false);
  if (r) r = file_lock::check(fd_.get(), perm, shared, config_.filename);
  if (!r) restore_locks();
  return r;
}

void FileAccess::restore_locks() {
  if (config_.locking) (void)file_lock::apply(fd_.get(), perm_, shared_, true);
}

void FileAccess::commit() {
  assert(pending_);
  Pending next = std::move(*pending_);
  pending_.reset();
  if (next.fd) {
    replace_descriptor(std::move(next.fd));
    read_write_ = next.read_write;
    config_.direct = next.direct;
  }
  perm_ = next.perm;
  shared_ = next.shared;
  // Only unlocking remains, which cannot conflict; QEMU ignores errors here too.
  restore_locks();
}

void FileAccess::abort() {
  if (!pending_) return;
  pending_.reset();  // closes a new descriptor, and with it its copy of the locks
  restore_locks();
}

void FileAccess::replace_descriptor(UniqueFd next) {
  // The new open file takes over the old descriptor's number: a request that the thread pool
  // has queued with that number reaches the same image through the new open file, and the
  // number cannot be reused by an unrelated open before it runs. dup3 closes the old open file
  // (and drops its locks) once no system call is using it; `next` then closes its own number.
  // EBUSY (a race with open(2) in another thread) and EINTR are transient; after a few tries
  // the new descriptor simply replaces the old one under its own number.
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (::dup3(next.get(), fd_.get(), O_CLOEXEC) >= 0) return;
    if (errno != EINTR && errno != EBUSY) break;
  }
  fd_ = std::move(next);
}

}  // namespace strata::drivers
