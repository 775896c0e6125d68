// The permission transaction (perm_update.h) and the conflict algebra.
#include "perm_update.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <string>
#include <unordered_set>

#include "strata/child.h"
#include "strata/engine.h"
#include "strata/node.h"

namespace strata {
namespace {

// Permissions that change what a reader sees, which a read-only node never grants.
constexpr Perm kChanging = Perm::kWrite | Perm::kWriteUnchanged;

}  // namespace

Result<void> check_a_allows_b(std::string_view node_name, const EdgeView& a, const EdgeView& b) {
  Perm conflict = b.perm & ~a.shared;
  if (conflict == Perm::kNone) return {};
  return fail(EPERM,
              "Permission conflict on node '{}': permissions '{}' are both required by {} (uses "
              "node '{}' as '{}' child) and unshared by {} (uses node '{}' as '{}' child). "
              "Detach or reconfigure one of the two users, or let {} share the permission "
              "(force-share=on does that for read-only users).",
              node_name, perm_names(conflict), b.user, node_name, b.edge_name, a.user, node_name,
              a.edge_name, a.user);
}

Result<void> check_parent_conflicts(const Node& node) {
  auto parents = node.parents();
  if (parents.size() < 2) return {};
  // QEMU keeps a node's parents newest first; walking ours backwards names the same pair.
  for (auto a = parents.rbegin(); a != parents.rend(); ++a) {
    for (auto b = parents.rbegin(); b != parents.rend(); ++b) {
      if (a == b) continue;
      if (has_all((*a)->shared(), (*b)->perm())) continue;
      std::string a_user = (*a)->parent().parent_description();
      std::string b_user = (*b)->parent().parent_description();
      EdgeView av{(*a)->perm(), (*a)->shared(), a_user, (*a)->name()};
      EdgeView bv{(*b)->perm(), (*b)->shared(), b_user, (*b)->name()};
      return check_a_allows_b(node.name(), av, bv);
    }
  }
  return {};
}

ChildPerms edge_perms(Node& parent, const Child& edge, Perm cumulative_perm,
                      Perm cumulative_shared) {
  // A node still being opened has no Driver object yet; its edges get the role defaults until
  // the driver exists, and are refreshed with the driver's own rule right after.
  ChildPerms out =
      parent.has_driver()
          ? parent.driver().child_perms(edge, edge.role(), cumulative_perm, cumulative_shared)
          : default_child_perms(edge.role(), cumulative_perm, cumulative_shared,
                                !parent.is_read_only(), parent.options().auto_read_only);
  if (edge.node().options().force_share) out.shared = Perm::kAll;
  return out;
}

std::vector<Node*> topological_order(std::span<Node* const> start) {
  // Iterative depth-first search; the reversed finishing order puts parents before children.
  struct Frame {
    Node* node;
    size_t next_child;
  };
  std::unordered_set<Node*> visited;
  std::vector<Node*> finished;
  std::vector<Frame> stack;
  for (Node* root : start) {
    if (!visited.insert(root).second) continue;
    stack.push_back({root, 0});
    while (!stack.empty()) {
      Frame& top = stack.back();
      auto children = top.node->children();
      if (top.next_child < children.size()) {
        Node* child = &children[top.next_child++]->node();
        if (visited.insert(child).second) stack.push_back({child, 0});
      } else {
        finished.push_back(top.node);
        stack.pop_back();
      }
    }
  }
  std::reverse(finished.begin(), finished.end());
  return finished;
}

bool reaches(const Node& from, const Node& target) {
  if (&from == &target) return true;
  std::vector<const Node*> stack{&from};
  std::unordered_set<const Node*> seen{&from};
  while (!stack.empty()) {
    const Node* n = stack.back();
    stack.pop_back();
    for (const Child* c : n->children()) {
      const Node* below = &c->node();
      if (below == &target) return true;
      if (seen.insert(below).second) stack.push_back(below);
    }
  }
  return false;
}

PermUpdate::~PermUpdate() {
  if (!finished_) abort();
}

void PermUpdate::set_edge(Child& edge, Perm perm, Perm shared) {
  edges_.push_back({&edge, edge.perm(), edge.shared()});
  edge.set_perms(perm, shared);
}

void PermUpdate::note_reopening(const Node& node, bool read_only_before) {
  read_only_before_[&node] = read_only_before;
}

Result<void> PermUpdate::refresh(std::span<Node* const> start) {
  std::unordered_set<Node*> dirty(start.begin(), start.end());
  // While a single node is dirty, nothing that still needs a refresh can lie above it: every
  // later change comes from below it. So it goes first without ordering the graph, which keeps
  // the common change (one edge, a walk down a chain that stops after a few nodes) independent
  // of the graph's size.
  while (dirty.size() == 1) {
    Node* node = *dirty.begin();
    dirty.clear();
    auto r = refresh_node(*node, dirty);
    if (!r) return r;
  }
  if (dirty.empty()) return {};
  // Several: parents first among them and below them. No node refreshed so far lies below one
  // of them (it would have been dirtied by it, which makes a cycle), so ordering what remains
  // is enough.
  std::vector<Node*> pending(dirty.begin(), dirty.end());
  for (Node* node : topological_order(pending)) {
    if (dirty.count(node) == 0) continue;
    auto r = refresh_node(*node, dirty);
    if (!r) return r;
  }
  return {};
}

Result<void> PermUpdate::refresh_node(Node& node, std::unordered_set<Node*>& dirty) {
  auto conflicts = check_parent_conflicts(node);
  if (!conflicts) return conflicts;
  Perm perm = node.cumulative_perm();
  Perm shared = node.cumulative_shared();
  auto writable = check_writable(node, perm);
  if (!writable) return writable;
  if (node.has_driver()) {
    // Writing whole aligned blocks would extend an image whose size is not a multiple of the
    // alignment, which only a user holding RESIZE may do.
    if (has_any(perm, kChanging) && !has_any(perm, Perm::kResize) &&
        node.size() % node.limits().request_alignment != 0) {
      return fail(EPERM,
                  "Cannot get 'write' permission without 'resize': Image size is not a multiple "
                  "of request alignment");
    }
    bool storage_read_write = node.driver().storage_read_write();
    auto prepared = node.driver().check_perm(perm, shared);
    if (!prepared) return prepared;
    prepared_.push_back({&node, perm, shared, storage_read_write});
  }
  for (Child* edge : node.children()) {
    ChildPerms want = edge_perms(node, *edge, perm, shared);
    if (want.perm == edge->perm() && want.shared == edge->shared()) continue;
    set_edge(*edge, want.perm, want.shared);
    dirty.insert(&edge->node());
  }
  return {};
}

Result<void> PermUpdate::check_writable(const Node& node, Perm perm) const {
  if (!has_any(perm, kChanging) || !node.is_read_only()) return {};
  // QEMU's two texts: the node is read-only now, or only the pending reopen makes it so.
  auto before = read_only_before_.find(&node);
  if (before != read_only_before_.end() && !before->second) {
    return fail(EPERM, "Read-only block node '{}' cannot support read-write users", node.name());
  }
  return fail(EPERM, "Block node is read-only");
}

void PermUpdate::commit() {
  assert(!finished_);
  finished_ = true;
  for (const Prepared& p : prepared_) p.node->driver().set_perm(p.perm, p.shared);
  // Listeners run once every driver holds its new state.
  for (const Prepared& p : prepared_) {
    bool now = p.node->driver().storage_read_write();
    if (now != p.storage_read_write) p.node->engine().notify_access(*p.node, now);
  }
}

void PermUpdate::abort() {
  assert(!finished_);
  finished_ = true;
  for (auto it = prepared_.rbegin(); it != prepared_.rend(); ++it) {
    it->node->driver().abort_perm_update();
  }
  for (auto it = edges_.rbegin(); it != edges_.rend(); ++it) {
    it->edge->set_perms(it->perm, it->shared);
  }
}

}  // namespace strata
