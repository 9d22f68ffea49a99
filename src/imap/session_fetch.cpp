// The Session's reading commands: FETCH and SEARCH, and IDLE's reports (session.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "imap/message_view.h"
#include "imap/session.h"
#include "mime/imap_render.h"
#include "mime/message.h"

namespace tern::imap {
namespace {

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

bool read_path(const std::filesystem::path& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return false;
  out.clear();
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return n == 0;
    }
    out.append(buffer, static_cast<size_t>(n));
  }
}

int64_t mtime_of(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_mtim.tv_sec) : 0;
}

std::string literal(std::string_view bytes) {
  return "{" + std::to_string(bytes.size()) + "}\r\n" + std::string(bytes);
}

int64_t day_of(int64_t unix_seconds) {
  return unix_seconds >= 0 ? unix_seconds / 86400 : (unix_seconds - 86399) / 86400;
}

int64_t day_of(const Date& d) { return days_from_civil(d.year, d.month, d.day); }

// One message being matched: its bytes and parse are read only when a key needs them.
struct Candidate {
  const mailbox::IndexEntry* entry = nullptr;
  uint32_t sequence = 0;
  std::filesystem::path path;
  bool loaded = false;
  bool readable = false;
  std::string bytes;
  mime::Message parsed;
  bool load() {
    if (!loaded) {
      loaded = true;
      readable = read_path(path, bytes);
      if (readable) parsed = mime::parse_message(bytes);
    }
    return readable;
  }
};

// The structure cache's kinds (mailbox/structure_cache.h) of ENVELOPE, BODY and BODYSTRUCTURE,
// and which of them an item is (-1: none).
constexpr char structure_kinds[3] = {'E', 'B', 'S'};
int structure_index(FetchAttribute attribute) {
  switch (attribute) {
    case FetchAttribute::envelope:
      return 0;
    case FetchAttribute::body:
      return 1;
    case FetchAttribute::body_structure:
      return 2;
    default:
      return -1;
  }
}

// A long FETCH or SEARCH stops after this much work and returns Action::more: the service sends
// what is ready and lets the other sessions run before it resumes.
constexpr std::chrono::milliseconds slice_time{20};
constexpr size_t slice_bytes = 1 << 20;

bool in_set(const SequenceSet& set, uint32_t value, uint32_t largest, const std::vector<uint32_t>* saved) {
  if (set.saved) return saved && std::binary_search(saved->begin(), saved->end(), value);
  for (const SequenceRange& r : set.ranges) {
    uint32_t a = r.first == sequence_star ? largest : r.first;
    uint32_t b = r.last == sequence_star ? largest : r.last;
    if (a > b) std::swap(a, b);
    if (value >= a && value <= b) return true;
  }
  return false;
}

struct Matcher {
  const std::vector<SearchKey>& keys;
  uint32_t largest_sequence;
  uint32_t largest_uid;
  const std::vector<uint32_t>* saved_uids;  // for "$" as UIDs
  const std::vector<uint32_t>* saved_sequences;
  const KeywordMap* keywords;

  bool match(size_t k, Candidate& m) const {
    const SearchKey& key = keys[k];
    const uint8_t f = m.entry->flags.system;
    auto header_has = [&](std::string_view field) {
      return m.load() && contains_ignoring_case(header_values(m.parsed, field), key.value);
    };
    switch (key.kind) {
      case SearchKeyKind::and_: {
        size_t child = k + 1;
        for (uint32_t i = 0; i < key.operands; ++i) {
          if (!match(child, m)) return false;
          child += keys[child].span;
        }
        return true;
      }
      case SearchKeyKind::or_: {
        size_t first = k + 1;
        size_t second = first + keys[first].span;
        return match(first, m) || match(second, m);
      }
      case SearchKeyKind::not_:
        return !match(k + 1, m);
      case SearchKeyKind::all:
        return true;
      case SearchKeyKind::answered:
        return f & mailbox::flag_replied;
      case SearchKeyKind::unanswered:
        return !(f & mailbox::flag_replied);
      case SearchKeyKind::deleted:
        return f & mailbox::flag_trashed;
      case SearchKeyKind::undeleted:
        return !(f & mailbox::flag_trashed);
      case SearchKeyKind::draft:
        return f & mailbox::flag_draft;
      case SearchKeyKind::undraft:
        return !(f & mailbox::flag_draft);
      case SearchKeyKind::flagged:
        return f & mailbox::flag_flagged;
      case SearchKeyKind::unflagged:
        return !(f & mailbox::flag_flagged);
      case SearchKeyKind::seen:
        return f & mailbox::flag_seen;
      case SearchKeyKind::unseen:
        return !(f & mailbox::flag_seen);
      case SearchKeyKind::new_:  // \Recent is never set (IMAP4rev2 dropped it): NEW and RECENT match nothing
      case SearchKeyKind::recent:
        return false;
      case SearchKeyKind::old:
        return true;
      case SearchKeyKind::keyword:
      case SearchKeyKind::unkeyword: {
        auto flag = mailbox::system_flag_from_imap(key.value);
        int number = keywords ? keywords->find(key.value) : -1;
        bool has = flag ? (f & *flag) != 0 : number >= 0 && ((m.entry->flags.keyword_letters >> number) & 1u);
        return key.kind == SearchKeyKind::keyword ? has : !has;
      }
      case SearchKeyKind::larger:
        return m.entry->vsize > key.number;
      case SearchKeyKind::smaller:
        return m.entry->vsize < key.number;
      case SearchKeyKind::before:
        return day_of(mtime_of(m.path)) < day_of(key.date);
      case SearchKeyKind::on:
        return day_of(mtime_of(m.path)) == day_of(key.date);
      case SearchKeyKind::since:
        return day_of(mtime_of(m.path)) >= day_of(key.date);
      case SearchKeyKind::sent_before:
      case SearchKeyKind::sent_on:
      case SearchKeyKind::sent_since: {
        if (!m.load()) return false;
        auto day = sent_day(m.parsed);
        if (!day) return false;
        int64_t wanted = day_of(key.date);
        return key.kind == SearchKeyKind::sent_before ? *day < wanted
               : key.kind == SearchKeyKind::sent_on   ? *day == wanted
                                                      : *day >= wanted;
      }
      case SearchKeyKind::from:
        return header_has("From");
      case SearchKeyKind::to:
        return header_has("To");
      case SearchKeyKind::cc:
        return header_has("Cc");
      case SearchKeyKind::bcc:
        return header_has("Bcc");
      case SearchKeyKind::subject:
        return header_has("Subject");
      case SearchKeyKind::header:
        if (!m.load()) return false;
        if (key.value.empty()) return m.parsed.root().header(key.field) != nullptr;
        return contains_ignoring_case(header_values(m.parsed, key.field), key.value);
      case SearchKeyKind::body:
        return m.load() && contains_ignoring_case(searchable_text(m.bytes, m.parsed, false, true), key.value);
      case SearchKeyKind::text:
        return m.load() && contains_ignoring_case(searchable_text(m.bytes, m.parsed, true, true), key.value);
      case SearchKeyKind::uid:
        return in_set(key.set, m.entry->uid, largest_uid, saved_uids);
      case SearchKeyKind::sequence:
        return in_set(key.set, m.sequence, largest_sequence, saved_sequences);
      case SearchKeyKind::modseq:
        return m.entry->modseq >= key.number;
    }
    return false;
  }
};

}  // namespace

bool Session::read_message(size_t position, std::string& bytes) const {
  const mailbox::IndexEntry* entry = entry_at(position);
  if (!entry) return false;
  if (read_path(index_->path_of(*entry), bytes)) return true;
  // Another program renamed it (a flag change): find it again without changing our view.
  const uint32_t uid = entry->uid;
  if (index_->sync(now_seconds())) return false;
  const mailbox::IndexEntry* again = index_->find(uid);
  return again && read_path(index_->path_of(*again), bytes);
}

Response Session::search(const Command& c) {
  if (!c.search.charset.empty() && c.search.charset != "UTF-8" && c.search.charset != "US-ASCII")
    return no(c, "[BADCHARSET (UTF-8 US-ASCII)] unsupported charset " + c.search.charset);
  if (c.search.keys.empty()) return bad(c, "empty search program");
  slicing_.emplace();
  slicing_->command = c;
  if (saved_valid_)
    for (size_t i = 0; i < view_.size(); ++i)
      if (std::binary_search(saved_uids_.begin(), saved_uids_.end(), view_[i].uid))
        slicing_->saved_sequences.push_back(static_cast<uint32_t>(i + 1));
  return continue_search();
}

Response Session::continue_search() {
  Slicing& run = *slicing_;
  const Command& c = run.command;
  Matcher matcher{c.search.keys,
                  static_cast<uint32_t>(view_.size()),
                  view_.empty() ? 0 : view_.back().uid,
                  saved_valid_ ? &saved_uids_ : nullptr,
                  saved_valid_ ? &run.saved_sequences : nullptr,
                  &keywords_};
  const auto started = std::chrono::steady_clock::now();
  for (; run.next < view_.size(); ++run.next) {
    if (std::chrono::steady_clock::now() - started > slice_time) return {"", Action::more};
    const size_t i = run.next;
    Candidate m;
    m.entry = entry_at(i);
    if (!m.entry) continue;  // expunged by another session: not reported yet, not matched
    m.sequence = static_cast<uint32_t>(i + 1);
    m.path = index_->path_of(*m.entry);
    if (matcher.match(0, m)) {
      run.found_numbers.push_back(m.sequence);
      run.found_uids.push_back(m.entry->uid);
    }
  }
  const std::vector<uint32_t>& found_uids = run.found_uids;
  const std::vector<uint32_t>& found = c.uid ? run.found_uids : run.found_numbers;
  // RFC 7162 3.1.5: a search with MODSEQ reports the highest MODSEQ of what it found.
  bool with_modseq = std::any_of(c.search.keys.begin(), c.search.keys.end(),
                                 [](const SearchKey& k) { return k.kind == SearchKeyKind::modseq; });
  uint64_t highest = 0;
  if (with_modseq) {
    condstore_ = true;
    for (uint32_t uid : found_uids)
      if (const mailbox::IndexEntry* entry = index_->find(uid)) highest = std::max(highest, entry->modseq);
  }
  std::string out;
  if (!c.search.esearch && !rev2_) {
    out = "* SEARCH";
    for (uint32_t n : found) out += " " + std::to_string(n);
    if (with_modseq && !found.empty()) out += " (MODSEQ " + std::to_string(highest) + ")";
    out += "\r\n";
  } else {
    uint8_t options = c.search.return_options ? c.search.return_options : uint8_t(return_all);
    if (options & return_save) {
      saved_uids_ = found_uids;
      saved_valid_ = true;
    }
    if (options != return_save) {
      out = "* ESEARCH (TAG " + mime::imap_string(c.tag) + ")";
      if (c.uid) out += " UID";
      if ((options & return_min) && !found.empty()) out += " MIN " + std::to_string(found.front());
      if ((options & return_max) && !found.empty()) out += " MAX " + std::to_string(found.back());
      if ((options & return_all) && !found.empty()) {
        std::string set;
        for (size_t i = 0; i < found.size();) {
          size_t j = i;
          while (j + 1 < found.size() && found[j + 1] == found[j] + 1) ++j;
          set += (set.empty() ? "" : ",") + std::to_string(found[i]);
          if (j > i) set += ":" + std::to_string(found[j]);
          i = j + 1;
        }
        out += " ALL " + set;
      }
      if (options & return_count) out += " COUNT " + std::to_string(found.size());
      if (with_modseq && !found.empty()) out += " MODSEQ " + std::to_string(highest);
      out += "\r\n";
    }
  }
  if (c.uid) out += sync_and_report(true);
  return abandon(ok(c, "SEARCH completed", std::move(out)));
}

Response Session::fetch(const Command& c) {
  std::vector<size_t> chosen;
  if (!positions(c.sequence, c.uid, chosen)) return bad(c, "invalid message number or set");
  if (c.fetch.vanished && !qresync_) return bad(c, "VANISHED needs QRESYNC enabled first (ENABLE QRESYNC)");
  if (c.fetch.changed_since) condstore_ = true;
  bool asks_modseq = c.fetch.changed_since.has_value();
  for (const FetchItem& item : c.fetch.items)
    if (item.attribute == FetchAttribute::modseq) asks_modseq = condstore_ = true;
  bool needs_file = false, sets_seen = false;
  for (const FetchItem& item : c.fetch.items) {
    switch (item.attribute) {
      case FetchAttribute::flags:
      case FetchAttribute::uid:
      case FetchAttribute::rfc822_size:
      case FetchAttribute::modseq:
      case FetchAttribute::internal_date:
        break;
      case FetchAttribute::rfc822:
      case FetchAttribute::rfc822_text:
        sets_seen = true;
        needs_file = true;
        break;
      case FetchAttribute::body_section:
      case FetchAttribute::binary:
        sets_seen = sets_seen || !item.peek;
        needs_file = true;
        break;
      case FetchAttribute::envelope:
      case FetchAttribute::body:
      case FetchAttribute::body_structure:
        break;  // from the folder's structure cache, else the file (continue_fetch)
      default:
        needs_file = true;
    }
  }
  slicing_.emplace();
  slicing_->command = c;
  slicing_->chosen = std::move(chosen);
  slicing_->needs_file = needs_file;
  slicing_->sets_seen = sets_seen && !read_only_;
  slicing_->asks_modseq = asks_modseq;
  // RFC 7162 3.2.6: UID FETCH ... (CHANGEDSINCE n VANISHED) first names what was expunged since.
  std::string out;
  if (c.fetch.vanished) out += vanished_since(*c.fetch.changed_since, &c.sequence);
  return continue_fetch(std::move(out));
}

Response Session::continue_fetch(std::string out) {
  Slicing& run = *slicing_;
  const Command& c = run.command;
  const bool needs_file = run.needs_file, sets_seen = run.sets_seen, asks_modseq = run.asks_modseq;
  bool& some_gone = run.some_gone;
  const auto started = std::chrono::steady_clock::now();
  for (; run.next < run.chosen.size(); ++run.next) {
    if (out.size() >= slice_bytes || std::chrono::steady_clock::now() - started > slice_time) {
      index_->structures().flush();  // a cache: a failure only costs time
      return {std::move(out), Action::more};
    }
    const size_t i = run.chosen[run.next];
    const mailbox::IndexEntry* entry = entry_at(i);
    if (!entry) {
      some_gone = true;
      continue;
    }
    if (c.fetch.changed_since && entry->modseq <= *c.fetch.changed_since) continue;
    // ENVELOPE, BODY and BODYSTRUCTURE (in that order) come from the folder's structure cache;
    // the file is read for those it lacks, which are then added to it.
    std::optional<std::string> structure[3];
    bool read_file = needs_file;
    const uint32_t uid = entry->uid, uidvalidity = index_->uidvalidity();
    for (const FetchItem& item : c.fetch.items)
      if (int k = structure_index(item.attribute); k >= 0 && !structure[k]) {
        structure[k] = index_->structures().find(uidvalidity, uid, structure_kinds[k]);
        read_file = read_file || !structure[k];
      }
    std::string bytes;
    mime::Message parsed;
    if (read_file) {
      if (!read_message(i, bytes) || !(entry = entry_at(i))) {  // read_message may sync: look again
        some_gone = true;
        continue;
      }
      parsed = mime::parse_message(bytes);
      for (const FetchItem& item : c.fetch.items)
        if (int k = structure_index(item.attribute); k >= 0 && !structure[k]) {
          structure[k] = k == 0 ? mime::render_envelope(parsed) : mime::render_body(parsed, k == 2);
          index_->structures().add(uidvalidity, uid, structure_kinds[k],
                                   *structure[k]);  // a cache: failures only cost time
        }
    }
    bool flags_changed = false;
    if (sets_seen && !(view_[i].flags & mailbox::flag_seen)) {
      mailbox::MaildirFlags flags = entry->flags;
      flags.system |= mailbox::flag_seen;
      if (!index_->set_flags(entry->uid, flags, now_seconds())) {
        view_[i].flags = flags.system;
        flags_changed = true;
      }
      entry = entry_at(i);
      if (!entry) continue;
    }
    std::vector<std::string> parts;
    bool has_uid = false, has_flags = false;
    for (const FetchItem& item : c.fetch.items) {
      switch (item.attribute) {
        case FetchAttribute::uid:
          has_uid = true;
          break;
        case FetchAttribute::flags:
          has_flags = true;
          break;
        case FetchAttribute::rfc822_size:
          parts.push_back("RFC822.SIZE " + std::to_string(entry->vsize));
          break;
        case FetchAttribute::modseq:
          break;  // added once below
        case FetchAttribute::internal_date:
          parts.push_back("INTERNALDATE \"" + internal_date_text(mtime_of(index_->path_of(*entry))) + "\"");
          break;
        case FetchAttribute::envelope:
          parts.push_back("ENVELOPE " + *structure[0]);
          break;
        case FetchAttribute::body:
          parts.push_back("BODY " + *structure[1]);
          break;
        case FetchAttribute::body_structure:
          parts.push_back("BODYSTRUCTURE " + *structure[2]);
          break;
        case FetchAttribute::rfc822:
          parts.push_back("RFC822 " + literal(to_crlf(bytes)));
          break;
        case FetchAttribute::rfc822_header:
          parts.push_back("RFC822.HEADER " +
                          literal(section_bytes(bytes, parsed, Section{{}, SectionText::header, {}}).value_or("")));
          break;
        case FetchAttribute::rfc822_text:
          parts.push_back("RFC822.TEXT " +
                          literal(section_bytes(bytes, parsed, Section{{}, SectionText::text, {}}).value_or("")));
          break;
        case FetchAttribute::body_section:
        case FetchAttribute::binary: {
          bool unknown = false;
          std::optional<std::string> data = item.attribute == FetchAttribute::binary
                                                ? binary_bytes(bytes, parsed, item.section, unknown)
                                                : section_bytes(bytes, parsed, item.section);
          if (unknown)
            return abandon(no(c, "[UNKNOWN-CTE] the part's Content-Transfer-Encoding cannot be decoded", out));
          std::string value = data.value_or("");
          if (item.partial)
            value = item.partial_origin >= value.size() ? std::string()
                                                        : value.substr(item.partial_origin, item.partial_length);
          FetchItem named = item;
          parts.push_back(section_item_name(named) + " " + literal(value));
          break;
        }
        case FetchAttribute::binary_size: {
          bool unknown = false;
          auto data = binary_bytes(bytes, parsed, item.section, unknown);
          if (unknown)
            return abandon(no(c, "[UNKNOWN-CTE] the part's Content-Transfer-Encoding cannot be decoded", out));
          parts.push_back(section_item_name(item) + " " + std::to_string(data ? data->size() : 0));
          break;
        }
      }
    }
    std::string line = "* " + std::to_string(i + 1) + " FETCH (";
    std::string joined;
    if (has_uid || c.uid) joined += "UID " + std::to_string(entry->uid);
    if (has_flags || flags_changed)
      joined += (joined.empty() ? "" : " ") + std::string("FLAGS ") + flags_text(view_[i].flags, view_[i].keywords);
    // RFC 7162 3.2: with CONDSTORE enabled, MODSEQ goes with every FLAGS.
    if (asks_modseq || (condstore_ && (has_flags || flags_changed)))
      joined += (joined.empty() ? "" : " ") + std::string("MODSEQ (") + std::to_string(entry->modseq) + ")";
    for (const auto& p : parts) joined += (joined.empty() ? "" : " ") + p;
    out += line + joined + ")\r\n";
  }
  index_->structures().flush();
  if (c.uid) out += sync_and_report(true);
  if (some_gone) return abandon(no(c, "[EXPUNGEISSUED] some of the messages no longer exist", std::move(out)));
  return abandon(ok(c, "FETCH completed", std::move(out)));
}

Response Session::resume() {
  if (!slicing_) std::abort();  // resume() only follows Action::more
  if (slicing_->command.verb == Verb::search) return continue_search();
  return continue_fetch({});
}

std::string Session::idle_updates() { return state_ == State::selected ? sync_and_report(true) : std::string(); }

Response Session::idle_done(std::string_view line) {
  std::string tag = idle_tag_;
  idle_tag_.clear();
  std::string upper;
  for (char ch : line) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (upper != "DONE") return {tag + " BAD expected DONE to end IDLE\r\n"};
  return {tag + " OK IDLE terminated\r\n"};
}

}  // namespace tern::imap
