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

#include <cstdint>
#include <list>
#include <memory>
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

  // The request path. Each validates the request (see driver.h), tracks it in flight and
  // serialises it against overlapping requests where the driver asks for it.
  // Errors: EIO for reads past the end; EINVAL for writes past the end of a node that cannot
  // grow, for offsets that overflow, or for lengths above the protocol maximum; EPERM when the
  // node is read-only and a write reaches it.
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

  // ---- used by the core (engine, edges, request path) ----
  void set_driver(std::unique_ptr<Driver> driver);
  void add_child(Child* child) { children_.push_back(child); }
  void remove_child(Child* child);
  void add_parent(Child* edge) { parents_.push_back(edge); }
  void remove_parent(Child* edge);
  NodeOptions& mutable_options() { return options_; }

 private:
  friend class RequestTracker;
  struct TrackedRequest;
  Task<void> wait_for_overlapping(TrackedRequest& req);
  void begin_request(TrackedRequest& req);
  void end_request(TrackedRequest& req);
  Task<Result<void>> write_aligned(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags);
  Task<Result<void>> read_aligned(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags);
  Task<Result<void>> zeroes_aligned(uint64_t offset, uint64_t bytes, ReqFlags flags);

  Engine* engine_;
  NodeOptions options_;
  const DriverClass* class_;
  std::unique_ptr<Driver> driver_;
  NodeLimits limits_;
  std::vector<Child*> children_;
  std::vector<Child*> parents_;

  uint64_t in_flight_ = 0;
  std::list<TrackedRequest*> tracked_;  // requests that serialise or wait
  std::vector<std::coroutine_handle<>> drain_waiters_;
};

}  // namespace strata
