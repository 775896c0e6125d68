// The request path: padding, splitting, bouncing, serialisation, emulation, bounds, drain.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "strata/dirty_bitmap.h"
#include "test_drivers.h"

namespace strata::testing {
namespace {

using json = nlohmann::json;
constexpr Perm kRW = Perm::kConsistentRead | Perm::kWrite;

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
  return v;
}

class RequestTest : public CoreTest {
 protected:
  // A test-disk node with the given generic options, and a read-write user on it.
  TestDisk& open_disk(json extra = json::object(), uint64_t size = 64 * 1024) {
    extra["driver"] = "test-disk";
    extra["node-name"] = "d";
    extra["size"] = size;
    node = add(extra);
    return driver_of<TestDisk>(node);
  }
  void use_limits(const NodeLimits& lim) {
    driver_of<TestDisk>(node).lim = lim;
    node->refresh_limits();
  }
  void attach_user() { blk = attach(node, kRW | Perm::kResize, Perm::kAll); }

  Result<void> write(uint64_t offset, std::vector<uint8_t>& buf, ReqFlags flags = ReqFlags::kNone) {
    return run_sync(loop, blk->write(offset, buf.size(), IoVec(buf.data(), buf.size()), flags));
  }
  Result<void> read(uint64_t offset, std::vector<uint8_t>& buf) {
    return run_sync(loop, blk->read(offset, buf.size(), IoVec(buf.data(), buf.size())));
  }
  Result<void> zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags = ReqFlags::kNone) {
    return run_sync(loop, blk->pwrite_zeroes(offset, bytes, flags));
  }

  Node* node = nullptr;
  std::unique_ptr<BlockBackend> blk;
};

class UnalignedTest : public RequestTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(UnalignedTest, EveryOffsetAndLengthMatchesAShadowCopy) {
  const uint32_t align = GetParam();
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.request_alignment = align;
  use_limits(lim);
  attach_user();
  std::vector<uint8_t> shadow(disk.data.size(), 0);
  const uint64_t offsets[] = {0, 1, 511, 512, 513, 4095, 4096, 4097, 8191, 65536 - 4097};
  const uint64_t lengths[] = {1, 100, 511, 512, 513, 4096, 4097, 10000};
  uint8_t seed = 1;
  for (uint64_t off : offsets) {
    for (uint64_t len : lengths) {
      if (off + len > shadow.size()) continue;
      auto data = pattern(len, seed++);
      ASSERT_TRUE(write(off, data).has_value()) << off << "+" << len;
      std::memcpy(shadow.data() + off, data.data(), len);
      ASSERT_EQ(disk.data, shadow) << "after write " << off << "+" << len;
      std::vector<uint8_t> back(len);
      ASSERT_TRUE(read(off, back).has_value());
      ASSERT_EQ(back, data) << "read " << off << "+" << len;
    }
  }
  EXPECT_TRUE(disk.violations.empty()) << disk.violations.front();
}

INSTANTIATE_TEST_SUITE_P(Alignments, UnalignedTest, ::testing::Values(512u, 4096u));

TEST_F(RequestTest, MisalignedBuffersAreBounced) {
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.request_alignment = 512;
  lim.memory_alignment = 4096;
  use_limits(lim);
  attach_user();
  std::vector<uint8_t> raw(8192 + 1);
  auto data = pattern(8192, 3);
  std::memcpy(raw.data() + 1, data.data(), data.size());
  auto w = run_sync(loop, blk->write(4096, 8192, IoVec(raw.data() + 1, 8192)));
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(0, std::memcmp(disk.data.data() + 4096, data.data(), data.size()));
  std::vector<uint8_t> out(8192 + 1);
  ASSERT_TRUE(run_sync(loop, blk->read(4096, 8192, IoVec(out.data() + 1, 8192))).has_value());
  EXPECT_EQ(0, std::memcmp(out.data() + 1, data.data(), data.size()));
  EXPECT_TRUE(disk.violations.empty()) << disk.violations.front();
}

// Writes `data` at `offset` through `blk` and counts completions; a detached test coroutine.
Task<void> counted_write(BlockBackend* blk, uint64_t offset, std::vector<uint8_t>* data, int* done,
                         int* failed) {
  auto task = blk->write(offset, data->size(), IoVec(data->data(), data->size()));
  auto r = co_await task;
  if (!r) ++*failed;
  ++*done;
}

TEST_F(RequestTest, ConcurrentUnalignedWritesToOneBlockLoseNothing) {
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.request_alignment = 4096;
  use_limits(lim);
  attach_user();
  disk.yield_io = true;  // every driver call suspends, so requests interleave
  constexpr int kWrites = 48;
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<uint64_t> offsets;
  for (int i = 0; i < kWrites; ++i) {
    // 48 writes of 100 bytes, packed inside and across the first two blocks.
    offsets.push_back(4000 + i * 100 - (i % 2 == 0 ? 3900 : 0));
    buffers.push_back(std::vector<uint8_t>(100, static_cast<uint8_t>(i + 1)));
  }
  int done = 0;
  int failed = 0;
  for (int i = 0; i < kWrites; ++i)
    spawn(counted_write(blk.get(), offsets[i], &buffers[i], &done, &failed));
  run_until(loop, [&] { return done == kWrites; });
  EXPECT_EQ(failed, 0);
  // Later writes win where they overlap, as if they ran one after another.
  std::vector<uint8_t> expected(disk.data.size(), 0);
  for (int i = 0; i < kWrites; ++i) {
    std::memcpy(expected.data() + offsets[i], buffers[i].data(), 100);
  }
  EXPECT_EQ(disk.data, expected);
  EXPECT_EQ(node->in_flight(), 0u);
}

TEST_F(RequestTest, AlignedWritesDoNotSerialise) {
  TestDisk& disk = open_disk();
  attach_user();
  disk.yield_io = true;
  std::vector<std::vector<uint8_t>> buffers(4, std::vector<uint8_t>(4096, 9));
  int done = 0;
  int failed = 0;
  for (int i = 0; i < 4; ++i) spawn(counted_write(blk.get(), 0, &buffers[i], &done, &failed));
  run_until(loop, [&] { return done == 4; });
  EXPECT_EQ(disk.max_in_flight_writes, 4u);
}

TEST_F(RequestTest, SplitsAtMaxTransfer) {
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.request_alignment = 512;
  lim.max_transfer = 4096;
  use_limits(lim);
  attach_user();
  auto data = pattern(20000, 5);
  ASSERT_TRUE(write(700, data).has_value());
  std::vector<uint8_t> back(20000);
  ASSERT_TRUE(read(700, back).has_value());
  EXPECT_EQ(back, data);
  EXPECT_TRUE(disk.violations.empty()) << disk.violations.front();
  // [512, 20992) padded = 20480 bytes: five writes of at most 4096.
  EXPECT_EQ(disk.calls_of("write").size(), 5u);
}

TEST_F(RequestTest, FuaIsEmulatedWithAFlushAfterTheWrite) {
  TestDisk& disk = open_disk();
  attach_user();
  auto data = pattern(4096, 1);
  ASSERT_TRUE(write(0, data, ReqFlags::kFua).has_value());
  ASSERT_EQ(disk.calls.size(), 2u);
  EXPECT_EQ(disk.calls[0].op, "write");
  EXPECT_FALSE(has_flag(disk.calls[0].flags, ReqFlags::kFua));
  EXPECT_EQ(disk.calls[1].op, "flush");

  disk.calls.clear();
  NodeLimits lim;
  lim.supports_fua = true;
  use_limits(lim);
  ASSERT_TRUE(write(0, data, ReqFlags::kFua).has_value());
  ASSERT_EQ(disk.calls.size(), 1u);
  EXPECT_TRUE(has_flag(disk.calls[0].flags, ReqFlags::kFua));
}

TEST_F(RequestTest, WriteZeroesFallsBackToWritingZeroes) {
  TestDisk& disk = open_disk({}, 3 << 20);
  attach_user();
  std::fill(disk.data.begin(), disk.data.end(), 0xaa);
  // No write-zeroes support: written as data, in bounded buffers.
  ASSERT_TRUE(zeroes(0, 3 << 20).has_value());
  EXPECT_TRUE(std::all_of(disk.data.begin(), disk.data.end(), [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(disk.calls_of("zeroes").empty());
  auto writes = disk.calls_of("write");
  EXPECT_EQ(writes.size(), 3u);
  for (const Call& c : writes) EXPECT_LE(c.bytes, 1u << 20);

  // Without fallback: refused, nothing written.
  std::fill(disk.data.begin(), disk.data.end(), 0xaa);
  auto r = zeroes(0, 4096, ReqFlags::kNoFallback);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err(), ENOTSUP);
  EXPECT_EQ(disk.data[0], 0xaa);

  // Supported but refused at run time (ENOTSUP): the fallback again, unless kNoFallback.
  NodeLimits lim;
  lim.supports_write_zeroes = true;
  use_limits(lim);
  disk.zeroes_errno = ENOTSUP;
  ASSERT_TRUE(zeroes(0, 4096).has_value());
  EXPECT_EQ(disk.data[0], 0);
  EXPECT_EQ(disk.data[4096], 0xaa);
  auto nf = zeroes(8192, 4096, ReqFlags::kNoFallback);
  ASSERT_FALSE(nf.has_value());
  EXPECT_EQ(nf.error().err(), ENOTSUP);
}

TEST_F(RequestTest, UnalignedWriteZeroesKeepsNeighbours) {
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.request_alignment = 512;
  lim.supports_write_zeroes = true;
  use_limits(lim);
  attach_user();
  std::fill(disk.data.begin(), disk.data.end(), 0x55);
  ASSERT_TRUE(zeroes(100, 1000).has_value());
  for (size_t i = 0; i < 2048; ++i) {
    ASSERT_EQ(disk.data[i], (i >= 100 && i < 1100) ? 0 : 0x55) << i;
  }
  auto z = disk.calls_of("zeroes");
  ASSERT_EQ(z.size(), 1u);
  EXPECT_EQ(z[0].offset, 512u);
  EXPECT_EQ(z[0].bytes, 512u);
  EXPECT_TRUE(disk.violations.empty()) << disk.violations.front();
  // Unaligned and kNoFallback cannot be done without writing data.
  EXPECT_EQ(zeroes(100, 1000, ReqFlags::kNoFallback).error().err(), ENOTSUP);
}

TEST_F(RequestTest, WriteZeroesSplitsAtItsMaximum) {
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.supports_write_zeroes = true;
  lim.max_pwrite_zeroes = 8192;
  lim.pwrite_zeroes_alignment = 4096;
  use_limits(lim);
  attach_user();
  ASSERT_TRUE(zeroes(1000, 30000).has_value());
  auto z = disk.calls_of("zeroes");
  // Up to the first 4096 boundary, then whole units of at most 8192, then the rest.
  ASSERT_EQ(z.size(), 5u);
  EXPECT_EQ(z[0].offset, 1000u);
  EXPECT_EQ(z[0].bytes, 3096u);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(z[i].bytes, 8192u);
  EXPECT_EQ(z[4].offset, 28672u);
  EXPECT_EQ(z[4].bytes, 31000u - 28672u);
  EXPECT_TRUE(disk.violations.empty()) << disk.violations.front();
}

TEST_F(RequestTest, MayUnmapNeedsDiscardUnmap) {
  NodeLimits lim;
  lim.supports_write_zeroes = true;
  TestDisk& ignore_disk = open_disk();
  use_limits(lim);
  attach_user();
  ASSERT_TRUE(zeroes(0, 4096, ReqFlags::kMayUnmap).has_value());
  EXPECT_FALSE(has_flag(ignore_disk.calls_of("zeroes").at(0).flags, ReqFlags::kMayUnmap));
  blk.reset();
  ASSERT_TRUE(run_sync(loop, engine->delete_node("d")).has_value());

  TestDisk& unmap_disk = open_disk({{"discard", "unmap"}});
  use_limits(lim);
  attach_user();
  ASSERT_TRUE(zeroes(0, 4096, ReqFlags::kMayUnmap).has_value());
  EXPECT_TRUE(has_flag(unmap_disk.calls_of("zeroes").at(0).flags, ReqFlags::kMayUnmap));
}

TEST_F(RequestTest, DetectZeroesTurnsZeroWritesIntoWriteZeroes) {
  NodeLimits lim;
  lim.supports_write_zeroes = true;
  TestDisk& disk = open_disk({{"detect-zeroes", "unmap"}, {"discard", "unmap"}});
  use_limits(lim);
  attach_user();
  std::vector<uint8_t> zero(4096, 0);
  std::vector<uint8_t> data = pattern(4096, 1);
  ASSERT_TRUE(write(0, zero).has_value());
  ASSERT_TRUE(write(4096, data).has_value());
  ASSERT_EQ(disk.calls.size(), 2u);
  EXPECT_EQ(disk.calls[0].op, "zeroes");
  EXPECT_TRUE(has_flag(disk.calls[0].flags, ReqFlags::kMayUnmap));
  EXPECT_EQ(disk.calls[1].op, "write");
}

TEST_F(RequestTest, DetectZeroesOnDoesNotUnmap) {
  NodeLimits lim;
  lim.supports_write_zeroes = true;
  TestDisk& disk = open_disk({{"detect-zeroes", "on"}, {"discard", "unmap"}});
  use_limits(lim);
  attach_user();
  std::vector<uint8_t> zero(4096, 0);
  ASSERT_TRUE(write(0, zero).has_value());
  ASSERT_EQ(disk.calls.size(), 1u);
  EXPECT_EQ(disk.calls[0].op, "zeroes");
  EXPECT_FALSE(has_flag(disk.calls[0].flags, ReqFlags::kMayUnmap));
}

TEST_F(RequestTest, DiscardIsIgnoredUnlessUnmap) {
  NodeLimits lim;
  lim.supports_discard = true;
  lim.pdiscard_alignment = 4096;
  TestDisk& quiet = open_disk();
  use_limits(lim);
  attach_user();
  ASSERT_TRUE(run_sync(loop, blk->discard(0, 65536)).has_value());
  EXPECT_TRUE(quiet.calls_of("discard").empty());
  blk.reset();
  ASSERT_TRUE(run_sync(loop, engine->delete_node("d")).has_value());

  TestDisk& disk = open_disk({{"discard", "unmap"}});
  use_limits(lim);
  attach_user();
  // Aligned inward: [1000, 11000) discards [4096, 8192) only.
  ASSERT_TRUE(run_sync(loop, blk->discard(1000, 10000)).has_value());
  auto d = disk.calls_of("discard");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].offset, 4096u);
  EXPECT_EQ(d[0].bytes, 4096u);
  // Nothing whole inside: no call at all.
  ASSERT_TRUE(run_sync(loop, blk->discard(5000, 1000)).has_value());
  EXPECT_EQ(disk.calls_of("discard").size(), 1u);
  // A driver that cannot discard after all: still success.
  disk.discard_errno = ENOTSUP;
  EXPECT_TRUE(run_sync(loop, blk->discard(0, 8192)).has_value());
  disk.discard_errno = EIO;
  EXPECT_EQ(run_sync(loop, blk->discard(0, 8192)).error().err(), EIO);
}

TEST_F(RequestTest, FlushRunsParentBeforeChildren) {
  Node* q = add({{"driver", "test-fmt"},
                 {"node-name", "q"},
                 {"file", {{"driver", "test-disk"}, {"node-name", "f"}}}});
  auto user = attach(q, kRW, Perm::kAll);
  event_log().clear();
  ASSERT_TRUE(run_sync(loop, user->flush()).has_value());
  EXPECT_EQ(events("flush"), (std::vector<std::string>{"q", "f"}));
}

TEST_F(RequestTest, NoFlushSkipsTheDiskFlushesOfTheNodeAndInheritingChildren) {
  add({{"driver", "test-disk"}, {"node-name", "ref"}});
  Node* q = add({{"driver", "test-fmt"},
                 {"node-name", "q"},
                 {"cache", {{"no-flush", true}}},
                 {"file", {{"driver", "test-disk"}, {"node-name", "f"}}},
                 {"backing", "ref"}});
  auto user = attach(q, kRW, Perm::kAll);
  event_log().clear();
  ASSERT_TRUE(run_sync(loop, user->flush()).has_value());
  // q still writes out what it caches; f inherited no-flush and skips its disk flush; the backing
  // child is only read, so it has nothing to flush.
  EXPECT_EQ(events("flush"), std::vector<std::string>{"q"});
  Node* q2 = add({{"driver", "test-fmt"},
                  {"node-name", "q2"},
                  {"cache", {{"no-flush", true}}},
                  {"file", "ref"}});
  auto user2 = attach(q2, kRW, Perm::kAll);
  event_log().clear();
  ASSERT_TRUE(run_sync(loop, user2->flush()).has_value());
  // A referenced child keeps its own setting.
  EXPECT_EQ(events("flush"), (std::vector<std::string>{"q2", "ref"}));
}

TEST_F(RequestTest, BlockStatusClampsAndMarks) {
  TestDisk& disk = open_disk();
  using F = BlockStatusFlags;
  disk.extents = {{4096, F::kData}, {12288, F::kZero}, {65536, F::kData}};
  attach_user();
  auto a = run_sync(loop, blk->block_status(0, 1 << 20));
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->bytes, 4096u);
  EXPECT_EQ(a->flags, F::kData | F::kAllocated | F::kOffsetValid);
  EXPECT_EQ(a->file, node);
  EXPECT_EQ(a->map, 0u);
  auto z = run_sync(loop, blk->block_status(4096, 100000));
  EXPECT_EQ(z->bytes, 8192u);
  EXPECT_EQ(z->flags, F::kZero | F::kAllocated);
  auto e = run_sync(loop, blk->block_status(12288, 1 << 30));
  EXPECT_EQ(e->bytes, 65536u - 12288u);
  EXPECT_TRUE(has_flag(e->flags, F::kEof));
  // Only the last extent touches the end.
  EXPECT_FALSE(has_flag(z->flags, F::kEof));
  EXPECT_EQ(run_sync(loop, blk->block_status(0, 0)).error().err(), EINVAL);
  EXPECT_EQ(run_sync(loop, blk->block_status(65536, 512)).error().err(), EINVAL);
}

TEST_F(RequestTest, BlockStatusFollowsRawIntoTheFile) {
  Node* disk_node = add({{"driver", "test-disk"}, {"node-name", "f"}});
  auto& disk = driver_of<TestDisk>(disk_node);
  using F = BlockStatusFlags;
  disk.extents = {{8192, F::kZero}};
  Node* filter = add({{"driver", "test-filter"}, {"node-name", "flt"}, {"file", "f"}});
  auto user = attach(filter, Perm::kConsistentRead, Perm::kAll);
  auto st = run_sync(loop, user->block_status(4096, 1 << 20));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->bytes, 4096u);
  EXPECT_EQ(st->flags, F::kZero | F::kAllocated);
  auto tail = run_sync(loop, user->block_status(8192, 1 << 20));
  EXPECT_EQ(tail->file, disk_node);
  EXPECT_EQ(tail->flags, F::kData | F::kAllocated | F::kOffsetValid | F::kEof);
}

TEST_F(RequestTest, UnallocatedWithoutBackingReadsAsZero) {
  Node* q = add({{"driver", "test-fmt"}, {"node-name", "q"}, {"file", {{"driver", "test-disk"}}}});
  driver_of<TestFormat>(q).report_unallocated = true;
  auto user = attach(q, Perm::kConsistentRead, Perm::kAll);
  auto st = run_sync(loop, user->block_status(0, 4096));
  EXPECT_EQ(st->flags, BlockStatusFlags::kZero);

  Node* q2 = add({{"driver", "test-fmt"},
                  {"file", {{"driver", "test-disk"}}},
                  {"backing", {{"driver", "test-disk"}}}});
  driver_of<TestFormat>(q2).report_unallocated = true;
  auto user2 = attach(q2, Perm::kConsistentRead, Perm::kAll);
  EXPECT_EQ(run_sync(loop, user2->block_status(0, 4096))->flags, BlockStatusFlags::kNone);
}

TEST_F(RequestTest, UserRequestsOutsideTheNodeFailWithEio) {
  open_disk();
  attach_user();
  std::vector<uint8_t> buf(512);
  auto past = run_sync(loop, blk->read(65536 - 256, 512, IoVec(buf.data(), 512)));
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().err(), EIO);
  EXPECT_EQ(past.error().message(), "Input/output error");
  EXPECT_EQ(run_sync(loop, blk->write(65536, 512, IoVec(buf.data(), 512))).error().err(), EIO);
  EXPECT_EQ(run_sync(loop, blk->read(UINT64_MAX - 10, 512, IoVec(buf.data(), 512))).error().err(),
            EIO);
  EXPECT_EQ(run_sync(loop, blk->pwrite_zeroes(1, UINT64_MAX)).error().err(), EIO);
  EXPECT_EQ(run_sync(loop, blk->discard(65536, 1)).error().err(), EIO);
  EXPECT_TRUE(run_sync(loop, blk->read(65536, 0, IoVec())).has_value());
}

TEST_F(RequestTest, NodeLevelReadsPastTheEndAreZeroFilled) {
  TestDisk& disk = open_disk();
  NodeLimits lim;
  lim.request_alignment = 512;
  use_limits(lim);
  std::fill(disk.data.begin(), disk.data.end(), 0x77);
  std::vector<uint8_t> buf(1024, 0xff);
  ASSERT_TRUE(run_sync(loop, node->read(65536 - 300, 1024, IoVec(buf.data(), 1024))).has_value());
  for (size_t i = 0; i < 1024; ++i) ASSERT_EQ(buf[i], i < 300 ? 0x77 : 0) << i;
  EXPECT_TRUE(disk.violations.empty()) << disk.violations.front();
  auto overflow = run_sync(loop, node->read(UINT64_MAX, 2, IoVec(buf.data(), 2)));
  EXPECT_EQ(overflow.error().err(), EINVAL);
  auto mismatch = run_sync(loop, node->read(0, 512, IoVec(buf.data(), 100)));
  EXPECT_EQ(mismatch.error().err(), EINVAL);
}

TEST_F(RequestTest, NodeLevelWritesPastTheEndNeedCanGrow) {
  TestDisk& disk = open_disk();
  std::vector<uint8_t> buf = pattern(1024, 2);
  auto refused = run_sync(loop, node->write(65536 - 512, 1024, IoVec(buf.data(), 1024)));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().err(), EIO);
  NodeLimits lim;
  lim.can_grow = true;
  lim.request_alignment = 512;
  use_limits(lim);
  ASSERT_TRUE(run_sync(loop, node->write(65536 + 100, 1024, IoVec(buf.data(), 1024))).has_value());
  EXPECT_EQ(node->size(), 65536u + 1536u);
  EXPECT_EQ(0, std::memcmp(disk.data.data() + 65536 + 100, buf.data(), 1024));
  EXPECT_EQ(disk.data[65536], 0);
}

TEST_F(RequestTest, WritesToAReadOnlyNodeFailWithEperm) {
  open_disk({{"read-only", true}});
  std::vector<uint8_t> buf(512);
  auto w = run_sync(loop, node->write(0, 512, IoVec(buf.data(), 512)));
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().err(), EPERM);
  EXPECT_EQ(w.error().message(), "Block node is read-only");
  EXPECT_EQ(run_sync(loop, node->pwrite_zeroes(0, 512)).error().err(), EPERM);
  EXPECT_EQ(run_sync(loop, node->discard(0, 512)).error().err(), EPERM);
  EXPECT_EQ(run_sync(loop, node->truncate(4096, false, PreallocMode::kOff)).error().err(), EPERM);
}

Task<void> counted_read(BlockBackend* blk, uint64_t offset, std::vector<uint8_t>* buf, int* done) {
  auto task = blk->read(offset, buf->size(), IoVec(buf->data(), buf->size()));
  auto r = co_await task;
  EXPECT_TRUE(r.has_value());
  ++*done;
}

Task<void> drain_then_flag(Node* node, bool* drained) {
  auto task = node->drain();
  co_await task;
  *drained = true;
}

TEST_F(RequestTest, DrainWaitsForRequestsInFlight) {
  TestDisk& disk = open_disk();
  attach_user();
  disk.gate_closed = true;
  std::vector<std::vector<uint8_t>> bufs(3, std::vector<uint8_t>(4096));
  int done = 0;
  for (int i = 0; i < 3; ++i) spawn(counted_read(blk.get(), i * 4096, &bufs[i], &done));
  EXPECT_EQ(node->in_flight(), 3u);
  bool drained = false;
  spawn(drain_then_flag(node, &drained));
  loop.context().restart();
  loop.poll();
  EXPECT_FALSE(drained);
  EXPECT_EQ(done, 0);
  disk.open_gate();
  run_until(loop, [&] { return drained; });
  EXPECT_EQ(done, 3);
  EXPECT_EQ(node->in_flight(), 0u);
  // With nothing in flight, drain returns at once.
  bool again = false;
  spawn(drain_then_flag(node, &again));
  EXPECT_TRUE(again);
}

TEST_F(RequestTest, TruncateChangesSizeThroughTheDriver) {
  TestDisk& disk = open_disk();
  attach_user();
  ASSERT_TRUE(run_sync(loop, blk->truncate(1 << 20, false, PreallocMode::kOff)).has_value());
  EXPECT_EQ(blk->size(), 1u << 20);
  EXPECT_EQ(disk.calls_of("truncate").size(), 1u);
}

// ---- dirty tracking (dirty_bitmap.h) ----

TEST(DirtyBitmapTest, SetResetCountAndSearchAtTheGranularity) {
  DirtyBitmap bm(10 * 4096 + 100, 4096);  // 11 granules, the last one 100 bytes long
  EXPECT_EQ(bm.count(), 0u);
  EXPECT_FALSE(bm.next_dirty(0).has_value());
  bm.set(4095, 2);  // touches granules 0 and 1
  EXPECT_EQ(bm.count(), 8192u);
  EXPECT_TRUE(bm.get(0));
  EXPECT_TRUE(bm.get(8191));
  EXPECT_FALSE(bm.get(8192));
  bm.set(4096, 1);  // already dirty: no change
  EXPECT_EQ(bm.count(), 8192u);
  EXPECT_EQ(bm.next_dirty(0), 0u);
  EXPECT_EQ(bm.next_dirty(5000), 4096u);  // the granule holding 5000
  EXPECT_FALSE(bm.next_dirty(8192).has_value());
  EXPECT_EQ(bm.dirty_run(0, 1 << 20), 8192u);
  EXPECT_EQ(bm.dirty_run(0, 4096), 4096u);
  bm.set(10 * 4096, 1);  // the short last granule counts its 100 bytes only
  EXPECT_EQ(bm.count(), 8192u + 100);
  EXPECT_EQ(bm.next_dirty(8192), 10u * 4096);
  EXPECT_EQ(bm.dirty_run(10 * 4096, 1 << 20), 100u);
  bm.reset(0, 4096);
  EXPECT_EQ(bm.count(), 4096u + 100);
  EXPECT_EQ(bm.next_dirty(0), 4096u);
  bm.set(1 << 30, 4096);  // past the size: ignored
  bm.reset(0, 1 << 30);   // clamped to the size
  EXPECT_EQ(bm.count(), 0u);
  EXPECT_FALSE(bm.next_dirty(0).has_value());
}

TEST(DirtyBitmapTest, SearchCrossesWordsAndReportsNewDirtOnce) {
  DirtyBitmap bm(uint64_t{1} << 30, 65536);  // 16384 granules, 256 words
  int notified = 0;
  bm.set_on_dirty([&] { ++notified; });
  bm.set(uint64_t{700} << 16, 3 << 16);
  EXPECT_EQ(notified, 1);
  bm.set(uint64_t{701} << 16, 1);  // nothing new
  EXPECT_EQ(notified, 1);
  EXPECT_EQ(bm.next_dirty(0), uint64_t{700} << 16);
  EXPECT_EQ(bm.dirty_run(uint64_t{700} << 16, uint64_t{1} << 30), uint64_t{3} << 16);
  bm.set((uint64_t{1} << 30) - 1, 1);
  EXPECT_EQ(bm.next_dirty(uint64_t{703} << 16), (uint64_t{1} << 30) - 65536);
  EXPECT_EQ(bm.count(), uint64_t{4} << 16);
}

TEST_F(RequestTest, EveryWriteClassRequestMarksAttachedBitmapsReadsDoNot) {
  TestDisk& disk = open_disk({{"discard", "unmap"}}, 64 * 1024);
  NodeLimits lim;
  lim.supports_write_zeroes = true;
  lim.supports_discard = true;
  use_limits(lim);
  attach_user();
  DirtyBitmap bm(64 * 1024, 4096);
  node->add_dirty_bitmap(bm);
  std::vector<uint8_t> buf(100, 1);
  ASSERT_TRUE(read(0, buf).has_value());
  EXPECT_EQ(bm.count(), 0u);
  ASSERT_TRUE(write(4096 + 10, buf).has_value());
  EXPECT_EQ(bm.count(), 4096u);
  EXPECT_TRUE(bm.get(4096));
  ASSERT_TRUE(zeroes(16384, 8192).has_value());
  EXPECT_EQ(bm.count(), 3 * 4096u);
  ASSERT_TRUE(run_sync(loop, blk->discard(32768, 4096)).has_value());
  EXPECT_EQ(bm.count(), 4 * 4096u);
  // A failed write may have changed its range: it counts too.
  disk.zeroes_errno = EIO;
  EXPECT_FALSE(zeroes(49152, 4096).has_value());
  EXPECT_TRUE(bm.get(49152));
  EXPECT_EQ(node->writes_in_flight(), 0u);
  // Once removed, the bitmap sees nothing more.
  node->remove_dirty_bitmap(bm);
  ASSERT_TRUE(write(0, buf).has_value());
  EXPECT_FALSE(bm.get(0));
}

}  // namespace
}  // namespace strata::testing
