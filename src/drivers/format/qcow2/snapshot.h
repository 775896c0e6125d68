// The qcow2 internal snapshot table: decoding (list, read a snapshot's data) and encoding (so
// that a rewrite preserves it).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "strata/result.h"

namespace strata::qcow2 {

struct Snapshot {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;  // the 64-bit field of the extra data when present, else the 32-bit
  std::optional<uint64_t> disk_size;  // extra data, v3
  std::optional<uint64_t> icount;     // extra data, optional
  std::vector<uint8_t> extra_data;    // all extra data bytes as read (kept on rewrite)
  bool operator==(const Snapshot&) const = default;
};

// QEMU's limits: snapshots per image, extra data per entry, bytes in the whole table.
inline constexpr uint32_t kMaxSnapshots = 65536;
inline constexpr uint32_t kMaxSnapshotExtraData = 1024;
inline constexpr uint64_t kMaxSnapshotTableBytes = 1024ull * kMaxSnapshots;

// Decodes `count` entries from `table` (the bytes from snapshots_offset on; entries start at
// multiples of 8). Errors with QEMU's texts: EFBIG "Too much extra metadata in snapshot table
// entry <i>" and EFBIG "Snapshot table is too big" (both with QEMU's hint to use qemu-img check
// -r all); EIO "Failed to read snapshot table: entry <i> is truncated" when `table` ends inside an
// entry (see snapshot_table_bytes). `version` is the image's version: v3 entries should carry
// extra data up to disk_size, but QEMU opens images whose entries do not (only qemu-img check
// reports them, see snapshot_entry_incomplete), so decoding accepts them too.
Result<std::vector<Snapshot>> decode_snapshot_table(std::span<const uint8_t> table, uint32_t count,
                                                    uint32_t version);
// How many bytes the table of `count` entries occupies (without padding after the last entry),
// as far as `table` shows. When `table` is too short to tell, the result is larger than
// table.size(): read that many bytes and ask again. Stops growing once the table passes
// kMaxSnapshotTableBytes (decode then reports it as too big).
uint64_t snapshot_table_bytes(std::span<const uint8_t> table, uint32_t count);
// True if a v3 entry lacks the extra data up to disk_size (qemu-img check: "snapshot table entry
// <i> is incomplete").
bool snapshot_entry_incomplete(const Snapshot& snapshot, uint32_t version);
// Encodes the table as QEMU writes it: entries at multiples of 8 (no padding after the last),
// each with at least 24 bytes of extra data (vm_state_size, disk_size (0 if unknown), icount
// (all ones if unknown)), followed by the rest of `extra_data` past those 24 bytes, if any; the
// 32-bit vm_state_size is 0 when the size does not fit it.
std::vector<uint8_t> encode_snapshot_table(std::span<const Snapshot> snapshots);

}  // namespace strata::qcow2
