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

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "strata/driver.h"
#include "strata/options.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class BlockBackend;
class Child;
class Parent;
class EventLoop;
class Node;

class Engine {
 public:
  Engine(EventLoop& loop, std::span<const DriverClass* const> drivers);
  // Closes every node, parents before children, running the drivers' close() on the loop.
  // Backends still attached are detached first (their later destruction does nothing).
  // REQUIRES: called on the loop's thread while the loop is not running (like run_sync).
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

  // The checks QEMU's QAPI visitor makes on BlockdevOptions before anything opens: the generic
  // options' types, `driver` present and known, and for drivers that declare their options each
  // driver option's type and any unknown key ("Parameter 'file.bogus' is unexpected"), recursively
  // into inline children. `prefix` names the object in messages ("options[0]."). add_node runs
  // it first; blockdev-reopen's entries are BlockdevOptions too.
  Result<void> check_options(const nlohmann::json& options, OptionSyntax syntax,
                             std::string prefix = {}) const;

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

  // blockdev-reopen: each entry is a node's full configuration (BlockdevOptions naming an
  // existing node); all entries are applied as one transaction, or nothing changes. Options
  // left out go back to their defaults (or, for an inline child, to what it inherits from its
  // parent); node-name, driver and force-share cannot change; `file` and `backing` may name
  // another node, `backing` may be null (detach), a dict reopens an inline child. Inline
  // children that are left out are reopened too, inheriting from their parent. With
  // `keep_old_options` (QEMU's keep_old_opts: qemu-io's reopen -o) options left out keep their
  // current values instead, and `driver` may be left out. See src/core/reopen.cpp for the
  // order of the checks and every error text.
  Task<Result<void>> reopen(std::vector<nlohmann::json> entries,
                            OptionSyntax syntax = OptionSyntax::kJson,
                            bool keep_old_options = false);
  // QEMU's bdrv_reopen_set_read_only: only read-only changes (keep_old_options), for jobs and
  // for strata-io's reopen -r/-w. Errors: "Read-only block node '<node>' cannot support
  // read-write users" while a parent holds WRITE; the node's inline children follow it unless
  // their read-only was set explicitly. The node is looked up by name when the task runs.
  Task<Result<void>> set_read_only(Node& node, bool read_only);

  // Detaches a user, as destroying it does, but waits until a node that nothing holds any more
  // has closed (a job dropping the filter only its own handle held).
  Task<void> close_backend(std::unique_ptr<BlockBackend> backend);

  // Opens a node of a driver class that is not in the registry, so blockdev-add cannot name it:
  // the filters jobs insert (commit_top). `options` are BlockdevOptions in JSON syntax whose
  // "driver" is cls.name. The node does not belong to the monitor: it is closed when its last
  // parent lets go (so the caller attaches it at once).
  Task<Result<Node*>> add_internal_node(const DriverClass& cls, nlohmann::json options);

  // Graph edits for jobs (src/core/graph_edit.cpp). Each is one permission transaction: on
  // error nothing changed.
  //
  // QEMU's bdrv_replace_node: moves the parent edges of `from` to `to`. An edge stays where it
  // is when `keep` says so (a job's own edges, the edge of a filter being put above `from`) or
  // when moving it would make a cycle (the edge from `to`'s own chain down to `from`). A frozen
  // edge refuses: "Cannot change '<edge>' link to '<from>'".
  Result<void> replace_node(Node& from, Node& to,
                            const std::function<bool(const Child&)>& keep = {});
  // Points one edge at another node (QEMU's bdrv_replace_child). Errors: the frozen text as
  // above, "Making '<to>' a <edge> child of '<parent>' would create a cycle", conflicts.
  Result<void> replace_child(Child& edge, Node& to);

  // Called after a permission transaction commits, once for each node whose storage switched
  // between read-only and read-write (Driver::storage_read_write), in graph order. A listener
  // must not change the graph.
  using AccessListener = std::function<void(Node& node, bool read_write)>;
  void add_access_listener(AccessListener listener);

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
  // Closes `node` if nothing holds it any more: no parent edges and not owned by the monitor.
  Task<void> release_node(Node* node);
  // Every attached user, in attach order (x-debug-query-block-graph).
  std::span<BlockBackend* const> backends() const { return backends_; }
  // The attached user called `name` (never matches ""), or nullptr.
  BlockBackend* find_backend(std::string_view name) const;
  // Removes a user's root edge (BlockBackend's destructor). A node nothing holds afterwards is
  // closed on the loop; the Engine's destructor waits for such closes.
  void detach_backend(BlockBackend& backend);
  // Tells the access listeners that `node`'s storage switched (the permission transaction).
  void notify_access(Node& node, bool read_write);

 private:
  // The reopen transaction (src/core/reopen.cpp) edits edges and closes what it detached.
  friend class ReopenTransaction;

  Task<Result<Node*>> open_node_of(nlohmann::json options, OptionSyntax syntax, Node* parent,
                                   ChildRole role, std::string prefix, const DriverClass* internal);
  Task<void> close_node(Node* node);
  Task<void> close_detached(Node* node);
  Task<void> close_all();
  std::string next_auto_name();
  bool monitor_owned(Node& node) const;
  // Creates an edge holding (perm, shared) and refreshes permissions; undone on error.
  Result<Child*> link_edge(Parent& parent, Node& child, std::string name, ChildRole role,
                           ChildPerms initial);
  // Removes an edge and loosens permissions below it. Returns the child node if nothing holds
  // it any more and the monitor does not own it (the caller closes it), else nullptr.
  Node* unlink_edge(Child* edge);
  void remove_node(Node* node);
  // Runs `task` to completion by driving the loop (destructor only).
  void run_until_done(Task<void> task);

  EventLoop* loop_;
  std::vector<const DriverClass*> drivers_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::map<Node*, bool> monitor_owned_;
  uint64_t auto_name_counter_ = 0;
  // Every edge, owned here; Nodes and BlockBackends point at them.
  std::unordered_map<const Child*, std::unique_ptr<Child>> edges_;
  std::vector<BlockBackend*> backends_;
  std::unordered_set<const Node*> closing_;  // being closed: invisible to find_node
  uint64_t pending_closes_ = 0;              // closes started by detach_backend
  std::vector<AccessListener> access_listeners_;
};

}  // namespace strata
