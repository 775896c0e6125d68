// The `raw` format driver: the guest sees the bytes of its `file` child, or a window of them.
//
// Without `offset` and `size` raw is a pure filter (QEMU: file role FILTERED|PRIMARY) and
// changes nothing but the permissions it asks for. With either option it shows the window
// [offset, offset + size) of its child (role DATA|PRIMARY): requests are moved by `offset`, the
// node's length is `size`, and a node with a fixed size cannot be resized. Without `size` the
// window runs to the end of the child and follows its length.
//
// Options: offset, size (both sizes, both optional). Both may change on reopen, as in QEMU; a
// filter may become a window and back. Unlike QEMU, which keeps the role chosen at open, the
// child's edge then takes the role open would have given it, so its permissions are those of
// a node opened that way (a window does not share RESIZE of its child).
#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "drivers.h"
#include "strata/align.h"
#include "strata/checked.h"
#include "strata/child.h"
#include "strata/filter.h"
#include "strata/node.h"
#include "strata/open_context.h"
#include "strata/options.h"

namespace strata::drivers {
namespace {

// QEMU's sector size: raw refuses sizes that are not a multiple of it, so that rounding a
// request up to a sector never leaks outside the window.
constexpr uint64_t kSectorSize = 512;

struct RawOptions {
  uint64_t offset = 0;
  std::optional<uint64_t> size;
  bool is_window() const { return offset != 0 || size.has_value(); }
};

Result<RawOptions> parse_options(OptionReader& reader) {
  RawOptions out;
  auto offset = reader.get_size("offset");
  if (!offset) return offset.error();
  out.offset = offset->value_or(0);
  auto size = reader.get_size("size");
  if (!size) return size.error();
  out.size = *size;
  return out;
}

// Checks the window against the child, with QEMU's texts. QEMU prints the node's previous
// offset and size in the first two (zero at open: a slip); Strata prints the values given.
// The text "to the  actual" with two spaces is QEMU's, kept because tests match on it.
Result<void> validate_window(const RawOptions& o, uint64_t file_length, uint32_t file_align) {
  if (o.offset > file_length) {
    return fail(EINVAL, "Offset ({}) cannot be greater than size of the containing file ({})",
                o.offset, file_length);
  }
  if (o.size && file_length - o.offset < *o.size) {
    return fail(EINVAL,
                "The sum of offset ({}) and size ({}) has to be smaller or equal to the  actual "
                "size of the containing file ({})",
                o.offset, *o.size, file_length);
  }
  // QEMU checks against 512 only; a child with a larger request alignment (O_DIRECT on a 4k
  // device) would round requests at the end of the window past it, so check against both.
  uint64_t align = std::max<uint64_t>(kSectorSize, file_align);
  if (o.size && !is_aligned(*o.size, align)) {
    return fail(EINVAL, "Specified size is not multiple of {}", align);
  }
  return {};
}

// QEMU's raw rule: the role-based default, except that WRITE and RESIZE are taken on the child
// only when a parent asks for them. The default adds them for a writable DATA child even when
// nobody writes, which would conflict needlessly with other users of the file.
ChildPerms raw_child_perms(ChildPerms defaults, Perm parent_perm) {
  constexpr Perm kGrowWrite = Perm::kWrite | Perm::kResize;
  defaults.perm = (defaults.perm & ~kGrowWrite) | (parent_perm & kGrowWrite);
  return defaults;
}

// The role raw's `file` child has for a node with these options. QEMU decides it on the options
// given, so an explicit offset=0 without size is still a filter.
ChildRole file_role(const RawOptions& o) {
  return o.is_window() ? ChildRole::kData | ChildRole::kPrimary
                       : ChildRole::kFiltered | ChildRole::kPrimary;
}

constexpr std::array<std::string_view, 2> kMutableOptions{"offset", "size"};

// raw in both shapes. As a pure filter (no offset, no size) the window code below changes
// nothing: requests move by 0, the length is the child's, and truncate passes the size on.
class RawDriver final : public FilterDriver {
 public:
  RawDriver(Child& file, RawOptions options) : FilterDriver(file), o_(options) {}

  // Follows the child if it shrinks under the window (QEMU's raw_getlength does the same).
  uint64_t length() const override {
    uint64_t file_length = file().size();
    uint64_t available = file_length > o_.offset ? file_length - o_.offset : 0;
    return o_.size ? std::min(*o_.size, available) : available;
  }

  NodeLimits limits() const override {
    NodeLimits l = FilterDriver::limits();
    // A fixed window never grows; without `size` it grows with the child.
    if (o_.size) l.can_grow = false;
    return l;
  }

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    auto task = file().read(o_.offset + offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override {
    auto task = file().write(o_.offset + offset, bytes, std::move(iov), flags);
    co_return co_await task;
  }
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override {
    auto task = file().pwrite_zeroes(o_.offset + offset, bytes, flags);
    co_return co_await task;
  }
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override {
    auto task = file().discard(o_.offset + offset, bytes);
    co_return co_await task;
  }

  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st;
    st.bytes = bytes;
    st.flags = BlockStatusFlags::kRaw | BlockStatusFlags::kOffsetValid;
    st.map = o_.offset + offset;
    st.file = &file().node();
    co_return st;
  }

  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc) override {
    if (o_.size) co_return fail(ENOTSUP, "Cannot resize fixed-size raw disks");
    auto file_size = checked_add(size, o_.offset);
    if (!file_size) co_return fail(EINVAL, "Disk size too large for the chosen offset");
    auto task = file().truncate(*file_size, exact, prealloc);
    co_return co_await task;
  }

  ChildPerms child_perms(const Child& child, ChildRole role, Perm parent_perm,
                         Perm parent_shared) const override {
    return raw_child_perms(Driver::child_perms(child, role, parent_perm, parent_shared),
                           parent_perm);
  }

  // Reopen: offset and size may change or be left out (QEMU's raw mutable_opts), checked
  // against the child's current size with the texts of open.
  std::span<const std::string_view> mutable_options() const override { return kMutableOptions; }
  Result<void> reopen_prepare(OptionReader& options, const NodeOptions& new_generic) override;
  void reopen_commit() override;
  void reopen_abort() override;

 private:
  RawOptions o_;
  // Between reopen_prepare and commit or abort: the new window, and the child's role before.
  std::optional<RawOptions> staged_;
  ChildRole role_before_ = ChildRole::kNone;
};

Result<void> RawDriver::reopen_prepare(OptionReader& options, const NodeOptions&) {
  auto parsed = parse_options(options);
  if (!parsed) return parsed.error();
  auto valid = validate_window(*parsed, file().size(), file().node().limits().request_alignment);
  if (!valid) return valid;
  // A filter that becomes a window (or back) changes what its child is to it, so the edge
  // takes the role open would give it. Set now, because the permission refresh that follows
  // prepare asks child_perms with the edge's role; reopen_abort puts the old one back.
  role_before_ = file().role();
  file().set_role(file_role(*parsed));
  staged_ = *parsed;
  return {};
}

void RawDriver::reopen_commit() {
  if (staged_) o_ = *staged_;
  staged_.reset();
}

void RawDriver::reopen_abort() {
  if (!staged_) return;
  file().set_role(role_before_);
  staged_.reset();
}

Task<Result<std::unique_ptr<Driver>>> open_raw(OpenContext& ctx) {
  auto options = parse_options(ctx.options());
  if (!options) co_return options.error();
  auto open = ctx.open_child("file", file_role(*options), true);
  auto child = co_await open;
  if (!child) co_return child.error();
  Child& file = **child;
  if (options->is_window()) {
    auto valid = validate_window(*options, file.size(), file.node().limits().request_alignment);
    if (!valid) co_return valid.error();
  }
  co_return std::unique_ptr<Driver>(std::make_unique<RawDriver>(file, *options));
}

}  // namespace

// What parse_options and open_raw read.
constexpr DriverOption kRawOptions[] = {
    {"offset", OptionType::kSize},
    {"size", OptionType::kSize},
    {"file", OptionType::kBlockdevRef, true},
};

const DriverClass kRaw = {"raw", DriverKind::kFormat, &open_raw, false, kRawOptions};

}  // namespace strata::drivers
