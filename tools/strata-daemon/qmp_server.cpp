#include "qmp_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <chrono>
#include <deque>
#include <utility>

namespace strata::qmp {

using asio::local::stream_protocol;

// One client connection. Owned by the server's session list and, while a command runs, by
// that command's coroutine too, so a client vanishing mid-command leaves nothing dangling.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(QmpServer& server, stream_protocol::socket socket, MonitorOptions options)
      : server_(&server), socket_(std::move(socket)), options_(options) {}

  void start() {
    Json greeting = Json::object();
    greeting["QMP"] = Json{{"version", server_->greeting_version()}, {"capabilities", {"oob"}}};
    send(greeting);
    process();
  }

  void send(const Json& message) {
    if (closed_) return;
    outq_.push_back((options_.pretty ? dump_pretty(message) : dump(message)) + "\r\n");
    if (outq_.size() == 1) write_next();
  }

  bool negotiated() const { return negotiated_; }

  // Ends the session once its queued replies are out.
  void close_after_flush() {
    closing_ = true;
    if (outq_.empty() && !busy_) close();
  }

  // Called by a command's coroutine with its reply.
  void command_done(const Json& reply) {
    send(reply);
    busy_ = false;
    // Not a direct call: a client that pipelines many synchronous commands must not grow the
    // stack.
    auto self = shared_from_this();
    server_->loop().post([self] { self->process(); });
  }

 private:
  // Runs queued messages in order; reads more input once the queue is empty.
  void process() {
    while (!busy_ && !closed_ && !pending_.empty()) {
      RawMessage message = std::move(pending_.front());
      pending_.erase(pending_.begin());
      handle(message);
    }
    if (closing_) {
      close_after_flush();
      return;
    }
    // A client that does not read its replies stops being read from, so its replies cannot
    // pile up in memory.
    if (!busy_ && pending_.empty() && !reading_ && outq_.size() < kMaxQueuedReplies) {
      reading_ = true;
      read_more();
    }
  }

  void read_more() {
    if (closed_ || closing_) return;
    auto self = shared_from_this();
    socket_.async_read_some(asio::buffer(inbuf_), [self](std::error_code ec, size_t n) {
      self->reading_ = false;
      if (ec) {
        self->close();
        return;
      }
      self->splitter_.feed(std::string_view(self->inbuf_.data(), n), self->pending_);
      self->process();
    });
  }

  void handle(const RawMessage& message);
  static Task<void> run_command(std::shared_ptr<Session> self, Request request);

  void write_next() {
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(outq_.front()), [self](std::error_code ec, size_t) {
      if (self->closed_) return;
      self->outq_.pop_front();
      if (ec) {
        self->close();
        return;
      }
      if (self->outq_.size() + 1 == kMaxQueuedReplies) self->process();
      if (!self->outq_.empty()) {
        self->write_next();
      } else if (self->closing_ && !self->busy_) {
        self->close();
      }
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    std::error_code ignored;
    socket_.close(ignored);
    outq_.clear();
    pending_.clear();
    server_->session_closed(this);
  }

  static constexpr size_t kMaxQueuedReplies = 64;

  QmpServer* server_;
  stream_protocol::socket socket_;
  MonitorOptions options_;
  std::array<char, 65536> inbuf_{};
  JsonSplitter splitter_;
  std::vector<RawMessage> pending_;
  std::deque<std::string> outq_;
  bool negotiated_ = false;
  bool busy_ = false;
  bool reading_ = false;
  bool closing_ = false;
  bool closed_ = false;

  friend class QmpServer;
};

void Session::handle(const RawMessage& message) {
  Parsed parsed = parse_request(message);
  if (parsed.error) {
    send(make_error("GenericError", parsed.error->desc, parsed.error->id));
    return;
  }
  Request& req = *parsed.request;
  if (req.command == "qmp_capabilities") {
    // Handled here: it changes the session's mode, which no other command can.
    if (negotiated_) {
      send(make_error("CommandNotFound",
                      "Capabilities negotiation is already complete, command ignored", req.id));
      return;
    }
    for (auto it = req.arguments.begin(); it != req.arguments.end(); ++it) {
      if (it.key() != "enable") {
        send(make_error("GenericError", fmt::format("Parameter '{}' is unexpected", it.key()),
                        req.id));
        return;
      }
      bool valid = it->is_array() && std::all_of(it->begin(), it->end(), [](const Json& v) {
                     return v.is_string() && v.get<std::string>() == "oob";
                   });
      if (!valid) {
        send(make_error("GenericError",
                        "Invalid parameter type for 'enable', expected: array of 'oob'", req.id));
        return;
      }
    }
    negotiated_ = true;
    send(make_return(Json::object(), req.id));
    return;
  }
  if (!negotiated_) {
    send(make_error("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'",
                    req.id));
    return;
  }
  if (!server_->commands().has(req.command)) {
    send(make_error("CommandNotFound",
                    fmt::format("The command {} has not been found", req.command), req.id));
    return;
  }
  if (req.oob) {
    send(make_error("GenericError", fmt::format("The command {} does not support OOB", req.command),
                    req.id));
    return;
  }
  busy_ = true;
  server_->command_started();
  spawn(run_command(shared_from_this(), std::move(req)));
}

Task<void> Session::run_command(std::shared_ptr<Session> self, Request request) {
  QmpServer* server = self->server_;
  auto result = co_await server->commands().run(request.command, std::move(request.arguments));
  if (result) {
    self->command_done(make_return(std::move(*result), request.id));
  } else {
    std::string_view cls = error_class_name(result.error().error_class());
    self->command_done(make_error(cls, result.error().message(), request.id));
  }
  server->command_finished();
}

QmpServer::QmpServer(EventLoop& loop, CommandSet& commands, Json greeting_version)
    : loop_(&loop), commands_(&commands), greeting_version_(std::move(greeting_version)) {}

QmpServer::~QmpServer() {
  // Listeners go first (closing them and removing their files), then the sessions.
  listeners_.clear();
  for (auto& session : sessions_) {
    std::error_code ignored;
    session->closed_ = true;
    session->socket_.close(ignored);
  }
}

ListeningSocket::ListeningSocket(stream_protocol::acceptor acceptor, std::string path_to_remove)
    : acceptor_(std::move(acceptor)), path_to_remove_(std::move(path_to_remove)) {}

ListeningSocket::~ListeningSocket() {
  close();
  if (!path_to_remove_.empty()) ::unlink(path_to_remove_.c_str());
}

void ListeningSocket::close() {
  std::error_code ignored;
  acceptor_.close(ignored);
}

namespace {

Error socket_error(const std::error_code& ec, std::string_view what) {
  return Error(ec.value() > 0 ? ec.value() : EIO, fmt::format("{}: {}", what, ec.message()));
}

}  // namespace

Result<std::unique_ptr<ListeningSocket>> bind_unix_socket(EventLoop& loop,
                                                          const std::string& path) {
  std::string absolute = path;
  if (!path.empty() && path[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof(cwd)) == nullptr) return errno_error(errno, "getcwd");
    absolute = fmt::format("{}/{}", cwd, path);
  }
  struct stat st {};
  if (::lstat(absolute.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) &&
      ::unlink(absolute.c_str()) != 0) {
    return errno_error(errno, fmt::format("Failed to unlink socket {}", path));
  }
  stream_protocol::acceptor acceptor(loop.context());
  std::error_code ec;
  acceptor.open(stream_protocol(), ec);
  if (ec) return socket_error(ec, fmt::format("Failed to create socket for {}", path));
  // Owner-only from the moment the socket file exists: a monitor controls every image.
  mode_t old_mask = ::umask(0077);
  acceptor.bind(stream_protocol::endpoint(absolute), ec);
  ::umask(old_mask);
  if (ec) return socket_error(ec, fmt::format("Failed to bind socket to {}", path));
  // From here on the file is ours: the ListeningSocket removes it on every path out.
  auto socket = std::make_unique<ListeningSocket>(std::move(acceptor), absolute);
  // The umask leaves 0700; a socket needs no execute bit.
  if (::chmod(absolute.c_str(), 0600) != 0) {
    return errno_error(errno, fmt::format("Failed to set the mode of socket {}", path));
  }
  socket->acceptor().listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return socket_error(ec, fmt::format("Failed to listen on socket {}", path));
  return socket;
}

Result<std::unique_ptr<ListeningSocket>> adopt_socket_fd(EventLoop& loop, int fd) {
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return fail(ENOTSOCK, "File descriptor '{}' is not a socket", fd);
  }
  sockaddr_storage addr{};
  socklen_t addr_len = sizeof(addr);
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || addr.ss_family != AF_UNIX ||
      type != SOCK_STREAM) {
    return fail(EAFNOSUPPORT, "File descriptor '{}' is not a Unix stream socket", fd);
  }
  // A listening fd must not leak into processes the daemon might start.
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  // listen() on a socket that listens already only updates its backlog.
  if (::listen(fd, SOMAXCONN) != 0) return errno_error(errno, "Failed to listen on fd socket");
  stream_protocol::acceptor acceptor(loop.context());
  std::error_code ec;
  acceptor.assign(stream_protocol(), fd, ec);
  if (ec) return socket_error(ec, fmt::format("Failed to use file descriptor '{}'", fd));
  return std::make_unique<ListeningSocket>(std::move(acceptor), std::string());
}

Result<void> QmpServer::listen(const std::string& path) {
  auto socket = bind_unix_socket(*loop_, path);
  if (!socket) return socket.error();
  serve(std::move(*socket));
  return {};
}

void QmpServer::serve(std::unique_ptr<ListeningSocket> socket, MonitorOptions options) {
  listeners_.push_back(std::make_unique<Listener>(Listener{std::move(socket), options}));
  accept(listeners_.back().get());
}

void QmpServer::accept(Listener* listener) {
  listener->socket->acceptor().async_accept(
      [this, listener](std::error_code ec, stream_protocol::socket socket) {
        if (stopping_ || ec == asio::error::operation_aborted) return;
        if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
            ec.value() == ENFILE) {
          // Out of file descriptors: accepting again at once would spin. Existing sessions go
          // on; the waiting client is accepted once some descriptor is free.
          auto timer = std::make_shared<asio::steady_timer>(loop_->context());
          timer->expires_after(std::chrono::milliseconds(100));
          timer->async_wait([this, listener, timer](std::error_code) {
            if (!stopping_) accept(listener);
          });
          return;
        }
        if (!ec) {
          auto session = std::make_shared<Session>(*this, std::move(socket), listener->options);
          sessions_.push_back(session);
          session->start();
        }
        accept(listener);
      });
}

void QmpServer::broadcast_event(std::string_view name, std::optional<Json> data) {
  Json event = make_event(name, data);
  for (auto& session : sessions_) {
    if (session->negotiated()) session->send(event);
  }
}

void QmpServer::shutdown(std::function<void()> on_idle) {
  stopping_ = true;
  on_idle_ = std::move(on_idle);
  for (auto& listener : listeners_) listener->socket->close();
  // Copy: closing a session removes it from sessions_.
  auto sessions = sessions_;
  for (auto& session : sessions) {
    std::error_code ignored;
    session->socket_.shutdown(stream_protocol::socket::shutdown_receive, ignored);
    session->close_after_flush();
  }
  check_idle();
}

void QmpServer::command_finished() {
  --commands_in_flight_;
  check_idle();
}

void QmpServer::session_closed(Session* session) {
  auto it = std::find_if(sessions_.begin(), sessions_.end(),
                         [session](const auto& s) { return s.get() == session; });
  if (it != sessions_.end()) {
    // Keep the session alive until its pending handlers have run.
    auto keep = *it;
    sessions_.erase(it);
    loop_->post([keep] {});
  }
  check_idle();
}

void QmpServer::check_idle() {
  if (!stopping_ || commands_in_flight_ > 0 || !sessions_.empty() || !on_idle_) return;
  auto on_idle = std::move(on_idle_);
  on_idle_ = nullptr;
  on_idle();
}

}  // namespace strata::qmp
