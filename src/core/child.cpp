// Child: an edge; I/O through it checks (in debug builds) that the parent holds what the
// request needs, then enters the node's request path.
#include "strata/child.h"

#include <cassert>

#include "strata/node.h"

namespace strata {
namespace {

// A write that ends past the node's end grows it, which takes RESIZE as well as WRITE.
// WRITE_UNCHANGED is enough for writes that leave the guest-visible data as it was (copy-on-read
// filling a node from its backing chain).
[[maybe_unused]] bool may_write(const Child& c, uint64_t offset, uint64_t bytes) {
  if (!has_any(c.perm(), Perm::kWrite | Perm::kWriteUnchanged)) return false;
  return offset + bytes <= c.node().size() || has_any(c.perm(), Perm::kResize);
}

}  // namespace

Child::Child(std::string name, ChildRole role, Parent& parent, Node& node)
    : name_(std::move(name)), role_(role), parent_(&parent), node_(&node) {}

Child::~Child() = default;

void Child::replace_node(Node& node) {
  node_->remove_parent(this);
  node_ = &node;
  node_->add_parent(this);
}

// Reads need no permission: QEMU lets a parent read without CONSISTENT_READ (it then simply
// may see data that is changing).
Task<Result<void>> Child::read(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  return node_->read(offset, bytes, std::move(iov), flags);
}

Task<Result<void>> Child::write(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  assert(may_write(*this, offset, bytes) && "write through an edge without WRITE");
  return node_->write(offset, bytes, std::move(iov), flags);
}

Task<Result<void>> Child::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  assert(may_write(*this, offset, bytes) && "write-zeroes through an edge without WRITE");
  return node_->pwrite_zeroes(offset, bytes, flags);
}

Task<Result<void>> Child::discard(uint64_t offset, uint64_t bytes) {
  assert(has_any(perm_, Perm::kWrite) && "discard through an edge without WRITE");
  return node_->discard(offset, bytes);
}

Task<Result<void>> Child::flush() { return node_->flush(); }

Task<Result<BlockStatus>> Child::block_status(uint64_t offset, uint64_t bytes) {
  return node_->block_status(offset, bytes);
}

Task<Result<void>> Child::truncate(uint64_t size, bool exact, PreallocMode prealloc) {
  assert(has_any(perm_, Perm::kResize) && "truncate through an edge without RESIZE");
  return node_->truncate(size, exact, prealloc);
}

uint64_t Child::size() const { return node_->size(); }

}  // namespace strata
