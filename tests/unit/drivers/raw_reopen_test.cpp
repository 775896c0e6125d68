// Reopen of the raw driver: offset and size change (QEMU's raw mutable_opts), checked against
// the child with the texts of open; a filter becomes a window and back, its `file` edge taking
// the role open would give it. The child is a memory node whose every 512-byte sector holds its
// own number, so a read shows which window the node shows.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/block_backend.h"
#include "strata/builtin_drivers.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata {
namespace {

using nlohmann::json;

constexpr uint64_t kChildSize = 64 * 1024;
constexpr uint64_t kSector = 512;
constexpr Perm kRead = Perm::kConsistentRead;
constexpr Perm kReadWrite = Perm::kConsistentRead | Perm::kWrite;

class RawReopenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto child = run_sync(
        loop_,
        engine_->add_node({{"driver", "memory"}, {"node-name", "m0"}, {"size", kChildSize}}));
    ASSERT_TRUE(child) << child.error().message();
    auto writer = engine_->attach_backend(**child, "fill", kReadWrite, Perm::kAll);
    ASSERT_TRUE(writer) << writer.error().message();
    std::vector<uint8_t> data(kChildSize);
    for (uint64_t i = 0; i < kChildSize; ++i) data[i] = static_cast<uint8_t>(i / kSector);
    auto r = run_sync(loop_, (*writer)->write(0, data.size(), IoVec(data.data(), data.size())));
    ASSERT_TRUE(r) << r.error().message();
  }
  void TearDown() override {
    blk_.reset();
    engine_.reset();
  }

  // raw "r0" over m0 with `window` (offset and/or size).
  static json raw_opts(json window = json::object()) {
    json opts = {{"driver", "raw"}, {"node-name", "r0"}, {"file", "m0"}};
    for (auto it = window.begin(); it != window.end(); ++it) opts[it.key()] = *it;
    return opts;
  }
  void open_raw(json window = json::object()) {
    auto node = run_sync(loop_, engine_->add_node(raw_opts(std::move(window))));
    ASSERT_TRUE(node) << node.error().message();
    auto blk = engine_->attach_backend(**node, "disk", kRead, Perm::kAll);
    ASSERT_TRUE(blk) << blk.error().message();
    blk_ = std::move(*blk);
  }
  Result<void> reopen(json entry, OptionSyntax syntax = OptionSyntax::kJson,
                      bool keep_old = false) {
    return run_sync(loop_, engine_->reopen({std::move(entry)}, syntax, keep_old));
  }
  Node& r0() const { return *engine_->find_node("r0"); }
  ChildRole file_role() const { return r0().child("file")->role(); }
  // The sector number stored at `offset` of r0.
  int sector_at(uint64_t offset) {
    uint8_t byte = 0xff;
    auto r = run_sync(loop_, blk_->read(offset, 1, IoVec(&byte, 1)));
    EXPECT_TRUE(r) << r.error().message();
    return byte;
  }

  EventLoop loop_;
  std::unique_ptr<Engine> engine_ = std::make_unique<Engine>(loop_, builtin_drivers());
  std::unique_ptr<BlockBackend> blk_;
};

constexpr ChildRole kFilterRole = ChildRole::kFiltered | ChildRole::kPrimary;
constexpr ChildRole kWindowRole = ChildRole::kData | ChildRole::kPrimary;

TEST_F(RawReopenTest, ANewWindowIsReadAfterTheReopen) {
  open_raw({{"offset", 1024}, {"size", 2048}});
  EXPECT_EQ(r0().size(), 2048u);
  EXPECT_EQ(sector_at(0), 2);

  ASSERT_TRUE(reopen(raw_opts({{"offset", 4096}, {"size", 8192}})));
  EXPECT_EQ(r0().size(), 8192u);
  EXPECT_EQ(blk_->size(), 8192u);
  EXPECT_EQ(sector_at(0), 8);
  EXPECT_EQ(sector_at(8191), 8 + 15);
  EXPECT_EQ(file_role(), kWindowRole);
  EXPECT_EQ(r0().driver_options(), json({{"offset", 4096}, {"size", 8192}}));

  // Leaving size out: the window runs to the end of the child.
  ASSERT_TRUE(reopen(raw_opts({{"offset", 512}})));
  EXPECT_EQ(r0().size(), kChildSize - 512);
  EXPECT_EQ(sector_at(0), 1);
  EXPECT_EQ(file_role(), kWindowRole);
}

TEST_F(RawReopenTest, KeyvalSizesAndKeptOptions) {
  open_raw({{"offset", 1024}});
  // qemu-io's reopen -o: only the given option changes, the other keeps its value.
  ASSERT_TRUE(reopen({{"node-name", "r0"}, {"size", "1k"}}, OptionSyntax::kKeyval, true));
  EXPECT_EQ(r0().size(), 1024u);
  EXPECT_EQ(sector_at(0), 2);
  ASSERT_TRUE(reopen({{"node-name", "r0"}, {"offset", "2k"}}, OptionSyntax::kKeyval, true));
  EXPECT_EQ(r0().size(), 1024u);
  EXPECT_EQ(sector_at(0), 4);
}

TEST_F(RawReopenTest, AFilterBecomesAWindowAndBack) {
  open_raw();
  EXPECT_EQ(file_role(), kFilterRole);
  EXPECT_EQ(r0().size(), kChildSize);
  EXPECT_EQ(sector_at(kSector * 5), 5);

  ASSERT_TRUE(reopen(raw_opts({{"offset", kSector * 3}, {"size", kSector * 4}})));
  EXPECT_EQ(file_role(), kWindowRole);
  EXPECT_EQ(r0().size(), kSector * 4);
  EXPECT_EQ(sector_at(0), 3);
  EXPECT_FALSE(r0().limits().can_grow);
  // A window does not let others resize its child (the DATA role's rule), a filter does.
  EXPECT_FALSE(has_any(r0().child("file")->shared(), Perm::kResize));

  ASSERT_TRUE(reopen(raw_opts()));
  EXPECT_EQ(file_role(), kFilterRole);
  EXPECT_EQ(r0().size(), kChildSize);
  EXPECT_EQ(sector_at(kSector * 5), 5);
  EXPECT_TRUE(has_any(r0().child("file")->shared(), Perm::kResize));
}

TEST_F(RawReopenTest, BadWindowsAreRefusedWithOpensTextsAndChangeNothing) {
  struct Case {
    json window;
    std::string message;
  };
  const Case cases[] = {
      {{{"offset", kChildSize + 512}},
       "Offset (66048) cannot be greater than size of the containing file (65536)"},
      {{{"offset", 1024}, {"size", kChildSize}},
       "The sum of offset (1024) and size (65536) has to be smaller or equal to the  actual size "
       "of the containing file (65536)"},
      {{{"size", 1000}}, "Specified size is not multiple of 512"},
      {{{"offset", "x"}}, "Parameter 'offset' expects uint64"},
  };
  open_raw({{"offset", 1024}, {"size", 2048}});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.window.dump());
    auto r = reopen(raw_opts(c.window));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().message(), c.message);
    EXPECT_EQ(r0().size(), 2048u);
    EXPECT_EQ(sector_at(0), 2);
    EXPECT_EQ(file_role(), kWindowRole);
    EXPECT_EQ(r0().driver_options(), json({{"offset", 1024}, {"size", 2048}}));
  }
}

// The new role takes part in the permission refresh: a filter over a child that another user
// resizes cannot become a window (which must not share RESIZE); the refusal restores the role.
TEST_F(RawReopenTest, BecomingAWindowNeedsTheWindowsPermissions) {
  auto resizer = engine_->attach_backend(*engine_->find_node("m0"), "resizer",
                                         Perm::kConsistentRead | Perm::kResize, Perm::kAll);
  ASSERT_TRUE(resizer) << resizer.error().message();
  open_raw();

  auto r = reopen(raw_opts({{"offset", 1024}}));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "Permission conflict on node 'm0': permissions 'resize' are both required by block "
            "device 'resizer' (uses node 'm0' as 'root' child) and unshared by node 'r0' (uses "
            "node 'm0' as 'file' child). Detach or reconfigure one of the two users, or let node "
            "'r0' share the permission (force-share=on does that for read-only users).");
  EXPECT_EQ(file_role(), kFilterRole);
  EXPECT_TRUE(has_any(r0().child("file")->shared(), Perm::kResize));
  EXPECT_EQ(r0().size(), kChildSize);
  EXPECT_EQ(sector_at(0), 0);

  resizer->reset();
  ASSERT_TRUE(reopen(raw_opts({{"offset", 1024}})));
  EXPECT_EQ(file_role(), kWindowRole);
  EXPECT_EQ(sector_at(0), 2);
}

}  // namespace
}  // namespace strata
