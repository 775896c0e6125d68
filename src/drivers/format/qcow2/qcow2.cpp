// qcow2 node state: limits, the header's life (autoclear bits, the dirty and corrupt bits),
// flush and close, permissions, reopen and resize.
#include "qcow2.h"

#include <cerrno>
#include <cstdio>
#include <vector>

#include "strata/child.h"
#include "strata/engine.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::qcow2 {

Qcow2Driver::Qcow2Driver(Node& node, Child& file, Header header, RuntimeOptions options)
    : node_(&node),
      file_(&file),
      header_(std::move(header)),
      options_(options),
      cluster_bits_(header_.cluster_bits),
      sc_bits_(header_.extended_l2() ? header_.cluster_bits - 5 : header_.cluster_bits),
      l2_bits_(header_.cluster_bits - (header_.extended_l2() ? 4 : 3)),
      l2_step_(header_.extended_l2() ? 2 : 1),
      extended_(header_.extended_l2()),
      l2_cache_("L2 table", static_cast<uint32_t>(header_.cluster_size()), 16),
      refblock_cache_("refcount block", static_cast<uint32_t>(header_.cluster_size()), 4),
      lock_(node.loop()) {
  l2_cache_.set_file(file_);
  refblock_cache_.set_file(file_);
}

// A cancelled timer still calls its handler (with operation_aborted) after the driver is gone;
// the handler returns before touching it.
Qcow2Driver::~Qcow2Driver() {
  if (clean_timer_) clean_timer_->cancel();
}

void Qcow2Driver::arm_cache_cleaner() {
  if (options_.cache_clean_interval == 0) {
    if (clean_timer_) clean_timer_->cancel();
    return;
  }
  if (!clean_timer_) clean_timer_ = std::make_unique<asio::steady_timer>(node_->loop().context());
  clean_timer_->expires_after(std::chrono::seconds(options_.cache_clean_interval));
  clean_timer_->async_wait([this](const asio::error_code& ec) {
    if (ec) return;
    // A metadata operation in progress may hold tables; try again next round.
    if (!lock_.locked()) {
      l2_cache_.drop_unused();
      refblock_cache_.drop_unused();
    }
    arm_cache_cleaner();
  });
}

NodeLimits Qcow2Driver::limits() const {
  NodeLimits l;
  l.request_alignment = 1;
  l.memory_alignment = file_->node().limits().memory_alignment;
  l.supports_write_zeroes = header_.version >= 3 || backing() == nullptr;
  l.supports_zero_unmap = l.supports_write_zeroes;
  l.pwrite_zeroes_alignment = static_cast<uint32_t>(subcluster_size());
  l.supports_discard = true;
  l.pdiscard_alignment = static_cast<uint32_t>(cluster_size());
  l.supports_compressed_writes = data_file_ == nullptr;
  l.compressed_write_alignment = static_cast<uint32_t>(cluster_size());
  return l;
}

Error Qcow2Driver::corrupt_error() const {
  return fail(EIO, "qcow2: Image '{}' is corrupt; writes are refused until it is repaired",
              node_->name());
}

// QEMU's qcow2_signal_corruption: the image is marked corrupt on disk (when it can be written)
// and refuses writes from now on. The caller fails its request with the returned error.
Result<void> Qcow2Driver::signal_corruption(std::string what) {
  if (!corrupt_) {
    std::fprintf(stderr,
                 "qcow2: Marking image as corrupt: %s; further corruption events will "
                 "be suppressed\n",
                 what.c_str());
  }
  const bool first = !corrupt_;
  corrupt_ = true;
  header_.incompatible_features |= incompat::kCorrupt;
  // Writes stop now; the bit goes to disk at once where the node may write (after whatever
  // holds the metadata lock, so never in the middle of another header update).
  if (first && node_->access().storage_read_write) spawn(persist_corrupt_bit());
  return fail(EIO, "qcow2: {}", what);
}

// close() takes the metadata lock too, so the driver outlives this task.
Task<void> Qcow2Driver::persist_corrupt_bit() {
  CoMutex::Guard guard = co_await lock_.lock();
  auto header = write_header();
  auto written = co_await header;
  if (written) {
    auto sync = file_->flush();
    written = co_await sync;
  }
  if (!written) {
    std::fprintf(stderr, "qcow2: could not mark image '%s' corrupt: %s\n", node_->name().c_str(),
                 written.error().message().c_str());
  }
}

Task<Result<void>> Qcow2Driver::write_header() {
  auto encoded = encode_header(header_);
  if (!encoded) co_return encoded.error();
  std::vector<uint8_t> bytes = std::move(*encoded);
  // The header is rewritten in place, never past what the first cluster holds.
  bytes.resize(std::min<uint64_t>(cluster_size(), std::max<uint64_t>(bytes.size(), 512)), 0);
  auto write = file_->write(0, bytes.size(), IoVec(bytes.data(), bytes.size()));
  auto w = co_await write;
  if (!w) co_return w.error().prefixed("Could not write the qcow2 header");
  co_return Result<void>{};
}

// QEMU's qcow2_change_backing_file: the name and format go into the header, which must still
// fit in the first cluster. A raw external data file holds the whole guest content, so it cannot
// sit over a backing file.
Task<Result<void>> Qcow2Driver::change_backing_file(std::string backing_file,
                                                    std::string backing_format) {
  if (!backing_file.empty() && (header_.autoclear_features & autoclear::kDataFileRaw) != 0) {
    co_return fail(EINVAL, "Cannot give a backing file to an image with a raw external data file");
  }
  CoMutex::Guard guard = co_await lock_.lock();
  // What the image holds reaches the disk before the header that changes how it reads: a
  // stream drops the backing file only once the copied data is safe (QEMU does not order these).
  auto wb = write_back_metadata();
  auto written_back = co_await wb;
  if (!written_back)
    co_return written_back.error().prefixed("Could not update the backing file name");
  if (data_file_ != nullptr) {
    auto data_sync = data_file_->flush();
    auto data_synced = co_await data_sync;
    if (!data_synced)
      co_return data_synced.error().prefixed("Could not update the backing file name");
  }
  auto before = file_->flush();
  auto synced = co_await before;
  if (!synced) co_return synced.error().prefixed("Could not update the backing file name");
  Header old = header_;
  header_.backing_file = std::move(backing_file);
  if (header_.backing_file.empty() || backing_format.empty()) {
    header_.backing_format.reset();
  } else {
    header_.backing_format = std::move(backing_format);
  }
  auto write = write_header();
  auto written = co_await write;
  if (written) {
    auto sync = file_->flush();
    written = co_await sync;
  }
  if (!written) {
    header_ = std::move(old);
    co_return written.error().prefixed("Could not update the backing file name");
  }
  co_return Result<void>{};
}

// QEMU clears unknown autoclear bits and the bitmaps bit on the first write: Strata does not
// keep bitmaps consistent, so a reader must not trust them afterwards. With lazy refcounts the
// dirty bit goes on before the first write whose refcounts may not reach the disk.
Task<Result<void>> Qcow2Driver::begin_writing() {
  if (needs_repair_) {
    auto repair = repair_dirty();
    auto repaired = co_await repair;
    if (!repaired) co_return repaired.error().prefixed("Could not repair dirty image");
  }
  began_writing_ = true;
  bool changed = false;
  const uint64_t keep = autoclear::kDataFileRaw;
  if ((header_.autoclear_features & ~keep) != 0) {
    header_.autoclear_features &= keep;
    changed = true;
  }
  if (lazy_refcounts_ && (header_.incompatible_features & incompat::kDirty) == 0) {
    header_.incompatible_features |= incompat::kDirty;
    changed = true;
  }
  if (lazy_refcounts_ && (header_.compatible_features & compat::kLazyRefcounts) == 0) {
    header_.compatible_features |= compat::kLazyRefcounts;
    changed = true;
  }
  if (!changed || header_.version < 3) co_return Result<void>{};
  auto write = write_header();
  auto w = co_await write;
  if (!w) {
    began_writing_ = false;
    co_return w;
  }
  auto sync = file_->flush();
  co_return co_await sync;
}

Task<Result<void>> Qcow2Driver::write_back_metadata() {
  auto l2 = l2_cache_.write_back();
  auto r = co_await l2;
  if (!r) co_return r;
  auto rc = refblock_cache_.write_back();
  auto r2 = co_await rc;
  if (!r2) co_return r2;
  if (corrupt_ && node_->access().storage_read_write) {
    auto header = write_header();
    auto h = co_await header;
    if (!h) co_return h;
  }
  co_return Result<void>{};
}

// Everything on disk, then the dirty bit off (QEMU's qcow2_mark_clean).
Task<Result<void>> Qcow2Driver::mark_clean() {
  auto wb = write_back_metadata();
  auto w = co_await wb;
  if (!w) co_return w;
  if ((header_.incompatible_features & incompat::kDirty) == 0) co_return Result<void>{};
  auto sync = file_->flush();
  auto s = co_await sync;
  if (!s) co_return s;
  header_.incompatible_features &= ~incompat::kDirty;
  auto header = write_header();
  auto h = co_await header;
  if (!h) co_return h;
  auto sync2 = file_->flush();
  co_return co_await sync2;
}

Task<Result<void>> Qcow2Driver::flush() {
  CoMutex::Guard guard = co_await lock_.lock();
  auto wb = write_back_metadata();
  co_return co_await wb;
}

Task<void> Qcow2Driver::close() {
  closing_ = true;
  CoMutex::Guard guard = co_await lock_.lock();
  if (!began_writing_) co_return;
  auto clean = mark_clean();
  auto r = co_await clean;
  if (!r) {
    std::fprintf(stderr, "qcow2: could not write metadata of node '%s' on close: %s\n",
                 node_->name().c_str(), r.error().message().c_str());
  }
}

// The metadata child needs WRITE while the node may write; with auto-read-only (Strata's lazy
// rule) only while a parent writes or metadata is still to be written.
ChildPerms Qcow2Driver::child_perms(const Child& child, ChildRole role, Perm parent_perm,
                                    Perm parent_shared) const {
  ChildPerms p = Driver::child_perms(child, role, parent_perm, parent_shared);
  const bool writable = !node_->is_read_only();
  if (writable && has_role(role, ChildRole::kMetadata) && began_writing_) {
    p.perm |= Perm::kWrite | Perm::kResize;
  }
  return p;
}

void Qcow2Driver::set_perm(Perm perm, Perm) {
  const NodeOptions& o = node_->options();
  if (o.auto_read_only && !o.read_only && began_writing_ && !releasing_ &&
      !has_any(perm, kWritePerms)) {
    releasing_ = true;
    spawn(release_write_access());
  }
}

// Runs detached; close() takes the metadata lock too, so the driver outlives it.
Task<void> Qcow2Driver::release_write_access() {
  CoMutex::Guard guard = co_await lock_.lock();
  releasing_ = false;
  // A writer may have come back meanwhile, or the node be going away (close writes back itself).
  if (closing_ || !began_writing_ || has_any(node_->cumulative_perm(), kWritePerms)) co_return;
  auto clean = mark_clean();
  auto cleaned = co_await clean;
  if (!cleaned) {
    std::fprintf(stderr, "qcow2: node '%s' keeps write access: %s\n", node_->name().c_str(),
                 cleaned.error().message().c_str());
    co_return;
  }
  began_writing_ = false;
  auto refreshed = node_->engine().refresh_perms(*node_);
  if (!refreshed) {
    std::fprintf(stderr, "qcow2: node '%s' could not give up write access: %s\n",
                 node_->name().c_str(), refreshed.error().message().c_str());
  }
}

namespace {
constexpr std::string_view kMutable[] = {
    "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
    "cache-size",     "l2-cache-size",        "refcount-cache-size",   "cache-clean-interval",
};
}  // namespace

std::span<const std::string_view> Qcow2Driver::mutable_options() const { return kMutable; }

Result<void> Qcow2Driver::reopen_prepare(OptionReader& options, const NodeOptions& new_generic) {
  auto parsed = parse_runtime_options(options);
  if (!parsed) return parsed.error();
  RuntimeOptions o = *parsed;
  o.snapshot = options_.snapshot;  // immutable: the core has checked it is unchanged
  if (o.lazy_refcounts.value_or(false) && header_.version < 3) {
    return fail(EINVAL,
                "Lazy refcounts require a qcow2 image with at least qemu 1.1 "
                "compatibility level");
  }
  if (!new_generic.read_only && corrupt_) {
    return fail(EACCES, "qcow2: Image is corrupt; cannot be opened read/write");
  }
  // Going read-only with metadata still in the caches would lose it: the core flushed the node
  // before the reopen, so the caches are clean here.
  staged_options_ = o;
  return {};
}

void Qcow2Driver::reopen_commit() {
  if (!staged_options_) return;
  options_ = *staged_options_;
  staged_options_.reset();
  if (options_.lazy_refcounts) lazy_refcounts_ = *options_.lazy_refcounts;
  l2_cache_.set_capacity(default_l2_tables(header_, options_));
  refblock_cache_.set_capacity(default_refcount_blocks(header_, options_));
  if (node_->is_read_only()) began_writing_ = false;
  arm_cache_cleaner();
}

void Qcow2Driver::reopen_abort() { staged_options_.reset(); }

// QEMU's preallocate_co for a resize: clusters for the new guest range [from, to) are allocated
// and linked (from fresh space past the end of the file, which reads as zeroes); the file grows
// over each run of them with `mode` (falloc, full; metadata only extends it).
Task<Result<void>> Qcow2Driver::preallocate(uint64_t from, uint64_t to, PreallocMode mode) {
  const uint64_t cs = cluster_size();
  if (data_file_ == nullptr) {
    free_cluster_index_ = std::max(free_cluster_index_, (file_->size() + cs - 1) / cs);
  }
  uint64_t first = from / cs;
  {
    auto get = get_l2(first * cs, false);
    auto table = co_await get;
    if (!table) co_return table.error();
    if (*table && entry_offset(l2_entry_at(*table, l2_index(first * cs))) != 0) ++first;
  }
  const uint64_t end = (to + cs - 1) / cs;
  const uint64_t per_table = uint64_t{1} << l2_bits_;
  Child& data = data_child();
  const PreallocMode file_mode = mode == PreallocMode::kMetadata ? PreallocMode::kOff : mode;
  for (uint64_t c = first; c < end;) {
    const uint64_t want = std::min(end - c, per_table - c % per_table);
    // The L2 table first, so the data clusters end the file and growing it preallocates them.
    {
      auto get = get_l2(c * cs, true);
      auto table = co_await get;
      if (!table) co_return table.error();
    }
    WritePlan plan;
    plan.first_cluster = c;
    plan.count = want;
    if (data_file_ != nullptr) {
      plan.host = c * cs;
    } else {
      uint64_t got = 0;
      auto alloc = alloc_clusters(want, &got);
      auto host = co_await alloc;
      if (!host) co_return host.error();
      plan.host = *host;
      plan.count = got;
    }
    plan.region_start = c * cs;
    plan.region_end = (c + plan.count) * cs;
    const uint64_t chunk_end = plan.host + plan.count * cs;
    if (chunk_end > data.size()) {
      auto grow = data.truncate(chunk_end, false, file_mode);
      auto grown = co_await grow;
      if (!grown) co_return grown.error().prefixed("Could not preallocate the image file");
    }
    auto linking = link(plan);
    auto linked = co_await linking;
    if (!linked) co_return linked;
    c += plan.count;
  }
  auto wb = write_back_metadata();
  co_return co_await wb;
}

Task<Result<void>> Qcow2Driver::truncate(uint64_t size, bool exact, PreallocMode prealloc) {
  (void)exact;
  CoMutex::Guard guard = co_await lock_.lock();
  if (corrupt_) co_return corrupt_error();
  if (prealloc != PreallocMode::kOff && size < header_.size) {
    co_return fail(EINVAL, "Preallocation can't be used for shrinking an image");
  }
  if (header_.nb_snapshots != 0) {
    co_return fail(ENOTSUP, "Can't resize an image which has snapshots");
  }
  if (!began_writing_) {
    auto begin = begin_writing();
    auto begun = co_await begin;
    if (!begun) co_return begun;
  }
  const uint64_t cs = cluster_size();
  if (size < header_.size) {
    // Whole clusters past the new end go (as QEMU does; the L1 table keeps its size).
    const uint64_t from = (size + cs - 1) / cs * cs;
    const uint64_t to = (header_.size + cs - 1) / cs * cs;
    if (to > from) {
      auto discard = discard_clusters(from, to - from, true);
      auto discarded = co_await discard;
      if (!discarded) co_return discarded;
    }
    auto wb = write_back_metadata();
    auto written = co_await wb;
    if (!written) co_return written;
  }
  const uint64_t old_size = header_.size;
  const uint64_t per_table = uint64_t{1} << l2_bits_;
  const uint64_t l1_needed = (size + cs * per_table - 1) / (cs * per_table);
  auto grow = grow_l1(l1_needed);
  auto grown = co_await grow;
  if (!grown) co_return grown;
  if (prealloc != PreallocMode::kOff && size > old_size) {
    auto pre = preallocate(old_size, size, prealloc);
    auto done = co_await pre;
    if (!done) co_return done;
  }
  uint8_t field[8];
  store_be64(field, size);
  auto write = file_->write(24, 8, IoVec(field, 8));
  auto w = co_await write;
  if (!w) co_return w.error().prefixed("Could not update the image size");
  auto sync = file_->flush();
  auto s = co_await sync;
  if (!s) co_return s;
  header_.size = size;
  co_return Result<void>{};
}

}  // namespace strata::qcow2
