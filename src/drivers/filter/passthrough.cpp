// FilterDriver (include/strata/filter.h): every operation goes to the `file` child unchanged.
#include "strata/filter.h"
#include "strata/node.h"

namespace strata {

uint64_t FilterDriver::length() const { return file_->size(); }

// The core shapes requests for this node with the child's limits, so they reach the child
// already shaped and the child's request path has nothing left to pad or split.
NodeLimits FilterDriver::limits() const { return file_->node().limits(); }

Task<Result<void>> FilterDriver::preadv(uint64_t offset, uint64_t bytes, IoVec iov,
                                        ReqFlags flags) {
  auto task = file_->read(offset, bytes, std::move(iov), flags);
  co_return co_await task;
}

Task<Result<void>> FilterDriver::pwritev(uint64_t offset, uint64_t bytes, IoVec iov,
                                         ReqFlags flags) {
  auto task = file_->write(offset, bytes, std::move(iov), flags);
  co_return co_await task;
}

Task<Result<void>> FilterDriver::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  auto task = file_->pwrite_zeroes(offset, bytes, flags);
  co_return co_await task;
}

Task<Result<void>> FilterDriver::pdiscard(uint64_t offset, uint64_t bytes) {
  auto task = file_->discard(offset, bytes);
  co_return co_await task;
}

Task<Result<BlockStatus>> FilterDriver::block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.bytes = bytes;
  st.flags = BlockStatusFlags::kRaw | BlockStatusFlags::kOffsetValid;
  st.map = offset;
  st.file = &file_->node();
  co_return st;
}

Task<Result<void>> FilterDriver::truncate(uint64_t size, bool exact, PreallocMode prealloc) {
  auto task = file_->truncate(size, exact, prealloc);
  co_return co_await task;
}

}  // namespace strata
