// MetadataCache: the L2 tables or the refcount blocks of one qcow2 image, kept in memory and
// written back lazily, in the order crash safety needs.
//
// Each entry is one cluster-sized table at a host offset, held as its on-disk (big-endian)
// bytes. A TableRef pins an entry while a caller uses it; eviction takes the least recently
// used unpinned entry, writing it back first if it is dirty. Writes go to the image file
// through the driver's metadata edge.
//
// Ordering (QEMU's scheme): a cache may depend on another (the L2 cache on the refcount cache:
// a new cluster's refcount must be on disk before an L2 entry that points to it) and on a flush
// of the file (guest data must be on disk before the L2 entry that points to it). Writing back
// a dirty table first writes back and flushes the cache it depends on, or flushes the file.
//
// Threading: event loop thread; every call is made under the driver's metadata lock, so two
// calls never interleave.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <unordered_map>

#include "layout.h"
#include "strata/child.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qcow2 {

class MetadataCache;

// Frees what allocate_table() allocated (4 KiB aligned, so O_DIRECT needs no bounce buffer).
struct AlignedDelete {
  void operator()(uint8_t* p) const { ::operator delete[](p, std::align_val_t(4096)); }
};
using TableBytes = std::unique_ptr<uint8_t[], AlignedDelete>;

// One cached table. Its bytes stay valid while a TableRef to it exists.
struct CachedTable {
  uint64_t offset = 0;
  TableBytes bytes;  // table_size bytes
  unsigned pins = 0;
  bool dirty = false;
  bool used = true;  // looked up since the last drop_unused()
};

class TableRef {
 public:
  TableRef() = default;
  explicit TableRef(CachedTable* t) : t_(t) { ++t_->pins; }
  TableRef(TableRef&& o) noexcept : t_(std::exchange(o.t_, nullptr)) {}
  TableRef& operator=(TableRef&& o) noexcept {
    if (this != &o) {
      reset();
      t_ = std::exchange(o.t_, nullptr);
    }
    return *this;
  }
  TableRef(const TableRef&) = delete;
  TableRef& operator=(const TableRef&) = delete;
  ~TableRef() { reset(); }
  void reset() {
    if (t_ != nullptr) --t_->pins;
    t_ = nullptr;
  }
  explicit operator bool() const { return t_ != nullptr; }
  uint64_t offset() const { return t_->offset; }
  uint8_t* data() const { return t_->bytes.get(); }
  uint64_t entry(size_t i) const { return load_be64(t_->bytes.get() + 8 * i); }
  void set_entry(size_t i, uint64_t v) const { store_be64(t_->bytes.get() + 8 * i, v); }
  CachedTable* table() const { return t_; }

 private:
  CachedTable* t_ = nullptr;
};

class MetadataCache {
 public:
  // `capacity` is the number of tables kept (at least 2 are always allowed).
  MetadataCache(std::string what, uint32_t table_size, size_t capacity);
  MetadataCache(const MetadataCache&) = delete;
  MetadataCache& operator=(const MetadataCache&) = delete;

  // The image file the tables live in; set once at open (and again if a reopen replaces the
  // edge's node, which keeps the same Child).
  void set_file(Child* file) { file_ = file; }

  // The table at `offset`, read from the file if it is not cached.
  Task<Result<TableRef>> get(uint64_t offset);
  // A table for a cluster that was just allocated: not read; zeroed.
  Task<Result<TableRef>> get_empty(uint64_t offset);
  void mark_dirty(const TableRef& ref) { ref.table()->dirty = true; }

  // Writes every dirty table (after what this cache depends on). Does not flush the file.
  Task<Result<void>> write_back();
  // Drops a table from the cache without writing it (its cluster was freed).
  void discard(uint64_t offset);
  // Drops every clean, unpinned table (reopen to read-only).
  void drop_clean();
  // Drops the clean, unpinned tables nobody looked up since the previous call
  // (cache-clean-interval, as QEMU's qcow2_cache_clean_unused).
  void drop_unused();
  // Changes how many tables are kept (reopen with a new cache size).
  void set_capacity(size_t capacity) { capacity_ = std::max<size_t>(capacity, 2); }

  // This cache's dirty tables may be written only after `other`'s are written and flushed.
  // If `other` itself depends on this cache, this cache is written back first to break the
  // cycle (hence a Task).
  Task<Result<void>> set_dependency(MetadataCache* other);
  // This cache's dirty tables may be written only after the file is flushed.
  void depends_on_flush() { depends_on_flush_ = true; }

  bool has_dirty() const;
  size_t size() const { return lru_.size(); }
  uint32_t table_size() const { return table_size_; }

 private:
  Task<Result<void>> write_dependencies();
  Task<Result<void>> write_table(CachedTable& t);
  // Makes room for one more table. May write back dirty tables.
  Task<Result<void>> make_room();
  CachedTable& insert(uint64_t offset);
  void touch(CachedTable& t);

  std::string what_;  // "L2 table", "refcount block": for messages
  uint32_t table_size_;
  size_t capacity_;
  Child* file_ = nullptr;
  MetadataCache* depends_ = nullptr;
  bool depends_on_flush_ = false;
  // Most recently used at the front.
  std::list<CachedTable> lru_;
  std::unordered_map<uint64_t, std::list<CachedTable>::iterator> index_;
};

}  // namespace strata::qcow2
