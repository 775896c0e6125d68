#include "cache.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <vector>

namespace strata::qcow2 {
namespace {

TableBytes allocate_table(uint32_t size) {
  return TableBytes(static_cast<uint8_t*>(::operator new[](size, std::align_val_t(4096))));
}

}  // namespace

MetadataCache::MetadataCache(std::string what, uint32_t table_size, size_t capacity)
    : what_(std::move(what)), table_size_(table_size), capacity_(std::max<size_t>(capacity, 2)) {}

bool MetadataCache::has_dirty() const {
  return std::any_of(lru_.begin(), lru_.end(), [](const CachedTable& t) { return t.dirty; });
}

void MetadataCache::drop_unused() {
  for (auto it = lru_.begin(); it != lru_.end();) {
    if (!it->used && !it->dirty && it->pins == 0) {
      index_.erase(it->offset);
      it = lru_.erase(it);
    } else {
      it->used = false;
      ++it;
    }
  }
}

void MetadataCache::touch(CachedTable& t) {
  t.used = true;
  auto it = index_.find(t.offset);
  if (it->second != lru_.begin()) lru_.splice(lru_.begin(), lru_, it->second);
}

CachedTable& MetadataCache::insert(uint64_t offset) {
  lru_.emplace_front();
  CachedTable& t = lru_.front();
  t.offset = offset;
  t.bytes = allocate_table(table_size_);
  index_[offset] = lru_.begin();
  return t;
}

Task<Result<void>> MetadataCache::make_room() {
  if (lru_.size() < capacity_) co_return Result<void>{};
  // The least recently used unpinned table goes; a dirty one is written back first, together
  // with every other dirty table (one dependency flush for all of them).
  for (int pass = 0; pass < 2; ++pass) {
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      if (it->pins != 0) continue;
      if (it->dirty) continue;
      index_.erase(it->offset);
      lru_.erase(std::next(it).base());
      co_return Result<void>{};
    }
    if (pass == 0) {
      auto task = write_back();
      auto r = co_await task;
      if (!r) co_return r;
    }
  }
  // Everything is pinned: grow past the capacity for now; the next insert tries again.
  co_return Result<void>{};
}

Task<Result<TableRef>> MetadataCache::get(uint64_t offset) {
  if (auto it = index_.find(offset); it != index_.end()) {
    touch(*it->second);
    co_return TableRef(&*it->second);
  }
  auto room = make_room();
  auto made = co_await room;
  if (!made) co_return made.error();
  CachedTable& t = insert(offset);
  TableRef ref(&t);
  auto read = file_->read(offset, table_size_, IoVec(t.bytes.get(), table_size_));
  auto r = co_await read;
  if (!r) {
    ref.reset();
    index_.erase(offset);
    lru_.remove_if([offset](const CachedTable& x) { return x.offset == offset; });
    co_return r.error().prefixed(fmt::format("Could not read {} at offset {:#x}", what_, offset));
  }
  co_return ref;
}

Task<Result<TableRef>> MetadataCache::get_empty(uint64_t offset) {
  if (auto it = index_.find(offset); it != index_.end()) {
    touch(*it->second);
    std::memset(it->second->bytes.get(), 0, table_size_);
    co_return TableRef(&*it->second);
  }
  auto room = make_room();
  auto made = co_await room;
  if (!made) co_return made.error();
  CachedTable& t = insert(offset);
  std::memset(t.bytes.get(), 0, table_size_);
  co_return TableRef(&t);
}

void MetadataCache::discard(uint64_t offset) {
  auto it = index_.find(offset);
  if (it == index_.end()) return;
  // A pinned table stays (its user still holds it) but will not be written.
  it->second->dirty = false;
  if (it->second->pins != 0) return;
  lru_.erase(it->second);
  index_.erase(it);
}

void MetadataCache::drop_clean() {
  for (auto it = lru_.begin(); it != lru_.end();) {
    if (!it->dirty && it->pins == 0) {
      index_.erase(it->offset);
      it = lru_.erase(it);
    } else {
      ++it;
    }
  }
}

Task<Result<void>> MetadataCache::set_dependency(MetadataCache* other) {
  if (other->depends_ == this) {
    auto task = write_back();
    auto r = co_await task;
    if (!r) co_return r;
    auto sync = file_->flush();
    auto s = co_await sync;
    if (!s) co_return s;
    other->depends_ = nullptr;
  }
  if (depends_ == nullptr) depends_ = other;
  co_return Result<void>{};
}

Task<Result<void>> MetadataCache::write_dependencies() {
  if (depends_ != nullptr) {
    MetadataCache* dep = std::exchange(depends_, nullptr);
    auto task = dep->write_back();
    auto r = co_await task;
    if (!r) co_return r;
    depends_on_flush_ = true;  // what it wrote must be on disk before ours
  }
  if (depends_on_flush_) {
    auto task = file_->flush();
    auto r = co_await task;
    if (!r) co_return r;
    depends_on_flush_ = false;
  }
  co_return Result<void>{};
}

Task<Result<void>> MetadataCache::write_table(CachedTable& t) {
  TableRef pin(&t);
  auto task = file_->write(t.offset, table_size_, IoVec(t.bytes.get(), table_size_));
  auto r = co_await task;
  if (!r) {
    co_return r.error().prefixed(
        fmt::format("Could not write {} at offset {:#x}", what_, t.offset));
  }
  t.dirty = false;
  co_return Result<void>{};
}

Task<Result<void>> MetadataCache::write_back() {
  if (!has_dirty()) co_return Result<void>{};
  auto deps = write_dependencies();
  auto d = co_await deps;
  if (!d) co_return d;
  // In offset order: sequential writes for the file, and a deterministic order for tests.
  std::vector<CachedTable*> dirty;
  for (CachedTable& t : lru_) {
    if (t.dirty) dirty.push_back(&t);
  }
  std::sort(dirty.begin(), dirty.end(),
            [](const CachedTable* a, const CachedTable* b) { return a->offset < b->offset; });
  for (CachedTable* t : dirty) {
    if (!t->dirty) continue;
    auto task = write_table(*t);
    auto r = co_await task;
    if (!r) co_return r;
  }
  co_return Result<void>{};
}

}  // namespace strata::qcow2
