// The IMAP session: one client's state (not authenticated, authenticated, selected, logout),
// the commands of RFC 9051/RFC 3501 that tern offers, over the account's Mailstore and the
// selected folder's FolderIndex. No sockets: the service feeds it complete commands (from
// CommandReader) and raw lines, sends what it returns, and performs the actions (TLS, the
// password check through the directory, IDLE's waiting).
//
// Message numbers: the session keeps the client's view (UID and flags per message number) and
// changes it only when it tells the client: new messages (EXISTS), expunges (EXPUNGE, never
// during FETCH, STORE or SEARCH by number, RFC 9051 7.5.1) and flag changes made by others
// (FETCH FLAGS).
//
// STANDARDS: RFC 9051/RFC 3501, RFC 4315 (UIDPLUS), RFC 6851 (MOVE), RFC 2177 (IDLE), RFC 2342
// (NAMESPACE), RFC 2971 (ID), RFC 3691 (UNSELECT), RFC 4959 (SASL-IR), RFC 6154 (SPECIAL-USE),
// RFC 3348 (CHILDREN), RFC 4731 (ESEARCH), RFC 5182 (SEARCHRES), RFC 5530 (response codes),
// RFC 7888 (LITERAL+), RFC 7889 (APPENDLIMIT), RFC 8438 (STATUS=SIZE).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "deliver/quota.h"
#include "imap/command.h"
#include "imap/keywords.h"
#include "imap/mailstore.h"
#include "mailbox/index.h"
#include "mailbox/index_cache.h"

namespace tern::imap {

struct SessionSettings {
  std::string hostname;
  bool tls_active = false;                  // port 993, or after STARTTLS
  bool tls_available = false;               // a certificate is loaded: STARTTLS is offered
  bool plaintext_auth_without_tls = false;  // LOGIN and AUTHENTICATE PLAIN before TLS
  uint32_t max_auth_failures = 3;
  uint64_t append_limit = 64ull << 20;  // APPENDLIMIT (octets of one message)
  // The process's folder indexes, shared by its sessions; null: this session keeps its own.
  std::shared_ptr<mailbox::IndexCache> indexes;
};

enum class State { not_authenticated, authenticated, selected, logout };

// `more`: a long FETCH or SEARCH handled in slices, so that one client's command neither holds
// the other sessions of the process up nor builds its whole answer in memory. Send `out`, let
// the others run, then call resume() until the action is another one.
enum class Action { none, authenticate, start_tls, idle, close, more };

struct Response {
  std::string out;  // wire bytes: untagged responses, continuation requests and the tagged reply
  Action action = Action::none;
  uint32_t failed_logins = 0;  // set with a failed login's reply (the service delays it)
};

enum class AuthVerdict { ok, failed, unavailable, mailbox_error };

class Session {
 public:
  explicit Session(SessionSettings settings);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  std::string greeting() const;
  ParseOptions parse_options() const {
    ParseOptions options;
    options.utf8_accept = utf8_;
    return options;
  }
  // A complete command from the reader and its parse (APPEND's messages are read from `raw`).
  Response handle(const CompleteCommand& raw, const ParseResult& parsed);
  // A raw line after AUTHENTICATE's continuation request (the SASL response).
  Response handle_auth_line(std::string_view line);
  bool wants_raw_line() const { return awaiting_sasl_; }
  const std::string& pending_tag() const { return pending_tag_; }

  // After Action::more: the next slice of the command under way.
  Response resume();

  // After Action::authenticate.
  const std::string& pending_user() const { return user_; }
  const std::string& pending_password() const { return password_; }
  // `maildir` and `quota`: the account's Maildir and quota when ok (from the directory).
  Response complete_auth(AuthVerdict verdict, const std::string& account = {}, const std::string& maildir = {},
                         deliver::Quota quota = {});
  // After Action::start_tls and the handshake.
  void tls_started();

  // During IDLE: what changed in the selected mailbox since the last report ("" when nothing).
  std::string idle_updates();
  // The client ended IDLE with `line` ("DONE", or anything else: BAD).
  Response idle_done(std::string_view line);

  State state() const { return state_; }
  bool tls() const { return settings_.tls_active; }
  const std::string& account() const { return account_; }
  std::string capabilities() const;

 private:
  struct ViewEntry {
    uint32_t uid = 0;
    uint8_t flags = 0;      // mailbox::SystemFlag bits as last told to the client
    uint32_t keywords = 0;  // keyword letters (bit i: keyword number i of keywords_) as told
  };

  Response dispatch(const Command& c);
  Response ok(const Command& c, std::string_view text, std::string out = {});
  Response no(const Command& c, std::string_view text, std::string out = {});
  Response bad(const Command& c, std::string_view text);

  Response authenticate(const Command& c);
  Response login(const Command& c);
  Response select(const Command& c, bool read_only);
  Response list(const Command& c);
  Response status(const Command& c);
  Response append(const Command& c);
  Response create(const Command& c);
  Response remove(const Command& c);
  Response rename(const Command& c);
  Response subscribe(const Command& c, bool on);
  Response expunge(const Command& c);
  Response search(const Command& c);
  Response fetch(const Command& c);
  // The slices after fetch() and search() prepared `slicing_`; `out` is what is ready to send.
  Response continue_fetch(std::string out);
  Response continue_search();
  // The command's last reply: the slicing ends.
  Response abandon(Response last) {
    slicing_.reset();
    return last;
  }
  Response store(const Command& c);
  Response copy(const Command& c, bool move);
  Response close_mailbox(const Command& c, bool expunge_deleted);
  Response quota(const Command& c);
  // The quota's resources as "STORAGE used limit MESSAGE used limit" (RFC 9208; STORAGE in
  // units of 1024 octets), or "" when the account has no quota.
  std::string quota_resources(std::string& error);
  // Would `bytes` more in `count` messages exceed the quota? Sets `error` when it cannot tell.
  bool over_quota(uint64_t bytes, uint64_t count, std::string& error);
  // Keeps maildirsize in step with what this session added or removed (Maildir++ quota).
  void record_added(uint64_t bytes, uint64_t count);
  void record_removed(uint64_t bytes, uint64_t count);
  // Expunges `uids` of the selected folder and records the removal in maildirsize.
  std::error_code expunge_uids(const std::vector<uint32_t>& uids);

  // The messages (0-based view positions) a sequence set names; false when a number is past
  // the view (BAD for message numbers) or "$" has nothing saved.
  bool positions(const SequenceSet& set, bool uid, std::vector<size_t>& out) const;
  // Syncs the selected folder and reports to the client what changed since its view: EXISTS
  // always, EXPUNGE and flag changes only when `expunges_allowed`.
  std::string sync_and_report(bool expunges_allowed);
  std::string fetch_flags_line(size_t position, bool with_uid) const;
  std::string flags_text(uint8_t system, uint32_t keywords) const;
  // The untagged FLAGS and PERMANENTFLAGS of the selected mailbox (keywords included).
  std::string flags_responses() const;
  // The Maildir flags a flag list means in a folder with `map`; keywords the map lacks are added
  // to it when `define` (`defined` set). False when the map is full (26 keywords).
  bool to_maildir(const FlagList& list, KeywordMap& map, bool define, uint8_t& system, uint32_t& keywords,
                  bool& defined) const;
  const mailbox::IndexEntry* entry_at(size_t position) const;
  // The message file of view position `position` (looked up again when another session renamed
  // it: that syncs the folder's index, so pointers into it are void afterwards); false when it
  // is gone.
  bool read_message(size_t position, std::string& bytes) const;
  // Removes the view positions whose UIDs were expunged, answering "* n EXPUNGE" for each.
  std::string remove_from_view(const std::vector<uint32_t>& uids);

  SessionSettings settings_;
  State state_ = State::not_authenticated;
  std::string account_;
  std::string user_, password_;  // pending login
  std::string pending_tag_;
  bool awaiting_sasl_ = false;
  uint32_t auth_failures_ = 0;
  std::unique_ptr<Mailstore> store_;
  deliver::Quota quota_;
  // The selected mailbox.
  std::string selected_name_;
  bool read_only_ = false;
  std::shared_ptr<mailbox::IndexCache> indexes_;
  std::shared_ptr<mailbox::FolderIndex> index_;  // shared with the other sessions of the folder
  std::vector<ViewEntry> view_;
  KeywordMap keywords_;               // the selected folder's dovecot-keywords
  std::vector<uint32_t> saved_uids_;  // SEARCH RETURN (SAVE), RFC 5182
  bool saved_valid_ = false;
  std::string idle_tag_;
  bool condstore_ = false;  // CONDSTORE enabled (RFC 7162 3.1): MODSEQ goes with every FLAGS
  bool utf8_ = false;       // UTF8=ACCEPT enabled (RFC 6855): names and strings are UTF-8, not modified UTF-7
  bool qresync_ = false;    // QRESYNC enabled (RFC 7162 3.2): expunges are reported as VANISHED
  bool rev2_ = false;       // IMAP4rev2 enabled (RFC 9051): ESEARCH answers, UTF-8 names, no RECENT
  // "* VANISHED (EARLIER) ..." for the UIDs of `set` (all when empty) expunged after `modseq`.
  std::string vanished_since(uint64_t modseq, const SequenceSet* set) const;
  // The mailbox name as the client reads it: modified UTF-7, or UTF-8 after ENABLE UTF8=ACCEPT.
  std::string wire_name(std::string_view name) const;
  std::string_view append_text_;  // the command being handled (APPEND's octets)

  // The FETCH or SEARCH under way across Action::more, and how far it got. The view cannot change
  // meanwhile (the session runs no other command); the shared index can, so every slice looks
  // each message up again.
  struct Slicing {
    Command command;
    size_t next = 0;             // FETCH: into `chosen`; SEARCH: view position
    std::vector<size_t> chosen;  // FETCH: the view positions named
    bool needs_file = false, sets_seen = false, asks_modseq = false, some_gone = false;
    std::vector<uint32_t> saved_sequences, found_numbers, found_uids;  // SEARCH
  };
  std::optional<Slicing> slicing_;
};

}  // namespace tern::imap
