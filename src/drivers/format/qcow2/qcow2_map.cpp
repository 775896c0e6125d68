// qcow2 guest-to-host mapping: L1 and L2 lookups, L2 table allocation, and linking the clusters
// of finished allocating writes.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qcow2.h"
#include "strata/child.h"
#include "strata/node.h"

namespace strata::qcow2 {

void Qcow2Driver::set_l2(const TableRef& t, uint64_t i, uint64_t entry, uint64_t bitmap) const {
  t.set_entry(i * l2_step_, entry);
  if (extended_) t.set_entry(i * l2_step_ + 1, bitmap);
}

SubclusterType Qcow2Driver::classify(uint64_t entry, uint64_t bitmap, unsigned sc) const {
  // Offset 0 is a valid data-file offset: there COPIED tells a normal cluster from an
  // unallocated one (every cluster of an external data file has refcount 1).
  if (data_file_ != nullptr && (entry & kOflagCopied) != 0 && entry_offset(entry) == 0 &&
      (entry & kOflagCompressed) == 0) {
    if (!extended_)
      return (entry & kOflagZero) != 0 ? SubclusterType::kZeroAlloc : SubclusterType::kNormal;
    entry |= uint64_t{1} << 9;  // classify as allocated; the offset is not used here
  }
  return subcluster_type(entry, bitmap, sc, extended_);
}

Result<void> Qcow2Driver::check_l2_entry(uint64_t entry, uint64_t l2_offset, uint64_t index) {
  const ClusterType type = cluster_type(entry, extended_);
  if (type == ClusterType::kNormal || type == ClusterType::kZeroAlloc) {
    if ((entry_offset(entry) & (cluster_size() - 1)) != 0) {
      return signal_corruption(
          fmt::format("Cluster allocation offset {} unaligned (L2 offset: {}, L2 index: {})",
                      c_hex(entry_offset(entry)), c_hex(l2_offset), c_hex(index)));
    }
  }
  if (type == ClusterType::kCompressed && data_file_ != nullptr) {
    return signal_corruption(
        fmt::format("Compressed cluster entry found in image with external data file (L2 "
                    "offset: {}, L2 index: {})",
                    c_hex(l2_offset), c_hex(index)));
  }
  return {};
}

Task<Result<TableRef>> Qcow2Driver::get_l2(uint64_t offset, bool allocate) {
  const uint64_t i1 = l1_index(offset);
  if (i1 >= l1_.size()) {
    if (!allocate) co_return TableRef();
    co_return fail(EIO, "qcow2: offset {} is past the L1 table ({} entries)", offset, l1_.size());
  }
  const uint64_t l1_entry = l1_[i1];
  const uint64_t old_offset = entry_offset(l1_entry);
  if (old_offset != 0 && (old_offset & (cluster_size() - 1)) != 0) {
    auto err = signal_corruption(
        fmt::format("L2 table offset {} unaligned (L1 index: {})", c_hex(old_offset), c_hex(i1)));
    co_return err.error();
  }
  if (old_offset != 0 && (!allocate || (l1_entry & kOflagCopied) != 0)) {
    auto get = l2_cache_.get(old_offset);
    co_return co_await get;
  }
  if (!allocate) co_return TableRef();

  // A new table, or a private copy of a shared one (internal snapshots share tables).
  uint64_t got = 0;
  auto alloc = alloc_clusters(1, &got, true);
  auto new_offset = co_await alloc;
  if (!new_offset) co_return new_offset.error();
  auto empty = l2_cache_.get_empty(*new_offset);
  auto table = co_await empty;
  if (!table) co_return table.error();
  if (old_offset != 0) {
    auto get_old = l2_cache_.get(old_offset);
    auto old_table = co_await get_old;
    if (!old_table) co_return old_table.error();
    std::memcpy(table->data(), old_table->data(), cluster_size());
  }
  l2_cache_.mark_dirty(*table);
  // The table (and its refcount) must be on disk before the L1 entry points to it.
  auto dep = l2_cache_.set_dependency(&refblock_cache_);
  auto d = co_await dep;
  if (!d) co_return d.error();
  auto wb = l2_cache_.write_back();
  auto written = co_await wb;
  if (!written) co_return written.error();
  auto sync = file_->flush();
  auto synced = co_await sync;
  if (!synced) co_return synced.error();
  l1_[i1] = *new_offset | kOflagCopied;
  auto write = write_l1_entry(i1);
  auto w = co_await write;
  if (!w) {
    l1_[i1] = l1_entry;
    co_return w.error();
  }
  if (old_offset != 0) {
    auto release = update_refcounts(old_offset, cluster_size(), -1, DiscardType::kOther);
    auto released = co_await release;
    if (!released) co_return released.error();
  }
  co_return std::move(*table);
}

Task<Result<void>> Qcow2Driver::write_l1_entry(uint64_t index) {
  uint8_t bytes[8];
  store_be64(bytes, l1_[index]);
  auto write = file_->write(header_.l1_table_offset + index * 8, 8, IoVec(bytes, 8));
  auto w = co_await write;
  if (!w) co_return w.error().prefixed("Could not write an L1 table entry");
  co_return Result<void>{};
}

Task<Result<Extent>> Qcow2Driver::lookup(uint64_t offset, uint64_t bytes) {
  const uint64_t l2_span = uint64_t{1} << (cluster_bits_ + l2_bits_);
  const uint64_t table_end = (offset & ~(l2_span - 1)) + l2_span;
  const uint64_t limit = std::min(bytes, table_end - offset);
  auto get = get_l2(offset, false);
  auto table = co_await get;
  if (!table) co_return table.error();
  if (!*table) co_return Extent{SubclusterType::kUnallocatedPlain, limit, 0, 0};

  const uint64_t cs = cluster_size();
  const uint64_t scs = subcluster_size();
  const unsigned per_cluster = extended_ ? kSubclustersPerCluster : 1;
  uint64_t i = l2_index(offset);
  const uint64_t entry = l2_entry_at(*table, i);
  const uint64_t bitmap = l2_bitmap_at(*table, i);
  auto valid = check_l2_entry(entry, table->offset(), i);
  if (!valid) co_return valid.error();
  const uint64_t in_cluster = offset_in_cluster(offset);
  const unsigned sc = static_cast<unsigned>(in_cluster >> sc_bits_);
  const SubclusterType type = classify(entry, bitmap, sc);
  if (type == SubclusterType::kInvalid) {
    auto err =
        signal_corruption(fmt::format("Invalid cluster entry found (L2 offset: {}, L2 index: {})",
                                      c_hex(table->offset()), c_hex(i)));
    co_return err.error();
  }
  Extent e;
  e.type = type;
  if (type == SubclusterType::kCompressed) {
    e.l2_entry = entry;
    e.bytes = std::min(limit, cs - in_cluster);
    co_return e;
  }
  const bool has_host = type == SubclusterType::kNormal || type == SubclusterType::kZeroAlloc ||
                        type == SubclusterType::kUnallocatedAlloc;
  if (has_host) e.host = entry_offset(entry) + in_cluster;

  unsigned cur_sc = sc;
  unsigned run = extended_ ? subcluster_run(entry, bitmap, sc, true) : 1;
  uint64_t covered = (uint64_t{sc} + run) * scs - in_cluster;
  uint64_t expected_host = entry_offset(entry) + cs;
  // Later clusters of the same table continue the run while they say the same from their first
  // subcluster (and, for data, sit right after the previous one in the file).
  while (covered < limit && cur_sc + run == per_cluster) {
    cur_sc = 0;
    ++i;
    const uint64_t next = l2_entry_at(*table, i);
    const uint64_t next_bitmap = l2_bitmap_at(*table, i);
    if (classify(next, next_bitmap, 0) != type) break;
    if (has_host) {
      if (entry_offset(next) != expected_host) break;
      auto ok = check_l2_entry(next, table->offset(), i);
      if (!ok) co_return ok.error();
    }
    expected_host += cs;
    run = extended_ ? subcluster_run(next, next_bitmap, 0, true) : 1;
    covered += uint64_t{run} * scs;
  }
  e.bytes = std::min(covered, limit);
  co_return e;
}

Task<Result<void>> Qcow2Driver::link(const WritePlan& plan) {
  if (!lazy_refcounts_) {
    // New clusters' refcounts go to disk before the entries that point to them.
    auto dep = l2_cache_.set_dependency(&refblock_cache_);
    auto d = co_await dep;
    if (!d) co_return d;
  }
  // And their data, too.
  l2_cache_.depends_on_flush();
  const uint64_t cs = cluster_size();
  std::vector<uint64_t> replaced;
  for (uint64_t j = 0; j < plan.count; ++j) {
    const uint64_t guest = (plan.first_cluster + j) << cluster_bits_;
    auto get = get_l2(guest, true);
    auto table = co_await get;
    if (!table) co_return table.error();
    const uint64_t i = l2_index(guest);
    const uint64_t old_entry = l2_entry_at(*table, i);
    const uint64_t old_bitmap = l2_bitmap_at(*table, i);
    const uint64_t host = plan.host + j * cs;
    uint64_t new_entry = host | kOflagCopied;
    uint64_t new_bitmap = 0;
    if (extended_) {
      const uint64_t lo = std::max(plan.region_start, guest) - guest;
      const uint64_t hi = std::min(plan.region_end, guest + cs) - guest;
      const unsigned first_sc = static_cast<unsigned>(lo >> sc_bits_);
      const unsigned end_sc = static_cast<unsigned>((hi + subcluster_size() - 1) >> sc_bits_);
      const uint64_t mask = subcluster_mask(first_sc, end_sc - first_sc);
      new_bitmap = (old_bitmap | mask) & ~(mask << 32);
      if (plan.new_clusters && cluster_type(old_entry, true) != ClusterType::kUnallocated &&
          cluster_type(old_entry, true) != ClusterType::kZeroPlain) {
        new_bitmap = kBitmapAllocMask;  // the whole old cluster was copied
      }
      if (!plan.new_clusters) new_entry = old_entry | kOflagCopied;
    }
    set_l2(*table, i, new_entry, new_bitmap);
    l2_cache_.mark_dirty(*table);
    if (plan.new_clusters && entry_offset(old_entry) != entry_offset(new_entry)) {
      replaced.push_back(old_entry);
    }
  }
  for (uint64_t old : replaced) {
    auto free_old = free_entry(old, DiscardType::kOther);
    auto freed = co_await free_old;
    if (!freed) co_return freed;
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::grow_l1(uint64_t min_size) {
  if (min_size <= l1_.size()) co_return Result<void>{};
  if (min_size * 8 > kMaxL1Bytes) co_return fail(EFBIG, "Active L1 table too large");
  const uint64_t cs = cluster_size();
  const uint64_t bytes = min_size * 8;
  const uint64_t clusters = (bytes + cs - 1) / cs;
  uint64_t got = 0;
  auto alloc = alloc_clusters(clusters, &got, true);
  auto new_offset = co_await alloc;
  if (!new_offset) co_return new_offset.error();
  std::vector<uint8_t> table(clusters * cs, 0);
  for (uint64_t i = 0; i < l1_.size(); ++i) store_be64(&table[i * 8], l1_[i]);
  // Refcounts first, then the table, then the header that points to it.
  auto wb = refblock_cache_.write_back();
  auto written = co_await wb;
  if (!written) co_return written;
  auto write = file_->write(*new_offset, table.size(), IoVec(table.data(), table.size()));
  auto w = co_await write;
  if (!w) co_return w.error().prefixed("Could not write the new L1 table");
  auto sync = file_->flush();
  auto synced = co_await sync;
  if (!synced) co_return synced;
  uint8_t fields[12];
  store_be32(fields, static_cast<uint32_t>(min_size));
  store_be64(fields + 4, *new_offset);
  auto hw = file_->write(36, sizeof fields, IoVec(fields, sizeof fields));
  auto h = co_await hw;
  if (!h) co_return h.error().prefixed("Could not update the header for the new L1 table");
  auto sync2 = file_->flush();
  auto synced2 = co_await sync2;
  if (!synced2) co_return synced2;
  const uint64_t old_offset = header_.l1_table_offset;
  const uint64_t old_bytes = l1_.size() * 8;
  header_.l1_table_offset = *new_offset;
  header_.l1_size = static_cast<uint32_t>(min_size);
  l1_.resize(min_size, 0);
  if (old_bytes != 0) {
    auto release = update_refcounts(old_offset, old_bytes, -1, DiscardType::kOther);
    auto released = co_await release;
    if (!released) co_return released;
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
