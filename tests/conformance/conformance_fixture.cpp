#include "conformance_fixture.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "strata/file_io.h"

namespace strata::testing {

void Shadow::write(uint64_t offset, std::span<const uint8_t> data) {
  if (!keeps_data_) return;
  std::copy(data.begin(), data.end(), bytes_.begin() + static_cast<ptrdiff_t>(offset));
}

void Shadow::zero(uint64_t offset, uint64_t bytes) {
  std::fill_n(bytes_.begin() + static_cast<ptrdiff_t>(offset), bytes, 0);
}

std::string first_difference(uint64_t base, std::span<const uint8_t> expected,
                             std::span<const uint8_t> actual) {
  if (expected.size() != actual.size()) {
    return fmt::format("length {} instead of {}", actual.size(), expected.size());
  }
  auto [e, a] = std::mismatch(expected.begin(), expected.end(), actual.begin());
  if (e == expected.end()) return "";
  return fmt::format("offset {}: expected {:#04x}, read {:#04x}", base + (e - expected.begin()), *e,
                     *a);
}

namespace {

// Whether the file system under `path` takes O_DIRECT; "" if so, else why not.
std::string direct_io_refusal(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    return "";
  }
  return fmt::format("O_DIRECT open of {} failed: {}", path, std::strerror(errno));
}

}  // namespace

void ConformanceTest::SetUp() {
  const StackSpec& spec = GetParam();
  harness_ = std::make_unique<Harness>();
  if (spec.needs_io_uring) {
    auto io = harness_->loop().file_io(AioMode::kIoUring);
    if (!io) GTEST_SKIP() << "io_uring cannot start on this machine: " << io.error().message();
  }
  std::string path;
  if (spec.image_dir != ImageDir::kNone) {
    image_.emplace(spec.image_dir == ImageDir::kVarTmp ? "/var/tmp" : "/tmp",
                   kImageSize + spec.file_slack);
    path = image_->path();
    if (spec.image_dir == ImageDir::kVarTmp) {
      std::string refusal = direct_io_refusal(path);
      if (!refusal.empty()) GTEST_SKIP() << "cache.direct=on cannot be tested here: " << refusal;
    }
  }
  if (spec.prepare != nullptr) spec.prepare(path);
  auto node = harness_->add(spec.options(path));
  ASSERT_TRUE(node) << node.error().message();
  auto attached = harness_->attach(**node);
  ASSERT_TRUE(attached) << attached.error().message();
  ASSERT_EQ(harness_->size(), kImageSize);
  shadow_ = std::make_unique<Shadow>(kImageSize, spec.caps.keeps_data);
}

void ConformanceTest::TearDown() {
  harness_.reset();
  if (image_ && GetParam().prepare != nullptr) {
    ::unlink((image_->path() + ".base").c_str());
    ::unlink((image_->path() + ".data").c_str());
  }
  image_.reset();
}

void ConformanceTest::write_pattern(uint32_t seed, uint64_t offset, uint64_t bytes) {
  std::vector<uint8_t> data = pattern(seed, offset, bytes);
  auto r = h().write(offset, data);
  ASSERT_TRUE(r) << "write " << offset << "+" << bytes << ": " << r.error().message();
  shadow_->write(offset, data);
}

void ConformanceTest::expect_matches_shadow(uint64_t offset, uint64_t bytes) {
  auto data = h().read(offset, bytes);
  ASSERT_TRUE(data) << "read " << offset << "+" << bytes << ": " << data.error().message();
  EXPECT_EQ(first_difference(offset, shadow_->at(offset, bytes), *data), "")
      << "reading " << offset << "+" << bytes;
}

void ConformanceTest::expect_block_status_consistent() {
  const uint64_t size = h().size();
  uint64_t offset = 0;
  // Bounded: an answer covers at least one byte, and a sane driver answers in extents.
  for (int steps = 0; offset < size; ++steps) {
    ASSERT_LT(steps, 1 << 16) << "block status makes no progress at " << offset;
    auto st = h().block_status(offset, size - offset);
    ASSERT_TRUE(st) << "block status at " << offset << ": " << st.error().message();
    ASSERT_GT(st->bytes, 0u) << "at " << offset;
    ASSERT_LE(st->bytes, size - offset) << "at " << offset;
    if (has_flag(st->flags, BlockStatusFlags::kZero)) {
      auto data = h().read(offset, st->bytes);
      ASSERT_TRUE(data) << data.error().message();
      EXPECT_TRUE(all_zero(*data))
          << "[" << offset << ", +" << st->bytes << ") is reported zero but reads otherwise";
    }
    offset += st->bytes;
  }
  EXPECT_EQ(offset, size);
}

}  // namespace strata::testing
