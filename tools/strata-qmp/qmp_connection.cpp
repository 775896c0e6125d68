#include "qmp_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace strata::qmp_client {

using nlohmann::json;

namespace {

// A greeting or a reply should come promptly; a server that says nothing for this long is
// stuck, and a one-shot command should fail rather than hang. Commands themselves may be slow.
constexpr int kGreetingTimeoutMs = 10'000;

}  // namespace

Result<QmpConnection> QmpConnection::open(const std::string& path, const EventSink& on_event) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return fail(ENAMETOOLONG, "socket path too long: {}", path);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error(errno, "socket");
  QmpConnection conn(fd);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return errno_error(errno, fmt::format("Failed to connect to '{}'", path));
  }
  auto greeting = conn.read_message(kGreetingTimeoutMs);
  if (!greeting) return greeting.error().prefixed("reading the QMP greeting");
  if (!*greeting || !(*greeting)->contains("QMP")) {
    return fail(EPROTO, "'{}' sent no QMP greeting", path);
  }
  conn.greeting_ = std::move(**greeting);
  auto caps = conn.execute(json{{"execute", "qmp_capabilities"}}, on_event);
  if (!caps) return caps.error().prefixed("qmp_capabilities");
  if (caps->contains("error")) {
    return fail(EPROTO, "qmp_capabilities failed: {}", (*caps)["error"].dump());
  }
  return conn;
}

QmpConnection::QmpConnection(QmpConnection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      buffer_(std::move(other.buffer_)),
      greeting_(std::move(other.greeting_)),
      next_id_(other.next_id_) {}

QmpConnection& QmpConnection::operator=(QmpConnection&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
    greeting_ = std::move(other.greeting_);
    next_id_ = other.next_id_;
  }
  return *this;
}

QmpConnection::~QmpConnection() {
  if (fd_ >= 0) ::close(fd_);
}

Result<void> QmpConnection::send(const json& message) {
  std::string text = message.dump() + "\n";
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::send(fd_, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "sending to the QMP server");
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<std::optional<json>> QmpConnection::take_buffered_line() {
  while (true) {
    size_t nl = buffer_.find('\n');
    if (nl == std::string::npos) return std::optional<json>();
    std::string line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json message = json::parse(line, nullptr, false);
    if (message.is_discarded() || !message.is_object()) {
      return fail(EPROTO, "the QMP server sent something that is not a JSON object: {}", line);
    }
    return std::optional<json>(std::move(message));
  }
}

Result<std::optional<json>> QmpConnection::read_message(int timeout_ms) {
  while (true) {
    auto message = take_buffered_line();
    if (!message || *message) return message;
    pollfd pfd{fd_, POLLIN, 0};
    int ready = ::poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return errno_error(errno, "poll");
    if (ready == 0) return std::optional<json>();
    char chunk[65536];
    ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "reading from the QMP server");
    if (n == 0) return fail(ECONNRESET, "the QMP server closed the connection");
    buffer_.append(chunk, static_cast<size_t>(n));
  }
}

Result<json> QmpConnection::execute(json request, const EventSink& on_event) {
  if (!request.contains("id")) request["id"] = fmt::format("strata-qmp-{}", next_id_++);
  json id = request["id"];
  auto sent = send(request);
  if (!sent) return sent.error();
  while (true) {
    auto message = read_message(-1);
    if (!message) return message.error();
    json& m = **message;
    if (m.contains("event")) {
      if (on_event) on_event(m);
      continue;
    }
    // A reply without an id answers a request the server could not parse, which can only be
    // ours: this client has one request in flight at a time.
    auto reply_id = m.find("id");
    if (reply_id == m.end() || *reply_id == id) return std::move(m);
  }
}

}  // namespace strata::qmp_client
