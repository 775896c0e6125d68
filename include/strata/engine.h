// Engine: owns a block graph and everything that runs over it.
//
// The Engine holds the driver registry, the nodes and the edges between them, and the users
// attached to nodes. It lives on one EventLoop. There are no globals: two Engines in one
// process are independent (tests do this).
//
//   EventLoop loop;
//   Engine engine(loop, builtin_drivers());
//   auto node = run_sync(loop, engine.add_node(
//       {{"driver", "raw"}, {"file", {{"driver", "file"}, {"filename", "disk.img"}}}}));
//   auto blk = engine.attach_backend(**node, "", Perm::kConsistentRead, Perm::kAll);
//
// Threading: event loop thread only.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/driver.h"
#include "strata/options.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class BlockBackend;
class EventLoop;
class Node;

class Engine {
 public:
  Engine(EventLoop& loop, std::span<const DriverClass* const> drivers);
  // Closes every node, parents before children.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  EventLoop& loop() { return *loop_; }
  const DriverClass* find_driver(std::string_view name) const;
  std::span<const DriverClass* const> drivers() const { return drivers_; }

  // blockdev-add: opens a node and its inline children from BlockdevOptions. A node added this
  // way is owned by the caller (the monitor) until delete_node. Without a node-name the node
  // gets an automatic one ("#block<N>"). On failure nothing is left behind.
  Task<Result<Node*>> add_node(nlohmann::json options, OptionSyntax syntax = OptionSyntax::kJson);

  // blockdev-del: "Node %s is in use" / "Block device %s is in use" /
  // "Failed to find node with node-name='%s'".
  Task<Result<void>> delete_node(std::string name);

  Node* find_node(std::string_view name) const;
  // Every node, in creation order.
  std::vector<Node*> nodes() const;

  // Attaches a user (export, job, tool) to `node` with explicit permissions. `name` is the
  // user's name in error messages ("" for an unnamed block device).
  Result<std::unique_ptr<BlockBackend>> attach_backend(Node& node, std::string name, Perm perm,
                                                       Perm shared);

  // ---- used by the core ----
  // Opens a node from options; `parent` and `role` are set for inline children (inheritance).
  Task<Result<Node*>> open_node(nlohmann::json options, OptionSyntax syntax, Node* parent,
                                ChildRole role, std::string prefix);
  // Creates an edge and refreshes permissions; on error nothing changed.
  Result<Child*> attach_child(Parent& parent, Node& child, std::string name, ChildRole role);
  // Removes an edge; nodes nobody holds any more are closed.
  Task<void> detach_child(Child* child);
  // Recomputes permissions below `node` after its parents changed.
  Result<void> refresh_perms(Node& node);

 private:
  struct NodeEntry;
  Task<void> close_node(Node* node);
  std::string next_auto_name();

  EventLoop* loop_;
  std::vector<const DriverClass*> drivers_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::map<Node*, bool> monitor_owned_;
  uint64_t auto_name_counter_ = 0;
};

}  // namespace strata
