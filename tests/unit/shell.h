// The QEMU tools from unit tests: the tests that need real images make them with qemu-img and
// qemu-io, and check them with qemu-img check and compare.
#pragma once

#include <cstdio>
#include <string>

namespace strata::test_shell {

// Runs `cmd` with /bin/sh and returns what it printed on stdout and stderr. A command that
// fails gets "FAILED(<status>): " in front, so ASSERT_EQ(run(...), "") shows what went wrong.
inline std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return "FAILED(popen): " + cmd;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (status != 0) out = "FAILED(" + std::to_string(status) + "): " + out;
  return out;
}

}  // namespace strata::test_shell
