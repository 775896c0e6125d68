// qcow2 refcounts and cluster allocation.
//
// The refcount table lives in memory (reftable_); refcount blocks go through refblock_cache_.
// The allocator scans for free clusters from free_cluster_index_, which moves past every range it
// hands out (so a refcount block allocated while that range is being counted never lands inside
// it) and back when a cluster is freed. Clusters past the refcount table's coverage are free.
#include <algorithm>
#include <cerrno>

#include "qcow2.h"
#include "refcount.h"
#include "strata/child.h"
#include "strata/node.h"

namespace strata::qcow2 {
namespace {

uint64_t div_round_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

}  // namespace

Task<Result<TableRef>> Qcow2Driver::refcount_block_for(uint64_t cluster_index, bool allocate) {
  const uint64_t per_block = refcounts_per_block(cluster_bits_, header_.refcount_order);
  const uint64_t rt_index = cluster_index / per_block;
  if (rt_index >= reftable_.size()) {
    if (!allocate) co_return TableRef();
    auto grow = grow_refcount_table(cluster_index + 1);
    auto grown = co_await grow;
    if (!grown) co_return grown.error();
  }
  const uint64_t block_offset = reftable_[rt_index] & kRefcountTableOffsetMask;
  if (block_offset != 0) {
    if ((block_offset & (cluster_size() - 1)) != 0) {
      auto err = signal_corruption(fmt::format("Refblock offset {} unaligned (reftable index: {})",
                                               c_hex(block_offset), c_hex(rt_index)));
      co_return err.error();
    }
    auto get = refblock_cache_.get(block_offset);
    co_return co_await get;
  }
  if (!allocate) co_return TableRef();

  // A new refcount block. Its own cluster is the first free one after everything handed out so
  // far; if the new block covers that cluster it counts itself.
  uint64_t candidate = free_cluster_index_;
  for (;; ++candidate) {
    auto rc = refcount(candidate);
    auto count = co_await rc;
    if (!count) co_return count.error();
    if (*count == 0) break;
  }
  free_cluster_index_ = candidate + 1;
  high_water_ = std::max(high_water_, candidate + 1);
  const uint64_t new_offset = candidate << cluster_bits_;
  if (candidate / per_block != rt_index) {
    auto update = update_refcounts(new_offset, cluster_size(), 1, DiscardType::kNever);
    auto updated = co_await update;
    if (!updated) co_return updated.error();
  }
  auto empty = refblock_cache_.get_empty(new_offset);
  auto block = co_await empty;
  if (!block) co_return block.error();
  if (candidate / per_block == rt_index) {
    refcount_set({block->data(), cluster_size()}, candidate % per_block, header_.refcount_order, 1);
  }
  refblock_cache_.mark_dirty(*block);
  // The block must be on disk before the table entry that points to it.
  auto wb = refblock_cache_.write_back();
  auto written = co_await wb;
  if (!written) co_return written.error();
  auto sync = file_->flush();
  auto synced = co_await sync;
  if (!synced) co_return synced.error();
  uint8_t entry[8];
  store_be64(entry, new_offset);
  auto write = file_->write(header_.refcount_table_offset + rt_index * 8, 8, IoVec(entry, 8));
  auto w = co_await write;
  if (!w) co_return w.error().prefixed("Could not update the refcount table");
  reftable_[rt_index] = new_offset;
  co_return std::move(*block);
}

Task<Result<uint64_t>> Qcow2Driver::refcount(uint64_t cluster_index) {
  auto get = refcount_block_for(cluster_index, false);
  auto block = co_await get;
  if (!block) co_return block.error();
  if (!*block) co_return uint64_t{0};
  const uint64_t per_block = refcounts_per_block(cluster_bits_, header_.refcount_order);
  co_return refcount_get({block->data(), cluster_size()}, cluster_index % per_block,
                         header_.refcount_order);
}

Task<Result<void>> Qcow2Driver::update_refcounts(uint64_t offset, uint64_t length, int64_t addend,
                                                 DiscardType discard) {
  if (length == 0) co_return Result<void>{};
  if (addend < 0) {
    // A cluster may be reused only once the entry that referenced it is gone on disk.
    auto dep = refblock_cache_.set_dependency(&l2_cache_);
    auto d = co_await dep;
    if (!d) co_return d;
  }
  const uint64_t per_block = refcounts_per_block(cluster_bits_, header_.refcount_order);
  const uint64_t max = refcount_max(header_.refcount_order);
  const uint64_t first = offset >> cluster_bits_;
  const uint64_t last = (offset + length - 1) >> cluster_bits_;
  for (uint64_t c = first; c <= last; ++c) {
    auto get = refcount_block_for(c, addend > 0);
    auto block = co_await get;
    if (!block) co_return block.error();
    if (!*block) {
      auto err = signal_corruption(
          fmt::format("Freeing cluster {:#x} that has no refcount block", c << cluster_bits_));
      co_return err;
    }
    std::span<uint8_t> bytes{block->data(), cluster_size()};
    const uint64_t old = refcount_get(bytes, c % per_block, header_.refcount_order);
    uint64_t now = 0;
    if (addend < 0) {
      const uint64_t dec = static_cast<uint64_t>(-addend);
      if (old < dec) {
        auto err = signal_corruption(
            fmt::format("Refcount of cluster {:#x} would drop below zero", c << cluster_bits_));
        co_return err;
      }
      now = old - dec;
    } else {
      const uint64_t inc = static_cast<uint64_t>(addend);
      if (max - old < inc) {
        co_return fail(ERANGE, "Refcount of cluster {:#x} would exceed the maximum ({})",
                       c << cluster_bits_, max);
      }
      now = old + inc;
    }
    refcount_set(bytes, c % per_block, header_.refcount_order, now);
    refblock_cache_.mark_dirty(*block);
    if (now == 0) {
      free_cluster_index_ = std::min(free_cluster_index_, c);
      if (free_byte_offset_ != 0 && (free_byte_offset_ >> cluster_bits_) == c) {
        free_byte_offset_ = 0;
      }
      l2_cache_.discard(c << cluster_bits_);
      refblock_cache_.discard(c << cluster_bits_);
      bool pass = (discard == DiscardType::kRequest && options_.pass_discard_request) ||
                  (discard == DiscardType::kSnapshot && options_.pass_discard_snapshot) ||
                  (discard == DiscardType::kOther && options_.pass_discard_other);
      if (pass) {
        // Advisory: a file that cannot discard just keeps the bytes.
        auto d = file_->discard(c << cluster_bits_, cluster_size());
        auto discarded = co_await d;
        (void)discarded;
      }
    }
  }
  co_return Result<void>{};
}

Task<Result<uint64_t>> Qcow2Driver::alloc_clusters(uint64_t count, uint64_t* got, bool all) {
  uint64_t start = free_cluster_index_;
  uint64_t run = 0;
  while (run < count) {
    auto rc = refcount(start + run);
    auto value = co_await rc;
    if (!value) co_return value.error();
    if (*value == 0) {
      ++run;
      continue;
    }
    if (run > 0 && !all) break;  // take the free run found so far
    start += run + 1;
    run = 0;
  }
  const uint64_t host_limit = uint64_t{1} << 56;
  if (((start + run) << cluster_bits_) > host_limit ||
      start + run > (host_limit >> cluster_bits_)) {
    co_return fail(EFBIG, "qcow2: the image file would grow past the largest host offset");
  }
  free_cluster_index_ = start + run;
  high_water_ = std::max(high_water_, start + run);
  auto update =
      update_refcounts(start << cluster_bits_, run << cluster_bits_, 1, DiscardType::kNever);
  auto updated = co_await update;
  if (!updated) {
    free_cluster_index_ = std::min(free_cluster_index_, start);
    co_return updated.error();
  }
  *got = run;
  co_return start << cluster_bits_;
}

Task<Result<uint64_t>> Qcow2Driver::alloc_bytes(uint64_t size) {
  const uint64_t cs = cluster_size();
  uint64_t offset = free_byte_offset_;
  const uint64_t free_in_cluster = (offset & (cs - 1)) == 0 ? 0 : cs - (offset & (cs - 1));
  if (offset != 0 && free_in_cluster >= size) {
    // Fits in the current cluster: one more reference to it (unless the refcount width cannot
    // count that many; then a fresh cluster).
    auto ref = update_refcounts(offset, 1, 1, DiscardType::kNever);
    auto r = co_await ref;
    if (r) {
      free_byte_offset_ = offset + size;
      co_return offset;
    }
    if (r.error().err() != ERANGE) co_return r.error();
    offset = 0;
  }
  uint64_t got = 0;
  auto alloc = alloc_clusters(1, &got, true);
  auto fresh = co_await alloc;
  if (!fresh) co_return fresh.error();
  if (offset != 0 && free_in_cluster > 0 && *fresh == offset + free_in_cluster) {
    // The new cluster follows the current one: the data spans both.
    auto ref = update_refcounts(offset, 1, 1, DiscardType::kNever);
    auto r = co_await ref;
    if (r) {
      free_byte_offset_ = offset + size;
      co_return offset;
    }
    if (r.error().err() != ERANGE) co_return r.error();
  }
  free_byte_offset_ = *fresh + size;
  co_return *fresh;
}

Task<Result<void>> Qcow2Driver::free_entry(uint64_t l2_entry, DiscardType discard) {
  switch (cluster_type(l2_entry, extended_)) {
    case ClusterType::kNormal:
    case ClusterType::kZeroAlloc: {
      if (data_file_ != nullptr) {
        // External data is not refcounted: give the range back to the data file instead.
        co_return Result<void>{};
      }
      auto update = update_refcounts(entry_offset(l2_entry), cluster_size(), -1, discard);
      co_return co_await update;
    }
    case ClusterType::kCompressed: {
      CompressedExtent ext = decode_compressed(l2_entry, cluster_bits_);
      // Every cluster the compressed bytes touch holds one reference for this entry.
      const uint64_t first = ext.host_offset & ~(cluster_size() - 1);
      const uint64_t end = ext.host_offset + ext.size;
      auto update = update_refcounts(first, end - first, -1, discard);
      co_return co_await update;
    }
    case ClusterType::kUnallocated:
    case ClusterType::kZeroPlain:
      co_return Result<void>{};
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::grow_refcount_table(uint64_t min_clusters) {
  const uint64_t cs = cluster_size();
  const uint64_t per_block = refcounts_per_block(cluster_bits_, header_.refcount_order);
  const uint64_t old_entries = reftable_.size();
  const uint64_t old_cover = old_entries * per_block;
  const uint64_t file_clusters = div_round_up(file_->size(), cs);
  // The new structures go past everything the old table covers and everything in use, so all
  // of their clusters are counted by blocks that are new too.
  const uint64_t area_start = std::max({old_cover, file_clusters, high_water_});
  const uint64_t entries_per_cluster = cs / 8;

  uint64_t table_entries =
      std::max<uint64_t>(div_round_up(min_clusters, per_block), old_entries + old_entries / 2 + 1);
  uint64_t table_clusters = 0;
  uint64_t nblocks = 0;
  uint64_t area_end = area_start;
  for (int i = 0; i < 16; ++i) {
    table_clusters = div_round_up(table_entries, entries_per_cluster);
    area_end = area_start + nblocks + table_clusters;
    const uint64_t first_block = area_start / per_block;
    const uint64_t blocks_needed = (area_end - 1) / per_block - first_block + 1;
    const uint64_t entries_needed =
        std::max((area_end - 1) / per_block + 1, div_round_up(min_clusters, per_block));
    if (blocks_needed == nblocks && entries_needed <= table_entries) break;
    nblocks = blocks_needed;
    table_entries = std::max(table_entries, entries_needed);
  }
  table_entries = table_clusters * entries_per_cluster;
  if (table_entries * 8 > kMaxRefcountTableBytes) {
    co_return fail(EFBIG,
                   "Refcount table too large (the image would exceed {} MiB of refcount "
                   "table)",
                   kMaxRefcountTableBytes >> 20);
  }

  // Write the new blocks: each counts the new clusters in its range.
  std::vector<uint64_t> table(table_entries, 0);
  std::copy(reftable_.begin(), reftable_.end(), table.begin());
  std::vector<uint8_t> buf(cs);
  const uint64_t first_block = area_start / per_block;
  for (uint64_t j = 0; j < nblocks; ++j) {
    std::fill(buf.begin(), buf.end(), 0);
    const uint64_t block_index = first_block + j;
    const uint64_t lo = std::max(area_start, block_index * per_block);
    const uint64_t hi = std::min(area_end, (block_index + 1) * per_block);
    for (uint64_t c = lo; c < hi; ++c) {
      refcount_set(buf, c % per_block, header_.refcount_order, 1);
    }
    const uint64_t offset = (area_start + j) * cs;
    auto write = file_->write(offset, cs, IoVec(buf.data(), cs));
    auto w = co_await write;
    if (!w) co_return w.error().prefixed("Could not write a new refcount block");
    table[block_index] = offset;
  }
  std::vector<uint8_t> table_bytes(table_clusters * cs);
  for (uint64_t i = 0; i < table_entries; ++i) store_be64(&table_bytes[i * 8], table[i]);
  const uint64_t table_offset = (area_start + nblocks) * cs;
  auto write_table =
      file_->write(table_offset, table_bytes.size(), IoVec(table_bytes.data(), table_bytes.size()));
  auto wt = co_await write_table;
  if (!wt) co_return wt.error().prefixed("Could not write the new refcount table");
  // The old blocks may hold dirty counts that the new table shares: write them first.
  auto wb = refblock_cache_.write_back();
  auto written = co_await wb;
  if (!written) co_return written;
  auto sync = file_->flush();
  auto synced = co_await sync;
  if (!synced) co_return synced;

  // Switch the header to the new table in one sector write.
  uint8_t fields[12];
  store_be64(fields, table_offset);
  store_be32(fields + 8, static_cast<uint32_t>(table_clusters));
  auto hw = file_->write(48, sizeof fields, IoVec(fields, sizeof fields));
  auto h = co_await hw;
  if (!h) co_return h.error().prefixed("Could not update the header for the new refcount table");
  auto sync2 = file_->flush();
  auto synced2 = co_await sync2;
  if (!synced2) co_return synced2;

  const uint64_t old_offset = header_.refcount_table_offset;
  const uint64_t old_clusters = header_.refcount_table_clusters;
  header_.refcount_table_offset = table_offset;
  header_.refcount_table_clusters = static_cast<uint32_t>(table_clusters);
  reftable_ = std::move(table);
  high_water_ = std::max(high_water_, area_end);
  if (old_clusters != 0) {
    auto free_old = update_refcounts(old_offset, old_clusters * cs, -1, DiscardType::kOther);
    auto freed = co_await free_old;
    if (!freed) co_return freed;
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
