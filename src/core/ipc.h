// IPC between tern's processes: typed, length-prefixed frames over Unix stream sockets.
//
// Frame:   u32 length (big-endian, counts type + payload) | u16 type | payload
// Payload: the message's fields in declaration order; u8/u64 big-endian, strings as
//          u32 length + bytes, string lists as u32 count + strings.
// A message's fields are listed once, in its fields() member; the same list drives encoding
// and decoding, so the two cannot drift apart. Unknown types and short or trailing payloads are
// decode errors: a process never trusts another's bytes more than it must.
// Descriptors (the spool file handed from queue to deliver) travel as SCM_RIGHTS with a frame.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tern::ipc {

constexpr uint32_t max_frame_size = 1u << 20;

enum class Type : uint16_t {
  submit_begin = 1,      // smtp -> queue: envelope of a new message
  submit_ready = 2,      // queue -> smtp: queue id assigned, send the body
  submit_chunk = 3,      // smtp -> queue: body bytes (LF line ends, dot-unstuffed)
  submit_end = 4,        // smtp -> queue: body complete, commit it
  submit_result = 5,     // queue -> smtp: committed (ok) or refused
  deliver_request = 10,  // queue -> deliver: one recipient, message fd attached
  deliver_result = 11,   // deliver -> queue: outcome for that recipient
  relay_request = 12,    // queue -> relay: one message for recipients of one domain, fd attached
  relay_result = 13,     // relay -> queue: outcome per recipient
  resolve_request = 20,  // smtp/deliver -> directory: what does this address mean?
  resolve_result = 21,   // directory -> caller: verdict, mailboxes, remote forwards
  auth_request = 22,     // a login service -> directory: check this password
  auth_result = 23,      // directory -> caller: the outcome
  domains_request = 24,  // any client -> directory: which domains are hosted?
  domains_result = 25,   // directory -> caller: hosted domains and domain aliases
  queue_control = 30,    // tern queue -> queue (queue-control.sock): list, show, flush, delete, hold, release
  queue_control_result = 31,
};

// not_local: only in DeliverResult, "this recipient is not hosted here": the queue hands it to
// the relay from then on.
enum class Status : uint8_t { ok = 0, temporary = 1, permanent = 2, not_local = 3 };

struct SubmitBegin {
  static constexpr Type type = Type::submit_begin;
  std::string client_address;
  std::string helo;
  std::string sender;  // empty for the null sender <>
  std::vector<std::string> recipients;
  // RFC 3461 DSN: ENVID and RET of the message; NOTIFY flags (relay::NotifyFlags) and ORCPT per
  // recipient, parallel to `recipients` (empty lists when the client gave none).
  std::string envid{};
  uint8_t ret = 0;
  std::vector<uint64_t> notify{};
  std::vector<std::string> orcpt{};
  uint8_t body_8bit = 0;       // BODY=8BITMIME was declared
  uint8_t smtputf8 = 0;        // SMTPUTF8 was declared
  std::string auth{};          // the SMTP AUTH user, "" when the client did not authenticate
  std::string forwarded_by{};  // a forward made by deliver: the hosted address that forwards it
  uint8_t sign = 0;            // tern's own mail (a DMARC report): the relay DKIM-signs it
  template <typename A>
  void fields(A& a) {
    a(client_address, helo, sender, recipients, envid, ret, notify, orcpt, body_8bit, smtputf8, auth, forwarded_by,
      sign);
  }
};

struct SubmitReady {
  static constexpr Type type = Type::submit_ready;
  std::string queue_id;
  template <typename A>
  void fields(A& a) {
    a(queue_id);
  }
};

struct SubmitChunk {
  static constexpr Type type = Type::submit_chunk;
  std::string data;
  template <typename A>
  void fields(A& a) {
    a(data);
  }
};

struct SubmitEnd {
  static constexpr Type type = Type::submit_end;
  uint8_t junk = 0;  // deliver into the recipients' Junk folders (a DMARC quarantine)
  template <typename A>
  void fields(A& a) {
    a(junk);
  }
};

struct SubmitResult {
  static constexpr Type type = Type::submit_result;
  Status status = Status::ok;
  std::string queue_id;
  std::string text;  // for the log and the SMTP reply when not ok
  template <typename A>
  void fields(A& a) {
    a(status, queue_id, text);
  }
};

struct DeliverRequest {
  static constexpr Type type = Type::deliver_request;
  std::string queue_id;
  std::string sender;
  std::string recipient;          // local@domain, lowercased
  uint64_t received = 0;          // unix seconds the queue accepted the message (over-quota grace)
  std::vector<std::string> skip;  // targets already served by an earlier attempt
  uint8_t junk = 0;               // Maildir targets get it in their Junk folder
  template <typename A>
  void fields(A& a) {
    a(queue_id, sender, recipient, received, skip, junk);
  }
};

struct ResolveRequest {
  static constexpr Type type = Type::resolve_request;
  std::string address;
  template <typename A>
  void fields(A& a) {
    a(address);
  }
};

// verdict: directory::Verdict (deliver, not_hosted, unknown, disabled, loop). status is
// temporary when the directory could not answer (database down); verdict is then meaningless.
struct ResolveResult {
  static constexpr Type type = Type::resolve_result;
  Status status = Status::ok;
  uint8_t verdict = 0;
  std::string detail;
  std::vector<std::string> mailbox_addresses;  // parallel lists, one entry per mailbox
  std::vector<std::string> maildirs;
  std::vector<uint64_t> quota_bytes;
  std::vector<uint64_t> quota_messages;
  std::vector<std::string> remote;
  template <typename A>
  void fields(A& a) {
    a(status, verdict, detail, mailbox_addresses, maildirs, quota_bytes, quota_messages, remote);
  }
};

struct AuthRequest {
  static constexpr Type type = Type::auth_request;
  std::string address;
  std::string password;
  std::string client;   // client IP address, for throttling
  std::string service;  // "smtp", "imap", "pop3", "web" or "test" (tern user auth)
  template <typename A>
  void fields(A& a) {
    a(address, password, client, service);
  }
};

enum class AuthOutcome : uint8_t {
  ok = 0,
  bad_credentials = 1,
  disabled = 2,
  service_denied = 3,
  throttled = 4,
  unavailable = 5
};

struct AuthResult {
  static constexpr Type type = Type::auth_result;
  uint8_t outcome = 0;  // AuthOutcome
  std::string address;  // the canonical account address when ok
  std::string text;     // for the log (never says whether the user exists to the client)
  // When ok: the account's Maildir (absolute) and quota (0 = no limit), for imap and pop3.
  std::string maildir{};
  uint64_t quota_bytes = 0;
  uint64_t quota_messages = 0;
  template <typename A>
  void fields(A& a) {
    a(outcome, address, text, maildir, quota_bytes, quota_messages);
  }
};

struct DomainsRequest {
  static constexpr Type type = Type::domains_request;
  template <typename A>
  void fields(A&) {}
};

struct DomainsResult {
  static constexpr Type type = Type::domains_result;
  Status status = Status::ok;
  std::vector<std::string> domains;  // enabled hosted domains, sorted
  std::vector<std::string> aliases;  // domain aliases as "alias=domain"
  std::string detail;                // why not, when status is not ok
  template <typename A>
  void fields(A& a) {
    a(status, domains, aliases, detail);
  }
};

struct DeliverResult {
  static constexpr Type type = Type::deliver_result;
  Status status = Status::ok;
  std::string text;
  std::vector<std::string> done;  // with a temporary status: targets served this time, to skip next time
  template <typename A>
  void fields(A& a) {
    a(status, text, done);
  }
};

// One SMTP transaction's worth: a message and the recipients of one destination domain (or
// route). The relay answers for each recipient in order.
struct RelayRequest {
  static constexpr Type type = Type::relay_request;
  std::string queue_id;
  std::string sender;
  std::string domain;                   // the recipients' domain (lowercased), chooses the route
  std::vector<std::string> recipients;  // all in `domain`
  std::vector<uint64_t> notify;         // parallel to recipients: relay::NotifyFlags
  std::vector<std::string> orcpt;       // parallel to recipients: "" or "rfc822;addr"
  std::string envid;
  uint8_t ret = 0;        // relay::DsnRet
  uint8_t body_8bit = 0;  // the body has 8-bit bytes (or BODY=8BITMIME was declared)
  uint8_t smtputf8 = 0;
  uint64_t size = 0;         // the spool file's size in bytes (LF line ends)
  uint8_t sign = 0;          // DKIM-sign it as it leaves: an authenticated user's mail, or tern's own report
  std::string arc_domain{};  // a forward: ARC-seal it as this (the forwarding address's) domain
  std::string auth{};        // the SMTP AUTH user who sent it ("" for tern's own mail)
  template <typename A>
  void fields(A& a) {
    a(queue_id, sender, domain, recipients, notify, orcpt, envid, ret, body_8bit, smtputf8, size, sign, arc_domain,
      auth);
  }
};

// status[i] is an ipc::Status (ok, temporary, permanent) for recipients[i]; text[i] the remote
// server's reply or the relay's reason, in the form a DSN's Diagnostic-Code and the log show.
struct RelayResult {
  static constexpr Type type = Type::relay_result;
  std::vector<uint64_t> status;
  std::vector<std::string> text;
  std::string remote_mta;   // "mx.example.org [192.0.2.1]:25" of the server that answered, if any
  std::string tls;          // "TLSv1.3 TLS_AES_256_GCM_SHA384 verified=dane" or "none"
  uint8_t remote_said = 0;  // 1 when text[] holds the remote server's replies (DSN type smtp)
  uint8_t remote_dsn = 0;   // 1 when the server took NOTIFY/ORCPT (it reports success itself)
  template <typename A>
  void fields(A& a) {
    a(status, text, remote_mta, tls, remote_said, remote_dsn);
  }
};

// `tern queue` commands: command is list, summary, show, flush, delete, hold or release;
// argument a queue id (or "" for all, with flush).
struct QueueControl {
  static constexpr Type type = Type::queue_control;
  std::string command;
  std::string argument;
  template <typename A>
  void fields(A& a) {
    a(command, argument);
  }
};

// ok with `json` (list, summary, show) or a confirmation; permanent with the reason otherwise.
struct QueueControlResult {
  static constexpr Type type = Type::queue_control_result;
  Status status = Status::ok;
  std::string json;
  std::string text;
  template <typename A>
  void fields(A& a) {
    a(status, json, text);
  }
};

struct Frame {
  Type type{};
  std::string payload;
};

namespace detail {
struct Writer {
  std::string out;
  void put(uint8_t v) { out += static_cast<char>(v); }
  void put(Status v) { put(static_cast<uint8_t>(v)); }
  void put(uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xff);
  }
  void put(uint64_t v) {
    for (int s = 56; s >= 0; s -= 8) out += static_cast<char>((v >> s) & 0xff);
  }
  void put(const std::string& v) {
    put(static_cast<uint32_t>(v.size()));
    out += v;
  }
  void put(const std::vector<std::string>& v) {
    put(static_cast<uint32_t>(v.size()));
    for (auto& s : v) put(s);
  }
  void put(const std::vector<uint64_t>& v) {
    put(static_cast<uint32_t>(v.size()));
    for (auto n : v) put(n);
  }
  template <typename... F>
  void operator()(F&... f) {
    (put(f), ...);
  }
};

struct Reader {
  std::string_view in;
  bool ok = true;
  bool take(size_t n, std::string_view& out) {
    if (!ok || in.size() < n) return ok = false;
    out = in.substr(0, n);
    in.remove_prefix(n);
    return true;
  }
  uint64_t number(size_t bytes) {
    std::string_view b;
    if (!take(bytes, b)) return 0;
    uint64_t v = 0;
    for (char c : b) v = (v << 8) | static_cast<unsigned char>(c);
    return v;
  }
  void get(uint8_t& v) { v = static_cast<uint8_t>(number(1)); }
  void get(Status& v) {
    uint64_t n = number(1);
    if (n > 3) ok = false;
    v = static_cast<Status>(n);
  }
  void get(uint32_t& v) { v = static_cast<uint32_t>(number(4)); }
  void get(uint64_t& v) { v = number(8); }
  void get(std::string& v) {
    uint64_t n = number(4);
    std::string_view b;
    if (take(n, b)) v.assign(b);
  }
  void get(std::vector<std::string>& v) {
    uint64_t n = number(4);
    if (n > in.size() / 4) ok = false;  // each string needs at least its length prefix
    for (uint64_t i = 0; ok && i < n; ++i) get(v.emplace_back());
  }
  void get(std::vector<uint64_t>& v) {
    uint64_t n = number(4);
    if (n > in.size() / 8) ok = false;
    for (uint64_t i = 0; ok && i < n; ++i) get(v.emplace_back());
  }
  template <typename... F>
  void operator()(F&... f) {
    (get(f), ...);
  }
};
}  // namespace detail

// Encodes a complete frame (header included) for message `m`.
template <typename M>
std::string encode(M m) {
  detail::Writer body;
  m.fields(body);
  detail::Writer frame;
  frame.put(static_cast<uint32_t>(body.out.size() + 2));
  frame.out += static_cast<char>(static_cast<uint16_t>(M::type) >> 8);
  frame.out += static_cast<char>(static_cast<uint16_t>(M::type) & 0xff);
  frame.out += body.out;
  return frame.out;
}

// Decodes a frame's payload as message M; nullopt when the type or the bytes do not match.
template <typename M>
std::optional<M> decode(const Frame& f) {
  if (f.type != M::type) return std::nullopt;
  M m;
  detail::Reader r{f.payload};
  m.fields(r);
  if (!r.ok || !r.in.empty()) return std::nullopt;
  return m;
}

// Splits a byte stream into frames. Pure: feed bytes, take frames.
class FrameSplitter {
 public:
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  // A frame, nullopt when more bytes are needed. Sets error() on an impossible length.
  std::optional<Frame> next();
  bool error() const { return error_; }
  bool empty() const { return buffer_.empty(); }

 private:
  std::string buffer_;
  bool error_ = false;
};

}  // namespace tern::ipc
