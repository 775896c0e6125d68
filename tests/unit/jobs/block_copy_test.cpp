// BlockCopy over real graphs: memory nodes, a qcow2 chain in /dev/shm (made by qemu-img and
// qemu-io), fault-inject for the error policies, and a probe disk that records every request
// that reaches it and how many were in flight at once.
#include "block_copy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr Perm kRead = Perm::kConsistentRead;
constexpr Perm kReadWrite = Perm::kConsistentRead | Perm::kWrite;

// ---- probe-disk: a protocol driver for tests (options: size, slow) ----
//
// Data in memory. Records each write and write-zeroes; with slow=true every read and write
// gives the event loop a few turns before completing, so requests overlap, and the driver
// counts how many were in flight at most. Block status follows `extents` when a test sets it
// (else everything is data).
struct ProbeCall {
  bool zeroes = false;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  ReqFlags flags = ReqFlags::kNone;
};

class ProbeDisk final : public Driver {
 public:
  ProbeDisk(EventLoop& loop, uint64_t size, bool slow) : loop_(&loop), data_(size), slow_(slow) {}

  uint64_t length() const override { return data_.size(); }
  NodeLimits limits() const override {
    NodeLimits l;
    l.supports_write_zeroes = true;
    l.supports_zero_unmap = true;
    return l;
  }

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags) override {
    auto wait = enter();
    co_await wait;
    iov.copy_from(0, data_.data() + offset, bytes);
    --in_flight_;
    co_return Result<void>{};
  }
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    calls.push_back({false, offset, bytes, flags});
    auto wait = enter();
    co_await wait;
    iov.copy_to(0, data_.data() + offset, bytes);
    --in_flight_;
    co_return Result<void>{};
  }
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override {
    calls.push_back({true, offset, bytes, flags});
    std::fill_n(data_.begin() + static_cast<std::ptrdiff_t>(offset), bytes, 0);
    co_return Result<void>{};
  }
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st{bytes, BlockStatusFlags::kData};
    for (const auto& [start, length, flags] : extents) {
      if (offset >= start && offset < start + length) {
        st.bytes = std::min(bytes, start + length - offset);
        st.flags = flags;
      }
    }
    co_return st;
  }

  std::vector<uint8_t>& data() { return data_; }
  uint32_t max_in_flight() const { return max_in_flight_; }
  uint32_t in_flight() const { return in_flight_; }

  std::vector<ProbeCall> calls;
  struct Extent {
    uint64_t start;
    uint64_t length;
    BlockStatusFlags flags;
  };
  std::vector<Extent> extents;

 private:
  Task<void> enter() {
    ++in_flight_;
    max_in_flight_ = std::max(max_in_flight_, in_flight_);
    if (!slow_) co_return;
    for (int i = 0; i < 3; ++i) {
      auto turn = loop_->yield();
      co_await turn;
    }
  }

  EventLoop* loop_;
  std::vector<uint8_t> data_;
  bool slow_;
  uint32_t in_flight_ = 0;
  uint32_t max_in_flight_ = 0;
};

Task<Result<std::unique_ptr<Driver>>> open_probe(OpenContext& ctx) {
  auto size = ctx.options().get_size("size");
  if (!size) co_return size.error();
  if (!*size) co_return ctx.options().missing("size");
  auto slow = ctx.options().get_bool("slow");
  if (!slow) co_return slow.error();
  co_return std::unique_ptr<Driver>(
      std::make_unique<ProbeDisk>(ctx.loop(), **size, slow->value_or(false)));
}

const DriverClass kProbeDisk = {"probe-disk", DriverKind::kProtocol, &open_probe};

// ---- a host whose answers a test scripts ----
class TestHost final : public BlockCopyHost {
 public:
  Task<bool> pause_point() override {
    ++pause_points;
    if (pause_points == pause_at) {
      struct Park {
        TestHost* host;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) noexcept { host->parked = h; }
        void await_resume() const noexcept {}
      };
      Park park{this};
      co_await park;
    }
    co_return pause_points != cancel_at;
  }
  Task<void> rate_limit(uint64_t bytes) override {
    rate_limited += bytes;
    co_return;
  }
  void progress_add(uint64_t bytes) override { progress += bytes; }
  void progress_set_total(uint64_t bytes) override { total = bytes; }
  Task<BlockCopyErrorAction> handle_error(bool is_read, const Error& e) override {
    errors.push_back({is_read, e.err()});
    BlockCopyErrorAction action = actions.empty() ? BlockCopyErrorAction::kReport : actions[0];
    if (!actions.empty()) actions.erase(actions.begin());
    co_return action;
  }

  uint64_t pause_points = 0;
  uint64_t cancel_at = 0;  // the pause point that answers "cancelled"; 0 = never
  uint64_t pause_at = 0;   // the pause point that parks until the test resumes it; 0 = never
  std::coroutine_handle<> parked;
  uint64_t rate_limited = 0;
  uint64_t progress = 0;
  uint64_t total = 0;
  struct Seen {
    bool is_read;
    int err;
    bool operator==(const Seen&) const = default;
  };
  std::vector<Seen> errors;
  std::vector<BlockCopyErrorAction> actions;  // answers to handle_error, in order
};

std::vector<uint8_t> pattern(uint64_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i / 512 + i);
  return v;
}

class BlockCopyTest : public ::testing::Test {
 protected:
  BlockCopyTest() {
    for (const DriverClass* c : builtin_drivers()) drivers_.push_back(c);
    drivers_.push_back(&kProbeDisk);
    engine_ = std::make_unique<Engine>(loop_, drivers_);
  }
  ~BlockCopyTest() override {
    backends_.clear();
    engine_.reset();
  }

  Node* add(json options) {
    auto node = run_sync(loop_, engine_->add_node(std::move(options)));
    EXPECT_TRUE(node) << node.error().message();
    return node ? *node : nullptr;
  }
  BlockBackend* attach(Node* node, Perm perm) {
    auto blk = engine_->attach_backend(*node, "", perm, Perm::kAll);
    EXPECT_TRUE(blk) << blk.error().message();
    if (!blk) return nullptr;
    backends_.push_back(std::move(*blk));
    return backends_.back().get();
  }
  void write(BlockBackend* blk, uint64_t offset, std::vector<uint8_t> data) {
    auto r = run_sync(loop_, blk->write(offset, data.size(), IoVec(data.data(), data.size())));
    ASSERT_TRUE(r) << r.error().message();
  }
  std::vector<uint8_t> read(BlockBackend* blk, uint64_t offset, uint64_t bytes) {
    std::vector<uint8_t> buf(bytes, 0xee);
    auto r = run_sync(loop_, blk->read(offset, bytes, IoVec(buf.data(), buf.size())));
    EXPECT_TRUE(r) << r.error().message();
    return buf;
  }
  static ProbeDisk& probe(Node* node) { return dynamic_cast<ProbeDisk&>(node->driver()); }

  Result<void> copy(BlockCopy& copy) { return run_sync(loop_, copy.run()); }

  EventLoop loop_;
  std::vector<const DriverClass*> drivers_;
  std::unique_ptr<Engine> engine_;
  std::vector<std::unique_ptr<BlockBackend>> backends_;
};

TEST_F(BlockCopyTest, CopiesDataAndTurnsHolesIntoWriteZeroes) {
  Node* src = add({{"driver", "memory"}, {"node-name", "src"}, {"size", 4 * kMiB}});
  Node* dst = add(
      {{"driver", "probe-disk"}, {"node-name", "dst"}, {"size", 4 * kMiB}, {"discard", "unmap"}});
  BlockBackend* in = attach(src, kReadWrite);
  BlockBackend* out = attach(dst, kReadWrite);
  std::fill(probe(dst).data().begin(), probe(dst).data().end(), 0x77);  // stale target data
  write(in, 0, pattern(kMiB + 64 * kKiB, 1));
  write(in, 3 * kMiB, pattern(128 * kKiB, 2));

  TestHost host;
  BlockCopyOptions opts;
  opts.bytes = 4 * kMiB;
  opts.chunk_size = 256 * kKiB;
  BlockCopy bc(*in, *out, host, opts);
  ASSERT_TRUE(copy(bc));

  EXPECT_EQ(read(out, 0, 4 * kMiB), read(in, 0, 4 * kMiB));
  EXPECT_EQ(bc.stats().bytes_copied, kMiB + 64 * kKiB + 128 * kKiB);
  EXPECT_EQ(bc.stats().bytes_zeroed, 4 * kMiB - bc.stats().bytes_copied);
  EXPECT_EQ(bc.stats().bytes_skipped, 0u);
  uint64_t zeroed = 0;
  for (const ProbeCall& c : probe(dst).calls) {
    EXPECT_LE(c.bytes, c.zeroes ? 16 * opts.chunk_size : opts.chunk_size);
    if (!c.zeroes) continue;
    zeroed += c.bytes;
    EXPECT_EQ(c.flags, ReqFlags::kMayUnmap);
  }
  EXPECT_EQ(zeroed, bc.stats().bytes_zeroed);
  EXPECT_EQ(host.total, 4 * kMiB);
  EXPECT_EQ(host.progress, 4 * kMiB);
  // Only data transfers are rate-limited.
  EXPECT_EQ(host.rate_limited, bc.stats().bytes_copied);
}

TEST_F(BlockCopyTest, UnmapCanBeTurnedOffAndAnInnerRangeCopied) {
  Node* src =
      add({{"driver", "memory"}, {"node-name", "src"}, {"size", 2 * kMiB}, {"discard", "unmap"}});
  Node* dst = add(
      {{"driver", "probe-disk"}, {"node-name", "dst"}, {"size", 2 * kMiB}, {"discard", "unmap"}});
  BlockBackend* in = attach(src, kReadWrite);
  BlockBackend* out = attach(dst, kReadWrite);
  write(in, 0, pattern(2 * kMiB, 3));
  ASSERT_TRUE(run_sync(loop_, in->pwrite_zeroes(kMiB, 256 * kKiB, ReqFlags::kMayUnmap)));

  TestHost host;
  BlockCopyOptions opts;
  opts.offset = 512 * kKiB;
  opts.bytes = kMiB;
  opts.unmap = false;
  BlockCopy bc(*in, *out, host, opts);
  ASSERT_TRUE(copy(bc));
  EXPECT_EQ(read(out, 512 * kKiB, kMiB), read(in, 512 * kKiB, kMiB));
  EXPECT_EQ(read(out, 0, 512 * kKiB), std::vector<uint8_t>(512 * kKiB, 0));  // outside
  EXPECT_EQ(bc.stats().bytes_zeroed, 256 * kKiB);
  for (const ProbeCall& c : probe(dst).calls) {
    EXPECT_GE(c.offset, 512 * kKiB);
    EXPECT_LE(c.offset + c.bytes, 1536 * kKiB);
    EXPECT_EQ(c.flags, ReqFlags::kNone);
  }
  EXPECT_EQ(host.total, kMiB);
  EXPECT_EQ(host.progress, kMiB);
}

TEST_F(BlockCopyTest, ChunkEndsFallOnTheTargetGranularity) {
  Node* src = add({{"driver", "probe-disk"}, {"node-name", "src"}, {"size", 4 * kMiB}});
  Node* dst = add({{"driver", "probe-disk"}, {"node-name", "dst"}, {"size", 4 * kMiB}});
  using F = BlockStatusFlags;
  // Status answers that end inside 4 KiB granules.
  probe(src).extents = {{0, 5000, F::kData},
                        {5000, 3 * kMiB + 100 - 5000, F::kZero},
                        {3 * kMiB + 100, kMiB - 100, F::kData}};
  BlockBackend* in = attach(src, kRead);
  BlockBackend* out = attach(dst, kReadWrite);
  TestHost host;
  BlockCopyOptions opts;
  opts.bytes = 4 * kMiB;
  BlockCopy bc(*in, *out, host, opts);
  EXPECT_EQ(bc.granularity(), 4 * kKiB);
  ASSERT_TRUE(copy(bc));
  std::vector<std::pair<uint64_t, uint64_t>> zeroes;
  for (const ProbeCall& c : probe(dst).calls) {
    EXPECT_EQ(c.offset % (4 * kKiB), 0u) << c.offset;
    EXPECT_EQ(c.bytes % (4 * kKiB), 0u) << c.bytes;
    if (c.zeroes) zeroes.emplace_back(c.offset, c.bytes);
  }
  // The zero range shrinks to whole granules; the partial ones at its edges are copied.
  EXPECT_EQ(zeroes, (std::vector<std::pair<uint64_t, uint64_t>>{{8 * kKiB, 3 * kMiB - 8 * kKiB}}));
  EXPECT_EQ(bc.stats().bytes_copied, 4 * kMiB - (3 * kMiB - 8 * kKiB));
}

TEST_F(BlockCopyTest, ManyRequestsReallyOverlap) {
  for (uint32_t limit : {1u, 4u, 16u}) {
    SCOPED_TRACE(limit);
    std::string s = "s" + std::to_string(limit), d = "d" + std::to_string(limit);
    Node* src =
        add({{"driver", "probe-disk"}, {"node-name", s}, {"size", 2 * kMiB}, {"slow", true}});
    Node* dst =
        add({{"driver", "probe-disk"}, {"node-name", d}, {"size", 2 * kMiB}, {"slow", true}});
    probe(src).data() = pattern(2 * kMiB, 9);
    BlockBackend* in = attach(src, kRead);
    BlockBackend* out = attach(dst, kReadWrite);
    TestHost host;
    BlockCopyOptions opts;
    opts.bytes = 2 * kMiB;
    opts.chunk_size = 64 * kKiB;
    opts.max_in_flight = limit;
    BlockCopy bc(*in, *out, host, opts);
    ASSERT_TRUE(copy(bc));
    EXPECT_EQ(probe(dst).data(), probe(src).data());
    EXPECT_EQ(bc.stats().max_in_flight_seen, limit);
    // The drivers saw them overlap: reads of some chunks while others were being written.
    EXPECT_EQ(std::max(probe(src).max_in_flight(), probe(dst).max_in_flight()), limit);
    EXPECT_GT(probe(src).max_in_flight() + probe(dst).max_in_flight(), limit == 1 ? 1u : limit);
  }
}

TEST_F(BlockCopyTest, CancelStopsIssuingAndDrainsFirst) {
  Node* src =
      add({{"driver", "probe-disk"}, {"node-name", "src"}, {"size", 4 * kMiB}, {"slow", true}});
  Node* dst =
      add({{"driver", "probe-disk"}, {"node-name", "dst"}, {"size", 4 * kMiB}, {"slow", true}});
  BlockBackend* in = attach(src, kRead);
  BlockBackend* out = attach(dst, kReadWrite);
  TestHost host;
  host.cancel_at = 6;
  BlockCopyOptions opts;
  opts.bytes = 4 * kMiB;
  opts.chunk_size = 64 * kKiB;
  opts.max_in_flight = 4;
  BlockCopy bc(*in, *out, host, opts);
  auto r = copy(bc);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), ECANCELED);
  // Five chunks were issued before the sixth pause point said stop, and all five finished.
  EXPECT_EQ(probe(dst).calls.size(), 5u);
  EXPECT_EQ(bc.stats().bytes_copied, 5 * 64 * kKiB);
  EXPECT_EQ(host.progress, 5 * 64 * kKiB);
  EXPECT_EQ(probe(src).in_flight(), 0u);
  EXPECT_EQ(probe(dst).in_flight(), 0u);
  EXPECT_EQ(out->node().in_flight(), 0u);
}

TEST_F(BlockCopyTest, APausedHostHoldsTheCopyUntilResumed) {
  Node* src = add({{"driver", "memory"}, {"node-name", "src"}, {"size", kMiB}});
  Node* dst = add({{"driver", "probe-disk"}, {"node-name", "dst"}, {"size", kMiB}});
  BlockBackend* in = attach(src, kReadWrite);
  BlockBackend* out = attach(dst, kReadWrite);
  write(in, 0, pattern(kMiB, 4));
  TestHost host;
  host.pause_at = 3;
  BlockCopyOptions opts;
  opts.bytes = kMiB;
  opts.chunk_size = 64 * kKiB;
  BlockCopy bc(*in, *out, host, opts);

  std::optional<Result<void>> result;
  auto runner = [](BlockCopy* c, std::optional<Result<void>>* out) -> Task<void> {
    auto task = c->run();
    out->emplace(co_await task);
  };
  spawn(runner(&bc, &result));
  loop_.context().restart();  // an earlier run_sync left the loop stopped
  for (int i = 0; i < 10; ++i) loop_.poll();
  ASSERT_TRUE(host.parked);
  EXPECT_FALSE(result.has_value());
  EXPECT_EQ(probe(dst).calls.size(), 2u);  // the chunks before the third pause point
  EXPECT_EQ(host.progress, 128 * kKiB);

  std::exchange(host.parked, {}).resume();
  for (int i = 0; i < 100 && !result; ++i) loop_.poll();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(*result) << result->error().message();
  EXPECT_EQ(probe(dst).data(), read(in, 0, kMiB));
  EXPECT_EQ(host.progress, kMiB);
}

// ---- error policies, with fault-inject failing the third read of the source ----

class BlockCopyErrorTest : public BlockCopyTest {
 protected:
  void SetUp() override {
    add({{"driver", "memory"}, {"node-name", "m0"}, {"size", kMiB}});
    Node* fault = add({{"driver", "fault-inject"},
                       {"node-name", "src"},
                       {"file", "m0"},
                       {"kind", "read"},
                       {"nth", 3}});
    dst_ = add({{"driver", "memory"}, {"node-name", "dst"}, {"size", kMiB}});
    in_ = attach(fault, kReadWrite);
    out_ = attach(dst_, kReadWrite);
    data_ = pattern(kMiB, 5);
    write(in_, 0, data_);
  }
  Result<void> run(TestHost& host) {
    BlockCopyOptions opts;
    opts.bytes = kMiB;
    opts.chunk_size = 64 * kKiB;
    bc_ = std::make_unique<BlockCopy>(*in_, *out_, host, opts);
    return copy(*bc_);
  }

  Node* dst_ = nullptr;
  BlockBackend* in_ = nullptr;
  BlockBackend* out_ = nullptr;
  std::vector<uint8_t> data_;
  std::unique_ptr<BlockCopy> bc_;
};

TEST_F(BlockCopyErrorTest, ReportStopsAndReturnsTheError) {
  TestHost host;
  auto r = run(host);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), EIO);
  EXPECT_EQ(r.error().message(), "Input/output error");
  EXPECT_EQ(host.errors, (std::vector<TestHost::Seen>{{true, EIO}}));
  EXPECT_EQ(bc_->stats().bytes_copied, 128 * kKiB);  // the two chunks before
  auto got = read(out_, 0, kMiB);
  EXPECT_TRUE(std::equal(data_.begin(), data_.begin() + 128 * kKiB, got.begin()));
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + 128 * kKiB, got.end()),
            std::vector<uint8_t>(kMiB - 128 * kKiB, 0));
}

TEST_F(BlockCopyErrorTest, IgnoreCountsTheChunkAsDoneAndGoesOn) {
  TestHost host;
  host.actions = {BlockCopyErrorAction::kIgnore};
  ASSERT_TRUE(run(host));
  EXPECT_EQ(host.errors.size(), 1u);
  EXPECT_EQ(bc_->stats().errors_ignored, 1u);
  EXPECT_EQ(host.progress, kMiB);
  auto got = read(out_, 0, kMiB);
  std::vector<uint8_t> want = data_;
  std::fill(want.begin() + 128 * kKiB, want.begin() + 192 * kKiB, 0);  // never copied
  EXPECT_EQ(got, want);
}

TEST_F(BlockCopyErrorTest, RetryCopiesTheChunkAgain) {
  TestHost host;
  host.actions = {BlockCopyErrorAction::kRetry};
  ASSERT_TRUE(run(host));
  EXPECT_EQ(host.errors.size(), 1u);
  EXPECT_EQ(bc_->stats().retries, 1u);
  EXPECT_EQ(read(out_, 0, kMiB), data_);
  EXPECT_EQ(host.progress, kMiB);
}

TEST_F(BlockCopyErrorTest, WriteErrorsAreReportedAsWrites) {
  // Arm the target instead: a fault-inject node over dst failing its second write with ENOSPC.
  Node* fault = add({{"driver", "fault-inject"},
                     {"node-name", "dst-f"},
                     {"file", "dst"},
                     {"kind", "write"},
                     {"nth", 2},
                     {"errno", "ENOSPC"}});
  out_ = attach(fault, kReadWrite);
  ASSERT_TRUE(run_sync(loop_, engine_->reopen({{{"driver", "fault-inject"},
                                                {"node-name", "src"},
                                                {"file", "m0"},
                                                {"kind", "read"},
                                                {"count", 0},
                                                {"nth", 1000}}})));
  TestHost host;
  auto r = run(host);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), ENOSPC);
  EXPECT_EQ(host.errors, (std::vector<TestHost::Seen>{{false, ENOSPC}}));
}

// ---- a qcow2 chain: base <- mid <- top, made by qemu-img and qemu-io ----

class BlockCopyChainTest : public BlockCopyTest {
 protected:
  void SetUp() override {
    dir_ = "/dev/shm/strata-block-copy-" + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    std::string q = "qemu-img create -q -f qcow2 ";
    std::string io = "qemu-io -f qcow2 ";
    std::string script = "cd " + dir_ + " && " + q + "base.qcow2 4M && " + q +
                         "-b base.qcow2 -F qcow2 mid.qcow2 && " + q +
                         "-b mid.qcow2 -F qcow2 top.qcow2 && " + io +
                         "-c 'write -P 0x11 0 4M' base.qcow2 >/dev/null && " + io +
                         "-c 'write -P 0x22 1M 64k' mid.qcow2 >/dev/null && " + io +
                         "-c 'write -P 0x33 2M 128k' -c 'write -z 3M 64k' top.qcow2 >/dev/null";
    ASSERT_EQ(std::system(script.c_str()), 0) << script;
    top_ = add({{"driver", "qcow2"},
                {"node-name", "top"},
                {"file", {{"driver", "file"}, {"filename", dir_ + "/top.qcow2"}}}});
    ASSERT_NE(top_, nullptr);
    mid_ = &top_->child("backing")->node();
    base_ = &mid_->child("backing")->node();
  }
  void TearDown() override {
    backends_.clear();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  Node* top_ = nullptr;
  Node* mid_ = nullptr;
  Node* base_ = nullptr;
};

TEST_F(BlockCopyChainTest, ChainStatusFindsTheAllocatingLayer) {
  struct Case {
    uint64_t offset;
    Node* base;
    bool allocated;
    bool zero;
    uint64_t bytes;
  };
  const Case cases[] = {
      {0, base_, false, false, kMiB},             // only base has it
      {1 * kMiB, base_, true, false, 64 * kKiB},  // mid
      {1 * kMiB, mid_, false, false, kMiB},       // mid is the base: not above it
      {2 * kMiB, base_, true, false, 128 * kKiB},
      {3 * kMiB, base_, true, true, 64 * kKiB},  // a zero cluster in top
      {0, nullptr, true, false, kMiB},           // the whole chain: base has data
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.offset);
    auto st = run_sync(loop_, chain_status(*top_, c.base, c.offset, kMiB));
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(st->allocated, c.allocated);
    EXPECT_EQ(st->zero, c.zero);
    EXPECT_EQ(st->bytes, c.bytes);
  }
}

TEST_F(BlockCopyChainTest, AllocatedAboveBaseCopiesOnlyThat) {
  Node* dst = add(
      {{"driver", "probe-disk"}, {"node-name", "dst"}, {"size", 4 * kMiB}, {"discard", "unmap"}});
  BlockBackend* in = attach(top_, kRead);
  BlockBackend* out = attach(dst, kReadWrite);
  TestHost host;
  BlockCopyOptions opts;
  opts.bytes = 4 * kMiB;
  opts.mode = BlockCopyMode::kAllocatedAbove;
  opts.base = base_;
  BlockCopy bc(*in, *out, host, opts);
  ASSERT_TRUE(copy(bc));
  std::vector<std::tuple<bool, uint64_t, uint64_t>> calls;
  for (const ProbeCall& c : probe(dst).calls) calls.emplace_back(c.zeroes, c.offset, c.bytes);
  EXPECT_EQ(calls,
            (std::vector<std::tuple<bool, uint64_t, uint64_t>>{{false, 1 * kMiB, 64 * kKiB},
                                                               {false, 2 * kMiB, 128 * kKiB},
                                                               {true, 3 * kMiB, 64 * kKiB}}));
  EXPECT_EQ(std::vector<uint8_t>(probe(dst).data().begin() + kMiB,
                                 probe(dst).data().begin() + kMiB + 64 * kKiB),
            std::vector<uint8_t>(64 * kKiB, 0x22));
  EXPECT_EQ(bc.stats().bytes_skipped, 4 * kMiB - 256 * kKiB);
  EXPECT_EQ(host.progress, 4 * kMiB);
  EXPECT_EQ(host.total, 4 * kMiB);
}

TEST_F(BlockCopyChainTest, CopyAllOfTheChainEqualsWhatTopReads) {
  Node* dst = add({{"driver", "memory"}, {"node-name", "dst"}, {"size", 4 * kMiB}});
  BlockBackend* in = attach(top_, kRead);
  BlockBackend* out = attach(dst, kReadWrite);
  TestHost host;
  BlockCopyOptions opts;
  opts.bytes = 4 * kMiB;
  BlockCopy bc(*in, *out, host, opts);
  ASSERT_TRUE(copy(bc));
  EXPECT_EQ(read(out, 0, 4 * kMiB), read(in, 0, 4 * kMiB));
  EXPECT_EQ(bc.stats().bytes_zeroed, 64 * kKiB);
  EXPECT_EQ(bc.stats().bytes_copied, 4 * kMiB - 64 * kKiB);
}

// ---- source layout order: a qcow2 overlay whose clusters were written out of guest order ----

class BlockCopyLayoutTest : public BlockCopyTest {
 protected:
  // top.qcow2 over base.qcow2: a zero cluster at 0, then data written at 3M, 1M and 2M in that
  // order, so the host clusters lie in the file as 3M < 1M < 2M.
  void SetUp() override {
    dir_ = "/dev/shm/strata-block-copy-layout-" + std::to_string(getpid());
    std::filesystem::create_directories(dir_);
    std::string script = "cd " + dir_ +
                         " && qemu-img create -q -f qcow2 base.qcow2 4M"
                         " && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2"
                         " && qemu-io -f qcow2 -c 'write -z 0 64k' -c 'write -P 0x33 3M 64k'"
                         " -c 'write -P 0x11 1M 128k' -c 'write -P 0x22 2M 64k' top.qcow2"
                         " >/dev/null";
    ASSERT_EQ(std::system(script.c_str()), 0) << script;
    top_ = add({{"driver", "qcow2"},
                {"node-name", "top"},
                {"file", {{"driver", "file"}, {"filename", dir_ + "/top.qcow2"}}}});
    ASSERT_NE(top_, nullptr);
    base_ = &top_->child("backing")->node();
  }
  void TearDown() override {
    backends_.clear();
    engine_.reset();
    std::filesystem::remove_all(dir_);
  }

  using Calls = std::vector<std::tuple<bool, uint64_t, uint64_t>>;
  // Commits top above base into a probe disk, one request at a time so the order is the
  // order of issue; returns the target's calls.
  Calls copy_in_order(BlockCopyOrder order, TestHost& host, Result<void>* result = nullptr) {
    Node* dst = add({{"driver", "probe-disk"}, {"size", 4 * kMiB}, {"discard", "unmap"}});
    BlockBackend* in = attach(top_, kRead);
    BlockBackend* out = attach(dst, kReadWrite);
    BlockCopyOptions opts;
    opts.bytes = 4 * kMiB;
    opts.mode = BlockCopyMode::kAllocatedAbove;
    opts.base = base_;
    opts.max_in_flight = 1;
    opts.order = order;
    BlockCopy bc(*in, *out, host, opts);
    Result<void> r = copy(bc);
    if (result != nullptr)
      *result = r;
    else
      EXPECT_TRUE(r) << r.error().message();
    Calls calls;
    for (const ProbeCall& c : probe(dst).calls) calls.emplace_back(c.zeroes, c.offset, c.bytes);
    if (r) {
      EXPECT_EQ(read(out, 3 * kMiB, 64 * kKiB), read(in, 3 * kMiB, 64 * kKiB));
      EXPECT_EQ(read(out, kMiB, 128 * kKiB), std::vector<uint8_t>(128 * kKiB, 0x11));
      EXPECT_EQ(bc.stats().bytes_copied, 256 * kKiB);
      EXPECT_EQ(bc.stats().bytes_zeroed, 64 * kKiB);
      EXPECT_EQ(bc.stats().bytes_skipped, 4 * kMiB - 320 * kKiB);
    }
    return calls;
  }

  std::string dir_;
  Node* top_ = nullptr;
  Node* base_ = nullptr;
};

TEST_F(BlockCopyLayoutTest, ChainStatusSaysWhereTheDataLies) {
  Node* file = &top_->child("file")->node();
  uint64_t maps[3] = {};
  const uint64_t offsets[3] = {3 * kMiB, 1 * kMiB, 2 * kMiB};  // in the order written
  for (int i = 0; i < 3; ++i) {
    auto st = run_sync(loop_, chain_status(*top_, base_, offsets[i], 64 * kKiB));
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_TRUE(st->allocated);
    EXPECT_EQ(st->file, file);
    maps[i] = st->map;
  }
  EXPECT_LT(maps[0], maps[1]);
  EXPECT_LT(maps[1], maps[2]);
  // A zero cluster and a range nothing above base holds have no place in a file.
  auto zero = run_sync(loop_, chain_status(*top_, base_, 0, 64 * kKiB));
  ASSERT_TRUE(zero);
  EXPECT_TRUE(zero->zero);
  EXPECT_EQ(zero->file, nullptr);
  auto below = run_sync(loop_, chain_status(*top_, base_, 512 * kKiB, 64 * kKiB));
  ASSERT_TRUE(below);
  EXPECT_FALSE(below->allocated);
  EXPECT_EQ(below->file, nullptr);
}

TEST_F(BlockCopyLayoutTest, GuestOrderCopiesByAscendingOffset) {
  TestHost host;
  EXPECT_EQ(copy_in_order(BlockCopyOrder::kGuest, host), (Calls{{true, 0, 64 * kKiB},
                                                                {false, 1 * kMiB, 128 * kKiB},
                                                                {false, 2 * kMiB, 64 * kKiB},
                                                                {false, 3 * kMiB, 64 * kKiB}}));
}

TEST_F(BlockCopyLayoutTest, SourceLayoutOrderCopiesByPlaceInTheFileZeroesFirst) {
  TestHost host;
  EXPECT_EQ(copy_in_order(BlockCopyOrder::kSourceLayout, host),
            (Calls{{true, 0, 64 * kKiB},
                   {false, 3 * kMiB, 64 * kKiB},
                   {false, 1 * kMiB, 128 * kKiB},
                   {false, 2 * kMiB, 64 * kKiB}}));
  EXPECT_EQ(host.total, 4 * kMiB);
  EXPECT_EQ(host.progress, 4 * kMiB);
  EXPECT_EQ(host.rate_limited, 256 * kKiB);
}

TEST_F(BlockCopyLayoutTest, SourceLayoutOrderStopsIssuingWhenCancelled) {
  // Planning the 4 MiB passes one pause point per planned chunk (skipped ranges included);
  // issuing passes one more per chunk to issue. Cancel at the second of those: only the
  // write-zeroes was issued.
  TestHost planner;
  copy_in_order(BlockCopyOrder::kSourceLayout, planner);
  const uint64_t planning_points = planner.pause_points - 4;
  TestHost host;
  host.cancel_at = planning_points + 2;
  Result<void> r;
  Calls calls = copy_in_order(BlockCopyOrder::kSourceLayout, host, &r);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), ECANCELED);
  EXPECT_EQ(calls, (Calls{{true, 0, 64 * kKiB}}));
}

}  // namespace
}  // namespace strata
