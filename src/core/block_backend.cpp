// BlockBackend: a user of the graph. Its requests get QEMU's user-level checks
// (blk_check_byte_request: everything outside the node is EIO) and then go through the root
// edge like any parent's.
#include "strata/block_backend.h"

#include <cassert>
#include <cerrno>
#include <cstring>

#include "perm_update.h"
#include "strata/child.h"
#include "strata/engine.h"

namespace strata {
namespace {

constexpr uint64_t kMaxBytes = uint64_t{INT64_MAX};

Error no_medium() { return Error(ENOMEDIUM, std::strerror(ENOMEDIUM)); }

// QEMU's blk_check_byte_request: a user never reaches outside the node; everything that would
// is EIO, including offsets and lengths too large to be real.
Result<void> check_request(const Child* root, uint64_t offset, uint64_t bytes) {
  if (root == nullptr) return no_medium();
  const uint64_t size = root->size();
  if (offset > kMaxBytes || bytes > kMaxBytes || offset > size || size - offset < bytes) {
    return Error(EIO, std::strerror(EIO));
  }
  return {};
}

Task<Result<void>> failed(Error e) { co_return e; }
Task<Result<BlockStatus>> failed_status(Error e) { co_return e; }

}  // namespace

BlockBackend::BlockBackend(Engine& engine, std::string name)
    : engine_(&engine), name_(std::move(name)) {}

BlockBackend::~BlockBackend() {
  if (root_ != nullptr) engine_->detach_backend(*this);
}

Node& BlockBackend::node() const { return root_->node(); }
Perm BlockBackend::perm() const { return root_->perm(); }
Perm BlockBackend::shared() const { return root_->shared(); }

Result<void> BlockBackend::set_perm(Perm perm, Perm shared) {
  if (root_ == nullptr) return no_medium();
  PermUpdate update;
  update.set_edge(*root_, perm, shared);
  Node* start[] = {&root_->node()};
  auto r = update.refresh(start);
  if (!r) {
    update.abort();
    return r;
  }
  update.commit();
  return {};
}

std::string BlockBackend::parent_description() const {
  if (name_.empty()) return "an unnamed block device";
  return "block device '" + name_ + "'";
}

// The I/O members are plain functions, not coroutines: a valid request goes straight into the
// root edge's request path without a frame of its own.

Task<Result<void>> BlockBackend::read(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  if (auto valid = check_request(root_, offset, bytes); !valid) return failed(valid.error());
  return root_->read(offset, bytes, std::move(iov), flags);
}

Task<Result<void>> BlockBackend::write(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  if (auto valid = check_request(root_, offset, bytes); !valid) return failed(valid.error());
  return root_->write(offset, bytes, std::move(iov), flags);
}

Task<Result<void>> BlockBackend::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  if (auto valid = check_request(root_, offset, bytes); !valid) return failed(valid.error());
  return root_->pwrite_zeroes(offset, bytes, flags);
}

Task<Result<void>> BlockBackend::discard(uint64_t offset, uint64_t bytes) {
  if (auto valid = check_request(root_, offset, bytes); !valid) return failed(valid.error());
  return root_->discard(offset, bytes);
}

Task<Result<void>> BlockBackend::flush() {
  if (root_ == nullptr) return failed(no_medium());
  return root_->flush();
}

Task<Result<BlockStatus>> BlockBackend::block_status(uint64_t offset, uint64_t bytes) {
  if (root_ == nullptr) return failed_status(no_medium());
  return root_->block_status(offset, bytes);
}

Task<Result<void>> BlockBackend::truncate(uint64_t size, bool exact, PreallocMode prealloc) {
  if (root_ == nullptr) return failed(no_medium());
  return root_->truncate(size, exact, prealloc);
}

uint64_t BlockBackend::size() const { return root_ == nullptr ? 0 : root_->size(); }

}  // namespace strata
