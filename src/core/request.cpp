// The request path: every request to a node is validated and shaped here, once, so drivers only
// assert what driver.h promises them.
//
// Shape of a read or write, outside in:
//   validate (bounds, read-only) -> track in flight, wait for conflicting requests ->
//   rw_padded (read-modify-write to request_alignment) -> rw_aligned (split at max_transfer) ->
//   rw_chunk (bounce buffers not aligned to memory_alignment) -> the driver.
//
// Serialisation: every request in flight sits in the node's list, oldest first. A request marked
// serialising (a padded write, whose read-modify-write would otherwise undo a concurrent write
// to the same block; or any write-class request on a driver that sets serialise_overlapping)
// waits for every older overlapping request, and every request waits for older overlapping
// serialising ones. Waiting only on older requests keeps the wait graph acyclic, so two
// requests can never wait for each other. Two reads never conflict.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "aligned_buffer.h"
#include "strata/align.h"
#include "strata/checked.h"
#include "strata/child.h"
#include "strata/dirty_bitmap.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {

struct Node::TrackedRequest {
  uint64_t offset = 0;
  uint64_t end = 0;  // exclusive; an empty range (flush, block status) conflicts with nothing
  bool serialising = false;
  bool writes = false;
  TrackedRequest* prev = nullptr;
  TrackedRequest* next = nullptr;
  std::vector<std::coroutine_handle<>> waiters;  // requests waiting for this one to end
};

// Tracks one request for as long as it lives (on the request's coroutine frame).
class RequestTracker {
 public:
  RequestTracker(Node& node, uint64_t offset, uint64_t end, bool serialising, bool writes)
      : node_(node) {
    req_.offset = offset;
    req_.end = end;
    req_.serialising = serialising;
    req_.writes = writes;
    node_.begin_request(req_);
  }
  ~RequestTracker() { node_.end_request(req_); }
  RequestTracker(const RequestTracker&) = delete;
  RequestTracker& operator=(const RequestTracker&) = delete;

  // False when nothing in flight can conflict, which spares the common case a coroutine.
  bool may_wait() const { return req_.serialising || node_.serialising_ > 0; }
  Task<void> wait() { return node_.wait_for_overlapping(req_); }

 private:
  Node& node_;
  Node::TrackedRequest req_;
};

namespace {

// Writes of zeroes without driver support go out in buffers of at most this size.
constexpr uint64_t kZeroBufferSize = 1 << 20;

const uint8_t* zero_buffer() {
  static const AlignedBuffer buffer = [] {
    AlignedBuffer b(kZeroBufferSize, 4096);
    if (b) std::memset(b.data(), 0, kZeroBufferSize);
    return b;
  }();
  return buffer.data();
}

Error errno_text(int err) { return Error(err, std::strerror(err)); }

Error read_only_error() { return fail(EPERM, "Block node is read-only"); }

// The end of [offset, offset + bytes), if the request lies within what a node can address.
Result<uint64_t> request_end(uint64_t offset, uint64_t bytes) {
  auto end = checked_add(offset, bytes);
  if (!end || *end > Node::kMaxLength) {
    return fail(EINVAL, "sum of offset({}) and bytes({}) exceeds maximum({})", offset, bytes,
                Node::kMaxLength);
  }
  return *end;
}

// What every write-class request checks first.
Result<void> check_write(const Node& node, uint64_t offset, uint64_t bytes) {
  if (node.is_read_only()) return read_only_error();
  auto end = request_end(offset, bytes);
  if (!end) return end.error();
  if (bytes != 0 && *end > node.size() && !node.limits().can_grow) return errno_text(EIO);
  return {};
}

Error iov_mismatch(const IoVec& iov, uint64_t bytes) {
  return fail(EINVAL, "I/O vector of {} bytes for a request of {} bytes", iov.size(), bytes);
}

bool memory_aligned(const IoVec& iov, uint64_t align) {
  if (align <= 1) return true;
  for (const iovec& v : iov.iovecs()) {
    if (reinterpret_cast<uintptr_t>(v.iov_base) % align != 0 || v.iov_len % align != 0) {
      return false;
    }
  }
  return true;
}

struct Enqueue {
  std::vector<std::coroutine_handle<>>* list;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { list->push_back(h); }
  void await_resume() const noexcept {}
};

void resume_all_later(EventLoop& loop, std::vector<std::coroutine_handle<>> handles) {
  // Resumed from the loop rather than inline: the ending request's frame is being torn down.
  for (std::coroutine_handle<> h : handles) loop.post([h] { h.resume(); });
}

}  // namespace

// ---- in-flight tracking ----

void Node::begin_request(TrackedRequest& req) {
  req.prev = tracked_tail_;
  if (tracked_tail_ != nullptr) {
    tracked_tail_->next = &req;
  } else {
    tracked_head_ = &req;
  }
  tracked_tail_ = &req;
  if (req.serialising) ++serialising_;
  if (req.writes) ++writes_in_flight_;
  ++in_flight_;
}

void Node::end_request(TrackedRequest& req) {
  (req.prev != nullptr ? req.prev->next : tracked_head_) = req.next;
  (req.next != nullptr ? req.next->prev : tracked_tail_) = req.prev;
  if (req.serialising) --serialising_;
  if (req.writes) {
    --writes_in_flight_;
    // Failed or not: a failed write may have changed part of its range.
    for (DirtyBitmap* bitmap : dirty_bitmaps_) bitmap->set(req.offset, req.end - req.offset);
    if (writes_in_flight_ == 0 && !write_drain_waiters_.empty()) {
      resume_all_later(loop(), std::exchange(write_drain_waiters_, {}));
    }
  }
  --in_flight_;
  if (!req.waiters.empty()) resume_all_later(loop(), std::move(req.waiters));
  if (in_flight_ == 0 && !drain_waiters_.empty()) {
    resume_all_later(loop(), std::exchange(drain_waiters_, {}));
  }
}

Task<void> Node::wait_for_overlapping(TrackedRequest& req) {
  for (;;) {
    TrackedRequest* blocker = nullptr;
    for (TrackedRequest* r = tracked_head_; r != &req; r = r->next) {
      bool either_serialises = r->serialising || req.serialising;
      bool either_writes = r->writes || req.writes;
      if (either_serialises && either_writes && r->offset < req.end && req.offset < r->end) {
        blocker = r;
        break;
      }
    }
    if (blocker == nullptr) co_return;
    Enqueue wait{&blocker->waiters};
    co_await wait;
  }
}

void Node::remove_dirty_bitmap(DirtyBitmap& bitmap) {
  std::erase(dirty_bitmaps_, &bitmap);
}

Task<void> Node::drain_writes() {
  if (writes_in_flight_ == 0) co_return;
  do {
    Enqueue wait{&write_drain_waiters_};
    co_await wait;
  } while (writes_in_flight_ > 0);
}

Task<void> Node::drain() {
  // An early return and a do-while rather than a while loop: clang 14 crashes at -O2 while
  // splitting the while-loop form of this coroutine.
  if (in_flight_ == 0) co_return;
  do {
    Enqueue wait{&drain_waiters_};
    co_await wait;
  } while (in_flight_ > 0);
}

// ---- read and write ----

Task<Result<void>> Node::read(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  if (iov.size() != bytes) co_return iov_mismatch(iov, bytes);
  auto end = request_end(offset, bytes);
  if (!end) co_return end.error();
  const uint64_t size = this->size();
  const uint64_t readable = offset >= size ? 0 : std::min(bytes, size - offset);
  if (readable < bytes) iov.fill(readable, 0, bytes - readable);
  if (readable == 0) co_return Result<void>{};

  RequestTracker tracker(*this, offset, offset + readable, limits_.serialise_overlapping, false);
  if (tracker.may_wait()) {
    auto wait = tracker.wait();
    co_await wait;
  }
  if (readable < bytes) iov = iov.slice(0, readable);
  auto task = rw_padded(false, offset, readable, std::move(iov), flags);
  co_return co_await task;
}

Task<Result<void>> Node::write(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  if (iov.size() != bytes) co_return iov_mismatch(iov, bytes);
  auto valid = check_write(*this, offset, bytes);
  if (!valid || bytes == 0) co_return valid;
  if (has_flag(flags, ReqFlags::kCompressed)) {
    auto task = write_compressed(offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  if (options_.detect_zeroes != DetectZeroes::kOff && limits_.supports_write_zeroes &&
      iov.is_zero()) {
    ReqFlags zero_flags = flags & ReqFlags::kFua;
    if (options_.detect_zeroes == DetectZeroes::kUnmap)
      zero_flags = zero_flags | ReqFlags::kMayUnmap;
    auto task = pwrite_zeroes(offset, bytes, zero_flags);
    co_return co_await task;
  }

  const uint64_t align = limits_.request_alignment;
  const bool padded = !is_aligned(offset, align) || !is_aligned(bytes, align);
  RequestTracker tracker(*this, align_down(offset, align), align_up(offset + bytes, align),
                         padded || limits_.serialise_overlapping, true);
  if (tracker.may_wait()) {
    auto wait = tracker.wait();
    co_await wait;
  }
  const bool emulate_fua = has_flag(flags, ReqFlags::kFua) && !limits_.supports_fua;
  if (emulate_fua) flags = flags & ~ReqFlags::kFua;
  auto task = rw_padded(true, offset, bytes, std::move(iov), flags);
  auto result = co_await task;
  if (!result || !emulate_fua) co_return result;
  auto flush_task = flush();
  co_return co_await flush_task;
}

// Compressed writes go to the driver whole: no padding, no zero detection; the driver splits
// them into its units. QEMU's texts for the shapes it refuses.
Task<Result<void>> Node::write_compressed(uint64_t offset, uint64_t bytes, IoVec iov,
                                          ReqFlags flags) {
  if (!limits_.supports_compressed_writes) {
    co_return fail(ENOTSUP, "Compression is not supported for this drive {}", name());
  }
  const uint64_t unit = limits_.compressed_write_alignment;
  if (unit != 0 && (offset % unit != 0 || (bytes % unit != 0 && offset + bytes != size()))) {
    co_return fail(EINVAL, "Compressed writes must cover whole clusters ({} bytes)", unit);
  }
  RequestTracker tracker(*this, offset, offset + bytes, true, true);
  if (tracker.may_wait()) {
    auto wait = tracker.wait();
    co_await wait;
  }
  auto task = driver_->pwritev(offset, bytes, std::move(iov), flags & ~ReqFlags::kFua);
  auto result = co_await task;
  if (!result || !has_flag(flags, ReqFlags::kFua)) co_return result;
  auto flush_task = flush();
  co_return co_await flush_task;
}

Task<Result<void>> Node::rw_padded(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                   ReqFlags flags) {
  // Not a coroutine: an aligned request costs no frame of its own here.
  const uint64_t align = limits_.request_alignment;
  if (is_aligned(offset, align) && is_aligned(bytes, align)) {
    return rw_aligned(is_write, offset, bytes, std::move(iov), flags);
  }
  return rw_with_padding(is_write, offset, bytes, std::move(iov), flags);
}

Task<Result<void>> Node::rw_with_padding(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                         ReqFlags flags) {
  const uint64_t align = limits_.request_alignment;
  const uint64_t end = offset + bytes;
  const uint64_t start = align_down(offset, align);
  const uint64_t aligned_end = align_up(end, align);
  // The request becomes [head pad][caller's buffers][tail pad] over whole blocks. For a write
  // the pads hold the blocks' current contents (read first); for a read they are discarded.
  const uint64_t tail_block = aligned_end - align;
  AlignedBuffer head;
  AlignedBuffer tail;
  IoVec padded;
  if (start != offset) {
    head = AlignedBuffer(align, limits_.memory_alignment);
    if (!head) co_return errno_text(ENOMEM);
    if (is_write) {
      auto fill = read_block(start, head.data());
      auto r = co_await fill;
      if (!r) co_return r;
    }
    padded.push_back(head.data(), offset - start);
  }
  padded.append(iov);
  if (aligned_end != end) {
    uint8_t* block = head.data();  // a request inside one block pads both ends from one buffer
    if (tail_block != start || !head) {
      tail = AlignedBuffer(align, limits_.memory_alignment);
      if (!tail) co_return errno_text(ENOMEM);
      if (is_write) {
        auto fill = read_block(tail_block, tail.data());
        auto r = co_await fill;
        if (!r) co_return r;
      }
      block = tail.data();
    }
    padded.push_back(block + (end - tail_block), aligned_end - end);
  }
  auto task = rw_aligned(is_write, start, aligned_end - start, std::move(padded), flags);
  co_return co_await task;
}

Task<Result<void>> Node::read_block(uint64_t offset, uint8_t* buf) {
  const uint64_t align = limits_.request_alignment;
  // A block past the end reads as zeroes (a growing write pads with them).
  if (offset >= size()) {
    std::memset(buf, 0, align);
    co_return Result<void>{};
  }
  auto task = rw_aligned(false, offset, align, IoVec(buf, align), ReqFlags::kNone);
  co_return co_await task;
}

Task<Result<void>> Node::rw_aligned(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                    ReqFlags flags) {
  const uint64_t max = limits_.max_transfer;
  if (max == 0 || bytes <= max) return rw_chunk(is_write, offset, bytes, std::move(iov), flags);
  return rw_split(is_write, offset, bytes, std::move(iov), flags);
}

Task<Result<void>> Node::rw_split(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                  ReqFlags flags) {
  const uint64_t max = limits_.max_transfer;
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(bytes - done, max);
    IoVec part = iov.slice(done, n);
    auto task = rw_chunk(is_write, offset + done, n, std::move(part), flags);
    auto r = co_await task;
    if (!r) co_return r;
    done += n;
  }
  co_return Result<void>{};
}

Task<Result<void>> Node::rw_chunk(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                  ReqFlags flags) {
  if (!memory_aligned(iov, limits_.memory_alignment)) {
    return rw_bounced(is_write, offset, bytes, std::move(iov), flags);
  }
  return is_write ? driver_->pwritev(offset, bytes, std::move(iov), flags)
                  : driver_->preadv(offset, bytes, std::move(iov), flags);
}

Task<Result<void>> Node::rw_bounced(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                    ReqFlags flags) {
  AlignedBuffer bounce(bytes, limits_.memory_alignment);
  if (!bounce) co_return errno_text(ENOMEM);
  if (is_write) iov.copy_to(0, bounce.data(), bytes);
  // Not a conditional expression: GCC 12 mishandles class temporaries in those in coroutines.
  auto task = rw_chunk(is_write, offset, bytes, IoVec(bounce.data(), bytes), flags);
  auto result = co_await task;
  if (result && !is_write) iov.copy_from(0, bounce.data(), bytes);
  co_return result;
}

// ---- write-zeroes ----

Task<Result<void>> Node::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  auto valid = check_write(*this, offset, bytes);
  if (!valid || bytes == 0) co_return valid;
  // Deallocating is a kind of discard, which this node's discard option may forbid.
  if (options_.discard != DiscardMode::kUnmap) flags = flags & ~ReqFlags::kMayUnmap;
  const uint64_t align = limits_.request_alignment;
  const bool padded = !is_aligned(offset, align) || !is_aligned(bytes, align);
  // Unaligned edges can only be zeroed by writing data, which kNoFallback rules out.
  if (padded && has_flag(flags, ReqFlags::kNoFallback)) co_return errno_text(ENOTSUP);

  RequestTracker tracker(*this, align_down(offset, align), align_up(offset + bytes, align),
                         padded || limits_.serialise_overlapping, true);
  if (tracker.may_wait()) {
    auto wait = tracker.wait();
    co_await wait;
  }
  const bool emulate_fua = has_flag(flags, ReqFlags::kFua) && !limits_.supports_fua;
  if (emulate_fua) flags = flags & ~ReqFlags::kFua;
  auto task = zero_range(offset, bytes, flags);
  auto result = co_await task;
  if (!result || !emulate_fua) co_return result;
  auto flush_task = flush();
  co_return co_await flush_task;
}

Task<Result<void>> Node::zero_range(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  const uint64_t align = limits_.request_alignment;
  const uint64_t end = offset + bytes;
  // Partial blocks at either end are written as data (read-modify-write); the aligned body
  // goes to the driver's write-zeroes.
  AlignedBuffer big_zeroes;
  const uint8_t* zeroes = zero_buffer();
  if (align > kZeroBufferSize || zeroes == nullptr) {
    big_zeroes = AlignedBuffer(align, limits_.memory_alignment);
    if (!big_zeroes) co_return errno_text(ENOMEM);
    std::memset(big_zeroes.data(), 0, align);
    zeroes = big_zeroes.data();
  }
  const ReqFlags data_flags = flags & ReqFlags::kFua;
  const uint64_t head_end = std::min(end, align_up(offset, align));
  if (head_end > offset) {
    auto task = rw_padded(true, offset, head_end - offset,
                          IoVec(const_cast<uint8_t*>(zeroes), head_end - offset), data_flags);
    auto r = co_await task;
    if (!r) co_return r;
    offset = head_end;
  }
  const uint64_t body_end = align_down(end, align);
  if (body_end > offset) {
    auto task = zeroes_aligned(offset, body_end - offset, flags);
    auto r = co_await task;
    if (!r) co_return r;
    offset = body_end;
  }
  if (end > offset) {
    auto task = rw_padded(true, offset, end - offset,
                          IoVec(const_cast<uint8_t*>(zeroes), end - offset), data_flags);
    co_return co_await task;
  }
  co_return Result<void>{};
}

Task<Result<void>> Node::zeroes_aligned(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  // Pieces follow pwrite_zeroes_alignment where they can: up to the first boundary, then whole
  // units, then the remainder, each at most max_pwrite_zeroes.
  const uint64_t unit = limits_.pwrite_zeroes_alignment;
  const uint64_t max = limits_.max_pwrite_zeroes;
  while (bytes > 0) {
    uint64_t n = bytes;
    if (offset % unit != 0) {
      n = std::min(n, unit - offset % unit);
    } else if (n > unit) {
      n -= n % unit;
    }
    if (max != 0) n = std::min(n, max);
    auto task = zeroes_chunk(offset, n, flags);
    auto r = co_await task;
    if (!r) co_return r;
    offset += n;
    bytes -= n;
  }
  co_return Result<void>{};
}

Task<Result<void>> Node::zeroes_chunk(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  if (limits_.supports_write_zeroes) {
    auto task = driver_->pwrite_zeroes(offset, bytes, flags);
    auto r = co_await task;
    if (r || r.error().err() != ENOTSUP) co_return r;
  }
  if (has_flag(flags, ReqFlags::kNoFallback)) co_return errno_text(ENOTSUP);
  auto task = write_zero_buffer(offset, bytes, flags & ReqFlags::kFua);
  co_return co_await task;
}

Task<Result<void>> Node::write_zero_buffer(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  uint8_t* zeroes = const_cast<uint8_t*>(zero_buffer());
  if (zeroes == nullptr) co_return errno_text(ENOMEM);
  while (bytes > 0) {
    const uint64_t n = std::min(bytes, kZeroBufferSize);
    auto task = rw_aligned(true, offset, n, IoVec(zeroes, n), flags);
    auto r = co_await task;
    if (!r) co_return r;
    offset += n;
    bytes -= n;
  }
  co_return Result<void>{};
}

// ---- discard ----

Task<Result<void>> Node::discard(uint64_t offset, uint64_t bytes) {
  if (is_read_only()) co_return read_only_error();
  auto end = request_end(offset, bytes);
  if (!end) co_return end.error();
  // Discard is advisory: a node opened with discard=ignore, or a driver that cannot, drops it.
  if (options_.discard != DiscardMode::kUnmap || !limits_.supports_discard) {
    co_return Result<void>{};
  }
  const uint64_t unit = limits_.pdiscard_alignment;
  const uint64_t stop = std::min(*end, size());
  const uint64_t first = offset % unit == 0 ? offset : offset + (unit - offset % unit);
  const uint64_t last = stop - stop % unit;
  if (first >= last) co_return Result<void>{};

  RequestTracker tracker(*this, first, last, limits_.serialise_overlapping, true);
  if (tracker.may_wait()) {
    auto wait = tracker.wait();
    co_await wait;
  }
  auto task = discard_aligned(first, last - first);
  co_return co_await task;
}

Task<Result<void>> Node::discard_aligned(uint64_t offset, uint64_t bytes) {
  const uint64_t max = limits_.max_pdiscard;
  while (bytes > 0) {
    const uint64_t n = max == 0 ? bytes : std::min(bytes, max);
    auto task = driver_->pdiscard(offset, n);
    auto r = co_await task;
    if (!r) {
      // A driver that turns out not to support it has done what discard promises: nothing.
      if (r.error().err() == ENOTSUP) co_return Result<void>{};
      co_return r;
    }
    offset += n;
    bytes -= n;
  }
  co_return Result<void>{};
}

// ---- flush ----

Task<Result<void>> Node::flush() {
  RequestTracker tracker(*this, 0, 0, false, false);
  // cache.no-flush skips only what reaches the disk: a protocol node's own flush (QEMU's
  // flush_to_disk). A format or filter node still writes what it caches (qcow2's metadata) to
  // the node below, as QEMU's flush_to_os does even with no-flush, or a later reopen to
  // read-only or a close would find it unwritten. Each child decides by its own option (an
  // inline child inherits no-flush, a referenced one does not).
  if (!options_.cache_no_flush || class_->kind != DriverKind::kProtocol) {
    auto task = driver_->flush();
    auto r = co_await task;
    if (!r) co_return r;
  }
  // Only children this node writes to can hold its unflushed data.
  std::vector<Child*> children(children_.begin(), children_.end());
  Result<void> result;
  for (Child* child : children) {
    if (!has_any(child->perm(), Perm::kWrite | Perm::kWriteUnchanged)) continue;
    auto task = child->flush();
    auto r = co_await task;
    if (!r && result) result = r;
  }
  co_return result;
}

// ---- block status ----

Task<Result<BlockStatus>> Node::block_status(uint64_t offset, uint64_t bytes) {
  const uint64_t size = this->size();
  if (bytes == 0 || offset >= size) {
    co_return fail(EINVAL, "block status query at {} for {} bytes is outside node '{}' ({} bytes)",
                   offset, bytes, name(), size);
  }
  bytes = std::min(bytes, size - offset);
  RequestTracker tracker(*this, 0, 0, false, false);
  auto task = layer_status(offset, bytes);
  auto layer = co_await task;
  if (!layer) co_return layer;
  BlockStatus st = *layer;
  if (has_flag(st.flags, BlockStatusFlags::kRaw)) {
    // This layer passes the range through unchanged: the file's answer is the answer.
    if (st.file == nullptr) {
      co_return fail(EIO, "block status of node '{}' passes through to no file", name());
    }
    auto inner_task = st.file->block_status(st.map, st.bytes);
    auto inner = co_await inner_task;
    if (!inner) co_return inner;
    st = *inner;
  } else if (has_flag(st.flags, BlockStatusFlags::kRecurse)) {
    auto recursed = zero_from_file(st);
    st = co_await recursed;
  }
  st.flags =
      st.flags & static_cast<BlockStatusFlags>(~static_cast<uint32_t>(BlockStatusFlags::kEof));
  if (offset + st.bytes == size) st.flags = st.flags | BlockStatusFlags::kEof;
  co_return st;
}

// kRecurse: the file below may know that mapped data reads as zeroes (a hole). Only extra
// information, so errors are ignored, as QEMU does.
Task<BlockStatus> Node::zero_from_file(BlockStatus st) {
  using F = BlockStatusFlags;
  st.flags = st.flags & static_cast<F>(~static_cast<uint32_t>(F::kRecurse));
  if (!has_flag(st.flags, F::kData) || has_flag(st.flags, F::kZero) ||
      !has_flag(st.flags, F::kOffsetValid) || st.file == nullptr || st.file == this) {
    co_return st;
  }
  if (st.map >= st.file->size()) {
    st.flags = st.flags | F::kZero;  // past the file's end: reads as zeroes
    co_return st;
  }
  auto task = st.file->block_status(st.map, st.bytes);
  auto inner = co_await task;
  if (!inner) co_return st;
  if (has_flag(inner->flags, F::kEof) && has_flag(inner->flags, F::kZero)) {
    st.flags = st.flags | F::kZero;
  } else {
    st.bytes = std::min(st.bytes, inner->bytes);
    if (has_flag(inner->flags, F::kZero)) st.flags = st.flags | F::kZero;
  }
  co_return st;
}

Task<Result<BlockStatus>> Node::layer_status(uint64_t offset, uint64_t bytes) {
  using F = BlockStatusFlags;
  auto task = driver_->block_status(offset, bytes);
  auto r = co_await task;
  if (!r) co_return r;
  BlockStatus st = *r;
  if (st.bytes == 0) co_return fail(EIO, "block status of node '{}' made no progress", name());
  st.bytes = std::min(st.bytes, bytes);
  if (has_flag(st.flags, F::kRaw)) co_return st;
  // A protocol driver's data lives in itself, at the same offset.
  if (st.file == nullptr && class_->kind == DriverKind::kProtocol && has_flag(st.flags, F::kData)) {
    st.flags = st.flags | F::kOffsetValid;
    st.map = offset;
    st.file = this;
  }
  if (has_flag(st.flags, F::kData | F::kZero)) {
    st.flags = st.flags | F::kAllocated;
  } else if (class_->kind == DriverKind::kFormat) {
    // Unallocated in a format layer means "read from the backing file"; without one, or past
    // its end, that reads zeroes.
    const Child* backing = nullptr;
    for (const Child* c : children_) {
      if (has_role(c->role(), ChildRole::kCow)) backing = c;
    }
    if (backing == nullptr || offset >= backing->node().size()) st.flags = st.flags | F::kZero;
  }
  co_return st;
}

// ---- truncate ----

Task<Result<void>> Node::truncate(uint64_t size, bool exact, PreallocMode prealloc) {
  if (is_read_only()) co_return read_only_error();
  if (size > kMaxLength) co_return fail(EINVAL, "Image size too large (maximum {})", kMaxLength);
  // Nothing may be in flight over the part that appears or disappears.
  RequestTracker tracker(*this, std::min(size, this->size()), kMaxLength, true, true);
  if (tracker.may_wait()) {
    auto wait = tracker.wait();
    co_await wait;
  }
  auto task = driver_->truncate(size, exact, prealloc);
  auto result = co_await task;
  if (result) refresh_limits();
  co_return result;
}

}  // namespace strata
