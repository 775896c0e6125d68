// Node: graph bookkeeping (the request path is in request.cpp).
#include "strata/node.h"

#include <algorithm>
#include <cassert>

#include "strata/align.h"
#include "strata/child.h"
#include "strata/engine.h"

namespace strata {

Node::Node(Engine& engine, NodeOptions options, const DriverClass& driver_class)
    : engine_(&engine), options_(std::move(options)), class_(&driver_class) {}

Node::~Node() { assert(parents_.empty() && children_.empty() && in_flight_ == 0); }

EventLoop& Node::loop() { return engine_->loop(); }

NodeAccess Node::access() const {
  NodeAccess a;
  a.read_only = options_.read_only;
  a.auto_read_only = options_.auto_read_only;
  a.storage_read_write = driver_ != nullptr && driver_->storage_read_write();
  return a;
}

void Node::set_driver(std::unique_ptr<Driver> driver) {
  driver_ = std::move(driver);
  refresh_limits();
}

void Node::refresh_limits() {
  NodeLimits l = driver_->limits();
  // Zero means "none" or "the request alignment"; the request path works with the resolved
  // values, so drivers may leave them zero.
  if (l.request_alignment == 0) l.request_alignment = 1;
  if (l.memory_alignment == 0) l.memory_alignment = 1;
  assert(is_power_of_2(l.request_alignment) && is_power_of_2(l.memory_alignment));
  l.pwrite_zeroes_alignment = std::max(l.pwrite_zeroes_alignment, l.request_alignment);
  l.pdiscard_alignment = std::max(l.pdiscard_alignment, l.request_alignment);
  // A maximum that is not a multiple of the alignment would split a request into pieces the
  // driver cannot take; round it down (but never to zero, which would mean "no limit").
  auto fit = [](uint64_t max, uint64_t align) {
    if (max == 0) return max;
    return std::max(align_down(max, align), align);
  };
  l.max_transfer = fit(l.max_transfer, l.request_alignment);
  l.max_pwrite_zeroes = fit(l.max_pwrite_zeroes, l.pwrite_zeroes_alignment);
  l.max_pdiscard = fit(l.max_pdiscard, l.pdiscard_alignment);
  limits_ = l;
}

std::string Node::filename() const {
  auto it = driver_options_.find("filename");
  if (it != driver_options_.end() && it->is_string()) return it->get<std::string>();
  if (Child* file = child("file")) return file->node().filename();
  return {};
}

Child* Node::child(std::string_view name) const {
  for (Child* c : children_) {
    if (c->name() == name) return c;
  }
  return nullptr;
}

Perm Node::cumulative_perm() const {
  Perm perm = Perm::kNone;
  for (const Child* edge : parents_) perm |= edge->perm();
  return perm;
}

Perm Node::cumulative_shared() const {
  Perm shared = Perm::kAll;
  for (const Child* edge : parents_) shared &= edge->shared();
  return shared;
}

std::string Node::parent_description() const { return "node '" + name() + "'"; }

void Node::remove_child(Child* child) {
  auto it = std::find(children_.begin(), children_.end(), child);
  assert(it != children_.end());
  children_.erase(it);
}

void Node::remove_parent(Child* edge) {
  auto it = std::find(parents_.begin(), parents_.end(), edge);
  assert(it != parents_.end());
  parents_.erase(it);
}

void Node::restore_edge_order(std::vector<Child*> children, std::vector<Child*> parents) {
  assert(std::is_permutation(children.begin(), children.end(), children_.begin(), children_.end()));
  assert(std::is_permutation(parents.begin(), parents.end(), parents_.begin(), parents_.end()));
  children_ = std::move(children);
  parents_ = std::move(parents);
}

}  // namespace strata
