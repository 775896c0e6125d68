// The daemon's job commands: QEMU's names, argument shapes, defaults and texts over a
// JobManager (strata/job.h) and the jobs in src/jobs.
//
//   block-commit, block-stream,
//   query-jobs, job-pause, job-resume, job-cancel, job-complete, job-finalize, job-dismiss,
//   query-block-jobs, block-job-set-speed, block-job-cancel, block-job-pause, block-job-resume,
//   block-job-complete, block-job-finalize, block-job-dismiss
//
// Each command checks all of its arguments, in QAPI's member order, before anything changes
// (no job is created for a refused command). block-commit and block-stream look `device` up as
// QEMU's qmp_block_commit / qmp_block_stream do, in their order and with their texts; Strata
// has no named devices (BlockBackends with names made by -drive), so `device` is a node-name.
// Active commit (top is the active layer or has a writer) is not implemented yet and is refused
// with a GenericError saying so.
//
// The rows below feed BlockCommands' table (block_commands.cpp), so query-commands and
// query-qmp-schema list exactly these commands and their events.
//
// Threading: event loop thread only.
#pragma once

#include "block_commands.h"

namespace strata::daemon {

Task<Result<qmp::Json>> block_commit(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_stream(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> query_jobs(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> query_block_jobs(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> job_pause(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> job_resume(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> job_cancel(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> job_complete(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> job_finalize(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> job_dismiss(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_set_speed(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_cancel(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_pause(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_resume(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_complete(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_finalize(BlockCommands& commands, qmp::Json arguments);
Task<Result<qmp::Json>> block_job_dismiss(BlockCommands& commands, qmp::Json arguments);

// The argument members, in QAPI's order (qapi/block-core.json, qapi/job.json).
inline constexpr SchemaMember kBlockCommitArgs[] = {
    {"job-id", "str", true},
    {"device", "str"},
    {"base-node", "str", true},
    {"base", "str", true},
    {"top-node", "str", true},
    {"top", "str", true},
    {"backing-file", "str", true},
    {"backing-mask-protocol", "bool", true},
    {"speed", "int", true},
    {"on-error", "BlockdevOnError", true},
    {"filter-node-name", "str", true},
    {"auto-finalize", "bool", true},
    {"auto-dismiss", "bool", true},
};
inline constexpr SchemaMember kBlockStreamArgs[] = {
    {"job-id", "str", true},
    {"device", "str"},
    {"base", "str", true},
    {"base-node", "str", true},
    {"backing-file", "str", true},
    {"backing-mask-protocol", "bool", true},
    {"bottom", "str", true},
    {"speed", "int", true},
    {"on-error", "BlockdevOnError", true},
    {"filter-node-name", "str", true},
    {"auto-finalize", "bool", true},
    {"auto-dismiss", "bool", true},
};
inline constexpr SchemaMember kJobIdArg[] = {{"id", "str"}};
inline constexpr SchemaMember kBlockJobDeviceArg[] = {{"device", "str"}};
inline constexpr SchemaMember kBlockJobSetSpeedArgs[] = {{"device", "str"}, {"speed", "int"}};
inline constexpr SchemaMember kBlockJobCancelArgs[] = {{"device", "str"}, {"force", "bool", true}};

// The events' data members (QEMU's payloads).
inline constexpr SchemaMember kJobStatusChangeData[] = {{"id", "str"}, {"status", "JobStatus"}};
inline constexpr SchemaMember kBlockJobCompletedData[] = {
    {"type", "JobType"}, {"device", "str"}, {"len", "int"},
    {"offset", "int"},   {"speed", "int"},  {"error", "str", true}};
inline constexpr SchemaMember kBlockJobProgressData[] = {
    {"type", "JobType"}, {"device", "str"}, {"len", "int"}, {"offset", "int"}, {"speed", "int"}};
inline constexpr SchemaMember kBlockJobErrorData[] = {
    {"device", "str"}, {"operation", "IoOperationType"}, {"action", "BlockErrorAction"}};
inline constexpr SchemaMember kBlockJobPendingData[] = {{"type", "JobType"}, {"id", "str"}};

}  // namespace strata::daemon
