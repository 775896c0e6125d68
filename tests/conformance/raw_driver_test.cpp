// The raw driver's own behaviour: option validation with QEMU's texts, the child's role, the
// window mapping, resizing, block status and the permissions raw asks of its child.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "harness.h"
#include "strata/child.h"

namespace strata::testing {
namespace {

using nlohmann::json;

json raw_over(const std::string& path) {
  return json{
      {"driver", "raw"}, {"node-name", "r"}, {"file", {{"driver", "file"}, {"filename", path}}}};
}

std::string open_error(Harness& h, const json& options) {
  auto node = h.add(options);
  return node ? "(opened)" : node.error().message();
}

TEST(RawDriverOptions, WindowOutsideTheFileIsRefusedWithQemuTexts) {
  TempFile image("/tmp", 65536);
  struct Case {
    json window;
    const char* error;
  };
  const Case cases[] = {
      {{{"offset", 65537}},
       "Offset (65537) cannot be greater than size of the containing file (65536)"},
      {{{"offset", 4096}, {"size", 65536}},
       "The sum of offset (4096) and size (65536) has to be smaller or equal to the  actual size "
       "of the containing file (65536)"},
      {{{"size", 131072}},
       "The sum of offset (0) and size (131072) has to be smaller or equal to the  actual size "
       "of the containing file (65536)"},
      {{{"size", 1000}}, "Specified size is not multiple of 512"},
      {{{"offset", 512}, {"size", 4097}}, "Specified size is not multiple of 512"},
  };
  for (const Case& c : cases) {
    Harness h;
    json o = raw_over(image.path());
    o.update(c.window);
    EXPECT_EQ(open_error(h, o), c.error) << c.window.dump();
    EXPECT_EQ(h.engine().find_node("r"), nullptr) << "a failed open leaves nothing behind";
  }
}

TEST(RawDriverOptions, WindowsThatFitAreAccepted) {
  TempFile image("/tmp", 65536);
  const json windows[] = {
      json::object(),
      {{"offset", 0}},
      {{"offset", 65536}},
      {{"size", 65536}},
      {{"offset", 1}, {"size", 512}},
      {{"offset", 32768}, {"size", 32768}},
  };
  for (const json& w : windows) {
    Harness h;
    json o = raw_over(image.path());
    o.update(w);
    auto node = h.add(o);
    EXPECT_TRUE(node) << w.dump() << ": " << node.error().message();
  }
}

TEST(RawDriver, ChildRoleIsFilteredWithoutWindowAndDataWithOne) {
  TempFile image("/tmp", 65536);
  struct Case {
    json window;
    ChildRole role;
  };
  const Case cases[] = {
      {json::object(), ChildRole::kFiltered | ChildRole::kPrimary},
      // QEMU decides on the options given: offset=0 alone is still a filter.
      {{{"offset", 0}}, ChildRole::kFiltered | ChildRole::kPrimary},
      {{{"offset", 512}}, ChildRole::kData | ChildRole::kPrimary},
      {{{"size", 512}}, ChildRole::kData | ChildRole::kPrimary},
  };
  for (const Case& c : cases) {
    Harness h;
    json o = raw_over(image.path());
    o.update(c.window);
    auto node = h.add(o);
    ASSERT_TRUE(node) << node.error().message();
    Child* file = (*node)->child("file");
    ASSERT_NE(file, nullptr);
    EXPECT_EQ(role_names(file->role()), role_names(c.role)) << c.window.dump();
  }
}

TEST(RawDriver, WindowMapsRequestsByTheOffsetAndNeverLeaksOut) {
  TempFile image("/tmp", 65536);
  image.write_directly(0, pattern(1, 0, 65536));
  Harness h;
  json o = raw_over(image.path());
  o["offset"] = 4608;
  o["size"] = 32768;
  auto node = h.add(o);
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  EXPECT_EQ(h.size(), 32768u);

  // Reads see the file from the offset.
  auto first = h.read(0, 1000);
  ASSERT_TRUE(first);
  EXPECT_EQ(*first, pattern(1, 4608, 1000));

  // A write covering the whole window lands at the offset and nowhere else.
  std::vector<uint8_t> data = pattern(2, 0, 32768);
  ASSERT_TRUE(h.write(0, data));
  EXPECT_EQ(image.contents(4608, 32768), data);
  EXPECT_EQ(image.contents(0, 4608), pattern(1, 0, 4608));
  EXPECT_EQ(image.contents(4608 + 32768, 65536 - 4608 - 32768),
            pattern(1, 4608 + 32768, 65536 - 4608 - 32768));

  // So do zeroes.
  ASSERT_TRUE(h.write_zeroes(32768 - 512, 512, ReqFlags::kMayUnmap));
  EXPECT_TRUE(all_zero(image.contents(4608 + 32768 - 512, 512)));
  EXPECT_EQ(image.contents(4608 + 32768, 16), pattern(1, 4608 + 32768, 16));

  // The window's end is the node's end.
  std::vector<uint8_t> one(1);
  auto past = h.read(32768, one);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().err(), EIO);
}

TEST(RawDriver, FixedSizeWindowCannotBeResized) {
  TempFile image("/tmp", 65536);
  Harness h;
  json o = raw_over(image.path());
  o["size"] = 32768;
  auto node = h.add(o);
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  EXPECT_FALSE((*node)->driver().limits().can_grow);
  auto r = h.truncate(16384);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "Cannot resize fixed-size raw disks");
  EXPECT_EQ(r.error().err(), ENOTSUP);
  EXPECT_EQ(image.size_on_disk(), 65536u);
}

TEST(RawDriver, WindowWithoutSizeFollowsTheFileAndResizesIt) {
  TempFile image("/tmp", 65536);
  Harness h;
  json o = raw_over(image.path());
  o["offset"] = 4096;
  auto node = h.add(o);
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  EXPECT_EQ(h.size(), 65536u - 4096);
  auto r = h.truncate(131072);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(image.size_on_disk(), 131072u + 4096);
  EXPECT_EQ(h.size(), 131072u);
}

TEST(RawDriver, FilterResizesTheFile) {
  TempFile image("/tmp", 65536);
  Harness h;
  auto node = h.add(raw_over(image.path()));
  ASSERT_TRUE(node) << node.error().message();
  ASSERT_TRUE(h.attach(**node));
  auto r = h.truncate(131072);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(image.size_on_disk(), 131072u);
  EXPECT_EQ(h.size(), 131072u);
}

TEST(RawDriver, BlockStatusPointsIntoTheFile) {
  TempFile image("/tmp", 65536);
  for (uint64_t offset : {0, 4608}) {
    Harness h;
    json o = raw_over(image.path());
    if (offset != 0) o["offset"] = offset;
    auto node = h.add(o);
    ASSERT_TRUE(node) << node.error().message();
    Node* file = &(*node)->child("file")->node();
    auto st = run_sync(h.loop(), (*node)->driver().block_status(100, 200));
    ASSERT_TRUE(st) << st.error().message();
    EXPECT_EQ(st->flags, BlockStatusFlags::kRaw | BlockStatusFlags::kOffsetValid);
    EXPECT_EQ(st->bytes, 200u);
    EXPECT_EQ(st->map, 100 + offset);
    EXPECT_EQ(st->file, file);
  }
}

TEST(RawDriver, LimitsComeFromTheFile) {
  TempFile image("/var/tmp", 65536);
  Harness h;
  json o = raw_over(image.path());
  o["file"]["cache"] = {{"direct", true}};
  auto node = h.add(o);
  if (!node && node.error().err() == EINVAL) GTEST_SKIP() << node.error().message();
  ASSERT_TRUE(node) << node.error().message();
  NodeLimits raw = (*node)->driver().limits();
  NodeLimits file = (*node)->child("file")->node().driver().limits();
  EXPECT_EQ(raw.request_alignment, file.request_alignment);
  EXPECT_EQ(raw.memory_alignment, file.memory_alignment);
  EXPECT_EQ(raw.supports_fua, file.supports_fua);
  EXPECT_EQ(raw.can_grow, file.can_grow);
}

// raw takes WRITE and RESIZE on its child only when a parent asks for them; everything else is
// the role-based default.
TEST(RawDriver, ChildPermsTakeWriteAndResizeOnlyWhenAsked) {
  TempFile image("/tmp", 65536);
  constexpr Perm R = Perm::kConsistentRead;
  constexpr Perm W = Perm::kWrite;
  constexpr Perm WU = Perm::kWriteUnchanged;
  constexpr Perm RS = Perm::kResize;
  struct Case {
    Perm parent_perm;
    Perm expected_perm;
  };
  const Case cases[] = {
      {Perm::kNone, Perm::kNone}, {R, R},           {R | W, R | W},
      {R | W | RS, R | W | RS},   {R | WU, R | WU}, {R | RS, R | RS},
  };
  for (const char* window : {"filter", "window"}) {
    Harness h;
    json o = raw_over(image.path());
    if (std::string(window) == "window") o["size"] = 32768;
    auto node = h.add(o);
    ASSERT_TRUE(node) << node.error().message();
    const Child& file = *(*node)->child("file");
    for (const Case& c : cases) {
      for (Perm shared : {Perm::kAll, R | WU}) {
        ChildPerms got = (*node)->driver().child_perms(file, file.role(), c.parent_perm, shared);
        ChildPerms fallback = default_child_perms(file.role(), c.parent_perm, shared, true);
        EXPECT_EQ(bits(got.perm), bits(c.expected_perm))
            << window << ": parent perm " << perm_names(c.parent_perm);
        EXPECT_EQ(bits(got.shared), bits(fallback.shared)) << window << ": shared is the default";
      }
    }
  }
}

}  // namespace
}  // namespace strata::testing
