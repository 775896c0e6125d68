// strata-daemon: serves a block graph over QMP, command-line compatible with
// qemu-storage-daemon for its subset (docs/daemon.md).
//
//   strata-daemon [--daemonize] [--pidfile PATH] [--blockdev JSON|KEYVAL]...
//     [--chardev socket,path=P|fd=N,server=on,wait=off,id=ID --monitor [chardev=]ID[,...]]...
//     [--qmp unix:PATH]...
//
// Options are processed in order, so a node must be added before another names it. The pid file
// is written once everything is ready (the readiness signal). SIGTERM, SIGINT, SIGHUP and the
// quit command shut down cleanly: commands finish, jobs are cancelled (each puts the graph and its
// images back as they were, as a failed job does), nodes are flushed and closed, the sockets and
// the pid file are removed. A start-up error is one line on stderr and exit status 1, and leaves
// nothing behind: every socket file created so far is removed and every node closed (unlocked).
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio/signal_set.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "block_commands.h"
#include "cli.h"
#include "getopt.h"
#include "qmp_server.h"
#include "strata/builtin_drivers.h"
#include "strata/engine.h"
#include "strata/event_loop.h"
#include "strata/job.h"
#include "strata/node.h"
#include "strata/options.h"

namespace strata::daemon {
namespace {

constexpr std::string_view kProg = "strata-daemon";

enum OptionId {
  kBlockdev = 256,
  kChardev,
  kMonitor,
  kQmp,
  kPidfile,
  kDaemonize,
  kNbdServer,
  kExport,
  kObject
};

constexpr tools::LongOption kLongOptions[] = {
    {"help", false, 'h'},        {"version", false, 'V'},          {"blockdev", true, kBlockdev},
    {"chardev", true, kChardev}, {"monitor", true, kMonitor},      {"qmp", true, kQmp},
    {"pidfile", true, kPidfile}, {"daemonize", false, kDaemonize}, {"nbd-server", true, kNbdServer},
    {"export", true, kExport},   {"object", true, kObject},
};

void usage() {
  fmt::print(
      "Usage: strata-daemon [options]\n"
      "Strata storage daemon, command-line compatible with qemu-storage-daemon\n"
      "\n"
      "  -h, --help             display this help and exit\n"
      "  -V, --version          output version information and exit\n"
      "\n"
      "  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
      "             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
      "             [,read-only=on|off][,auto-read-only=on|off]\n"
      "             [,force-share=on|off][,detect-zeroes=on|off|unmap]\n"
      "             [,driver specific parameters...]\n"
      "                         configure a block node (or a JSON object)\n"
      "\n"
      "  --chardev socket,path=<path>,server=on,wait=off,id=<id>\n"
      "                         create a Unix socket to serve a monitor on\n"
      "  --chardev socket,fd=<fd>,server=on,wait=off,id=<id>\n"
      "                         use a listening Unix socket passed as file descriptor\n"
      "                         <fd> (server=off and wait=on are not supported)\n"
      "\n"
      "  --monitor [chardev=]<id>[,id=<name>][,mode=control][,pretty=on|off]\n"
      "                         serve QMP on the chardev\n"
      "  --qmp unix:<path>      short for --chardev socket,path=<path>,server=on,\n"
      "                         wait=off,id=compat_monitor<n> --monitor compat_monitor<n>\n"
      "\n"
      "  --pidfile <path>       write the process ID to a file once ready\n"
      "  --daemonize            daemonize the process, and have the parent exit\n"
      "                         once startup is complete, with its status\n"
      "\n"
      "  --nbd-server, --export, --object\n"
      "                         not supported yet: refused with an error\n");
}

// The greeting's and query-version's version: Strata's own version number (not a QEMU
// version), so clients that compare versions see what they talk to; "package" names Strata.
qmp::Json version_json() {
  unsigned major = 0, minor = 0, micro = 0;
  std::sscanf(STRATA_VERSION, "%u.%u.%u", &major, &minor, &micro);
  qmp::Json qemu = qmp::Json::object();
  // QAPI's field order, which decides the printed order within a QDict bucket.
  qemu["major"] = major;
  qemu["minor"] = minor;
  qemu["micro"] = micro;
  return qmp::Json{{"qemu", qemu}, {"package", fmt::format("strata {}", STRATA_VERSION)}};
}

// A --chardev: its listening socket, bound (or adopted) when the option is read, as QEMU does,
// and handed to the server by the --monitor that names it.
struct Chardev {
  std::unique_ptr<qmp::ListeningSocket> socket;  // null once a monitor uses it
};

// Everything the options set up, in the order they came.
struct Daemon {
  EventLoop loop;
  Engine engine{loop, builtin_drivers()};
  // After the engine (it goes first), before the commands that use it.
  JobManager jobs{engine};
  bool quit = false;
  BlockCommands commands{engine, version_json(), [this] { quit = true; }};
  qmp::QmpServer server{loop, commands, version_json()};
  // Declared after the server: destroyed first, so unused sockets' files go at once.
  std::map<std::string, Chardev> chardevs;
  int qmp_shorthands = 0;
  std::string pidfile;  // absolute, so it can be removed after --daemonize's chdir("/")
};

Result<std::string> keyval_string(const nlohmann::json& opts, const char* key) {
  auto it = opts.find(key);
  if (it == opts.end()) return fail(EINVAL, "Parameter '{}' is missing", key);
  if (!it->is_string()) return fail(EINVAL, "Parameters '{}.*' are unexpected", key);
  return it->get<std::string>();
}

// An on/off option as QEMU's option parser reads it (also yes/no, true/false); nullopt when
// absent.
Result<std::optional<bool>> keyval_bool(const nlohmann::json& opts, const char* key) {
  auto it = opts.find(key);
  if (it == opts.end()) return std::optional<bool>();
  std::string value = it->is_string() ? it->get<std::string>() : "";
  if (value == "on" || value == "yes" || value == "true" || value == "y") return true;
  if (value == "off" || value == "no" || value == "false" || value == "n") return false;
  return fail(EINVAL, "Parameter '{}' expects 'on' or 'off'", key);
}

// QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
bool is_identifier(std::string_view id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

// Socket chardev keys QEMU has and strata-daemon does not (TCP, telnet, TLS, reconnecting).
bool is_unsupported_socket_key(std::string_view key) {
  static constexpr std::string_view kKeys[] = {
      "host",      "port",      "to",        "ipv4",      "ipv6",    "telnet",    "tn3270",
      "websocket", "tls-creds", "tls-authz", "reconnect", "nodelay", "abstract",  "tight",
      "logfile",   "logappend", "mux",       "delay",     "numeric", "keep-alive"};
  return std::find(std::begin(kKeys), std::end(kKeys), key) != std::end(kKeys);
}

// The socket a chardev's options describe: `path` (bound now) or `fd` (a caller's socket).
Result<std::unique_ptr<qmp::ListeningSocket>> chardev_socket(Daemon& d,
                                                             const nlohmann::json& opts) {
  bool has_path = opts.contains("path"), has_fd = opts.contains("fd");
  if (has_path && has_fd)
    return fail(EINVAL, "None or one of 'path', 'fd' or 'host' option required.");
  if (!has_path && !has_fd) return fail(EINVAL, "chardev: socket: 'path' or 'fd' is required");
  auto server = keyval_bool(opts, "server");
  if (!server) return server.error();
  auto wait = keyval_bool(opts, "wait");
  if (!wait) return wait.error();
  // QEMU's defaults are server=off (connect out) and, with server=on, wait=on (block start-up
  // until a client connects); strata-daemon does neither.
  if (!server->value_or(false)) {
    return fail(EINVAL, "server=off is not supported: strata-daemon only listens (use server=on)");
  }
  if (wait->value_or(true)) {
    return fail(EINVAL,
                "wait=on{} is not supported: strata-daemon does not wait for a client before "
                "starting (use wait=off)",
                wait->has_value() ? "" : " (the default with server=on)");
  }
  if (has_path) {
    auto path = keyval_string(opts, "path");
    if (!path) return path.error();
    return qmp::bind_unix_socket(d.loop, *path);
  }
  auto text = keyval_string(opts, "fd");
  if (!text) return text.error();
  int fd = -1;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), fd);
  if (ec != std::errc() || end != text->data() + text->size() || fd < 0) {
    return fail(EINVAL, "Unable to parse FD number {}", *text);
  }
  return qmp::adopt_socket_fd(d.loop, fd);
}

// A chardev from parsed options: only listening Unix stream sockets, as a monitor needs.
Result<void> add_chardev_options(Daemon& d, const nlohmann::json& opts) {
  for (auto it = opts.begin(); it != opts.end(); ++it) {
    const std::string& key = it.key();
    if (key == "id" || key == "backend" || key == "path" || key == "fd" || key == "server" ||
        key == "wait") {
      continue;
    }
    if (is_unsupported_socket_key(key)) {
      return fail(EINVAL, "Parameter '{}' is not supported by strata-daemon", key);
    }
    return fail(EINVAL, "Invalid parameter '{}'", key);
  }
  if (!opts.contains("id")) return fail(EINVAL, "chardev: no id specified");
  auto id = keyval_string(opts, "id");
  if (!id) return id.error();
  if (!is_identifier(*id)) {
    return fail(EINVAL, "Parameter 'id' expects an identifier")
        .with_hint(
            "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
  }
  if (d.chardevs.count(*id)) return fail(EINVAL, "Duplicate ID '{}' for chardev", *id);
  auto backend = keyval_string(opts, "backend");
  if (!backend) return backend.error();
  if (*backend != "socket") {
    return fail(EINVAL, "chardev backend '{}' is not supported: QMP is served on sockets only",
                *backend);
  }
  auto socket = chardev_socket(d, opts);
  if (!socket) return socket.error();
  d.chardevs[*id] = Chardev{std::move(*socket)};
  return {};
}

// --chardev socket,path=P|fd=N,server=on,wait=off,id=ID.
Result<void> add_chardev(Daemon& d, std::string_view text) {
  auto opts = parse_keyval(text, "backend");
  if (!opts) return opts.error();
  return add_chardev_options(d, *opts);
}

// Serves QMP on chardev `name`, which no other monitor may use.
Result<void> serve_chardev(Daemon& d, const std::string& name, qmp::MonitorOptions options) {
  auto chardev = d.chardevs.find(name);
  if (chardev == d.chardevs.end()) return fail(ENOENT, "chardev \"{}\" not found", name);
  if (!chardev->second.socket) return fail(EBUSY, "Device '{}' is in use", name);
  d.server.serve(std::move(chardev->second.socket), options);
  return {};
}

// --monitor [chardev=]ID[,id=NAME][,mode=control][,pretty=on|off], with QEMU's texts and order:
// the keys first, then the chardev, then the mode.
Result<void> add_monitor(Daemon& d, std::string_view text) {
  auto opts = parse_keyval(text, "chardev");
  if (!opts) return opts.error();
  for (auto it = opts->begin(); it != opts->end(); ++it) {
    const std::string& key = it.key();
    if (key != "chardev" && key != "id" && key != "mode" && key != "pretty") {
      return fail(EINVAL, "Parameter '{}' is unexpected", key);
    }
  }
  std::string mode = "control";
  if (opts->contains("mode")) {
    auto given = keyval_string(*opts, "mode");
    if (!given) return given.error();
    if (*given != "control" && *given != "readline") {
      return fail(EINVAL, "Parameter 'mode' does not accept value '{}'", *given);
    }
    mode = *given;
  }
  auto pretty = keyval_bool(*opts, "pretty");
  if (!pretty) return pretty.error();
  auto name = keyval_string(*opts, "chardev");
  if (!name) return name.error();
  if (!d.chardevs.count(*name)) return fail(ENOENT, "chardev \"{}\" not found", *name);
  if (mode != "control") return fail(EINVAL, "Only QMP is supported");
  return serve_chardev(d, *name, qmp::MonitorOptions{pretty->value_or(false)});
}

// --qmp unix:PATH[,server=on][,wait=off]: QEMU's -qmp shorthand, a chardev and a monitor on it.
Result<void> add_qmp(Daemon& d, std::string_view text) {
  constexpr std::string_view kUnix = "unix:";
  if (text.substr(0, kUnix.size()) != kUnix) {
    return fail(EINVAL, "only unix:<path> is supported (or use --chardev with fd=)");
  }
  auto opts = parse_keyval(text.substr(kUnix.size()), "path");
  if (!opts) return opts.error();
  for (const char* reserved : {"id", "backend", "fd"}) {
    if (opts->contains(reserved)) return fail(EINVAL, "Invalid parameter '{}'", reserved);
  }
  std::string id = fmt::format("compat_monitor{}", d.qmp_shorthands++);
  (*opts)["id"] = id;
  (*opts)["backend"] = "socket";
  if (!opts->contains("server")) (*opts)["server"] = "on";
  if (!opts->contains("wait")) (*opts)["wait"] = "off";
  if (auto added = add_chardev_options(d, *opts); !added) return added.error();
  return serve_chardev(d, id, {});
}

Result<void> add_blockdev(Daemon& d, const std::string& text) {
  bool is_json = !text.empty() && text[0] == '{';
  nlohmann::json options;
  if (is_json) {
    options = nlohmann::json::parse(text, nullptr, false);
    if (options.is_discarded()) return fail(EINVAL, "{}", qmp::json_parse_error(text));
    if (!options.is_object()) return fail(EINVAL, "Invalid parameter type, expected: object");
  } else {
    auto parsed = parse_keyval(text, "driver");
    if (!parsed) return parsed.error();
    options = std::move(*parsed);
  }
  auto node = run_sync(
      d.loop,
      d.engine.add_node(std::move(options), is_json ? OptionSyntax::kJson : OptionSyntax::kKeyval));
  if (!node) return node.error();
  return {};
}

std::string absolute_path(const std::string& path) {
  if (path.empty() || path[0] == '/') return path;
  char cwd[4096];
  if (::getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return fmt::format("{}/{}", cwd, path);
}

// QEMU's texts ("cannot create PID file: Could not create '/x/p': No such file or directory").
Result<void> write_pidfile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return fail(errno, "cannot create PID file: Could not create '{}': {}", path,
                std::strerror(errno));
  }
  std::string text = fmt::format("{}\n", ::getpid());
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return fail(err ? err : EIO, "cannot create PID file: Failed to write PID file: {}",
                std::strerror(err ? err : EIO));
  }
  return {};
}

Task<void> flush_all(Engine* engine) {
  for (Node* node : engine->nodes()) {
    auto flushed = co_await node->flush();
    if (!flushed) tools::report_error(kProg, flushed.error().message());
  }
}

// Runs until quit or a signal (caught by `signals` since start-up), then shuts down in order.
void serve(Daemon& d, asio::signal_set& signals) {
  while (!d.quit) {
    d.loop.context().restart();
    d.loop.context().run_one();
  }
  std::error_code ignored;
  signals.cancel(ignored);
  bool idle = false;
  d.server.shutdown([&idle] { idle = true; });
  while (!idle) {
    d.loop.context().restart();
    d.loop.context().run_one();
  }
  // QEMU's job_cancel_sync_all before the block layer closes.
  run_sync(d.loop, d.jobs.shutdown());
  run_sync(d.loop, flush_all(&d.engine));
}

// --daemonize: the parent waits for the child's start-up status on a pipe and exits with it.
// Returns the write end for the child (-1 in the foreground); never returns in the parent.
int daemonize() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    tools::report_error(kProg, fmt::format("pipe: {}", std::strerror(errno)));
    std::exit(1);
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    tools::report_error(kProg, fmt::format("fork: {}", std::strerror(errno)));
    std::exit(1);
  }
  if (pid > 0) {
    ::close(fds[1]);
    // A child that dies before reporting closes the pipe: that is a failure too.
    char status = 1;
    if (::read(fds[0], &status, 1) != 1) status = 1;
    std::exit(status);
  }
  ::close(fds[0]);
  ::setsid();
  return fds[1];
}

// Daemonized: leaves the start directory (so it can be unmounted, as QEMU does), detaches from
// the terminal, and lets the parent exit 0.
void report_ready(int ready_fd) {
  if (ready_fd < 0) return;
  if (::chdir("/") != 0) {
    // Not fatal: every path kept for later (sockets, pid file) is absolute already.
  }
  int null_fd = ::open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    ::dup2(null_fd, 0);
    ::dup2(null_fd, 1);
    ::dup2(null_fd, 2);
    ::close(null_fd);
  }
  char ok = 0;
  (void)!::write(ready_fd, &ok, 1);
  ::close(ready_fd);
}

// Applies one option; on error prints "strata-daemon: --opt text: message" (and a hint line
// where the error has one).
bool apply(Daemon& d, const tools::ParsedOption& opt) {
  Result<void> done;
  const char* name = "";
  switch (opt.id) {
    case kBlockdev:
      name = "--blockdev";
      done = add_blockdev(d, opt.arg);
      break;
    case kChardev:
      name = "--chardev";
      done = add_chardev(d, opt.arg);
      break;
    case kMonitor:
      name = "--monitor";
      done = add_monitor(d, opt.arg);
      break;
    case kQmp:
      name = "--qmp";
      done = add_qmp(d, opt.arg);
      break;
    case kNbdServer:
      name = "--nbd-server";
      done = fail(ENOTSUP, "not supported yet: strata-daemon has no NBD server so far");
      break;
    case kExport:
      name = "--export";
      done = fail(ENOTSUP, "not supported yet: strata-daemon has no exports so far");
      break;
    case kObject:
      name = "--object";
      done = fail(ENOTSUP, "not supported yet: strata-daemon has no object types so far");
      break;
    default:
      break;
  }
  if (done) return true;
  tools::report_error(kProg, fmt::format("{} {}: {}", name, opt.arg, done.error().message()),
                      done.error().hint());
  return false;
}

// Reads the command line; exits (with its status) for --help, --version and syntax errors.
std::optional<int> parse_command_line(int argc, char** argv,
                                      std::vector<tools::ParsedOption>& options) {
  std::vector<std::string> args(argv, argv + argc);
  tools::OptionParser parser(args, "+hV", kLongOptions);
  for (auto step = parser.next(); step.status != tools::OptionParser::Status::kEnd;
       step = parser.next()) {
    if (step.status == tools::OptionParser::Status::kError) {
      fmt::print(stderr, "{}\n", tools::getopt_message(kProg, *step.error));
      return 1;
    }
    if (step.option.id == 'h') {
      usage();
      return 0;
    }
    if (step.option.id == 'V') {
      fmt::print("strata-daemon version {}\n", STRATA_VERSION);
      return 0;
    }
    options.push_back(step.option);
  }
  if (!parser.operands().empty()) {
    tools::report_error(kProg, fmt::format("{}: Unexpected argument", parser.operands()[0]));
    return 1;
  }
  return std::nullopt;
}

int run(int argc, char** argv) {
  std::vector<tools::ParsedOption> options;
  if (auto exit_status = parse_command_line(argc, argv, options)) return *exit_status;
  bool want_daemon = std::any_of(options.begin(), options.end(),
                                 [](const auto& opt) { return opt.id == kDaemonize; });
  // Before anything else, as QEMU does: the event loop and its threads must start in the child.
  int ready_fd = want_daemon ? daemonize() : -1;
  ::signal(SIGPIPE, SIG_IGN);
  Daemon d;
  d.commands.send_events_to(d.server);
  d.commands.set_jobs(d.jobs);
  // The server outlives every job: shutdown() leaves none before serve() returns.
  d.jobs.add_listener([&d](std::string_view name, nlohmann::json data) {
    d.server.broadcast_event(name, qmp::Json::parse(data.dump()));
  });
  // Caught from the start: a signal during start-up ends the daemon as cleanly as one later.
  asio::signal_set signals(d.loop.context(), SIGTERM, SIGINT, SIGHUP);
  signals.async_wait([&d](std::error_code ec, int) {
    if (!ec) d.quit = true;
  });
  for (const auto& opt : options) {
    if (opt.id == kPidfile) d.pidfile = absolute_path(opt.arg);
    if (!apply(d, opt)) return 1;
  }
  if (!d.pidfile.empty()) {
    if (auto written = write_pidfile(d.pidfile); !written) {
      tools::report_error(kProg, written.error().message());
      return 1;
    }
  }
  report_ready(ready_fd);
  serve(d, signals);
  if (!d.pidfile.empty()) ::unlink(d.pidfile.c_str());
  return 0;
}

}  // namespace
}  // namespace strata::daemon

int main(int argc, char** argv) { return strata::daemon::run(argc, argv); }
