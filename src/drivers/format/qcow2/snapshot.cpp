// The qcow2 snapshot table (QEMU's qcow2_do_read_snapshots and qcow2_write_snapshots).
#include "snapshot.h"

#include <algorithm>
#include <cerrno>

#include "layout.h"
#include "strata/align.h"
#include "strata/checked.h"

namespace strata::qcow2 {
namespace {

// Fixed part of an entry.
constexpr uint64_t kEntryHeaderSize = 40;
// The extra data QEMU knows and always writes: vm_state_size (64), disk_size, icount.
constexpr uint64_t kKnownExtraSize = 24;
constexpr uint64_t kExtraWithDiskSize = 16;

struct EntrySizes {
  uint32_t extra;
  uint16_t id;
  uint16_t name;
  uint64_t total() const { return kEntryHeaderSize + extra + id + name; }
};

EntrySizes entry_sizes(const uint8_t* p) {
  return {load_be32(p + 36), load_be16(p + 12), load_be16(p + 14)};
}

Snapshot decode_entry(const uint8_t* p, EntrySizes sizes) {
  Snapshot s;
  s.l1_table_offset = load_be64(p);
  s.l1_size = load_be32(p + 8);
  s.date_sec = load_be32(p + 16);
  s.date_nsec = load_be32(p + 20);
  s.vm_clock_nsec = load_be64(p + 24);
  s.vm_state_size = load_be32(p + 32);
  const uint8_t* extra = p + kEntryHeaderSize;
  s.extra_data.assign(extra, extra + sizes.extra);
  if (sizes.extra >= 8) s.vm_state_size = load_be64(extra);
  if (sizes.extra >= kExtraWithDiskSize) s.disk_size = load_be64(extra + 8);
  if (sizes.extra >= kKnownExtraSize) s.icount = load_be64(extra + 16);
  const char* id = reinterpret_cast<const char*>(extra + sizes.extra);
  s.id.assign(id, sizes.id);
  s.name.assign(id + sizes.id, sizes.name);
  // QEMU keeps them as C strings: anything after a NUL is lost.
  s.id.resize(s.id.find('\0') == std::string::npos ? s.id.size() : s.id.find('\0'));
  s.name.resize(s.name.find('\0') == std::string::npos ? s.name.size() : s.name.find('\0'));
  return s;
}

}  // namespace

Result<std::vector<Snapshot>> decode_snapshot_table(std::span<const uint8_t> table, uint32_t count,
                                                    uint32_t /*version*/) {
  std::vector<Snapshot> out;
  uint64_t offset = 0;
  for (uint32_t i = 0; i < count; ++i) {
    offset = align_up(offset, 8);
    if (!range_within(offset, kEntryHeaderSize, table.size())) {
      return fail(EIO, "Failed to read snapshot table: entry {} is truncated", i);
    }
    EntrySizes sizes = entry_sizes(&table[offset]);
    if (sizes.extra > kMaxSnapshotExtraData) {
      return fail(EFBIG, "Too much extra metadata in snapshot table entry {}", i)
          .with_hint("You can force-remove this extra metadata with qemu-img check -r all");
    }
    if (offset + sizes.total() > kMaxSnapshotTableBytes) {
      return fail(EFBIG, "Snapshot table is too big")
          .with_hint(fmt::format(
              "You can force-remove all {} overhanging snapshots with qemu-img check -r all",
              count - i));
    }
    if (!range_within(offset, sizes.total(), table.size())) {
      return fail(EIO, "Failed to read snapshot table: entry {} is truncated", i);
    }
    out.push_back(decode_entry(&table[offset], sizes));
    offset += sizes.total();
  }
  return out;
}

uint64_t snapshot_table_bytes(std::span<const uint8_t> table, uint32_t count) {
  uint64_t offset = 0;
  for (uint32_t i = 0; i < count && offset <= kMaxSnapshotTableBytes; ++i) {
    offset = align_up(offset, 8);
    if (!range_within(offset, kEntryHeaderSize, table.size())) return offset + kEntryHeaderSize;
    offset += entry_sizes(&table[offset]).total();
  }
  return offset;
}

bool snapshot_entry_incomplete(const Snapshot& snapshot, uint32_t version) {
  return version >= 3 && !snapshot.disk_size;
}

std::vector<uint8_t> encode_snapshot_table(std::span<const Snapshot> snapshots) {
  std::vector<uint8_t> out;
  for (const Snapshot& s : snapshots) {
    std::vector<uint8_t> extra = s.extra_data;
    if (extra.size() < kKnownExtraSize) extra.resize(kKnownExtraSize, 0);
    store_be64(&extra[0], s.vm_state_size);
    store_be64(&extra[8], s.disk_size.value_or(0));
    store_be64(&extra[16], s.icount.value_or(~uint64_t{0}));

    size_t at = align_up(out.size(), 8);
    out.resize(at + kEntryHeaderSize, 0);
    uint8_t* p = &out[at];
    store_be64(p, s.l1_table_offset);
    store_be32(p + 8, s.l1_size);
    store_be16(p + 12, static_cast<uint16_t>(s.id.size()));
    store_be16(p + 14, static_cast<uint16_t>(s.name.size()));
    store_be32(p + 16, s.date_sec);
    store_be32(p + 20, s.date_nsec);
    store_be64(p + 24, s.vm_clock_nsec);
    // Older readers take a 0 as "no VM state" rather than a truncated size.
    store_be32(p + 32, s.vm_state_size <= UINT32_MAX ? uint32_t(s.vm_state_size) : 0);
    store_be32(p + 36, static_cast<uint32_t>(extra.size()));
    out.insert(out.end(), extra.begin(), extra.end());
    out.insert(out.end(), s.id.begin(), s.id.end());
    out.insert(out.end(), s.name.begin(), s.name.end());
  }
  return out;
}

}  // namespace strata::qcow2
