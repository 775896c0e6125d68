// The conformance suite: the same specification of a node's I/O behaviour, run over every stack
// in stacks.cpp through the real Engine and a BlockBackend. See DESIGN.md section 6.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <vector>

#include "conformance_fixture.h"

namespace strata::testing {
namespace {

struct Range {
  uint64_t offset;
  uint64_t bytes;
};

// The shadow's view of a range, widened by `margin` on both sides within the node, so that a
// check also sees damage next to the range.
Range widened(Range r, uint64_t margin, uint64_t size) {
  uint64_t start = r.offset > margin ? r.offset - margin : 0;
  uint64_t end = std::min(size, r.offset + r.bytes + margin);
  return {start, end - start};
}

TEST_P(ConformanceTest, ReadsBackWritesAtAlignedOffsets) {
  const Range ranges[] = {
      {0, 4096}, {4096, 8192}, {65536, 65536}, {131072, 262144}, {kImageSize - 4096, 4096},
  };
  uint32_t seed = 1;
  for (Range r : ranges) {
    write_pattern(seed++, r.offset, r.bytes);
    expect_matches_shadow(r.offset, r.bytes);
  }
  expect_whole_node_matches_shadow();
}

TEST_P(ConformanceTest, ReadsBackWritesAtUnalignedOffsetsAndLengths) {
  const Range ranges[] = {
      {1, 1},      {511, 2},   {513, 1000},         {4095, 4098}, {12345, 54321},
      {700000, 1}, {65535, 3}, {kImageSize - 3, 3}, {3, 8189},    {20000, 100},
  };
  uint32_t seed = 1;
  for (Range r : ranges) {
    write_pattern(seed++, r.offset, r.bytes);
    Range around = widened(r, 4096 + 600, kImageSize);
    expect_matches_shadow(around.offset, around.bytes);
    // Unaligned reads of parts of what was written.
    expect_matches_shadow(r.offset + r.bytes / 2, r.bytes - r.bytes / 2);
  }
  expect_whole_node_matches_shadow();
}

TEST_P(ConformanceTest, ScatterGatherListsActAsOneBuffer) {
  // Written from three buffers, read back into seven (more than IoVec keeps inline).
  const uint64_t offset = 7;
  std::vector<uint8_t> data = pattern(3, offset, 4096);
  IoVec out;
  uint64_t pos = 0;
  for (uint64_t len : {1000, 1, 3095}) {
    out.push_back(data.data() + pos, len);
    pos += len;
  }
  ASSERT_TRUE(h().writev(offset, out));
  shadow_->write(offset, data);

  std::vector<uint8_t> back(4096, 0xee);
  IoVec in;
  pos = 0;
  for (uint64_t len : {5, 600, 1, 1, 1490, 1000, 999}) {
    in.push_back(back.data() + pos, len);
    pos += len;
  }
  ASSERT_EQ(pos, back.size());
  ASSERT_TRUE(h().readv(offset, in));
  EXPECT_EQ(first_difference(offset, shadow_->at(offset, back.size()), back), "");
}

// More buffers than one preadv/pwritev takes (IOV_MAX, 1024 on Linux).
TEST_P(ConformanceTest, ManySmallBuffersInOneRequest) {
  const uint64_t offset = 50001;
  const uint64_t piece = 7;
  const uint64_t count = 1500;
  std::vector<uint8_t> data = pattern(4, offset, piece * count);
  IoVec iov;
  for (uint64_t i = 0; i < count; ++i) iov.push_back(data.data() + i * piece, piece);
  auto written = h().writev(offset, iov);
  ASSERT_TRUE(written) << written.error().message();
  shadow_->write(offset, data);
  expect_matches_shadow(offset - 100, piece * count + 200);

  std::vector<uint8_t> back(piece * count, 0xee);
  IoVec in;
  for (uint64_t i = 0; i < count; ++i) in.push_back(back.data() + i * piece, piece);
  auto read = h().readv(offset, in);
  ASSERT_TRUE(read) << read.error().message();
  EXPECT_EQ(first_difference(offset, shadow_->at(offset, back.size()), back), "");
}

void expect_eio(const Result<void>& r, const char* what) {
  ASSERT_FALSE(r) << what << " succeeded";
  EXPECT_EQ(r.error().err(), EIO) << what << ": " << r.error().message();
}

TEST_P(ConformanceTest, RequestsBeyondTheEndFailWithEio) {
  write_pattern(1, kImageSize - 4096, 4096);
  std::vector<uint8_t> buf(512, 0x5a);
  const Range ranges[] = {{kImageSize, 512}, {kImageSize - 1, 2}, {kImageSize + 4096, 1}};
  for (Range r : ranges) {
    SCOPED_TRACE(::testing::Message() << "at " << r.offset << "+" << r.bytes);
    std::span<uint8_t> part(buf.data(), r.bytes);
    expect_eio(h().read(r.offset, part), "read");
    expect_eio(h().write(r.offset, part), "write");
    expect_eio(h().write_zeroes(r.offset, r.bytes), "write-zeroes");
  }
  // Nothing was written and the node did not grow.
  EXPECT_EQ(h().size(), kImageSize);
  expect_whole_node_matches_shadow();
}

TEST_P(ConformanceTest, RequestsWhoseEndOverflowsFailWithEio) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  std::vector<uint8_t> buf(1024, 0x5a);
  expect_eio(h().read(kMax - 511, buf), "read");
  expect_eio(h().write(kMax - 511, buf), "write");
  expect_eio(h().write_zeroes(kMax - 511, 1024), "write-zeroes at the end of the range");
  expect_eio(h().write_zeroes(4096, kMax - 100), "write-zeroes of a huge length");
  expect_eio(h().discard(4096, kMax - 100), "discard of a huge length");
  EXPECT_EQ(h().size(), kImageSize);
}

// Zeroes aligned and unaligned ranges, in the node and in the shadow.
void zero_ranges(Harness& h, Shadow& shadow, ReqFlags flags) {
  const Range ranges[] = {{0, 4096}, {5000, 3}, {8191, 8194}, {65536, 131072}, {200001, 50000}};
  for (Range r : ranges) {
    auto z = h.write_zeroes(r.offset, r.bytes, flags);
    ASSERT_TRUE(z) << r.offset << "+" << r.bytes << ": " << z.error().message();
    shadow.zero(r.offset, r.bytes);
  }
}

TEST_P(ConformanceTest, WriteZeroesReadsBackAsZeroes) {
  write_pattern(2, 0, 262144);
  zero_ranges(h(), *shadow_, ReqFlags::kNone);
  expect_matches_shadow(0, 262144 + 4096);
  expect_block_status_consistent();
}

TEST_P(ConformanceTest, WriteZeroesWithMayUnmapReadsBackAsZeroes) {
  write_pattern(2, 0, 262144);
  zero_ranges(h(), *shadow_, ReqFlags::kMayUnmap);
  expect_matches_shadow(0, 262144 + 4096);
  expect_block_status_consistent();
}

TEST_P(ConformanceTest, DiscardLeavesWhatTheStackDocuments) {
  const uint64_t written = 262144;
  write_pattern(5, 0, written);
  const Range ranges[] = {{4196, 60000}, {131072, 65536}, {250000, 1}};
  std::vector<uint8_t> before(shadow_->at(0, written).begin(), shadow_->at(0, written).end());
  for (Range r : ranges) {
    auto d = h().discard(r.offset, r.bytes);
    ASSERT_TRUE(d) << r.offset << "+" << r.bytes << ": " << d.error().message();
  }
  auto after = h().read(0, written);
  ASSERT_TRUE(after) << after.error().message();
  for (uint64_t i = 0; i < written; ++i) {
    bool discarded = std::any_of(std::begin(ranges), std::end(ranges),
                                 [i](Range r) { return i >= r.offset && i < r.offset + r.bytes; });
    uint8_t got = (*after)[i];
    if (!discarded || !caps().keeps_data) {
      ASSERT_EQ(got, before[i]) << "offset " << i << (discarded ? "" : " (not discarded)");
    } else if (caps().discard == DiscardEffect::kZeroes) {
      ASSERT_EQ(got, 0) << "offset " << i << " was discarded";
    } else {
      ASSERT_TRUE(got == 0 || got == before[i])
          << "offset " << i << " reads " << int(got) << ", neither zero nor its old value";
    }
  }
  expect_block_status_consistent();
}

TEST_P(ConformanceTest, BlockStatusCoversTheNodeAndItsZeroesReadAsZeroes) {
  // Untouched, written, zeroed (both ways) and discarded ranges side by side.
  write_pattern(6, 0, 65536);
  write_pattern(7, 300000, 100000);
  ASSERT_TRUE(h().write_zeroes(20000, 30000, ReqFlags::kMayUnmap));
  ASSERT_TRUE(h().write_zeroes(320000, 8192));
  ASSERT_TRUE(h().discard(350000, 20000));
  write_pattern(8, kImageSize - 1, 1);
  expect_block_status_consistent();
}

TEST_P(ConformanceTest, FlushSucceeds) {
  auto idle = h().flush();
  EXPECT_TRUE(idle) << idle.error().message();
  write_pattern(1, 4096, 8192);
  auto after_write = h().flush();
  EXPECT_TRUE(after_write) << after_write.error().message();
  expect_matches_shadow(0, 16384);
}

TEST_P(ConformanceTest, FuaWritesReadBack) {
  std::vector<uint8_t> data = pattern(9, 9000, 5000);
  auto r = h().write(9000, data, ReqFlags::kFua);
  ASSERT_TRUE(r) << r.error().message();
  shadow_->write(9000, data);
  expect_matches_shadow(8192, 8192);
}

TEST_P(ConformanceTest, TruncateGrowsAndShrinksOrRefusesAsDocumented) {
  write_pattern(9, kImageSize - 8192, 8192);
  if (caps().truncate_refusal) {
    auto r = h().truncate(2 * kImageSize);
    ASSERT_FALSE(r) << "truncate of a stack that documents a refusal";
    EXPECT_EQ(r.error().message(), *caps().truncate_refusal);
    EXPECT_EQ(h().size(), kImageSize);
    expect_whole_node_matches_shadow();
    return;
  }
  auto grown = h().truncate(2 * kImageSize);
  ASSERT_TRUE(grown) << grown.error().message();
  ASSERT_EQ(h().size(), 2 * kImageSize);
  shadow_->resize(2 * kImageSize);
  // The old end is intact and the new part reads as zeroes.
  expect_matches_shadow(kImageSize - 8192, kImageSize + 8192);
  write_pattern(10, 2 * kImageSize - 4096, 4096);
  expect_matches_shadow(2 * kImageSize - 8192, 8192);

  auto shrunk = h().truncate(kImageSize / 2);
  ASSERT_TRUE(shrunk) << shrunk.error().message();
  ASSERT_EQ(h().size(), kImageSize / 2);
  shadow_->resize(kImageSize / 2);
  expect_whole_node_matches_shadow();
  std::vector<uint8_t> buf(512);
  expect_eio(h().read(kImageSize / 2, buf), "read past the new end");
  expect_block_status_consistent();
}

std::string stack_name(const ::testing::TestParamInfo<StackSpec>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Stacks, ConformanceTest, ::testing::ValuesIn(all_stacks()), stack_name);

}  // namespace
}  // namespace strata::testing
