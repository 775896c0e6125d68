// Permissions: the role defaults, the conflict algebra, and refresh as a transaction.
#include <gtest/gtest.h>

#include <chrono>

#include "perm_update.h"
#include "test_drivers.h"

namespace strata::testing {
namespace {

constexpr Perm R = Perm::kConsistentRead;
constexpr Perm W = Perm::kWrite;
constexpr Perm WU = Perm::kWriteUnchanged;
constexpr Perm RS = Perm::kResize;
constexpr Perm kNone = Perm::kNone;
constexpr Perm kAll = Perm::kAll;

struct DefaultPermsRow {
  const char* what;
  ChildRole role;
  Perm parent_perm;
  Perm parent_shared;
  bool writable;
  bool auto_read_only;
  Perm perm;
  Perm shared;
};

constexpr bool kAutoRo = true;
constexpr bool kNoAutoRo = false;

TEST(DefaultChildPerms, Table) {
  const ChildRole kFilteredPrimary = ChildRole::kFiltered | ChildRole::kPrimary;
  const ChildRole kMetadataPrimary = ChildRole::kMetadata | ChildRole::kPrimary;
  const DefaultPermsRow rows[] = {
      {"filter passes through", kFilteredPrimary, R | W, R | WU, true, kNoAutoRo, R | W, R | WU},
      {"filter passes nothing through", kFilteredPrimary, kNone, kAll, false, kNoAutoRo, kNone,
       kAll},
      {"backing: read only if parent reads", ChildRole::kCow, R | W | RS, kAll, true, kNoAutoRo, R,
       kAll},
      {"backing: parent does not read", ChildRole::kCow, W, R | WU, true, kNoAutoRo, kNone, R | WU},
      {"backing: parent shares write", ChildRole::kCow, R, R | W, false, kNoAutoRo, R,
       R | WU | W | RS},
      {"image, writable node, no users", ChildRole::kImage, kNone, kAll, true, kNoAutoRo,
       R | W | RS, R | WU},
      {"image, read-only node", ChildRole::kImage, kNone, kAll, false, kNoAutoRo, R, R | WU},
      {"image, write-unchanged user", ChildRole::kImage, WU, kAll, false, kNoAutoRo,
       R | WU | W | RS, R | WU},
      {"image, user shares nothing", ChildRole::kImage, R, kNone, true, kNoAutoRo, R | W | RS,
       kNone},
      {"data only: unchanged becomes write+resize", ChildRole::kData, WU, R, false, kNoAutoRo,
       WU | W | RS, R},
      {"data window, writer", ChildRole::kData | ChildRole::kPrimary, R | W, kAll, true, kNoAutoRo,
       R | W | RS, R | W | WU},
      {"metadata only (external data file)", kMetadataPrimary, kNone, kAll, true, kNoAutoRo,
       R | W | RS, R | WU},
      {"no role: nothing needed", ChildRole::kNone, R | W, kNone, true, kNoAutoRo, kNone, kAll},
      // auto-read-only: the format claims write access below only while someone above writes.
      {"auto-ro image, no users: reads only", ChildRole::kImage, kNone, kAll, true, kAutoRo, R,
       R | WU},
      {"auto-ro image, a reader", ChildRole::kImage, R, R | WU, true, kAutoRo, R, R | WU},
      {"auto-ro image, a writer", ChildRole::kImage, R | W, R | WU, true, kAutoRo, R | W | RS,
       R | WU},
      {"auto-ro metadata, no users", kMetadataPrimary, kNone, kAll, true, kAutoRo, R, R | WU},
      {"auto-ro metadata, a writer", kMetadataPrimary, W, kAll, true, kAutoRo, R | W | RS, R | WU},
      {"auto-ro metadata, write-unchanged", kMetadataPrimary, WU, kAll, true, kAutoRo,
       R | WU | W | RS, R | WU},
      {"auto-ro metadata, resize only", kMetadataPrimary, RS, kAll, true, kAutoRo, R | W | RS,
       R | WU},
      {"auto-ro but read-only node", kMetadataPrimary, kNone, kAll, false, kAutoRo, R, R | WU},
      {"auto-ro data only, no users", ChildRole::kData, kNone, kAll, true, kAutoRo, kNone,
       kAll & ~RS},
      {"auto-ro backing unchanged", ChildRole::kCow, R, kAll, true, kAutoRo, R, kAll},
      {"auto-ro filter unchanged", kFilteredPrimary, R, R | WU, true, kAutoRo, R, R | WU},
  };
  for (const DefaultPermsRow& row : rows) {
    ChildPerms got = default_child_perms(row.role, row.parent_perm, row.parent_shared, row.writable,
                                         row.auto_read_only);
    EXPECT_EQ(bits(got.perm), bits(row.perm)) << row.what;
    EXPECT_EQ(bits(got.shared), bits(row.shared)) << row.what;
  }
}

struct AllowRow {
  Perm a_shared;
  Perm b_perm;
  const char* conflict;  // perm names in the message, or nullptr if allowed
};

TEST(ConflictAlgebra, AAllowsBTable) {
  const AllowRow rows[] = {
      {kAll, kAll, nullptr},
      {R | WU, R, nullptr},
      {R | WU, kNone, nullptr},
      {R | WU, R | W, "write"},
      {R | WU, W | RS, "write, resize"},
      {kNone, R, "consistent read"},
      {kNone, WU, "write unchanged"},
      {W, R | W | WU | RS, "consistent read, write unchanged, resize"},
  };
  for (const AllowRow& row : rows) {
    EdgeView a{kNone, row.a_shared, "node 'a'", "file"};
    EdgeView b{row.b_perm, kAll, "node 'b'", "file"};
    auto r = check_a_allows_b("n", a, b);
    if (row.conflict == nullptr) {
      EXPECT_TRUE(r.has_value()) << bits(row.a_shared) << " vs " << bits(row.b_perm);
    } else {
      ASSERT_FALSE(r.has_value());
      EXPECT_NE(r.error().message().find(std::string("permissions '") + row.conflict + "'"),
                std::string::npos)
          << r.error().message();
    }
  }
}

TEST(ConflictAlgebra, MessageNamesBothUsersInQemuWording) {
  EdgeView a{kNone, R | WU, "node 'q1'", "file"};
  EdgeView b{R | W | RS, kAll, "node 'q0'", "file"};
  auto r = check_a_allows_b("f0", a, b);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().err(), EPERM);
  EXPECT_EQ(r.error().message().substr(0, r.error().message().find(". ") + 1),
            "Permission conflict on node 'f0': permissions 'write, resize' are both required by "
            "node 'q0' (uses node 'f0' as 'file' child) and unshared by node 'q1' (uses node "
            "'f0' as 'file' child).");
  // One more sentence says how to get out of it.
  EXPECT_NE(r.error().message().find("force-share=on"), std::string::npos);
}

using PermGraphTest = CoreTest;

TEST_F(PermGraphTest, SecondWritableFormatOnOneFileConflicts) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  add({{"driver", "test-fmt"}, {"node-name", "q0"}, {"file", "f0"}});
  std::string msg = add_error({{"driver", "test-fmt"}, {"node-name", "q1"}, {"file", "f0"}});
  EXPECT_EQ(msg.rfind("Permission conflict on node 'f0': permissions 'write, resize' are both "
                      "required by node 'q0' (uses node 'f0' as 'file' child) and unshared by "
                      "node 'q1' (uses node 'f0' as 'file' child).",
                      0),
            0u)
      << msg;
  EXPECT_EQ(engine->find_node("q1"), nullptr);
  EXPECT_EQ(f0->parents().size(), 1u);
}

TEST_F(PermGraphTest, WritableFormatTakesWriteOnItsFileEvenWithoutUsers) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  add({{"driver", "test-fmt"}, {"node-name", "q0"}, {"file", "f0"}});
  ASSERT_EQ(f0->parents().size(), 1u);
  EXPECT_EQ(bits(f0->parents()[0]->perm()), bits(R | W | RS));
  EXPECT_EQ(bits(f0->parents()[0]->shared()), bits(R | WU));
  // The file's driver was told its new cumulative permissions.
  EXPECT_EQ(bits(driver_of<TestDisk>(f0).last_set_perm), bits(R | W | RS));
}

TEST_F(PermGraphTest, ReadOnlyNodeRefusesWriters) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}, {"read-only", true}});
  auto blk = engine->attach_backend(*f0, "", R | W, kAll);
  ASSERT_FALSE(blk.has_value());
  EXPECT_EQ(blk.error().message(), "Block node is read-only");
  EXPECT_TRUE(f0->parents().empty());
  EXPECT_EQ(add_error({{"driver", "test-fmt"}, {"node-name", "q0"}, {"file", "f0"}}),
            "Block node is read-only");
  EXPECT_EQ(engine->find_node("q0"), nullptr);
  // A read-only format reads only.
  Node* q1 =
      add({{"driver", "test-fmt"}, {"node-name", "q1"}, {"file", "f0"}, {"read-only", true}});
  EXPECT_EQ(bits(q1->children()[0]->perm()), bits(R));
}

TEST_F(PermGraphTest, WritingAnUnalignedSizeNeedsResize) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}, {"size", 1000}});
  NodeLimits lim;
  lim.request_alignment = 512;
  driver_of<TestDisk>(f0).lim = lim;
  f0->refresh_limits();
  auto w = engine->attach_backend(*f0, "", R | W, kAll);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().message(),
            "Cannot get 'write' permission without 'resize': Image size is not a multiple of "
            "request alignment");
  EXPECT_TRUE(attach(f0, R | W | RS, kAll) != nullptr);
}

TEST_F(PermGraphTest, ForceShareOnChildMakesParentsShareEverything) {
  Node* shared_disk = add(
      {{"driver", "test-disk"}, {"node-name", "fs"}, {"read-only", true}, {"force-share", true}});
  Node* plain_disk = add({{"driver", "test-disk"}, {"node-name", "fp"}, {"read-only", true}});
  add({{"driver", "test-fmt"}, {"node-name", "a"}, {"read-only", true}, {"file", "fs"}});
  add({{"driver", "test-fmt"}, {"node-name", "b"}, {"read-only", true}, {"file", "fp"}});
  EXPECT_EQ(bits(shared_disk->parents()[0]->shared()), bits(kAll));
  EXPECT_EQ(bits(plain_disk->parents()[0]->shared()), bits(R | WU));
}

TEST_F(PermGraphTest, UserConflictNamesBlockDevices) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  auto first = attach(f0, R | W, R, "sda");
  auto second = engine->attach_backend(*f0, "", R | W, kAll);
  ASSERT_FALSE(second.has_value());
  // The newcomer wants what sda does not share.
  EXPECT_EQ(second.error().message().rfind(
                "Permission conflict on node 'f0': permissions 'write' are both required by an "
                "unnamed block device (uses node 'f0' as 'root' child) and unshared by block "
                "device 'sda' (uses node 'f0' as 'root' child).",
                0),
            0u)
      << second.error().message();
  EXPECT_EQ(f0->parents().size(), 1u);
}

TEST_F(PermGraphTest, FailedAttachLeavesEveryEdgeAsBefore) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  Node* q0 = add({{"driver", "test-fmt"}, {"node-name", "q0"}, {"file", "f0"}});
  auto reader = attach(q0, R, R | WU, "reader");
  auto before = edge_snapshot();

  // A user sharing only reads narrows what q0 lets others do on f0, which f0 refuses.
  driver_of<TestDisk>(f0).fail_check_perm = EACCES;
  event_log().clear();
  auto blk = engine->attach_backend(*q0, "", R, R);
  ASSERT_FALSE(blk.has_value());
  EXPECT_EQ(blk.error().err(), EACCES);
  EXPECT_EQ(edge_snapshot(), before);
  // q0 was prepared and so is aborted; f0 failed its check and is not.
  EXPECT_EQ(events("check"), (std::vector<std::string>{"q0", "f0"}));
  EXPECT_EQ(events("abort"), (std::vector<std::string>{"q0"}));
  EXPECT_TRUE(events("set").empty());

  // A plain conflict between users changes nothing either.
  auto writer = engine->attach_backend(*q0, "", R | W, kAll);
  ASSERT_FALSE(writer.has_value());
  EXPECT_EQ(edge_snapshot(), before);
}

TEST_F(PermGraphTest, SetPermIsATransaction) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  auto a = attach(f0, R, kAll, "a");
  auto b = attach(f0, R, R | WU, "b");
  // a may not start writing: b does not share WRITE.
  auto r = a->set_perm(R | W, kAll);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(bits(a->perm()), bits(R));
  EXPECT_EQ(bits(a->shared()), bits(kAll));
  ASSERT_TRUE(b->set_perm(R, kAll).has_value());
  ASSERT_TRUE(a->set_perm(R | W, kAll).has_value());
  EXPECT_EQ(bits(f0->cumulative_perm()), bits(R | W));
  EXPECT_EQ(bits(driver_of<TestDisk>(f0).last_set_perm), bits(R | W));
}

TEST_F(PermGraphTest, DetachLoosensPermissionsBelow) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  Node* top = add({{"driver", "test-filter"}, {"node-name", "top"}, {"file", "f0"}});
  {
    auto w = attach(top, R | W, R | WU);
    EXPECT_EQ(bits(f0->cumulative_perm()), bits(R | W));
    EXPECT_EQ(bits(f0->cumulative_shared()), bits(R | WU));
  }
  EXPECT_EQ(bits(f0->cumulative_perm()), bits(kNone));
  EXPECT_EQ(bits(f0->cumulative_shared()), bits(kAll));
  EXPECT_EQ(bits(driver_of<TestDisk>(f0).last_set_perm), bits(kNone));
}

TEST_F(PermGraphTest, CyclesAreRefused) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  Node* q0 = add({{"driver", "test-fmt"}, {"node-name", "q0"}, {"file", "f0"}});
  auto r = engine->attach_child(*f0, *q0, "backing", ChildRole::kCow);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "Making 'q0' a backing child of 'f0' would create a cycle");
  auto self = engine->attach_child(*q0, *q0, "backing", ChildRole::kCow);
  ASSERT_FALSE(self.has_value());
  EXPECT_EQ(self.error().message(), "Making 'q0' a backing child of 'q0' would create a cycle");
  EXPECT_EQ(f0->children().size(), 0u);
  EXPECT_EQ(q0->parents().size(), 0u);
}

TEST_F(PermGraphTest, AddingANodeOnALongChainTouchesOnlyTheTop) {
  constexpr int kChain = 1000;
  add({{"driver", "test-disk"}, {"node-name", "n0"}});
  for (int i = 1; i < kChain; ++i) {
    add({{"driver", "test-filter"},
         {"node-name", "n" + std::to_string(i)},
         {"file", "n" + std::to_string(i - 1)}});
  }
  event_log().clear();
  auto start = std::chrono::steady_clock::now();
  Node* top = add({{"driver", "test-filter"},
                   {"node-name", "top"},
                   {"file", "n" + std::to_string(kChain - 1)}});
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_NE(top, nullptr);
  // The new node's edge asks nothing of the chain, so no chain node is asked to re-check.
  for (const std::string& name : events("check")) EXPECT_EQ(name, "top");
  std::cout << "add_node on a chain of " << kChain << ": "
            << std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count() << " us\n";

  // A writer on top does reach the bottom, through every filter.
  auto w = attach(top, R | W, R | WU);
  EXPECT_EQ(bits(engine->find_node("n0")->cumulative_perm()), bits(R | W));
}

}  // namespace
}  // namespace strata::testing
