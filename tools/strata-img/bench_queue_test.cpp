// The bench request loop must schedule exactly as qemu-img bench's bench_cb: where requests go,
// how many are in flight, and when flushes happen. A fake target records every request and
// flush and completes requests in FIFO order, one loop turn later.
#include "bench_queue.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include "strata/event_loop.h"

namespace strata::tools::img {
namespace {

class FakeTarget final : public BenchTarget {
 public:
  explicit FakeTarget(EventLoop& loop) : loop_(&loop) {}

  Task<Result<void>> request(uint64_t offset, IoVec iov) override {
    return do_request(this, offset, iov.size());
  }
  Task<Result<void>> flush() override { return do_flush(this); }

  std::vector<uint64_t> offsets;  // in issue order
  std::string events;             // "r" per request issued, "F" per flush issued
  std::vector<int> in_flight_at_flush;
  int max_in_flight = 0;
  int fail_request = 0;  // the n-th request (1-based) fails with EIO; 0: none
  bool fail_flush = false;

 private:
  static Task<Result<void>> do_request(FakeTarget* t, uint64_t offset, uint64_t bytes) {
    EXPECT_EQ(bytes, 4096u);
    t->offsets.push_back(offset);
    const size_t n = t->offsets.size();
    t->events += 'r';
    t->in_flight_++;
    t->max_in_flight = std::max(t->max_in_flight, t->in_flight_);
    co_await t->loop_->yield();
    t->in_flight_--;
    if (static_cast<int>(n) == t->fail_request) co_return fail(EIO, "injected");
    co_return Result<void>{};
  }
  static Task<Result<void>> do_flush(FakeTarget* t) {
    t->events += 'F';
    t->in_flight_at_flush.push_back(t->in_flight_);
    co_await t->loop_->yield();
    if (t->fail_flush) co_return fail(EIO, "injected");
    co_return Result<void>{};
  }

  EventLoop* loop_;
  int in_flight_ = 0;
};

class BenchQueueTest : public testing::Test {
 protected:
  BenchOutcome run(BenchParams p) {
    buffers_.assign(static_cast<size_t>(bench_slots(p)) * p.bufsize, 0);
    return run_bench_queue(loop_, target_, p, buffers_.data());
  }

  EventLoop loop_;
  FakeTarget target_{loop_};
  std::vector<uint8_t> buffers_;
};

std::string repeat(char c, int n) { return std::string(static_cast<size_t>(n), c); }

TEST_F(BenchQueueTest, OffsetsAdvanceByStepAndWrapAtTheImageSize) {
  auto out = run({.count = 10,
                  .depth = 3,
                  .offset = 4096,
                  .bufsize = 4096,
                  .step = 12288,
                  .image_size = 65536});
  EXPECT_FALSE(out.error);
  const std::vector<uint64_t> expected = {4096, 16384, 28672, 40960, 53248,
                                          0,    12288, 24576, 36864, 49152};
  EXPECT_EQ(target_.offsets, expected);
  EXPECT_EQ(target_.events, repeat('r', 10));
}

TEST_F(BenchQueueTest, KeepsDepthRequestsInFlight) {
  auto out = run({.count = 100, .depth = 16, .image_size = 1 << 20});
  EXPECT_FALSE(out.error);
  EXPECT_EQ(target_.offsets.size(), 100u);
  EXPECT_EQ(target_.max_in_flight, 16);
}

TEST(BenchSlots, DepthUnlessFewerRequests) {
  EXPECT_EQ(bench_slots({.count = 100, .depth = 16}), 16);
  EXPECT_EQ(bench_slots({.count = 3, .depth = 64}), 3);
  EXPECT_EQ(bench_slots({.count = 0, .depth = 64}), 0);
}

TEST_F(BenchQueueTest, FewerRequestsThanDepth) {
  auto out = run({.count = 3, .depth = 8, .image_size = 1 << 20});
  EXPECT_FALSE(out.error);
  EXPECT_EQ(target_.offsets, (std::vector<uint64_t>{0, 4096, 8192}));
  EXPECT_EQ(target_.max_in_flight, 3);
}

TEST_F(BenchQueueTest, NoRequests) {
  auto out = run({.count = 0, .depth = 4, .image_size = 1 << 20, .flush_interval = 4});
  EXPECT_FALSE(out.error);
  EXPECT_EQ(target_.events, "");
}

TEST_F(BenchQueueTest, EmptyImageKeepsOffsetZero) {
  auto out = run({.count = 3, .depth = 1, .offset = 0, .image_size = 0});
  EXPECT_FALSE(out.error);
  EXPECT_EQ(target_.offsets, (std::vector<uint64_t>{0, 0, 0}));
}

TEST_F(BenchQueueTest, DrainedFlushEveryIntervalWithNothingInFlight) {
  // Whenever the requests not yet issued are a multiple of 16 (48, 32, 16 and, at the end, 0),
  // the queue drains and flushes.
  auto out = run({.count = 64, .depth = 8, .image_size = 1 << 20, .flush_interval = 16});
  EXPECT_FALSE(out.error);
  const std::string r16 = repeat('r', 16);
  EXPECT_EQ(target_.events, r16 + "F" + r16 + "F" + r16 + "F" + r16 + "F");
  EXPECT_EQ(target_.in_flight_at_flush, (std::vector<int>{0, 0, 0, 0}));
}

TEST_F(BenchQueueTest, UndrainedFlushesRunAlongside) {
  // Without draining, every completion that sees a multiple of 16 not issued flushes at once:
  // at 48, 32 and 16, and once for each of the last 8 completions (0 not issued), as bench_cb.
  auto out = run({.count = 64,
                  .depth = 8,
                  .image_size = 1 << 20,
                  .flush_interval = 16,
                  .drain_on_flush = false});
  EXPECT_FALSE(out.error);
  const std::string r16 = repeat('r', 16);
  EXPECT_EQ(target_.events, r16 + "F" + r16 + "F" + r16 + "F" + r16 + repeat('F', 8));
  // Issued while the rest of the queue is still in flight (all but the request that completed).
  EXPECT_EQ(target_.in_flight_at_flush.front(), 7);
}

TEST_F(BenchQueueTest, FailedRequestStopsTheRun) {
  target_.fail_request = 5;
  auto out = run({.count = 100, .depth = 2, .image_size = 1 << 20});
  ASSERT_TRUE(out.error);
  EXPECT_EQ(out.failed, "Failed request");
  EXPECT_EQ(out.error->err(), EIO);
  // The other slot's request may already have been issued; nothing after it.
  EXPECT_LE(target_.offsets.size(), 6u);
}

TEST_F(BenchQueueTest, FailedDrainedFlushIsAFailedRequest) {
  target_.fail_flush = true;
  auto out = run({.count = 64, .depth = 8, .image_size = 1 << 20, .flush_interval = 16});
  ASSERT_TRUE(out.error);
  EXPECT_EQ(out.failed, "Failed request");
  EXPECT_EQ(target_.events, repeat('r', 16) + "F");
}

TEST_F(BenchQueueTest, FailedUndrainedFlushIsAFailedFlushRequest) {
  target_.fail_flush = true;
  auto out = run({.count = 64,
                  .depth = 8,
                  .image_size = 1 << 20,
                  .flush_interval = 16,
                  .drain_on_flush = false});
  ASSERT_TRUE(out.error);
  EXPECT_EQ(out.failed, "Failed flush request");
}

}  // namespace
}  // namespace strata::tools::img
