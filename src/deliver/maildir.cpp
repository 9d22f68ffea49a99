#include "deliver/maildir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>

#include "core/files.h"
#include "core/log.h"
#include "mailbox/index_format.h"

namespace tern::deliver {

std::string maildir_unique_name(int64_t sec, int64_t usec, long pid, uint64_t sequence, std::string_view host,
                                uint64_t size, uint64_t vsize) {
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
         std::to_string(sequence) + "." + h + ",S=" + std::to_string(size) + ",W=" + std::to_string(vsize);
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

namespace {

DeliveryResult temporary(const std::string& what, std::error_code ec) {
  return DeliveryResult{Outcome::temporary, what + ": " + ec.message(), ""};
}

// A delivery up to a complete tmp/<name>: `result` is `delivered` when the file is written (its
// `path` is still empty) and the final outcome otherwise.
struct Written {
  DeliveryResult result;
  std::filesystem::path tmp, dest;
};

Written write_tmp(const std::filesystem::path& maildir, int message_fd, std::string_view sender,
                  std::string_view recipient, std::string_view host, bool sync) {
  static std::atomic<uint64_t> sequence{0};
  Written w{{Outcome::delivered, "", ""}, {}, {}};
  for (const char* sub : {"tmp", "new", "cur"})
    if (auto ec = files::make_dirs(maildir / sub, 0700)) {
      w.result = temporary("cannot create " + (maildir / sub).string(), ec);
      return w;
    }
  std::string message;
  if (auto ec = files::read_fd(message_fd, message)) {
    w.result = temporary("cannot read the spool file", ec);
    return w;
  }
  if (has_delivered_to(message, recipient)) {
    w.result = {Outcome::permanent, "This message is looping: it already has my Delivered-To line (#5.4.6)", ""};
    return w;
  }
  std::string prefix = delivery_prefix(sender, recipient);
  auto now = std::chrono::system_clock::now().time_since_epoch();
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  mailbox::CrlfSize vsize;
  vsize.feed(prefix);
  vsize.feed(message);
  std::string name = maildir_unique_name(us / 1000000, us % 1000000, static_cast<long>(::getpid()), ++sequence, host,
                                         prefix.size() + message.size(), vsize.size());
  w.tmp = maildir / "tmp" / name;
  w.dest = maildir / "new" / name;
  int fd = ::open(w.tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    w.result = temporary("cannot create " + w.tmp.string(), files::last_error());
    return w;
  }
  std::error_code ec = files::write_all(fd, prefix);
  if (!ec) ec = files::write_all(fd, message);
  if (!ec && sync) ec = files::fsync_fd(fd);
  if (::close(fd) != 0 && !ec) ec = files::last_error();
  if (ec) {
    ::unlink(w.tmp.c_str());
    w.result = temporary("cannot write " + w.tmp.string(), ec);
  }
  return w;
}

// tmp/<name> -> new/<name>. The result's path is set when it worked.
void publish(Written& w) {
  std::error_code ec;
  if (::link(w.tmp.c_str(), w.dest.c_str()) != 0) ec = files::last_error();
  ::unlink(w.tmp.c_str());
  if (ec)
    w.result = temporary("cannot write " + w.tmp.string(), ec);
  else
    w.result.path = w.dest.string();
}

}  // namespace

std::error_code ensure_folder(const std::filesystem::path& maildir, std::string_view name,
                              std::filesystem::path& folder) {
  folder = maildir / ("." + std::string(name));
  // A mailbox that never had mail has no Maildir yet: the folder's parents first.
  if (auto ec = files::make_dirs(maildir, 0700)) return ec;
  for (const char* sub : {"", "tmp", "new", "cur"}) {
    std::filesystem::path dir = *sub ? folder / sub : folder;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return files::last_error();
  }
  std::filesystem::path marker = folder / "maildirfolder";
  int fd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return files::last_error();
  ::close(fd);
  return {};
}

DeliveryResult deliver_to_maildir(const std::filesystem::path& maildir, int message_fd, std::string_view sender,
                                  std::string_view recipient, std::string_view host) {
  Written w = write_tmp(maildir, message_fd, sender, recipient, host, true);
  if (w.result.outcome != Outcome::delivered) return w.result;
  publish(w);
  if (w.result.path.empty()) return w.result;
  if (auto dec = files::fsync_dir(maildir / "new")) return temporary("cannot sync " + (maildir / "new").string(), dec);
  return w.result;
}

namespace {
std::error_code sync_filesystem(int dir_fd) {
  if (::syncfs(dir_fd) != 0) return files::last_error();
  return {};
}
}  // namespace

MaildirWriter::MaildirWriter(Sync sync)
    : sync_(sync ? std::move(sync) : Sync(sync_filesystem)),
      worker_([this](std::vector<Request>& batch) { process(batch); }) {}

MaildirWriter::~MaildirWriter() {
  worker_.stop();
  Stats st = stats();
  if (st.batches > 0)
    log::info("maildir group commit", {{"batches", st.batches},
                                       {"deliveries", st.deliveries},
                                       {"syncs", st.syncs},
                                       {"largest_batch", st.largest_batch}});
}

void MaildirWriter::deliver(std::filesystem::path maildir, int message_fd, std::string sender, std::string recipient,
                            std::string host, Done done) {
  worker_.push(
      {std::move(maildir), message_fd, std::move(sender), std::move(recipient), std::move(host), std::move(done)});
}

MaildirWriter::Stats MaildirWriter::stats() const {
  BatchThread<Request>::Stats w = worker_.stats();
  return {w.batches, w.requests, syncs_.load(), w.largest_batch};
}

void MaildirWriter::process(std::vector<Request>& batch) {
  std::vector<Written> written;
  written.reserve(batch.size());
  for (const Request& r : batch) written.push_back(write_tmp(r.maildir, r.fd, r.sender, r.recipient, r.host, false));

  // One sync per filesystem and step, whatever the number of Maildirs on it.
  struct Device {
    dev_t dev;
    int fd;  // a directory on it
    std::vector<size_t> members;
  };
  std::vector<Device> devices;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (written[i].result.outcome != Outcome::delivered) continue;
    struct stat st {};
    if (::stat(batch[i].maildir.c_str(), &st) != 0) {
      ::unlink(written[i].tmp.c_str());
      written[i].result = temporary("cannot stat " + batch[i].maildir.string(), files::last_error());
      continue;
    }
    auto it = std::find_if(devices.begin(), devices.end(), [&](const Device& d) { return d.dev == st.st_dev; });
    if (it == devices.end()) {
      int fd = ::open(batch[i].maildir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) {
        ::unlink(written[i].tmp.c_str());
        written[i].result = temporary("cannot open " + batch[i].maildir.string(), files::last_error());
        continue;
      }
      devices.push_back({st.st_dev, fd, {}});
      it = devices.end() - 1;
    }
    it->members.push_back(i);
  }
  uint64_t syncs = 0;
  auto sync_device = [&](Device& d, const char* step, bool published) {
    ++syncs;
    std::error_code ec = sync_(d.fd);
    if (!ec) return;
    for (size_t i : d.members) {
      Written& w = written[i];
      if (w.result.outcome != Outcome::delivered) continue;
      ::unlink((published ? w.dest : w.tmp).c_str());
      w.result = temporary(std::string("cannot sync ") + step + " in " + batch[i].maildir.string(), ec);
    }
  };
  for (Device& d : devices) sync_device(d, "tmp/", false);
  for (Device& d : devices) {
    bool any = false;
    for (size_t i : d.members) {
      if (written[i].result.outcome != Outcome::delivered) continue;
      publish(written[i]);
      any = any || !written[i].result.path.empty();
    }
    if (any) sync_device(d, "new/", true);
    ::close(d.fd);
  }
  syncs_ += syncs;
  for (size_t i = 0; i < batch.size(); ++i) batch[i].done(std::move(written[i].result));
}

}  // namespace tern::deliver
