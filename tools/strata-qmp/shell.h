// The interactive QMP shell: `strata-qmp SOCKET`.
//
// A line is a command with key=value arguments ("blockdev-add driver=file node-name=f0
// filename=x"), a command with a raw JSON arguments object, or a raw JSON request
// ({"execute": ...}); see keyval.h for the typing rules. Replies print as indented JSON,
// errors as "error: <class>: <desc>", events as one JSON line each as soon as they arrive,
// also while the shell waits for input (the terminal's input line is redrawn beneath them).
// `help` lists the syntax and the server's commands. End of input (Ctrl-D) leaves the shell;
// so does a successful `quit`, which stops the server.
//
// On a terminal, input goes through GNU readline (line editing, history kept in
// ~/.strata_qmp_history); otherwise lines are read as they come, without prompt or echo, so the
// shell can be driven through a pipe and its output read as a transcript (all on stdout).
//
// Thread safety: runs on the calling thread and owns stdin/stdout until it returns.
#pragma once

#include "qmp_connection.h"

namespace strata::qmp_client {

// Runs the shell until end of input or until the server closes the connection. Returns the exit
// status: 0 at end of input or after `quit`, 1 if the connection is lost otherwise.
int run_shell(QmpConnection conn);

}  // namespace strata::qmp_client
