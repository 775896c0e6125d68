// Concurrent requests: 64 writes in flight at once, some unaligned, some sharing blocks without
// overlapping, some overlapping, and the final content checked against the ordering rules.
//
//   - Writes that do not overlap must all land exactly, even where they share a block (the core
//     must serialise the read-modify-write of a shared block).
//   - Where writes overlap, the order is not defined, but each byte must come from one of the
//     writers covering it, and a request-aligned block that every writer touching it covers
//     completely must come from a single writer: never a mix inside one block.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <vector>

#include "conformance_fixture.h"
#include "strata/task.h"

namespace strata::testing {
namespace {

struct WriteJob {
  uint32_t writer;
  uint64_t offset;
  std::vector<uint8_t> data;
  Result<void> result;
  uint64_t end() const { return offset + data.size(); }
  bool covers(uint64_t pos) const { return pos >= offset && pos < end(); }
};

Task<void> run_job(BlockBackend* blk, WriteJob* job, Latch* latch) {
  IoVec iov(job->data.data(), job->data.size());
  auto task = blk->write(job->offset, job->data.size(), iov);
  job->result = co_await task;
  latch->count_down();
}

// Starts every job at once and waits until all have finished.
Task<void> run_all(BlockBackend* blk, std::vector<WriteJob>* jobs) {
  Latch latch(jobs->size());
  for (WriteJob& job : *jobs) spawn(run_job(blk, &job, &latch));
  co_await latch.wait();
}

// 32 adjacent, unaligned writes of 8000 bytes from offset 3: every boundary is inside a block.
void add_disjoint_jobs(std::vector<WriteJob>& jobs) {
  for (uint32_t i = 0; i < 32; ++i) {
    uint64_t offset = 3 + i * 8000;
    jobs.push_back({i + 1, offset, pattern(i + 1, offset, 8000), {}});
  }
}

// From 512 KiB: 8 groups of 4 overlapping writes. In even groups all four write the same
// unaligned range; in odd groups each starts 1000 bytes after the previous one.
void add_overlapping_jobs(std::vector<WriteJob>& jobs) {
  for (uint32_t g = 0; g < 8; ++g) {
    uint64_t base = (512 << 10) + g * 65536 + 17;
    for (uint32_t k = 0; k < 4; ++k) {
      uint32_t writer = 100 + g * 4 + k;
      uint64_t offset = g % 2 == 0 ? base : base + k * 1000;
      jobs.push_back({writer, offset, pattern(writer, offset, 20000), {}});
    }
  }
}

// Checks one request-aligned block [start, start + len) of the final content.
void check_block(const std::vector<WriteJob>& jobs, std::span<const uint8_t> content,
                 uint64_t start, uint64_t len) {
  std::vector<const WriteJob*> touching;
  for (const WriteJob& j : jobs) {
    if (j.offset < start + len && j.end() > start) touching.push_back(&j);
  }
  std::set<uint32_t> sources;
  for (uint64_t pos = start; pos < start + len; ++pos) {
    uint8_t got = content[pos];
    uint32_t source = 0;  // 0: untouched, must be zero
    for (const WriteJob* j : touching) {
      if (j->covers(pos) && got == pattern_byte(j->writer, pos)) source = j->writer;
    }
    bool covered = std::any_of(touching.begin(), touching.end(),
                               [pos](const WriteJob* j) { return j->covers(pos); });
    if (!covered) {
      ASSERT_EQ(got, 0) << "offset " << pos << " was written by nobody";
      continue;
    }
    ASSERT_NE(source, 0u) << "offset " << pos << " reads " << int(got)
                          << ", which none of the writers covering it wrote";
    sources.insert(source);
  }
  bool all_cover_whole_block =
      std::all_of(touching.begin(), touching.end(),
                  [&](const WriteJob* j) { return j->offset <= start && j->end() >= start + len; });
  if (all_cover_whole_block && !touching.empty()) {
    EXPECT_EQ(sources.size(), 1u) << "block at " << start << " mixes data of " << sources.size()
                                  << " writers";
  }
}

TEST_P(ConformanceTest, ConcurrentWritesFollowTheOrderingRules) {
  std::vector<WriteJob> jobs;
  add_disjoint_jobs(jobs);
  add_overlapping_jobs(jobs);
  ASSERT_EQ(jobs.size(), 64u);

  run_sync(h().loop(), run_all(&h().blk(), &jobs));
  for (const WriteJob& j : jobs) {
    ASSERT_TRUE(j.result) << "writer " << j.writer << ": " << j.result.error().message();
  }

  auto content = h().read(0, kImageSize);
  ASSERT_TRUE(content) << content.error().message();
  if (!caps().keeps_data) {
    EXPECT_TRUE(all_zero(*content)) << "a stack that keeps no data reads zeroes";
    return;
  }
  // Non-overlapping writes: exact.
  for (uint32_t i = 0; i < 32; ++i) {
    const WriteJob& j = jobs[i];
    std::span<const uint8_t> got(content->data() + j.offset, j.data.size());
    ASSERT_EQ(first_difference(j.offset, j.data, got), "") << "writer " << j.writer;
  }
  // Overlapping writes: per block of the node's request alignment (at least 512 bytes, so that
  // a stack with byte alignment still gets a meaningful mix check for whole-sector writers).
  const uint64_t block = std::max<uint64_t>(h().node().limits().request_alignment, 512);
  std::vector<WriteJob> overlapping(jobs.begin() + 32, jobs.end());
  for (uint64_t start = 512 << 10; start < kImageSize; start += block) {
    check_block(overlapping, *content, start, block);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace strata::testing
