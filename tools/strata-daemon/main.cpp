// strata-daemon: serves a block graph over QMP, command-line compatible with
// qemu-storage-daemon for its subset.
//
//   strata-daemon [--daemonize] [--blockdev JSON|KEYVAL]...
//     [--chardev socket,path=P,server=on,wait=off,id=ID --monitor chardev=ID]... [--pidfile PATH]
//
// Options are processed in order, so a node must be added before another names it. The pid file
// is written once everything is ready (the readiness signal). SIGTERM, SIGINT, SIGHUP and the
// quit command shut down cleanly: commands finish, nodes are flushed and closed, the sockets and
// the pid file are removed. A start-up error is one line on stderr and exit status 1.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/signal_set.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
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
#include "strata/node.h"
#include "strata/options.h"

namespace strata::daemon {
namespace {

constexpr std::string_view kProg = "strata-daemon";

enum OptionId { kBlockdev = 256, kChardev, kMonitor, kPidfile, kDaemonize };

constexpr tools::LongOption kLongOptions[] = {
    {"help", false, 'h'},
    {"version", false, 'V'},
    {"blockdev", true, kBlockdev},
    {"chardev", true, kChardev},
    {"monitor", true, kMonitor},
    {"pidfile", true, kPidfile},
    {"daemonize", false, kDaemonize},
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
      "                         configure a Unix socket to serve a monitor on\n"
      "\n"
      "  --monitor [chardev=]<id>[,mode=control]\n"
      "                         serve QMP on the chardev\n"
      "\n"
      "  --pidfile <path>       write the process ID to a file once ready\n"
      "  --daemonize            daemonize the process, and have the parent exit\n"
      "                         once startup is complete\n");
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

struct Chardev {
  std::string path;
  bool used = false;
};

// Everything the options set up, in the order they came.
struct Daemon {
  EventLoop loop;
  Engine engine{loop, builtin_drivers()};
  bool quit = false;
  BlockCommands commands{engine, version_json(), [this] { quit = true; }};
  qmp::QmpServer server{loop, commands, version_json()};
  std::map<std::string, Chardev> chardevs;
  std::string pidfile;
};

Result<std::string> keyval_string(const nlohmann::json& opts, const char* key) {
  auto it = opts.find(key);
  if (it == opts.end()) return fail(EINVAL, "Parameter '{}' is missing", key);
  if (!it->is_string()) return fail(EINVAL, "Parameters '{}.*' are unexpected", key);
  return it->get<std::string>();
}

// --chardev socket,path=P,server=on,wait=off,id=ID: only listening Unix sockets.
Result<void> add_chardev(Daemon& d, std::string_view text) {
  auto opts = parse_keyval(text, "backend");
  if (!opts) return opts.error();
  auto id = keyval_string(*opts, "id");
  if (!id) return id.error();
  auto backend = keyval_string(*opts, "backend");
  if (!backend) return backend.error();
  if (*backend != "socket") return fail(EINVAL, "chardev backend '{}' is not supported", *backend);
  auto path = keyval_string(*opts, "path");
  if (!path) return path.error();
  for (auto it = opts->begin(); it != opts->end(); ++it) {
    const std::string& key = it.key();
    std::string value = it->is_string() ? it->get<std::string>() : "";
    if (key == "server" && value != "on") return fail(EINVAL, "only server=on is supported");
    if (key == "wait" && value != "off") return fail(EINVAL, "only wait=off is supported");
    if (key != "id" && key != "backend" && key != "path" && key != "server" && key != "wait") {
      return fail(EINVAL, "Invalid parameter '{}'", key);
    }
  }
  if (!opts->contains("server")) return fail(EINVAL, "only server=on is supported");
  if (d.chardevs.count(*id)) return fail(EINVAL, "Duplicate ID '{}' for chardev", *id);
  d.chardevs[*id] = Chardev{*path};
  return {};
}

// --monitor [chardev=]ID[,mode=control]: QMP on a chardev's socket.
Result<void> add_monitor(Daemon& d, std::string_view text) {
  auto opts = parse_keyval(text, "chardev");
  if (!opts) return opts.error();
  auto name = keyval_string(*opts, "chardev");
  if (!name) return name.error();
  for (auto it = opts->begin(); it != opts->end(); ++it) {
    if (it.key() == "mode" && it->is_string() && it->get<std::string>() == "control") continue;
    if (it.key() == "id" || it.key() == "chardev") continue;
    return fail(EINVAL, "Parameter '{}' is unexpected", it.key());
  }
  auto chardev = d.chardevs.find(*name);
  if (chardev == d.chardevs.end()) return fail(ENOENT, "chardev \"{}\" not found", *name);
  if (chardev->second.used) return fail(EBUSY, "Device '{}' is in use", *name);
  chardev->second.used = true;
  return d.server.listen(chardev->second.path);
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

Result<void> write_pidfile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error(errno, "cannot create PID file");
  std::string text = fmt::format("{}\n", ::getpid());
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  int err = errno;
  ::close(fd);
  if (!ok) return errno_error(err ? err : EIO, "cannot create PID file");
  return {};
}

Task<void> flush_all(Engine* engine) {
  for (Node* node : engine->nodes()) {
    auto flushed = co_await node->flush();
    if (!flushed) tools::report_error(kProg, flushed.error().message());
  }
}

// Runs until quit or a signal, then shuts down in order.
void serve(Daemon& d) {
  asio::signal_set signals(d.loop.context(), SIGTERM, SIGINT, SIGHUP);
  signals.async_wait([&d](std::error_code ec, int) {
    if (!ec) d.quit = true;
  });
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
    char status = 1;
    if (::read(fds[0], &status, 1) != 1) status = 1;
    std::exit(status);
  }
  ::close(fds[0]);
  ::setsid();
  return fds[1];
}

void report_ready(int ready_fd) {
  if (ready_fd < 0) return;
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

// Applies one option; on error prints "strata-daemon: --opt text: message".
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
    case kPidfile:
      d.pidfile = opt.arg;
      break;
    default:
      break;
  }
  if (done) return true;
  tools::report_error(kProg, fmt::format("{} {}: {}", name, opt.arg, done.error().message()),
                      done.error().hint());
  return false;
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  std::vector<tools::ParsedOption> options;
  bool want_daemon = false;
  tools::OptionParser parser(args, "+hV", kLongOptions);
  for (auto step = parser.next(); step.status != tools::OptionParser::Status::kEnd;
       step = parser.next()) {
    if (step.status == tools::OptionParser::Status::kError) {
      tools::report_error(kProg, fmt::format("unrecognized option '{}'", step.error->element));
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
    if (step.option.id == kDaemonize) want_daemon = true;
    options.push_back(step.option);
  }
  if (!parser.operands().empty()) {
    tools::report_error(kProg, fmt::format("Unexpected argument: {}", parser.operands()[0]));
    return 1;
  }
  // Before anything else, as QEMU does: the event loop and its threads must start in the child.
  int ready_fd = want_daemon ? daemonize() : -1;
  ::signal(SIGPIPE, SIG_IGN);
  Daemon d;
  for (const auto& opt : options) {
    if (!apply(d, opt)) return 1;
  }
  if (!d.pidfile.empty()) {
    if (auto written = write_pidfile(d.pidfile); !written) {
      tools::report_error(kProg, written.error().message());
      return 1;
    }
  }
  report_ready(ready_fd);
  serve(d);
  if (!d.pidfile.empty()) ::unlink(d.pidfile.c_str());
  return 0;
}

}  // namespace
}  // namespace strata::daemon

int main(int argc, char** argv) { return strata::daemon::run(argc, argv); }
