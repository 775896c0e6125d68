// BlockBackend: a user of a node that is not itself a node (an export, a job's I/O handle, a
// tool such as strata-io). It is a root parent: it attaches to a node through an edge called
// "root" and states its permissions explicitly.
//
// Threading: event loop thread only. Destroying a BlockBackend detaches it from the graph.
#pragma once

#include <cstdint>
#include <string>

#include "strata/driver.h"
#include "strata/iovec.h"
#include "strata/node.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Child;
class Engine;

class BlockBackend final : public Parent {
 public:
  // Use Engine::attach_backend.
  BlockBackend(Engine& engine, std::string name);
  ~BlockBackend() override;

  const std::string& name() const { return name_; }
  Node& node() const;
  Child& root() const { return *root_; }
  Perm perm() const;
  Perm shared() const;
  // Changes what this user holds; on a conflict nothing changes.
  Result<void> set_perm(Perm perm, Perm shared);

  std::string parent_description() const override;

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

  // ---- used by the Engine ----
  // False once the Engine detached this user (the Engine went away first).
  bool has_root() const { return root_ != nullptr; }
  void set_root(Child* root) { root_ = root; }

 private:
  Engine* engine_;
  std::string name_;
  Child* root_ = nullptr;
};

}  // namespace strata
