// FilterDriver: the pass-through base for drivers whose node shows exactly the data of one
// child, called `file` (throttle, copy-on-read, fault-inject, raw without offset/size).
//
// Every operation is forwarded unchanged to the `file` child, and the node's size and limits
// are the child's, so a filter that changes nothing is just this class. A filter overrides
// only what it changes (e.g. fault-inject overrides preadv to fail the Nth read and calls
// FilterDriver::preadv otherwise). Two things are deliberately not forwarded:
//   - flush: the core flushes children after their parent, so forwarding would flush twice;
//   - close: the child is closed by the core, after this node.
// block_status answers kRaw at the same offset, so the core asks the child; child_perms is the
// role-based default, which passes a FILTERED child the parents' perm and shared unchanged.
//
// A filter opens its child with role kFiltered | kPrimary. A driver that derives from this base
// only to reuse the forwarding (raw with offset/size, which shifts every request) opens it with
// the role that fits and overrides everything it changes. The child outlives the driver (the
// core closes a node before its children).
//
// Threading: event loop thread only, like every Driver.
#pragma once

#include <cstdint>

#include "strata/child.h"
#include "strata/driver.h"
#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class FilterDriver : public Driver {
 public:
  uint64_t length() const override;
  NodeLimits limits() const override;

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override;
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc) override;

 protected:
  // REQUIRES: `file` is this node's `file` edge.
  explicit FilterDriver(Child& file) : file_(&file) {}

  Child& file() const { return *file_; }

 private:
  Child* file_;
};

}  // namespace strata
