// BlockCopy (block_copy.h): plans chunks from the source chain's block status and keeps up to
// max_in_flight of them in flight as detached coroutines, which report back through
// chunk_done(). Chunks are issued in windows: one chunk in guest order, many in source layout
// order, sorted before they are issued.
#include "block_copy.h"

#include <algorithm>
#include <cerrno>
#include <new>
#include <tuple>
#include <utility>

#include "strata/align.h"
#include "strata/child.h"
#include "strata/event_loop.h"
#include "strata/iovec.h"

namespace strata {
namespace {

// The smallest granularity: a page, so that data chunks suit O_DIRECT targets and the
// planning does not degenerate into sector-sized requests.
constexpr uint64_t kMinGranularity = 4096;
// Zero and skipped ranges cost no data transfer, so one request may cover this many chunks.
constexpr uint64_t kZeroChunkFactor = 16;
// Planning can run many iterations without suspending (skipped ranges, nodes that complete at
// once); give the event loop a turn every so often.
constexpr uint64_t kYieldInterval = 64;
// kSourceLayout: the most chunks planned ahead and sorted at once. Bounds the plan's memory
// (about 40 bytes a chunk) on huge fragmented images; 16384 chunks cover 16 GiB of data in
// 1 MiB chunks, or 1 GiB in 64 KiB fragments.
constexpr size_t kLayoutWindowChunks = 16384;

// The child a filter shows unchanged (a filter, or raw without offset/size), or nullptr.
Child* filtered_child(const Node& node) {
  for (Child* c : node.children()) {
    if (has_role(c->role(), ChildRole::kFiltered)) return c;
  }
  return nullptr;
}

Child* backing_child(const Node& node) {
  for (Child* c : node.children()) {
    if (has_role(c->role(), ChildRole::kCow)) return c;
  }
  return nullptr;
}

}  // namespace

Child* chain_link(const Node& node) {
  if (Child* filtered = filtered_child(node)) return filtered;
  return node.child("backing");
}

Node* next_in_chain(const Node& node) {
  Child* link = chain_link(node);
  return link != nullptr ? &link->node() : nullptr;
}

Result<void> freeze_chain(Node& top, const Node* base) {
  std::vector<Child*> links;
  for (Node* iter = &top; iter != base; iter = next_in_chain(*iter)) {
    Child* link = chain_link(*iter);
    if (link == nullptr) break;
    if (link->frozen()) {
      return fail(EPERM, "Cannot change '{}' link from '{}' to '{}'", link->name(), iter->name(),
                  link->node().name());
    }
    links.push_back(link);
  }
  for (Child* link : links) link->set_frozen(true);
  return {};
}

void unfreeze_chain(Node& top, const Node* base) {
  for (Node* iter = &top; iter != base; iter = next_in_chain(*iter)) {
    Child* link = chain_link(*iter);
    if (link == nullptr) break;
    link->set_frozen(false);
  }
}

namespace {

// The target's cluster size (looking through filters to the format node that has one), but at
// least a page and the target's request alignment.
uint64_t target_granularity(Node& target) {
  uint64_t granularity = std::max<uint64_t>(kMinGranularity, target.limits().request_alignment);
  Node* node = &target;
  while (node != nullptr) {
    uint64_t cluster = node->driver().image_facts().cluster_size;
    if (cluster != 0) return std::max(granularity, cluster);
    Child* filtered = filtered_child(*node);
    node = filtered != nullptr ? &filtered->node() : nullptr;
  }
  return granularity;
}

}  // namespace

Task<Result<ChainStatus>> chain_status(Node& top, Node* base, uint64_t offset, uint64_t bytes) {
  ChainStatus out;
  out.bytes = bytes;
  Node* layer = &top;
  while (layer != nullptr && layer != base) {
    if (Child* filtered = filtered_child(*layer)) {
      layer = &filtered->node();
      continue;
    }
    // A layer that ends before the range reads as zeroes there, and that decides the content
    // (a longer overlay over a short backing file must not show what lies below).
    if (offset >= layer->size()) {
      out.allocated = true;
      out.zero = true;
      co_return out;
    }
    auto task = layer->block_status(offset, out.bytes);
    auto st = co_await task;
    if (!st) co_return st.error();
    out.bytes = std::min(out.bytes, st->bytes);
    out.zero = has_flag(st->flags, BlockStatusFlags::kZero);
    if (has_flag(st->flags, BlockStatusFlags::kAllocated)) {
      out.allocated = true;
      if (has_flag(st->flags, BlockStatusFlags::kOffsetValid) && st->file != nullptr) {
        out.file = st->file;
        out.map = st->map;
      }
      co_return out;
    }
    // Unallocated here: the core has already said whether that reads as zeroes (no backing,
    // or past the backing file's end); otherwise the next layer decides.
    Child* backing = backing_child(*layer);
    if (backing == nullptr) co_return out;
    layer = &backing->node();
  }
  // Reached base: nothing above it decides this range, and base's own content is unknown here.
  out.zero = false;
  co_return out;
}

void BlockCopy::BufferFree::operator()(uint8_t* p) const {
  ::operator delete[](p, std::align_val_t{kMinGranularity});
}

// Suspends the run loop until fewer than `limit` chunks are in flight.
class BlockCopy::SlotAwaiter {
 public:
  SlotAwaiter(BlockCopy& copy, uint32_t limit) : copy_(copy), limit_(limit) {}
  bool await_ready() const noexcept { return copy_.in_flight_ < limit_; }
  void await_suspend(std::coroutine_handle<> h) noexcept {
    copy_.waiter_ = h;
    copy_.waiter_limit_ = limit_;
  }
  void await_resume() const noexcept {}

 private:
  BlockCopy& copy_;
  uint32_t limit_;
};

BlockCopy::BlockCopy(BlockBackend& source, BlockBackend& target, BlockCopyHost& host,
                     BlockCopyOptions options)
    : source_(&source),
      target_(&target),
      host_(&host),
      options_(options),
      granularity_(target_granularity(target.node())) {
  if (options_.max_in_flight == 0) options_.max_in_flight = 1;
  uint64_t chunk =
      options_.chunk_size != 0 ? options_.chunk_size : BlockCopyOptions::kDefaultChunkSize;
  chunk_size_ = align_up(chunk, granularity_);
}

BlockCopy::~BlockCopy() = default;

Task<Result<void>> BlockCopy::run() {
  const uint64_t end = options_.offset + options_.bytes;
  if (end < options_.offset || end > source_->size() || end > target_->size()) {
    co_return fail(EINVAL, "Block copy range {}+{} lies outside the source ({}) or target ({})",
                   options_.offset, options_.bytes, source_->size(), target_->size());
  }
  host_->progress_set_total(options_.bytes);
  auto issue = issue_all();
  Result<void> issued = co_await issue;
  // Whatever stopped the loop, nothing may stay in flight once run() returns.
  SlotAwaiter drained(*this, 1);
  co_await drained;
  if (error_) co_return *error_;
  co_return issued;
}

Task<Result<void>> BlockCopy::issue_all() {
  const uint64_t end = options_.offset + options_.bytes;
  const size_t window_chunks =
      options_.order == BlockCopyOrder::kSourceLayout ? kLayoutWindowChunks : 1;
  std::vector<Chunk> window;
  uint64_t pos = options_.offset;
  uint64_t iterations = 0;
  while (pos < end && !error_) {
    auto pause = host_->pause_point();
    bool go = co_await pause;
    if (!go) co_return fail(ECANCELED, "Block copy cancelled");
    if (++iterations % kYieldInterval == 0) {
      auto turn = source_->node().loop().yield();
      co_await turn;
    }
    auto planning = plan_decided(pos);
    auto planned = co_await planning;
    if (!planned) co_return planned.error();
    pos += planned->bytes;
    if (!settle_without_request(*planned)) window.push_back(*planned);
    if (window.size() < window_chunks && pos < end) continue;
    auto issuing = issue_window(std::move(window));
    auto issued = co_await issuing;
    if (!issued) co_return issued;
    window.clear();
  }
  co_return Result<void>{};
}

// Issues a window of planned chunks, sorted first in source layout order; stops early when an
// error is being reported.
Task<Result<void>> BlockCopy::issue_window(std::vector<Chunk> window) {
  const bool by_layout = options_.order == BlockCopyOrder::kSourceLayout;
  if (by_layout) sort_by_layout(window);
  for (const Chunk& chunk : window) {
    // In guest order this chunk passed its pause point just before it was planned.
    if (by_layout) {
      auto pause = host_->pause_point();
      bool go = co_await pause;
      if (!go) co_return fail(ECANCELED, "Block copy cancelled");
    }
    auto start = issue(chunk);
    bool issued = co_await start;
    if (!issued) break;
  }
  co_return Result<void>{};
}

Task<Result<BlockCopy::Chunk>> BlockCopy::plan_decided(uint64_t offset) {
  while (true) {
    auto planning = plan(offset);
    auto planned = co_await planning;
    if (planned) co_return planned;
    auto decide = host_->handle_error(true, planned.error());
    BlockCopyErrorAction action = co_await decide;
    if (action == BlockCopyErrorAction::kReport) co_return planned.error();
    if (action == BlockCopyErrorAction::kIgnore) {
      const uint64_t end = options_.offset + options_.bytes;
      Chunk ignored;
      ignored.offset = offset;
      ignored.bytes = std::min(end, align_down(offset, granularity_) + chunk_size_) - offset;
      ignored.action = Action::kIgnored;
      co_return ignored;
    }
    ++stats_.retries;
    // As between chunks: a retried planning error must not keep a cancelled job going.
    auto pause = host_->pause_point();
    bool go = co_await pause;
    if (!go) co_return fail(ECANCELED, "Block copy cancelled");
  }
}

bool BlockCopy::settle_without_request(const Chunk& chunk) {
  if (chunk.action == Action::kSkip) {
    stats_.bytes_skipped += chunk.bytes;
  } else if (chunk.action == Action::kIgnored) {
    ++stats_.errors_ignored;
  } else {
    return false;
  }
  host_->progress_add(chunk.bytes);
  return true;
}

// Chunks without a place in a file (write-zeroes, compressed data) first, in guest order; then
// the data by file and offset in it.
void BlockCopy::sort_by_layout(std::vector<Chunk>& chunks) {
  auto key = [](const Chunk& c) {
    const bool placed = c.action == Action::kCopy && c.file != nullptr;
    return std::make_tuple(placed, placed ? reinterpret_cast<uintptr_t>(c.file) : 0,
                           placed ? c.map : 0, c.offset);
  };
  std::sort(chunks.begin(), chunks.end(),
            [&key](const Chunk& a, const Chunk& b) { return key(a) < key(b); });
}

Task<bool> BlockCopy::issue(Chunk chunk) {
  if (chunk.action == Action::kCopy) {
    auto limit = host_->rate_limit(chunk.bytes);
    co_await limit;
  }
  SlotAwaiter slot(*this, options_.max_in_flight);
  co_await slot;
  if (error_) co_return false;
  ++in_flight_;
  stats_.max_in_flight_seen = std::max(stats_.max_in_flight_seen, in_flight_);
  spawn(copy_chunk(chunk));
  co_return true;
}

// The next chunk from `offset`: its length and what it needs, from the source chain's status.
// Chunk ends fall on the target's granularity (except at the end of the range): a status
// answer that ends inside a granule is cut back to the granule before it, or, when it is
// shorter than one granule, the whole granule is copied as data.
Task<Result<BlockCopy::Chunk>> BlockCopy::plan(uint64_t offset) {
  const uint64_t end = options_.offset + options_.bytes;
  const uint64_t chunk_start = align_down(offset, granularity_);
  const uint64_t data_limit = std::min(end, chunk_start + chunk_size_);
  const uint64_t query_limit = std::min(end, chunk_start + kZeroChunkFactor * chunk_size_);
  Node* base = options_.mode == BlockCopyMode::kAllocatedAbove ? options_.base : nullptr;
  auto query = chain_status(source_->node(), base, offset, query_limit - offset);
  auto status = co_await query;
  if (!status) co_return status.error();

  Chunk chunk;
  chunk.offset = offset;
  chunk.file = status->file;
  chunk.map = status->map;
  if (status->allocated || options_.mode == BlockCopyMode::kAll) {
    chunk.action = status->zero ? Action::kZero : Action::kCopy;
  } else {
    chunk.action = Action::kSkip;
  }
  uint64_t chunk_end = offset + status->bytes;
  if (chunk.action == Action::kCopy) chunk_end = std::min(chunk_end, data_limit);
  if (chunk_end < end && !is_aligned(chunk_end, granularity_)) {
    uint64_t down = align_down(chunk_end, granularity_);
    if (down > offset) {
      chunk_end = down;
    } else {
      chunk_end = std::min(align_up(chunk_end, granularity_), end);
      chunk.action = Action::kCopy;
    }
  }
  chunk.bytes = chunk_end - offset;
  co_return chunk;
}

Task<void> BlockCopy::copy_chunk(Chunk chunk) {
  while (true) {
    auto attempt = transfer(chunk);
    std::optional<Failure> failure = co_await attempt;
    if (!failure) {
      host_->progress_add(chunk.bytes);
      break;
    }
    // Another chunk's error is already being reported: this one changes nothing.
    if (error_) break;
    auto decide = host_->handle_error(failure->is_read, failure->error);
    BlockCopyErrorAction action = co_await decide;
    if (action == BlockCopyErrorAction::kRetry && !error_) {
      ++stats_.retries;
      continue;
    }
    if (action == BlockCopyErrorAction::kIgnore) {
      ++stats_.errors_ignored;
      host_->progress_add(chunk.bytes);
    } else if (!error_) {
      error_ = std::move(failure->error);
    }
    break;
  }
  chunk_done();
}

Task<std::optional<BlockCopy::Failure>> BlockCopy::transfer(Chunk chunk) {
  if (chunk.action == Action::kZero) {
    ReqFlags flags = options_.unmap ? ReqFlags::kMayUnmap : ReqFlags::kNone;
    auto zero = target_->pwrite_zeroes(chunk.offset, chunk.bytes, flags);
    auto zeroed = co_await zero;
    if (!zeroed) co_return Failure{zeroed.error(), false};
    stats_.bytes_zeroed += chunk.bytes;
    co_return std::nullopt;
  }
  Buffer buffer = take_buffer();
  IoVec iov(buffer.get(), chunk.bytes);
  auto read = source_->read(chunk.offset, chunk.bytes, iov);
  auto got = co_await read;
  if (!got) {
    free_buffers_.push_back(std::move(buffer));
    co_return Failure{got.error(), true};
  }
  auto write = target_->write(chunk.offset, chunk.bytes, iov);
  auto put = co_await write;
  free_buffers_.push_back(std::move(buffer));
  if (!put) co_return Failure{put.error(), false};
  stats_.bytes_copied += chunk.bytes;
  co_return std::nullopt;
}

// Buffers are recycled: at most max_in_flight of them exist, each chunk_size_ long and
// page-aligned, so O_DIRECT nodes need no bounce buffers.
BlockCopy::Buffer BlockCopy::take_buffer() {
  if (!free_buffers_.empty()) {
    Buffer buffer = std::move(free_buffers_.back());
    free_buffers_.pop_back();
    return buffer;
  }
  auto* p = static_cast<uint8_t*>(::operator new[](chunk_size_, std::align_val_t{kMinGranularity}));
  return Buffer(p);
}

// The run loop is resumed from the event loop, not from here: it may finish and let its owner
// destroy this object while the chunk's coroutine is still unwinding.
void BlockCopy::chunk_done() {
  --in_flight_;
  if (waiter_ && in_flight_ < waiter_limit_) {
    std::coroutine_handle<> waiter = std::exchange(waiter_, {});
    source_->node().loop().post([waiter] { waiter.resume(); });
  }
}

}  // namespace strata
