// Test harness for the conformance suite and the driver tests beside it: an EventLoop and an
// Engine with the built-in drivers, nodes opened from JSON as blockdev-add would, a
// BlockBackend on the node under test, and synchronous wrappers around its I/O.
//
// Threading: one test thread, which also runs the loop (run_sync).
#pragma once

#include <coroutine>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "strata/block_backend.h"
#include "strata/driver.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/perm.h"
#include "strata/result.h"

namespace strata::testing {

// What a read-write user that may resize asks for.
constexpr Perm kReadWriteResize = Perm::kConsistentRead | Perm::kWrite | Perm::kResize;

class Harness {
 public:
  Harness();
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  EventLoop& loop() { return loop_; }
  Engine& engine() { return *engine_; }

  // blockdev-add.
  Result<Node*> add(nlohmann::json options);
  // Attaches the backend that the I/O helpers below use (replacing an earlier one).
  Result<void> attach(Node& node, Perm perm = kReadWriteResize, Perm shared = Perm::kAll);
  // Detaches the backend.
  void detach() { blk_.reset(); }
  BlockBackend& blk() { return *blk_; }
  Node& node() { return blk_->node(); }
  uint64_t size() const { return blk_->size(); }

  Result<void> read(uint64_t offset, std::span<uint8_t> buf);
  Result<std::vector<uint8_t>> read(uint64_t offset, uint64_t bytes);
  Result<void> write(uint64_t offset, std::span<const uint8_t> data,
                     ReqFlags flags = ReqFlags::kNone);
  Result<void> readv(uint64_t offset, const IoVec& iov);
  Result<void> writev(uint64_t offset, const IoVec& iov);
  Result<void> write_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags = ReqFlags::kNone);
  Result<void> discard(uint64_t offset, uint64_t bytes);
  Result<void> flush();
  Result<BlockStatus> block_status(uint64_t offset, uint64_t bytes);
  Result<void> truncate(uint64_t size, PreallocMode prealloc = PreallocMode::kOff,
                        bool exact = true);

 private:
  // Declared in this order so that they go away backend first, loop last.
  EventLoop loop_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<BlockBackend> blk_;
};

// A file of `size` bytes (sparse) in `dir`, removed on destruction.
class TempFile {
 public:
  TempFile(const std::string& dir, uint64_t size);
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }
  // The file's size and bytes as the operating system sees them, bypassing Strata.
  uint64_t size_on_disk() const;
  std::vector<uint8_t> contents(uint64_t offset, uint64_t bytes) const;
  void write_directly(uint64_t offset, std::span<const uint8_t> data) const;
  void truncate_directly(uint64_t size) const;

 private:
  std::string path_;
};

// Deterministic, never-zero test data: byte `i` of a buffer at image offset `offset` written by
// writer `seed`. For one position, different seeds (< 251) give different bytes, so the bytes
// read back name the writer.
uint8_t pattern_byte(uint32_t seed, uint64_t position);
std::vector<uint8_t> pattern(uint32_t seed, uint64_t offset, uint64_t bytes);

bool all_zero(std::span<const uint8_t> bytes);

// Counts spawned coroutines down and resumes one waiter at zero.
class Latch {
 public:
  explicit Latch(size_t count) : count_(count) {}
  void count_down() {
    // Resuming may finish the waiter and free this latch: touch nothing afterwards.
    if (--count_ == 0 && waiter_) std::exchange(waiter_, {}).resume();
  }
  auto wait() {
    struct Awaiter {
      Latch* latch;
      bool await_ready() const noexcept { return latch->count_ == 0; }
      void await_suspend(std::coroutine_handle<> h) noexcept { latch->waiter_ = h; }
      void await_resume() const noexcept {}
    };
    return Awaiter{this};
  }

 private:
  size_t count_;
  std::coroutine_handle<> waiter_;
};

}  // namespace strata::testing
