// qcow2 guest I/O: reads, writes with allocation and copy-on-write, write-zeroes, discard,
// block status.
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "compress.h"
#include "qcow2.h"
#include "strata/child.h"
#include "strata/event_loop.h"
#include "strata/node.h"

namespace strata::qcow2 {
namespace {

// Suspends the caller on an allocation's waiter list.
struct WaitOn {
  std::vector<std::coroutine_handle<>>* list;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { list->push_back(h); }
  void await_resume() const noexcept {}
};

// A host cluster this image alone references (refcount 1): it can be written in place.
bool has_private_host(uint64_t entry, ClusterType type) {
  if (type != ClusterType::kNormal && type != ClusterType::kZeroAlloc) return false;
  return (entry & kOflagCopied) != 0;
}

}  // namespace

Child* Qcow2Driver::backing() const { return node_->child("backing"); }

Qcow2Driver::Allocation* Qcow2Driver::overlapping_allocation(uint64_t first_cluster,
                                                             uint64_t end_cluster) const {
  for (Allocation* a : allocations_) {
    if (a->first < end_cluster && first_cluster < a->end) return a;
  }
  return nullptr;
}

Task<void> Qcow2Driver::wait_for_allocations(uint64_t first_cluster, uint64_t end_cluster) {
  Allocation* a = overlapping_allocation(first_cluster, end_cluster);
  if (a == nullptr) co_return;
  do {
    WaitOn wait{&a->waiters};
    co_await wait;
    a = overlapping_allocation(first_cluster, end_cluster);
  } while (a != nullptr);
}

// ---- reads ----

Task<Result<void>> Qcow2Driver::read_backing(uint64_t offset, uint64_t bytes, IoVec iov) {
  Child* b = backing();
  uint64_t readable = 0;
  if (b != nullptr) {
    const uint64_t backing_size = b->size();
    if (offset < backing_size) readable = std::min(bytes, backing_size - offset);
  }
  if (readable > 0) {
    auto read = b->read(offset, readable, iov.slice(0, readable));
    auto r = co_await read;
    if (!r) co_return r;
  }
  if (readable < bytes) iov.fill(readable, 0, bytes - readable);
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::read_compressed(uint64_t offset, uint64_t l2_entry, IoVec iov) {
  const CompressedExtent ext = decode_compressed(l2_entry, cluster_bits_);
  std::vector<uint8_t> in(ext.size);
  auto read = file_->read(ext.host_offset, ext.size, IoVec(in.data(), in.size()));
  auto r = co_await read;
  if (!r) co_return r;
  std::vector<uint8_t> cluster(cluster_size());
  auto done = decompress_cluster(header_.compression_type, in, cluster);
  if (!done) {
    co_return done.error().prefixed(
        fmt::format("Could not read the compressed cluster at host offset {:#x}", ext.host_offset));
  }
  iov.copy_from(0, cluster.data() + offset_in_cluster(offset), iov.size());
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::read_extent(uint64_t offset, const Extent& e, IoVec iov) {
  switch (e.type) {
    case SubclusterType::kNormal: {
      auto read = data_child().read(e.host, e.bytes, std::move(iov));
      co_return co_await read;
    }
    case SubclusterType::kZeroPlain:
    case SubclusterType::kZeroAlloc:
      iov.fill(0, 0, iov.size());
      co_return Result<void>{};
    case SubclusterType::kUnallocatedPlain:
    case SubclusterType::kUnallocatedAlloc: {
      auto read = read_backing(offset, e.bytes, std::move(iov));
      co_return co_await read;
    }
    case SubclusterType::kCompressed: {
      auto read = read_compressed(offset, e.l2_entry, std::move(iov));
      co_return co_await read;
    }
    case SubclusterType::kInvalid:
      break;
  }
  co_return fail(EIO, "qcow2: invalid cluster type");
}

Task<Result<void>> Qcow2Driver::read_guest(uint64_t offset, uint64_t bytes, IoVec iov) {
  uint64_t done = 0;
  while (done < bytes) {
    Extent e;
    {
      CoMutex::Guard guard = co_await lock_.lock();
      auto find = lookup(offset + done, bytes - done);
      auto found = co_await find;
      if (!found) co_return found.error();
      e = *found;
    }
    auto read = read_extent(offset + done, e, iov.slice(done, e.bytes));
    auto r = co_await read;
    if (!r) co_return r;
    done += e.bytes;
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::preadv(uint64_t offset, uint64_t bytes, IoVec iov, ReqFlags) {
  auto read = read_guest(offset, bytes, std::move(iov));
  co_return co_await read;
}

// ---- writes ----

// Decides what the write starting at `offset` does first. Under lock_. Returns nullopt if the
// first cluster is being allocated by another write (the caller waits and asks again).
Task<Result<std::optional<Qcow2Driver::WritePlan>>> Qcow2Driver::plan_write(uint64_t offset,
                                                                            uint64_t bytes) {
  using Plan = std::optional<WritePlan>;
  const uint64_t cs = cluster_size();
  const uint64_t scs = subcluster_size();
  const uint64_t end = offset + bytes;
  const uint64_t c0 = offset >> cluster_bits_;
  if (overlapping_allocation(c0, c0 + 1) != nullptr) co_return Plan();

  auto get = get_l2(offset, false);
  auto table = co_await get;
  if (!table) co_return table.error();
  const uint64_t l2_span = uint64_t{1} << (cluster_bits_ + l2_bits_);
  const uint64_t table_end = std::min(end, (offset & ~(l2_span - 1)) + l2_span);
  const uint64_t last_cluster = (table_end - 1) >> cluster_bits_;

  auto entry_of = [&](uint64_t c) -> std::pair<uint64_t, uint64_t> {
    if (!*table) return {0, 0};
    const uint64_t i = l2_index(c << cluster_bits_);
    return {l2_entry_at(*table, i), l2_bitmap_at(*table, i)};
  };
  auto private_host = [&](uint64_t entry) {
    const ClusterType t = cluster_type(entry, extended_);
    if (data_file_ != nullptr && (entry & kOflagCopied) != 0 && (entry & kOflagCompressed) == 0) {
      return true;
    }
    return has_private_host(entry, t);
  };

  auto [e0, b0] = entry_of(c0);
  if (*table) {
    auto valid = check_l2_entry(e0, table->offset(), l2_index(offset));
    if (!valid) co_return valid.error();
  }
  const uint64_t in_cluster = offset_in_cluster(offset);
  WritePlan plan;
  plan.first_cluster = c0;

  if (private_host(e0)) {
    const unsigned sc = static_cast<unsigned>(in_cluster >> sc_bits_);
    const SubclusterType st = classify(e0, b0, sc);
    if (st == SubclusterType::kNormal) {
      // In place: this cluster's run of allocated subclusters, then whole following clusters
      // that are allocated, private and contiguous in the file.
      uint64_t run_end = (c0 << cluster_bits_) + cs;
      if (extended_) {
        const unsigned run = subcluster_run(e0, b0, sc, true);
        run_end = (c0 << cluster_bits_) + (uint64_t{sc} + run) * scs;
      }
      uint64_t expected = entry_offset(e0) + cs;
      for (uint64_t c = c0 + 1; run_end == (c << cluster_bits_) && c <= last_cluster; ++c) {
        auto [e, b] = entry_of(c);
        if (!private_host(e) || entry_offset(e) != expected) break;
        if (classify(e, b, 0) != SubclusterType::kNormal) break;
        if (extended_ && subcluster_run(e, b, 0, true) != kSubclustersPerCluster) {
          run_end += uint64_t{subcluster_run(e, b, 0, true)} * scs;
          break;
        }
        run_end += cs;
        expected += cs;
      }
      plan.in_place = true;
      plan.host = entry_offset(e0) + in_cluster;
      plan.region_start = offset;
      plan.region_end = std::min(end, run_end);
      co_return Plan(plan);
    }
    // The host cluster is ours but the part written is not allocated (subclusters) or reads as
    // zero (a preallocated zero cluster): write there, copying what surrounds the request.
    plan.new_clusters = false;
    plan.count = 1;
    plan.host = entry_offset(e0);
    const uint64_t cluster_start = c0 << cluster_bits_;
    if (!extended_) {
      plan.region_start = cluster_start;
      plan.region_end = cluster_start + cs;
    } else {
      plan.region_start = cluster_start + ((in_cluster >> sc_bits_) << sc_bits_);
      uint64_t stop = cluster_start + cs;
      // Stop before the next allocated subcluster: that part is written in place later.
      for (unsigned s = static_cast<unsigned>(in_cluster >> sc_bits_) + 1;
           s < kSubclustersPerCluster; ++s) {
        if (cluster_start + uint64_t{s} * scs >= end) break;
        if (classify(e0, b0, s) == SubclusterType::kNormal) {
          stop = cluster_start + uint64_t{s} * scs;
          break;
        }
      }
      const uint64_t want = std::min(end, stop);
      plan.region_end = std::min(stop, (want + scs - 1) / scs * scs);
    }
    co_return Plan(plan);
  }

  // New host clusters: this one and the following ones that need them too, up to the end of
  // the request, within this L2 table, and not being allocated by someone else.
  uint64_t want = 1;
  for (uint64_t c = c0 + 1; c <= last_cluster; ++c) {
    auto [e, b] = entry_of(c);
    (void)b;
    if (private_host(e)) break;
    if (overlapping_allocation(c, c + 1) != nullptr) break;
    ++want;
  }
  uint64_t got = want;
  if (data_file_ != nullptr) {
    plan.host = c0 << cluster_bits_;  // external data sits at the guest offset
  } else {
    auto alloc = alloc_clusters(want, &got);
    auto host = co_await alloc;
    if (!host) co_return host.error();
    plan.host = *host;
  }
  plan.count = got;
  plan.new_clusters = true;
  const uint64_t first_start = c0 << cluster_bits_;
  const uint64_t last_end = (c0 + got) << cluster_bits_;
  const uint64_t write_end = std::min(end, last_end);
  // Copy-on-write edges: whole clusters when the old cluster holds data that must move to the
  // new one, else (subclusters) only the partly written subclusters.
  auto holds_data = [&](uint64_t entry) {
    const ClusterType t = cluster_type(entry, extended_);
    return t == ClusterType::kNormal || t == ClusterType::kCompressed;
  };
  if (!extended_ || holds_data(e0)) {
    plan.region_start = first_start;
  } else {
    plan.region_start = first_start + ((in_cluster >> sc_bits_) << sc_bits_);
  }
  auto [e_last, b_last] = entry_of(c0 + got - 1);
  (void)b_last;
  if (!extended_ || holds_data(e_last)) {
    plan.region_end = last_end;
  } else {
    plan.region_end = std::min(last_end, (write_end + scs - 1) / scs * scs);
  }
  co_return Plan(plan);
}

Task<Result<void>> Qcow2Driver::write_allocating(WritePlan plan, uint64_t offset, IoVec iov) {
  const uint64_t head = offset - plan.region_start;
  const uint64_t data_end = offset + iov.size();
  const uint64_t tail = plan.region_end > data_end ? plan.region_end - data_end : 0;
  std::vector<uint8_t> head_buf(head);
  std::vector<uint8_t> tail_buf(tail);
  if (head > 0) {
    auto read = read_guest(plan.region_start, head, IoVec(head_buf.data(), head));
    auto r = co_await read;
    if (!r) co_return r;
  }
  if (tail > 0) {
    auto read = read_guest(data_end, tail, IoVec(tail_buf.data(), tail));
    auto r = co_await read;
    if (!r) co_return r;
  }
  IoVec all;
  if (head > 0) all.push_back(head_buf.data(), head);
  all.append(iov);
  if (tail > 0) all.push_back(tail_buf.data(), tail);
  const uint64_t host = plan.host + (plan.region_start - (plan.first_cluster << cluster_bits_));
  auto write = data_child().write(host, all.size(), all);
  co_return co_await write;
}

// One cluster stored compressed (the caller made sure it is smaller compressed).
Task<Result<void>> Qcow2Driver::write_compressed_cluster(uint64_t offset,
                                                         std::vector<uint8_t> data) {
  const uint64_t c = offset >> cluster_bits_;
  CoMutex::Guard guard = co_await lock_.lock();
  while (overlapping_allocation(c, c + 1) != nullptr) {
    guard.release();
    auto wait = wait_for_allocations(c, c + 1);
    co_await wait;
    guard = co_await lock_.lock();
  }
  if (corrupt_) co_return corrupt_error();
  if (!began_writing_) {
    auto begin = begin_writing();
    auto begun = co_await begin;
    if (!begun) co_return begun;
  }
  {
    // As QEMU: compression never overwrites; an allocated cluster refuses the write.
    auto get = get_l2(offset, false);
    auto table = co_await get;
    if (!table) co_return table.error();
    if (*table) {
      const uint64_t current = l2_entry_at(*table, l2_index(offset));
      const ClusterType type = cluster_type(current, extended_);
      if (type != ClusterType::kUnallocated && type != ClusterType::kZeroPlain) {
        co_return fail(EIO,
                       "qcow2: a compressed write cannot overwrite the allocated cluster at "
                       "{:#x}",
                       offset);
      }
    }
  }
  auto alloc = alloc_bytes(data.size());
  auto host = co_await alloc;
  if (!host) co_return host.error();
  auto entry = encode_compressed(*host, data.size(), cluster_bits_);
  if (!entry) co_return entry.error();
  Allocation allocation;
  allocation.first = c;
  allocation.end = c + 1;
  allocations_.push_back(&allocation);
  guard.release();

  auto write = file_->write(*host, data.size(), IoVec(data.data(), data.size()));
  Result<void> result = co_await write;

  CoMutex::Guard relock = co_await lock_.lock();
  if (result && !lazy_refcounts_) {
    auto dep = l2_cache_.set_dependency(&refblock_cache_);
    result = co_await dep;
  }
  uint64_t old = 0;
  if (result) {
    l2_cache_.depends_on_flush();
    auto get = get_l2(offset, true);
    auto table = co_await get;
    if (!table) {
      result = table.error();
    } else {
      const uint64_t i = l2_index(offset);
      old = l2_entry_at(*table, i);
      set_l2(*table, i, *entry, 0);
      l2_cache_.mark_dirty(*table);
    }
  }
  if (result) {
    auto release = free_entry(old, DiscardType::kOther);
    result = co_await release;
  } else {
    auto undo = free_entry(*entry, DiscardType::kNever);
    auto undone = co_await undo;
    (void)undone;
  }
  std::erase(allocations_, &allocation);
  for (std::coroutine_handle<> h : allocation.waiters) node_->loop().post([h] { h.resume(); });
  co_return result;
}

Task<Result<void>> Qcow2Driver::write_compressed(uint64_t offset, uint64_t bytes, IoVec iov) {
  if (data_file_ != nullptr) {
    co_return fail(ENOTSUP, "Compression is not supported with an external data file");
  }
  const uint64_t cs = cluster_size();
  std::vector<uint8_t> in(cs);
  for (uint64_t done = 0; done < bytes; done += cs) {
    const uint64_t n = std::min(cs, bytes - done);
    std::fill(in.begin(), in.end(), 0);
    iov.copy_to(done, in.data(), n);
    std::vector<uint8_t> out(cs);
    auto packed = compress_cluster(header_.compression_type, in, out);
    if (!packed) co_return packed.error();
    if (*packed == 0) {
      // Incompressible: stored as a normal cluster.
      auto write = pwritev(offset + done, n, iov.slice(done, n), ReqFlags::kNone);
      auto w = co_await write;
      if (!w) co_return w;
      continue;
    }
    out.resize(*packed);
    auto write = write_compressed_cluster(offset + done, std::move(out));
    auto w = co_await write;
    if (!w) co_return w;
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::pwritev(uint64_t offset, uint64_t bytes, IoVec iov,
                                        ReqFlags flags) {
  if (has_flag(flags, ReqFlags::kCompressed)) {
    auto compressed = write_compressed(offset, bytes, std::move(iov));
    co_return co_await compressed;
  }
  uint64_t done = 0;
  while (done < bytes) {
    const uint64_t cur = offset + done;
    CoMutex::Guard guard = co_await lock_.lock();
    if (corrupt_) co_return corrupt_error();
    if (!began_writing_) {
      auto begin = begin_writing();
      auto begun = co_await begin;
      if (!begun) co_return begun;
    }
    auto planning = plan_write(cur, bytes - done);
    auto planned = co_await planning;
    if (!planned) co_return planned.error();
    if (!*planned) {
      guard.release();
      const uint64_t c = cur >> cluster_bits_;
      auto wait = wait_for_allocations(c, c + 1);
      co_await wait;
      continue;
    }
    WritePlan plan = **planned;
    if (plan.in_place) {
      guard.release();
      const uint64_t n = plan.region_end - plan.region_start;
      auto write = data_child().write(plan.host, n, iov.slice(done, n));
      auto w = co_await write;
      if (!w) co_return w;
      done += n;
      continue;
    }
    Allocation allocation;
    allocation.first = plan.first_cluster;
    allocation.end = plan.first_cluster + plan.count;
    allocations_.push_back(&allocation);
    guard.release();

    const uint64_t n = std::min(bytes - done, plan.region_end - cur);
    auto write = write_allocating(plan, cur, iov.slice(done, n));
    auto written = co_await write;

    CoMutex::Guard relock = co_await lock_.lock();
    Result<void> result = written;
    if (result) {
      auto linking = link(plan);
      result = co_await linking;
    }
    if (!result && plan.new_clusters && data_file_ == nullptr) {
      // The clusters were never linked: give them back.
      auto undo = update_refcounts(plan.host, plan.count << cluster_bits_, -1, DiscardType::kNever);
      auto undone = co_await undo;
      (void)undone;
    }
    std::erase(allocations_, &allocation);
    for (std::coroutine_handle<> h : allocation.waiters) node_->loop().post([h] { h.resume(); });
    allocation.waiters.clear();
    if (!result) co_return result;
    done += n;
  }
  co_return Result<void>{};
}

// ---- zeroes and discard ----

Task<Result<bool>> Qcow2Driver::reads_zero(uint64_t offset, uint64_t bytes) {
  uint64_t done = 0;
  Child* b = backing();
  while (done < bytes) {
    auto find = lookup(offset + done, bytes - done);
    auto found = co_await find;
    if (!found) co_return found.error();
    switch (found->type) {
      case SubclusterType::kZeroPlain:
      case SubclusterType::kZeroAlloc:
        break;
      case SubclusterType::kUnallocatedPlain:
      case SubclusterType::kUnallocatedAlloc:
        if (b != nullptr && offset + done < b->size()) co_return false;
        break;
      default:
        co_return false;
    }
    done += found->bytes;
  }
  co_return true;
}

Task<Result<void>> Qcow2Driver::zero_clusters(uint64_t offset, uint64_t bytes, bool unmap) {
  const uint64_t cs = cluster_size();
  const uint64_t end = offset + bytes;
  std::vector<uint64_t> freed;
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t cluster_start = pos & ~(cs - 1);
    const uint64_t piece_end = std::min(end, cluster_start + cs);
    auto get = get_l2(pos, true);
    auto table = co_await get;
    if (!table) co_return table.error();
    const uint64_t i = l2_index(pos);
    const uint64_t old = l2_entry_at(*table, i);
    const uint64_t old_bitmap = l2_bitmap_at(*table, i);
    const ClusterType type = cluster_type(old, extended_);
    const bool whole = pos == cluster_start && piece_end == cluster_start + cs;
    const bool must_unmap = type == ClusterType::kCompressed ||
                            ((type == ClusterType::kNormal || type == ClusterType::kZeroAlloc) &&
                             (old & kOflagCopied) == 0 && data_file_ == nullptr);
    uint64_t entry = old;
    uint64_t bitmap = old_bitmap;
    if (!extended_) {
      if (unmap || must_unmap || type == ClusterType::kUnallocated ||
          type == ClusterType::kZeroPlain) {
        entry = kOflagZero;
      } else {
        entry = old | kOflagZero;
      }
    } else if (whole) {
      bitmap = kBitmapZeroMask;
      entry = (unmap || must_unmap) ? 0 : old;
    } else {
      if (type == ClusterType::kCompressed)
        co_return fail(ENOTSUP, "partial zero of a compressed cluster");
      const unsigned lo = static_cast<unsigned>((pos - cluster_start) >> sc_bits_);
      const unsigned hi = static_cast<unsigned>((piece_end - cluster_start) >> sc_bits_);
      const uint64_t mask = subcluster_mask(lo, hi - lo);
      bitmap = (old_bitmap & ~mask) | (mask << 32);
    }
    if (entry != old || bitmap != old_bitmap) {
      set_l2(*table, i, entry, bitmap);
      l2_cache_.mark_dirty(*table);
      if (entry_offset(entry) != entry_offset(old) || type == ClusterType::kCompressed) {
        freed.push_back(old);
      }
    }
    pos = piece_end;
  }
  for (uint64_t old : freed) {
    auto f = free_entry(old, DiscardType::kRequest);
    auto r = co_await f;
    if (!r) co_return r;
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::pwrite_zeroes(uint64_t offset, uint64_t bytes, ReqFlags flags) {
  const uint64_t scs = subcluster_size();
  const uint64_t end = offset + bytes;
  const bool aligned = offset % scs == 0 && (end % scs == 0 || end == header_.size);
  CoMutex::Guard guard = co_await lock_.lock();
  if (corrupt_) co_return corrupt_error();
  if (data_file_ != nullptr && (header_.autoclear_features & autoclear::kDataFileRaw) != 0) {
    // The data file must read as the guest sees it: zeroes have to be written there too.
    co_return fail(ENOTSUP, "qcow2: zeroes are written as data with a raw data file");
  }
  if (!aligned) {
    // A partial subcluster: nothing to do if it reads as zero already.
    auto check = reads_zero(offset, bytes);
    auto zero = co_await check;
    if (!zero) co_return zero.error();
    if (*zero) co_return Result<void>{};
    co_return fail(ENOTSUP, "qcow2: partial subcluster");
  }
  if (header_.version < 3) {
    if (backing() != nullptr) co_return fail(ENOTSUP, "qcow2 v2 has no zero clusters");
    guard.release();
    auto discard = pdiscard(offset, bytes);
    co_return co_await discard;
  }
  if (!began_writing_) {
    auto begin = begin_writing();
    auto begun = co_await begin;
    if (!begun) co_return begun;
  }
  const uint64_t first = offset >> cluster_bits_;
  const uint64_t last_end = (end + cluster_size() - 1) >> cluster_bits_;
  while (overlapping_allocation(first, last_end) != nullptr) {
    guard.release();
    auto wait = wait_for_allocations(first, last_end);
    co_await wait;
    guard = co_await lock_.lock();
  }
  auto zero = zero_clusters(offset, end - offset, has_flag(flags, ReqFlags::kMayUnmap));
  co_return co_await zero;
}

Task<Result<void>> Qcow2Driver::discard_clusters(uint64_t offset, uint64_t bytes, bool full) {
  const uint64_t cs = cluster_size();
  std::vector<uint64_t> freed;
  for (uint64_t pos = offset; pos < offset + bytes; pos += cs) {
    auto get = get_l2(pos, false);
    auto table = co_await get;
    if (!table) co_return table.error();
    if (!*table) {
      if (full || backing() == nullptr) continue;
      auto alloc = get_l2(pos, true);
      auto allocated = co_await alloc;
      if (!allocated) co_return allocated.error();
      *table = std::move(*allocated);
    }
    const uint64_t i = l2_index(pos);
    const uint64_t old = l2_entry_at(*table, i);
    const uint64_t old_bitmap = l2_bitmap_at(*table, i);
    const ClusterType type = cluster_type(old, extended_);
    uint64_t entry = 0;
    uint64_t bitmap = 0;
    const bool allocated = type != ClusterType::kUnallocated && type != ClusterType::kZeroPlain;
    if (!full && (backing() != nullptr || allocated)) {
      // Reads must give zeroes afterwards, not the backing file's data.
      if (extended_) {
        bitmap = kBitmapZeroMask;
      } else {
        entry = header_.version >= 3 ? kOflagZero : 0;
      }
    }
    if (entry == old && bitmap == old_bitmap) continue;
    if (!allocated && !full && type == ClusterType::kZeroPlain && !extended_) continue;
    // A shared L2 table must be copied before it changes.
    auto own = get_l2(pos, true);
    auto owned = co_await own;
    if (!owned) co_return owned.error();
    set_l2(*owned, i, entry, bitmap);
    l2_cache_.mark_dirty(*owned);
    if (allocated) freed.push_back(old);
  }
  for (uint64_t old : freed) {
    auto f = free_entry(old, DiscardType::kRequest);
    auto r = co_await f;
    if (!r) co_return r;
  }
  co_return Result<void>{};
}

Task<Result<void>> Qcow2Driver::pdiscard(uint64_t offset, uint64_t bytes) {
  const uint64_t cs = cluster_size();
  // Without zero clusters (version 2) a discarded cluster would show the backing file's stale
  // data: leave it.
  if (header_.version < 3 && backing() != nullptr) {
    co_return fail(ENOTSUP, "qcow2 v2 cannot discard over a backing file");
  }
  if (offset % cs != 0 || (bytes % cs != 0 && offset + bytes != header_.size)) {
    co_return fail(ENOTSUP, "qcow2: discard of a partial cluster");
  }
  CoMutex::Guard guard = co_await lock_.lock();
  if (corrupt_) co_return corrupt_error();
  if (!began_writing_) {
    auto begin = begin_writing();
    auto begun = co_await begin;
    if (!begun) co_return begun;
  }
  const uint64_t first = offset >> cluster_bits_;
  const uint64_t last_end = (offset + bytes + cs - 1) >> cluster_bits_;
  while (overlapping_allocation(first, last_end) != nullptr) {
    guard.release();
    auto wait = wait_for_allocations(first, last_end);
    co_await wait;
    guard = co_await lock_.lock();
  }
  auto discard = discard_clusters(offset, bytes, false);
  co_return co_await discard;
}

// ---- block status ----

// QEMU's qcow2_detect_metadata_preallocation: the image was preallocated with metadata only when
// clearly more clusters are in use by the refcounts than the file system holds for the file
// (threshold: a ninth more, at least two). Then its data clusters may be holes in the file, and
// block status asks the file (kRecurse).
Task<Result<bool>> Qcow2Driver::detect_metadata_preallocation() {
  const std::string path = file_->node().filename();
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) co_return false;
  const uint64_t cs = cluster_size();
  const uint64_t real_clusters = static_cast<uint64_t>(st.st_blocks) * 512 / cs;
  const uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
  const uint64_t end = (file_->size() + cs - 1) / cs;
  uint64_t count = 0;
  for (uint64_t c = 0; c < end && count < threshold; ++c) {
    auto rc = refcount(c);
    auto value = co_await rc;
    if (!value) co_return value.error();
    if (*value != 0) ++count;
  }
  co_return count >= threshold;
}

Task<Result<BlockStatus>> Qcow2Driver::block_status(uint64_t offset, uint64_t bytes) {
  Extent e;
  {
    CoMutex::Guard guard = co_await lock_.lock();
    if (!metadata_preallocation_) {
      auto detect = detect_metadata_preallocation();
      auto detected = co_await detect;
      if (!detected) co_return detected.error();
      metadata_preallocation_ = *detected;
    }
    auto find = lookup(offset, bytes);
    auto found = co_await find;
    if (!found) co_return found.error();
    e = *found;
  }
  using F = BlockStatusFlags;
  BlockStatus st;
  st.bytes = e.bytes;
  switch (e.type) {
    case SubclusterType::kNormal:
      st.flags = F::kData | F::kOffsetValid;
      if (*metadata_preallocation_) st.flags = st.flags | F::kRecurse;
      st.map = e.host;
      st.file = &data_child().node();
      break;
    case SubclusterType::kZeroAlloc:
      st.flags = F::kZero | F::kOffsetValid;
      st.map = e.host;
      st.file = &data_child().node();
      break;
    case SubclusterType::kZeroPlain:
      st.flags = F::kZero;
      break;
    case SubclusterType::kCompressed:
      st.flags = F::kData;
      break;
    case SubclusterType::kUnallocatedAlloc:
      // Not this layer's data, but QEMU still says where the host cluster is.
      st.flags = F::kOffsetValid;
      st.map = e.host;
      st.file = &data_child().node();
      break;
    default:
      st.flags = F::kNone;
      if (data_file_ != nullptr && (header_.autoclear_features & autoclear::kDataFileRaw) != 0) {
        // A raw data file holds every guest offset at the same place.
        st.flags = F::kOffsetValid;
        st.map = offset;
        st.file = &data_child().node();
      }
      break;
  }
  co_return st;
}

}  // namespace strata::qcow2
