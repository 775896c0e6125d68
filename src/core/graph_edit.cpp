// Graph edits used by jobs: moving parent edges from one node to another (inserting or removing
// a filter, dropping intermediate nodes of a chain). Each edit moves the edges first, then
// refreshes permissions from both nodes; if the refresh fails every edge goes back, in its old
// order, and the drivers abort their prepared permission changes.
#include <algorithm>
#include <cerrno>

#include "perm_update.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/node.h"

namespace strata {
namespace {

// Moves `edges` to `to`, refreshes permissions below both nodes, and undoes the move on error.
Result<void> move_edges(std::span<Child* const> edges, Node& from, Node& to) {
  std::vector<Child*> from_parents(from.parents().begin(), from.parents().end());
  std::vector<Child*> to_parents(to.parents().begin(), to.parents().end());
  for (Child* edge : edges) edge->replace_node(to);
  PermUpdate update;
  Node* start[] = {&to, &from};
  auto refreshed = update.refresh(start);
  if (refreshed) {
    update.commit();
    return {};
  }
  update.abort();
  for (Child* edge : edges) edge->replace_node(from);
  from.restore_edge_order(std::vector<Child*>(from.children().begin(), from.children().end()),
                          std::move(from_parents));
  to.restore_edge_order(std::vector<Child*>(to.children().begin(), to.children().end()),
                        std::move(to_parents));
  return refreshed.error();
}

}  // namespace

Result<void> Engine::replace_node(Node& from, Node& to,
                                  const std::function<bool(const Child&)>& keep) {
  if (&from == &to) return {};
  std::vector<Child*> moving;
  for (Child* edge : from.parents()) {
    if (keep && keep(*edge)) continue;
    // The edge by which `to` itself reaches `from` (a filter put above it) stays.
    Node* parent = edge->parent().as_node();
    if (parent != nullptr && reaches(to, *parent)) continue;
    if (edge->frozen()) {
      return fail(EPERM, "Cannot change '{}' link to '{}'", edge->name(), from.name());
    }
    moving.push_back(edge);
  }
  if (moving.empty()) return {};
  return move_edges(moving, from, to);
}

Result<void> Engine::replace_child(Child& edge, Node& to) {
  Node& from = edge.node();
  if (&from == &to) return {};
  if (edge.frozen()) {
    return fail(EPERM, "Cannot change '{}' link to '{}'", edge.name(), from.name());
  }
  Node* parent = edge.parent().as_node();
  if (parent != nullptr && reaches(to, *parent)) {
    return fail(EINVAL, "Making '{}' a {} child of '{}' would create a cycle", to.name(),
                edge.name(), parent->name());
  }
  Child* edges[] = {&edge};
  return move_edges(edges, from, to);
}

}  // namespace strata
