// Node: one instance of a driver in the block graph (QEMU's BlockDriverState).
//
// A node has a name, its generic options (after inheritance), a Driver, its children (edges
// down) and its parents (edges up, from nodes or users). It owns the request path: every read,
// write, zero, discard, flush and block-status enters through a Node, which validates it once
// (bounds, alignment, splitting, permissions held by the calling edge), tracks it in flight and
// hands it to the driver.
//
// Callers do not call a Node's I/O directly: they go through an edge that holds permissions,
// a Child (drivers) or a BlockBackend (users). The node-level entry points exist for those two.
//
// Threading: event loop thread only.
#pragma once

#include <coroutine>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/driver.h"
#include "strata/iovec.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Child;
class DirtyBitmap;
class Engine;
class EventLoop;

enum class DiscardMode { kIgnore, kUnmap };
enum class DetectZeroes { kOff, kOn, kUnmap };

// The generic options every node has (BlockdevOptions' base), after inheritance.
struct NodeOptions {
  std::string node_name;
  std::string driver;
  bool read_only = false;
  bool auto_read_only = false;
  bool cache_direct = false;
  bool cache_no_flush = false;
  bool force_share = false;
  DiscardMode discard = DiscardMode::kIgnore;
  DetectZeroes detect_zeroes = DetectZeroes::kOff;
};

// Which generic options the user gave for a node, as opposed to values inherited from the parent
// that opened it or left at their defaults. Reopen needs the difference (an explicit value
// outranks an inherited one, and only inherited values follow the parent).
struct ExplicitOptions {
  bool read_only = false;
  bool auto_read_only = false;
  bool cache_direct = false;
  bool cache_no_flush = false;
  bool force_share = false;
  bool discard = false;
  bool detect_zeroes = false;
};

// A node's access mode: as configured, and what its storage holds right now. With
// auto-read-only=on (and read-only=off) the node is writable on demand: its storage is
// read-write only while a parent holds one of kWritePerms (for drivers that have such a notion;
// see Driver::storage_read_write).
struct NodeAccess {
  bool read_only = false;
  bool auto_read_only = false;
  bool storage_read_write = false;
};

// Something that can be a parent of a node: another node, or a user (export, job, tool).
class Parent {
 public:
  virtual ~Parent() = default;
  // How error messages name this parent: "node 'q0'", "block device 'sda'",
  // "an unnamed block device", "stream job 'job0'".
  virtual std::string parent_description() const = 0;
  // The node this parent is, if it is one.
  virtual Node* as_node() { return nullptr; }
};

class Node final : public Parent {
 public:
  Node(Engine& engine, NodeOptions options, const DriverClass& driver_class);
  ~Node() override;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return options_.node_name; }
  const NodeOptions& options() const { return options_; }
  const DriverClass& driver_class() const { return *class_; }
  Driver& driver() { return *driver_; }
  Engine& engine() { return *engine_; }
  EventLoop& loop();
  // True if the node was named by the engine ("#block7"), not the user.
  bool auto_named() const { return !name().empty() && name()[0] == '#'; }

  // Size in bytes, from the driver.
  uint64_t size() const { return driver_->length(); }
  const NodeLimits& limits() const { return limits_; }
  // Re-reads the driver's limits (after open, truncate or reopen).
  void refresh_limits();

  // Read-only as configured (read-only=on, or made so by a static fallback). A node with
  // auto-read-only=on reports false here: it is writable on demand.
  bool is_read_only() const { return options_.read_only; }
  // Which generic options were given explicitly.
  const ExplicitOptions& explicit_options() const { return explicit_; }
  // The parent that opened this node as an inline child and whose options it inherited, or
  // nullptr (a node added on its own, or given to its parents by reference).
  Node* inherits_from() const { return inherits_from_; }
  // The configured mode and the storage's current one.
  NodeAccess access() const;
  // The driver-specific options the node was opened (or last reopened) with, as given: the
  // option object without the generic options and the children. A reopen compares against it.
  const nlohmann::json& driver_options() const { return driver_options_; }

  // The name of the storage behind the node (QEMU's bs->filename): the `filename` option of a
  // node that has one, else its `file` child's; empty if there is none (memory, null-co).
  std::string filename() const;

  std::span<Child* const> children() const { return children_; }
  std::span<Child* const> parents() const { return parents_; }
  // The child edge called `name`, or nullptr.
  Child* child(std::string_view name) const;
  // The node's cumulative permissions: OR of the parents' perm, AND of their shared.
  Perm cumulative_perm() const;
  Perm cumulative_shared() const;

  // Parent interface.
  std::string parent_description() const override;
  Node* as_node() override { return this; }

  // The request path (src/core/request.cpp). Each validates the request (see driver.h), tracks
  // it in flight and serialises it against overlapping requests where needed.
  // REQUIRES: iov.size() == bytes.
  // Reads past the end return zeroes for the part past the end. Writes past the end grow the
  // node if limits().can_grow, else fail with EIO. Errors: EINVAL when offset + bytes
  // overflows or passes kMaxLength (and for block_status queries that are empty or start at or
  // past the end); EPERM ("Block node is read-only") when a write reaches a read-only node.
  // Users (BlockBackend) get QEMU's stricter user-level checks on top (EIO past the end).
  Task<Result<void>> read(uint64_t offset, uint64_t bytes, IoVec iov,
                          ReqFlags flags = ReqFlags::kNone);
  Task<Result<void>> write(uint64_t offset, uint64_t bytes, IoVec iov,
                           ReqFlags flags = ReqFlags::kNone);
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes,
                                   ReqFlags flags = ReqFlags::kNone);
  Task<Result<void>> discard(uint64_t offset, uint64_t bytes);
  // Flushes this node, then its children (unless cache.no-flush).
  Task<Result<void>> flush();
  // Status of a prefix of [offset, offset + bytes) at this layer; with kRaw from the driver the
  // core follows to the file and reports that node's answer.
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes);
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc);

  // Waits until no request is in flight on this node. New requests may start afterwards; the
  // graph layer stops them from starting while it drains.
  Task<void> drain();
  uint64_t in_flight() const { return in_flight_; }
  // Write-class requests in flight (write, write-zeroes, discard, truncate).
  uint64_t writes_in_flight() const { return writes_in_flight_; }
  // Waits until no write-class request is in flight; reads may go on meanwhile.
  Task<void> drain_writes();

  // Every write-class request that ends marks its range in each of these bitmaps (see
  // dirty_bitmap.h). REQUIRES: the bitmap outlives its attachment; removed before it goes.
  void add_dirty_bitmap(DirtyBitmap& bitmap) { dirty_bitmaps_.push_back(&bitmap); }
  void remove_dirty_bitmap(DirtyBitmap& bitmap);
  const std::vector<DirtyBitmap*>& dirty_bitmaps() const { return dirty_bitmaps_; }

  // The largest offset + bytes a request may reach (QEMU's BDRV_MAX_LENGTH: INT64_MAX rounded
  // down to 1 GiB, so aligning a request up never overflows).
  static constexpr uint64_t kMaxLength = uint64_t{INT64_MAX} & ~((uint64_t{1} << 30) - 1);

  // ---- used by the core (engine, edges, request path) ----
  bool has_driver() const { return driver_ != nullptr; }
  void set_driver(std::unique_ptr<Driver> driver);
  void set_origin(ExplicitOptions explicit_options, Node* inherits_from) {
    explicit_ = explicit_options;
    inherits_from_ = inherits_from;
  }
  void set_driver_options(nlohmann::json options) { driver_options_ = std::move(options); }
  void add_child(Child* child) { children_.push_back(child); }
  void remove_child(Child* child);
  void add_parent(Child* edge) { parents_.push_back(edge); }
  void remove_parent(Child* edge);
  // Puts back the order of the edges saved before a graph change that failed (the same edges,
  // which the undo has already put back, in their old order: conflict messages depend on it).
  void restore_edge_order(std::vector<Child*> children, std::vector<Child*> parents);
  NodeOptions& mutable_options() { return options_; }

 private:
  friend class RequestTracker;
  struct TrackedRequest;
  Task<void> wait_for_overlapping(TrackedRequest& req);
  void begin_request(TrackedRequest& req);
  void end_request(TrackedRequest& req);
  // Request shaping (request.cpp): padding to request_alignment, splitting at max_transfer,
  // bouncing misaligned memory. rw_padded/rw_aligned/rw_chunk are plain functions that only
  // enter their coroutine halves when there is shaping to do.
  Task<Result<void>> rw_padded(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                               ReqFlags flags);
  Task<Result<void>> rw_with_padding(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                     ReqFlags flags);
  Task<Result<void>> rw_aligned(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                ReqFlags flags);
  Task<Result<void>> rw_split(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                              ReqFlags flags);
  Task<Result<void>> rw_chunk(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                              ReqFlags flags);
  Task<Result<void>> rw_bounced(bool is_write, uint64_t offset, uint64_t bytes, IoVec iov,
                                ReqFlags flags);
  Task<Result<void>> read_block(uint64_t offset, uint8_t* buf);
  Task<Result<void>> write_compressed(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags);
  Task<Result<void>> zero_range(uint64_t offset, uint64_t bytes, ReqFlags flags);
  Task<Result<void>> zeroes_aligned(uint64_t offset, uint64_t bytes, ReqFlags flags);
  Task<Result<void>> zeroes_chunk(uint64_t offset, uint64_t bytes, ReqFlags flags);
  Task<Result<void>> write_zero_buffer(uint64_t offset, uint64_t bytes, ReqFlags flags);
  Task<Result<void>> discard_aligned(uint64_t offset, uint64_t bytes);
  Task<Result<BlockStatus>> layer_status(uint64_t offset, uint64_t bytes);
  Task<BlockStatus> zero_from_file(BlockStatus st);

  Engine* engine_;
  NodeOptions options_;
  const DriverClass* class_;
  std::unique_ptr<Driver> driver_;
  NodeLimits limits_;
  std::vector<Child*> children_;
  std::vector<Child*> parents_;
  ExplicitOptions explicit_;
  Node* inherits_from_ = nullptr;
  nlohmann::json driver_options_ = nlohmann::json::object();

  uint64_t in_flight_ = 0;
  uint64_t writes_in_flight_ = 0;
  std::vector<DirtyBitmap*> dirty_bitmaps_;
  std::vector<std::coroutine_handle<>> write_drain_waiters_;
  // Every request in flight, oldest first (an intrusive list: the entries live in the
  // requests' coroutine frames, so tracking costs no allocation).
  TrackedRequest* tracked_head_ = nullptr;
  TrackedRequest* tracked_tail_ = nullptr;
  uint64_t serialising_ = 0;  // how many of them serialise
  std::vector<std::coroutine_handle<>> drain_waiters_;
};

}  // namespace strata
