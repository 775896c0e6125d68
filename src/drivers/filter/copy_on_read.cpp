// The `copy-on-read` filter (QEMU's block/copy-on-read.c): reads pass through to the `file`
// child, and whatever part of a read the file node does not hold itself but its backing chain
// does is written into the file node after it was read, so the next read finds it there. The
// stream job puts one above the node it fills and reads through it.
//
// Options:
//   file    the filtered child (BlockdevRef), opened with role FILTERED|PRIMARY.
//   bottom  a node-name in the file node's backing chain (not a filter): only data allocated in
//           the chain down to and including bottom is copied. The links from this node down to
//           bottom are frozen while the filter exists. Absent: the whole chain counts.
//
// Permissions (QEMU's cor_child_perm): the parents' CONSISTENT_READ, WRITE and RESIZE pass
// through; the filter always takes WRITE_UNCHANGED for its copies and always shares it. So a
// copy-on-read filter cannot sit on a read-only node ("Block node is read-only").
//
// Concurrency: a copy reads the backing data and then writes it into the file node. A guest
// write through this filter landing between the two would be overwritten with the older
// backing data. The filter therefore keeps a range lock: a copy and a write-class request
// (write, write-zeroes, discard, truncate) whose ranges overlap never run at the same time, and
// neither do two overlapping copies; the younger waits for the older, so waits cannot form a
// cycle. Plain reads and non-overlapping requests are not held up. The lock lives here rather
// than in the core's request tracker (QEMU marks COPY_ON_READ requests serialising in its
// core) because while the filter exists every writer of the file node reaches it through this
// filter: the stream job moves every other parent above it.
//
// Threading: event loop thread only, like every Driver.
#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/filter.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::drivers {
namespace {

constexpr Perm kPassThrough = Perm::kConsistentRead | Perm::kWrite | Perm::kResize;

// The next node down a chain: a filter's filtered child, else the backing child.
Child* chain_link(const Node& node) {
  for (Child* c : node.children()) {
    if (has_role(c->role(), ChildRole::kFiltered)) return c;
  }
  return node.child("backing");
}

Node* next_in_chain(const Node& node) {
  Child* link = chain_link(node);
  return link != nullptr ? &link->node() : nullptr;
}

// Whether a prefix of [offset, offset + bytes) is allocated in the chain from `top` down to and
// including `bottom` (nullptr: the whole chain); QEMU's bdrv_is_allocated_above with
// include_base. Filters are looked through. The answer holds for `bytes` bytes.
struct Allocation {
  bool allocated = false;
  uint64_t bytes = 0;
};

Task<Result<Allocation>> allocated_above(Node* top, Node* bottom, uint64_t offset, uint64_t bytes) {
  Allocation out{false, bytes};
  for (Node* layer = top; layer != nullptr; layer = next_in_chain(*layer)) {
    bool is_filter = false;
    for (Child* c : layer->children()) is_filter |= has_role(c->role(), ChildRole::kFiltered);
    if (!is_filter) {
      // A layer that ends before the range holds nothing there.
      if (offset >= layer->size()) {
        if (layer == bottom) break;
        continue;
      }
      auto query = layer->block_status(offset, out.bytes);
      auto st = co_await query;
      if (!st) co_return st.error();
      out.bytes = std::min(out.bytes, st->bytes);
      if (has_flag(st->flags, BlockStatusFlags::kAllocated)) {
        out.allocated = true;
        co_return out;
      }
    }
    if (layer == bottom) break;
  }
  co_return out;
}

// One entry of the range lock: a copy (`copy`) or a write-class request in flight.
struct LockedRange {
  uint64_t offset = 0;
  uint64_t end = 0;
  bool copy = false;
  std::vector<std::coroutine_handle<>> waiters;  // younger entries waiting for this one
};

class CopyOnReadDriver final : public FilterDriver {
 public:
  CopyOnReadDriver(Child& file, EventLoop& loop, Node* bottom, std::vector<Child*> frozen)
      : FilterDriver(file), loop_(&loop), bottom_(bottom), frozen_(std::move(frozen)) {}

  ChildPerms child_perms(const Child&, ChildRole, Perm parent_perm,
                         Perm parent_shared) const override {
    return {(parent_perm & kPassThrough) | Perm::kWriteUnchanged,
            (parent_shared & kPassThrough) | Perm::kWriteUnchanged};
  }

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    auto locked = lock(offset, bytes, false);
    auto entry = co_await locked;
    auto task = FilterDriver::pwritev(offset, bytes, std::move(iov), flags);
    auto result = co_await task;
    unlock(entry);
    co_return result;
  }
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override {
    auto locked = lock(offset, bytes, false);
    auto entry = co_await locked;
    auto task = FilterDriver::pwrite_zeroes(offset, bytes, flags);
    auto result = co_await task;
    unlock(entry);
    co_return result;
  }
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override {
    auto locked = lock(offset, bytes, false);
    auto entry = co_await locked;
    auto task = FilterDriver::pdiscard(offset, bytes);
    auto result = co_await task;
    unlock(entry);
    co_return result;
  }
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc) override {
    auto locked = lock(0, Node::kMaxLength, false);
    auto entry = co_await locked;
    auto task = FilterDriver::truncate(size, exact, prealloc);
    auto result = co_await task;
    unlock(entry);
    co_return result;
  }

  // QEMU's cor_close: the chain down to bottom is free again.
  Task<void> close() override {
    for (Child* link : frozen_) link->set_frozen(false);
    frozen_.clear();
    co_return;
  }

 private:
  using Entry = std::list<LockedRange>::iterator;
  class WaitFor;

  Task<Entry> lock(uint64_t offset, uint64_t bytes, bool copy);
  void unlock(Entry entry);
  Task<Result<void>> read_chunk(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags,
                                uint64_t* done);

  EventLoop* loop_;
  Node* bottom_;
  std::vector<Child*> frozen_;
  std::list<LockedRange> ranges_;  // oldest first
};

// Suspends a coroutine until `entry` is unlocked.
class CopyOnReadDriver::WaitFor {
 public:
  explicit WaitFor(LockedRange& entry) : entry_(&entry) {}
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { entry_->waiters.push_back(h); }
  void await_resume() const noexcept {}

 private:
  LockedRange* entry_;
};

// Registers the range, then waits for every older conflicting entry that overlaps it: a copy
// conflicts with everything, a write only with copies.
Task<CopyOnReadDriver::Entry> CopyOnReadDriver::lock(uint64_t offset, uint64_t bytes, bool copy) {
  Entry self = ranges_.insert(ranges_.end(), LockedRange{offset, offset + bytes, copy, {}});
  while (true) {
    LockedRange* blocker = nullptr;
    for (Entry it = ranges_.begin(); it != self; ++it) {
      bool conflicts = copy || it->copy;
      if (conflicts && it->offset < self->end && offset < it->end) {
        blocker = &*it;
        break;
      }
    }
    if (blocker == nullptr) co_return self;
    co_await WaitFor(*blocker);
  }
}

void CopyOnReadDriver::unlock(Entry entry) {
  for (std::coroutine_handle<> h : entry->waiters) loop_->post([h] { h.resume(); });
  ranges_.erase(entry);
}

// QEMU's cor_co_preadv_part: the read is taken apart by allocation. Ranges the file node holds
// are read plainly; the rest is read, and copied up when the chain down to bottom holds it.
Task<Result<void>> CopyOnReadDriver::preadv(uint64_t offset, uint64_t bytes, IoVec iov,
                                            ReqFlags flags) {
  uint64_t pos = 0;
  while (pos < bytes) {
    uint64_t done = 0;
    auto chunk = read_chunk(offset + pos, bytes - pos, iov.slice(pos, bytes - pos), flags, &done);
    auto result = co_await chunk;
    if (!result) co_return result;
    pos += done;
  }
  co_return Result<void>{};
}

// Reads a prefix of the range whose allocation is uniform and says how long it was in *done.
Task<Result<void>> CopyOnReadDriver::read_chunk(uint64_t offset, uint64_t bytes, IoVec iov,
                                                ReqFlags flags, uint64_t* done) {
  Node& top = file().node();
  auto own_query = allocated_above(&top, &top, offset, bytes);
  auto own = co_await own_query;
  // On a status error, try to copy anyway (as QEMU does); the copy reports what fails.
  uint64_t n = own ? own->bytes : bytes;
  if (own && own->allocated) {
    *done = n;
    auto plain = file().read(offset, n, iov.slice(0, n), flags);
    co_return co_await plain;
  }
  // The decision and the copy happen under the lock, so a write that completed meanwhile is
  // seen (the range is then allocated and read plainly) and one that comes later waits.
  auto locked = lock(offset, n, true);
  Entry entry = co_await locked;
  bool copy = true;
  if (own) {
    auto recheck_query = allocated_above(&top, &top, offset, n);
    auto recheck = co_await recheck_query;
    if (recheck) {
      n = recheck->bytes;
      copy = !recheck->allocated;
    }
  }
  Node* below = next_in_chain(top);
  if (copy && (bottom_ == &top || below == nullptr)) copy = false;
  if (copy) {
    auto chain_query = allocated_above(below, bottom_, offset, n);
    auto chain = co_await chain_query;
    if (chain) {
      n = chain->bytes;
      copy = chain->allocated;
    }
  }
  *done = n;
  IoVec part = iov.slice(0, n);
  auto read = file().read(offset, n, part, flags);
  auto result = co_await read;
  if (result && copy) {
    auto write = file().write(offset, n, part, ReqFlags::kNone);
    result = co_await write;
  }
  unlock(entry);
  co_return result;
}

// The links from the filter's file edge down to `bottom` (the last one points at bottom).
Result<std::vector<Child*>> links_to_bottom(Child& file, Node& bottom) {
  std::vector<Child*> links{&file};
  Node* iter = &file.node();
  while (iter != &bottom) {
    Child* link = chain_link(*iter);
    if (link == nullptr) {
      return fail(EINVAL, "'{}' is not in the backing chain of '{}'", bottom.name(),
                  file.node().name());
    }
    links.push_back(link);
    iter = &link->node();
  }
  for (Child* link : links) {
    if (link->frozen()) {
      Parent& parent = link->parent();
      Node* from = parent.as_node();
      return fail(EPERM, "Cannot change frozen '{}' link from '{}' to '{}'", link->name(),
                  from != nullptr ? from->name() : std::string(), link->node().name());
    }
  }
  return links;
}

// QEMU's cor_open: `bottom` is looked up before the child is opened, and must name an opened
// node that is not a filter.
Result<Node*> find_bottom(OpenContext& ctx) {
  auto name = ctx.options().get_string("bottom");
  if (!name) return name.error();
  if (!name->has_value()) return static_cast<Node*>(nullptr);
  Node* bottom = ctx.engine().find_node(**name);
  if (bottom == nullptr) return fail(ENOENT, "Bottom node '{}' not found", **name);
  if (bottom->driver_class().kind == DriverKind::kFilter) {
    return fail(EINVAL, "Bottom node '{}' is a filter", **name);
  }
  return bottom;
}

Task<Result<std::unique_ptr<Driver>>> open_copy_on_read(OpenContext& ctx) {
  auto bottom = find_bottom(ctx);
  if (!bottom) co_return bottom.error();
  auto open = ctx.open_child("file", ChildRole::kFiltered | ChildRole::kPrimary, true);
  auto child = co_await open;
  if (!child) co_return child.error();
  std::vector<Child*> frozen;
  if (*bottom != nullptr) {
    auto links = links_to_bottom(**child, **bottom);
    if (!links) co_return links.error();
    frozen = std::move(*links);
    for (Child* link : frozen) link->set_frozen(true);
  }
  co_return std::unique_ptr<Driver>(
      std::make_unique<CopyOnReadDriver>(**child, ctx.loop(), *bottom, std::move(frozen)));
}

constexpr DriverOption kCopyOnReadOptions[] = {
    {"file", OptionType::kBlockdevRef, true},
    {"bottom", OptionType::kString},
};

}  // namespace

const DriverClass kCopyOnRead = {"copy-on-read", DriverKind::kFilter, &open_copy_on_read, false,
                                 kCopyOnReadOptions};

}  // namespace strata::drivers
