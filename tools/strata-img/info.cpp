// strata-img info: what an image is (format, sizes, backing file, snapshots, format-specific
// facts), printed as qemu-img 7.2 prints it (block/qapi.c bdrv_image_info_dump, and QAPI
// ImageInfo as JSON in QEMU's dictionary order, see qemu_json.h).
//
// Like qemu-img, info opens the image without its backing file, so that an image whose backing
// file is missing can still be inspected; --backing-chain opens the whole chain and reports
// every layer, naming each backing file as QEMU does (image_chain.h).
#include <fmt/format.h>

#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "cli.h"
#include "image.h"
#include "image_chain.h"
#include "image_session.h"
#include "qemu_json.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "subcommand.h"

namespace strata::tools::img {
namespace {

using nlohmann::ordered_json;

struct InfoOptions {
  ImageSpec spec;
  OutputFormat output = OutputFormat::kHuman;
  bool backing_chain = false;
};

enum LongOnly { kOutput = kFirstOwnOption, kBackingChain };

constexpr LongOption kLongOptions[] = {
    {"help", false, 'h'},        {"format", true, 'f'},
    {"output", true, kOutput},   {"backing-chain", false, kBackingChain},
    {"object", true, kObject},   {"image-opts", false, kImageOpts},
    {"force-share", false, 'U'},
};

InfoOptions parse_info_options(std::string_view prog, std::span<const std::string> args) {
  InfoOptions o;
  o.spec.read_only = true;
  std::string output = "human";
  OptionParser parser(args, ":f:hU", kLongOptions);
  while (auto opt = next_option(prog, parser)) {
    if (apply_image_option(prog, *opt, o.spec)) continue;
    switch (opt->id) {
      case kOutput:
        output = opt->arg;
        break;
      case kBackingChain:
        o.backing_chain = true;
        break;
    }
  }
  o.spec.filename = image_filename_operand(prog, parser);
  o.output = output_format_option(prog, output);
  return o;
}

// QEMU's SnapshotInfo as JSON, fields in QAPI order.
ordered_json snapshot_json(const SnapshotInfo& s) {
  ordered_json j;
  j["id"] = s.id;
  j["name"] = s.name;
  j["vm-state-size"] = s.vm_state_size;
  j["date-sec"] = s.date_sec;
  j["date-nsec"] = s.date_nsec;
  j["vm-clock-sec"] = s.vm_clock_nsec / 1000000000;
  j["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000;
  if (s.icount) j["icount"] = *s.icount;
  return j;
}

// QEMU's ImageInfo for one layer, fields in QAPI order (which decides ties in QDict order).
ordered_json layer_json(const ChainLayer& layer, const std::vector<SnapshotInfo>& snapshots) {
  Node& node = *layer.node;
  ordered_json j;
  j["filename"] = layer.filename;
  j["format"] = node.driver_class().name;
  j["dirty-flag"] = layer.facts.dirty;
  if (auto actual = allocated_file_size(node)) j["actual-size"] = *actual;
  j["virtual-size"] = node.size();
  if (layer.facts.cluster_size != 0) j["cluster-size"] = layer.facts.cluster_size;
  if (!layer.facts.backing_file.empty()) {
    j["backing-filename"] = layer.facts.backing_file;
    j["full-backing-filename"] = layer.full_backing_filename;
  }
  if (!layer.facts.backing_format.empty()) {
    j["backing-filename-format"] = layer.facts.backing_format;
  }
  if (!snapshots.empty()) {
    ordered_json list = ordered_json::array();
    for (const SnapshotInfo& s : snapshots) list.push_back(snapshot_json(s));
    j["snapshots"] = std::move(list);
  }
  const std::string specific = node.driver().specific_info_json();
  if (!specific.empty()) {
    ordered_json data = ordered_json::parse(specific, nullptr, false);
    if (!data.is_discarded()) {
      ordered_json spec;
      spec["type"] = node.driver_class().name;
      spec["data"] = std::move(data);
      j["format-specific"] = std::move(spec);
    }
  }
  return j;
}

// One row of the snapshot table (block/qapi.c bdrv_snapshot_dump); nullptr gives the heading.
std::string snapshot_row(const ordered_json* s) {
  if (s == nullptr) {
    return fmt::format("{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}", "ID", "TAG", "VM SIZE", "DATE",
                       "VM CLOCK", "ICOUNT");
  }
  const auto date_sec = (*s)["date-sec"].get<uint64_t>();
  const auto clock_sec = (*s)["vm-clock-sec"].get<uint64_t>();
  const auto clock_nsec = (*s)["vm-clock-nsec"].get<uint64_t>();
  std::tm tm{};
  const std::time_t t = static_cast<std::time_t>(date_sec);
  localtime_r(&t, &tm);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  const std::string clock =
      fmt::format("{:02}:{:02}:{:02}.{:03}", clock_sec / 3600, (clock_sec / 60) % 60,
                  clock_sec % 60, clock_nsec / 1000000);
  const std::string icount =
      s->contains("icount") ? std::to_string((*s)["icount"].get<int64_t>()) : std::string();
  return fmt::format("{:<9} {:<16} {:>8}{:>20}{:>13}{:>11}", (*s)["id"].get<std::string>(),
                     (*s)["name"].get<std::string>(),
                     qemu_size_to_str((*s)["vm-state-size"].get<uint64_t>()), date, clock, icount);
}

// block/qapi.c bdrv_image_info_dump.
void print_human(const ordered_json& j) {
  const std::string disk_size = j.contains("actual-size")
                                    ? qemu_size_to_str(j["actual-size"].get<uint64_t>())
                                    : std::string("unavailable");
  const auto virtual_size = j["virtual-size"].get<uint64_t>();
  fmt::print("image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n",
             j["filename"].get<std::string>(), j["format"].get<std::string>(),
             qemu_size_to_str(virtual_size), virtual_size, disk_size);
  if (j.contains("cluster-size"))
    fmt::print("cluster_size: {}\n", j["cluster-size"].get<uint64_t>());
  if (j["dirty-flag"].get<bool>()) fmt::print("cleanly shut down: no\n");
  if (j.contains("backing-filename")) {
    const auto backing = j["backing-filename"].get<std::string>();
    const auto full = j["full-backing-filename"].get<std::string>();
    fmt::print("backing file: {}", backing);
    if (backing != full) fmt::print(" (actual path: {})", full);
    fmt::print("\n");
  }
  if (j.contains("backing-filename-format")) {
    fmt::print("backing file format: {}\n", j["backing-filename-format"].get<std::string>());
  }
  if (j.contains("snapshots")) {
    fmt::print("Snapshot list:\n{}\n", snapshot_row(nullptr));
    for (const auto& s : j["snapshots"]) fmt::print("{}\n", snapshot_row(&s));
  }
  if (j.contains("format-specific")) {
    fmt::print("Format specific information:\n{}", qemu_dump_dict(j["format-specific"]["data"], 1));
  }
}

// The options to open `spec` with: without --backing-chain, a format that has backing files
// opens without them (backing=null), as qemu-img's BDRV_O_NO_BACKING does.
ImageSpec open_spec(const InfoOptions& o, Engine& engine) {
  ImageSpec spec = o.spec;
  if (o.backing_chain) return spec;
  auto opts = image_options(spec, [](std::string_view) { return false; });
  if (!opts) return spec;
  auto driver = opts->find("driver");
  if (driver == opts->end() || !driver->is_string()) return spec;
  const DriverClass* d = engine.find_driver(driver->get<std::string>());
  if (d != nullptr && d->supports_backing) spec.extra["backing"] = "";
  return spec;
}

// The layers' ImageInfo, or an error message to report.
Result<ordered_json> collect(EventLoop& loop, Node& top, const std::string& name, bool chain) {
  ordered_json list = ordered_json::array();
  for (const ChainLayer& layer : image_chain(top, name)) {
    auto snapshots = run_sync(loop, layer.node->driver().list_snapshots());
    if (!snapshots) return snapshots.error();
    list.push_back(layer_json(layer, *snapshots));
    if (!chain) break;
  }
  return list;
}

}  // namespace

int run_info(std::string_view prog, std::span<const std::string> args) {
  const InfoOptions o = parse_info_options(prog, args);
  ImageSession session;
  const ImageSpec spec = open_spec(o, session.engine());
  if (!session.open(prog, spec, Perm::kConsistentRead, Perm::kAll)) return 1;
  auto infos = collect(session.loop(), session.node(), session.node().filename(), o.backing_chain);
  session.close();
  if (!infos) {
    report_error(prog, infos.error().message(), infos.error().hint());
    return 1;
  }
  if (o.output == OutputFormat::kJson) {
    fmt::print("{}\n", qemu_json_pretty(o.backing_chain ? *infos : (*infos)[0]));
    return 0;
  }
  bool first = true;
  for (const auto& info : *infos) {
    if (!first) fmt::print("\n");
    first = false;
    print_human(info);
  }
  return 0;
}

}  // namespace strata::tools::img
