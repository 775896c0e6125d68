// The `memory` protocol driver: a sparse device held in this process's memory (Strata's own, for
// tests and demos; the nbdkit memory plugin is the same idea).
//
// Data lives in fixed-size chunks allocated on first write, so a 1 TiB node costs nothing until
// it is written. A chunk that was never written, or was freed by discard or write-zeroes with
// may-unmap, reads as zeroes and is reported as a hole (ZERO); an allocated chunk is DATA, even
// if it happens to hold zeroes. Discard is exact here: a discarded range always reads back as
// zeroes (parts of chunks are cleared, whole chunks freed), which keeps tests deterministic.
//
// Options: size (required).
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string_view>

#include "drivers.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::drivers {
namespace {

constexpr uint64_t kChunkSize = 64 * 1024;

class MemoryDriver final : public Driver {
 public:
  MemoryDriver(Node& node, uint64_t size) : node_(&node), size_(size) {}

  uint64_t length() const override { return size_; }

  NodeLimits limits() const override {
    NodeLimits l;
    l.supports_fua = true;  // a completed write is as durable as this device gets
    l.supports_write_zeroes = true;
    l.supports_zero_unmap = true;
    l.supports_discard = true;
    return l;
  }

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags) override {
    read(offset, bytes, iov);
    co_return Result<void>{};
  }

  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags) override {
    co_return write(offset, bytes, iov);
  }

  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override {
    zero(offset, bytes, has_flag(flags, ReqFlags::kMayUnmap));
    co_return Result<void>{};
  }

  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override {
    zero(offset, bytes, true);
    co_return Result<void>{};
  }

  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override {
    co_return status(offset, bytes);
  }

  Task<Result<void>> truncate(uint64_t size, bool, PreallocMode prealloc) override {
    co_return resize(size, prealloc);
  }

 private:
  using Chunks = std::map<uint64_t, std::unique_ptr<std::byte[]>>;  // index -> kChunkSize bytes

  static uint64_t chunk_start(uint64_t index) { return index * kChunkSize; }

  void read(uint64_t offset, uint64_t bytes, IoVec& iov) const {
    const uint64_t end = offset + bytes;
    auto it = chunks_.lower_bound(offset / kChunkSize);
    for (uint64_t pos = offset; pos < end;) {
      uint64_t index = pos / kChunkSize;
      uint64_t n;
      if (it != chunks_.end() && it->first == index) {
        uint64_t in_chunk = pos - chunk_start(index);
        n = std::min(kChunkSize - in_chunk, end - pos);
        iov.copy_from(pos - offset, it->second.get() + in_chunk, n);
        ++it;
      } else {
        // A hole, up to the next allocated chunk.
        uint64_t hole_end = it == chunks_.end() ? end : std::min(end, chunk_start(it->first));
        n = hole_end - pos;
        iov.fill(pos - offset, 0, n);
      }
      pos += n;
    }
  }

  Result<void> write(uint64_t offset, uint64_t bytes, const IoVec& iov) {
    const uint64_t end = offset + bytes;
    for (uint64_t pos = offset; pos < end;) {
      uint64_t index = pos / kChunkSize;
      uint64_t in_chunk = pos - chunk_start(index);
      uint64_t n = std::min(kChunkSize - in_chunk, end - pos);
      std::unique_ptr<std::byte[]>& chunk = chunks_[index];
      if (!chunk) {
        chunk.reset(new (std::nothrow) std::byte[kChunkSize]());
        if (!chunk) {
          chunks_.erase(index);
          return fail(ENOMEM, "memory: cannot allocate {} bytes for offset {}", kChunkSize, pos);
        }
      }
      iov.copy_to(pos - offset, chunk.get() + in_chunk, n);
      pos += n;
    }
    return {};
  }

  // Makes [offset, offset + bytes) read as zeroes. With `unmap`, a chunk the range covers up to
  // the end of the node is freed; other touched chunks are cleared in place.
  void zero(uint64_t offset, uint64_t bytes, bool unmap) {
    const uint64_t end = offset + bytes;
    auto it = chunks_.lower_bound(offset / kChunkSize);
    while (it != chunks_.end() && chunk_start(it->first) < end) {
      uint64_t start = chunk_start(it->first);
      uint64_t stop = std::min(start + kChunkSize, size_);
      uint64_t from = std::max(start, offset);
      uint64_t to = std::min(stop, end);
      if (unmap && from == start && to == stop) {
        it = chunks_.erase(it);
        continue;
      }
      std::memset(it->second.get() + (from - start), 0, to - from);
      ++it;
    }
  }

  // The status of the run of chunks of one kind that starts at `offset`.
  BlockStatus status(uint64_t offset, uint64_t bytes) const {
    const uint64_t end = offset + bytes;
    uint64_t index = offset / kChunkSize;
    auto it = chunks_.lower_bound(index);
    BlockStatus st;
    st.map = offset;
    st.file = node_;
    uint64_t run_end;
    if (it != chunks_.end() && it->first == index) {
      // Follow consecutive allocated chunks.
      uint64_t last = index;
      for (++it; it != chunks_.end() && it->first == last + 1 && chunk_start(it->first) < end;
           ++it) {
        last = it->first;
      }
      run_end = std::min(end, chunk_start(last + 1));
      st.flags = BlockStatusFlags::kData | BlockStatusFlags::kOffsetValid;
    } else {
      run_end = it == chunks_.end() ? end : std::min(end, chunk_start(it->first));
      st.flags = BlockStatusFlags::kZero | BlockStatusFlags::kOffsetValid;
    }
    st.bytes = run_end - offset;
    return st;
  }

  Result<void> resize(uint64_t size, PreallocMode prealloc) {
    if (prealloc != PreallocMode::kOff) {
      return fail(ENOTSUP, "Unsupported preallocation mode '{}'", prealloc_mode_name(prealloc));
    }
    if (size > kMaxNodeLength) {
      return fail(EINVAL, "offset({}) exceeds maximum({})", size, kMaxNodeLength);
    }
    if (size < size_) {
      // Drop what lies past the new end, so that growing again reads zeroes there.
      uint64_t first_gone = (size + kChunkSize - 1) / kChunkSize;
      chunks_.erase(chunks_.lower_bound(first_gone), chunks_.end());
      uint64_t tail = size % kChunkSize;
      auto last = chunks_.find(size / kChunkSize);
      if (tail != 0 && last != chunks_.end()) {
        std::memset(last->second.get() + tail, 0, kChunkSize - tail);
      }
    }
    size_ = size;
    return {};
  }

  Node* node_;
  uint64_t size_;
  Chunks chunks_;
};

Task<Result<std::unique_ptr<Driver>>> open_memory(OpenContext& ctx) {
  OptionReader& options = ctx.options();
  auto size = options.get_size("size");
  if (!size) co_return size.error();
  if (!*size) co_return options.missing("size");
  if (**size > kMaxNodeLength) co_return size_too_large(options.full_name("size"));
  co_return std::unique_ptr<Driver>(std::make_unique<MemoryDriver>(ctx.node(), **size));
}

}  // namespace

// What open_memory reads.
constexpr DriverOption kMemoryOptions[] = {{"size", OptionType::kSize, true}};

const DriverClass kMemory = {"memory", DriverKind::kProtocol, &open_memory, false, kMemoryOptions};

}  // namespace strata::drivers
