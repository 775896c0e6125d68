// qcow2's answers to `info`: the format-specific data (QEMU's ImageInfoSpecificQCow2), the
// cluster size, dirty bit and recorded backing file, and the internal snapshot list.
#include <nlohmann/json.hpp>

#include "qcow2.h"
#include "snapshot.h"
#include "strata/child.h"
#include "strata/node.h"

namespace strata::qcow2 {

// The keys go in the order of QEMU's QAPI type, so a front end that reorders them the way QEMU's
// dictionaries do (by hash bucket, ties by insertion) gets QEMU's order. What is left out follows
// qcow2_get_specific_info: v2 reports compat, refcount bits and compression type only; the data
// file name appears when the image records one, "data-file-raw" whenever a data file is in use.
std::string Qcow2Driver::specific_info_json() const {
  nlohmann::ordered_json data;
  const bool v3 = header_.version >= 3;
  data["compat"] = v3 ? "1.1" : "0.10";
  if (v3) {
    if (header_.data_file) data["data-file"] = *header_.data_file;
    if (header_.has_data_file()) {
      data["data-file-raw"] = (header_.autoclear_features & autoclear::kDataFileRaw) != 0;
    }
    data["extended-l2"] = header_.extended_l2();
    data["lazy-refcounts"] = (header_.compatible_features & compat::kLazyRefcounts) != 0;
    data["corrupt"] = (header_.incompatible_features & incompat::kCorrupt) != 0;
  }
  data["refcount-bits"] = header_.refcount_bits();
  data["compression-type"] = header_.compression_type == CompressionType::kZstd ? "zstd" : "zlib";
  return data.dump();
}

ImageFacts Qcow2Driver::image_facts() const {
  ImageFacts facts;
  facts.cluster_size = header_.cluster_size();
  facts.dirty = (header_.incompatible_features & incompat::kDirty) != 0;
  facts.backing_file = header_.backing_file;
  if (header_.backing_format) facts.backing_format = *header_.backing_format;
  if (header_.data_file) facts.data_file = *header_.data_file;
  return facts;
}

// Reads the table in steps: snapshot_table_bytes says how much more it needs to see until it
// knows the table's length (entries have variable length).
Task<Result<std::vector<Snapshot>>> Qcow2Driver::read_snapshot_table() {
  if (header_.nb_snapshots == 0) co_return std::vector<Snapshot>{};
  std::vector<uint8_t> table;
  uint64_t want = snapshot_table_bytes(table, header_.nb_snapshots);
  while (want > table.size() && table.size() <= kMaxSnapshotTableBytes) {
    const uint64_t have = table.size();
    table.resize(want);
    auto read = file_->read(header_.snapshots_offset + have, want - have,
                            IoVec(table.data() + have, want - have));
    auto r = co_await read;
    if (!r) co_return r.error().prefixed("Failed to read snapshot table");
    want = snapshot_table_bytes(table, header_.nb_snapshots);
  }
  co_return decode_snapshot_table(table, header_.nb_snapshots, header_.version);
}

Task<Result<std::vector<SnapshotInfo>>> Qcow2Driver::list_snapshots() {
  std::vector<SnapshotInfo> out;
  auto read = read_snapshot_table();
  auto decoded = co_await read;
  if (!decoded) co_return decoded.error();
  for (const Snapshot& s : *decoded) {
    SnapshotInfo info;
    info.id = s.id;
    info.name = s.name;
    info.vm_state_size = s.vm_state_size;
    info.date_sec = s.date_sec;
    info.date_nsec = s.date_nsec;
    info.vm_clock_nsec = s.vm_clock_nsec;
    // QEMU writes all ones for "no icount recorded".
    if (s.icount && *s.icount != ~uint64_t{0}) info.icount = s.icount;
    out.push_back(std::move(info));
  }
  co_return out;
}

}  // namespace strata::qcow2
