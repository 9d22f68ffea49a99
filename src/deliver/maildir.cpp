#include "deliver/maildir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>

#include "core/files.h"

namespace tern::deliver {

std::string maildir_unique_name(int64_t sec, int64_t usec, long pid, uint64_t sequence, std::string_view host,
                                uint64_t size) {
  std::string h;
  for (char c : host) {
    if (c == '/')
      h += "\\057";
    else if (c == ':')
      h += "\\072";
    else
      h += c;
  }
  return std::to_string(sec) + ".M" + std::to_string(usec) + "P" + std::to_string(pid) + "Q" +
         std::to_string(sequence) + "." + h + ",S=" + std::to_string(size);
}

namespace {
bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}
}  // namespace

bool has_delivered_to(std::string_view message, std::string_view recipient) {
  std::string_view rest = message;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    if (line.empty() || line == "\r") return false;  // end of the header section
    if (line.size() > 13 && iequals(line.substr(0, 13), "Delivered-To:")) {
      std::string_view v = line.substr(13);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
      if (iequals(v, recipient)) return true;
    }
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  return false;
}

std::string delivery_prefix(std::string_view sender, std::string_view recipient) {
  return "Return-Path: <" + std::string(sender) + ">\nDelivered-To: " + std::string(recipient) + "\n";
}

DeliveryResult deliver_to_maildir(const std::filesystem::path& maildir, int message_fd, std::string_view sender,
                                  std::string_view recipient, std::string_view host) {
  static std::atomic<uint64_t> sequence{0};
  auto temp = [](std::string what, std::error_code ec) {
    return DeliveryResult{Outcome::temporary, what + ": " + ec.message(), ""};
  };
  for (const char* sub : {"tmp", "new", "cur"})
    if (auto ec = files::make_dirs(maildir / sub, 0700)) return temp("cannot create " + (maildir / sub).string(), ec);

  std::string message;
  if (auto ec = files::read_fd(message_fd, message)) return temp("cannot read the spool file", ec);
  if (has_delivered_to(message, recipient))
    return {Outcome::permanent, "This message is looping: it already has my Delivered-To line (#5.4.6)", ""};

  std::string prefix = delivery_prefix(sender, recipient);
  auto now = std::chrono::system_clock::now().time_since_epoch();
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  std::string name = maildir_unique_name(us / 1000000, us % 1000000, static_cast<long>(::getpid()), ++sequence, host,
                                         prefix.size() + message.size());
  std::filesystem::path tmp = maildir / "tmp" / name, dest = maildir / "new" / name;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return temp("cannot create " + tmp.string(), files::last_error());
  std::error_code ec = files::write_all(fd, prefix);
  if (!ec) ec = files::write_all(fd, message);
  if (!ec) ec = files::fsync_fd(fd);
  if (::close(fd) != 0 && !ec) ec = files::last_error();
  if (!ec && ::link(tmp.c_str(), dest.c_str()) != 0) ec = files::last_error();
  ::unlink(tmp.c_str());
  if (ec) return temp("cannot write " + tmp.string(), ec);
  if (auto dec = files::fsync_dir(maildir / "new")) return temp("cannot sync " + (maildir / "new").string(), dec);
  return {Outcome::delivered, "", dest.string()};
}

}  // namespace tern::deliver
