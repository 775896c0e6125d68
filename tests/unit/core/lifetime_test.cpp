// Node lifetime: blockdev-del, who holds a node, and closing parents before children.
#include <gtest/gtest.h>

#include "test_drivers.h"

namespace strata::testing {
namespace {

using LifetimeTest = CoreTest;
constexpr Perm R = Perm::kConsistentRead;

TEST_F(LifetimeTest, DeleteNodeErrors) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  add({{"driver", "test-fmt"},
       {"node-name", "q0"},
       {"file", {{"driver", "test-disk"}, {"node-name", "inline"}}},
       {"backing", "f0"}});
  auto missing = run_sync(loop, engine->delete_node("nope"));
  EXPECT_EQ(missing.error().message(), "Failed to find node with node-name='nope'");
  EXPECT_EQ(run_sync(loop, engine->delete_node("f0")).error().message(),
            "Block device f0 is in use");
  EXPECT_EQ(run_sync(loop, engine->delete_node("inline")).error().message(),
            "Node inline is not owned by the monitor");
  auto user = attach(engine->find_node("q0"), R, Perm::kAll);
  EXPECT_EQ(run_sync(loop, engine->delete_node("q0")).error().message(), "Node q0 is in use");
  EXPECT_EQ(engine->nodes().size(), 3u);
  EXPECT_EQ(f0->parents().size(), 1u);
}

TEST_F(LifetimeTest, DeleteClosesInlineChildrenAfterTheParent) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  add({{"driver", "test-fmt"},
       {"node-name", "q0"},
       {"file", {{"driver", "test-disk"}, {"node-name", "inline"}}},
       {"backing", "f0"}});
  event_log().clear();
  ASSERT_TRUE(run_sync(loop, engine->delete_node("q0")).has_value());
  EXPECT_EQ(events("close"), (std::vector<std::string>{"q0", "inline"}));
  // The referenced node belongs to the monitor and stays, with nothing holding it.
  EXPECT_EQ(engine->nodes(), std::vector<Node*>{f0});
  EXPECT_TRUE(f0->parents().empty());
  EXPECT_EQ(engine->find_node("inline"), nullptr);
  ASSERT_TRUE(run_sync(loop, engine->delete_node("f0")).has_value());
  EXPECT_TRUE(engine->nodes().empty());
}

TEST_F(LifetimeTest, AUserKeepsAnInlineNodeAliveUntilItLeaves) {
  add({{"driver", "test-fmt"},
       {"node-name", "q0"},
       {"file", {{"driver", "test-disk"}, {"node-name", "inline"}}}});
  auto user = attach(engine->find_node("inline"), R, Perm::kAll);
  ASSERT_TRUE(run_sync(loop, engine->delete_node("q0")).has_value());
  ASSERT_NE(engine->find_node("inline"), nullptr);
  event_log().clear();
  user.reset();
  run_until(loop, [&] { return engine->nodes().empty(); });
  EXPECT_EQ(events("close"), std::vector<std::string>{"inline"});
}

TEST_F(LifetimeTest, EngineClosesEverythingParentsFirst) {
  add({{"driver", "test-disk"}, {"node-name", "f0"}});
  add({{"driver", "test-fmt"}, {"node-name", "q0"}, {"file", "f0"}, {"read-only", true}});
  add({{"driver", "test-filter"}, {"node-name", "top"}, {"file", "q0"}});
  add({{"driver", "test-disk"}, {"node-name", "lone"}});
  auto user = attach(engine->find_node("top"), R, Perm::kAll);
  event_log().clear();
  engine.reset();
  EXPECT_EQ(events("close"), (std::vector<std::string>{"top", "q0", "f0", "lone"}));
  // The user outlived the engine; dropping it now must not touch the dead engine.
  EXPECT_FALSE(user->has_root());
  user.reset();
}

TEST_F(LifetimeTest, TwoEnginesAreIndependent) {
  Engine other(loop, test_drivers());
  auto r = run_sync(loop, other.add_node({{"driver", "test-disk"}, {"node-name", "f0"}}));
  ASSERT_TRUE(r.has_value());
  add({{"driver", "test-disk"}, {"node-name", "f0"}});
  EXPECT_EQ(other.nodes().size(), 1u);
  EXPECT_EQ(engine->nodes().size(), 1u);
  EXPECT_NE(other.find_node("f0"), engine->find_node("f0"));
}

TEST_F(LifetimeTest, BackendNamesResolveAsReferences) {
  Node* f0 = add({{"driver", "test-disk"}, {"node-name", "f0"}});
  auto user = attach(f0, R, Perm::kAll, "drive0");
  Node* q = add({{"driver", "test-fmt"}, {"read-only", true}, {"file", "drive0"}});
  EXPECT_EQ(&q->children()[0]->node(), f0);
  EXPECT_EQ(add_error({{"driver", "test-disk"}, {"node-name", "drive0"}}),
            "node-name=drive0 is conflicting with a device id");
  EXPECT_EQ(user->parent_description(), "block device 'drive0'");
  auto anon = attach(f0, R, Perm::kAll);
  EXPECT_EQ(anon->parent_description(), "an unnamed block device");
  EXPECT_EQ(anon->root().name(), "root");
  EXPECT_EQ(anon->root().role(), ChildRole::kFiltered | ChildRole::kPrimary);
}

}  // namespace
}  // namespace strata::testing
