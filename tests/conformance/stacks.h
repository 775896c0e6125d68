// The driver stacks the conformance suite runs over, each with the behaviour it documents.
//
// A test never skips a stack silently: where stacks differ (null-co keeps no data, a fixed-size
// raw window cannot be resized, O_DIRECT discards only whole blocks), the stack says what it
// does and the test checks exactly that.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace strata::testing {

// The size of the node under test in every stack.
constexpr uint64_t kImageSize = 1 << 20;

// What reads return after a discard (with discard=unmap on the node).
enum class DiscardEffect {
  kZeroes,             // the whole range reads as zeroes (punched holes)
  kZeroesOrUnchanged,  // each byte reads zero or its old value (partial blocks are kept)
};

struct StackCaps {
  // Reads return what was written. Without it (null-co, read-zeroes=on) reads return zeroes.
  bool keeps_data = true;
  DiscardEffect discard = DiscardEffect::kZeroes;
  // Empty if truncate grows and shrinks the node; else the error text it refuses with.
  std::optional<std::string> truncate_refusal;
};

// Where a stack's image file lives.
enum class ImageDir {
  kNone,    // no file (memory, null-co)
  kTmp,     // /tmp
  kVarTmp,  // /var/tmp: a disk file system, for O_DIRECT (tmpfs may refuse it)
};

struct StackSpec {
  std::string name;
  StackCaps caps;
  ImageDir image_dir = ImageDir::kNone;
  // The image file is this much larger than the node (raw windows).
  uint64_t file_slack = 0;
  // blockdev-add options for the node under test, given the image file's path ("" without).
  nlohmann::json (*options)(const std::string& image);
  // Turns the zero-filled image file into what the stack opens (qcow2: qemu-img create), or
  // nullptr. Extra files it makes are named image + ".base" / ".data" and removed afterwards.
  void (*prepare)(const std::string& image) = nullptr;
  // The stack needs io_uring (skipped with a message where the kernel refuses io_uring).
  bool needs_io_uring = false;
};

// Every stack, in a fixed order.
const std::vector<StackSpec>& all_stacks();

}  // namespace strata::testing
