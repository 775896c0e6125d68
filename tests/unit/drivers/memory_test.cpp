// The memory driver, driven through the Driver interface.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "drivers.h"
#include "fake_open_context.h"
#include "strata/event_loop.h"

namespace strata {
namespace {

using nlohmann::json;
using testing::FakeOpenContext;
using testing::open_driver;

constexpr uint64_t kChunk = 64 * 1024;  // the driver's allocation unit
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kTiB = uint64_t{1} << 40;

constexpr BlockStatusFlags kHole = BlockStatusFlags::kZero | BlockStatusFlags::kOffsetValid;
constexpr BlockStatusFlags kData = BlockStatusFlags::kData | BlockStatusFlags::kOffsetValid;

std::vector<uint8_t> pattern(std::size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), seed);
  return v;
}

class MemoryTest : public ::testing::Test {
 protected:
  void open(json options, OptionSyntax syntax = OptionSyntax::kJson) {
    ctx_ = std::make_unique<FakeOpenContext>(loop_, std::move(options), syntax);
    auto d = open_driver(loop_, drivers::kMemory, *ctx_);
    ASSERT_TRUE(d) << d.error().message();
    d_ = std::move(*d);
  }

  std::vector<uint8_t> read(uint64_t offset, std::size_t n) {
    std::vector<uint8_t> buf(n, 0xee);
    auto r = testing::read(loop_, *d_, offset, buf);
    EXPECT_TRUE(r) << r.error().message();
    return buf;
  }

  void write(uint64_t offset, std::vector<uint8_t> data) {
    auto r = testing::write(loop_, *d_, offset, data);
    ASSERT_TRUE(r) << r.error().message();
  }

  BlockStatus status(uint64_t offset, uint64_t bytes) {
    auto st = testing::status(loop_, *d_, offset, bytes);
    EXPECT_TRUE(st) << st.error().message();
    EXPECT_EQ(st->map, offset);
    EXPECT_EQ(st->file, ctx_->node_address());
    return *st;
  }

  void zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
    auto r = run_sync(loop_, d_->pwrite_zeroes(offset, bytes, flags));
    ASSERT_TRUE(r) << r.error().message();
  }

  void discard(uint64_t offset, uint64_t bytes) {
    auto r = run_sync(loop_, d_->pdiscard(offset, bytes));
    ASSERT_TRUE(r) << r.error().message();
  }

  Result<void> truncate(uint64_t size, PreallocMode prealloc = PreallocMode::kOff) {
    return run_sync(loop_, d_->truncate(size, true, prealloc));
  }

  EventLoop loop_;
  std::unique_ptr<FakeOpenContext> ctx_;
  std::unique_ptr<Driver> d_;
};

TEST_F(MemoryTest, DescribesItself) {
  EXPECT_EQ(drivers::kMemory.name, "memory");
  EXPECT_EQ(drivers::kMemory.kind, DriverKind::kProtocol);
  open({{"size", kMiB}});
  NodeLimits l = d_->limits();
  EXPECT_EQ(l.request_alignment, 1u);
  EXPECT_TRUE(l.supports_fua);
  EXPECT_TRUE(l.supports_write_zeroes);
  EXPECT_TRUE(l.supports_zero_unmap);
  EXPECT_TRUE(l.supports_discard);
  EXPECT_FALSE(l.can_grow);
}

TEST_F(MemoryTest, FreshNodeReadsZeroesAndIsOneHole) {
  open({{"size", kMiB}});
  EXPECT_EQ(d_->length(), kMiB);
  EXPECT_EQ(read(1000, 3 * kChunk), std::vector<uint8_t>(3 * kChunk, 0));
  BlockStatus st = status(0, kMiB);
  EXPECT_EQ(st.bytes, kMiB);
  EXPECT_EQ(st.flags, kHole);
}

TEST_F(MemoryTest, WriteReadBackAcrossChunksAndBuffers) {
  open({{"size", kMiB}});
  // Two buffers, unaligned, spanning three chunks.
  std::vector<uint8_t> a = pattern(kChunk, 1);
  std::vector<uint8_t> b = pattern(kChunk + 100, 7);
  IoVec iov(a.data(), a.size());
  iov.push_back(b.data(), b.size());
  uint64_t offset = kChunk - 50;
  uint64_t bytes = a.size() + b.size();
  ASSERT_TRUE(run_sync(loop_, d_->pwritev(offset, bytes, iov, ReqFlags::kFua)));

  std::vector<uint8_t> want = a;
  want.insert(want.end(), b.begin(), b.end());
  EXPECT_EQ(read(offset, bytes), want);
  // Around the write: zeroes on both sides.
  std::vector<uint8_t> around = read(offset - 10, bytes + 20);
  EXPECT_EQ(std::vector<uint8_t>(around.begin(), around.begin() + 10), std::vector<uint8_t>(10, 0));
  EXPECT_EQ(std::vector<uint8_t>(around.begin() + 10, around.end() - 10), want);
  EXPECT_EQ(std::vector<uint8_t>(around.end() - 10, around.end()), std::vector<uint8_t>(10, 0));
}

TEST_F(MemoryTest, BlockStatusFollowsChunks) {
  open({{"size", 8 * kChunk}});
  write(kChunk + 5, {1});          // chunk 1
  write(2 * kChunk, {2});          // chunk 2
  write(5 * kChunk + 10, {3, 4});  // chunk 5

  BlockStatus st = status(0, 8 * kChunk);
  EXPECT_EQ(st.flags, kHole);
  EXPECT_EQ(st.bytes, kChunk);

  st = status(kChunk + 7, 7 * kChunk - 7);
  EXPECT_EQ(st.flags, kData);
  EXPECT_EQ(st.bytes, 2 * kChunk - 7);  // chunks 1 and 2 form one run

  st = status(3 * kChunk, 5 * kChunk);
  EXPECT_EQ(st.flags, kHole);
  EXPECT_EQ(st.bytes, 2 * kChunk);

  st = status(5 * kChunk, 3 * kChunk);
  EXPECT_EQ(st.flags, kData);
  EXPECT_EQ(st.bytes, kChunk);

  st = status(6 * kChunk, 2 * kChunk);
  EXPECT_EQ(st.flags, kHole);
  EXPECT_EQ(st.bytes, 2 * kChunk);

  // The query's length bounds the answer.
  st = status(kChunk, 100);
  EXPECT_EQ(st.flags, kData);
  EXPECT_EQ(st.bytes, 100u);
  st = status(0, 100);
  EXPECT_EQ(st.flags, kHole);
  EXPECT_EQ(st.bytes, 100u);
}

TEST_F(MemoryTest, HugeNodeCostsOnlyWhatIsWritten) {
  open({{"size", kTiB}});
  EXPECT_EQ(d_->length(), kTiB);
  uint64_t middle = kTiB / 2;
  write(middle, pattern(4096, 9));
  EXPECT_EQ(read(middle, 4096), pattern(4096, 9));
  EXPECT_EQ(read(kTiB - 4096, 4096), std::vector<uint8_t>(4096, 0));

  BlockStatus st = status(0, kTiB);
  EXPECT_EQ(st.flags, kHole);
  EXPECT_EQ(st.bytes, middle);
  st = status(middle, kTiB - middle);
  EXPECT_EQ(st.flags, kData);
  EXPECT_EQ(st.bytes, kChunk);
  st = status(middle + kChunk, kTiB - middle - kChunk);
  EXPECT_EQ(st.flags, kHole);
  EXPECT_EQ(st.bytes, kTiB - middle - kChunk);
}

TEST_F(MemoryTest, WriteZeroesWithoutUnmapKeepsChunksAllocated) {
  open({{"size", 4 * kChunk}});
  write(0, pattern(3 * kChunk, 1));
  zeroes(100, 2 * kChunk, ReqFlags::kNone);

  std::vector<uint8_t> want = pattern(3 * kChunk, 1);
  std::fill(want.begin() + 100, want.begin() + 100 + 2 * kChunk, 0);
  EXPECT_EQ(read(0, 3 * kChunk), want);
  BlockStatus st = status(0, 4 * kChunk);
  EXPECT_EQ(st.flags, kData);
  EXPECT_EQ(st.bytes, 3 * kChunk);
}

TEST_F(MemoryTest, WriteZeroesWithUnmapFreesWholeChunks) {
  open({{"size", 4 * kChunk}});
  write(0, pattern(3 * kChunk, 1));
  // Covers the end of chunk 0, all of chunk 1 and the start of chunk 2.
  zeroes(kChunk - 10, kChunk + 20, ReqFlags::kMayUnmap);

  std::vector<uint8_t> want = pattern(3 * kChunk, 1);
  std::fill(want.begin() + kChunk - 10, want.begin() + 2 * kChunk + 10, 0);
  EXPECT_EQ(read(0, 3 * kChunk), want);

  EXPECT_EQ(status(0, 4 * kChunk).flags, kData);
  EXPECT_EQ(status(0, 4 * kChunk).bytes, kChunk);
  EXPECT_EQ(status(kChunk, 3 * kChunk).flags, kHole);
  EXPECT_EQ(status(kChunk, 3 * kChunk).bytes, kChunk);
  EXPECT_EQ(status(2 * kChunk, 2 * kChunk).flags, kData);
}

TEST_F(MemoryTest, DiscardFreesWholeChunksAndZeroesParts) {
  open({{"size", 4 * kChunk}});
  write(0, pattern(4 * kChunk, 3));
  discard(10, 3 * kChunk);

  std::vector<uint8_t> want = pattern(4 * kChunk, 3);
  std::fill(want.begin() + 10, want.begin() + 10 + 3 * kChunk, 0);
  EXPECT_EQ(read(0, 4 * kChunk), want);
  EXPECT_EQ(status(0, 4 * kChunk).flags, kData);
  EXPECT_EQ(status(kChunk, 3 * kChunk).flags, kHole);
  EXPECT_EQ(status(kChunk, 3 * kChunk).bytes, 2 * kChunk);
  EXPECT_EQ(status(3 * kChunk, kChunk).flags, kData);

  // Discarding a hole is fine and changes nothing.
  discard(kChunk, kChunk);
  EXPECT_EQ(read(kChunk, kChunk), std::vector<uint8_t>(kChunk, 0));
}

TEST_F(MemoryTest, PartialLastChunkIsWholeAtTheEnd) {
  // The node ends inside its last chunk; zeroing up to the end frees that chunk.
  uint64_t size = 2 * kChunk + 512;
  open({{"size", size}});
  write(2 * kChunk, pattern(512, 5));
  EXPECT_EQ(status(2 * kChunk, 512).flags, kData);
  discard(2 * kChunk, 512);
  EXPECT_EQ(status(2 * kChunk, 512).flags, kHole);
  EXPECT_EQ(read(2 * kChunk, 512), std::vector<uint8_t>(512, 0));
}

TEST_F(MemoryTest, ShrinkDropsDataAndGrowReadsZeroes) {
  open({{"size", 4 * kChunk}});
  write(0, pattern(4 * kChunk, 2));

  ASSERT_TRUE(truncate(kChunk + 100));
  EXPECT_EQ(d_->length(), kChunk + 100);
  ASSERT_TRUE(truncate(4 * kChunk));
  EXPECT_EQ(d_->length(), 4 * kChunk);

  std::vector<uint8_t> want = pattern(4 * kChunk, 2);
  std::fill(want.begin() + kChunk + 100, want.end(), 0);
  EXPECT_EQ(read(0, 4 * kChunk), want);
  EXPECT_EQ(status(2 * kChunk, 2 * kChunk).flags, kHole);

  ASSERT_TRUE(truncate(0));
  EXPECT_EQ(d_->length(), 0u);
  ASSERT_TRUE(truncate(kChunk));
  EXPECT_EQ(read(0, kChunk), std::vector<uint8_t>(kChunk, 0));
  EXPECT_EQ(status(0, kChunk).flags, kHole);
}

TEST_F(MemoryTest, TruncateErrors) {
  open({{"size", kMiB}});
  auto r = truncate(2 * kMiB, PreallocMode::kFull);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), ENOTSUP);
  EXPECT_EQ(r.error().message(), "Unsupported preallocation mode 'full'");
  r = truncate(2 * kMiB, PreallocMode::kFalloc);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Unsupported preallocation mode 'falloc'");

  r = truncate(drivers::kMaxNodeLength + 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err(), EINVAL);
  EXPECT_EQ(r.error().message(),
            "offset(9223372035781033985) exceeds maximum(9223372035781033984)");
  EXPECT_EQ(d_->length(), kMiB);

  ASSERT_TRUE(truncate(drivers::kMaxNodeLength));
  EXPECT_EQ(d_->length(), drivers::kMaxNodeLength);
}

TEST_F(MemoryTest, KeyvalSize) {
  auto opts = parse_keyval("size=1T");
  ASSERT_TRUE(opts);
  open(*opts, OptionSyntax::kKeyval);
  EXPECT_EQ(d_->length(), kTiB);
}

TEST_F(MemoryTest, ZeroSizeIsAllowed) {
  open({{"size", 0}});
  EXPECT_EQ(d_->length(), 0u);
}

struct BadOptions {
  json options;
  OptionSyntax syntax;
  std::string message;
};

TEST(MemoryOptions, Errors) {
  const BadOptions cases[] = {
      {json::object(), OptionSyntax::kJson, "Parameter 'file.size' is missing"},
      {{{"size", "1M"}}, OptionSyntax::kJson, "Parameter 'file.size' expects uint64"},
      {{{"size", "lots"}}, OptionSyntax::kKeyval, "Parameter 'file.size' expects size"},
      {{{"size", "8E"}},
       OptionSyntax::kKeyval,
       "Parameter 'file.size' expects a size of at most 9223372035781033984"},
      {{{"size", 1024}, {"filename", "x"}},
       OptionSyntax::kJson,
       "Parameter 'file.filename' is unexpected"},
  };
  for (const auto& c : cases) {
    EventLoop loop;
    FakeOpenContext ctx(loop, c.options, c.syntax, "file.");
    auto d = open_driver(loop, drivers::kMemory, ctx);
    ASSERT_FALSE(d) << c.options.dump();
    EXPECT_EQ(d.error().message(), c.message) << c.options.dump();
    EXPECT_EQ(d.error().err(), EINVAL) << c.options.dump();
  }
}

}  // namespace
}  // namespace strata
