// qcow2 image creation: QEMU's cluster allocator replayed on a model, then written out.
//
// The model follows block/qcow2-refcount.c step by step (alloc_clusters_noref, update_refcount,
// alloc_refcount_block, qcow2_refcount_area) because where a new refcount block or table lands
// decides every later offset; a cleverer allocator would make valid images that differ from
// qemu-img's. What the model cannot see (file contents) is simple at creation: every cluster is
// zero except the metadata, and a refcount table that QEMU replaced stays on disk as it was.
#include "format/qcow2/qcow2_create.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <map>
#include <utility>
#include <vector>

#include "format/qcow2/entries.h"
#include "format/qcow2/refcount.h"
#include "strata/result.h"

namespace strata::qcow2 {
namespace {

constexpr uint64_t kMaxClusterOffset = (1ull << 56) - 1;  // QCOW_MAX_CLUSTER_OFFSET
constexpr uint64_t kMaxReftableSize = 8ull << 20;         // QCOW_MAX_REFTABLE_SIZE (compared
                                                          // with entry counts, as QEMU does)

uint64_t div_round_up(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
uint64_t round_up(uint64_t a, uint64_t b) { return div_round_up(a, b) * b; }

// qcow2_refcount_metadata_size: the refcount blocks needed to cover `clusters` clusters plus
// themselves and their table (with `generous`, room for the table to grow by half).
uint64_t refblocks_needed(uint64_t clusters, uint64_t cluster_size, uint32_t refcount_order,
                          bool generous) {
  const uint64_t blocks_per_table_cluster = cluster_size / 8;
  const uint64_t per_block = (cluster_size * 8) >> refcount_order;
  uint64_t table = 0, blocks = 0, n = 0, last = 0;
  do {
    last = n;
    blocks = div_round_up(clusters + table + blocks, per_block);
    table = div_round_up(blocks, blocks_per_table_cluster);
    n = clusters + blocks + table;
    if (n == last && generous) {
      clusters += div_round_up(table, 2);
      n = 0;
      generous = false;
    }
  } while (n != last);
  return blocks;
}

// How a file grows past its end: zeroes read back in every mode; falloc and full also reserve
// the space (full by writing the zeroes, as file-posix does).
struct Growth {
  uint64_t from;
  uint64_t to;
  PreallocMode mode;
};

// The refcount structures of the image being created and QEMU's allocator over them.
class Allocator {
 public:
  Allocator(uint32_t cluster_bits, uint32_t refcount_order)
      : bits_(cluster_bits),
        cs_(uint64_t{1} << cluster_bits),
        order_(refcount_order),
        block_bits_(cluster_bits + 3 - refcount_order),
        per_block_(refcounts_per_block(cluster_bits, refcount_order)) {
    // What qcow2_co_create writes before opening the image: the header, a one-cluster table at
    // cluster 1 and an empty refcount block at cluster 2 (entry 0).
    reftable_.assign(cs_ / 8, 0);
    reftable_[0] = 2 * cs_;
    reftable_offset_ = cs_;
    file_len_ = 3 * cs_;
  }

  uint64_t cluster_size() const { return cs_; }
  uint64_t file_len() const { return file_len_; }
  void extend_file(uint64_t end) { file_len_ = std::max(file_len_, end); }
  uint64_t reftable_offset() const { return reftable_offset_; }
  uint64_t reftable_clusters() const { return reftable_.size() * 8 / cs_; }

  // qcow2_alloc_clusters: `bytes` rounded up to clusters, first fit from the free index.
  Result<uint64_t> alloc_clusters(uint64_t bytes) {
    for (;;) {
      Result<uint64_t> offset = alloc_noref(bytes);
      if (!offset) return offset.error();
      Result<void> r = update_refcount(*offset, bytes, false);
      if (r) return *offset;
      if (r.error().err() != EAGAIN) return r.error();
    }
  }

  // qcow2_alloc_clusters_at: up to `count` clusters from `offset`; returns how many were free.
  Result<uint64_t> alloc_clusters_at(uint64_t offset, uint64_t count) {
    if (count == 0) return uint64_t{0};
    for (;;) {
      uint64_t i = 0;
      for (uint64_t index = offset >> bits_; i < count; ++i, ++index) {
        if (refcount(index) != 0) break;
      }
      Result<void> r = update_refcount(offset, i << bits_, false);
      if (r) return i;
      if (r.error().err() != EAGAIN) return r.error();
    }
  }

  // qcow2_refcount_area: new self-covering refcount blocks and table at `start` (the end of the
  // file), covering also `additional` clusters after them. Returns the end of the new area.
  Result<uint64_t> refcount_area(uint64_t start, uint64_t additional, bool exact,
                                 uint64_t new_block_index, uint64_t new_block_offset);

  // The last cluster below `file_len` with a reference, or -1 (qcow2_get_last_cluster).
  int64_t last_cluster(uint64_t file_len) const {
    for (int64_t i = int64_t(div_round_up(file_len, cs_)) - 1; i >= 0; --i) {
      if (refcount(uint64_t(i)) > 0) return i;
    }
    return -1;
  }

  // The on-disk images of the live refcount table and blocks, and of tables QEMU replaced.
  void emit(std::vector<std::pair<uint64_t, std::vector<uint8_t>>>& out) const;

  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> stale;  // replaced tables, in order

 private:
  uint64_t refcount(uint64_t index) const {
    const uint64_t table_index = index >> block_bits_;
    if (table_index >= reftable_.size() || reftable_[table_index] == 0) return 0;
    return index < refs_.size() ? refs_[index] : 0;
  }
  void set_refcount(uint64_t index, uint64_t value) {
    if (index >= refs_.size()) refs_.resize(index + 1, 0);
    refs_[index] = value;
  }
  Result<uint64_t> alloc_noref(uint64_t bytes);
  Result<void> update_refcount(uint64_t offset, uint64_t length, bool decrease);
  Result<void> alloc_refcount_block(uint64_t cluster_index);
  std::vector<uint8_t> table_bytes() const;

  uint32_t bits_;
  uint64_t cs_;
  uint32_t order_;
  uint32_t block_bits_;
  uint64_t per_block_;
  std::vector<uint64_t> reftable_;
  uint64_t reftable_offset_ = 0;
  std::vector<uint64_t> refs_;  // by cluster index; meaningful where a refcount block exists
  uint64_t free_index_ = 0;
  uint64_t file_len_ = 0;
};

Result<uint64_t> Allocator::alloc_noref(uint64_t bytes) {
  const uint64_t count = div_round_up(bytes, cs_);
  for (uint64_t i = 0; i < count;) {
    const uint64_t index = free_index_++;
    i = refcount(index) != 0 ? 0 : i + 1;
  }
  if (free_index_ > 0 && free_index_ - 1 > (kMaxClusterOffset >> bits_)) {
    return fail(EFBIG, "qcow2: cluster offset too large");
  }
  return (free_index_ - count) << bits_;
}

Result<void> Allocator::update_refcount(uint64_t offset, uint64_t length, bool decrease) {
  if (length == 0) return {};
  const uint64_t start = offset & ~(cs_ - 1);
  const uint64_t last = (offset + length - 1) & ~(cs_ - 1);
  int64_t old_table_index = -1;
  for (uint64_t cluster = start; cluster <= last; cluster += cs_) {
    const uint64_t index = cluster >> bits_;
    const int64_t table_index = int64_t(index >> block_bits_);
    if (table_index != old_table_index) {
      Result<void> r = alloc_refcount_block(index);
      if (!r) {
        // On EAGAIN the caller searches again, starting with the same clusters.
        if (r.error().err() == EAGAIN) free_index_ = std::min(free_index_, start >> bits_);
        (void)update_refcount(offset, cluster - offset, !decrease);
        return r;
      }
    }
    old_table_index = table_index;
    const uint64_t value = refcount(index);
    if (decrease ? value == 0 : value + 1 > refcount_max(order_)) {
      (void)update_refcount(offset, cluster - offset, !decrease);
      return fail(EINVAL, "qcow2: refcount overflow");
    }
    const uint64_t updated = decrease ? value - 1 : value + 1;
    if (updated == 0) free_index_ = std::min(free_index_, index);
    set_refcount(index, updated);
  }
  return {};
}

Result<void> Allocator::alloc_refcount_block(uint64_t cluster_index) {
  const uint64_t table_index = cluster_index >> block_bits_;
  if (table_index < reftable_.size() && reftable_[table_index] != 0) return {};

  Result<uint64_t> block = alloc_noref(cs_);
  if (!block) return block.error();
  const uint64_t new_block = *block;
  if ((new_block >> bits_ >> block_bits_) == table_index) {
    set_refcount(new_block >> bits_, 1);  // the block describes itself
  } else {
    Result<void> r = update_refcount(new_block, cs_, false);
    if (!r) return r;
  }
  extend_file(new_block + cs_);
  if (table_index < reftable_.size()) {
    reftable_[table_index] = new_block;
    return fail(EAGAIN, "restart the search");
  }
  // The table is full: new self-describing blocks and a new table after what is used so far.
  const uint64_t blocks_used =
      div_round_up(std::max(cluster_index + 1, (new_block >> bits_) + 1), per_block_);
  Result<uint64_t> end =
      refcount_area(blocks_used * per_block_ * cs_, 0, false, table_index, new_block);
  if (!end) return end.error();
  return fail(EAGAIN, "restart the search");
}

Result<uint64_t> Allocator::refcount_area(uint64_t start, uint64_t additional, bool exact,
                                          uint64_t new_block_index, uint64_t new_block_offset) {
  const uint64_t total = refblocks_needed(start / cs_ + additional, cs_, order_, !exact);
  if (total > kMaxReftableSize) return fail(EFBIG, "Refcount table too large");
  const uint64_t area_index = (start / cs_) / per_block_;
  uint64_t table_size = exact ? total : total + div_round_up(total, 2);
  table_size = round_up(table_size, cs_ / 8);
  const uint64_t table_clusters = table_size * 8 / cs_;
  if (table_size > kMaxReftableSize) return fail(EFBIG, "Refcount table too large");

  uint64_t max_index = reftable_.size() - 1;
  while (max_index > 0 && reftable_[max_index] == 0) --max_index;
  std::vector<uint64_t> table(table_size, 0);
  std::copy_n(reftable_.begin(), std::min(table_size, max_index + 1), table.begin());
  if (new_block_offset != 0) table[new_block_index] = new_block_offset;

  uint64_t additional_blocks = 0;
  for (uint64_t i = area_index; i < total; ++i) additional_blocks += table[i] == 0 ? 1 : 0;
  const uint64_t table_offset = start + additional_blocks * cs_;
  const uint64_t end = table_offset + table_clusters * cs_;

  uint64_t block_offset = start;
  for (uint64_t i = area_index; i < total; ++i) {
    if (table[i] == 0) {
      table[i] = block_offset;
      block_offset += cs_;
    }
    const uint64_t first_covered = i * per_block_ * cs_;
    if (first_covered >= end) continue;
    uint64_t j = first_covered < start ? (start - first_covered) / cs_ : 0;
    const uint64_t end_index = std::min((end - first_covered) / cs_, per_block_);
    for (; j < end_index; ++j) set_refcount(i * per_block_ + j, 1);
  }

  stale.emplace_back(reftable_offset_, table_bytes());
  const uint64_t old_offset = reftable_offset_;
  const uint64_t old_bytes = reftable_.size() * 8;
  reftable_ = std::move(table);
  reftable_offset_ = table_offset;
  extend_file(end);
  (void)update_refcount(old_offset, old_bytes, true);  // QEMU ignores a failure here too
  return end;
}

std::vector<uint8_t> Allocator::table_bytes() const {
  std::vector<uint8_t> out(reftable_.size() * 8);
  for (size_t i = 0; i < reftable_.size(); ++i) store_be64(&out[i * 8], reftable_[i]);
  return out;
}

void Allocator::emit(std::vector<std::pair<uint64_t, std::vector<uint8_t>>>& out) const {
  for (const auto& s : stale) out.push_back(s);
  out.emplace_back(reftable_offset_, table_bytes());
  for (uint64_t t = 0; t < reftable_.size(); ++t) {
    if (reftable_[t] == 0) continue;
    std::vector<uint8_t> block(cs_, 0);
    for (uint64_t j = 0; j < per_block_; ++j) {
      const uint64_t index = t * per_block_ + j;
      if (index < refs_.size() && refs_[index] != 0) refcount_set(block, j, order_, refs_[index]);
    }
    out.emplace_back(reftable_[t], std::move(block));
  }
}

// ---- the image being built ----

class Builder {
 public:
  Builder(const CreateOptions& o, uint32_t cluster_bits)
      : o_(o),
        alloc_(cluster_bits, uint32_t(std::countr_zero(o.refcount_bits))),
        bits_(cluster_bits),
        cs_(uint64_t{1} << cluster_bits),
        l2_entries_(cs_ / (o.extended_l2 ? 16 : 8)),
        subcluster_size_(o.extended_l2 ? cs_ / kSubclustersPerCluster : cs_) {}

  Result<void> build();
  Result<CreateLayout> write(int fd, int data_fd) const;

 private:
  Result<void> grow_l1();
  Result<void> preallocate(PreallocMode mode);
  Result<void> preallocate_data_area(PreallocMode mode);
  Result<uint64_t> l2_table(uint64_t guest_offset);
  void map_cluster(uint64_t guest_offset, uint64_t host_offset);
  // Grows the image file (data_file false) or the data file to `to`.
  void grow(bool data_file, uint64_t to, PreallocMode mode);
  Result<std::vector<uint8_t>> header_cluster() const;

  const CreateOptions& o_;
  Allocator alloc_;
  uint32_t bits_;
  uint64_t cs_;
  uint64_t l2_entries_;
  uint64_t subcluster_size_;
  uint64_t l1_offset_ = 0;
  std::vector<uint64_t> l1_;
  std::map<uint64_t, std::vector<uint64_t>> l2_;  // offset -> entries (pairs with extended L2)
  std::vector<Growth> image_growth_;
  std::vector<Growth> data_growth_;
  uint64_t data_len_ = 0;
};

Result<void> Builder::build() {
  Result<uint64_t> first = alloc_.alloc_clusters(3 * cs_);
  if (!first)
    return first.error().prefixed(
        "Could not allocate clusters for qcow2 header and "
        "refcount table");
  Result<void> r = grow_l1();
  if (!r) return r.error().prefixed("Could not resize image: Failed to grow the L1 table");
  switch (o_.preallocation) {
    case PreallocMode::kOff:
      if (!o_.data_file.empty()) grow(true, o_.size, PreallocMode::kOff);
      return {};
    case PreallocMode::kMetadata:
      return preallocate(PreallocMode::kMetadata);
    case PreallocMode::kFalloc:
    case PreallocMode::kFull:
      if (!o_.data_file.empty()) return preallocate(o_.preallocation);
      return preallocate_data_area(o_.preallocation);
  }
  return {};
}

// qcow2_grow_l1_table with an exact size: the L1 table goes where the allocator says.
Result<void> Builder::grow_l1() {
  const uint32_t shift = bits_ + uint32_t(std::countr_zero(l2_entries_));
  const uint64_t l1_size = (o_.size + (uint64_t{1} << shift) - 1) >> shift;
  if (l1_size == 0) return {};
  if (l1_size > kMaxL1Bytes / 8) return fail(EFBIG, "File too large");
  Result<uint64_t> offset = alloc_.alloc_clusters(l1_size * 8);
  if (!offset) return offset.error();
  l1_offset_ = *offset;
  l1_.assign(l1_size, 0);
  alloc_.extend_file(l1_offset_ + l1_size * 8);
  return {};
}

Result<uint64_t> Builder::l2_table(uint64_t guest_offset) {
  uint64_t& entry = l1_[guest_offset >> bits_ >> std::countr_zero(l2_entries_)];
  if (entry != 0) return entry_offset(entry);
  Result<uint64_t> offset = alloc_.alloc_clusters(cs_);
  if (!offset) return offset.error();
  entry = *offset | kOflagCopied;
  l2_[*offset].assign(l2_entries_ * (o_.extended_l2 ? 2 : 1), 0);
  alloc_.extend_file(*offset + cs_);
  return *offset;
}

// A preallocated cluster: COPIED with the host offset; with extended L2 the bitmap stays zero
// (QEMU marks no subcluster allocated for preallocation).
void Builder::map_cluster(uint64_t guest_offset, uint64_t host_offset) {
  const uint64_t l2 = entry_offset(l1_[guest_offset >> bits_ >> std::countr_zero(l2_entries_)]);
  const uint64_t index = (guest_offset >> bits_) & (l2_entries_ - 1);
  l2_[l2][index * (o_.extended_l2 ? 2 : 1)] = host_offset | kOflagCopied;
}

void Builder::grow(bool data_file, uint64_t to, PreallocMode mode) {
  if (data_file) {
    if (to > data_len_) data_growth_.push_back({data_len_, to, mode});
    data_len_ = std::max(data_len_, to);
    return;
  }
  if (to > alloc_.file_len()) image_growth_.push_back({alloc_.file_len(), to, mode});
  alloc_.extend_file(to);
}

// preallocate_co: per L2 table, the table first, then its data clusters in one run (in the
// data file at the guest offset, when there is one). A size that ends inside a (sub)cluster
// has the rest of it written with zeroes (QEMU's copy-on-write of the tail).
Result<void> Builder::preallocate(PreallocMode mode) {
  const bool external = !o_.data_file.empty();
  const uint64_t max_chunk = (uint64_t{INT_MAX} / cs_) * cs_;
  uint64_t offset = 0, host = 0, chunk = 0;
  for (uint64_t bytes = o_.size; bytes > 0; bytes -= chunk, offset += chunk) {
    Result<uint64_t> l2 = l2_table(offset);
    if (!l2) return l2.error().prefixed("Allocating clusters failed");
    const uint64_t index = (offset >> bits_) & (l2_entries_ - 1);
    const uint64_t clusters =
        std::min(div_round_up(std::min(bytes, max_chunk), cs_), l2_entries_ - index);
    chunk = std::min(std::min(bytes, max_chunk), clusters * cs_);
    if (external) {
      host = offset;
    } else {
      Result<uint64_t> data = alloc_.alloc_clusters(clusters * cs_);
      if (!data) return data.error().prefixed("Allocating clusters failed");
      host = *data;
    }
    for (uint64_t i = 0; i < clusters; ++i) map_cluster(offset + i * cs_, host + i * cs_);
    if (chunk % subcluster_size_ != 0) {
      grow(external, host + round_up(chunk, subcluster_size_), PreallocMode::kOff);
    }
  }
  // The file must hold every allocated cluster; metadata mode does not reserve the space.
  grow(external, host + chunk, mode == PreallocMode::kMetadata ? PreallocMode::kOff : mode);
  return {};
}

// qcow2_co_truncate for falloc/full without a data file: new refcount structures after the
// last used cluster covering all data clusters and L2 tables, the data area after them in one
// run, then the L2 tables wherever the allocator puts them.
Result<void> Builder::preallocate_data_area(PreallocMode mode) {
  const int64_t last = alloc_.last_cluster(alloc_.file_len());
  const uint64_t old_file_size =
      last >= 0 ? uint64_t(last + 1) * cs_ : round_up(alloc_.file_len(), cs_);
  const uint64_t data_clusters = round_up(o_.size, cs_) >> bits_;
  const uint64_t l2_tables = div_round_up(data_clusters, l2_entries_) + 1;
  Result<uint64_t> start =
      alloc_.refcount_area(old_file_size, data_clusters + l2_tables, true, 0, 0);
  if (!start) return start.error().prefixed("Failed to resize refcount structures");
  Result<uint64_t> got = alloc_.alloc_clusters_at(*start, data_clusters);
  if (!got) return got.error().prefixed("Failed to allocate data clusters");
  if (*got != data_clusters) return fail(EIO, "Failed to allocate data clusters");
  grow(false, *start + data_clusters * cs_, mode);
  for (uint64_t i = 0; i < data_clusters; ++i) {
    Result<uint64_t> l2 = l2_table(i * cs_);
    if (!l2) return l2.error().prefixed("Failed to update L2 tables");
    map_cluster(i * cs_, *start + i * cs_);
  }
  return {};
}

Result<std::vector<uint8_t>> Builder::header_cluster() const {
  Header h;
  h.version = o_.version;
  h.cluster_bits = bits_;
  h.size = o_.size;
  h.l1_size = uint32_t(l1_.size());
  h.l1_table_offset = l1_offset_;
  h.refcount_table_offset = alloc_.reftable_offset();
  h.refcount_table_clusters = uint32_t(alloc_.reftable_clusters());
  h.refcount_order = uint32_t(std::countr_zero(o_.refcount_bits));
  if (o_.lazy_refcounts) h.compatible_features |= compat::kLazyRefcounts;
  if (!o_.data_file.empty()) {
    h.incompatible_features |= incompat::kDataFile;
    h.data_file = o_.data_file;
  }
  if (o_.data_file_raw) h.autoclear_features |= autoclear::kDataFileRaw;
  if (o_.compression_type.value_or(CompressionType::kZlib) != CompressionType::kZlib) {
    h.incompatible_features |= incompat::kCompressionType;
    h.compression_type = *o_.compression_type;
  }
  if (o_.extended_l2) h.incompatible_features |= incompat::kExtendedL2;
  h.backing_file = o_.backing_file;
  if (!o_.backing_file.empty()) h.backing_format = o_.backing_fmt;
  Result<std::vector<uint8_t>> bytes = encode_header(h);
  if (!bytes) return bytes.error();
  bytes->resize(cs_, 0);
  return bytes;
}

Result<void> pwrite_all(int fd, const uint8_t* data, uint64_t len, uint64_t offset) {
  while (len > 0) {
    const ssize_t n = ::pwrite(fd, data, len, off_t(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errno_error(n < 0 ? errno : EIO, "Could not write qcow2 image");
    data += n, len -= uint64_t(n), offset += uint64_t(n);
  }
  return {};
}

// file-posix's growth: ftruncate for off, posix_fallocate for falloc, zeroes written for full.
Result<void> apply_growth(int fd, const Growth& g) {
  if (g.mode == PreallocMode::kFalloc) {
    const int err = ::posix_fallocate(fd, off_t(g.from), off_t(g.to - g.from));
    if (err != 0) return errno_error(err, "Could not preallocate new data");
  } else if (g.mode == PreallocMode::kFull) {
    const std::vector<uint8_t> zeroes(1 << 20, 0);
    for (uint64_t at = g.from; at < g.to; at += zeroes.size()) {
      Result<void> r =
          pwrite_all(fd, zeroes.data(), std::min<uint64_t>(zeroes.size(), g.to - at), at);
      if (!r) return r;
    }
  }
  if (::ftruncate(fd, off_t(g.to)) != 0 && g.mode != PreallocMode::kFull) {
    return errno_error(errno, "Could not resize file");
  }
  return {};
}

Result<CreateLayout> Builder::write(int fd, int data_fd) const {
  for (const Growth& g : image_growth_) {
    Result<void> r = apply_growth(fd, g);
    if (!r) return r.error();
  }
  for (const Growth& g : data_growth_) {
    Result<void> r = apply_growth(data_fd, g);
    if (!r) return r.error();
  }
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> writes;
  Result<std::vector<uint8_t>> header = header_cluster();
  if (!header) return header.error();
  writes.emplace_back(0, std::move(*header));
  alloc_.emit(writes);
  if (!l1_.empty()) {
    std::vector<uint8_t> bytes(l1_.size() * 8);
    for (size_t i = 0; i < l1_.size(); ++i) store_be64(&bytes[i * 8], l1_[i]);
    writes.emplace_back(l1_offset_, std::move(bytes));
  }
  for (const auto& [offset, entries] : l2_) {
    std::vector<uint8_t> bytes(cs_, 0);
    for (size_t i = 0; i < entries.size(); ++i) store_be64(&bytes[i * 8], entries[i]);
    writes.emplace_back(offset, std::move(bytes));
  }
  for (const auto& [offset, bytes] : writes) {
    Result<void> r = pwrite_all(fd, bytes.data(), bytes.size(), offset);
    if (!r) return r.error();
  }
  if (::ftruncate(fd, off_t(alloc_.file_len())) != 0) {
    return errno_error(errno, "Could not resize file");
  }
  if (::fsync(fd) != 0 || (data_fd >= 0 && ::fsync(data_fd) != 0)) {
    return errno_error(errno, "Could not flush image");
  }
  return CreateLayout{l1_offset_, uint32_t(l1_.size()), alloc_.reftable_offset(),
                      uint32_t(alloc_.reftable_clusters()), alloc_.file_len()};
}

// A file created (or truncated) for writing, closed and, unless kept, removed on destruction.
class NewFile {
 public:
  NewFile() = default;
  NewFile(const NewFile&) = delete;
  NewFile& operator=(const NewFile&) = delete;
  ~NewFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!keep_ && !path_.empty()) ::unlink(path_.c_str());
  }
  Result<void> open(const std::string& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      const int err = errno;
      path_.clear();
      return errno_error(err, fmt::format("Could not create '{}'", path));
    }
    return {};
  }
  int fd() const { return fd_; }
  void keep() { keep_ = true; }

 private:
  std::string path_;
  int fd_ = -1;
  bool keep_ = false;
};

}  // namespace

Result<void> validate_create_options(CreateOptions& o) {
  if (o.extended_l2 && o.version < 3) {
    return fail(EINVAL,
                "Extended L2 entries are only supported with compatibility level 1.1 and above "
                "(use version=v3 or greater)");
  }
  const uint64_t cs = o.cluster_size;
  if (cs < (uint64_t{1} << kMinClusterBits) || cs > (uint64_t{1} << kMaxClusterBits) ||
      !std::has_single_bit(cs)) {
    return fail(EINVAL, "Cluster size must be a power of two between {} and {}k",
                1u << kMinClusterBits, 1u << (kMaxClusterBits - 10));
  }
  if (o.extended_l2 && cs < (uint64_t{1} << kMinExtendedL2ClusterBits)) {
    return fail(EINVAL,
                "Extended L2 entries are only supported with cluster sizes of at least {} bytes",
                1u << kMinExtendedL2ClusterBits);
  }
  if (!o.backing_file.empty() && o.preallocation != PreallocMode::kOff && !o.extended_l2) {
    return fail(EINVAL,
                "Backing file and preallocation can only be used at the same time if "
                "extended_l2 is on");
  }
  if (o.backing_fmt && o.backing_file.empty()) {
    return fail(EINVAL, "Backing format cannot be used without backing file");
  }
  if (o.version < 3 && o.lazy_refcounts) {
    return fail(EINVAL,
                "Lazy refcounts only supported with compatibility level 1.1 and above (use "
                "version=v3 or greater)");
  }
  if (o.refcount_bits > 64 || !std::has_single_bit(o.refcount_bits)) {
    return fail(EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
  }
  if (o.version < 3 && o.refcount_bits != 16) {
    return fail(EINVAL,
                "Different refcount widths than 16 bits require compatibility level 1.1 or "
                "above (use version=v3 or greater)");
  }
  if (o.data_file_raw && o.data_file.empty()) {
    return fail(EINVAL, "data-file-raw requires data-file");
  }
  if (o.data_file_raw && !o.backing_file.empty()) {
    return fail(EINVAL, "Backing file and data-file-raw cannot be used at the same time");
  }
  // The data file must read as the image: the L1/L2 tables map it 1:1.
  if (o.data_file_raw && o.preallocation == PreallocMode::kOff) {
    o.preallocation = PreallocMode::kMetadata;
  }
  if (!o.data_file.empty() && o.version < 3) {
    return fail(EINVAL,
                "External data files are only supported with compatibility level 1.1 and above "
                "(use version=v3 or greater)");
  }
  if (o.compression_type && *o.compression_type != CompressionType::kZlib && o.version < 3) {
    return fail(EINVAL,
                "Non-zlib compression type is only supported with compatibility level 1.1 and "
                "above (use version=v3 or greater)");
  }
  return {};
}

Result<CreateLayout> create_qcow2(const std::string& filename, CreateOptions options) {
  options.size = round_up(options.size, 512);
  NewFile image, data;
  Result<void> opened = image.open(filename);
  if (!opened) return opened.error();
  if (!options.data_file.empty()) {
    opened = data.open(options.data_file);
    if (!opened) return opened.error();
  }
  Result<void> valid = validate_create_options(options);
  if (!valid) return valid.error();
  if (options.backing_file.size() > kMaxBackingFileNameSize) {
    return fail(EINVAL, "Could not assign backing file '{}' with format '{}': Invalid argument",
                options.backing_file, options.backing_fmt.value_or("(null)"));
  }
  Builder builder(options, uint32_t(std::countr_zero(options.cluster_size)));
  Result<void> built = builder.build();
  if (!built) return built.error();
  Result<CreateLayout> layout = builder.write(image.fd(), data.fd());
  if (!layout) return layout.error();
  image.keep();
  data.keep();
  return layout;
}

}  // namespace strata::qcow2
