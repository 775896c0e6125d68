// The parameterised fixture of the conformance suite: one node stack (stacks.h) opened through
// the real Engine, a read-write-resize BlockBackend on it, and a shadow copy of what the node
// should contain.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "harness.h"
#include "stacks.h"

namespace strata::testing {

// GoogleTest prints a stack by its name.
inline void PrintTo(const StackSpec& spec, std::ostream* os) { *os << spec.name; }

// What the node under test should read as, updated by the tests as they write.
class Shadow {
 public:
  Shadow(uint64_t size, bool keeps_data) : bytes_(size, 0), keeps_data_(keeps_data) {}
  void write(uint64_t offset, std::span<const uint8_t> data);
  void zero(uint64_t offset, uint64_t bytes);
  void resize(uint64_t size) { bytes_.resize(size, 0); }
  std::span<const uint8_t> at(uint64_t offset, uint64_t bytes) const {
    return std::span<const uint8_t>(bytes_).subspan(offset, bytes);
  }
  uint64_t size() const { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
  bool keeps_data_;
};

class ConformanceTest : public ::testing::TestWithParam<StackSpec> {
 protected:
  void SetUp() override;
  void TearDown() override;

  const StackCaps& caps() const { return GetParam().caps; }
  Harness& h() { return *harness_; }

  // Writes pattern(seed) at [offset, offset + bytes) and records it in the shadow.
  void write_pattern(uint32_t seed, uint64_t offset, uint64_t bytes);
  // Reads [offset, offset + bytes) and compares it with the shadow, naming the first
  // difference.
  void expect_matches_shadow(uint64_t offset, uint64_t bytes);
  void expect_whole_node_matches_shadow() { expect_matches_shadow(0, shadow_->size()); }
  // Walks block status from 0 to the end: every answer is a non-empty prefix of what was asked,
  // the answers tile the node, and every range reported kZero reads as zeroes.
  void expect_block_status_consistent();

  std::optional<TempFile> image_;
  std::unique_ptr<Harness> harness_;
  std::unique_ptr<Shadow> shadow_;
};

// "offset 4097: expected 0x12, read 0x00" for the first differing byte, or "" if equal.
std::string first_difference(uint64_t base, std::span<const uint8_t> expected,
                             std::span<const uint8_t> actual);

}  // namespace strata::testing
