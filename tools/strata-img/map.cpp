// strata-img map: where an image's data lives, walking block status down the backing chain,
// printed as qemu-img 7.2's img_map prints it.
//
// For each range, the layers are asked from the top down until one decides the content (data
// or zeroes); `depth` counts the layers passed. Adjacent ranges with the same meaning (and, for
// data, contiguous host offsets in the same file) merge into one entry. The human form lists
// only ranges with data (and so needs a host offset for each: compressed clusters make it fail,
// as qemu-img's does); JSON lists everything.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "image.h"
#include "image_chain.h"
#include "image_session.h"
#include "qemu_json.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

struct MapOptions {
  ImageSpec spec;
  OutputFormat output = OutputFormat::kHuman;
  uint64_t start_offset = 0;
  uint64_t max_length = INT64_MAX;
};

// qemu-img's MapEntry.
struct MapEntry {
  uint64_t start = 0;
  uint64_t length = 0;
  bool data = false;
  bool zero = false;
  bool present = false;
  uint64_t depth = 0;
  std::optional<uint64_t> offset;
  std::optional<std::string> filename;
};

enum LongOnly { kOutput = kFirstOwnOption };

constexpr LongOption kLongOptions[] = {
    {"help", false, 'h'},
    {"format", true, 'f'},
    {"output", true, kOutput},
    {"object", true, kObject},
    {"image-opts", false, kImageOpts},
    {"force-share", false, 'U'},
    {"start-offset", true, 's'},
    {"max-length", true, 'l'},
};

MapOptions parse_map_options(std::string_view prog, std::span<const std::string> args) {
  MapOptions o;
  o.spec.read_only = true;
  std::string output = "human";
  OptionParser parser(args, ":f:s:l:hU", kLongOptions);
  while (auto opt = next_option(prog, parser)) {
    if (apply_image_option(prog, *opt, o.spec)) continue;
    const std::string& arg = opt->arg;
    switch (opt->id) {
      case 's':
        o.start_offset = size_option(prog, "start offset", arg, INT64_MAX);
        break;
      case 'l':
        o.max_length = size_option(prog, "max length", arg, INT64_MAX);
        break;
      case kOutput:
        output = arg;
        break;
    }
  }
  o.spec.filename = image_filename_operand(prog, parser);
  o.output = output_format_option(prog, output);
  return o;
}

// The status of [offset, offset + bytes) down the chain: the first layer that holds data or
// zeroes decides (qemu-img's get_block_status).
Task<Result<MapEntry>> chain_status(const std::vector<ChainLayer>* chain, uint64_t offset,
                                    uint64_t bytes) {
  using F = BlockStatusFlags;
  BlockStatus st;
  uint64_t depth = 0;
  for (size_t i = 0; i < chain->size(); ++i) {
    auto query = (*chain)[i].node->block_status(offset, bytes);
    auto r = co_await query;
    if (!r) co_return r.error();
    st = *r;
    bytes = st.bytes;
    depth = i;
    if (has_flag(st.flags, F::kData) || has_flag(st.flags, F::kZero)) break;
    if (i + 1 == chain->size()) st.flags = F::kNone;  // no backing: nothing decided
  }
  MapEntry e;
  e.start = offset;
  e.length = bytes;
  e.data = has_flag(st.flags, F::kData);
  e.zero = has_flag(st.flags, F::kZero);
  e.present = has_flag(st.flags, F::kAllocated);
  e.depth = depth;
  if (has_flag(st.flags, F::kOffsetValid)) {
    e.offset = st.map;
    if (st.file != nullptr) e.filename = storage_name(*chain, *st.file);
  }
  co_return e;
}

// qemu-img's entry_mergeable.
bool mergeable(const MapEntry& curr, const MapEntry& next) {
  if (curr.length == 0) return false;
  if (curr.zero != next.zero || curr.data != next.data || curr.depth != next.depth ||
      curr.present != next.present || curr.filename != next.filename ||
      curr.offset.has_value() != next.offset.has_value()) {
    return false;
  }
  return !curr.offset || *curr.offset + curr.length == *next.offset;
}

// "%#-16" PRIx64: "0" for zero, else 0x-prefixed hex, left-aligned in 16 columns.
std::string hex_column(uint64_t v) {
  return fmt::format("{:<16}", v == 0 ? std::string("0") : fmt::format("{:#x}", v));
}

// qemu-img's dump_map_entry; false for the human form's "cannot show this" error. The human
// form folds "zero" and "no data" together in `next` so that more of them merge.
bool dump_entry(std::string_view prog, OutputFormat format, const MapEntry& e, MapEntry* next) {
  if (format == OutputFormat::kHuman) {
    if (e.data && !e.offset) {
      report_error(prog, "File contains external, encrypted or compressed clusters.");
      return false;
    }
    if (e.data && !e.zero) {
      fmt::print("{}{}{}{}\n", hex_column(e.start), hex_column(e.length),
                 hex_column(e.offset.value_or(0)), e.filename.value_or(""));
    }
    if (next != nullptr && (!next->data || next->zero)) {
      next->data = false;
      next->zero = true;
    }
    return true;
  }
  fmt::print(
      "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, "
      "\"data\": {}",
      e.start, e.length, e.depth, e.present, e.zero, e.data);
  if (e.offset) fmt::print(", \"offset\": {}", *e.offset);
  fmt::print("}}");
  if (next != nullptr) fmt::print(",\n");
  return true;
}

int map_image(std::string_view prog, const MapOptions& o, EventLoop& loop, Node& top) {
  const std::vector<ChainLayer> chain = image_chain(top, top.filename());
  const uint64_t size = top.size();
  const uint64_t end = o.max_length > size ? size : std::min(size, o.start_offset + o.max_length);
  if (o.output == OutputFormat::kHuman) {
    fmt::print("{:<16}{:<16}{:<16}{}\n", "Offset", "Length", "Mapped to", "File");
  } else {
    fmt::print("[");
  }
  MapEntry curr;
  curr.start = o.start_offset;
  while (curr.start + curr.length < end) {
    const uint64_t offset = curr.start + curr.length;
    auto next = run_sync(loop, chain_status(&chain, offset, end - offset));
    if (!next) {
      report_error(
          prog, fmt::format("Could not read file metadata: {}", std::strerror(next.error().err())));
      return 1;
    }
    if (mergeable(curr, *next)) {
      curr.length += next->length;
      continue;
    }
    if (curr.length > 0 && !dump_entry(prog, o.output, curr, &*next)) return 1;
    curr = *next;
  }
  if (!dump_entry(prog, o.output, curr, nullptr)) return 1;
  if (o.output == OutputFormat::kJson) fmt::print("]\n");
  return 0;
}

}  // namespace

int run_map(std::string_view prog, std::span<const std::string> args) {
  const MapOptions o = parse_map_options(prog, args);
  ImageSession session;
  if (!session.open(prog, o.spec, Perm::kConsistentRead, Perm::kAll)) return 1;
  return map_image(prog, o, session.loop(), session.node());
}

}  // namespace strata::tools::img
