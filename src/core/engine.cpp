// Engine: the graph's structure and lifetime (opening is in open.cpp, permissions in
// perm_update.cpp, requests in request.cpp).
//
// Ownership: the Engine owns every Node and every Child edge. A node stays open while something
// holds it: a parent edge (from a node or a user) or the monitor (add_node until delete_node).
// When the last holder lets go, the node is closed (its driver's close() runs while its children
// still exist), then its edges are detached, which may in turn close its children. So closing
// always runs parents before children.
#include "strata/engine.h"

#include <algorithm>
#include <cassert>
#include <cerrno>

#include "perm_update.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata {

Engine::Engine(EventLoop& loop, std::span<const DriverClass* const> drivers)
    : loop_(&loop), drivers_(drivers.begin(), drivers.end()) {}

Engine::~Engine() {
  // Users first: without their root edges every node can be closed.
  std::vector<BlockBackend*> backends = backends_;
  for (BlockBackend* b : backends) detach_backend(*b);
  while (pending_closes_ > 0) {
    loop_->context().restart();
    loop_->context().run_one();
  }
  monitor_owned_.clear();
  run_until_done(close_all());
}

void Engine::run_until_done(Task<void> task) {
  bool done = false;
  auto wrapper = [](Task<void> t, bool* d) -> Task<void> {
    co_await t;
    *d = true;
  };
  spawn(wrapper(std::move(task), &done));
  while (!done) {
    loop_->context().restart();
    loop_->context().run_one();
  }
}

Task<void> Engine::close_all() {
  // A graph without cycles always has a node without parents; closing it may close some of its
  // children too, and the rest get their turn.
  while (!nodes_.empty()) {
    Node* root = nullptr;
    for (const auto& n : nodes_) {
      if (n->parents().empty() && closing_.count(n.get()) == 0) {
        root = n.get();
        break;
      }
    }
    assert(root != nullptr);
    if (root == nullptr) co_return;
    auto task = close_node(root);
    co_await task;
  }
}

const DriverClass* Engine::find_driver(std::string_view name) const {
  for (const DriverClass* d : drivers_) {
    if (d->name == name) return d;
  }
  return nullptr;
}

Task<Result<Node*>> Engine::add_node(nlohmann::json options, OptionSyntax syntax) {
  auto task = open_node(std::move(options), syntax, nullptr, ChildRole::kNone, "");
  auto node = co_await task;
  if (node) monitor_owned_[*node] = true;
  co_return node;
}

Task<Result<void>> Engine::delete_node(std::string name) {
  Node* node = find_node(name);
  if (node == nullptr) co_return fail(ENOENT, "Failed to find node with node-name='{}'", name);
  auto parents = node->parents();
  bool has_user = std::any_of(parents.begin(), parents.end(),
                              [](const Child* c) { return c->parent().as_node() == nullptr; });
  if (has_user) co_return fail(EBUSY, "Node {} is in use", name);
  if (!monitor_owned(*node)) co_return fail(EPERM, "Node {} is not owned by the monitor", name);
  if (!parents.empty()) co_return fail(EBUSY, "Block device {} is in use", name);
  monitor_owned_.erase(node);
  auto task = close_node(node);
  co_await task;
  co_return Result<void>{};
}

Node* Engine::find_node(std::string_view name) const {
  for (const auto& n : nodes_) {
    if (n->name() == name && closing_.count(n.get()) == 0) return n.get();
  }
  return nullptr;
}

std::vector<Node*> Engine::nodes() const {
  std::vector<Node*> out;
  out.reserve(nodes_.size());
  for (const auto& n : nodes_) out.push_back(n.get());
  return out;
}

BlockBackend* Engine::find_backend(std::string_view name) const {
  if (name.empty()) return nullptr;
  for (BlockBackend* b : backends_) {
    if (b->name() == name) return b;
  }
  return nullptr;
}

bool Engine::monitor_owned(Node& node) const { return monitor_owned_.count(&node) != 0; }

Result<std::unique_ptr<BlockBackend>> Engine::attach_backend(Node& node, std::string name,
                                                             Perm perm, Perm shared) {
  auto backend = std::make_unique<BlockBackend>(*this, std::move(name));
  auto edge = link_edge(*backend, node, "root", ChildRole::kFiltered | ChildRole::kPrimary,
                        ChildPerms{perm, shared});
  if (!edge) return edge.error();
  backend->set_root(*edge);
  backends_.push_back(backend.get());
  return backend;
}

void Engine::detach_backend(BlockBackend& backend) {
  backends_.erase(std::remove(backends_.begin(), backends_.end(), &backend), backends_.end());
  if (!backend.has_root()) return;
  Child* root = &backend.root();
  backend.set_root(nullptr);
  Node* orphan = unlink_edge(root);
  if (orphan == nullptr) return;
  ++pending_closes_;
  spawn(close_detached(orphan));
}

Task<void> Engine::close_backend(std::unique_ptr<BlockBackend> backend) {
  if (backend == nullptr || !backend->has_root()) co_return;
  backends_.erase(std::remove(backends_.begin(), backends_.end(), backend.get()), backends_.end());
  Child* root = &backend->root();
  backend->set_root(nullptr);
  Node* orphan = unlink_edge(root);  // while the user still exists: the edge names it
  backend.reset();
  if (orphan == nullptr) co_return;
  auto close = close_node(orphan);
  co_await close;
}

Task<void> Engine::close_detached(Node* node) {
  auto task = close_node(node);
  co_await task;
  --pending_closes_;
}

void Engine::add_access_listener(AccessListener listener) {
  access_listeners_.push_back(std::move(listener));
}

void Engine::notify_access(Node& node, bool read_write) {
  for (const AccessListener& listener : access_listeners_) listener(node, read_write);
}

Result<Child*> Engine::attach_child(Parent& parent, Node& child, std::string name, ChildRole role) {
  return link_edge(parent, child, std::move(name), role, ChildPerms{});
}

Result<Child*> Engine::link_edge(Parent& parent, Node& child, std::string name, ChildRole role,
                                 ChildPerms initial) {
  Node* parent_node = parent.as_node();
  // A node nobody points at cannot lie below the child, which spares the walk when a node
  // being opened attaches its children.
  if (parent_node != nullptr && (parent_node == &child || !parent_node->parents().empty()) &&
      reaches(child, *parent_node)) {
    return fail(EINVAL, "Making '{}' a {} child of '{}' would create a cycle", child.name(), name,
                parent_node->name());
  }
  auto owned = std::make_unique<Child>(std::move(name), role, parent, child);
  Child* edge = owned.get();
  edges_.emplace(edge, std::move(owned));
  child.add_parent(edge);
  if (parent_node != nullptr) parent_node->add_child(edge);

  PermUpdate update;
  update.set_edge(*edge, initial.perm, initial.shared);
  // A node parent computes the new edge's perms, and the child is visited if they turn out to
  // ask or refuse anything; a user's edge already holds its explicit perms.
  Node* start[] = {parent_node != nullptr ? parent_node : &child};
  auto refreshed = update.refresh(start);
  if (!refreshed) {
    update.abort();
    if (parent_node != nullptr) parent_node->remove_child(edge);
    child.remove_parent(edge);
    edges_.erase(edge);
    return refreshed.error();
  }
  update.commit();
  return edge;
}

Node* Engine::unlink_edge(Child* edge) {
  Node& child = edge->node();
  if (Node* parent = edge->parent().as_node()) {
    parent->remove_child(edge);
    if (child.inherits_from() == parent) child.set_origin(child.explicit_options(), nullptr);
  }
  child.remove_parent(edge);
  edges_.erase(edge);
  // Only loosening: if a driver cannot follow (say, cannot drop a lock), the nodes below keep
  // their tighter permissions, which is safe.
  PermUpdate update;
  Node* start[] = {&child};
  if (update.refresh(start)) {
    update.commit();
  } else {
    update.abort();
  }
  if (child.parents().empty() && !monitor_owned(child) && closing_.count(&child) == 0) {
    return &child;
  }
  return nullptr;
}

Task<void> Engine::detach_child(Child* child) {
  Node* orphan = unlink_edge(child);
  if (orphan == nullptr) co_return;
  auto task = close_node(orphan);
  co_await task;
}

Result<void> Engine::refresh_perms(Node& node) {
  PermUpdate update;
  Node* start[] = {&node};
  auto r = update.refresh(start);
  if (!r) {
    update.abort();
    return r;
  }
  update.commit();
  return {};
}

Task<void> Engine::release_node(Node* node) {
  if (!node->parents().empty() || monitor_owned(*node) || closing_.count(node) != 0) co_return;
  auto task = close_node(node);
  co_await task;
}

Task<void> Engine::close_node(Node* node) {
  assert(node->parents().empty());
  closing_.insert(node);
  auto drain = node->drain();
  co_await drain;
  if (node->has_driver()) {
    auto close = node->driver().close();
    co_await close;
  }
  // Children after their parent; each closes in turn once nothing else holds it.
  while (!node->children().empty()) {
    auto task = detach_child(node->children().back());
    co_await task;
  }
  remove_node(node);
}

void Engine::remove_node(Node* node) {
  closing_.erase(node);
  monitor_owned_.erase(node);
  auto it = std::find_if(nodes_.begin(), nodes_.end(),
                         [node](const std::unique_ptr<Node>& n) { return n.get() == node; });
  assert(it != nodes_.end());
  nodes_.erase(it);
}

std::string Engine::next_auto_name() { return "#block" + std::to_string(++auto_name_counter_); }

}  // namespace strata
