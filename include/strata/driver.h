// The driver SPI: what a block driver implements and what the core guarantees it.
//
// A driver is one kind of node (file, raw, qcow2, throttle, ...). It is described by a
// DriverClass (name, kind, open function) listed once in the built-in registry, and each node
// holds one Driver instance: the driver's state for that node.
//
// The core validates every request once before it reaches a driver (src/core/request.cpp):
//   - offset and length lie inside the node (or the write may grow it, where allowed); the one
//     exception is a node whose size is not a multiple of request_alignment: a read of its last
//     block is padded past the end, and the driver fills that part with zeroes;
//   - offset and length are multiples of limits().request_alignment (the core pads unaligned
//     requests with read-modify-write);
//   - length is at most limits().max_transfer (the core splits longer requests);
//   - the caller holds the permission the request needs;
//   - a request that needs serialising (limits().serialise_overlapping, or a write the core
//     padded) does not overlap another.
// Drivers therefore only assert these facts; they never re-check them.
//
// Operations a driver does not override fall back to core emulation: pwrite_zeroes writes a
// zeroed buffer, pdiscard does nothing (discard is advisory), block_status reports everything
// as data. Capabilities are data (NodeLimits), not virtual calls.
//
// Threading: every member is called on the node's event loop thread.
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/iovec.h"
#include "strata/perm.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Child;
class EventLoop;
class Node;
class OpenContext;
class OptionReader;
struct NodeOptions;

// Flags on a single request.
enum class ReqFlags : uint32_t {
  kNone = 0,
  kFua = 0x1,         // write: durable when it completes
  kMayUnmap = 0x2,    // write-zeroes: may deallocate instead of writing zeroes
  kNoFallback = 0x4,  // write-zeroes: fail with ENOTSUP rather than write a zeroed buffer
  kCompressed = 0x8,  // write: store compressed (nodes with supports_compressed_writes only)
};
constexpr ReqFlags operator|(ReqFlags a, ReqFlags b) {
  return static_cast<ReqFlags>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}
constexpr ReqFlags operator&(ReqFlags a, ReqFlags b) {
  return static_cast<ReqFlags>(static_cast<uint32_t>(a) & static_cast<uint32_t>(b));
}
constexpr ReqFlags operator~(ReqFlags a) {
  return static_cast<ReqFlags>(~static_cast<uint32_t>(a));
}
constexpr bool has_flag(ReqFlags flags, ReqFlags f) { return (flags & f) != ReqFlags::kNone; }

// What a node can do and how requests to it must be shaped. Zero means "no limit" for the
// maximums and "same as request_alignment" for the other alignments.
struct NodeLimits {
  uint32_t request_alignment = 1;  // power of two; offsets and lengths are multiples of it
  uint32_t memory_alignment = 1;   // buffers handed to the driver are aligned to it (O_DIRECT)
  uint64_t max_transfer = 0;       // longest read/write the driver accepts
  uint64_t max_pwrite_zeroes = 0;
  uint32_t pwrite_zeroes_alignment = 0;
  uint64_t max_pdiscard = 0;
  uint32_t pdiscard_alignment = 0;

  bool supports_fua = false;           // pwritev honours kFua; else the core flushes after
  bool supports_write_zeroes = false;  // pwrite_zeroes is efficient (no data written)
  bool supports_zero_unmap = false;    // pwrite_zeroes with kMayUnmap can deallocate
  bool supports_discard = false;       // pdiscard does something
  bool can_grow = false;               // writes past the end extend the node
  bool serialise_overlapping = false;  // overlapping requests must not run concurrently
  // pwritev honours kCompressed (qcow2). Such writes start at a multiple of
  // compressed_write_alignment and cover whole units, except at the end of the node.
  bool supports_compressed_writes = false;
  uint32_t compressed_write_alignment = 0;
};

// Block status (QEMU's BDRV_BLOCK_* meanings).
enum class BlockStatusFlags : uint32_t {
  kNone = 0,
  kData = 0x1,         // reads return data stored here (not known zero)
  kZero = 0x2,         // reads return zeroes
  kOffsetValid = 0x4,  // `map` and `file` say where the data lives
  kRaw = 0x8,          // ask `file` at `map` instead: this layer only passes through
  kAllocated = 0x10,   // set by the core: this layer decides the content (no backing fall-through)
  kEof = 0x20,         // set by the core: the range reaches the end of the node
  // From a format driver with kData|kOffsetValid: the core asks `file` at `map` whether the
  // range reads as zeroes and adds kZero if so (QEMU's BDRV_BLOCK_RECURSE, for images whose data
  // clusters were preallocated as holes). The core removes the flag from its answer.
  kRecurse = 0x40,
};
constexpr BlockStatusFlags operator|(BlockStatusFlags a, BlockStatusFlags b) {
  return static_cast<BlockStatusFlags>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}
constexpr BlockStatusFlags operator&(BlockStatusFlags a, BlockStatusFlags b) {
  return static_cast<BlockStatusFlags>(static_cast<uint32_t>(a) & static_cast<uint32_t>(b));
}
constexpr bool has_flag(BlockStatusFlags flags, BlockStatusFlags f) {
  return (flags & f) != BlockStatusFlags::kNone;
}

// The status of a prefix of the queried range: `bytes` bytes from the queried offset share
// `flags`.
struct BlockStatus {
  uint64_t bytes = 0;
  BlockStatusFlags flags = BlockStatusFlags::kNone;
  uint64_t map = 0;      // with kOffsetValid/kRaw: offset in `file`
  Node* file = nullptr;  // with kOffsetValid/kRaw: the node holding the data
};

enum class PreallocMode { kOff, kMetadata, kFalloc, kFull };
// "off", "metadata", "falloc", "full": the option's wire names, for messages.
std::string_view prealloc_mode_name(PreallocMode mode);

// What a consistency check found and fixed (QEMU's BdrvCheckResult; `qemu-img check`).
struct CheckResult {
  int64_t corruptions = 0;
  int64_t leaks = 0;
  int64_t check_errors = 0;
  int64_t corruptions_fixed = 0;
  int64_t leaks_fixed = 0;
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;
  uint64_t allocated_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
};

// What `info` shows about an image besides its size and format-specific data (QEMU's
// BlockDriverInfo, and the backing file a format records in the image).
struct ImageFacts {
  uint64_t cluster_size = 0;   // 0: the format has no clusters ("cluster-size" is left out)
  bool dirty = false;          // the image was not closed cleanly (qcow2's dirty bit)
  std::string backing_file;    // as recorded in the image; empty: none
  std::string backing_format;  // as recorded; empty: not recorded
  std::string data_file;       // the external data file's name as recorded; empty: none
};

// One internal snapshot as `info` lists it (QEMU's SnapshotInfo).
struct SnapshotInfo {
  std::string id;
  std::string name;
  uint64_t vm_state_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  std::optional<uint64_t> icount;  // unset: not recorded
};

// What a check may repair: nothing, leaked clusters only, or everything (`-r leaks|all`).
enum class CheckFix { kNone, kLeaks, kAll };

// Permissions a parent asks of one child.
struct ChildPerms {
  Perm perm = Perm::kNone;
  Perm shared = Perm::kAll;
};

class Driver {
 public:
  virtual ~Driver() = default;

  // The node's size in bytes, as the driver knows it now (cheap; no I/O).
  virtual uint64_t length() const = 0;
  // Request shape and capabilities; the core reads them after open and after reopen.
  virtual NodeLimits limits() const { return {}; }

  // REQUIRES for all I/O below: the facts listed in the file comment.
  virtual Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) = 0;
  // Default: EROFS ("driver does not support writes").
  virtual Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags);
  // Default: ENOTSUP; the core then writes zeroes unless kNoFallback.
  virtual Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags);
  // Default: ENOTSUP; the core treats the discard as done.
  virtual Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes);
  // Makes completed writes durable. Default: nothing to do. The core flushes children after
  // their parent, so a format driver only writes out its own metadata here.
  virtual Task<Result<void>> flush();
  // Status of a prefix of [offset, offset + bytes). Default: all data.
  virtual Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes);
  // Changes the size. Default: ENOTSUP "Image format driver does not support resize".
  virtual Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc);
  // Called once before the node goes away, while children still exist (write metadata, mark
  // clean). Default: nothing.
  virtual Task<void> close();

  // Checks the image's metadata and repairs what `fix` allows; problems found are counted in
  // the result (not errors), an error means the check could not run. Default: ENOTSUP
  // ("This image format does not support checks").
  virtual Task<Result<CheckResult>> check(CheckFix fix);
  // Format-specific facts for `info` (QEMU's ImageInfoSpecific `data`, e.g. qcow2's compat,
  // cluster bits, refcount bits), as a JSON object text; empty when the driver has none.
  virtual std::string specific_info_json() const { return {}; }
  // Cluster size, dirty flag and recorded backing file for `info`. Default: none of them.
  virtual ImageFacts image_facts() const { return {}; }
  // Records a new backing file name and format in the image (QEMU's bdrv_change_backing_file),
  // as commit and stream do when they change a node's backing chain; an empty name removes the
  // backing file. The caller holds WRITE on the node's storage. Default: ENOTSUP.
  virtual Task<Result<void>> change_backing_file(std::string backing_file,
                                                 std::string backing_format);
  // Deallocates every cluster of the image, so that it reads as its backing file again (QEMU's
  // bdrv_make_empty; `qemu-img commit` empties the committed image). The caller holds WRITE on
  // the node. Internal snapshots keep their data. Default: ENOTSUP with QEMU's text ("<format>
  // does not support emptying nodes"; the driver does not know its format name, so it says
  // "This driver"); callers such as qemu-img commit take ENOTSUP as "nothing to do".
  virtual Task<Result<void>> make_empty() {
    co_return fail(ENOTSUP, "This driver does not support emptying nodes");
  }
  // The image's internal snapshots, in table order (reads the snapshot table). Default: none.
  virtual Task<Result<std::vector<SnapshotInfo>>> list_snapshots() {
    co_return std::vector<SnapshotInfo>{};
  }

  // Permissions. child_perms says what this node needs from `child` given what its parents
  // need from it (cumulative perm/shared); the default dispatches on the child's role as
  // QEMU's bdrv_default_perms does. It must be a pure function.
  virtual ChildPerms child_perms(const Child& child, ChildRole role, Perm parent_perm,
                                 Perm parent_shared) const;
  // Prepares for the node's cumulative permissions to become (perm, shared): take locks, reopen
  // descriptors read-write. Followed by exactly one of set_perm (commit) or abort_perm_update.
  // abort_perm_update may also be called without check_perm and must then do nothing.
  virtual Result<void> check_perm(Perm perm, Perm shared);
  virtual void set_perm(Perm perm, Perm shared);
  virtual void abort_perm_update();

  // Whether the node's storage is open read-write right now. With auto-read-only=on this follows
  // the permissions (read-write while a parent holds one of kWritePerms); it changes only when a
  // permission transaction commits. Default: true, for drivers that have no such notion.
  virtual bool storage_read_write() const { return true; }

  // Reopen (blockdev-reopen, Engine::reopen), one transaction over many nodes:
  //   1. reopen_prepare on every node, in queue order (parents before their inline children);
  //   2. the permission refresh: from here until 3., node.options() already holds the new
  //      generic options, so check_perm sees the post-reopen read-only, auto-read-only and
  //      cache flags (a file node reopens its descriptor there);
  //   3. reopen_commit on every node in reverse queue order, then set_perm; or, if anything
  //      failed, abort_perm_update and reopen_abort on every node whose prepare succeeded.
  // The core checks the driver-specific options before prepare: an option not listed in
  // mutable_options() must be given again with its value at open ("Cannot change the option
  // '<x>'"; left out: "Option '<x>' cannot be reset to its default value"). Options that are
  // listed may change or be left out (meaning: back to the default); prepare reads them from
  // `options` (the node's new driver-specific options; child and generic options are removed),
  // validates and stages them, and may refuse the new generic options. A reopen may also give
  // the node a new `file` or `backing` node (the edge object stays) or remove or add its
  // `backing` edge, so a driver looks its backing edge up through the node when it needs it.
  // Defaults: nothing is mutable, prepare accepts, commit and abort do nothing.
  virtual std::span<const std::string_view> mutable_options() const { return {}; }
  virtual Result<void> reopen_prepare(OptionReader& options, const NodeOptions& new_generic);
  virtual void reopen_commit();
  virtual void reopen_abort();

 protected:
  Driver() = default;
};

// Default permission rules by role (QEMU's bdrv_default_perms), for drivers to reuse.
// `writable` says whether the node may write (not read-only after any pending reopen).
// `auto_read_only` is the node's auto-read-only option: a writable node with it takes WRITE and
// RESIZE on a METADATA child only while a parent holds one of kWritePerms (QEMU takes them as
// soon as the node is writable), so a chain over auto-read-only storage stays read-only until
// someone writes.
ChildPerms default_child_perms(ChildRole role, Perm parent_perm, Perm parent_shared, bool writable,
                               bool auto_read_only = false);

enum class DriverKind { kProtocol, kFormat, kFilter };

// ---- Driver options ----
//
// A driver declares the options its open function reads (QEMU's BlockdevOptions<Driver>
// members), once, next to that function. The core checks a blockdev-add's whole option tree
// against these declarations before anything opens (Engine::check_options: types, enum values,
// unknown keys, recursively into inline children), and query-qmp-schema describes the drivers
// from them, so an option exists for users exactly when its driver declares it. The driver
// still reads its values (and their ranges) itself at open.

// How an option's value is read; the OptionReader accessor or QAPI type it stands for.
enum class OptionType {
  kString,             // get_string
  kBool,               // get_bool
  kUint,               // get_uint
  kSize,               // get_size (keyval text may carry a k/M/G/... suffix)
  kEnum,               // get_enum: a string out of DriverOption::values
  kIntOrString,        // an integer or a string (fault-inject's errno); the driver checks it
  kBlockdevRef,        // a child: a node-name, or inline BlockdevOptions
  kBlockdevRefOrNull,  // the same, or null for "no child" (qcow2's backing)
};

struct DriverOption {
  std::string_view name;  // the wire name: "filename", "l2-cache-size"
  OptionType type;
  // Whether open fails without it (query-qmp-schema lists the others as optional). The open
  // function reports a missing one ("Parameter 'x' is missing"); the pre-open check does not.
  bool required = false;
  std::span<const std::string_view> values = {};  // kEnum: the accepted values
  // kEnum: the QAPI enum type's name that query-qmp-schema shows (QEMU's, where QEMU has the
  // enum: "BlockdevAioOptions", "OnOffAuto").
  std::string_view enum_type = {};
};

// The wire names of a driver's enum table (the pairs get_enum takes), for DriverOption::values,
// so the declared values and the values open accepts are one list.
template <class E, size_t N>
constexpr std::array<std::string_view, N> option_value_names(
    const std::array<std::pair<std::string_view, E>, N>& values) {
  std::array<std::string_view, N> names{};
  for (size_t i = 0; i < N; ++i) names[i] = values[i].first;
  return names;
}

// A kind of driver. Listed once, in src/drivers/builtin.cpp.
struct DriverClass {
  std::string_view name;  // the `driver` option: "file", "raw", "qcow2", ...
  DriverKind kind;
  // Opens a node: reads the driver's own options from ctx.options() (generic options are
  // already consumed), opens children with ctx.open_child(), and returns the driver state.
  Task<Result<std::unique_ptr<Driver>>> (*open)(OpenContext& ctx);
  // Whether a reopen may give a node of this kind a `backing` child it was opened without
  // (formats with backing files, such as qcow2). Filters and nodes that already have one need
  // not set it.
  bool supports_backing = false;
  // The driver's own options, children included (see DriverOption). Unset (the tests'
  // drivers): only the generic options are checked before open, and whatever the driver did
  // not read is refused after it opened.
  std::optional<std::span<const DriverOption>> options = std::nullopt;
};

// ---- Image creation (qemu-img create) ----
//
// Creating an image is not opening a node: a creator writes a new file from option values, with
// plain file I/O, the way QEMU's bdrv_create does for `qemu-img create`. The creatable formats
// form a registry of their own (find_image_creator, src/drivers/format/image_create.cpp) rather
// than a member of DriverClass, because their option lists are QEMU's create options (QemuOpts:
// "cluster_size", "lazy_refcounts"), not the open options.
//
// The front end parses the -o text against `options` (names, bool/size/number syntax, QEMU's
// texts for those), prints the "Formatting ..." line in `options` order, and calls `create` with
// the values: sizes and numbers as decimal digits, booleans and strings as the user wrote them
// (booleans in any spelling parse_create_bool accepts). `create` does the format's own checks
// (with QEMU's texts), writes the file(s), and on failure leaves none behind that it made.
//
// Threading: creators do blocking I/O on the calling thread; they use no event loop.

enum class CreateOptionType { kString, kBool, kSize, kNumber };

struct CreateOptionDesc {
  std::string_view name;
  CreateOptionType type;
  std::string_view help;
  std::string_view default_value;  // printed in the Formatting line when not given; "" = none
};

// Option name -> value text, as described above.
using CreateOptionValues = std::map<std::string, std::string, std::less<>>;

struct ImageCreator {
  std::string_view format;  // "raw", "qcow2"
  // The format's options followed by the file protocol's, in QEMU's print order.
  std::span<const CreateOptionDesc> options;
  // How many of `options` are the format's own (`-o help` without a file name lists only these).
  size_t format_option_count;
  bool supports_backing;  // takes backing_file/backing_fmt (-b/-F)
  Result<void> (*create)(const std::string& filename, const CreateOptionValues& values);
};

// The creator for `format`, or nullptr when Strata cannot create images of that format.
const ImageCreator* find_image_creator(std::string_view format);

// QEMU 7.2's boolean spellings for QemuOpts: on/yes/true/y and off/no/false/n.
std::optional<bool> parse_create_bool(std::string_view text);

}  // namespace strata
