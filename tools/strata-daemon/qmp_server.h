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

class QmpServer {
 public:
  // `greeting_version` is the greeting's and query-version's {"qemu": ..., "package": ...}.
  QmpServer(EventLoop& loop, CommandSet& commands, Json greeting_version);
  // Closes every socket and removes the socket files this server created.
  ~QmpServer();
  QmpServer(const QmpServer&) = delete;
  QmpServer& operator=(const QmpServer&) = delete;

  // Listens on a new Unix socket at `path`, created owner-only (0600). A stale socket file at
  // `path` is replaced, as QEMU does.
  Result<void> listen(const std::string& path);

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
    std::string path;
    asio::local::stream_protocol::acceptor acceptor;
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
