// Graph edits for jobs: Engine::replace_node and Engine::replace_child move edges as one
// permission transaction, refuse frozen edges and cycles, and leave everything as it was when
// they fail.
#include <gtest/gtest.h>

#include "test_drivers.h"

namespace strata::testing {
namespace {

using GraphEditTest = CoreTest;
constexpr Perm R = Perm::kConsistentRead;
constexpr Perm W = Perm::kWrite;

TEST_F(GraphEditTest, ReplaceNodeMovesUsersAndTheirPermissions) {
  Node* a = add({{"driver", "test-disk"}, {"node-name", "a"}, {"auto-read-only", true}});
  Node* b = add({{"driver", "test-disk"}, {"node-name", "b"}, {"auto-read-only", true}});
  auto writer = attach(a, R | W, Perm::kAll, "writer");
  ASSERT_TRUE(a->driver().storage_read_write());
  ASSERT_TRUE(engine->replace_node(*a, *b).has_value());
  EXPECT_EQ(&writer->node(), b);
  EXPECT_TRUE(a->parents().empty());
  EXPECT_EQ(b->cumulative_perm(), R | W);
  // The storage follows its writers: b became writable, a went back to read-only.
  EXPECT_TRUE(b->driver().storage_read_write());
  EXPECT_FALSE(a->driver().storage_read_write());
}

TEST_F(GraphEditTest, InsertingAFilterKeepsTheFiltersOwnEdge) {
  Node* a = add({{"driver", "test-disk"}, {"node-name", "a"}});
  Node* top = add({{"driver", "test-fmt"}, {"node-name", "top"}, {"file", "a"}});
  auto user = attach(a, R, Perm::kAll, "user");
  Node* f = add({{"driver", "test-filter"}, {"node-name", "f"}, {"file", "a"}});
  ASSERT_TRUE(engine->replace_node(*a, *f).has_value());
  // Everything but the filter's own edge now points at the filter.
  ASSERT_EQ(a->parents().size(), 1u);
  EXPECT_EQ(a->parents()[0]->parent().as_node(), f);
  EXPECT_EQ(&top->child("file")->node(), f);
  EXPECT_EQ(&user->node(), f);
  // And back: the filter's edge stays (the filter reaches a), the others return.
  ASSERT_TRUE(engine->replace_node(*f, *a).has_value());
  EXPECT_EQ(&top->child("file")->node(), a);
  EXPECT_EQ(&user->node(), a);
  EXPECT_TRUE(f->parents().empty());
}

TEST_F(GraphEditTest, KeepLeavesSelectedEdges) {
  Node* a = add({{"driver", "test-disk"}, {"node-name", "a"}});
  Node* b = add({{"driver", "test-disk"}, {"node-name", "b"}});
  auto job = attach(a, Perm::kNone, Perm::kAll, "job");
  auto user = attach(a, R, Perm::kAll, "user");
  auto keep_job = [&](const Child& c) { return &c == &job->root(); };
  ASSERT_TRUE(engine->replace_node(*a, *b, keep_job).has_value());
  EXPECT_EQ(&job->node(), a);
  EXPECT_EQ(&user->node(), b);
}

TEST_F(GraphEditTest, FrozenEdgeRefusesAndNothingChanges) {
  add({{"driver", "test-disk"}, {"node-name", "base"}});
  add({{"driver", "test-disk"}, {"node-name", "other"}});
  add({{"driver", "test-disk"}, {"node-name", "d"}});
  Node* top =
      add({{"driver", "test-fmt"}, {"node-name", "top"}, {"file", "d"}, {"backing", "base"}});
  top->child("backing")->set_frozen(true);
  std::string before = graph_snapshot();
  auto moved = engine->replace_node(*engine->find_node("base"), *engine->find_node("other"));
  ASSERT_FALSE(moved.has_value());
  EXPECT_EQ(moved.error().message(), "Cannot change 'backing' link to 'base'");
  auto changed = engine->replace_child(*top->child("backing"), *engine->find_node("other"));
  ASSERT_FALSE(changed.has_value());
  EXPECT_EQ(changed.error().message(), "Cannot change 'backing' link to 'base'");
  EXPECT_EQ(graph_snapshot(), before);
}

TEST_F(GraphEditTest, ConflictPutsEveryEdgeBackInOrder) {
  Node* a = add({{"driver", "test-disk"}, {"node-name", "a"}});
  Node* b = add({{"driver", "test-disk"}, {"node-name", "b"}});
  auto reader = attach(a, R, Perm::kAll, "reader");
  auto writer = attach(a, R | W, Perm::kAll, "writer");
  auto exclusive = attach(b, R, R, "exclusive");  // lets nobody write b
  std::string before = graph_snapshot();
  auto moved = engine->replace_node(*a, *b);
  ASSERT_FALSE(moved.has_value());
  EXPECT_NE(moved.error().message().find("Permission conflict on node 'b'"), std::string::npos)
      << moved.error().message();
  EXPECT_EQ(graph_snapshot(), before);
  EXPECT_EQ(&writer->node(), a);
  EXPECT_EQ(&reader->node(), a);
}

TEST_F(GraphEditTest, ReplaceChildRefusesCycles) {
  add({{"driver", "test-disk"}, {"node-name", "d0"}});
  add({{"driver", "test-disk"}, {"node-name", "d1"}});
  Node* low = add({{"driver", "test-fmt"}, {"node-name", "low"}, {"file", "d0"}});
  Node* high =
      add({{"driver", "test-fmt"}, {"node-name", "high"}, {"file", "d1"}, {"backing", "low"}});
  std::string before = graph_snapshot();
  Child* low_file = low->child("file");
  auto cycle = engine->replace_child(*low_file, *high);
  ASSERT_FALSE(cycle.has_value());
  EXPECT_EQ(cycle.error().message(), "Making 'high' a file child of 'low' would create a cycle");
  EXPECT_EQ(graph_snapshot(), before);
  // Dropping the middle of a chain: high's backing goes straight to low's file node.
  ASSERT_TRUE(engine->replace_child(*high->child("backing"), *engine->find_node("d0")).has_value());
  EXPECT_EQ(high->child("backing")->node().name(), "d0");
  EXPECT_TRUE(low->parents().empty());
}

}  // namespace
}  // namespace strata::testing
