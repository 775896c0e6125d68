#include "block_commands.h"

#include <cerrno>
#include <utility>

#include "job_commands.h"
#include "strata/block_backend.h"
#include "strata/event_loop.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::daemon {
namespace {

using qmp::Json;

// OptionReader works on nlohmann::json; QMP keeps ordered_json for its output order.
nlohmann::json plain(const Json& value) { return nlohmann::json::parse(value.dump()); }

Task<Result<Json>> query_version(BlockCommands& commands, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  co_return commands.version();
}

Task<Result<Json>> query_commands(BlockCommands&, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  Json list = Json::array();
  for (const CommandSpec& command : BlockCommands::commands()) {
    list.push_back(Json{{"name", command.name}});
  }
  co_return list;
}

Task<Result<Json>> quit(BlockCommands& commands, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  commands.quit();
  co_return Json::object();
}

// The server answers qmp_capabilities itself; the row exists for query-commands and the schema.
Task<Result<Json>> capabilities(BlockCommands&, Json) {
  co_return fail(ErrorClass::kCommandNotFound, EINVAL,
                 "Capabilities negotiation is already complete, command ignored");
}

Task<Result<Json>> blockdev_add(BlockCommands& commands, Json arguments) {
  auto add = commands.engine().add_node(plain(arguments), OptionSyntax::kJson);
  auto node = co_await add;
  if (!node) co_return node.error();
  co_return Json::object();
}

Task<Result<Json>> blockdev_del(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader reader(args, OptionSyntax::kJson);
  auto name = reader.get_string("node-name");
  if (!name) co_return name.error();
  if (!*name) co_return reader.missing("node-name");
  if (auto done = reader.finish(); !done) co_return done.error();
  auto del = commands.engine().delete_node(**name);
  auto deleted = co_await del;
  if (!deleted) co_return deleted.error();
  co_return Json::object();
}

// {options: [BlockdevOptions, ...]}: every entry is checked as QAPI would ("options[0].x")
// before the engine looks any node up.
Task<Result<Json>> blockdev_reopen(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader reader(args, OptionSyntax::kJson);
  const nlohmann::json* options = reader.take("options");
  if (options == nullptr) co_return reader.missing("options");
  if (!options->is_array()) {
    co_return fail(EINVAL, "Invalid parameter type for 'options', expected: array");
  }
  std::vector<nlohmann::json> entries;
  for (size_t i = 0; i < options->size(); ++i) {
    std::string prefix = fmt::format("options[{}].", i);
    auto checked = commands.engine().check_options((*options)[i], OptionSyntax::kJson, prefix);
    if (!checked) co_return checked.error();
    entries.push_back((*options)[i]);
  }
  if (auto done = reader.finish(); !done) co_return done.error();
  auto reopen = commands.engine().reopen(std::move(entries));
  auto reopened = co_await reopen;
  if (!reopened) co_return reopened.error();
  co_return Json::object();
}

// QEMU's bdrv_lookup_bs: a user (BlockBackend) by `device`, else a node by `node-name`.
Result<Node*> lookup_node(Engine& engine, const std::optional<std::string>& device,
                          const std::optional<std::string>& node_name) {
  if (device && !device->empty()) {
    if (BlockBackend* user = engine.find_backend(*device)) return &user->node();
  }
  if (node_name) {
    if (Node* node = engine.find_node(*node_name)) return node;
  }
  return fail(EINVAL, "Cannot find device='{}' nor node-name='{}'", device.value_or(""),
              node_name.value_or(""));
}

// block_resize {device?, node-name?, size}: as QEMU's qmp_block_resize, through a temporary
// user that holds RESIZE and shares everything.
Task<Result<Json>> block_resize(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader reader(args, OptionSyntax::kJson);
  auto device = reader.get_string("device");
  if (!device) co_return device.error();
  auto node_name = reader.get_string("node-name");
  if (!node_name) co_return node_name.error();
  auto size = reader.get_int("size");
  if (!size) co_return size.error();
  if (!*size) co_return reader.missing("size");
  if (auto done = reader.finish(); !done) co_return done.error();
  auto node = lookup_node(commands.engine(), *device, *node_name);
  if (!node) co_return node.error();
  if (**size < 0) co_return fail(EINVAL, "Parameter 'size' expects a >0 size");
  auto user = commands.engine().attach_backend(**node, "", Perm::kResize, Perm::kAll);
  if (!user) co_return user.error();
  if ((*node)->is_read_only()) co_return fail(EACCES, "Image is read-only");
  auto truncate = (*user)->truncate(static_cast<uint64_t>(**size), false, PreallocMode::kOff);
  auto resized = co_await truncate;
  if (!resized) co_return resized.error();
  co_return Json::object();
}

constexpr SchemaMember kCapabilitiesArgs[] = {{"enable", "[QMPCapability]", true}};
constexpr SchemaMember kNodeNameArg[] = {{"node-name", "str"}};
constexpr SchemaMember kReopenArgs[] = {{"options", "[BlockdevOptions]"}};
constexpr SchemaMember kFlatArg[] = {{"flat", "bool", true}};
constexpr SchemaMember kResizeArgs[] = {
    {"device", "str", true}, {"node-name", "str", true}, {"size", "int"}};

constexpr CommandSpec kCommands[] = {
    {"qmp_capabilities", kCapabilitiesArgs, "", "", &capabilities},
    {"query-version", {}, "", "VersionInfo", &query_version},
    {"query-commands", {}, "", "[CommandInfo]", &query_commands},
    {"query-qmp-schema", {}, "", "[SchemaInfo]", &query_qmp_schema},
    {"quit", {}, "", "", &quit},
    {"blockdev-add", {}, "BlockdevOptions", "", &blockdev_add},
    {"blockdev-del", kNodeNameArg, "", "", &blockdev_del},
    {"blockdev-reopen", kReopenArgs, "", "", &blockdev_reopen},
    {"query-named-block-nodes", kFlatArg, "", "[BlockDeviceInfo]", &query_named_block_nodes},
    {"query-block", {}, "", "[BlockInfo]", &query_block},
    {"x-debug-query-block-graph", {}, "", "XDbgBlockGraph", &query_block_graph},
    {"block_resize", kResizeArgs, "", "", &block_resize},
    {"block-commit", kBlockCommitArgs, "", "", &block_commit},
    {"block-stream", kBlockStreamArgs, "", "", &block_stream},
    {"query-jobs", {}, "", "[JobInfo]", &query_jobs},
    {"job-pause", kJobIdArg, "", "", &job_pause},
    {"job-resume", kJobIdArg, "", "", &job_resume},
    {"job-cancel", kJobIdArg, "", "", &job_cancel},
    {"job-complete", kJobIdArg, "", "", &job_complete},
    {"job-dismiss", kJobIdArg, "", "", &job_dismiss},
    {"job-finalize", kJobIdArg, "", "", &job_finalize},
    {"query-block-jobs", {}, "", "[BlockJobInfo]", &query_block_jobs},
    {"block-job-set-speed", kBlockJobSetSpeedArgs, "", "", &block_job_set_speed},
    {"block-job-cancel", kBlockJobCancelArgs, "", "", &block_job_cancel},
    {"block-job-pause", kBlockJobDeviceArg, "", "", &block_job_pause},
    {"block-job-resume", kBlockJobDeviceArg, "", "", &block_job_resume},
    {"block-job-complete", kBlockJobDeviceArg, "", "", &block_job_complete},
    {"block-job-dismiss", kJobIdArg, "", "", &block_job_dismiss},
    {"block-job-finalize", kJobIdArg, "", "", &block_job_finalize},
};

constexpr SchemaMember kStorageAccessData[] = {{"node-name", "str"}, {"read-write", "bool"}};
constexpr EventSpec kEvents[] = {
    {kStorageAccessEvent, kStorageAccessData},       {"JOB_STATUS_CHANGE", kJobStatusChangeData},
    {"BLOCK_JOB_COMPLETED", kBlockJobCompletedData}, {"BLOCK_JOB_CANCELLED", kBlockJobProgressData},
    {"BLOCK_JOB_ERROR", kBlockJobErrorData},         {"BLOCK_JOB_READY", kBlockJobProgressData},
    {"BLOCK_JOB_PENDING", kBlockJobPendingData},
};

}  // namespace

Result<void> expect_no_arguments(const Json& arguments) {
  for (auto it = arguments.begin(); it != arguments.end(); ++it) {
    return fail(EINVAL, "Parameter '{}' is unexpected", it.key());
  }
  return {};
}

BlockCommands::BlockCommands(Engine& engine, Json version, std::function<void()> on_quit)
    : engine_(&engine), version_(std::move(version)), on_quit_(std::move(on_quit)) {
  std::shared_ptr<EventSink> sink = sink_;
  engine.add_access_listener([sink](Node& node, bool read_write) {
    if (sink->server == nullptr) return;
    sink->server->broadcast_event(kStorageAccessEvent,
                                  Json{{"node-name", node.name()}, {"read-write", read_write}});
  });
}

// The engine keeps the listener; it must not reach a server that is gone.
BlockCommands::~BlockCommands() { sink_->server = nullptr; }

void BlockCommands::send_events_to(qmp::QmpServer& server) { sink_->server = &server; }

std::span<const CommandSpec> BlockCommands::commands() { return kCommands; }
std::span<const EventSpec> BlockCommands::events() { return kEvents; }

std::vector<std::string> BlockCommands::names() const {
  std::vector<std::string> names;
  for (const CommandSpec& command : kCommands) names.emplace_back(command.name);
  return names;
}

bool BlockCommands::has(std::string_view name) const {
  if (name == "qmp_capabilities") return false;
  for (const CommandSpec& command : kCommands) {
    if (command.name == name) return true;
  }
  return false;
}

Task<Result<Json>> BlockCommands::run(std::string name, Json arguments) {
  for (const CommandSpec& command : kCommands) {
    if (command.name != name || name == "qmp_capabilities") continue;
    auto task = command.run(*this, std::move(arguments));
    co_return co_await task;
  }
  co_return fail(ErrorClass::kCommandNotFound, EINVAL, "The command {} has not been found", name);
}

}  // namespace strata::daemon
