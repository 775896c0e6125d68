// FileAccess: what a file node holds on its image, kept consistent through permission
// transactions: the descriptor, its open mode (read-only or read-write, with or without
// O_DIRECT) and the node's QEMU-compatible image locks (file_lock.h).
//
// A permission transaction (driver.h: check_perm, then set_perm or abort_perm_update) maps to
// prepare(), then commit() or abort(), in QEMU's phases (raw_check_perm, raw_handle_perm_lock):
//   prepare  locks the union of the old and the new lock bytes on the current descriptor and
//            checks the new (perm, shared) against other open files of the image. When the
//            open mode must change (auto-read-only: the first writer arrives or the last one
//            leaves; a reopen turns cache.direct on or off) it opens a second descriptor with the
//            new mode and puts the union of the locks on it as well, so that at no moment
//            neither descriptor holds them.
//   commit   makes the new descriptor current (the old one is closed) and holds exactly the new
//            lock bytes.
//   abort    closes the new descriptor and holds exactly the old lock bytes again.
// A node with no parents holds no locks; its first permission refresh takes them. Destroying
// the FileAccess closes the descriptor, which releases every lock.
//
// Threading: the owning node's event loop thread.
#pragma once

#include <optional>
#include <string>

#include "protocol/file_sys.h"
#include "strata/perm.h"
#include "strata/result.h"

namespace strata::drivers {

// Which access mode a node wants, from its read-only and auto-read-only options.
enum class AccessPolicy {
  kReadOnly,      // read-only=on: always O_RDONLY
  kReadWrite,     // read-only=off: always O_RDWR
  kAutoReadOnly,  // read-only=off, auto-read-only=on: O_RDWR only while a parent writes
};

AccessPolicy access_policy(bool read_only, bool auto_read_only);

// The access mode a node with `policy` needs while its parents hold `perm`.
bool wants_read_write(AccessPolicy policy, Perm perm);

class FileAccess {
 public:
  struct Config {
    std::string filename;
    std::string node_name;  // names the node in auto-read-only errors
    FileKind kind = FileKind::kRegular;
    bool direct = false;   // O_DIRECT at construction; prepare() may change it
    bool locking = false;  // take image locks (locking=on, or auto where OFD locks work)
  };

  FileAccess() = default;
  // `read_write` says how `fd` was opened.
  FileAccess(UniqueFd fd, bool read_write, Config config);

  int fd() const { return fd_.get(); }
  bool read_write() const { return read_write_; }
  // Whether fd() was opened with O_DIRECT.
  bool direct() const { return config_.direct; }
  const Config& config() const { return config_; }
  // The descriptor a pending prepare() opened to switch to, or -1 when it keeps fd(). It holds
  // the image locks already; the caller may read from it (O_DIRECT alignment probing).
  int staged_fd() const { return pending_ ? pending_->fd.get() : -1; }

  // Prepares for the node's permissions to become (perm, shared) under `policy`, on a
  // descriptor opened with O_DIRECT if `direct`. On error nothing has changed: the descriptor
  // and the lock bytes are as before.
  // REQUIRES: no prepare is pending.
  // Errors:
  //   EAGAIN  a lock conflict, in QEMU's words (file_lock::check), with its hint;
  //   EACCES, EPERM, EROFS  auto-read-only cannot get write access: "Block node '<node>' is
  //           read-only because of auto-read-only=on and its storage refuses write access:
  //           Could not open '<file>' read-write: <strerror>" (or "...: The device is not
  //           writable: Permission denied" for a block device set read-only);
  //   other   the failed open(2) or fcntl(2), with its errno: "Could not open '<file>':
  //           <strerror>" (EINVAL where the file system refuses O_DIRECT).
  // Dropping write access alone is never an error: if the read-only open fails, the node keeps
  // its read-write descriptor (and tries again at the next permission change). When `direct`
  // changes too, the old descriptor cannot serve, so the failure is returned.
  [[nodiscard]] Result<void> prepare(Perm perm, Perm shared, AccessPolicy policy, bool direct);
  // Applies what prepare() staged. REQUIRES: a prepare is pending.
  void commit();
  // Drops what prepare() staged; does nothing when no prepare is pending.
  void abort();

 private:
  struct Pending {
    Perm perm = Perm::kNone;
    Perm shared = Perm::kAll;
    UniqueFd fd;  // the descriptor to switch to, when the open mode changes
    bool read_write = false;
    bool direct = false;
  };
  // A descriptor of the image opened with a new mode, or nullopt when only dropping write
  // access fails (which is not an error, see prepare()).
  Result<std::optional<UniqueFd>> open_switched(bool read_write, bool direct,
                                                AccessPolicy policy) const;
  // The auto-read-only error for `cause` when it means the storage refuses write access.
  Error refused_write_access(Error cause) const;
  // Locks the union of the held and the new bytes on the current descriptor and checks the new
  // set; on failure puts the held set back.
  Result<void> prepare_locks(Perm perm, Perm shared);
  // Holds exactly the committed lock bytes on the current descriptor (errors are ignored: only
  // unlocking can happen, which cannot conflict).
  void restore_locks();
  void replace_descriptor(UniqueFd next);

  UniqueFd fd_;
  bool read_write_ = false;
  Config config_;
  // The committed permissions, whose lock bytes the descriptor holds (none until the first
  // refresh: kNone uses nothing and kAll refuses nothing).
  Perm perm_ = Perm::kNone;
  Perm shared_ = Perm::kAll;
  std::optional<Pending> pending_;
};

}  // namespace strata::drivers
