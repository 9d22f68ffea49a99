#include "core/privileges.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace tern {

std::optional<Identity> lookup_identity(const std::string& user, std::string& error) {
  std::vector<char> buf(16384);
  passwd pw{}, *result = nullptr;
  int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &result);
  if (rc != 0 || !result) {
    error = "user '" + user +
            "' does not exist; create it with `useradd --system --no-create-home --shell "
            "/usr/sbin/nologin " +
            user + "` or name another user under [run_as]";
    return std::nullopt;
  }
  return Identity{user, pw.pw_uid, pw.pw_gid};
}

bool drop_privileges(const Identity& id, std::string& error) {
  if (id.uid == 0) {
    error = "refusing to run a service as root ('" + id.name + "' has uid 0); name an unprivileged user under [run_as]";
    return false;
  }
  gid_t groups[1] = {id.gid};
  if (setgroups(1, groups) != 0 || setgid(id.gid) != 0 || setuid(id.uid) != 0) {
    error = "cannot switch to user '" + id.name + "': " + std::strerror(errno);
    return false;
  }
  if (setuid(0) == 0 || getuid() != id.uid || geteuid() != id.uid || getegid() != id.gid) {
    error = "privileges were not dropped completely for user '" + id.name + "'";
    return false;
  }
  return true;
}

}  // namespace tern
