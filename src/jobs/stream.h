// block-stream (QEMU's stream_start / stream_run / stream_prepare): the data a node reads from
// its backing chain, above base (or down to and including bottom), is copied into the node, then
// the node's backing link is pointed at base (or at nothing) and the intermediate images drop out
// of its chain.
//
// While the job runs:
//   - a copy-on-read filter sits above the node being filled (every parent of it now reads
//     through the filter), so a guest read of a range the node does not have populates it too;
//     the job itself copies by reading through the same filter, several chunks at once (the
//     filter keeps overlapping copies and writes apart; the job's chunks never overlap). The
//     filter goes in once no write is under way on the node (a write that never passed the
//     filter could be undone by a copy), and comes out once no copy-up is under way in it;
//   - the job reads through its own handle on the filter (CONSISTENT_READ); the device is held
//     by an "active node" job edge sharing everything but RESIZE (the length is read once);
//   - every node from the device's backing down to bottom (included) is held by an
//     "intermediate node" job edge sharing only CONSISTENT_READ and WRITE_UNCHANGED: they leave
//     the chain at the end, so nobody else may write them meanwhile;
//   - the backing links from the filter down to bottom are frozen (by the filter, whose
//     `bottom` option is that node);
//   - a node that was read-only is reopened read-write for the duration, and read-only again at
//     the end, on success, failure and cancel alike ("Block node is read-only" when the reopen
//     is refused, for instance by an explicit read-only=on of an inline child).
// At the end, on success: the node's backing link is set to base (or removed) and the backing
// file string recorded in its image (change_backing_file). Either way the filter goes away and
// its parents are moved back to the node.
//
// Threading: event loop thread only.
#pragma once

#include <string>

#include "strata/job.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata {

class Engine;
class Node;

struct StreamArgs {
  Node* device = nullptr;  // the node to fill (QMP's "device", a node-name or a device name)
  // The node whose data is not copied: the new backing of `device`. nullptr: the whole chain is
  // copied and `device` ends without a backing file (unless `bottom` is set). Mutually exclusive
  // with `bottom`; QMP's "base" and "base-node" both resolve to it.
  Node* base = nullptr;
  // The last node whose data is copied (QMP's "bottom"); its backing becomes the new backing.
  // nullptr: derived from base.
  Node* bottom = nullptr;
  // What `device` records as its new backing file; empty: base's filename.
  std::string backing_file;
  // Record "raw" as the backing format when base is a protocol node.
  bool backing_mask_protocol = false;
  std::string filter_node_name;  // the copy-on-read filter's node-name; empty: automatic
};

// Sets up the job as QEMU's stream_start does and starts it. Errors leave the graph as it was
// (the node back to read-only, no filter, no job edges, the chain unfrozen); the job, if it was
// already created, goes created -> null (QEMU's job_early_fail).
Task<Result<Job*>> start_stream_job(JobManager& manager, Engine& engine, JobOptions options,
                                    StreamArgs args);

}  // namespace strata
