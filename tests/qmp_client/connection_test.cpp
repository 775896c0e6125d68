// Specification of QmpConnection's protocol handling (qmp_connection.h) against a scripted
// server on a Unix socket: framing across reads, CRLF, events before a reply, id matching.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "qmp_connection.h"

namespace strata::qmp_client {
namespace {

using nlohmann::json;

// A server that plays one connection: each step either sends bytes or reads one line.
class ScriptedServer {
 public:
  struct Step {
    bool send;
    std::string bytes;  // send: what to send
  };

  explicit ScriptedServer(std::vector<Step> steps) : steps_(std::move(steps)) {
    path_ = "/tmp/strata-qmp-test-" + std::to_string(::getpid()) + ".sock";
    ::unlink(path_.c_str());
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(listen_fd_, 1), 0);
    thread_ = std::thread([this] { play(); });
  }
  ~ScriptedServer() {
    thread_.join();
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  void play() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) return;
    std::string pending;
    for (const auto& step : steps_) {
      if (step.send) {
        (void)!::write(fd, step.bytes.data(), step.bytes.size());
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        continue;
      }
      while (pending.find('\n') == std::string::npos) {
        char c[256];
        ssize_t n = ::read(fd, c, sizeof(c));
        if (n <= 0) break;
        pending.append(c, static_cast<size_t>(n));
      }
      size_t nl = pending.find('\n');
      if (nl == std::string::npos) break;
      pending.erase(0, nl + 1);
    }
    ::close(fd);
  }

  std::vector<Step> steps_;
  std::string path_;
  int listen_fd_ = -1;
  std::thread thread_;
};

constexpr const char* kGreeting =
    R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}})";

TEST(QmpConnection, NegotiatesThenMatchesTheReplyByIdAndPassesEventsOn) {
  std::string greeting = std::string(kGreeting) + "\r\n";
  ScriptedServer server({
      {true, greeting.substr(0, 20)},  // a greeting split across reads
      {true, greeting.substr(20)},
      {false, ""},
      {true, "{\"return\": {}, \"id\": \"strata-qmp-1\"}\r\n"},
      {false, ""},
      {true,
       "{\"event\": \"E1\", \"data\": {}, \"timestamp\": {\"seconds\": 1, "
       "\"microseconds\": 2}}\r\n\r\n{\"return\": 5, \"id\": \"other\"}\r\n"},
      {true, "{\"id\": \"strata-qmp-2\", \"return\": {\"ok\": true}}\r\n"},
  });
  std::vector<json> events;
  auto sink = [&events](const json& e) { events.push_back(e); };
  auto conn = QmpConnection::open(server.path(), sink);
  ASSERT_TRUE(conn) << conn.error().message();
  EXPECT_EQ(conn->greeting()["QMP"]["version"]["qemu"]["major"], 7);
  auto reply = conn->execute(json{{"execute", "query-x"}}, sink);
  ASSERT_TRUE(reply) << reply.error().message();
  EXPECT_EQ(*reply, json({{"id", "strata-qmp-2"}, {"return", {{"ok", true}}}}));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["event"], "E1");
}

TEST(QmpConnection, ARequestWithItsOwnIdKeepsIt) {
  ScriptedServer server({
      {true, std::string(kGreeting) + "\n"},
      {false, ""},
      {true, "{\"return\": {}, \"id\": \"strata-qmp-1\"}\n"},
      {false, ""},
      {true, "{\"return\": 1, \"id\": 42}\n"},
  });
  auto conn = QmpConnection::open(server.path(), {});
  ASSERT_TRUE(conn);
  auto reply = conn->execute(json{{"execute", "x"}, {"id", 42}}, {});
  ASSERT_TRUE(reply);
  EXPECT_EQ((*reply)["return"], 1);
}

TEST(QmpConnection, TheServerClosingIsConnReset) {
  ScriptedServer server({
      {true, std::string(kGreeting) + "\n"},
      {false, ""},
      {true, "{\"return\": {}, \"id\": \"strata-qmp-1\"}\n"},
      {false, ""},
  });
  auto conn = QmpConnection::open(server.path(), {});
  ASSERT_TRUE(conn);
  auto reply = conn->execute(json{{"execute", "quit"}}, {});
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().err(), ECONNRESET);
}

TEST(QmpConnection, ALineThatIsNotAJsonObjectIsAProtocolError) {
  ScriptedServer server({{true, "hello\n"}});
  auto conn = QmpConnection::open(server.path(), {});
  ASSERT_FALSE(conn);
  EXPECT_EQ(conn.error().err(), EPROTO);
}

TEST(QmpConnection, NoServerIsAConnectError) {
  auto conn = QmpConnection::open("/tmp/strata-qmp-test-no-such.sock", {});
  ASSERT_FALSE(conn);
  EXPECT_EQ(conn.error().err(), ENOENT);
  EXPECT_NE(conn.error().message().find("Failed to connect to"), std::string::npos);
}

}  // namespace
}  // namespace strata::qmp_client
