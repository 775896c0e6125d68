// The Driver defaults (include/strata/driver.h) and the role-based permission rules.
#include "strata/driver.h"

#include <cerrno>

#include "strata/child.h"
#include "strata/node.h"

namespace strata {

std::string_view prealloc_mode_name(PreallocMode mode) {
  switch (mode) {
    case PreallocMode::kOff:
      return "off";
    case PreallocMode::kMetadata:
      return "metadata";
    case PreallocMode::kFalloc:
      return "falloc";
    case PreallocMode::kFull:
      return "full";
  }
  return "off";
}

Task<Result<void>> Driver::pwritev(uint64_t, uint64_t, IoVec, ReqFlags) {
  co_return fail(EROFS, "driver does not support writes");
}

Task<Result<void>> Driver::pwrite_zeroes(uint64_t, uint64_t, ReqFlags) {
  co_return fail(ENOTSUP, "driver does not support write-zeroes");
}

Task<Result<void>> Driver::pdiscard(uint64_t, uint64_t) {
  co_return fail(ENOTSUP, "driver does not support discard");
}

Task<Result<void>> Driver::flush() { co_return Result<void>{}; }

Task<Result<BlockStatus>> Driver::block_status(uint64_t, uint64_t bytes) {
  BlockStatus st;
  st.bytes = bytes;
  st.flags = BlockStatusFlags::kData;
  co_return st;
}

Task<Result<void>> Driver::truncate(uint64_t, bool, PreallocMode) {
  co_return fail(ENOTSUP, "Image format driver does not support resize");
}

Task<void> Driver::close() { co_return; }

ChildPerms Driver::child_perms(const Child& child, ChildRole role, Perm parent_perm,
                               Perm parent_shared) const {
  // The parent of `child` is the node this driver serves.
  Node* self = child.parent().as_node();
  bool writable = self != nullptr && !self->is_read_only();
  bool auto_read_only = self != nullptr && self->options().auto_read_only;
  return default_child_perms(role, parent_perm, parent_shared, writable, auto_read_only);
}

Task<Result<CheckResult>> Driver::check(CheckFix) {
  co_return fail(ENOTSUP, "This image format does not support checks");
}

Task<Result<void>> Driver::change_backing_file(std::string, std::string) {
  co_return fail(ENOTSUP, "This image format does not support changing the backing file");
}

Result<void> Driver::check_perm(Perm, Perm) { return {}; }
void Driver::set_perm(Perm, Perm) {}
void Driver::abort_perm_update() {}

Result<void> Driver::reopen_prepare(OptionReader&, const NodeOptions&) { return {}; }
void Driver::reopen_commit() {}
void Driver::reopen_abort() {}

namespace {

// A filtered child shows exactly the parent's data: whatever the parents need or allow passes
// through unchanged.
ChildPerms filtered_perms(Perm parent_perm, Perm parent_shared) {
  return {parent_perm & Perm::kAll, parent_shared & Perm::kAll};
}

// A backing file is only ever read, and only for a consistent view when a parent wants one. It
// may change underneath only if the parents tolerate changing data (they share WRITE).
ChildPerms cow_perms(Perm parent_perm, Perm parent_shared) {
  ChildPerms out;
  out.perm = parent_perm & Perm::kConsistentRead;
  out.shared = Perm::kConsistentRead | Perm::kWriteUnchanged;
  if (has_any(parent_shared, Perm::kWrite)) out.shared |= Perm::kWrite | Perm::kResize;
  return out;
}

// The child that stores the image: what the parents need, plus what the format itself needs.
ChildPerms storage_perms(ChildRole role, Perm parent_perm, Perm parent_shared, bool writable,
                         bool auto_read_only) {
  ChildPerms out = filtered_perms(parent_perm, parent_shared);
  if (has_role(role, ChildRole::kMetadata)) {
    // A writable format updates its metadata (headers, allocation tables) even when no parent
    // writes, and it cannot let anyone else change or resize the file under its tables. With
    // auto-read-only the format is writable only on demand: it claims write access below only
    // while someone above writes, so the storage underneath can stay read-only until then.
    bool writes_metadata = writable && (!auto_read_only || has_any(parent_perm, kWritePerms));
    if (writes_metadata) out.perm |= Perm::kWrite | Perm::kResize;
    out.perm |= Perm::kConsistentRead;
    out.shared &= ~(Perm::kWrite | Perm::kResize);
  }
  if (has_role(role, ChildRole::kData)) {
    // The format may assume the data file's size; an "unchanged" write at the guest level can
    // still mean a real write here (allocating a cluster), and writes may extend the file.
    out.shared &= ~Perm::kResize;
    if (has_any(out.perm, Perm::kWriteUnchanged)) out.perm |= Perm::kWrite;
    if (has_any(out.perm, Perm::kWrite)) out.perm |= Perm::kResize;
  }
  return out;
}

}  // namespace

ChildPerms default_child_perms(ChildRole role, Perm parent_perm, Perm parent_shared, bool writable,
                               bool auto_read_only) {
  if (has_role(role, ChildRole::kFiltered)) return filtered_perms(parent_perm, parent_shared);
  if (has_role(role, ChildRole::kCow)) return cow_perms(parent_perm, parent_shared);
  if (has_role(role, ChildRole::kData | ChildRole::kMetadata)) {
    return storage_perms(role, parent_perm, parent_shared, writable, auto_read_only);
  }
  // An edge without a storage role (PRIMARY alone, or none) carries no data: it needs nothing
  // and lets others do anything.
  return {};
}

}  // namespace strata
