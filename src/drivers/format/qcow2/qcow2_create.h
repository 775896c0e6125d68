// Creating qcow2 images the way qemu-img 7.2 does (qcow2_co_create and the truncate it ends
// with), so that a new Strata image is byte for byte the image qemu-img makes from the same
// options.
//
// QEMU writes a minimal image (header, a one-cluster refcount table, one refcount block), opens
// it, and grows it to the requested size: the L1 table, and with preallocation the L2 tables
// and data clusters, go wherever its cluster allocator puts them, with new refcount blocks and
// tables appearing as the allocator needs them. Strata replays that allocator on a model of the
// refcount structures (qcow2_create.cpp) and then writes the result with plain POSIX I/O.
//
// Thread safety: plain values; create_qcow2 does blocking I/O on the calling thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "format/qcow2/layout.h"
#include "strata/driver.h"
#include "strata/result.h"

namespace strata::qcow2 {

// QEMU's BlockdevCreateOptionsQcow2, with the defaults qcow2_co_create applies.
struct CreateOptions {
  uint64_t size = 0;  // bytes; create_qcow2 rounds it up to 512 as QEMU does
  uint32_t version = 3;
  uint64_t cluster_size = 65536;
  bool extended_l2 = false;
  PreallocMode preallocation = PreallocMode::kOff;
  std::string backing_file;                // empty: none
  std::optional<std::string> backing_fmt;  // set: given (even without a backing file)
  bool lazy_refcounts = false;
  uint64_t refcount_bits = 16;
  std::optional<CompressionType> compression_type;  // set: given
  std::string data_file;                            // empty: none
  bool data_file_raw = false;
};

// Turns `qemu-img create -o` values (strata/driver.h CreateOptionValues) into CreateOptions,
// failing as QEMU's QAPI visitor does for enum values ("Parameter 'version' does not accept
// value '2'", likewise 'preallocation', 'compression-type', 'backing-fmt').
Result<CreateOptions> create_options_from_values(const CreateOptionValues& values);

// qcow2_co_create's checks, in its order and with its texts (EINVAL): extended L2 and version,
// cluster size, backing file with preallocation, backing format without backing file, lazy
// refcounts and version, refcount width, data-file-raw, external data file and version, and
// compression type. With data_file_raw and preallocation off, sets preallocation to metadata,
// as QEMU does.
Result<void> validate_create_options(CreateOptions& options);

// Where the metadata of a new image lies; what create_qcow2 wrote (for tests).
struct CreateLayout {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint64_t file_length = 0;
};

// Validates `options` and writes the image at `filename` (and the data file), truncating what
// is there. On failure both files are removed, as qemu-img does. EFBIG when the size needs an
// L1 or refcount table larger than QEMU allows.
Result<CreateLayout> create_qcow2(const std::string& filename, CreateOptions options);

// The registry entry (strata/driver.h ImageCreator).
extern const ImageCreator kQcow2Creator;

}  // namespace strata::qcow2
