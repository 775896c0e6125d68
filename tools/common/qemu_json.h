// Printing values the way QEMU's tools print them, so that `strata-img info --output=json` and
// friends are byte-identical to qemu-img's.
//
// QEMU builds its JSON output from QDicts, which are hash tables of 512 buckets (tdb_hash of the
// key), each bucket a list with the newest entry first; printing walks the buckets in order. So
// the key order of `qemu-img info --output=json` is neither alphabetical nor the QAPI order:
// it is this hash order, and scripts that diff outputs see it. qemu_json_pretty reproduces it
// from an ordered_json whose keys were inserted in the order QEMU's visitor inserts them (the
// QAPI field order; it only matters for keys that share a bucket).
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace strata::tools {

// qemu-img's --output formats: "human" or "json"; nullopt for anything else.
enum class OutputFormat { kHuman, kJson };
std::optional<OutputFormat> parse_output_format(std::string_view text);

// QEMU's QDict bucket of `key` (tdb_hash(key) % 512).
unsigned qdict_bucket(std::string_view key);

// qobject_to_json_pretty: four-space indentation, objects in QDict order, strings escaped as
// QEMU escapes them (non-ASCII and control characters as \uXXXX with upper-case hex). No
// trailing newline.
std::string qemu_json_pretty(const nlohmann::ordered_json& value);

// The human form of a dictionary as `qemu-img info` prints the format-specific data (block/qapi.c
// dump_qdict): one "key: value" line per entry, in QDict order, dashes in keys shown as spaces,
// nested dictionaries and lists indented by four spaces per level starting at `indentation`.
std::string qemu_dump_dict(const nlohmann::ordered_json& dict, int indentation);

// QEMU's size_to_str: three significant digits and a binary unit ("0 B", "324 KiB", "64 MiB",
// "1.5 GiB"), switching unit once the number would reach 1000.
std::string qemu_size_to_str(uint64_t value);

}  // namespace strata::tools
