#include "block_commands.h"

#include <cerrno>
#include <utility>

#include "strata/child.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::daemon {
namespace {

using qmp::Json;

constexpr std::string_view kCommandNames[] = {
    "qmp_capabilities", "query-version", "query-commands",          "quit",
    "blockdev-add",     "blockdev-del",  "query-named-block-nodes",
};

// OptionReader works on nlohmann::json; QMP keeps ordered_json for its output order.
nlohmann::json plain(const Json& value) { return nlohmann::json::parse(value.dump()); }

Result<void> expect_no_arguments(const Json& arguments) {
  for (auto it = arguments.begin(); it != arguments.end(); ++it) {
    return fail(EINVAL, "Parameter '{}' is unexpected", it.key());
  }
  return {};
}

std::string_view detect_zeroes_name(DetectZeroes mode) {
  switch (mode) {
    case DetectZeroes::kOn:
      return "on";
    case DetectZeroes::kUnmap:
      return "unmap";
    case DetectZeroes::kOff:
      break;
  }
  return "off";
}

Node* backing_of(Node& node) {
  Child* backing = node.child("backing");
  return backing ? &backing->node() : nullptr;
}

Json image_info(Node& node, bool flat) {
  Json image = Json::object();
  image["virtual-size"] = node.size();
  image["filename"] = node.filename();
  image["format"] = node.driver_class().name;
  // QEMU's backing-filename is the name in the image header, which the engine does not expose;
  // it is left out rather than guessed from the backing node.
  Node* backing = backing_of(node);
  if (backing && !flat) image["backing-image"] = image_info(*backing, false);
  return image;
}

Task<Result<Json>> blockdev_add(Engine* engine, Json arguments) {
  auto node = co_await engine->add_node(plain(arguments), OptionSyntax::kJson);
  if (!node) co_return node.error();
  co_return Json::object();
}

Task<Result<Json>> blockdev_del(Engine* engine, Json arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader reader(args, OptionSyntax::kJson);
  auto name = reader.get_string("node-name");
  if (!name) co_return name.error();
  if (!*name) co_return reader.missing("node-name");
  if (auto done = reader.finish(); !done) co_return done.error();
  auto deleted = co_await engine->delete_node(**name);
  if (!deleted) co_return deleted.error();
  co_return Json::object();
}

Result<Json> query_named_block_nodes(Engine& engine, const Json& arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader reader(args, OptionSyntax::kJson);
  auto flat = reader.get_bool("flat");
  if (!flat) return flat.error();
  if (auto done = reader.finish(); !done) return done.error();
  Json list = Json::array();
  for (Node* node : engine.nodes()) {
    // Automatically named nodes ("#block1") are listed too, as QEMU does.
    list.push_back(node_info(*node, flat->value_or(false)));
  }
  return list;
}

}  // namespace

Json node_info(Node& node, bool flat) {
  NodeAccess access = node.access();
  const NodeOptions& options = node.options();
  int depth = 0;
  for (Node* n = backing_of(node); n; n = backing_of(*n)) ++depth;
  Json info = Json::object();
  info["file"] = node.filename();
  info["node-name"] = node.name();
  info["ro"] = access.read_only;
  info["drv"] = node.driver_class().name;
  // Observed from QEMU 7.2: the backing node's filename, also for a backing given by reference
  // (while image.backing-filename, the header's name, is absent then).
  if (Node* backing = backing_of(node)) info["backing_file"] = backing->filename();
  info["backing_file_depth"] = depth;
  info["encrypted"] = false;
  info["detect_zeroes"] = detect_zeroes_name(options.detect_zeroes);
  // Strata has no I/O throttling on nodes: QEMU's limits are reported as "none" (0).
  for (const char* key : {"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr"}) info[key] = 0;
  info["image"] = image_info(node, flat);
  // writeback is a property of the device in front of the node; a node is always writeback.
  info["cache"] = Json{
      {"writeback", true}, {"direct", options.cache_direct}, {"no-flush", options.cache_no_flush}};
  info["write_threshold"] = 0;
  info["auto-read-only"] = access.auto_read_only;
  info["x-storage-read-write"] = access.storage_read_write;
  return info;
}

BlockCommands::BlockCommands(Engine& engine, Json version, std::function<void()> on_quit)
    : engine_(&engine), version_(std::move(version)), on_quit_(std::move(on_quit)) {}

std::vector<std::string> BlockCommands::names() const {
  return {std::begin(kCommandNames), std::end(kCommandNames)};
}

bool BlockCommands::has(std::string_view name) const {
  for (std::string_view known : kCommandNames) {
    if (known == name && known != "qmp_capabilities") return true;
  }
  return false;
}

Task<Result<Json>> BlockCommands::run(std::string name, Json arguments) {
  if (name == "blockdev-add") {
    auto added = co_await blockdev_add(engine_, std::move(arguments));
    co_return added;
  }
  if (name == "blockdev-del") {
    auto deleted = co_await blockdev_del(engine_, std::move(arguments));
    co_return deleted;
  }
  if (name == "query-named-block-nodes") co_return query_named_block_nodes(*engine_, arguments);
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  if (name == "query-version") co_return version_;
  if (name == "query-commands") {
    Json list = Json::array();
    for (std::string_view command : kCommandNames) list.push_back(Json{{"name", command}});
    co_return list;
  }
  if (name == "quit") {
    engine_->loop().post(on_quit_);
    co_return Json::object();
  }
  co_return fail(ErrorClass::kCommandNotFound, EINVAL, "The command {} has not been found", name);
}

}  // namespace strata::daemon
