// Test drivers for the core's unit tests: small drivers whose limits a test sets and which
// record what reaches them, so a test can check what the core promises drivers (driver.h).
//
//   test-disk   protocol; options: size (default 64 KiB; cannot change on reopen), tag (a
//               string, default ""; reopen may change it or reset it). In-memory data. Its
//               storage follows auto-read-only like the file driver's descriptor: read-write
//               only while a parent holds one of kWritePerms (storage_read_write()).
//   test-fmt    format; children: file (IMAGE, required), backing (COW, optional, may be null).
//               I/O goes to `file` at the same offset. Reopen may give it a new backing.
//   test-filter filter; child: file (FILTERED|PRIMARY). I/O and block status pass through.
//   test-fail   format; opens `file` (IMAGE) and then fails with EIO.
//
// Every driver logs "flush:<node>", "close:<node>", "check:<node>", "set:<node>",
// "abort:<node>", "reopen-prepare:<node>", "reopen-commit:<node>", "reopen-abort:<node>" to
// event_log(), so tests can check order across nodes.
//
// Threading: the test's event loop thread only.
#pragma once

#include <gtest/gtest.h>

#include <coroutine>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/driver.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata::testing {

std::vector<std::string>& event_log();
// Events of one kind ("flush", "close", "check", ...), in order, as node names.
std::vector<std::string> events(std::string_view kind);

std::span<const DriverClass* const> test_drivers();

struct Call {
  std::string op;  // "read", "write", "zeroes", "discard", "flush", "status", "truncate"
  uint64_t offset = 0;
  uint64_t bytes = 0;
  ReqFlags flags = ReqFlags::kNone;
};

// What every test driver shares: permission and reopen hooks that log and may be told to
// fail, and a record of the permission protocol (driver.h) as the driver saw it.
class RecordingDriver : public Driver {
 public:
  explicit RecordingDriver(Node& node) : node_(node) {}

  Result<void> check_perm(Perm perm, Perm shared) override;
  void set_perm(Perm perm, Perm shared) override;
  void abort_perm_update() override;
  Task<void> close() override;
  Result<void> reopen_prepare(OptionReader& options, const NodeOptions& new_generic) override;
  void reopen_commit() override;
  void reopen_abort() override;

  int fail_check_perm = 0;           // errno for check_perm to fail with; 0 = succeed
  int fail_reopen = 0;               // errno for reopen_prepare to fail with; 0 = succeed
  Perm last_set_perm = Perm::kNone;  // the committed permissions
  Perm last_set_shared = Perm::kAll;
  int check_count = 0;
  // Every check_perm's arguments, in order.
  std::vector<ChildPerms> checked;
  // Protocol breaches: check_perm while one is pending, set_perm without one, a reopen hook
  // out of order. Tests expect none.
  std::vector<std::string> protocol_errors;
  bool check_pending = false;
  bool reopen_pending = false;

 protected:
  Node& node_;
};

class TestDisk final : public RecordingDriver {
 public:
  TestDisk(Node& node, EventLoop& loop, uint64_t size, std::string tag);

  Result<void> check_perm(Perm perm, Perm shared) override;
  void set_perm(Perm perm, Perm shared) override;
  void abort_perm_update() override;
  bool storage_read_write() const override { return storage_rw_; }
  std::span<const std::string_view> mutable_options() const override;
  Result<void> reopen_prepare(OptionReader& options, const NodeOptions& new_generic) override;
  void reopen_commit() override;
  void reopen_abort() override;

  uint64_t length() const override { return data.size(); }
  NodeLimits limits() const override { return lim; }
  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override;
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> flush() override;
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc) override;

  // Lets every read held at the gate continue (from the loop).
  void open_gate();
  std::vector<Call> calls_of(std::string_view op) const;

  std::vector<uint8_t> data;
  NodeLimits lim;
  std::vector<Call> calls;
  // Requests that broke a promise of driver.h (misaligned, too long, out of bounds).
  std::vector<std::string> violations;
  bool gate_closed = false;  // reads wait until open_gate()
  bool yield_io = false;     // every read and write yields to the loop once first
  int zeroes_errno = 0;      // pwrite_zeroes fails with this
  int discard_errno = 0;     // pdiscard fails with this
  // Block status: extents as (end, flags); past the last one, or with none, everything is data.
  std::vector<std::pair<uint64_t, BlockStatusFlags>> extents;
  uint64_t max_in_flight_writes = 0;
  std::string tag;
  // errno with which the storage refuses to become read-write (EACCES: a read-only file); 0 =
  // it never refuses.
  int refuse_write_access = 0;

 private:
  void check_request(const char* op, uint64_t offset, uint64_t bytes, const IoVec* iov, bool grows);
  Task<void> maybe_yield();

  EventLoop& loop_;
  bool storage_rw_ = false;
  std::optional<bool> pending_storage_rw_;
  std::optional<std::string> pending_tag_;
  std::vector<std::coroutine_handle<>> gated_;
  uint64_t writes_in_flight_ = 0;
};

class TestFormat final : public RecordingDriver {
 public:
  TestFormat(Node& node, Child& file) : RecordingDriver(node), file_(file) {}

  uint64_t length() const override { return file_.size(); }
  NodeLimits limits() const override;
  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> flush() override;
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override;

  bool report_unallocated = false;  // block status answers "not allocated here"

 private:
  Child& file_;
};

// The driver of `node`, as its test type.
template <class D>
D& driver_of(Node* node) {
  return static_cast<D&>(node->driver());
}

// Runs the loop until `done()` holds; fails the test if the loop runs out of work first.
template <class Pred>
void run_until(EventLoop& loop, Pred done) {
  while (!done()) {
    loop.context().restart();
    if (loop.context().run_one() == 0 && !done()) {
      ADD_FAILURE() << "event loop ran out of work";
      return;
    }
  }
}

// A fixture with an EventLoop and an Engine over the test drivers.
class CoreTest : public ::testing::Test {
 protected:
  CoreTest();
  ~CoreTest() override;

  // add_node that must succeed.
  Node* add(nlohmann::json options, OptionSyntax syntax = OptionSyntax::kJson);
  // add_node that must fail; returns its message.
  std::string add_error(nlohmann::json options, OptionSyntax syntax = OptionSyntax::kJson);
  std::unique_ptr<BlockBackend> attach(Node* node, Perm perm, Perm shared, std::string name = "");
  // Every edge in the graph with its perms, for before/after comparisons.
  std::vector<std::string> edge_snapshot() const;
  // Everything a failed operation must leave as it was: every node with its options (and which
  // were explicit), origin and driver options, its edges in order with their perms, and what
  // its driver last committed. REQUIRES: every node runs a test driver.
  std::string graph_snapshot() const;

  EventLoop loop;
  std::unique_ptr<Engine> engine;
};

}  // namespace strata::testing
