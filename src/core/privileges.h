// Switching a process to an unprivileged user before it touches the network or the disk.
#pragma once
#include <sys/types.h>

#include <optional>
#include <string>

namespace tern {

struct Identity {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// nullopt with `error` set ("user tern-smtp does not exist; create it with ...") when unknown.
std::optional<Identity> lookup_identity(const std::string& user, std::string& error);

// setgroups to the user's primary group only, setgid, setuid; then checks that root cannot
// be regained. Returns false with `error` set on any failure.
bool drop_privileges(const Identity& id, std::string& error);

}  // namespace tern
