// The qcow2 format driver (QEMU's docs/interop/qcow2.rst, versions 2 and 3).
//
// A guest offset maps through the L1 table (in memory) and an L2 table (cached) to a host
// cluster in the image file, or in the external data file. Refcounts (two levels: the refcount
// table in memory, refcount blocks cached) say which host clusters are in use.
//
// Concurrency: one CoMutex (`lock_`) guards all metadata: the header, L1, the refcount table, both
// caches and the allocator. It is never held across guest data I/O. A write to clusters that are
// already allocated and not shared (COPIED) goes straight to the host after a lookup. A write
// that needs new clusters registers an Allocation over its guest clusters, so overlapping
// allocating writes (and zeroing or discarding writes) wait for it, while the data and its
// copy-on-write edges are written without the lock; the L2 entries are linked under the lock
// afterwards.
//
// Crash safety (no fsync on the fast path; the order is kept through the caches):
//   - guest data is written before the L2 entry that points to it: the L2 cache depends on a
//     flush of the file after every allocation;
//   - a new cluster's refcount is written before any L2/L1 entry that points to it: the L2 cache
//     depends on the refcount cache (not with lazy refcounts, where the dirty bit says that
//     refcounts may be stale and an open repairs them);
//   - a freed cluster's refcount drops only after the L2 entry that pointed to it is on disk:
//     the refcount cache depends on the L2 cache.
// A crash therefore leaves at worst leaked clusters.
//
// Threading: the node's event loop thread.
#pragma once

#include <asio/steady_timer.hpp>
#include <coroutine>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache.h"
#include "entries.h"
#include "layout.h"
#include "snapshot.h"
#include "strata/co_mutex.h"
#include "strata/driver.h"
#include "strata/iovec.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {
class Node;
class OpenContext;
}  // namespace strata

namespace strata::qcow2 {

// The runtime options (QEMU's qcow2 open options that Strata implements).
struct RuntimeOptions {
  std::optional<bool> lazy_refcounts;  // unset: as the header says
  bool pass_discard_request = true;
  bool pass_discard_snapshot = true;
  bool pass_discard_other = false;
  std::optional<std::string> snapshot;  // x-snapshot
  std::optional<uint64_t> cache_size;
  std::optional<uint64_t> l2_cache_size;
  std::optional<uint64_t> refcount_cache_size;
  uint64_t cache_clean_interval = 600;  // seconds; 0 = never
};

// Reads the runtime options (at open and at reopen), with the option texts' errors.
Result<RuntimeOptions> parse_runtime_options(OptionReader& r);
struct Header;
// How many tables each cache keeps: QEMU's defaults (an L2 cache mapping the whole disk, at most
// 32 MiB; a refcount cache of 4 clusters or 256 KiB) unless the options say otherwise.
size_t default_l2_tables(const Header& h, const RuntimeOptions& o);
size_t default_refcount_blocks(const Header& h, const RuntimeOptions& o);

// Why clusters are freed: decides whether the freed range is discarded in the file.
enum class DiscardType { kNever, kRequest, kSnapshot, kOther };

// A run of guest bytes that share one meaning (the answer of lookup()).
struct Extent {
  SubclusterType type = SubclusterType::kUnallocatedPlain;
  uint64_t bytes = 0;
  uint64_t host = 0;      // kNormal, kZeroAlloc, kUnallocatedAlloc: host offset of the first byte
  uint64_t l2_entry = 0;  // kCompressed: the descriptor
};

class Qcow2Driver final : public Driver {
 public:
  Qcow2Driver(Node& node, Child& file, Header header, RuntimeOptions options);
  ~Qcow2Driver() override;

  static Task<Result<std::unique_ptr<Driver>>> open(OpenContext& ctx);

  uint64_t length() const override { return header_.size; }
  NodeLimits limits() const override;

  Task<Result<void>> preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwritev(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags flags) override;
  Task<Result<void>> pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) override;
  Task<Result<void>> pdiscard(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> flush() override;
  Task<Result<BlockStatus>> block_status(uint64_t offset, uint64_t bytes) override;
  Task<Result<void>> truncate(uint64_t size, bool exact, PreallocMode prealloc) override;
  Task<void> close() override;

  Task<Result<CheckResult>> check(CheckFix fix) override;             // qcow2_check.cpp
  std::string specific_info_json() const override;                    // qcow2_info.cpp
  ImageFacts image_facts() const override;                            // qcow2_info.cpp
  Task<Result<std::vector<SnapshotInfo>>> list_snapshots() override;  // qcow2_info.cpp
  Task<Result<void>> change_backing_file(std::string backing_file,
                                         std::string backing_format) override;
  Task<Result<void>> make_empty() override;  // qcow2_empty.cpp

  ChildPerms child_perms(const Child& child, ChildRole role, Perm parent_perm,
                         Perm parent_shared) const override;
  void set_perm(Perm perm, Perm shared) override;

  std::span<const std::string_view> mutable_options() const override;
  Result<void> reopen_prepare(OptionReader& options, const NodeOptions& new_generic) override;
  void reopen_commit() override;
  void reopen_abort() override;

  // For strata-img info/check/map and tests.
  const Header& header() const { return header_; }
  bool corrupt() const { return corrupt_; }

 private:
  friend class Qcow2Opener;

  // Guest clusters [first, end) being allocated by a write in flight. Writers that need to
  // change their L2 entries wait for it.
  struct Allocation {
    uint64_t first = 0;
    uint64_t end = 0;
    std::vector<std::coroutine_handle<>> waiters;
  };

  // What an allocating write does: guest bytes [region_start, region_end) (the request plus the
  // copy-on-write edges it needs) go to host offset `host` + (region_start - first cluster's
  // start), then `count` clusters from `first_cluster` are linked. `new_clusters` is false when
  // the host cluster exists and only subclusters of it are being allocated.
  struct WritePlan {
    uint64_t first_cluster = 0;
    uint64_t count = 0;
    uint64_t host = 0;  // host offset of first_cluster
    bool new_clusters = true;
    uint64_t region_start = 0;
    uint64_t region_end = 0;
    bool in_place = false;  // no allocation: write [region_start, region_end) at host directly
  };

  // ---- geometry ----
  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits_; }
  uint64_t subcluster_size() const { return uint64_t{1} << sc_bits_; }
  uint64_t offset_in_cluster(uint64_t offset) const { return offset & (cluster_size() - 1); }
  uint64_t l1_index(uint64_t offset) const { return offset >> (cluster_bits_ + l2_bits_); }
  uint64_t l2_index(uint64_t offset) const {
    return (offset >> cluster_bits_) & ((uint64_t{1} << l2_bits_) - 1);
  }
  uint64_t l2_entry_at(const TableRef& t, uint64_t i) const { return t.entry(i * l2_step_); }
  uint64_t l2_bitmap_at(const TableRef& t, uint64_t i) const {
    return extended_ ? t.entry(i * l2_step_ + 1) : 0;
  }
  void set_l2(const TableRef& t, uint64_t i, uint64_t entry, uint64_t bitmap) const;
  Child& data_child() const { return data_file_ != nullptr ? *data_file_ : *file_; }
  Child* backing() const;

  // ---- metadata (qcow2_map.cpp); REQUIRE lock_ held ----
  Task<Result<Extent>> lookup(uint64_t offset, uint64_t bytes);
  // The L2 table for `offset`; with `allocate`, a missing or shared table is created or copied
  // (and the L1 entry written). Without it, a missing table returns an empty ref.
  Task<Result<TableRef>> get_l2(uint64_t offset, bool allocate);
  SubclusterType classify(uint64_t entry, uint64_t bitmap, unsigned sc) const;
  Result<void> check_l2_entry(uint64_t entry, uint64_t l2_offset, uint64_t index);
  // Links the clusters of a finished allocating write into their L2 tables and frees what they
  // replace.
  Task<Result<void>> link(const WritePlan& plan);

  // ---- refcounts and allocation (qcow2_refcount.cpp); REQUIRE lock_ held ----
  Task<Result<uint64_t>> refcount(uint64_t cluster_index);
  Task<Result<void>> update_refcounts(uint64_t offset, uint64_t length, int64_t addend,
                                      DiscardType discard);
  // Allocates up to `count` contiguous free clusters (at least one) with refcount 1. Returns
  // the host offset; `*got` the number allocated.
  // With `all`, the run is exactly `count` clusters long (tables that must be contiguous).
  Task<Result<uint64_t>> alloc_clusters(uint64_t count, uint64_t* got, bool all = false);
  // Frees whatever an L2 entry referenced (a normal, zero-alloc or compressed cluster).
  Task<Result<void>> free_entry(uint64_t l2_entry, DiscardType discard);
  // Space for `size` bytes of compressed data (QEMU's qcow2_alloc_bytes): packed after the
  // previous compressed cluster when it fits, each host cluster touched gaining one reference.
  Task<Result<uint64_t>> alloc_bytes(uint64_t size);
  Task<Result<void>> grow_refcount_table(uint64_t min_clusters);
  Task<Result<TableRef>> refcount_block_for(uint64_t cluster_index, bool allocate);

  // ---- I/O (qcow2_io.cpp) ----
  Task<Result<void>> read_extent(uint64_t offset, const Extent& e, IoVec iov);
  Task<Result<void>> read_compressed(uint64_t offset, uint64_t l2_entry, IoVec iov);
  Task<Result<void>> read_backing(uint64_t offset, uint64_t bytes, IoVec iov);
  // Reads what the guest sees now (used for copy-on-write).
  Task<Result<void>> read_guest(uint64_t offset, uint64_t bytes, IoVec iov);
  Task<Result<std::optional<WritePlan>>> plan_write(uint64_t offset, uint64_t bytes);
  Task<Result<void>> write_allocating(WritePlan plan, uint64_t offset, IoVec iov);
  Task<Result<void>> write_compressed(uint64_t offset, uint64_t bytes, IoVec iov);
  Task<Result<void>> write_compressed_cluster(uint64_t offset, std::vector<uint8_t> data);
  Task<Result<void>> zero_clusters(uint64_t offset, uint64_t bytes, bool unmap);
  Task<Result<void>> discard_clusters(uint64_t offset, uint64_t bytes, bool full);
  Task<void> wait_for_allocations(uint64_t first_cluster, uint64_t end_cluster);
  Allocation* overlapping_allocation(uint64_t first_cluster, uint64_t end_cluster) const;
  Task<Result<bool>> reads_zero(uint64_t offset, uint64_t bytes);
  Task<Result<bool>> detect_metadata_preallocation();

  // ---- header and state (qcow2.cpp) ----
  // Before the first metadata write: clears autoclear bits Strata does not keep, sets the dirty
  // bit with lazy refcounts.
  Task<Result<void>> begin_writing();
  Task<Result<void>> write_header();
  Task<Result<void>> write_back_metadata();
  Task<Result<void>> mark_clean();
  Result<void> signal_corruption(std::string what);
  Task<void> persist_corrupt_bit();
  // With auto-read-only: once no parent writes, the metadata goes to disk, the image is marked
  // clean and the node gives up write access to its file (which then goes read-only).
  Task<void> release_write_access();
  Error corrupt_error() const;
  Task<Result<void>> grow_l1(uint64_t min_size);
  Task<Result<std::vector<Snapshot>>> read_snapshot_table();  // qcow2_info.cpp
  // x-snapshot: the node shows an internal snapshot (read-only), by id or else by name.
  Task<Result<void>> load_snapshot(std::string id_or_name);
  Task<Result<void>> preallocate(uint64_t from, uint64_t to, PreallocMode mode);
  // Opening a dirty image read-write (lazy refcounts after a crash): rebuilds the refcounts
  // from the mapping, as `check -r all` does (qcow2_check.cpp).
  Task<Result<void>> repair_dirty();
  Task<Result<CheckResult>> check_locked(CheckFix fix);
  Task<Result<void>> check_copied(uint64_t index, uint64_t l2_offset, CheckFix fix,
                                  CheckResult& res);
  struct CheckWalk;
  Task<Result<void>> walk_l1_tables(CheckWalk& w, std::vector<uint64_t> l1, bool active,
                                    std::vector<std::pair<uint64_t, uint64_t>>* l2_refs);
  Task<Result<void>> write_l1_entry(uint64_t index);
  // cache-clean-interval: every interval, tables unused since the last round leave the caches.
  void arm_cache_cleaner();

  Node* node_;
  Child* file_;
  Child* data_file_ = nullptr;
  Header header_;
  RuntimeOptions options_;
  std::optional<RuntimeOptions> staged_options_;

  uint32_t cluster_bits_;
  uint32_t sc_bits_;  // subcluster bits (== cluster_bits_ without extended L2)
  uint32_t l2_bits_;  // log2 of L2 entries per table
  uint32_t l2_step_;  // 64-bit words per L2 entry: 1, or 2 with extended L2
  bool extended_;

  std::vector<uint64_t> l1_;
  std::vector<uint64_t> reftable_;
  MetadataCache l2_cache_;
  MetadataCache refblock_cache_;
  CoMutex lock_;
  uint64_t free_cluster_index_ = 0;
  uint64_t high_water_ = 0;
  uint64_t free_byte_offset_ = 0;  // where the next compressed cluster may go; 0: none  // clusters
                                   // below this may be in use even past the file's end
  std::vector<Allocation*> allocations_;  // in flight

  bool lazy_refcounts_ = false;
  bool began_writing_ = false;  // begin_writing() has run since open or the last mark_clean()
  bool corrupt_ = false;
  // A dirty image opened with auto-read-only: repaired before its first write, when the node
  // has write access to its file.
  bool needs_repair_ = false;
  std::unique_ptr<asio::steady_timer> clean_timer_;
  bool closing_ = false;
  std::optional<bool> metadata_preallocation_;  // detected on the first block status
  bool releasing_ = false;                      // a release_write_access() is pending
};

// A number as C's "%#x" prints it ("0" for zero, "0x1f" otherwise): QEMU's corruption messages
// use that format.
inline std::string c_hex(uint64_t v) { return v == 0 ? std::string("0") : fmt::format("{:#x}", v); }

extern const DriverClass kQcow2Class;

}  // namespace strata::qcow2
