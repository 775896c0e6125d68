// A seeded random walk over graph operations: add_node, attach_backend, detach, set_perm,
// reopen, set_read_only, delete_node, freezing edges. About two in five operations fail, by
// design (conflicts, read-only nodes, cycles, unknown nodes, frozen links, options that cannot
// change).
// After every operation the invariants of the graph must hold, and a failed operation must
// have changed nothing at all.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "perm_update.h"
#include "test_drivers.h"

namespace strata::testing {
namespace {

using json = nlohmann::json;

constexpr size_t kMaxNodes = 14;
constexpr size_t kMaxUsers = 6;

class RandomGraph : public CoreTest {
 protected:
  // Runs `steps` random operations from `seed`, checking after each.
  void walk(unsigned seed, int steps);

 private:
  size_t pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng_); }
  bool chance(size_t percent) { return pick(100) < percent; }
  Perm random_perm() { return static_cast<Perm>(pick(16)); }
  Node* random_node() {
    auto nodes = engine->nodes();
    return nodes.empty() ? nullptr : nodes[pick(nodes.size())];
  }
  // An existing node's name, or now and then one that does not exist.
  std::string random_name() {
    Node* n = random_node();
    return n == nullptr || chance(8) ? "missing" : n->name();
  }
  std::string fresh_name() { return "n" + std::to_string(++counter_); }

  Result<void> run_op(std::string& what);
  Result<void> add_node();
  Result<void> attach();
  Result<void> set_perm();
  Result<void> reopen();
  json reopen_entry(Node& node);
  void set_generic(json& opts);
  void check_invariants(const std::string& what);
  void check_perms_from_scratch(const std::string& what);

  std::mt19937 rng_;
  std::vector<std::unique_ptr<BlockBackend>> users_;
  int counter_ = 0;
};

void RandomGraph::walk(unsigned seed, int steps) {
  rng_.seed(seed);
  int succeeded = 0;
  int failed = 0;
  for (int step = 0; step < steps; ++step) {
    std::string before = graph_snapshot();
    std::string what;
    auto r = run_op(what);
    what = "seed " + std::to_string(seed) + " step " + std::to_string(step) + ": " + what;
    if (r) {
      ++succeeded;
    } else {
      ++failed;
      EXPECT_EQ(graph_snapshot(), before) << what << " failed with: " << r.error().message();
    }
    check_invariants(what);
    if (::testing::Test::HasFailure()) return;
  }
  // Both outcomes are exercised in earnest.
  EXPECT_GT(succeeded, steps / 3) << "seed " << seed;
  EXPECT_GT(failed, steps / 3) << "seed " << seed;
  std::cout << "seed " << seed << ": " << succeeded << " operations succeeded, " << failed
            << " failed\n";
  users_.clear();
}

Result<void> RandomGraph::run_op(std::string& what) {
  switch (pick(10)) {
    case 0:
    case 1:
      what = "add_node";
      if (engine->nodes().size() < kMaxNodes) return add_node();
      [[fallthrough]];
    case 2: {
      std::string name = random_name();
      what = "delete_node " + name;
      return run_sync(loop, engine->delete_node(name));
    }
    case 3:
    case 4:
      what = "attach";
      if (users_.size() < kMaxUsers && chance(80)) return attach();
      what = "detach";
      if (!users_.empty()) users_.erase(users_.begin() + pick(users_.size()));
      return {};
    case 5:
      what = "set_perm";
      return set_perm();
    case 6:
    case 7:
    case 8:
      what = "reopen";
      return reopen();
    default: {
      Node* n = random_node();
      if (n == nullptr) return {};
      if (chance(30) && !n->children().empty()) {
        what = "freeze";
        Child* edge = n->children()[pick(n->children().size())];
        edge->set_frozen(!edge->frozen());
        return {};
      }
      bool read_only = chance(50);
      what = "set_read_only " + n->name() + " " + (read_only ? "on" : "off");
      return run_sync(loop, engine->set_read_only(*n, read_only));
    }
  }
}

void RandomGraph::set_generic(json& opts) {
  if (chance(30)) opts["read-only"] = true;
  if (chance(40)) opts["auto-read-only"] = true;
  if (chance(10)) opts["cache"] = {{"direct", chance(50)}};
}

Result<void> RandomGraph::add_node() {
  json opts;
  size_t kind = pick(10);
  if (kind < 4) {
    opts = {{"driver", "test-disk"}};
    if (chance(30)) opts["tag"] = "t" + std::to_string(pick(3));
  } else if (kind < 8) {
    opts = {{"driver", "test-fmt"}};
    if (chance(25)) {
      opts["file"] = {{"driver", "test-disk"}};  // inline, auto-named
    } else {
      opts["file"] = random_name();
    }
    size_t backing = pick(3);
    if (backing == 1) opts["backing"] = nullptr;
    if (backing == 2) opts["backing"] = random_name();
  } else {
    opts = {{"driver", "test-filter"}, {"file", random_name()}};
  }
  set_generic(opts);
  if (chance(5)) opts["bogus"] = true;
  // Now and then a name that is taken or not well formed.
  if (chance(5) && random_node() != nullptr) {
    opts["node-name"] = random_node()->name();
  } else if (chance(3)) {
    opts["node-name"] = "1bad";
  } else {
    opts["node-name"] = fresh_name();
  }
  return run_sync(loop, engine->add_node(opts)).map([](Node*) {});
}

Result<void> RandomGraph::attach() {
  Node* n = random_node();
  if (n == nullptr) return {};
  auto user = engine->attach_backend(*n, "", random_perm(), random_perm());
  if (!user) return user.error();
  users_.push_back(std::move(*user));
  return {};
}

Result<void> RandomGraph::set_perm() {
  if (users_.empty()) return {};
  return users_[pick(users_.size())]->set_perm(random_perm(), random_perm());
}

// A full configuration for `node`, mostly its current one with random changes.
json RandomGraph::reopen_entry(Node& node) {
  json opts = {{"driver", node.options().driver}, {"node-name", node.name()}};
  set_generic(opts);
  // Things that cannot change.
  if (chance(12)) opts["bogus"] = 1;
  if (chance(5)) opts["driver"] = node.options().driver == "test-fmt" ? "test-filter" : "test-fmt";
  if (chance(5)) opts["force-share"] = !node.options().force_share;
  if (node.options().force_share) {
    opts["read-only"] = true;  // a force-share node cannot become writable
  }
  for (auto it = node.driver_options().begin(); it != node.driver_options().end(); ++it) {
    opts[it.key()] = *it;
  }
  if (node.options().driver == "test-disk") {
    if (chance(30)) opts["tag"] = "t" + std::to_string(pick(3));
    if (chance(5)) opts["size"] = 1;  // cannot change
    return opts;
  }
  if (Child* file = node.child("file")) {
    opts["file"] = chance(70) ? file->node().name() : random_name();
  }
  if (node.options().driver != "test-fmt") return opts;
  Child* backing = node.child("backing");
  size_t choice = pick(10);
  if (choice < 5 && backing != nullptr) {
    opts["backing"] = backing->node().name();
  } else if (choice < 7) {
    opts["backing"] = nullptr;
  } else if (choice < 9) {
    opts["backing"] = random_name();
  }  // else left out: refused while there is a backing child
  return opts;
}

Result<void> RandomGraph::reopen() {
  std::vector<json> entries;
  for (size_t i = 0, n = 1 + (chance(25) ? 1 : 0); i < n; ++i) {
    Node* node = random_node();
    if (node == nullptr) return {};
    entries.push_back(reopen_entry(*node));
  }
  return run_sync(loop, engine->reopen(entries));
}

void RandomGraph::check_perms_from_scratch(const std::string& what) {
  // Users state their perms; every node's edges follow from its parents' by its driver's rule.
  std::unordered_map<const Child*, ChildPerms> want;
  std::vector<Node*> all = engine->nodes();
  for (Node* n : all) {
    for (Child* edge : n->parents()) {
      if (edge->parent().as_node() == nullptr) want[edge] = {edge->perm(), edge->shared()};
    }
  }
  for (Node* n : topological_order(all)) {
    Perm perm = Perm::kNone;
    Perm shared = Perm::kAll;
    for (Child* edge : n->parents()) {
      ASSERT_EQ(want.count(edge), 1u) << what << ": parents of " << n->name() << " not ordered";
      perm |= want[edge].perm;
      shared &= want[edge].shared;
    }
    for (Child* edge : n->children()) want[edge] = edge_perms(*n, *edge, perm, shared);
  }
  for (const auto& [edge, perms] : want) {
    EXPECT_EQ(bits(edge->perm()), bits(perms.perm))
        << what << ": " << edge->parent().parent_description() << " -" << edge->name() << "-> "
        << edge->node().name();
    EXPECT_EQ(bits(edge->shared()), bits(perms.shared)) << what << ": " << edge->name();
  }
}

void RandomGraph::check_invariants(const std::string& what) {
  check_perms_from_scratch(what);
  for (Node* n : engine->nodes()) {
    auto conflicts = check_parent_conflicts(*n);
    EXPECT_TRUE(conflicts.has_value()) << what << ": " << conflicts.error().message();
    Perm perm = n->cumulative_perm();
    Perm shared = n->cumulative_shared();
    if (n->is_read_only()) {
      EXPECT_FALSE(has_any(perm, Perm::kWrite | Perm::kWriteUnchanged)) << what << n->name();
    }
    auto& d = static_cast<RecordingDriver&>(n->driver());
    EXPECT_TRUE(d.protocol_errors.empty())
        << what << ": " << n->name() << " " << d.protocol_errors.front();
    EXPECT_FALSE(d.check_pending || d.reopen_pending) << what << ": " << n->name();
    EXPECT_EQ(bits(d.last_set_perm), bits(perm)) << what << ": committed perm of " << n->name();
    EXPECT_EQ(bits(d.last_set_shared), bits(shared)) << what << ": " << n->name();
    if (n->options().driver == "test-disk") {
      const NodeOptions& o = n->options();
      bool rw = !o.read_only && (!o.auto_read_only || has_any(perm, kWritePerms));
      EXPECT_EQ(n->access().storage_read_write, rw) << what << ": storage of " << n->name();
    }
    // The edge lists agree with each other, and there is no cycle.
    for (Child* c : n->children()) {
      auto up = c->node().parents();
      EXPECT_NE(std::find(up.begin(), up.end(), c), up.end()) << what;
      EXPECT_FALSE(reaches(c->node(), *n)) << what << ": cycle through " << n->name();
    }
    for (Child* p : n->parents()) {
      if (Node* parent = p->parent().as_node()) {
        auto down = parent->children();
        EXPECT_NE(std::find(down.begin(), down.end(), p), down.end()) << what;
      }
    }
    if (Node* from = n->inherits_from()) {
      auto up = n->parents();
      EXPECT_TRUE(std::any_of(up.begin(), up.end(),
                              [&](Child* c) { return c->parent().as_node() == from; }))
          << what << ": " << n->name() << " inherits from a node that is not its parent";
    }
  }
}

TEST_F(RandomGraph, InvariantsHoldAndFailuresChangeNothing) {
  for (unsigned seed : {1u, 2u, 3u, 4u}) {
    walk(seed, 1000);

    if (HasFailure()) return;
    engine = std::make_unique<Engine>(loop, test_drivers());
  }
}

}  // namespace
}  // namespace strata::testing
