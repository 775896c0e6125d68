// PermUpdate: one permission transaction over the block graph (private to the core).
//
// A graph change first edits the structure (with its own undo), then refreshes permissions:
// refresh() walks the affected subgraph parents first, checks each node's parents against each
// other, recomputes the perms of each node's child edges (recording the old values) and lets
// each driver prepare (check_perm). Then the caller commits (set_perm on every prepared driver)
// or aborts (abort_perm_update on every prepared driver, every edge restored). A PermUpdate
// destroyed without either aborts, so an early return cannot leave a half-applied change.
//
// Only nodes whose inputs changed are visited: a start node, or a node one of whose parent
// edges got new perms. A node whose cumulative perms come out unchanged stops the walk there.
//
// commit() also reports every prepared node whose storage switched between read-only and
// read-write (Driver::storage_read_write) to the Engine's access listeners.
//
// Threading: event loop thread only; no request may be waiting on a graph change in between.
#pragma once

#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "strata/driver.h"
#include "strata/perm.h"
#include "strata/result.h"

namespace strata {

class Child;
class Node;

// One parent edge as the conflict check sees it.
struct EdgeView {
  Perm perm = Perm::kNone;
  Perm shared = Perm::kAll;
  std::string_view user;       // "node 'q0'", "an unnamed block device"
  std::string_view edge_name;  // "file", "root"
};

// Fails if `b` uses something `a` does not share (QEMU's bdrv_a_allow_b), with QEMU 6.1's text
// and a sentence on how to resolve it.
Result<void> check_a_allows_b(std::string_view node_name, const EdgeView& a, const EdgeView& b);

// Checks every ordered pair of `node`'s parent edges, newest parent first (so the message
// names the same pair QEMU's would).
Result<void> check_parent_conflicts(const Node& node);

// What `parent`'s driver needs on `edge` given the parent's cumulative perms, including the
// child's force-share (which makes the parent share everything).
ChildPerms edge_perms(Node& parent, const Child& edge, Perm cumulative_perm,
                      Perm cumulative_shared);

class PermUpdate {
 public:
  PermUpdate() = default;
  ~PermUpdate();
  PermUpdate(const PermUpdate&) = delete;
  PermUpdate& operator=(const PermUpdate&) = delete;

  // Stages new perms on `edge` (a user's explicit perms); abort() restores the old ones.
  void set_edge(Child& edge, Perm perm, Perm shared);
  // Says that `node`'s options are a pending reopen's and that it was read-only or not before,
  // so that a writer on a node the reopen makes read-only is refused in QEMU's words
  // ("Read-only block node '<node>' cannot support read-write users").
  void note_reopening(const Node& node, bool read_only_before);
  // Refreshes the subgraph below `start` (nodes whose parents or own flags changed). On error
  // the caller calls abort(); nothing of the failed refresh is committed.
  [[nodiscard]] Result<void> refresh(std::span<Node* const> start);
  void commit();
  void abort();

 private:
  struct EdgeUndo {
    Child* edge;
    Perm perm;
    Perm shared;
  };
  struct Prepared {
    Node* node;
    Perm perm;
    Perm shared;
    bool storage_read_write;  // before check_perm
  };
  Result<void> refresh_node(Node& node, std::unordered_set<Node*>& dirty);
  Result<void> check_writable(const Node& node, Perm perm) const;

  std::vector<EdgeUndo> edges_;
  std::vector<Prepared> prepared_;
  std::unordered_map<const Node*, bool> read_only_before_;
  bool finished_ = false;
};

// Parents first: every node comes before its children. Covers everything reachable from
// `start`.
std::vector<Node*> topological_order(std::span<Node* const> start);

// True if `target` is `from` or lies below it: making `from` a child of `target` would close a
// cycle.
bool reaches(const Node& from, const Node& target);

}  // namespace strata
