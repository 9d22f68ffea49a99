#include "imap/session.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "core/base64.h"
#include "imap/message_view.h"
#include "mime/imap_render.h"
#include "mime/message.h"

namespace tern::imap {
namespace {
using mailbox::MaildirFlags;

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint8_t maildir_bits(uint8_t imap_flags) {
  uint8_t out = 0;
  if (imap_flags & flag_answered) out |= mailbox::flag_replied;
  if (imap_flags & flag_flagged) out |= mailbox::flag_flagged;
  if (imap_flags & flag_deleted) out |= mailbox::flag_trashed;
  if (imap_flags & flag_seen) out |= mailbox::flag_seen;
  if (imap_flags & flag_draft) out |= mailbox::flag_draft;
  return out;
}

// "*" and "%" patterns of LIST (RFC 9051 6.3.9): "*" matches anything, "%" anything but the
// hierarchy separator.
bool pattern_matches(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) return name.empty();
  if (pattern[0] == '*' || pattern[0] == '%') {
    for (size_t i = 0; i <= name.size(); ++i) {
      if (pattern_matches(pattern.substr(1), name.substr(i))) return true;
      if (i < name.size() && pattern[0] == '%' && name[i] == hierarchy_separator) return false;
    }
    return false;
  }
  return !name.empty() && pattern[0] == name[0] && pattern_matches(pattern.substr(1), name.substr(1));
}

std::string sequence_text(const std::vector<uint32_t>& numbers) {
  std::string out;
  for (size_t i = 0; i < numbers.size();) {
    size_t j = i;
    while (j + 1 < numbers.size() && numbers[j + 1] == numbers[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(numbers[i]);
    if (j > i) out += ":" + std::to_string(numbers[j]);
    i = j + 1;
  }
  return out;
}

}  // namespace

Session::Session(SessionSettings settings)
    : settings_(std::move(settings)),
      indexes_(settings_.indexes ? settings_.indexes : std::make_shared<mailbox::IndexCache>(0)) {}

std::string Session::wire_name(std::string_view name) const {
  return mime::imap_string(utf8_ ? std::string(name) : encode_mutf7(name).value_or(std::string(name)));
}

Session::~Session() { std::fill(password_.begin(), password_.end(), '\0'); }

std::string Session::greeting() const {
  return "* OK [CAPABILITY " + capabilities() + "] " + settings_.hostname + " IMAP server ready (tern)\r\n";
}

std::string Session::capabilities() const {
  std::string out =
      "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE "
      "LIST-EXTENDED "
      "LIST-STATUS QUOTA "
      "QUOTA=RES-STORAGE QUOTA=RES-MESSAGE";
  out += " ESEARCH SEARCHRES CONDSTORE QRESYNC STATUS=SIZE UTF8=ACCEPT APPENDLIMIT=" +
         std::to_string(settings_.append_limit);
  if (state_ == State::not_authenticated) {
    if (settings_.tls_available && !settings_.tls_active) out += " STARTTLS";
    if (settings_.tls_active || settings_.plaintext_auth_without_tls)
      out += " AUTH=PLAIN";
    else
      out += " LOGINDISABLED";
  }
  return out;
}

Response Session::ok(const Command& c, std::string_view text, std::string out) {
  out += c.tag + " OK " + std::string(text) + "\r\n";
  return {std::move(out)};
}

Response Session::no(const Command& c, std::string_view text, std::string out) {
  out += c.tag + " NO " + std::string(text) + "\r\n";
  return {std::move(out)};
}

Response Session::bad(const Command& c, std::string_view text) {
  return {c.tag + " BAD " + std::string(text) + "\r\n"};
}

Response Session::handle(const CompleteCommand& raw, const ParseResult& parsed) {
  if (const ParseError* error = std::get_if<ParseError>(&parsed)) return {error->reply};
  const Command& c = std::get<Command>(parsed);
  if (state_ == State::logout) return {"", Action::close};
  append_text_ = raw.text;
  Response r = dispatch(c);
  append_text_ = {};
  return r;
}

Response Session::dispatch(const Command& c) {
  const bool authed = state_ == State::authenticated || state_ == State::selected;
  const bool selected = state_ == State::selected;
  auto wrong_state = [&](const char* when) { return bad(c, std::string("command not allowed ") + when); };
  switch (c.verb) {
    case Verb::capability:
      return ok(c, "CAPABILITY completed", "* CAPABILITY " + capabilities() + "\r\n");
    case Verb::noop:
    case Verb::check:
      if (selected) return ok(c, c.verb == Verb::noop ? "NOOP completed" : "CHECK completed", sync_and_report(true));
      if (c.verb == Verb::check) return wrong_state("without a selected mailbox");
      return ok(c, "NOOP completed");
    case Verb::logout:
      state_ = State::logout;
      return {"* BYE " + settings_.hostname + " IMAP server logging out\r\n" + c.tag + " OK LOGOUT completed\r\n",
              Action::close};
    case Verb::id:
      return ok(c, "ID completed", "* ID (\"name\" \"tern\")\r\n");
    case Verb::starttls:
      if (state_ != State::not_authenticated) return wrong_state("after login");
      if (settings_.tls_active) return bad(c, "TLS is already active");
      if (!settings_.tls_available) return no(c, "STARTTLS is not available on this server");
      return {c.tag + " OK Begin TLS negotiation now\r\n", Action::start_tls};
    case Verb::login:
      if (state_ != State::not_authenticated) return wrong_state("after login");
      return login(c);
    case Verb::authenticate:
      if (state_ != State::not_authenticated) return wrong_state("after login");
      return authenticate(c);
    default:
      break;
  }
  if (!authed) return wrong_state("before login; use LOGIN or AUTHENTICATE first");
  switch (c.verb) {
    case Verb::enable: {
      // RFC 5161: only what was not enabled before is listed.
      std::string enabled;
      for (const auto& capability : c.capabilities)
        if (capability == "CONDSTORE" && !condstore_) {
          condstore_ = true;
          enabled += " CONDSTORE";
        } else if (capability == "QRESYNC" && !qresync_) {
          qresync_ = condstore_ = true;  // RFC 7162 3.2.3: QRESYNC implies CONDSTORE
          enabled += " QRESYNC";
        } else if (capability == "IMAP4REV2" && !rev2_) {
          // RFC 9051: SEARCH answers with ESEARCH, names are UTF-8 (it includes UTF8=ACCEPT).
          rev2_ = utf8_ = true;
          enabled += " IMAP4rev2";
        } else if (capability == "UTF8=ACCEPT" && !utf8_) {
          utf8_ = true;
          enabled += " UTF8=ACCEPT";
        }
      return ok(c, "ENABLE completed", "* ENABLED" + enabled + "\r\n");
    }
    case Verb::select:
      return select(c, false);
    case Verb::examine:
      return select(c, true);
    case Verb::create:
      return create(c);
    case Verb::delete_:
      return remove(c);
    case Verb::rename:
      return rename(c);
    case Verb::subscribe:
      return subscribe(c, true);
    case Verb::unsubscribe:
      return subscribe(c, false);
    case Verb::list:
    case Verb::lsub:
      return list(c);
    case Verb::namespace_:
      return ok(c, "NAMESPACE completed", "* NAMESPACE ((\"\" \".\")) NIL NIL\r\n");
    case Verb::status:
      return status(c);
    case Verb::append:
      return append(c);
    case Verb::idle:
      idle_tag_ = c.tag;
      return {"+ idling\r\n" + (selected ? sync_and_report(true) : std::string()), Action::idle};
    case Verb::getquota:
    case Verb::getquotaroot:
    case Verb::setquota:
      return quota(c);
    default:
      break;
  }
  if (!selected) return wrong_state("without a selected mailbox; SELECT one first");
  switch (c.verb) {
    case Verb::close:
      return close_mailbox(c, !read_only_);
    case Verb::unselect:
      return close_mailbox(c, false);
    case Verb::expunge:
      return expunge(c);
    case Verb::search:
      return search(c);
    case Verb::fetch:
      return fetch(c);
    case Verb::store:
      return store(c);
    case Verb::copy:
      return copy(c, false);
    case Verb::move:
      return copy(c, true);
    default:
      return bad(c, "command not implemented");
  }
}

// --- login -------------------------------------------------------------------------------

Response Session::login(const Command& c) {
  if (!settings_.tls_active && !settings_.plaintext_auth_without_tls)
    return no(c, "[PRIVACYREQUIRED] LOGIN is disabled without TLS; use STARTTLS first");
  pending_tag_ = c.tag;
  user_ = c.name;
  password_ = c.password;
  return {"", Action::authenticate};
}

Response Session::authenticate(const Command& c) {
  if (c.name != "PLAIN") return no(c, "[CANNOT] unsupported authentication mechanism (supported: PLAIN)");
  if (!settings_.tls_active && !settings_.plaintext_auth_without_tls)
    return no(c, "[PRIVACYREQUIRED] authentication is disabled without TLS; use STARTTLS first");
  pending_tag_ = c.tag;
  if (!c.initial_response) {
    awaiting_sasl_ = true;
    return {"+ \r\n"};
  }
  return handle_auth_line(*c.initial_response);
}

Response Session::handle_auth_line(std::string_view line) {
  awaiting_sasl_ = false;
  std::string tag = pending_tag_;
  if (line == "*") return {tag + " BAD authentication cancelled\r\n"};
  std::string decoded;
  if (line != "=") {
    auto bytes = decode_base64_strict(line);
    if (!bytes) return {tag + " BAD invalid base64 data in authentication response\r\n"};
    decoded = std::move(*bytes);
  }
  // [authzid] NUL authcid NUL password (RFC 4616)
  size_t first = decoded.find('\0');
  size_t second = first == std::string::npos ? first : decoded.find('\0', first + 1);
  if (second == std::string::npos) {
    std::fill(decoded.begin(), decoded.end(), '\0');
    return {tag +
            " NO [AUTHENTICATIONFAILED] malformed PLAIN response (expected [authzid] NUL authcid NUL "
            "password)\r\n"};
  }
  std::string authzid = decoded.substr(0, first);
  user_ = decoded.substr(first + 1, second - first - 1);
  password_ = decoded.substr(second + 1);
  std::fill(decoded.begin(), decoded.end(), '\0');
  if (!authzid.empty() && authzid != user_) {
    std::fill(password_.begin(), password_.end(), '\0');
    password_.clear();
    return {tag + " NO [AUTHORIZATIONFAILED] logging in as another user is not allowed\r\n"};
  }
  return {"", Action::authenticate};
}

Response Session::complete_auth(AuthVerdict verdict, const std::string& account, const std::string& maildir,
                                deliver::Quota quota) {
  std::fill(password_.begin(), password_.end(), '\0');
  password_.clear();
  std::string tag = pending_tag_;
  switch (verdict) {
    case AuthVerdict::ok:
      account_ = account;
      store_ = std::make_unique<Mailstore>(maildir);
      quota_ = quota;
      state_ = State::authenticated;
      return {tag + " OK [CAPABILITY " + capabilities() + "] Logged in\r\n"};
    case AuthVerdict::unavailable:
      return {tag + " NO [UNAVAILABLE] authentication temporarily unavailable, try again later\r\n"};
    case AuthVerdict::mailbox_error:
      return {tag + " NO [UNAVAILABLE] the mailbox cannot be opened, try again later\r\n"};
    case AuthVerdict::failed:
      break;
  }
  ++auth_failures_;
  if (auth_failures_ >= settings_.max_auth_failures) {
    state_ = State::logout;
    return {tag + " NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE too many failed logins, closing\r\n",
            Action::close, auth_failures_};
  }
  return {tag + " NO [AUTHENTICATIONFAILED] Authentication failed\r\n", Action::none, auth_failures_};
}

void Session::tls_started() { settings_.tls_active = true; }

// --- mailboxes ---------------------------------------------------------------------------

Response Session::select(const Command& c, bool read_only) {
  if (c.select.qresync && !qresync_) return bad(c, "QRESYNC must be enabled first (ENABLE QRESYNC)");
  // Selecting (even failing to) leaves the selected state (RFC 9051 6.3.2); with QRESYNC the
  // client is told (RFC 7162 3.2.11).
  std::string closed = state_ == State::selected && qresync_ ? "* OK [CLOSED] Previous mailbox closed\r\n" : "";
  state_ = State::authenticated;
  index_.reset();
  view_.clear();
  saved_valid_ = false;
  if (c.select.condstore) condstore_ = true;
  auto path = store_->folder_path(c.mailbox);
  if (!path || !store_->exists(c.mailbox)) return no(c, "[NONEXISTENT] mailbox does not exist", closed);
  auto index = indexes_->open(*path);
  if (auto ec = index->sync(now_seconds()))
    return no(c, "[UNAVAILABLE] the mailbox cannot be read, try again later (" + ec.message() + ")", closed);
  index_ = std::move(index);
  selected_name_ = c.mailbox;
  read_only_ = read_only;
  state_ = State::selected;
  keywords_ = load_keywords(*path);
  uint32_t first_unseen = 0;
  for (const auto& entry : index_->messages()) {
    view_.push_back({entry.uid, entry.flags.system, entry.flags.keyword_letters});
    if (!first_unseen && !(entry.flags.system & mailbox::flag_seen)) first_unseen = static_cast<uint32_t>(view_.size());
  }
  std::string out = closed + flags_responses();
  out += "* " + std::to_string(view_.size()) + " EXISTS\r\n";
  if (!rev2_) out += "* 0 RECENT\r\n";  // IMAP4rev2 dropped \Recent and RECENT
  if (first_unseen) out += "* OK [UNSEEN " + std::to_string(first_unseen) + "] First unseen\r\n";
  out += "* OK [UIDVALIDITY " + std::to_string(index_->uidvalidity()) + "] UIDs valid\r\n";
  out += "* OK [UIDNEXT " + std::to_string(index_->next_uid()) + "] Predicted next UID\r\n";
  out += "* OK [HIGHESTMODSEQ " + std::to_string(std::max<uint64_t>(index_->highest_modseq(), 1)) + "] Highest\r\n";
  // QRESYNC (RFC 7162 3.2.5): what the client's cache of this UIDVALIDITY misses since its MODSEQ.
  if (c.select.qresync && c.select.qresync->uid_validity == index_->uidvalidity()) {
    const QresyncParams& q = *c.select.qresync;
    out += vanished_since(q.modseq, q.known_uids.ranges.empty() ? nullptr : &q.known_uids);
    for (size_t i = 0; i < view_.size(); ++i)
      if (const mailbox::IndexEntry* entry = entry_at(i); entry && entry->modseq > q.modseq)
        out += fetch_flags_line(i, true);
  }
  return ok(c, read_only ? "[READ-ONLY] EXAMINE completed" : "[READ-WRITE] SELECT completed", std::move(out));
}

Response Session::close_mailbox(const Command& c, bool expunge_deleted) {
  if (expunge_deleted) {
    std::vector<uint32_t> doomed;
    for (const auto& entry : index_->messages())
      if (entry.flags.system & mailbox::flag_trashed) doomed.push_back(entry.uid);
    if (!doomed.empty()) expunge_uids(doomed);
  }
  index_.reset();
  view_.clear();
  state_ = State::authenticated;
  return ok(c, c.verb == Verb::close ? "CLOSE completed" : "UNSELECT completed");
}

Response Session::list(const Command& c) {
  const ListArgs& args = c.list;
  bool lsub = c.verb == Verb::lsub;
  if (!lsub && args.patterns.size() == 1 && args.patterns[0].empty())
    return ok(c, "LIST completed", "* LIST (\\Noselect) \".\" \"\"\r\n");
  std::vector<FolderInfo> folders;
  if (auto ec = store_->list(folders)) return no(c, "[SERVERBUG] cannot list the mailboxes: " + ec.message());
  std::vector<std::string> subscribed = store_->subscriptions();
  auto is_subscribed = [&](const std::string& name) {
    return std::find(subscribed.begin(), subscribed.end(), name) != subscribed.end();
  };
  bool only_subscribed = lsub || (args.selection & select_subscribed);
  bool only_special = args.selection & select_special_use;
  bool recursive = (args.selection & select_recursive_match) && (args.selection & select_subscribed);
  bool show_subscribed = only_subscribed || (args.return_options & return_subscribed);
  // RFC 5258 3.1: with SUBSCRIBED, subscriptions of mailboxes that do not exist are listed too.
  if (only_subscribed) {
    for (const std::string& name : subscribed)
      if (std::none_of(folders.begin(), folders.end(), [&](const FolderInfo& f) { return f.name == name; }))
        folders.push_back({name, special_use_of(name), false, false});
    std::sort(folders.begin() + 1, folders.end(),
              [](const FolderInfo& a, const FolderInfo& b) { return a.name < b.name; });
  }
  auto has_subscribed_child = [&](const std::string& name) {
    return std::any_of(subscribed.begin(), subscribed.end(), [&](const std::string& s) {
      return s.size() > name.size() + 1 && s.compare(0, name.size(), name) == 0 &&
             s[name.size()] == hierarchy_separator;
    });
  };
  std::string out;
  for (const FolderInfo& folder : folders) {
    bool matched = false;
    for (const std::string& pattern : args.patterns) {
      std::string full = args.reference + pattern;
      std::string name = folder.name;
      // INBOX matches case-insensitively.
      if (name == "INBOX" && full.size() >= 5) {
        std::string head = full.substr(0, 5);
        for (char& ch : head) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (head == "INBOX") full = "INBOX" + full.substr(5);
      }
      if (pattern_matches(full, name)) matched = true;
    }
    if (!matched) continue;
    bool sub = is_subscribed(folder.name);
    bool child_info = false;  // RECURSIVEMATCH: listed only because a child is subscribed
    if (only_subscribed && !sub) {
      if (!recursive || !has_subscribed_child(folder.name)) continue;
      child_info = true;
    }
    if (only_special && folder.special_use.empty()) continue;
    std::vector<std::string> attributes;
    if (!folder.selectable) attributes.push_back(lsub ? "\\Noselect" : "\\NonExistent");
    if (!lsub) attributes.push_back(folder.has_children ? "\\HasChildren" : "\\HasNoChildren");
    if (show_subscribed && sub && !lsub) attributes.push_back("\\Subscribed");
    if (!lsub && !folder.special_use.empty()) attributes.push_back(folder.special_use);
    std::string joined;
    for (const auto& a : attributes) joined += (joined.empty() ? "" : " ") + a;
    out += std::string(lsub ? "* LSUB (" : "* LIST (") + joined + ") \".\" " + wire_name(folder.name);
    if (child_info) out += " (\"CHILDINFO\" (\"SUBSCRIBED\"))";
    out += "\r\n";
    if (!lsub && (args.return_options & return_status) && folder.selectable) {
      Command status_command = c;
      status_command.mailbox = folder.name;
      status_command.status_items = args.status_items;
      Response r = status(status_command);
      // Only the untagged STATUS line (RFC 5819).
      out += r.out.substr(0, r.out.find(c.tag + " "));
    }
  }
  return ok(c, lsub ? "LSUB completed" : "LIST completed", std::move(out));
}

Response Session::status(const Command& c) {
  auto path = store_->folder_path(c.mailbox);
  if (!path || !store_->exists(c.mailbox)) return no(c, "[NONEXISTENT] mailbox does not exist");
  std::shared_ptr<mailbox::FolderIndex> shared = indexes_->open(*path);
  const mailbox::FolderIndex& index = *shared;
  if (auto ec = shared->sync(now_seconds()))
    return no(c, "[UNAVAILABLE] the mailbox cannot be read, try again later (" + ec.message() + ")");
  uint64_t unseen = 0, deleted = 0, size = 0;
  for (const auto& entry : index.messages()) {
    if (!(entry.flags.system & mailbox::flag_seen)) ++unseen;
    if (entry.flags.system & mailbox::flag_trashed) ++deleted;
    size += entry.vsize;
  }
  std::vector<std::string> items;
  uint16_t wanted = c.status_items;
  if (wanted & status_messages) items.push_back("MESSAGES " + std::to_string(index.messages().size()));
  if (wanted & status_uid_next) items.push_back("UIDNEXT " + std::to_string(index.next_uid()));
  if (wanted & status_uid_validity) items.push_back("UIDVALIDITY " + std::to_string(index.uidvalidity()));
  if (wanted & status_unseen) items.push_back("UNSEEN " + std::to_string(unseen));
  if (wanted & status_deleted) items.push_back("DELETED " + std::to_string(deleted));
  if (wanted & status_size) items.push_back("SIZE " + std::to_string(size));
  if (wanted & status_recent) items.push_back("RECENT 0");
  if (wanted & status_highest_modseq) {
    condstore_ = true;  // RFC 7162 3.1: STATUS HIGHESTMODSEQ enables CONDSTORE
    items.push_back("HIGHESTMODSEQ " + std::to_string(std::max<uint64_t>(index.highest_modseq(), 1)));
  }
  if (wanted & status_append_limit) items.push_back("APPENDLIMIT " + std::to_string(settings_.append_limit));
  std::string joined;
  for (const auto& item : items) joined += (joined.empty() ? "" : " ") + item;
  return ok(c, "STATUS completed", "* STATUS " + wire_name(c.mailbox) + " (" + joined + ")\r\n");
}

Response Session::create(const Command& c) {
  std::string problem = name_problem(c.mailbox);
  if (!problem.empty()) return no(c, "[CANNOT] " + problem);
  for (const auto& use : c.special_use)
    if (special_use_of(c.mailbox) != use)
      return no(c, "[USEATTR] tern gives special use by name: call the mailbox Sent, Drafts, Trash, Junk or Archive");
  std::error_code ec = store_->create(c.mailbox);
  if (ec == std::errc::file_exists) return no(c, "[ALREADYEXISTS] mailbox already exists");
  if (ec) return no(c, "[SERVERBUG] cannot create the mailbox: " + ec.message());
  return ok(c, "CREATE completed");
}

Response Session::remove(const Command& c) {
  std::string problem = name_problem(c.mailbox);
  if (!problem.empty()) return no(c, "[CANNOT] " + problem);
  std::error_code ec = store_->remove(c.mailbox);
  if (ec == std::errc::operation_not_supported) return no(c, "[CANNOT] INBOX cannot be deleted");
  if (ec == std::errc::no_such_file_or_directory) return no(c, "[NONEXISTENT] mailbox does not exist");
  if (ec) return no(c, "[SERVERBUG] cannot delete the mailbox: " + ec.message());
  if (state_ == State::selected && selected_name_ == c.mailbox) {
    index_.reset();
    view_.clear();
    state_ = State::authenticated;
  }
  store_->subscribe(c.mailbox, false);
  return ok(c, "DELETE completed");
}

Response Session::rename(const Command& c) {
  for (const std::string* name : {&c.mailbox, &c.new_mailbox}) {
    std::string problem = name_problem(*name);
    if (!problem.empty()) return no(c, "[CANNOT] " + problem);
  }
  std::error_code ec = store_->rename(c.mailbox, c.new_mailbox);
  if (ec == std::errc::operation_not_supported) return no(c, "[CANNOT] nothing can be renamed to INBOX");
  if (ec == std::errc::no_such_file_or_directory) return no(c, "[NONEXISTENT] mailbox does not exist");
  if (ec == std::errc::file_exists) return no(c, "[ALREADYEXISTS] the new name exists already");
  if (ec) return no(c, "[SERVERBUG] cannot rename the mailbox: " + ec.message());
  return ok(c, "RENAME completed");
}

Response Session::subscribe(const Command& c, bool on) {
  std::string problem = name_problem(c.mailbox);
  if (!problem.empty()) return no(c, "[CANNOT] " + problem);
  if (auto ec = store_->subscribe(c.mailbox, on))
    return no(c, "[SERVERBUG] cannot save subscriptions: " + ec.message());
  return ok(c, on ? "SUBSCRIBE completed" : "UNSUBSCRIBE completed");
}

Response Session::append(const Command& c) {
  auto path = store_->folder_path(c.mailbox);
  if (!path || !store_->exists(c.mailbox)) return no(c, "[TRYCREATE] mailbox does not exist");
  std::vector<std::string> locations;
  uint64_t total = 0;
  for (const AppendMessage& m : c.messages) total += m.size;
  std::string quota_error;
  if (over_quota(total, c.messages.size(), quota_error))
    return no(c, quota_error.empty() ? "[OVERQUOTA] the mailbox is over its quota; delete some mail first"
                                     : "[UNAVAILABLE] " + quota_error);
  KeywordMap map = load_keywords(*path);
  for (const AppendMessage& m : c.messages) {
    if (m.size > settings_.append_limit) return no(c, "[TOOBIG] message larger than APPENDLIMIT");
    // The octets are in the command text the session got; handle() callers keep it.
    MaildirFlags flags;
    bool defined = false;
    if (!to_maildir(m.flags, map, true, flags.system, flags.keyword_letters, defined))
      return no(c, "[LIMIT] the target mailbox has 26 keywords already");
    if (defined)
      if (auto ec = save_keywords(*path, map)) return no(c, "[SERVERBUG] cannot save keywords: " + ec.message());
    std::string location;
    std::string_view bytes = std::string_view(append_text_).substr(m.offset, m.size);
    int64_t when = m.internal_date ? m.internal_date->unix_seconds() : now_seconds();
    if (auto ec = store_->add_message(*path, bytes, flags, when, location)) {
      if (ec == std::errc::no_space_on_device || ec.value() == EDQUOT)
        return no(c, "[OVERQUOTA] not enough disk space to store the message");
      return no(c, "[SERVERBUG] cannot store the message: " + ec.message());
    }
    record_added(mailbox::parse_maildir_name(location.substr(4))->size.value_or(m.size), 1);
    locations.push_back(std::move(location));
  }
  std::shared_ptr<mailbox::FolderIndex> target = indexes_->open(*path);
  std::string code;
  std::vector<uint32_t> uids;
  if (!target->add_files(locations, now_seconds(), uids) && std::find(uids.begin(), uids.end(), 0u) == uids.end())
    code = "[APPENDUID " + std::to_string(target->uidvalidity()) + " " + sequence_text(uids) + "] ";
  std::string out = state_ == State::selected ? sync_and_report(true) : std::string();
  return ok(c, code + "APPEND completed", std::move(out));
}

// --- the selected mailbox ----------------------------------------------------------------

const mailbox::IndexEntry* Session::entry_at(size_t position) const { return index_->find(view_[position].uid); }

bool Session::positions(const SequenceSet& set, bool uid, std::vector<size_t>& out) const {
  out.clear();
  if (set.saved) {
    if (!saved_valid_) return false;
    for (size_t i = 0; i < view_.size(); ++i)
      if (std::binary_search(saved_uids_.begin(), saved_uids_.end(), view_[i].uid)) out.push_back(i);
    return true;
  }
  std::vector<bool> chosen(view_.size(), false);
  uint32_t largest = uid ? (view_.empty() ? 0 : view_.back().uid) : static_cast<uint32_t>(view_.size());
  for (const SequenceRange& r : set.ranges) {
    uint32_t a = r.first == sequence_star ? largest : r.first;
    uint32_t b = r.last == sequence_star ? largest : r.last;
    if (a > b) std::swap(a, b);
    if (uid) {
      auto lo =
          std::lower_bound(view_.begin(), view_.end(), a, [](const ViewEntry& e, uint32_t v) { return e.uid < v; });
      for (auto it = lo; it != view_.end() && it->uid <= b; ++it)
        chosen[static_cast<size_t>(it - view_.begin())] = true;
    } else {
      if (a == 0 || b > view_.size()) return false;
      for (uint32_t n = a; n <= b; ++n) chosen[n - 1] = true;
    }
  }
  for (size_t i = 0; i < chosen.size(); ++i)
    if (chosen[i]) out.push_back(i);
  return true;
}

std::string Session::flags_text(uint8_t system, uint32_t keywords) const {
  std::string out = "(";
  for (auto name : mailbox::imap_flag_names(system)) out += (out.size() > 1 ? " " : "") + std::string(name);
  for (const auto& name : keywords_.names_of(keywords)) out += (out.size() > 1 ? " " : "") + name;
  return out + ")";
}

std::string Session::flags_responses() const {
  std::string keywords;
  for (const auto& name : keywords_.all()) keywords += " " + name;
  std::string out = "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded" + keywords + ")\r\n";
  out += read_only_ ? "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"
                    : "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded" + keywords +
                          " \\*)] Flags permitted\r\n";
  return out;
}

bool Session::to_maildir(const FlagList& list, KeywordMap& map, bool define, uint8_t& system, uint32_t& keywords,
                         bool& defined) const {
  system = maildir_bits(list.system);
  keywords = 0;
  for (const auto& name : list.keywords) {
    if (auto flag = mailbox::system_flag_from_imap(name)) {  // $Forwarded is the Maildir letter P
      system |= *flag;
      continue;
    }
    int number = map.find(name);
    if (number < 0 && define) {
      number = map.add(name);
      if (number < 0) return false;
      defined = true;
    }
    if (number >= 0) keywords |= 1u << number;
  }
  return true;
}

std::string Session::fetch_flags_line(size_t position, bool with_uid) const {
  std::string out = "* " + std::to_string(position + 1) + " FETCH (";
  if (with_uid) out += "UID " + std::to_string(view_[position].uid) + " ";
  out += "FLAGS " + flags_text(view_[position].flags, view_[position].keywords);
  if (condstore_)
    if (const mailbox::IndexEntry* entry = entry_at(position)) out += " MODSEQ (" + std::to_string(entry->modseq) + ")";
  return out + ")\r\n";
}

std::string Session::remove_from_view(const std::vector<uint32_t>& uids) {
  std::string out;
  std::vector<uint32_t> vanished;
  for (size_t i = view_.size(); i-- > 0;) {
    if (!std::binary_search(uids.begin(), uids.end(), view_[i].uid)) continue;
    if (qresync_)
      vanished.insert(vanished.begin(), view_[i].uid);
    else
      out += "* " + std::to_string(i + 1) + " EXPUNGE\r\n";
    view_.erase(view_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  // RFC 7162 3.2.10: with QRESYNC, expunges are one VANISHED response of UIDs.
  if (!vanished.empty()) out += "* VANISHED " + sequence_text(vanished) + "\r\n";
  // The expunge responses above go from the highest number down, so every number sent is
  // valid when the client reads it.
  return out;
}

std::string Session::sync_and_report(bool expunges_allowed) {
  if (!index_ || index_->sync(now_seconds())) return "";
  std::string out;
  if (expunges_allowed) {
    std::vector<uint32_t> gone;
    for (const auto& v : view_)
      if (!index_->find(v.uid)) gone.push_back(v.uid);
    out += remove_from_view(gone);
    for (size_t i = 0; i < view_.size(); ++i) {
      const mailbox::IndexEntry* entry = index_->find(view_[i].uid);
      if (entry && (entry->flags.system != view_[i].flags || entry->flags.keyword_letters != view_[i].keywords)) {
        view_[i].flags = entry->flags.system;
        view_[i].keywords = entry->flags.keyword_letters;
        out += fetch_flags_line(i, false);
      }
    }
  }
  uint32_t last = view_.empty() ? 0 : view_.back().uid;
  size_t before = view_.size();
  for (const auto& entry : index_->messages())
    if (entry.uid > last) view_.push_back({entry.uid, entry.flags.system, entry.flags.keyword_letters});
  if (view_.size() != before) out += "* " + std::to_string(view_.size()) + " EXISTS\r\n";
  return out;
}

Response Session::expunge(const Command& c) {
  if (read_only_) return no(c, "[READ-ONLY] the mailbox is read-only (EXAMINE)");
  std::vector<size_t> chosen;
  if (c.uid && !positions(c.sequence, true, chosen)) return bad(c, "invalid UID set");
  std::vector<uint32_t> doomed;
  auto consider = [&](size_t i) {
    const mailbox::IndexEntry* entry = entry_at(i);
    if (entry && (entry->flags.system & mailbox::flag_trashed)) doomed.push_back(entry->uid);
  };
  if (c.uid)
    for (size_t i : chosen) consider(i);
  else
    for (size_t i = 0; i < view_.size(); ++i) consider(i);
  if (auto ec = expunge_uids(doomed))
    return no(c, "[SERVERBUG] some messages could not be expunged: " + ec.message(), sync_and_report(true));
  std::string out = sync_and_report(true);
  return ok(c, "EXPUNGE completed", std::move(out));
}

Response Session::store(const Command& c) {
  if (read_only_) return no(c, "[READ-ONLY] the mailbox is read-only (EXAMINE)");
  std::vector<size_t> chosen;
  if (!positions(c.sequence, c.uid, chosen)) return bad(c, "invalid message number or set");
  if (c.store.unchanged_since) condstore_ = true;
  uint8_t bits = 0;
  uint32_t keyword_bits = 0;
  bool defined = false;
  // New keywords are named in the folder's dovecot-keywords first (RFC 9051: PERMANENTFLAGS has \*).
  KeywordMap map = load_keywords(index_->folder());
  if (!to_maildir(c.store.flags, map, c.store.mode != StoreMode::remove, bits, keyword_bits, defined))
    return no(c, "[LIMIT] this mailbox has 26 keywords already; remove one from every message first");
  std::string out;
  if (defined) {
    if (auto ec = save_keywords(index_->folder(), map))
      return no(c, "[SERVERBUG] cannot save keywords: " + ec.message());
  }
  if (map.all() != keywords_.all()) {
    keywords_ = map;  // RFC 9051 7.3.5: new keywords are announced with FLAGS
    out += flags_responses();
  }
  bool some_gone = false;
  std::vector<uint32_t> modified;  // UNCHANGEDSINCE failed for these (numbers or UIDs as the command)
  for (size_t i : chosen) {
    const mailbox::IndexEntry* entry = entry_at(i);
    if (!entry) {
      some_gone = true;
      continue;
    }
    if (c.store.unchanged_since && entry->modseq > *c.store.unchanged_since) {
      modified.push_back(c.uid ? entry->uid : static_cast<uint32_t>(i + 1));
      continue;
    }
    MaildirFlags flags = entry->flags;
    switch (c.store.mode) {
      case StoreMode::replace:
        flags.system = bits;
        flags.keyword_letters = keyword_bits;
        break;
      case StoreMode::add:
        flags.system |= bits;
        flags.keyword_letters |= keyword_bits;
        break;
      case StoreMode::remove:
        flags.system &= static_cast<uint8_t>(~bits);
        flags.keyword_letters &= ~keyword_bits;
        break;
    }
    if (flags != entry->flags) {
      uint32_t uid = entry->uid;
      if (auto ec = index_->set_flags(uid, flags, now_seconds())) {
        if (ec == std::errc::no_such_file_or_directory) {
          some_gone = true;
          continue;
        }
        return no(c, "[SERVERBUG] cannot change flags: " + ec.message(), out);
      }
    }
    view_[i].flags = flags.system;
    view_[i].keywords = flags.keyword_letters;
    if (!c.store.silent) out += fetch_flags_line(i, c.uid);
  }
  if (c.uid) out += sync_and_report(true);
  if (some_gone) return no(c, "[EXPUNGEISSUED] some of the messages no longer exist", std::move(out));
  if (!modified.empty())
    return ok(c, "[MODIFIED " + sequence_text(modified) + "] Conditional STORE failed", std::move(out));
  return ok(c, "STORE completed", std::move(out));
}

Response Session::copy(const Command& c, bool move) {
  if (move && read_only_) return no(c, "[READ-ONLY] the mailbox is read-only (EXAMINE)");
  std::vector<size_t> chosen;
  if (!positions(c.sequence, c.uid, chosen)) return bad(c, "invalid message number or set");
  auto target_path = store_->folder_path(c.mailbox);
  if (!target_path || !store_->exists(c.mailbox)) return no(c, "[TRYCREATE] mailbox does not exist");
  std::vector<uint32_t> source_uids;
  std::vector<std::string> locations;
  if (!move) {  // a MOVE within the account ends with the same usage
    uint64_t bytes = 0;
    for (size_t i : chosen)
      if (const mailbox::IndexEntry* entry = entry_at(i)) bytes += entry->size;
    std::string quota_error;
    if (over_quota(bytes, chosen.size(), quota_error))
      return no(c, quota_error.empty() ? "[OVERQUOTA] the copies would exceed the mailbox's quota"
                                       : "[UNAVAILABLE] " + quota_error);
  }
  uint64_t copied_bytes = 0;
  // Keyword letters are numbers of each folder's own dovecot-keywords: copies get the target's.
  KeywordMap target_map = load_keywords(*target_path);
  bool target_defined = false;
  for (size_t i : chosen) {
    const mailbox::IndexEntry* entry = entry_at(i);
    if (!entry) continue;
    std::string location;
    const uint32_t uid = entry->uid;
    const uint64_t size = entry->size;
    std::filesystem::path source = index_->path_of(*entry);
    MaildirFlags flags = entry->flags;
    FlagList named;
    named.keywords = keywords_.names_of(entry->flags.keyword_letters);
    uint8_t ignored_system = 0;
    if (!to_maildir(named, target_map, true, ignored_system, flags.keyword_letters, target_defined))
      return no(c, "[LIMIT] the target mailbox has 26 keywords already");
    if (target_defined)
      if (auto ec = save_keywords(*target_path, target_map))
        return no(c, "[SERVERBUG] cannot save keywords: " + ec.message());
    std::error_code ec = store_->copy_message(source, *target_path, flags, location);
    if (ec == std::errc::no_such_file_or_directory) {
      // Renamed by a flag change elsewhere: look it up once more (the view stays as it is).
      if (!index_->sync(now_seconds()))
        if (const mailbox::IndexEntry* again = index_->find(uid))
          ec = store_->copy_message(index_->path_of(*again), *target_path, flags, location);
    }
    if (ec) return no(c, "[SERVERBUG] cannot copy a message: " + ec.message());
    source_uids.push_back(uid);
    locations.push_back(std::move(location));
    copied_bytes += size;
  }
  // A MOVE adds the copies and removes the originals (expunge_uids records that half).
  record_added(copied_bytes, locations.size());
  std::string code;
  std::vector<uint32_t> uids;
  if (!locations.empty()) {
    std::shared_ptr<mailbox::FolderIndex> target = indexes_->open(*target_path);
    if (!target->add_files(locations, now_seconds(), uids) && std::find(uids.begin(), uids.end(), 0u) == uids.end())
      code = "[COPYUID " + std::to_string(target->uidvalidity()) + " " + sequence_text(source_uids) + " " +
             sequence_text(uids) + "] ";
  }
  if (!move) {
    std::string out = c.uid ? sync_and_report(true) : std::string();
    return ok(c, code + "COPY completed", std::move(out));
  }
  // MOVE (RFC 6851): the copies exist; now the originals go.
  std::string out = code.empty() ? std::string() : "* OK " + code + "Moved\r\n";
  if (auto ec = expunge_uids(source_uids))
    return no(c, "[SERVERBUG] copied, but the originals could not be removed: " + ec.message(), out);
  out += sync_and_report(true);
  return ok(c, "MOVE completed", std::move(out));
}

std::string Session::vanished_since(uint64_t modseq, const SequenceSet* set) const {
  uint32_t below = index_->next_uid();  // UIDs handed out so far are below it
  std::vector<std::pair<uint32_t, uint32_t>> wanted;
  if (set && !set->ranges.empty()) {
    for (const SequenceRange& r : set->ranges) {
      uint32_t a = r.first == sequence_star ? below - 1 : r.first;
      uint32_t b = r.last == sequence_star ? below - 1 : r.last;
      if (a > b) std::swap(a, b);
      if (a >= below) continue;
      wanted.push_back({a, std::min(b, below - 1)});
    }
  } else if (!set && below > 1) {
    wanted.push_back({1, below - 1});
  }
  std::string text;
  auto add = [&](uint32_t a, uint32_t b) {
    if (!text.empty()) text += ',';
    text += std::to_string(a);
    if (b > a) text += ":" + std::to_string(b);
  };
  if (modseq < index_->forgotten_modseq()) {
    // Part of the record is forgotten: every wanted UID that is no message now, as ranges.
    const auto& entries = index_->messages();
    for (auto [a, b] : wanted) {
      uint32_t cursor = a;
      auto it = std::lower_bound(entries.begin(), entries.end(), a,
                                 [](const mailbox::IndexEntry& e, uint32_t uid) { return e.uid < uid; });
      for (; it != entries.end() && it->uid <= b; ++it) {
        if (it->uid > cursor) add(cursor, it->uid - 1);
        cursor = it->uid + 1;
      }
      if (cursor <= b && cursor != 0) add(cursor, b);
    }
  } else {
    std::vector<uint32_t> uids;
    for (const auto& v : index_->vanished()) {
      if (v.modseq <= modseq) continue;
      bool in =
          std::any_of(wanted.begin(), wanted.end(), [&](auto r) { return v.uid >= r.first && v.uid <= r.second; });
      if (in) uids.push_back(v.uid);
    }
    text = sequence_text(uids);
  }
  return text.empty() ? "" : "* VANISHED (EARLIER) " + text + "\r\n";
}

// --- quota (RFC 9208) and maildirsize ---------------------------------------------------

std::string Session::quota_resources(std::string& error) {
  error.clear();
  if (quota_.unlimited()) return "";
  deliver::Usage usage;
  if (auto ec = deliver::current_usage(store_->root(), quota_, usage)) {
    error = "cannot read the quota usage: " + ec.message();
    return "";
  }
  std::string out;
  auto positive = [](int64_t v) { return static_cast<uint64_t>(std::max<int64_t>(v, 0)); };
  if (quota_.bytes)
    out +=
        "STORAGE " + std::to_string((positive(usage.bytes) + 1023) / 1024) + " " + std::to_string(quota_.bytes / 1024);
  if (quota_.messages)
    out += std::string(out.empty() ? "" : " ") + "MESSAGE " + std::to_string(positive(usage.messages)) + " " +
           std::to_string(quota_.messages);
  return out;
}

Response Session::quota(const Command& c) {
  if (c.verb == Verb::setquota)
    return no(c, "[NOPERM] quotas are set by the administrator (tern user quota), not over IMAP");
  std::string error;
  std::string resources = quota_resources(error);
  if (!error.empty()) return no(c, "[UNAVAILABLE] " + error);
  if (c.verb == Verb::getquota) {
    if (!c.name.empty() || resources.empty()) return no(c, "[NONEXISTENT] no such quota root");
    return ok(c, "GETQUOTA completed", "* QUOTA \"\" (" + resources + ")\r\n");
  }
  if (!store_->exists(c.mailbox)) return no(c, "[NONEXISTENT] mailbox does not exist");
  // One root for the whole account, named "" (as Dovecot's default "User quota" is one root).
  std::string out = "* QUOTAROOT " + wire_name(c.mailbox) + (resources.empty() ? "" : " \"\"") + "\r\n";
  if (!resources.empty()) out += "* QUOTA \"\" (" + resources + ")\r\n";
  return ok(c, "GETQUOTAROOT completed", std::move(out));
}

bool Session::over_quota(uint64_t bytes, uint64_t count, std::string& error) {
  error.clear();
  if (quota_.unlimited()) return false;
  deliver::Usage usage;
  if (auto ec = deliver::current_usage(store_->root(), quota_, usage, bytes)) {
    error = "cannot read the quota usage: " + ec.message();
    return true;
  }
  usage.messages += static_cast<int64_t>(count) - 1;  // would_exceed adds one message itself
  return deliver::would_exceed(quota_, usage, bytes);
}

void Session::record_added(uint64_t bytes, uint64_t count) {
  deliver::record_delivery(store_->root(), quota_, bytes, count);
}

void Session::record_removed(uint64_t bytes, uint64_t count) {
  deliver::record_removal(store_->root(), quota_, bytes, count);
}

std::error_code Session::expunge_uids(const std::vector<uint32_t>& uids) {
  std::map<uint32_t, uint64_t> sizes;
  for (uint32_t uid : uids)
    if (const mailbox::IndexEntry* entry = index_->find(uid)) sizes[uid] = entry->size;
  std::vector<uint32_t> removed;
  std::error_code ec = index_->expunge(uids, now_seconds(), &removed);
  uint64_t bytes = 0;
  for (uint32_t uid : removed) bytes += sizes[uid];
  record_removed(bytes, removed.size());
  return ec;
}

}  // namespace tern::imap
