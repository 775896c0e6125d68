// BlockCopy: the copy engine under the block jobs (commit, stream, mirror, backup).
//
// It copies [offset, offset + bytes) of a source BlockBackend to the same range of a target
// BlockBackend, in chunks aligned to the target's granularity, with several chunks in flight.
// Block status of the source's backing chain decides what each range needs:
//   - kAll: everything is copied; ranges that read as zeroes become write-zeroes on the target
//     (with MAY_UNMAP unless told otherwise; the core drops it where the target's discard
//     option does not allow unmapping) instead of data;
//   - kAllocatedAbove: only ranges allocated in the chain above `base` are copied (commit,
//     stream; QEMU's bdrv_is_allocated_above); the rest is skipped but still counts as progress.
//     Ranges allocated as zeroes become write-zeroes as above.
// A range shorter than one granule of the target is copied as data with the whole granule,
// which reads back the same, so that writes never need read-modify-write on the target.
//
// The job that runs the copy is its BlockCopyHost: between chunks the copy calls
// pause_point() (false = cancelled: stop issuing, wait for what is in flight, return ECANCELED)
// and rate_limit() with the bytes it is about to read and write (skipped and zeroed ranges
// cost nothing, as in QEMU's commit and mirror); after each chunk progress_add(). Failed
// requests go to handle_error(): kReport stops the copy, which returns that error once the
// requests still in flight have finished; kIgnore counts the chunk as done; kRetry copies the
// chunk again. The copy never returns while a request it issued is in flight. The target is not
// flushed: that is the job's business, at the point its semantics need it.
//
// Order (BlockCopyOptions::order): by default chunks are planned and copied in ascending guest
// offsets, each planned just before it is issued, so a source that changes meanwhile (a job's
// running guest) is seen as it is then. kSourceLayout plans a window of the range first and
// copies its data chunks in the order their data lies in the source's files: a qcow2 image's
// clusters lie in the order they were written, not in guest order, so guest order turns one
// streaming read of the file into a seek per extent (measured: 256 MiB in 500 extents, cold
// page cache, 16 in flight: 0.24 s in guest order, 0.12-0.16 s in file order). It is for a
// source nothing writes while the copy runs (the plan is not revisited), such as a one-shot
// tool's commit.
//
// Threading: event loop thread only. The backends, the base node and the host must outlive
// run(); one BlockCopy runs once.
#pragma once

#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "strata/block_backend.h"
#include "strata/driver.h"
#include "strata/node.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

// What the job wants done about a failed request (the job maps its on-error policy to this).
enum class BlockCopyErrorAction { kReport, kIgnore, kRetry };

// The job's side of a copy; a Job implements it by forwarding to its own members.
class BlockCopyHost {
 public:
  virtual ~BlockCopyHost() = default;
  // A place where the job may pause (it returns when resumed). False: the job was cancelled.
  virtual Task<bool> pause_point() = 0;
  // Waits as long as the job's speed requires before `bytes` more are copied.
  virtual Task<void> rate_limit(uint64_t bytes) = 0;
  virtual void progress_add(uint64_t bytes) = 0;
  virtual void progress_set_total(uint64_t bytes) = 0;
  // Decides about a failed read (of the source) or write (to the target). `e` lives until the
  // returned task has finished.
  virtual Task<BlockCopyErrorAction> handle_error(bool is_read, const Error& e) = 0;
};

enum class BlockCopyMode { kAll, kAllocatedAbove };

// The order data chunks are copied in (file comment).
enum class BlockCopyOrder { kGuest, kSourceLayout };

struct BlockCopyOptions {
  // Measured once on a 256 MiB raw file copy with cache.direct=on (noisy, shared machine):
  // 64 KiB chunks need 16 in flight to reach ~780 MiB/s; from 256 KiB up every setting with 4
  // or more in flight lands at 620-900 MiB/s. 1 MiB x 16 sits on that plateau at 16 MiB of
  // buffers; larger chunks or more requests only cost memory.
  static constexpr uint64_t kDefaultChunkSize = uint64_t{1} << 20;
  static constexpr uint32_t kDefaultMaxInFlight = 16;

  uint64_t offset = 0;
  uint64_t bytes = 0;
  BlockCopyMode mode = BlockCopyMode::kAll;
  // kAllocatedAbove: the first node not to look at (exclusive); nullptr = the whole chain.
  Node* base = nullptr;
  // Largest data chunk; rounded up to the target's granularity. Zero ranges may be longer.
  uint64_t chunk_size = kDefaultChunkSize;
  uint32_t max_in_flight = kDefaultMaxInFlight;
  // Write-zeroes may deallocate on the target (ReqFlags::kMayUnmap).
  bool unmap = true;
  BlockCopyOrder order = BlockCopyOrder::kGuest;
};

// What a copy did, for tests and for the job's statistics.
struct BlockCopyStats {
  uint64_t bytes_copied = 0;   // read from the source and written as data
  uint64_t bytes_zeroed = 0;   // written as write-zeroes
  uint64_t bytes_skipped = 0;  // not allocated above base: left alone
  uint64_t errors_ignored = 0;
  uint64_t retries = 0;
  uint32_t max_in_flight_seen = 0;
};

// The allocation of a range in a backing chain (QEMU's bdrv_block_status_above).
struct ChainStatus {
  uint64_t bytes = 0;      // how far from the queried offset this answer holds
  bool allocated = false;  // some layer above `base` decides the content
  bool zero = false;       // the range reads as zeroes
  // Where the deciding layer keeps the data (its kOffsetValid answer): `map` in `file`;
  // file == nullptr when it did not say (zeroes, compressed clusters, nothing above base).
  Node* file = nullptr;
  uint64_t map = 0;
};

// The link from `node` down its chain: a filter's filtered child, else the backing child;
// nullptr at the bottom. next_in_chain is the node it leads to.
Child* chain_link(const Node& node);
Node* next_in_chain(const Node& node);

// Freezes every link from `top` down to `base` (exclusive), so the chain a job works on cannot
// change under it. Errors, with nothing frozen: EPERM "Cannot change '<link>' link from '<node>'
// to '<child>'" when one of them is frozen already (another job holds it).
Result<void> freeze_chain(Node& top, const Node* base);
// Undoes freeze_chain(top, base).
void unfreeze_chain(Node& top, const Node* base);

// Status of a prefix of [offset, offset + bytes) in the chain from `top` down to, but not
// including, `base` (nullptr: to the end of the chain). Filters are looked through (their
// filtered child is the next layer), format layers fall through to their backing child where
// they leave a range unallocated. A layer shorter than the range's start reads as zeroes there,
// which counts as allocated in that layer, as in QEMU. REQUIRES: bytes > 0, offset < size of
// top.
Task<Result<ChainStatus>> chain_status(Node& top, Node* base, uint64_t offset, uint64_t bytes);

class BlockCopy {
 public:
  // REQUIRES: source holds CONSISTENT_READ, target holds WRITE; the range lies inside both.
  BlockCopy(BlockBackend& source, BlockBackend& target, BlockCopyHost& host,
            BlockCopyOptions options);
  ~BlockCopy();
  BlockCopy(const BlockCopy&) = delete;
  BlockCopy& operator=(const BlockCopy&) = delete;

  // Copies the range as the file comment says. Errors: the first error the host chose to
  // report, unchanged (the job shows it as the device's error, as QEMU does); ECANCELED when
  // the host cancelled; EINVAL when the range does not lie inside both nodes. A block-status
  // error is handled like a read error (kIgnore then skips the chunk it was planning).
  Task<Result<void>> run();

  const BlockCopyStats& stats() const { return stats_; }
  // The granularity chunks are aligned to (the target's cluster size, at least 4 KiB).
  uint64_t granularity() const { return granularity_; }

 private:
  // kIgnored: the chunk could not be planned and the host chose to ignore that.
  enum class Action { kCopy, kZero, kSkip, kIgnored };
  struct Chunk {
    uint64_t offset = 0;
    uint64_t bytes = 0;
    Action action = Action::kCopy;
    Node* file = nullptr;  // where the source's data lies (ChainStatus), for kSourceLayout
    uint64_t map = 0;
  };
  struct BufferFree {
    void operator()(uint8_t* p) const;
  };
  using Buffer = std::unique_ptr<uint8_t[], BufferFree>;
  class SlotAwaiter;

  struct Failure {
    Error error;
    bool is_read = false;
  };

  Task<Result<Chunk>> plan(uint64_t offset);
  // plan() with planning errors decided by the host (kRetry plans again, kIgnore gives a
  // kIgnored chunk up to the next chunk boundary); an error is the one to report.
  Task<Result<Chunk>> plan_decided(uint64_t offset);
  // Counts a chunk that needs no request as done; false for one that needs a request.
  bool settle_without_request(const Chunk& chunk);
  static void sort_by_layout(std::vector<Chunk>& chunks);
  Task<Result<void>> issue_all();
  Task<Result<void>> issue_window(std::vector<Chunk> window);
  // Waits for the rate limit and a free slot, then starts the chunk; false when an error
  // being reported stopped the copy meanwhile.
  Task<bool> issue(Chunk chunk);
  Task<void> copy_chunk(Chunk chunk);
  // Performs one chunk's requests; the failure, if one failed.
  Task<std::optional<Failure>> transfer(Chunk chunk);
  Buffer take_buffer();
  void chunk_done();

  BlockBackend* source_;
  BlockBackend* target_;
  BlockCopyHost* host_;
  BlockCopyOptions options_;
  uint64_t granularity_;
  uint64_t chunk_size_;

  uint32_t in_flight_ = 0;
  // The run loop, waiting for in_flight_ to drop below waiter_limit_.
  std::coroutine_handle<> waiter_;
  uint32_t waiter_limit_ = 0;
  std::optional<Error> error_;  // the error being reported; no new chunks once set
  std::vector<Buffer> free_buffers_;
  BlockCopyStats stats_;
};

}  // namespace strata
