// The daemon's QMP commands: QEMU's names and argument shapes over an Engine.
//
//   query-version, query-commands, query-qmp-schema, quit,
//   blockdev-add (BlockdevOptions), blockdev-del {node-name}, blockdev-reopen {options},
//   query-named-block-nodes {flat?}, query-block, x-debug-query-block-graph,
//   block_resize {device?, node-name?, size}
//   and the job commands (job_commands.h): block-commit, block-stream, query-jobs, job-*,
//   query-block-jobs, block-job-*; their events JOB_STATUS_CHANGE and BLOCK_JOB_*
//
// One table (kCommands in block_commands.cpp) lists every command with its handler and its
// schema; query-commands and query-qmp-schema are both derived from it, so they cannot drift.
// Every command checks its arguments completely before it changes anything, with QEMU's texts
// ("Parameter 'x' is unexpected", "Parameter 'node-name' is missing").
//
// Strata's extension: the event __org.strata_BLOCK_STORAGE_ACCESS {node-name, read-write},
// sent when a node's storage switches between read-only and read-write (docs/qmp.md).
//
// Threading: event loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qmp_server.h"
#include "strata/engine.h"
#include "strata/job.h"

namespace strata::daemon {

// The storage-access event's name: a downstream extension (`__RFQDN_` prefix, qmp-spec.rst).
inline constexpr std::string_view kStorageAccessEvent = "__org.strata_BLOCK_STORAGE_ACCESS";

class BlockCommands;

// One member of a schema object type. `type` is a schema type name ("str", "[BlockDeviceInfo]").
struct SchemaMember {
  std::string_view name;
  std::string_view type;
  bool optional = false;
};

// A command's row in the table: its handler and what query-qmp-schema says about it.
struct CommandSpec {
  std::string_view name;
  std::span<const SchemaMember> arguments;  // the arg-type's members
  std::string_view arg_type;                // a named arg-type ("BlockdevOptions") or ""
  std::string_view ret_type;                // "" for the empty object
  Task<Result<qmp::Json>> (*run)(BlockCommands& commands, qmp::Json arguments);
};

// An event's row: what query-qmp-schema says about it.
struct EventSpec {
  std::string_view name;
  std::span<const SchemaMember> data;
};

class BlockCommands final : public qmp::CommandSet {
 public:
  // `version` is query-version's answer; `on_quit` runs, posted to the loop, after `quit`
  // has been answered.
  BlockCommands(Engine& engine, qmp::Json version, std::function<void()> on_quit);
  ~BlockCommands() override;

  // Sends the storage-access event to `server`'s clients from now on (until this object goes).
  void send_events_to(qmp::QmpServer& server);

  std::vector<std::string> names() const override;
  bool has(std::string_view name) const override;
  Task<Result<qmp::Json>> run(std::string name, qmp::Json arguments) override;

  Engine& engine() { return *engine_; }
  // The jobs the job commands run; without one (set_jobs not called) they refuse.
  JobManager* jobs() { return jobs_; }
  void set_jobs(JobManager& jobs) { jobs_ = &jobs; }
  const qmp::Json& version() const { return version_; }
  void quit() { engine_->loop().post(on_quit_); }

  // Every command, in query-commands' order, and every event.
  static std::span<const CommandSpec> commands();
  static std::span<const EventSpec> events();

 private:
  struct EventSink {
    qmp::QmpServer* server = nullptr;
  };

  Engine* engine_;
  JobManager* jobs_ = nullptr;
  qmp::Json version_;
  std::function<void()> on_quit_;
  // Shared with the engine's access listener, which outlives this object.
  std::shared_ptr<EventSink> sink_ = std::make_shared<EventSink>();
};

// query-named-block-nodes' entry for one node (QEMU's BlockDeviceInfo keys, plus Strata's
// auto-read-only and x-storage-read-write). Without `flat`, image carries the backing chain
// as nested backing-image entries.
qmp::Json node_info(Node& node, bool flat);

// The query commands (node_queries.cpp).
Task<Result<qmp::Json>> query_named_block_nodes(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> query_block(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> query_block_graph(BlockCommands& commands, qmp::Json arguments);
// x-debug-query-block-graph's answer.
qmp::Json block_graph(Engine& engine);

// query-qmp-schema (schema.cpp).
Task<Result<qmp::Json>> query_qmp_schema(BlockCommands& commands, qmp::Json arguments);
qmp::Json qmp_schema();

// "Parameter 'x' is unexpected" for the first argument of a command that takes none.
Result<void> expect_no_arguments(const qmp::Json& arguments);

}  // namespace strata::daemon
