// The `file` protocol driver: a node over a regular file or a block device (QEMU's file-posix,
// Linux only).
//
// Data moves through the event loop's FileIo backend (io_uring or the thread pool, the `aio`
// option); metadata work that is quick or done once (open, stat, ftruncate, lseek for block
// status, block-device ioctls) is a direct system call on the loop thread.
//
// Options: filename (required), aio (threads | io_uring | native; default automatic), locking
// (auto | on | off: QEMU-compatible image locks, file_lock.h; auto takes them where the file
// system has OFD locks). Generic options used: read-only (O_RDONLY, else O_RDWR),
// auto-read-only (with read-only=off: O_RDONLY until a parent needs write access, then O_RDWR
// until the last such parent leaves; file_access.h) and cache.direct (O_DIRECT, with the request
// and memory alignment found out when the descriptor is opened).
//
// Reopen: no driver option can change (QEMU's file-posix lets only x-check-cache-dropped
// change, which Strata does not have), so filename, aio and locking must be given again as they
// were. The generic options can: as in QEMU 7.2 (raw_check_perm), the descriptor is reopened in
// the permission refresh, where the new read-only, auto-read-only and cache.direct flags are
// visible in node.options() together with the new permissions. A new descriptor is staged there
// (holding the image locks alongside the old one), swapped in at set_perm and closed at
// abort_perm_update; the core reads limits() again after the reopen commits.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "drivers.h"
#include "protocol/file_access.h"
#include "protocol/file_lock.h"
#include "protocol/file_sys.h"
#include "strata/align.h"
#include "strata/event_loop.h"
#include "strata/file_io.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::drivers {
namespace {

// locking=: whether the node takes QEMU-compatible OFD locks on the image (DESIGN.md 2).
enum class LockingMode { kAuto, kOn, kOff };

struct FileOptions {
  std::string filename;
  AioMode aio = AioMode::kAuto;
  LockingMode locking = LockingMode::kAuto;
};

// QEMU's `native` means Linux AIO, which Strata does not have; io_uring is its modern
// replacement and serves the same purpose (asynchronous submission without a thread pool), so
// `native` is accepted as a synonym rather than refusing configurations written for QEMU.
constexpr std::array<std::pair<std::string_view, AioMode>, 3> kAioModes{{
    {"threads", AioMode::kThreads},
    {"io_uring", AioMode::kIoUring},
    {"native", AioMode::kIoUring},
}};
constexpr std::array<std::pair<std::string_view, LockingMode>, 3> kLockingModes{{
    {"auto", LockingMode::kAuto},
    {"on", LockingMode::kOn},
    {"off", LockingMode::kOff},
}};

Result<FileOptions> parse_options(OptionReader& reader) {
  FileOptions out;
  auto filename = reader.get_string("filename");
  if (!filename) return filename.error();
  if (!*filename) return reader.missing("filename");
  out.filename = std::move(**filename);

  auto aio = reader.get_enum<AioMode>("aio", kAioModes);
  if (!aio) return aio.error();
  out.aio = aio->value_or(AioMode::kAuto);

  auto locking = reader.get_enum<LockingMode>("locking", kLockingModes);
  if (!locking) return locking.error();
  out.locking = locking->value_or(LockingMode::kAuto);
  return out;
}

// Deallocates and reads back as zeroes; the only punching mode Linux offers.
constexpr int kPunch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

// fallocate(2) and the block-device ioctls say "this file system / device cannot" in these.
bool is_unsupported(int err) { return err == EOPNOTSUPP || err == ENOSYS || err == ENODEV; }

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

class FileDriver final : public Driver {
 public:
  struct State {
    Node* node = nullptr;
    FileIo* io = nullptr;
    FileAccess access;  // the descriptor, its access mode and the image locks
    FileKind kind = FileKind::kRegular;
    std::string filename;
    uint64_t length = 0;
    DirectAlignment alignment{1, 1};
    uint32_t block_size = 1;  // block devices: the zeroing/discard unit
  };
  explicit FileDriver(State state) : s_(std::move(state)) { s_.io->register_file(s_.access.fd()); }
  // The registration follows descriptor switches (set_perm) and ends before the descriptor
  // closes after this.
  ~FileDriver() override { s_.io->forget_file(s_.access.fd()); }

  uint64_t length() const override { return s_.length; }
  NodeLimits limits() const override;

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override;
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> flush() override;
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc) override;

  // Image locking and dynamic auto-read-only (DESIGN.md 2), in FileAccess's phases.
  Result<void> check_perm(Perm perm, Perm shared) override;
  void set_perm(Perm perm, Perm shared) override;
  void abort_perm_update() override;
  bool storage_read_write() const override { return s_.access.read_write(); }

 private:
  Task<Result<void>> zero_regular(uint64_t offset, uint64_t bytes, bool unmap);
  Task<Result<void>> zero_device(uint64_t offset, uint64_t bytes, bool unmap);
  Task<Result<void>> truncate_regular(uint64_t size, PreallocMode prealloc);
  Result<void> truncate_device(uint64_t size, bool exact, PreallocMode prealloc) const;
  Task<Result<void>> preallocate_full(uint64_t from, uint64_t to);
  void note_written_up_to(uint64_t end) { s_.length = std::max(s_.length, end); }
  bool direct() const { return s_.access.direct(); }

  State s_;
  // The O_DIRECT alignment of the descriptor check_perm staged, when it turns O_DIRECT on.
  std::optional<DirectAlignment> staged_alignment_;
  bool zero_range_works_ = true;  // cleared after the file system refuses FALLOC_FL_ZERO_RANGE
  bool punch_hole_works_ = true;
};

NodeLimits FileDriver::limits() const {
  NodeLimits l;
  l.request_alignment = direct() ? s_.alignment.request : 1;
  l.memory_alignment = direct() ? s_.alignment.memory : 1;
  if (s_.kind == FileKind::kBlockDevice) {
    // The zeroing and discard ioctls work in whole logical blocks.
    l.pwrite_zeroes_alignment = std::max(s_.block_size, l.request_alignment);
    l.pdiscard_alignment = l.pwrite_zeroes_alignment;
  }
  l.supports_fua = true;
  l.supports_write_zeroes = true;
  l.supports_zero_unmap = true;
  l.supports_discard = true;
  l.can_grow = s_.kind == FileKind::kRegular;
  return l;
}

// The part of iov[from, from + len) that one preadv/pwritev can take: at most IOV_MAX
// elements. The core may hand over longer lists (many small guest buffers).
IoVec one_syscall(const IoVec& iov, uint64_t from, uint64_t len) {
  IoVec rest = iov.slice(from, len);
  if (rest.count() <= IOV_MAX) return rest;
  size_t bytes = 0;
  for (size_t i = 0; i < IOV_MAX; ++i) bytes += rest.iovecs()[i].iov_len;
  return rest.slice(0, bytes);
}

Task<Result<void>> FileDriver::preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags) {
  assert(is_aligned(offset | bytes, limits().request_alignment));
  uint64_t done = 0;
  while (done < bytes) {
    IoVec part = one_syscall(iov, done, bytes - done);
    auto task = s_.io->preadv(s_.access.fd(), part, offset + done, direct());
    auto n = co_await task;
    if (!n) co_return n.error();
    if (*n == 0) break;  // end of file: the file is shorter than the node (concurrent truncate)
    done += *n;
    // With O_DIRECT only the end of the file makes a short read, and the next read would start
    // misaligned and fail with EINVAL; the rest is past the end.
    if (direct() && !is_aligned(done, s_.alignment.request)) break;
  }
  if (done < bytes) iov.fill(done, 0, bytes - done);
  co_return Result<void>{};
}

Task<Result<void>> FileDriver::pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) {
  assert(is_aligned(offset | bytes, limits().request_alignment));
  bool fua = has_flag(flags, ReqFlags::kFua);
  uint64_t done = 0;
  while (done < bytes) {
    IoVec part = one_syscall(iov, done, bytes - done);
    auto task = s_.io->pwritev(s_.access.fd(), part, offset + done, direct(), fua);
    auto n = co_await task;
    if (!n) co_return n.error();
    if (*n == 0) {
      co_return fail(EIO, "Short write to '{}' at offset {}", s_.filename, offset + done);
    }
    done += *n;
  }
  note_written_up_to(offset + bytes);
  co_return Result<void>{};
}

Task<Result<void>> FileDriver::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  bool unmap = has_flag(flags, ReqFlags::kMayUnmap);
  auto task = s_.kind == FileKind::kBlockDevice ? zero_device(offset, bytes, unmap)
                                                : zero_regular(offset, bytes, unmap);
  auto r = co_await task;
  if (!r || !has_flag(flags, ReqFlags::kFua)) co_return r;
  // FUA is promised for pwritev only (limits().supports_fua); keep it here with a flush.
  auto sync = s_.io->fdatasync(s_.access.fd());
  co_return co_await sync;
}

// Zeroes a range of a regular file without writing data. Returns ENOTSUP when the file system
// offers no way, so that the core writes a zeroed buffer (unless the caller said kNoFallback).
Task<Result<void>> FileDriver::zero_regular(uint64_t offset, uint64_t bytes, bool unmap) {
  uint64_t end = offset + bytes;
  // Punching keeps the file size, so a range that grows the file takes the ZERO_RANGE path.
  if (unmap && punch_hole_works_ && end <= s_.length) {
    auto task = s_.io->fallocate(s_.access.fd(), kPunch, offset, bytes);
    auto r = co_await task;
    if (r) co_return r;
    if (!is_unsupported(r.error().err())) co_return r;
    punch_hole_works_ = false;
  }
  if (zero_range_works_) {
    auto task = s_.io->fallocate(s_.access.fd(), FALLOC_FL_ZERO_RANGE, offset, bytes);
    auto r = co_await task;
    if (r) {
      note_written_up_to(end);
      co_return r;
    }
    if (!is_unsupported(r.error().err())) co_return r;
    zero_range_works_ = false;
  }
  co_return fail(ENOTSUP, "'{}': the file system cannot write zeroes efficiently", s_.filename);
}

// Zeroes a range of a block device. fallocate(2) on a block device (Linux 4.9+) is the
// asynchronous form of BLKZEROOUT: PUNCH_HOLE unmaps only where the device guarantees that
// unmapped blocks read as zeroes, ZERO_RANGE writes zeroes (or uses WRITE ZEROES) without
// unmapping. Older kernels get the BLKZEROOUT ioctl.
Task<Result<void>> FileDriver::zero_device(uint64_t offset, uint64_t bytes, bool unmap) {
  if (!is_aligned(offset, s_.block_size) || !is_aligned(bytes, s_.block_size)) {
    co_return fail(ENOTSUP, "'{}': zeroing needs whole {}-byte blocks", s_.filename, s_.block_size);
  }
  if (unmap && punch_hole_works_) {
    auto task = s_.io->fallocate(s_.access.fd(), kPunch, offset, bytes);
    auto r = co_await task;
    if (r) co_return r;
    if (!is_unsupported(r.error().err())) co_return r;
    // EOPNOTSUPP here usually means "this device cannot unmap with a zeroes guarantee" rather
    // than "old kernel", so the flag stays: the next unmapping request may hit a device that
    // can. Zero without unmapping instead.
  }
  if (zero_range_works_) {
    auto task =
        s_.io->fallocate(s_.access.fd(), FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    auto r = co_await task;
    if (r) co_return r;
    if (!is_unsupported(r.error().err())) co_return r;
    zero_range_works_ = false;
  }
  auto r = block_device_zero_out(s_.access.fd(), offset, bytes);
  if (!r && is_unsupported(r.error().err())) co_return fail(ENOTSUP, "{}", r.error().message());
  co_return r;
}

// Discard is advisory: ENOTSUP (the core then treats it as done) where the storage cannot.
Task<Result<void>> FileDriver::pdiscard(uint64_t offset, uint64_t bytes) {
  if (s_.kind == FileKind::kBlockDevice) {
    // Keep to the whole blocks inside the range; a partial block cannot be discarded.
    uint64_t start = align_up(offset, s_.block_size);
    uint64_t end = align_down(offset + bytes, s_.block_size);
    if (start >= end) co_return Result<void>{};
    auto r = block_device_discard(s_.access.fd(), start, end - start);
    if (!r && is_unsupported(r.error().err())) co_return fail(ENOTSUP, "{}", r.error().message());
    co_return r;
  }
  if (!punch_hole_works_) co_return fail(ENOTSUP, "'{}': discard is not supported", s_.filename);
  auto task = s_.io->fallocate(s_.access.fd(), kPunch, offset, bytes);
  auto r = co_await task;
  if (!r && is_unsupported(r.error().err())) {
    punch_hole_works_ = false;
    co_return fail(ENOTSUP, "{}", r.error().message());
  }
  co_return r;
}

Task<Result<void>> FileDriver::flush() {
  auto task = s_.io->fdatasync(s_.access.fd());
  co_return co_await task;
}

Task<Result<BlockStatus>> FileDriver::block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st;
  st.map = offset;
  st.file = s_.node;
  st.bytes = bytes;
  st.flags = BlockStatusFlags::kData | BlockStatusFlags::kOffsetValid;
  Extent e =
      s_.kind == FileKind::kRegular ? find_extent(s_.access.fd(), offset, s_.length) : Extent{};
  if (e.kind == Extent::Kind::kUnknown || e.end <= offset) co_return st;

  uint32_t align = limits().request_alignment;
  uint64_t len = e.end - offset;
  if (e.kind == Extent::Kind::kData) {
    // A data extent ending mid-block (the end of an unaligned file) counts the whole block:
    // answers are in whole request-aligned blocks.
    st.bytes = std::min(bytes, align_up(len, align));
    co_return st;
  }
  // Holes are file-system blocks, which are aligned; if one is not (a hole smaller than the
  // request alignment), its block holds data too and is reported as data.
  len = align_down(len, align);
  if (len == 0) {
    st.bytes = std::min<uint64_t>(bytes, align);
    co_return st;
  }
  st.bytes = std::min(bytes, len);
  st.flags = BlockStatusFlags::kZero | BlockStatusFlags::kOffsetValid;
  co_return st;
}

Task<Result<void>> FileDriver::truncate(uint64_t size, bool exact, PreallocMode prealloc) {
  if (s_.kind == FileKind::kBlockDevice) co_return truncate_device(size, exact, prealloc);
  auto task = truncate_regular(size, prealloc);
  auto r = co_await task;
  // Whatever happened, the length is what the file says now.
  auto now = file_length(s_.access.fd(), s_.kind);
  if (now) s_.length = *now;
  co_return r;
}

// QEMU's rules: a device keeps its size; a smaller size without `exact` is accepted (the
// caller uses the first `size` bytes), anything else is refused.
Result<void> FileDriver::truncate_device(uint64_t size, bool exact, PreallocMode prealloc) const {
  if (prealloc != PreallocMode::kOff) {
    return fail(ENOTSUP, "Preallocation mode '{}' unsupported for this non-regular file",
                prealloc_mode_name(prealloc));
  }
  if (size != s_.length && exact) return fail(ENOTSUP, "Cannot resize device files");
  if (size > s_.length) return fail(EINVAL, "Cannot grow device files");
  return {};
}

Task<Result<void>> FileDriver::truncate_regular(uint64_t size, PreallocMode prealloc) {
  auto current = file_length(s_.access.fd(), s_.kind);
  if (!current) co_return current.error();
  if (prealloc == PreallocMode::kMetadata) {
    co_return fail(ENOTSUP, "Unsupported preallocation mode: {}", prealloc_mode_name(prealloc));
  }
  if (*current > size && prealloc != PreallocMode::kOff) {
    co_return fail(ENOTSUP, "Cannot use preallocation for shrinking files");
  }
  if (prealloc == PreallocMode::kOff || size == *current) {
    co_return truncate_fd(s_.access.fd(), size, "Could not resize file");
  }
  if (prealloc == PreallocMode::kFalloc) {
    auto task = s_.io->fallocate(s_.access.fd(), 0, *current, size - *current);
    auto r = co_await task;
    if (r) co_return r;
    // Like posix_fallocate(3): where the file system cannot allocate, write zeroes instead.
    if (!is_unsupported(r.error().err())) {
      (void)truncate_fd(s_.access.fd(), *current, "Could not restore the old file length");
      co_return errno_error(r.error().err(), "Could not preallocate new data");
    }
  }
  auto task = preallocate_full(*current, size);
  auto r = co_await task;
  if (!r) (void)truncate_fd(s_.access.fd(), *current, "Could not restore the old file length");
  co_return r;
}

// Grows the file from `from` to `to` and writes every new byte, so that the blocks are really
// allocated. It reads each chunk back and writes it unchanged rather than writing zeroes, so
// that the same code serves O_DIRECT, where chunks are aligned and the first one may hold data
// from before `from`; the file is trimmed to `to` at the end.
Task<Result<void>> FileDriver::preallocate_full(uint64_t from, uint64_t to) {
  constexpr uint64_t kChunk = 1 << 20;
  auto grown = truncate_fd(s_.access.fd(), to, "Could not resize file");
  if (!grown) co_return grown;
  const uint64_t align = direct() ? s_.alignment.request : 1;
  const size_t buf_align = std::max<size_t>(4096, s_.alignment.memory);
  std::unique_ptr<void, FreeDeleter> buf(std::aligned_alloc(buf_align, kChunk));
  if (!buf) co_return fail(ENOMEM, "Could not allocate a preallocation buffer");
  for (uint64_t pos = align_down(from, align); pos < to;) {
    uint64_t len = std::min(kChunk, align_up(to - pos, align));
    IoVec iov(buf.get(), len);
    auto read = preadv(pos, len, iov, ReqFlags::kNone);
    auto rd = co_await read;
    if (!rd) co_return rd.error().prefixed("Could not write zeros for preallocation");
    auto write = pwritev(pos, len, iov, ReqFlags::kNone);
    auto wr = co_await write;
    if (!wr) co_return wr.error().prefixed("Could not write zeros for preallocation");
    pos += len;
  }
  auto trimmed = truncate_fd(s_.access.fd(), to, "Could not resize file");
  if (!trimmed) co_return trimmed;
  auto sync = s_.io->fdatasync(s_.access.fd());
  auto synced = co_await sync;
  if (!synced) co_return synced.error().prefixed("Could not flush file to disk");
  co_return Result<void>{};
}

Result<void> FileDriver::check_perm(Perm perm, Perm shared) {
  // Read at every change rather than kept from open, so that a reopen that changes read-only
  // or auto-read-only takes effect at its permission refresh (as in QEMU's raw_check_perm).
  // A reopen's cache.direct is seen here the same way.
  const NodeOptions& o = s_.node->options();
  auto prepared =
      s_.access.prepare(perm, shared, access_policy(o.read_only, o.auto_read_only), o.cache_direct);
  if (!prepared) return prepared;
  // Probed on the staged descriptor, so that the limits the core reads after the commit are
  // the new descriptor's. find_direct_alignment cannot fail (it falls back to 4096), so unlike
  // QEMU there is no "Could not find working O_DIRECT alignment" here.
  if (s_.access.staged_fd() >= 0 && o.cache_direct && !direct()) {
    staged_alignment_ = find_direct_alignment(s_.access.staged_fd(), s_.kind);
  }
  return {};
}

// The transaction's new permissions were given to check_perm; FileAccess kept them.
void FileDriver::set_perm(Perm, Perm) {
  const int old_fd = s_.access.fd();
  const bool switching = s_.access.staged_fd() >= 0;
  s_.access.commit();
  if (staged_alignment_) s_.alignment = *std::exchange(staged_alignment_, std::nullopt);
  if (!switching) return;
  // A new open file, usually under the old number (FileAccess swaps with dup3) but under its
  // own if dup3 failed: the backend forgets what it knew by number and checks the file again.
  s_.io->forget_file(old_fd);
  s_.io->register_file(s_.access.fd());
}

void FileDriver::abort_perm_update() {
  s_.access.abort();
  staged_alignment_.reset();
}

bool use_locks(LockingMode mode, int fd) {
  switch (mode) {
    case LockingMode::kOn:
      return true;
    case LockingMode::kOff:
      return false;
    case LockingMode::kAuto:
      return file_lock::supported(fd);
  }
  return false;
}

Task<Result<std::unique_ptr<Driver>>> open_file(OpenContext& ctx) {
  auto opts = parse_options(ctx.options());
  if (!opts) co_return opts.error();
  auto io = ctx.loop().file_io(opts->aio);
  if (!io) co_return io.error();

  const NodeOptions& generic = ctx.generic();
  FileDriver::State s;
  s.node = &ctx.node();
  s.io = *io;
  s.filename = opts->filename;
  const bool direct = generic.cache_direct;
  // An auto-read-only node starts read-only: no parent writes yet, and opening must not fail
  // for lack of write access. The first writer's permission refresh makes it read-write.
  AccessPolicy policy = access_policy(generic.read_only, generic.auto_read_only);
  bool read_write = wants_read_write(policy, Perm::kNone);
  auto fd = open_image(s.filename, read_write, direct);
  if (!fd) co_return fd.error();

  auto kind = file_kind(fd->get(), s.filename);
  if (!kind) co_return kind.error();
  s.kind = *kind;
  if (read_write) {
    auto writable = check_device_writable(fd->get(), s.kind);
    if (!writable) co_return writable.error();
  }
  FileAccess::Config config{s.filename, ctx.node().name(), s.kind, direct,
                            use_locks(opts->locking, fd->get())};
  s.access = FileAccess(std::move(*fd), read_write, std::move(config));
  auto length = file_length(s.access.fd(), s.kind);
  if (!length) co_return length.error();
  s.length = *length;
  if (s.kind == FileKind::kBlockDevice) {
    auto lbs = logical_block_size(s.access.fd());
    if (!lbs) co_return lbs.error();
    s.block_size = *lbs;
  }
  // A descriptor re-opened for auto-read-only has the same file and O_DIRECT flag, hence the
  // same alignment: it is not probed again (check_perm probes when O_DIRECT is turned on).
  if (direct) s.alignment = find_direct_alignment(s.access.fd(), s.kind);
  co_return std::unique_ptr<Driver>(std::make_unique<FileDriver>(std::move(s)));
}

}  // namespace

constexpr auto kAioNames = option_value_names(kAioModes);
constexpr auto kLockingNames = option_value_names(kLockingModes);

// What parse_options reads.
constexpr DriverOption kFileOptions[] = {
    {"filename", OptionType::kString, true},
    {"aio", OptionType::kEnum, false, kAioNames, "BlockdevAioOptions"},
    {"locking", OptionType::kEnum, false, kLockingNames, "OnOffAuto"},
};

const DriverClass kFile = {"file", DriverKind::kProtocol, &open_file, false, kFileOptions};

}  // namespace strata::drivers
