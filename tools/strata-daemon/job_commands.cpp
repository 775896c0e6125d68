// The job commands (job_commands.h): argument checks in QAPI's order, then QEMU's lookups and
// texts (blockdev.c qmp_block_commit / qmp_block_stream, job-qmp.c, blockjob.c), then the
// JobManager or the job's start function.
#include "job_commands.h"

#include <stdlib.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <optional>
#include <string>
#include <utility>

#include "commit.h"
#include "mirror.h"
#include "strata/block_backend.h"
#include "strata/child.h"
#include "strata/engine.h"
#include "strata/job.h"
#include "strata/node.h"
#include "strata/options.h"
#include "stream.h"

namespace strata::daemon {
namespace {

using qmp::Json;

nlohmann::json plain(const Json& value) { return nlohmann::json::parse(value.dump()); }
Json wire(const nlohmann::json& value) { return Json::parse(value.dump()); }

Result<JobManager*> manager_of(BlockCommands& commands) {
  if (commands.jobs() == nullptr) return fail(ENOTSUP, "This daemon runs no jobs");
  return commands.jobs();
}

// ---- the backing chain, as QEMU walks it ----

// bdrv_filter_or_cow_bs: a filter's filtered child, else the backing child.
Node* chain_next(const Node& node) {
  for (Child* c : node.children()) {
    if (has_role(c->role(), ChildRole::kFiltered)) return &c->node();
  }
  Child* backing = node.child("backing");
  return backing != nullptr ? &backing->node() : nullptr;
}

Node* skip_filters(Node* node) {
  while (node != nullptr && node->driver_class().kind == DriverKind::kFilter) {
    node = chain_next(*node);
  }
  return node;
}

// bdrv_chain_contains: `target` is `top` or below it.
bool chain_contains(Node& top, const Node& target) {
  for (Node* it = &top; it != nullptr; it = chain_next(*it)) {
    if (it == &target) return true;
  }
  return false;
}

std::string real_path(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (resolved == nullptr) return path;
  std::string out(resolved);
  ::free(resolved);
  return out;
}

// bdrv_find_backing_image: the node below `active` whose image is `filename` (compared as given,
// then as resolved paths, as QEMU does for non-protocol names).
Node* find_backing_image(Node& active, const std::string& filename) {
  std::string wanted = real_path(filename);
  for (Node* it = chain_next(active); it != nullptr; it = chain_next(*it)) {
    if (it->driver_class().kind == DriverKind::kFilter) continue;
    std::string name = it->filename();
    if (name.empty()) continue;
    if (name == filename || real_path(name) == wanted) return it;
  }
  return nullptr;
}

// QEMU's bdrv_is_root_node: every parent is a user (BlockBackend); a node or a job edge above
// makes it an inner node.
bool is_root(Node& node) {
  for (Child* edge : node.parents()) {
    if (dynamic_cast<BlockBackend*>(&edge->parent()) == nullptr) return false;
  }
  return true;
}

// bdrv_lookup_bs(NULL, name): "Cannot find device='' nor node-name='x'".
Result<Node*> find_node_named(Engine& engine, const std::string& name) {
  if (Node* node = engine.find_node(name)) return node;
  return fail(EINVAL, "Cannot find device='' nor node-name='{}'", name);
}

// bdrv_lookup_bs(device, device): a named user's node, else a node.
Node* find_device(Engine& engine, const std::string& device) {
  if (!device.empty()) {
    if (BlockBackend* user = engine.find_backend(device)) return &user->node();
  }
  return engine.find_node(device);
}

// QEMU's id_wellformed.
bool id_wellformed(std::string_view id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

// ---- arguments ----

// The members every job-starting command shares, read in QAPI's order by the caller.
struct CommonJobArgs {
  std::optional<std::string> job_id;
  std::string device;
  std::optional<int64_t> speed;
  std::optional<std::string> on_error;
  std::optional<std::string> filter_node_name;
  std::optional<bool> auto_finalize;
  std::optional<bool> auto_dismiss;
};

// A job without job-id is named after its device: a BlockBackend name, which a node does not
// have, so QEMU's job_create sees "" and refuses it as malformed. That check (and the other
// job-id checks, in JobManager::add) come before any graph change, as in QEMU.
Result<JobOptions> job_options(const CommonJobArgs& args) {
  JobOptions options;
  options.id = args.job_id.value_or("");
  if (!id_wellformed(options.id)) return fail(EINVAL, "Invalid job ID '{}'", options.id);
  options.speed = args.speed.value_or(0);
  if (args.on_error) options.on_error = parse_on_error(*args.on_error).value_or(options.on_error);
  options.auto_finalize = args.auto_finalize.value_or(true);
  options.auto_dismiss = args.auto_dismiss.value_or(true);
  return options;
}

// QAPI's enum check, made as the member is visited.
std::optional<Error> check_on_error(const std::optional<std::string>& name) {
  if (!name || parse_on_error(*name)) return std::nullopt;
  return fail(EINVAL, "Parameter 'on-error' does not accept value '{}'", *name);
}

// Reads one optional member into `out` unless an earlier member failed; a type error goes to
// `error` (QAPI stops at the first bad member).
template <class T, class Getter>
void read_member(Getter getter, std::optional<T>& out, std::optional<Error>& error) {
  if (error) return;
  auto value = getter();
  if (!value) {
    error = value.error();
    return;
  }
  out = *value;
}

// The members block-commit and block-stream both start with (job-id, device) and end with
// (speed, on-error, filter-node-name, auto-finalize, auto-dismiss), in QAPI's order.
void read_job_head(OptionReader& r, CommonJobArgs& common, std::optional<Error>& error) {
  std::optional<std::string> device;
  read_member([&r] { return r.get_string("job-id"); }, common.job_id, error);
  read_member([&r] { return r.get_string("device"); }, device, error);
  if (!error && !device) error = r.missing("device");
  if (device) common.device = *device;
}

void read_job_tail(OptionReader& r, CommonJobArgs& common, std::optional<Error>& error) {
  read_member([&r] { return r.get_int("speed"); }, common.speed, error);
  read_member([&r] { return r.get_string("on-error"); }, common.on_error, error);
  if (!error) error = check_on_error(common.on_error);
  read_member([&r] { return r.get_string("filter-node-name"); }, common.filter_node_name, error);
  read_member([&r] { return r.get_bool("auto-finalize"); }, common.auto_finalize, error);
  read_member([&r] { return r.get_bool("auto-dismiss"); }, common.auto_dismiss, error);
}

struct CommitRequest {
  CommonJobArgs common;
  std::optional<std::string> base_node, base, top_node, top, backing_file;
  std::optional<bool> backing_mask_protocol;
};

// QAPI's visit of block-commit's arguments: each member's type in order, then `device` present,
// then no unknown member.
Result<CommitRequest> read_commit_args(const nlohmann::json& args) {
  OptionReader r(args, OptionSyntax::kJson);
  CommitRequest req;
  std::optional<Error> error;
  auto str = [&r](const char* key) { return [&r, key] { return r.get_string(key); }; };
  read_job_head(r, req.common, error);
  read_member(str("base-node"), req.base_node, error);
  read_member(str("base"), req.base, error);
  read_member(str("top-node"), req.top_node, error);
  read_member(str("top"), req.top, error);
  read_member(str("backing-file"), req.backing_file, error);
  read_member([&r] { return r.get_bool("backing-mask-protocol"); }, req.backing_mask_protocol,
              error);
  read_job_tail(r, req.common, error);
  if (error) return *error;
  if (auto done = r.finish(); !done) return done.error();
  return req;
}

struct CommitNodes {
  Node* device = nullptr;
  Node* top = nullptr;
  Node* base = nullptr;
};

// qmp_block_commit's device and top lookups.
Result<CommitNodes> find_commit_top(Engine& engine, const CommitRequest& req) {
  CommitNodes nodes;
  // libvirt probes for block-commit by the DeviceNotFound class: this lookup comes first.
  nodes.device = find_device(engine, req.common.device);
  if (nodes.device == nullptr) {
    return fail(ErrorClass::kDeviceNotFound, ENODEV, "Device '{}' not found", req.common.device);
  }
  if (!is_root(*nodes.device)) return fail(EINVAL, "Need a root block node");
  nodes.top = nodes.device;
  if (req.top_node && req.top) {
    return fail(EINVAL, "'top-node' and 'top' are mutually exclusive");
  } else if (req.top_node) {
    auto top = find_node_named(engine, *req.top_node);
    if (!top) return top.error();
    if (!chain_contains(*nodes.device, **top)) {
      return fail(EINVAL, "'{}' is not in this backing file chain", *req.top_node);
    }
    nodes.top = *top;
  } else if (req.top && nodes.device->filename() != *req.top) {
    nodes.top = find_backing_image(*nodes.device, *req.top);
  }
  if (nodes.top == nullptr) {
    return fail(EINVAL, "Top image file {} not found", req.top.value_or("NULL"));
  }
  return nodes;
}

// qmp_block_commit's base lookup and the checks that follow it.
Result<CommitNodes> find_commit_nodes(Engine& engine, const CommitRequest& req) {
  auto found = find_commit_top(engine, req);
  if (!found) return found.error();
  CommitNodes nodes = *found;
  if (req.base_node && req.base) {
    return fail(EINVAL, "'base-node' and 'base' are mutually exclusive");
  } else if (req.base_node) {
    auto base = find_node_named(engine, *req.base_node);
    if (!base) return base.error();
    if (!chain_contains(*nodes.top, **base)) {
      return fail(EINVAL, "'{}' is not in this backing file chain", *req.base_node);
    }
    nodes.base = *base;
  } else if (req.base) {
    nodes.base = find_backing_image(*nodes.top, *req.base);
    if (nodes.base == nullptr) {
      return fail(EINVAL, "Can't find '{}' in the backing chain", *req.base);
    }
  } else {
    // bdrv_find_base: the bottom of top's chain (top itself without a backing file, which the
    // next check refuses; QEMU's "There is no backimg image" cannot happen with a node).
    nodes.base = nodes.top;
    while (Node* next = chain_next(*nodes.base)) nodes.base = next;
  }
  if (nodes.top == nodes.base) return fail(EINVAL, "cannot commit an image into itself");
  return nodes;
}

// ---- the verbs ----

Result<std::string> read_only_string(const Json& arguments, const char* key) {
  nlohmann::json args = plain(arguments);
  OptionReader r(args, OptionSyntax::kJson);
  auto value = r.get_string(key);
  if (!value) return value.error();
  if (!*value) return r.missing(key);
  if (auto done = r.finish(); !done) return done.error();
  return **value;
}

using SimpleVerb = Result<void> (JobManager::*)(std::string_view, JobApi);

Task<Result<Json>> simple_verb(BlockCommands& commands, Json arguments, const char* key,
                               SimpleVerb verb, JobApi api) {
  auto id = read_only_string(arguments, key);
  if (!id) co_return id.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  auto done = ((*manager)->*verb)(*id, api);
  if (!done) co_return done.error();
  co_return Json::object();
}

Task<Result<Json>> finalize_verb(BlockCommands& commands, Json arguments, JobApi api) {
  auto id = read_only_string(arguments, "id");
  if (!id) co_return id.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  auto finalize = (*manager)->finalize(*id, api);
  auto done = co_await finalize;
  if (!done) co_return done.error();
  co_return Json::object();
}

}  // namespace

Task<Result<Json>> block_commit(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  auto req = read_commit_args(args);
  if (!req) co_return req.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  Engine& engine = commands.engine();
  auto nodes = find_commit_nodes(engine, *req);
  if (!nodes) co_return nodes.error();
  // Active commit is needed when someone writes to top, or top is the device itself.
  bool top_is_active = skip_filters(nodes->top) == skip_filters(nodes->device);
  bool top_has_writer = has_any(nodes->top->cumulative_perm(), Perm::kWrite);
  if ((top_is_active || top_has_writer) && req->backing_file) {
    co_return fail(EINVAL, "'backing-file' specified, but 'top' {}",
                   top_is_active ? "is the active layer" : "has a writer on it");
  }
  auto options = job_options(req->common);
  if (!options) co_return options.error();
  if (top_is_active || top_has_writer) {
    ActiveCommitArgs active{nodes->top, nodes->base, req->common.filter_node_name.value_or("")};
    auto start = start_active_commit_job(**manager, engine, std::move(*options), active);
    auto started = co_await start;
    if (!started) co_return started.error();
    co_return Json::object();
  }
  CommitArgs commit_args{nodes->top, nodes->base, req->backing_file.value_or(""),
                         req->backing_mask_protocol.value_or(false),
                         req->common.filter_node_name.value_or("")};
  auto start = start_commit_job(**manager, engine, std::move(*options), std::move(commit_args));
  auto started = co_await start;
  if (!started) co_return started.error();
  co_return Json::object();
}

namespace {

struct StreamRequest {
  CommonJobArgs common;
  std::optional<std::string> base, base_node, backing_file, bottom;
  std::optional<bool> backing_mask_protocol;
};

Result<StreamRequest> read_stream_args(const nlohmann::json& args) {
  OptionReader r(args, OptionSyntax::kJson);
  StreamRequest req;
  std::optional<Error> error;
  auto str = [&r](const char* key) { return [&r, key] { return r.get_string(key); }; };
  read_job_head(r, req.common, error);
  read_member(str("base"), req.base, error);
  read_member(str("base-node"), req.base_node, error);
  read_member(str("backing-file"), req.backing_file, error);
  read_member([&r] { return r.get_bool("backing-mask-protocol"); }, req.backing_mask_protocol,
              error);
  read_member(str("bottom"), req.bottom, error);
  read_job_tail(r, req.common, error);
  if (error) return *error;
  if (auto done = r.finish(); !done) return done.error();
  return req;
}

// qmp_block_stream's checks, in its order.
Result<StreamArgs> find_stream_nodes(Engine& engine, const StreamRequest& req) {
  if (req.base && req.base_node) {
    return fail(EINVAL, "'base' and 'base-node' cannot be specified at the same time");
  }
  if (req.base && req.bottom) {
    return fail(EINVAL, "'base' and 'bottom' cannot be specified at the same time");
  }
  if (req.bottom && req.base_node) {
    return fail(EINVAL, "'bottom' and 'base-node' cannot be specified at the same time");
  }
  StreamArgs out;
  out.device = find_device(engine, req.common.device);
  if (out.device == nullptr) {
    return fail(EINVAL, "Cannot find device='{}' nor node-name='{}'", req.common.device,
                req.common.device);
  }
  if (req.base) {
    out.base = find_backing_image(*out.device, *req.base);
    if (out.base == nullptr) return fail(EINVAL, "Can't find '{}' in the backing chain", *req.base);
  }
  if (req.base_node) {
    auto base = find_node_named(engine, *req.base_node);
    if (!base) return base.error();
    if (*base == out.device || !chain_contains(*out.device, **base)) {
      return fail(EINVAL, "Node '{}' is not a backing image of '{}'", *req.base_node,
                  req.common.device);
    }
    out.base = *base;
  }
  if (req.bottom) {
    auto bottom = find_node_named(engine, *req.bottom);
    if (!bottom) return bottom.error();
    if ((*bottom)->driver_class().kind == DriverKind::kFilter) {
      return fail(EINVAL, "Node '{}' is a filter, use a non-filter node as 'bottom'", *req.bottom);
    }
    if (!chain_contains(*out.device, **bottom)) {
      return fail(EINVAL, "Node '{}' is not in a chain starting from '{}'", *req.bottom,
                  req.common.device);
    }
    out.bottom = *bottom;
  }
  if (out.base == nullptr && req.backing_file) {
    return fail(EINVAL, "backing file specified, but streaming the entire chain");
  }
  out.backing_file = req.backing_file.value_or("");
  out.backing_mask_protocol = req.backing_mask_protocol.value_or(false);
  out.filter_node_name = req.common.filter_node_name.value_or("");
  return out;
}

}  // namespace

Task<Result<Json>> block_stream(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  auto req = read_stream_args(args);
  if (!req) co_return req.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  Engine& engine = commands.engine();
  auto stream_args = find_stream_nodes(engine, *req);
  if (!stream_args) co_return stream_args.error();
  auto options = job_options(req->common);
  if (!options) co_return options.error();
  auto start = start_stream_job(**manager, engine, std::move(*options), std::move(*stream_args));
  auto started = co_await start;
  if (!started) co_return started.error();
  co_return Json::object();
}

Task<Result<Json>> query_jobs(BlockCommands& commands, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  if (commands.jobs() == nullptr) co_return Json::array();
  co_return wire(commands.jobs()->query_jobs());
}

Task<Result<Json>> query_block_jobs(BlockCommands& commands, Json arguments) {
  if (auto none = expect_no_arguments(arguments); !none) co_return none.error();
  if (commands.jobs() == nullptr) co_return Json::array();
  co_return wire(commands.jobs()->query_block_jobs());
}

Task<Result<Json>> job_pause(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "id", &JobManager::pause, JobApi::kJob);
}

Task<Result<Json>> job_resume(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "id", &JobManager::resume, JobApi::kJob);
}

Task<Result<Json>> job_complete(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "id", &JobManager::complete, JobApi::kJob);
}

Task<Result<Json>> job_dismiss(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "id", &JobManager::dismiss, JobApi::kJob);
}

Task<Result<Json>> job_finalize(BlockCommands& commands, Json arguments) {
  return finalize_verb(commands, std::move(arguments), JobApi::kJob);
}

Task<Result<Json>> job_cancel(BlockCommands& commands, Json arguments) {
  auto id = read_only_string(arguments, "id");
  if (!id) co_return id.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  auto cancel = (*manager)->cancel(*id, true, JobApi::kJob);
  auto done = co_await cancel;
  if (!done) co_return done.error();
  co_return Json::object();
}

Task<Result<Json>> block_job_pause(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "device", &JobManager::pause,
                     JobApi::kBlockJob);
}

Task<Result<Json>> block_job_resume(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "device", &JobManager::resume,
                     JobApi::kBlockJob);
}

Task<Result<Json>> block_job_complete(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "device", &JobManager::complete,
                     JobApi::kBlockJob);
}

// block-job-finalize and block-job-dismiss take `id`, not `device` (QEMU's schema).
Task<Result<Json>> block_job_dismiss(BlockCommands& commands, Json arguments) {
  return simple_verb(commands, std::move(arguments), "id", &JobManager::dismiss, JobApi::kBlockJob);
}

Task<Result<Json>> block_job_finalize(BlockCommands& commands, Json arguments) {
  return finalize_verb(commands, std::move(arguments), JobApi::kBlockJob);
}

Task<Result<Json>> block_job_set_speed(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader r(args, OptionSyntax::kJson);
  auto device = r.get_string("device");
  if (!device) co_return device.error();
  if (!*device) co_return r.missing("device");
  auto speed = r.get_int("speed");
  if (!speed) co_return speed.error();
  if (!*speed) co_return r.missing("speed");
  if (auto done = r.finish(); !done) co_return done.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  auto set = (*manager)->set_speed(**device, **speed, JobApi::kBlockJob);
  if (!set) co_return set.error();
  co_return Json::object();
}

Task<Result<Json>> block_job_cancel(BlockCommands& commands, Json arguments) {
  nlohmann::json args = plain(arguments);
  OptionReader r(args, OptionSyntax::kJson);
  auto device = r.get_string("device");
  if (!device) co_return device.error();
  if (!*device) co_return r.missing("device");
  auto force = r.get_bool("force");
  if (!force) co_return force.error();
  if (auto done = r.finish(); !done) co_return done.error();
  auto manager = manager_of(commands);
  if (!manager) co_return manager.error();
  auto cancel = (*manager)->cancel(**device, force->value_or(false), JobApi::kBlockJob);
  auto done = co_await cancel;
  if (!done) co_return done.error();
  co_return Json::object();
}

}  // namespace strata::daemon
