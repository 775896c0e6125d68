// auto-read-only in the core: writable on demand, the lazy METADATA rule that keeps a chain
// read-only until someone writes, the access query and the event on every storage switch.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

#include "test_drivers.h"

namespace strata::testing {
namespace {

constexpr Perm R = Perm::kConsistentRead;
constexpr Perm W = Perm::kWrite;
constexpr Perm WU = Perm::kWriteUnchanged;
constexpr Perm RS = Perm::kResize;
constexpr Perm kAll = Perm::kAll;

class AccessTest : public CoreTest {
 protected:
  AccessTest() {
    engine->add_access_listener(
        [this](Node& node, bool read_write) { switches.emplace_back(node.name(), read_write); });
  }

  // Whether any check_perm that reached `node` asked for a write permission.
  static bool saw_write(Node* node) {
    for (const ChildPerms& c : driver_of<TestDisk>(node).checked) {
      if (has_any(c.perm, kWritePerms)) return true;
    }
    return false;
  }

  std::vector<std::pair<std::string, bool>> switches;
};

using Switches = std::vector<std::pair<std::string, bool>>;

TEST_F(AccessTest, AutoReadOnlyNodeIsWritableOnDemand) {
  Node* f = add({{"driver", "test-disk"}, {"node-name", "f"}, {"auto-read-only", true}});
  EXPECT_FALSE(f->is_read_only());
  EXPECT_FALSE(f->access().storage_read_write);
  // Permission checks treat it as writable: a writer may attach, and the storage follows.
  auto w = attach(f, R | W, R | WU);
  ASSERT_NE(w, nullptr);
  EXPECT_TRUE(f->access().storage_read_write);
  w.reset();
  EXPECT_FALSE(f->access().storage_read_write);
}

TEST_F(AccessTest, AccessReportsConfiguredAndEffectiveMode) {
  Node* ro = add({{"driver", "test-disk"}, {"node-name", "ro"}, {"read-only", true}});
  Node* rw = add({{"driver", "test-disk"}, {"node-name", "rw"}});
  Node* aro = add({{"driver", "test-disk"}, {"node-name", "aro"}, {"auto-read-only", true}});
  // auto-read-only only matters without read-only.
  Node* both = add({{"driver", "test-disk"},
                    {"node-name", "both"},
                    {"read-only", true},
                    {"auto-read-only", true}});
  struct Row {
    Node* node;
    NodeAccess want;
  };
  const Row rows[] = {
      {ro, {true, false, false}},
      {rw, {false, false, true}},
      {aro, {false, true, false}},
      {both, {true, true, false}},
  };
  for (const Row& row : rows) {
    NodeAccess got = row.node->access();
    EXPECT_EQ(got.read_only, row.want.read_only) << row.node->name();
    EXPECT_EQ(got.auto_read_only, row.want.auto_read_only) << row.node->name();
    EXPECT_EQ(got.storage_read_write, row.want.storage_read_write) << row.node->name();
  }
}

TEST_F(AccessTest, NoWritePermissionReachesAutoReadOnlyStorageUntilAWriterAttaches) {
  Node* q = add({{"driver", "test-fmt"},
                 {"node-name", "q"},
                 {"auto-read-only", true},
                 {"file", {{"driver", "test-disk"}, {"node-name", "f"}}}});
  Node* f = engine->find_node("f");
  ASSERT_NE(f, nullptr);
  // The inline file inherits auto-read-only, and the writable format only reads it.
  EXPECT_TRUE(f->options().auto_read_only);
  EXPECT_FALSE(q->is_read_only());
  EXPECT_FALSE(saw_write(f));
  EXPECT_EQ(bits(f->cumulative_perm()), bits(R));
  EXPECT_FALSE(f->access().storage_read_write);

  // A reader changes nothing below.
  auto reader = attach(q, R, kAll);
  EXPECT_FALSE(saw_write(f));
  EXPECT_FALSE(f->access().storage_read_write);

  {
    auto writer = attach(q, R | W, R | WU);
    ASSERT_NE(writer, nullptr);
    EXPECT_TRUE(saw_write(f));
    EXPECT_EQ(bits(f->cumulative_perm()), bits(R | W | RS));
    EXPECT_EQ(bits(driver_of<TestDisk>(f).last_set_perm), bits(R | W | RS));
    EXPECT_TRUE(f->access().storage_read_write);
  }
  // The writer left: so did every write permission below.
  EXPECT_EQ(bits(f->cumulative_perm()), bits(R));
  EXPECT_EQ(bits(driver_of<TestDisk>(f).last_set_perm), bits(R));
  EXPECT_FALSE(f->access().storage_read_write);
  EXPECT_EQ(switches, (Switches{{"f", true}, {"f", false}}));
}

TEST_F(AccessTest, WithoutAutoReadOnlyAWritableFormatWritesItsFileAtOnce) {
  add({{"driver", "test-fmt"},
       {"node-name", "q"},
       {"file", {{"driver", "test-disk"}, {"node-name", "f"}}}});
  Node* f = engine->find_node("f");
  EXPECT_TRUE(saw_write(f));
  EXPECT_EQ(bits(f->cumulative_perm()), bits(R | W | RS));
  EXPECT_TRUE(f->access().storage_read_write);
}

TEST_F(AccessTest, AChainStaysReadOnlyUntilSomeoneWritesItsTop) {
  // base <- top, both formats with auto-read-only over auto-read-only disks; a filter on top.
  add({{"driver", "test-fmt"},
       {"node-name", "base"},
       {"auto-read-only", true},
       {"file", {{"driver", "test-disk"}, {"node-name", "base-file"}}}});
  Node* top = add({{"driver", "test-fmt"},
                   {"node-name", "top"},
                   {"auto-read-only", true},
                   {"backing", "base"},
                   {"file", {{"driver", "test-disk"}, {"node-name", "top-file"}}}});
  Node* filter = add({{"driver", "test-filter"}, {"node-name", "filter"}, {"file", "top"}});
  auto reader = attach(filter, R, kAll);
  for (const char* name : {"base-file", "top-file"}) {
    EXPECT_FALSE(saw_write(engine->find_node(name))) << name;
    EXPECT_FALSE(engine->find_node(name)->access().storage_read_write) << name;
  }
  auto writer = attach(filter, R | W, R | WU);
  ASSERT_NE(writer, nullptr);
  EXPECT_EQ(bits(top->cumulative_perm()), bits(R | W));
  EXPECT_TRUE(engine->find_node("top-file")->access().storage_read_write);
  // The backing chain is only read.
  EXPECT_FALSE(saw_write(engine->find_node("base-file")));
  EXPECT_EQ(switches, (Switches{{"top-file", true}}));
}

TEST_F(AccessTest, EventsFireExactlyOnSwitches) {
  Node* f = add({{"driver", "test-disk"}, {"node-name", "f"}, {"auto-read-only", true}});
  add({{"driver", "test-disk"}, {"node-name", "plain"}});
  add({{"driver", "test-disk"}, {"node-name", "ro"}, {"read-only", true}});
  EXPECT_TRUE(switches.empty()) << "opening never switches";

  auto reader = attach(f, R, kAll);
  EXPECT_TRUE(switches.empty());
  auto w1 = attach(f, R | W, kAll);
  EXPECT_EQ(switches, (Switches{{"f", true}}));
  auto w2 = attach(f, R | WU, kAll);
  EXPECT_EQ(switches.size(), 1u) << "already read-write";
  w1.reset();
  EXPECT_EQ(switches.size(), 1u) << "w2 still writes";
  ASSERT_TRUE(w2->set_perm(R, kAll).has_value());
  EXPECT_EQ(switches, (Switches{{"f", true}, {"f", false}}));
  w2.reset();
  reader.reset();
  EXPECT_EQ(switches.size(), 2u);

  // Writers on nodes that are always read-write or always read-only never switch anything.
  auto plain = attach(engine->find_node("plain"), R | W, kAll);
  auto ro_reader = attach(engine->find_node("ro"), R, kAll);
  EXPECT_EQ(switches.size(), 2u);
}

TEST_F(AccessTest, RefusedUpgradeFailsTheAttachAndChangesNothing) {
  Node* q = add({{"driver", "test-fmt"},
                 {"node-name", "q"},
                 {"auto-read-only", true},
                 {"file", {{"driver", "test-disk"}, {"node-name", "f"}}}});
  Node* f = engine->find_node("f");
  driver_of<TestDisk>(f).refuse_write_access = EACCES;
  auto reader = attach(q, R, kAll);
  std::string before = graph_snapshot();
  auto writer = engine->attach_backend(*q, "sda", R | W, R | WU);
  ASSERT_FALSE(writer.has_value());
  EXPECT_EQ(writer.error().err(), EACCES);
  EXPECT_EQ(writer.error().message(),
            "Block node 'f' is read-only because of auto-read-only=on and its storage refuses "
            "write access: Permission denied");
  EXPECT_EQ(graph_snapshot(), before);
  EXPECT_TRUE(switches.empty());
  EXPECT_TRUE(driver_of<TestDisk>(f).protocol_errors.empty());
}

TEST_F(AccessTest, ReopenSwitchesFireEventsToo) {
  Node* f = add({{"driver", "test-disk"}, {"node-name", "f"}});
  EXPECT_TRUE(f->access().storage_read_write);
  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*f, true)).has_value());
  EXPECT_FALSE(f->access().storage_read_write);
  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*f, false)).has_value());
  EXPECT_TRUE(f->access().storage_read_write);
  // Making the node auto-read-only without writers drops write access as well.
  ASSERT_TRUE(
      run_sync(loop, engine->reopen(
                         {{{"driver", "test-disk"}, {"node-name", "f"}, {"auto-read-only", true}}}))
          .has_value());
  EXPECT_FALSE(f->access().storage_read_write);
  EXPECT_EQ(switches, (Switches{{"f", false}, {"f", true}, {"f", false}}));
}

// QEMU's test 247: formats that are read-only over auto-read-only files, given by reference.
// A commit job makes the base writable for a while; its file follows, and drops back after.
TEST_F(AccessTest, ReadOnlyFormatOverAutoReadOnlyFileBecomesWritableOnReopen) {
  add({{"driver", "test-disk"}, {"node-name", "file-0"}, {"auto-read-only", true}});
  Node* fmt = add(
      {{"driver", "test-fmt"}, {"node-name", "format-0"}, {"read-only", true}, {"file", "file-0"}});
  Node* file = engine->find_node("file-0");
  EXPECT_EQ(bits(file->cumulative_perm()), bits(R));
  EXPECT_FALSE(file->access().storage_read_write);

  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*fmt, false)).has_value());
  EXPECT_FALSE(fmt->is_read_only());
  EXPECT_EQ(bits(file->cumulative_perm()), bits(R | W | RS));
  EXPECT_TRUE(file->access().storage_read_write);

  ASSERT_TRUE(run_sync(loop, engine->set_read_only(*fmt, true)).has_value());
  EXPECT_EQ(bits(file->cumulative_perm()), bits(R));
  EXPECT_FALSE(file->access().storage_read_write);
  EXPECT_EQ(switches, (Switches{{"file-0", true}, {"file-0", false}}));

  // Without auto-read-only on the file the same reopen is refused.
  add({{"driver", "test-disk"}, {"node-name", "file-1"}, {"read-only", true}});
  Node* fmt1 = add(
      {{"driver", "test-fmt"}, {"node-name", "format-1"}, {"read-only", true}, {"file", "file-1"}});
  auto r = run_sync(loop, engine->set_read_only(*fmt1, false));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "Block node is read-only");
  EXPECT_TRUE(fmt1->is_read_only());
}

}  // namespace
}  // namespace strata::testing
