// QmpServer: QMP monitors on Unix sockets, run on the engine's event loop.
//
// Each accepted connection is a session that starts in capabilities-negotiation mode (only
// qmp_capabilities is allowed) and then runs commands one at a time, in the order they arrive,
// replying with the request's `id`. Several sessions run at once; they share the CommandSet.
// Events go to every session that has finished negotiation.
//
// A session's failure (malformed input, a vanished client) affects that session only. A client
// that disconnects while its command runs does not cancel the command: the command finishes,
// its reply is dropped.
//
// Threading: event loop thread only.
#pragma once

#include <asio/local/stream_protocol.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qmp_wire.h"
#include "strata/event_loop.h"
#include "strata/result.h"
#include "strata/task.h"

namespace strata::qmp {

// The commands a server runs (everything but qmp_capabilities, which is the protocol's own).
class CommandSet {
 public:
  virtual ~CommandSet() = default;
  // Command names in the order query-commands lists them.
  virtual std::vector<std::string> names() const = 0;
  virtual bool has(std::string_view name) const = 0;
  // Runs a command; the Error's class becomes the reply's class.
  virtual Task<Result<Json>> run(std::string name, Json arguments) = 0;
};

class Session;

// A listening Unix stream socket not yet served: bound to a path by bind_unix_socket, or a
// caller's listening fd taken over by adopt_socket_fd (how libvirt hands sockets over). The
// socket file a bind created is removed when the socket goes, served or not, so a start-up
// error leaves nothing behind; an adopted fd's file belongs to the caller and stays.
class ListeningSocket {
 public:
  ListeningSocket(asio::local::stream_protocol::acceptor acceptor, std::string path_to_remove);
  ~ListeningSocket();
  ListeningSocket(const ListeningSocket&) = delete;
  ListeningSocket& operator=(const ListeningSocket&) = delete;

  asio::local::stream_protocol::acceptor& acceptor() { return acceptor_; }
  // Stops listening; the socket file stays until destruction.
  void close();

 private:
  asio::local::stream_protocol::acceptor acceptor_;
  std::string path_to_remove_;
};

// Creates a socket at `path`, owner-only (0600), and listens on it. A stale socket file at
// `path` is replaced, as QEMU does. A relative path is made absolute first, so the file can be
// removed after the process changed directory.
Result<std::unique_ptr<ListeningSocket>> bind_unix_socket(EventLoop& loop, const std::string& path);

// Takes over `fd`, which must be a Unix stream socket ("File descriptor '5' is not a socket"),
// and listens on it if the caller has not yet.
Result<std::unique_ptr<ListeningSocket>> adopt_socket_fd(EventLoop& loop, int fd);

// How a monitor talks: QEMU's --monitor options that Strata honours.
struct MonitorOptions {
  bool pretty = false;  // pretty=on: replies and events pretty-printed (dump_pretty)
};

class QmpServer {
 public:
  // `greeting_version` is the greeting's and query-version's {"qemu": ..., "package": ...}.
  QmpServer(EventLoop& loop, CommandSet& commands, Json greeting_version);
  // Closes every socket and removes the socket files this server created.
  ~QmpServer();
  QmpServer(const QmpServer&) = delete;
  QmpServer& operator=(const QmpServer&) = delete;

  // Listens on a new Unix socket at `path` (bind_unix_socket) and serves it.
  Result<void> listen(const std::string& path);
  // Serves QMP on `socket` from now on; the server owns it.
  void serve(std::unique_ptr<ListeningSocket> socket, MonitorOptions options = {});

  // Sends an event, timestamped now, to every negotiated session.
  void broadcast_event(std::string_view name, std::optional<Json> data = std::nullopt);

  // Stops accepting, ends every session once its queued replies are written, and calls
  // `on_idle` once no session and no command is left.
  void shutdown(std::function<void()> on_idle);

  // ---- used by sessions ----
  const Json& greeting_version() const { return greeting_version_; }
  CommandSet& commands() { return *commands_; }
  EventLoop& loop() { return *loop_; }
  void command_started() { ++commands_in_flight_; }
  void command_finished();
  void session_closed(Session* session);
  bool stopping() const { return stopping_; }

 private:
  struct Listener {
    std::unique_ptr<ListeningSocket> socket;
    MonitorOptions options;
  };
  void accept(Listener* listener);
  void check_idle();

  EventLoop* loop_;
  CommandSet* commands_;
  Json greeting_version_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::shared_ptr<Session>> sessions_;
  uint64_t commands_in_flight_ = 0;
  bool stopping_ = false;
  std::function<void()> on_idle_;
};

}  // namespace strata::qmp
