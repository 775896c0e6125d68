// QmpServer in-process: events reach negotiated sessions only, with timestamps; a command that
// suspends keeps the session's order while other sessions go on.
#include "qmp_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace strata::qmp {
namespace {

// "sleep" suspends on the loop for a few milliseconds; "echo" returns its arguments.
class TestCommands : public CommandSet {
 public:
  explicit TestCommands(EventLoop& loop) : loop_(&loop) {}
  std::vector<std::string> names() const override { return {"echo", "sleep"}; }
  bool has(std::string_view name) const override { return name == "echo" || name == "sleep"; }
  Task<Result<Json>> run(std::string name, Json arguments) override {
    if (name == "sleep") co_await loop_->sleep_ms(20);
    co_return arguments;
  }

 private:
  EventLoop* loop_;
};

class Client {
 public:
  Client(EventLoop& loop, const std::string& path) : loop_(&loop) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  ~Client() { ::close(fd_); }
  void send(const std::string& text) {
    EXPECT_EQ(::write(fd_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  // The next line, running the loop while waiting (up to about two seconds).
  std::string line() {
    for (int i = 0; i < 2000; ++i) {
      if (auto nl = buf_.find("\r\n"); nl != std::string::npos) {
        std::string out = buf_.substr(0, nl);
        buf_.erase(0, nl + 2);
        return out;
      }
      loop_->context().restart();
      loop_->poll();
      char chunk[4096];
      ssize_t n = ::read(fd_, chunk, sizeof(chunk));
      if (n > 0) buf_.append(chunk, n);
      if (n <= 0) ::usleep(1000);
    }
    return "(timeout)";
  }
  Json message() { return Json::parse(line(), nullptr, false); }

 private:
  EventLoop* loop_;
  int fd_;
  std::string buf_;
};

class QmpServerTest : public ::testing::Test {
 protected:
  QmpServerTest() {
    char dir[] = "/dev/shm/qmp-server-test-XXXXXX";
    dir_ = ::mkdtemp(dir);
    path_ = dir_ + "/qmp.sock";
  }
  ~QmpServerTest() override { ::rmdir(dir_.c_str()); }

  EventLoop loop_;
  TestCommands commands_{loop_};
  std::string dir_;
  std::string path_;
};

TEST_F(QmpServerTest, EventsGoToNegotiatedSessionsOnly) {
  QmpServer server(loop_, commands_, Json{{"qemu", Json::object()}, {"package", "t"}});
  ASSERT_TRUE(server.listen(path_));
  Client a(loop_, path_), b(loop_, path_);
  EXPECT_TRUE(a.message().contains("QMP"));
  EXPECT_TRUE(b.message().contains("QMP"));
  a.send("{\"execute\":\"qmp_capabilities\"}");
  EXPECT_EQ(a.line(), "{\"return\": {}}");
  server.broadcast_event("X_TEST", Json{{"n", 1}});
  Json e = a.message();
  EXPECT_EQ(e["event"], "X_TEST");
  EXPECT_EQ(e["data"]["n"], 1);
  EXPECT_TRUE(e["timestamp"].contains("seconds"));
  EXPECT_TRUE(e["timestamp"].contains("microseconds"));
  // b has not negotiated: its next line is the reply to its next request, not the event.
  b.send("{\"execute\":\"echo\",\"id\":1}");
  EXPECT_EQ(b.line(),
            "{\"id\": 1, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting "
            "capabilities negotiation with 'qmp_capabilities'\"}}");
}

TEST_F(QmpServerTest, SuspendedCommandKeepsOrderAndOthersGoOn) {
  QmpServer server(loop_, commands_, Json{{"qemu", Json::object()}, {"package", "t"}});
  ASSERT_TRUE(server.listen(path_));
  Client a(loop_, path_), b(loop_, path_);
  a.line();
  b.line();
  a.send(
      "{\"execute\":\"qmp_capabilities\"}{\"execute\":\"sleep\",\"id\":1}"
      "{\"execute\":\"echo\",\"id\":2}");
  b.send("{\"execute\":\"qmp_capabilities\"}{\"execute\":\"echo\",\"id\":3}");
  EXPECT_EQ(b.line(), "{\"return\": {}}");
  EXPECT_EQ(b.line(), "{\"return\": {}, \"id\": 3}");
  EXPECT_EQ(a.line(), "{\"return\": {}}");
  EXPECT_EQ(a.line(), "{\"return\": {}, \"id\": 1}");
  EXPECT_EQ(a.line(), "{\"return\": {}, \"id\": 2}");
}

TEST_F(QmpServerTest, ShutdownWaitsForRunningCommandAndRemovesSocket) {
  bool idle = false;
  {
    QmpServer server(loop_, commands_, Json{{"qemu", Json::object()}, {"package", "t"}});
    ASSERT_TRUE(server.listen(path_));
    Client a(loop_, path_);
    a.line();
    a.send("{\"execute\":\"qmp_capabilities\"}{\"execute\":\"sleep\",\"id\":1}");
    EXPECT_EQ(a.line(), "{\"return\": {}}");
    server.shutdown([&idle] { idle = true; });
    EXPECT_FALSE(idle);  // the sleep is still running
    EXPECT_EQ(a.line(), "{\"return\": {}, \"id\": 1}");
    for (int i = 0; i < 100 && !idle; ++i) {
      loop_.context().restart();
      loop_.poll();
    }
    EXPECT_TRUE(idle);
  }
  EXPECT_NE(::access(path_.c_str(), F_OK), 0);
}

}  // namespace
}  // namespace strata::qmp
