// Coroutine frame recycling: size classes, reuse, cross-thread frees, alignment.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <thread>

#include "strata/task.h"

namespace strata::detail {
namespace {

TEST(FrameAlloc, FreedFrameIsReusedWithinItsSizeClass) {
  void* frame = allocate_frame(100);
  free_frame(frame, 100);
  // 100 and 128 bytes share the 128-byte class: the freed block comes back.
  void* again = allocate_frame(128);
  EXPECT_EQ(again, frame);
  free_frame(again, 128);
}

TEST(FrameAlloc, OtherSizeClassesDoNotGetTheBlock) {
  void* frame = allocate_frame(64);
  free_frame(frame, 64);
  void* larger = allocate_frame(65);  // the 128-byte class
  EXPECT_NE(larger, frame);
  void* same = allocate_frame(1);
  EXPECT_EQ(same, frame);
  free_frame(larger, 65);
  free_frame(same, 1);
}

TEST(FrameAlloc, BlocksAreUsableForTheirWholeSize) {
  for (std::size_t size : {1u, 63u, 64u, 65u, 1000u, 4096u, 4097u, 100000u}) {
    void* frame = allocate_frame(size);
    ASSERT_NE(frame, nullptr);
    std::memset(frame, 0x5a, size);
    free_frame(frame, size);
  }
}

// Coroutine frames need operator new's default alignment.
TEST(FrameAlloc, BlocksHaveDefaultNewAlignment) {
  for (std::size_t size : {8u, 24u, 72u, 136u, 520u, 4000u, 9000u}) {
    void* frame = allocate_frame(size);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(frame) % __STDCPP_DEFAULT_NEW_ALIGNMENT__, 0u)
        << "size " << size;
    free_frame(frame, size);
  }
}

TEST(FrameAlloc, FrameFreedOnAnotherThreadJoinsThatThreadsList) {
  void* frame = allocate_frame(300);
  void* reused_there = nullptr;
  std::thread other([&] {
    free_frame(frame, 300);
    reused_there = allocate_frame(300);
    free_frame(reused_there, 300);
  });
  other.join();
  EXPECT_EQ(reused_there, frame);
}

TEST(FrameAlloc, ManyFramesComeBackLastFreedFirst) {
  constexpr int kCount = 100;
  static void* frames[kCount];
  for (int i = 0; i < kCount; ++i) frames[i] = allocate_frame(200);
  for (int i = 0; i < kCount; ++i) free_frame(frames[i], 200);
  // The most recently freed block is handed out first.
  for (int i = kCount - 1; i >= 0; --i) {
    void* frame = allocate_frame(200);
    EXPECT_EQ(frame, frames[i]);
    frames[i] = frame;
  }
  for (int i = 0; i < kCount; ++i) free_frame(frames[i], 200);
}

}  // namespace
}  // namespace strata::detail
