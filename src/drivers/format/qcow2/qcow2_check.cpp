// qcow2 consistency check and repair (QEMU's qcow2_check_refcounts, in outline).
//
// The check rebuilds every host cluster's refcount in memory by walking what references it: the
// header, the snapshot table and each snapshot's L1 and L2 tables, the active L1 and L2 tables
// and the data they map, the refcount table and its blocks. It then compares with the refcounts
// on disk: more on disk is a leak (space wasted), less is corruption (a cluster in use could be
// handed out again). COPIED flags must say "refcount is exactly 1". Repairs set the on-disk
// counts and flags to the computed ones; new refcount blocks a repair needs are placed past the
// end of the image, so they never land on a cluster whose count is still being fixed.
//
// Problems are reported one per line on stderr in qemu-img's words ("Leaked cluster 5
// refcount=1 reference=0", "ERROR cluster 5 refcount=0 reference=1", "Repairing ..."), and
// counted in the CheckResult.
#include <cerrno>
#include <cstdio>
#include <vector>

#include "qcow2.h"
#include "refcount.h"
#include "snapshot.h"
#include "strata/child.h"
#include "strata/node.h"

namespace strata::qcow2 {

struct Qcow2Driver::CheckWalk {
  uint64_t cluster_bits = 16;
  std::vector<uint64_t> refs;  // computed references per host cluster
  CheckResult* result = nullptr;
  uint64_t highest = 0;  // 1 + the highest cluster referenced

  void add(uint64_t offset, uint64_t length) {
    if (length == 0) return;
    const uint64_t first = offset >> cluster_bits;
    const uint64_t last = (offset + length - 1) >> cluster_bits;
    for (uint64_t c = first; c <= last; ++c) {
      if (c >= refs.size()) {
        std::fprintf(stderr,
                     "ERROR: cluster %llu is referenced but lies past the end of the image\n",
                     static_cast<unsigned long long>(c));
        ++result->corruptions;
        continue;
      }
      ++refs[c];
      highest = std::max(highest, c + 1);
    }
  }
};

Task<Result<CheckResult>> Qcow2Driver::check(CheckFix fix) {
  CoMutex::Guard guard = co_await lock_.lock();
  auto run = check_locked(fix);
  co_return co_await run;
}

Task<Result<CheckResult>> Qcow2Driver::check_locked(CheckFix fix) {
  auto wb = write_back_metadata();
  auto written = co_await wb;
  if (!written) co_return written.error();

  CheckResult res;
  const uint64_t cs = cluster_size();
  const uint64_t file_size = file_->size();
  CheckWalk w;
  w.cluster_bits = cluster_bits_;
  w.result = &res;
  w.refs.assign((file_size + cs - 1) / cs, 0);

  // The header cluster, the snapshot table and the snapshots' tables.
  w.add(0, cs);
  std::vector<Snapshot> snapshots;
  if (header_.nb_snapshots != 0) {
    std::vector<uint8_t> table(std::min<uint64_t>(
        file_size - std::min(file_size, header_.snapshots_offset), kMaxSnapshotTableBytes));
    auto read =
        file_->read(header_.snapshots_offset, table.size(), IoVec(table.data(), table.size()));
    auto r = co_await read;
    if (!r) co_return r.error().prefixed("Could not read the snapshot table");
    auto decoded = decode_snapshot_table(table, header_.nb_snapshots, header_.version);
    if (!decoded) {
      std::fprintf(stderr, "ERROR: %s\n", decoded.error().message().c_str());
      ++res.check_errors;
    } else {
      snapshots = std::move(*decoded);
      w.add(header_.snapshots_offset, encode_snapshot_table(snapshots).size());
    }
  }
  for (const Snapshot& s : snapshots) {
    std::vector<uint8_t> bytes(uint64_t{s.l1_size} * 8);
    auto read = file_->read(s.l1_table_offset, bytes.size(), IoVec(bytes.data(), bytes.size()));
    auto r = co_await read;
    if (!r) co_return r.error().prefixed("Could not read a snapshot's L1 table");
    std::vector<uint64_t> l1(s.l1_size);
    for (uint64_t i = 0; i < l1.size(); ++i) l1[i] = load_be64(&bytes[i * 8]);
    w.add(s.l1_table_offset, bytes.size());
    auto walk = walk_l1_tables(w, std::move(l1), false, nullptr);
    auto walked = co_await walk;
    if (!walked) co_return walked.error();
  }

  // The active tables and the data.
  w.add(header_.l1_table_offset, uint64_t{header_.l1_size} * 8);
  std::vector<std::pair<uint64_t, uint64_t>> active_l2;  // (L1 index, L2 offset)
  auto walk = walk_l1_tables(w, l1_, true, &active_l2);
  auto walked = co_await walk;
  if (!walked) co_return walked.error();
  // The refcount structure itself.
  w.add(header_.refcount_table_offset, uint64_t{header_.refcount_table_clusters} * cs);
  for (uint64_t i = 0; i < reftable_.size(); ++i) {
    const uint64_t block = reftable_[i] & kRefcountTableOffsetMask;
    if (block == 0) continue;
    if ((block & (cs - 1)) != 0) {
      std::fprintf(stderr,
                   "ERROR refcount block %llu is not cluster aligned; refcount table "
                   "entry corrupted\n",
                   static_cast<unsigned long long>(i));
      ++res.corruptions;
      continue;
    }
    w.add(block, cs);
  }

  // Compare with what the disk says. Repairs never allocate below the image's end.
  free_cluster_index_ = std::max<uint64_t>(free_cluster_index_, w.refs.size());
  high_water_ = std::max<uint64_t>(high_water_, w.refs.size());
  const size_t clusters = w.refs.size();
  for (uint64_t c = 0; c < clusters; ++c) {
    auto rc = refcount(c);
    auto on_disk = co_await rc;
    if (!on_disk) co_return on_disk.error();
    const uint64_t computed = w.refs[c];
    if (*on_disk == computed) continue;
    const bool leak = *on_disk > computed;
    const bool repair = leak ? fix != CheckFix::kNone : fix == CheckFix::kAll;
    const char* what = repair ? "Repairing" : (leak ? "Leaked" : "ERROR");
    std::fprintf(stderr, "%s cluster %llu refcount=%llu reference=%llu\n", what,
                 static_cast<unsigned long long>(c), static_cast<unsigned long long>(*on_disk),
                 static_cast<unsigned long long>(computed));
    if (!repair) {
      if (leak)
        ++res.leaks;
      else
        ++res.corruptions;
      continue;
    }
    const int64_t delta = static_cast<int64_t>(computed) - static_cast<int64_t>(*on_disk);
    auto update = update_refcounts(c << cluster_bits_, cs, delta, DiscardType::kNever);
    auto updated = co_await update;
    if (!updated) {
      std::fprintf(stderr, "ERROR could not repair cluster %llu: %s\n",
                   static_cast<unsigned long long>(c), updated.error().message().c_str());
      ++res.check_errors;
      continue;
    }
    if (leak)
      ++res.leaks_fixed;
    else
      ++res.corruptions_fixed;
  }

  // COPIED flags (QEMU's check_oflag_copied): on an active L1 entry or a data cluster's L2
  // entry exactly when the cluster's refcount is 1.
  for (auto [index, l2_offset] : active_l2) {
    auto checked = check_copied(index, l2_offset, fix, res);
    auto c = co_await checked;
    if (!c) co_return c.error();
  }

  if (fix != CheckFix::kNone) {
    auto flush = write_back_metadata();
    auto f = co_await flush;
    if (!f) co_return f.error();
  }
  res.image_end_offset = w.highest * cs;
  res.total_clusters = (header_.size + cs - 1) / cs;
  w.result = nullptr;
  co_return res;
}

Task<Result<void>> Qcow2Driver::check_copied(uint64_t index, uint64_t l2_offset, CheckFix fix,
                                             CheckResult& res) {
  auto rc = refcount(l2_offset >> cluster_bits_);
  auto count = co_await rc;
  if (!count) co_return count.error();
  const bool copied = (l1_[index] & kOflagCopied) != 0;
  if (copied != (*count == 1)) {
    const char* what = fix == CheckFix::kAll ? "Repairing" : "ERROR";
    std::fprintf(stderr, "%s OFLAG_COPIED L2 cluster: l1_index=%llu l1_entry=%llx refcount=%llu\n",
                 what, static_cast<unsigned long long>(index),
                 static_cast<unsigned long long>(l1_[index]),
                 static_cast<unsigned long long>(*count));
    if (fix == CheckFix::kAll) {
      l1_[index] = *count == 1 ? (l1_[index] | kOflagCopied) : (l1_[index] & ~kOflagCopied);
      auto write = write_l1_entry(index);
      auto w = co_await write;
      if (!w) co_return w.error();
      ++res.corruptions_fixed;
    } else {
      ++res.corruptions;
    }
  }
  auto get = l2_cache_.get(l2_offset);
  auto table = co_await get;
  if (!table) co_return table.error();
  const uint64_t per_table = uint64_t{1} << l2_bits_;
  for (uint64_t j = 0; j < per_table; ++j) {
    const uint64_t entry = l2_entry_at(*table, j);
    const ClusterType type = cluster_type(entry, extended_, data_file_ != nullptr);
    if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
    uint64_t data_refcount = 1;  // external data clusters always count as one
    if (data_file_ == nullptr) {
      auto drc = refcount(entry_offset(entry) >> cluster_bits_);
      auto value = co_await drc;
      if (!value) co_return value.error();
      data_refcount = *value;
    }
    const bool data_copied = (entry & kOflagCopied) != 0;
    if (data_copied == (data_refcount == 1)) continue;
    const char* what = fix == CheckFix::kAll ? "Repairing" : "ERROR";
    std::fprintf(stderr, "%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu\n", what,
                 static_cast<unsigned long long>(entry),
                 static_cast<unsigned long long>(data_refcount));
    if (fix == CheckFix::kAll) {
      const uint64_t fixed = data_refcount == 1 ? (entry | kOflagCopied) : (entry & ~kOflagCopied);
      set_l2(*table, j, fixed, l2_bitmap_at(*table, j));
      l2_cache_.mark_dirty(*table);
      ++res.corruptions_fixed;
    } else {
      ++res.corruptions;
    }
  }
  co_return Result<void>{};
}

// Walks one L1 table (the active one, or a snapshot's) and the L2 tables and data below it.
// `active` adds the statistics that only describe the active table.
Task<Result<void>> Qcow2Driver::walk_l1_tables(
    CheckWalk& w, std::vector<uint64_t> l1, bool active,
    std::vector<std::pair<uint64_t, uint64_t>>* l2_refs) {
  const uint64_t cs = cluster_size();
  CheckResult& res = *w.result;
  const uint64_t per_table = uint64_t{1} << l2_bits_;
  for (uint64_t i = 0; i < l1.size(); ++i) {
    const uint64_t entry = l1[i];
    if (entry == 0) continue;
    if ((entry & kL1ReservedMask) != 0) {
      std::fprintf(stderr, "ERROR: L1 table entry %llu has reserved bits set\n",
                   static_cast<unsigned long long>(i));
      ++res.corruptions;
    }
    const uint64_t l2_offset = entry_offset(entry);
    if (l2_offset == 0) continue;
    if ((l2_offset & (cs - 1)) != 0) {
      std::fprintf(stderr,
                   "ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry "
                   "corrupted\n",
                   static_cast<unsigned long long>(l2_offset));
      ++res.corruptions;
      continue;
    }
    w.add(l2_offset, cs);
    if (l2_refs != nullptr) l2_refs->emplace_back(i, l2_offset);
    uint64_t next_contiguous = 0;  // fragmentation is counted within each L2 table, as QEMU does
    std::vector<uint8_t> table(cs);
    auto read = file_->read(l2_offset, cs, IoVec(table.data(), cs));
    auto r = co_await read;
    if (!r) co_return r.error().prefixed("Could not read an L2 table");
    for (uint64_t j = 0; j < per_table; ++j) {
      const uint64_t l2 = load_be64(&table[j * l2_step_ * 8]);
      const ClusterType type = cluster_type(l2, extended_, data_file_ != nullptr);
      if (type == ClusterType::kCompressed) {
        if (data_file_ != nullptr) {
          std::fprintf(stderr, "ERROR compressed cluster %llu with data file\n",
                       static_cast<unsigned long long>(i * per_table + j));
          ++res.corruptions;
          continue;
        }
        const CompressedExtent ext = decode_compressed(l2, cluster_bits_);
        w.add(ext.host_offset & ~(cs - 1),
              ext.host_offset + ext.size - (ext.host_offset & ~(cs - 1)));
        if (active) {
          ++res.allocated_clusters;
          ++res.compressed_clusters;
          ++res.fragmented_clusters;
        }
        continue;
      }
      if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) continue;
      if ((l2 & kL2StandardReservedMask) != 0 && !extended_) {
        std::fprintf(stderr, "ERROR: L2 entry %llu has reserved bits set\n",
                     static_cast<unsigned long long>(i * per_table + j));
        ++res.corruptions;
      }
      const uint64_t host = entry_offset(l2);
      if (active) {
        ++res.allocated_clusters;
        if (next_contiguous != 0 && host != next_contiguous) ++res.fragmented_clusters;
        next_contiguous = host + cs;
      }
      if (data_file_ != nullptr) continue;  // external data is not refcounted
      if ((host & (cs - 1)) != 0) {
        std::fprintf(stderr,
                     "ERROR offset=%llx: Cluster is not properly aligned; L2 entry "
                     "corrupted.\n",
                     static_cast<unsigned long long>(host));
        ++res.corruptions;
        continue;
      }
      w.add(host, cs);
    }
  }
  co_return Result<void>{};
}

// REQUIRES: lock_ held (or the node still opening) and write access to the image file.
Task<Result<void>> Qcow2Driver::repair_dirty() {
  needs_repair_ = false;
  auto run = check_locked(CheckFix::kAll);
  auto result = co_await run;
  if (!result) co_return result.error();
  if (result->corruptions != 0 || result->check_errors != 0) {
    co_return fail(EIO, "{} corruptions and {} errors remain", result->corruptions,
                   result->check_errors);
  }
  auto clean = mark_clean();
  co_return co_await clean;
}

}  // namespace strata::qcow2
