// QmpConnection: one client connection to a QMP server (strata-daemon or qemu-storage-daemon)
// over a Unix stream socket.
//
// The wire protocol (qemu docs/interop/qmp-spec.rst): the server sends a greeting, the client
// leaves capabilities negotiation mode with qmp_capabilities, then sends requests
// {"execute": ..., "arguments": ..., "id": ...} and gets {"return": ...} or {"error": {"class",
// "desc"}} with the id echoed. Every message is one JSON object ending in a newline (CRLF from
// QEMU). Events ({"event", "data", "timestamp"}) may arrive at any time, including between a
// request and its reply, so execute() hands them to a callback while it waits.
//
// Thread safety: none; one thread owns a connection. Blocking I/O, with timeouts where stated.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "strata/result.h"

namespace strata::qmp_client {

using EventSink = std::function<void(const nlohmann::json& event)>;

class QmpConnection {
 public:
  // Connects to the socket at `path`, reads the greeting and negotiates capabilities (none
  // enabled). Events that come before negotiation ends go to `on_event`.
  static Result<QmpConnection> open(const std::string& path, const EventSink& on_event);

  QmpConnection(QmpConnection&& other) noexcept;
  QmpConnection& operator=(QmpConnection&& other) noexcept;
  QmpConnection(const QmpConnection&) = delete;
  QmpConnection& operator=(const QmpConnection&) = delete;
  ~QmpConnection();

  // The server's greeting: {"QMP": {"version": ..., "capabilities": [...]}}.
  const nlohmann::json& greeting() const { return greeting_; }

  // The socket, for poll(): readable means read_message(0) has something (or EOF).
  int fd() const { return fd_; }

  // Sends `request` (an object with "execute"; an "id" is added when it has none) and returns
  // the server's reply to it: the whole object, with "return" or "error". Events read meanwhile
  // go to `on_event`. ECONNRESET when the server closes the connection first.
  Result<nlohmann::json> execute(nlohmann::json request, const EventSink& on_event);

  // The next message, waiting up to `timeout_ms` (negative: forever); nullopt on timeout.
  // ECONNRESET at end of stream; EPROTO for a line that is not a JSON object.
  Result<std::optional<nlohmann::json>> read_message(int timeout_ms);

 private:
  explicit QmpConnection(int fd) : fd_(fd) {}
  Result<void> send(const nlohmann::json& message);
  // The next whole line already received, parsed; nullopt when none is complete yet.
  Result<std::optional<nlohmann::json>> take_buffered_line();

  int fd_ = -1;
  std::string buffer_;  // received bytes not yet consumed as whole lines
  nlohmann::json greeting_;
  uint64_t next_id_ = 1;
};

}  // namespace strata::qmp_client
