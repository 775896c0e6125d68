// Child: an edge from a parent (a node or a user) to a node.
//
// The edge carries its name ("file", "backing", "data-file", "root", a job's edge names), its
// role, and the permissions the parent holds on the child: `perm` (what it uses) and `shared`
// (what it lets other parents use). I/O through an edge is checked against `perm`: a write
// through an edge without WRITE is a bug in the parent, caught by an assertion.
//
// Threading: event loop thread only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "strata/driver.h"
#include "strata/iovec.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Node;
class Parent;

class Child {
 public:
  Child(std::string name, ChildRole role, Parent& parent, Node& node);
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  const std::string& name() const { return name_; }
  ChildRole role() const { return role_; }
  // Changed only by the parent's driver in its reopen_prepare, when the reopen changes what the
  // child is to it (raw becoming a window onto its file, or back); the permission refresh that
  // follows uses the new role, and the driver's reopen_abort puts the old one back.
  void set_role(ChildRole role) { role_ = role; }
  Parent& parent() const { return *parent_; }
  Node& node() const { return *node_; }
  Perm perm() const { return perm_; }
  Perm shared() const { return shared_; }
  // Changed only by the graph's permission transaction.
  void set_perms(Perm perm, Perm shared) {
    perm_ = perm;
    shared_ = shared;
  }
  // Moves the edge to another node (graph changes; the caller refreshes permissions).
  void replace_node(Node& node);
  // A frozen edge cannot be pointed at another node or removed by a reopen ("Cannot change
  // frozen 'backing' link from 'top' to 'base'"). Jobs freeze the chain they work on.
  bool frozen() const { return frozen_; }
  void set_frozen(bool frozen) { frozen_ = frozen; }

  // I/O through this edge: the node's request path, after asserting this edge holds the
  // permission the request needs.
  Task<Result<void>> read(uint64_t offset, uint64_t bytes, IoVec iov,
                          ReqFlags flags = ReqFlags::kNone);
  Task<Result<void>> write(uint64_t offset, uint64_t bytes, IoVec iov,
                           ReqFlags flags = ReqFlags::kNone);
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes,
                                   ReqFlags flags = ReqFlags::kNone);
  Task<Result<void>> discard(uint64_t offset, uint64_t bytes);
  Task<Result<void>> flush();
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes);
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc);
  uint64_t size() const;

 private:
  std::string name_;
  ChildRole role_;
  Parent* parent_;
  Node* node_;
  Perm perm_ = Perm::kNone;
  Perm shared_ = Perm::kAll;
  bool frozen_ = false;
};

}  // namespace strata
