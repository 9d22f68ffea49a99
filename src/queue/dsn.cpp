#include "queue/dsn.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <utility>

namespace tern::queue {
namespace {

constexpr size_t fold_width = 78;        // RFC 5322 2.1.1: SHOULD
constexpr size_t max_line = 998;         // RFC 5322 2.1.1: MUST
constexpr size_t hard_width = 900;       // where a word with no space in it is cut
constexpr size_t max_diagnostic = 2000;  // a remote reply can be 1000 lines of 4096 bytes
constexpr size_t text_width = 72;        // the human-readable part

// RFC 5322 3.3 date-time in UTC, independent of the process locale.
std::string date_time(int64_t unix_seconds) {
  static constexpr std::array<const char*, 7> days = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
  static constexpr std::array<const char*, 12> months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int64_t day = unix_seconds / 86400, secs = unix_seconds % 86400;
  if (secs < 0) {
    secs += 86400;
    --day;
  }
  // Howard Hinnant's civil_from_days.
  int64_t z = day + 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int64_t d = doy - (153 * mp + 2) / 5 + 1;
  int64_t m = mp < 10 ? mp + 3 : mp - 9;
  int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  auto two = [](int64_t v) { return std::string(v < 10 ? "0" : "") + std::to_string(v); };
  return std::string(days[((day % 7) + 7) % 7]) + ", " + two(d) + " " + months[m - 1] + " " + std::to_string(y) + " " +
         two(secs / 3600) + ":" + two(secs / 60 % 60) + ":" + two(secs % 60) + " +0000";
}

// Text that came from elsewhere (a remote server's reply, tern's reason): one line of printable
// US-ASCII. Control characters (CR and LF included) become spaces, runs of spaces one, 8-bit
// bytes "?"; cut at `max` with "...".
std::string clean_text(std::string_view s, size_t max = max_diagnostic) {
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    char put = u >= 0x80 ? '?' : (u < 0x20 || u == 0x7f) ? ' ' : c;
    if (put == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += put;
    if (out.size() >= max) {
      out += "...";
      break;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// An address or identifier as given, minus anything that could break a line: control
// characters become "?". 8-bit bytes (SMTPUTF8 addresses) are kept; the part is then marked 8bit.
std::string clean_word(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

// Splits `text` into lines of at most `width` at spaces; a word longer than `hard` is cut.
std::vector<std::string> wrap(std::string_view text, size_t width, size_t hard) {
  std::vector<std::string> lines;
  std::string line;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    size_t end = text.find(' ', i);
    if (end == std::string_view::npos) end = text.size();
    std::string_view word = text.substr(i, end - i);
    i = end;
    if (word.empty()) break;
    while (word.size() > hard) {  // no space to fold at
      if (!line.empty()) lines.push_back(std::move(line));
      lines.emplace_back(word.substr(0, hard));
      line.clear();
      word.remove_prefix(hard);
    }
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      lines.push_back(std::move(line));
      line.clear();
    }
    if (!line.empty()) line += ' ';
    line += word;
  }
  if (!line.empty()) lines.push_back(std::move(line));
  return lines;
}

// "Name: value" folded (RFC 5322 2.2.3) at spaces to 78 columns where it can be, and always
// under 998: a continuation line starts with a space.
std::string field(std::string_view name, std::string_view value) {
  std::string first = std::string(name) + ": ";
  if (first.size() + value.size() <= fold_width) return first + std::string(value) + "\n";  // as is
  std::vector<std::string> lines = wrap(value, fold_width - first.size(), hard_width);
  std::string out = first;
  for (size_t n = 0; n < lines.size(); ++n) {
    if (n > 0) out += "\n ";
    out += lines[n];
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out + "\n";
}

constexpr char no_break = '\x1f';  // a space paragraph() does not wrap at (clean_text removes any in input)

// A date for the human-readable part, kept on one line.
std::string human_date(int64_t unix_seconds) {
  std::string out = date_time(unix_seconds);
  std::replace(out.begin(), out.end(), ' ', no_break);
  return out;
}

// Human-readable paragraph wrapped to 72 columns; the first line starts with `first_indent`, the
// others with `indent`.
std::string paragraph(std::string_view text, std::string_view first_indent = "", std::string_view indent = "") {
  std::string out;
  size_t width = text_width - std::max(first_indent.size(), indent.size());
  for (std::string line : wrap(text, width, width)) {
    std::replace(line.begin(), line.end(), no_break, ' ');
    out += out.empty() ? first_indent : indent;
    out += line + "\n";
  }
  return out;
}

std::string_view action_name(DsnAction a) {
  switch (a) {
    case DsnAction::failed:
      return "failed";
    case DsnAction::delayed:
      return "delayed";
    case DsnAction::delivered:
      return "delivered";
    case DsnAction::relayed:
      return "relayed";
    case DsnAction::expanded:
      return "expanded";
  }
  return "failed";
}

// RFC 3463 class.subject.detail, or the action's generic code when `status` is not one.
std::string status_code(const DsnRecipient& r) {
  std::string_view s = r.status;
  bool valid = s.size() >= 5 && (s[0] == '2' || s[0] == '4' || s[0] == '5') && s[1] == '.';
  size_t i = 2;
  for (int part = 0; valid && part < 2; ++part) {
    size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    valid = i > start && i - start <= 3 && (part == 1 ? i == s.size() : i < s.size() && s[i] == '.');
    ++i;
  }
  if (valid) return std::string(s);
  switch (r.action) {
    case DsnAction::failed:
      return "5.0.0";
    case DsnAction::delayed:
      return "4.0.0";
    default:
      return "2.0.0";
  }
}

// RFC 3463's meaning of a status, in words a sender understands.
std::string plain_reason(std::string_view status) {
  std::string_view rest = status.substr(2);  // "1.1"
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 22> known = {{
      {"1.1", "the mailbox does not exist"},
      {"1.2", "the recipient's domain does not exist or does not accept mail"},
      {"1.3", "the recipient address is not valid"},
      {"1.6", "the mailbox has moved and no forwarding address is known"},
      {"1.10", "the recipient's domain does not accept mail"},
      {"2.1", "the mailbox is disabled"},
      {"2.2", "the mailbox is full"},
      {"2.3", "the message is larger than the recipient accepts"},
      {"3.0", "the receiving mail system reported a problem"},
      {"3.4", "the message is larger than the receiving system accepts"},
      {"4.1", "the recipient's mail server did not answer"},
      {"4.2", "the connection to the recipient's mail server failed"},
      {"4.3", "the recipient's domain could not be looked up"},
      {"4.4", "no mail server was found for the recipient's domain"},
      {"4.6", "the message was caught in a mail loop"},
      {"4.7", "the message could not be delivered in the time allowed"},
      {"5.0", "the receiving mail server reported a protocol error"},
      {"6.0", "the receiving mail server did not accept the message's content"},
      {"6.7", "the recipient's mail server does not accept internationalized (non-ASCII) addresses"},
      {"7.0", "the receiving mail server refused the message for policy reasons"},
      {"7.1", "the receiving mail server refused the message for policy reasons"},
      {"7.26", "the message failed the receiving server's authentication checks"},
  }};
  for (const auto& [code, words] : known)
    if (rest == code) return std::string(words);
  switch (rest.empty() ? '0' : rest[0]) {
    case '1':
      return "the recipient address was refused";
    case '2':
      return "the recipient's mailbox cannot accept the message";
    case '3':
      return "the receiving mail system cannot accept the message";
    case '4':
      return "the recipient's mail server could not be reached";
    case '5':
      return "the mail servers could not agree on the protocol";
    case '6':
      return "the message's content was not accepted";
    case '7':
      return "the message was refused for security or policy reasons";
    default:
      return status[0] == '5' ? "the delivery failed permanently" : "a temporary problem prevents delivery";
  }
}

enum class Kind { failure, delay, success };

Kind kind_of(const DsnReport& report) {
  auto any = [&](DsnAction a) {
    return std::any_of(report.recipients.begin(), report.recipients.end(),
                       [a](const DsnRecipient& r) { return r.action == a; });
  };
  if (any(DsnAction::failed)) return Kind::failure;
  if (any(DsnAction::delayed)) return Kind::delay;
  return Kind::success;
}

std::string human_part(const DsnReport& report, Kind kind, bool full_returned) {
  std::string host = clean_word(report.reporting_mta);
  std::string out = "This is the mail system at host " + host + ".\n\n";
  std::string attached = full_returned ? "It is attached below." : "Its header is attached below.";
  if (kind == Kind::failure) {
    out += paragraph("Your message could not be delivered to one or more recipients. " + attached +
                     " The reason for each recipient follows.");
  } else if (kind == Kind::delay) {
    int64_t until = 0;
    for (const auto& r : report.recipients)
      if (r.action == DsnAction::delayed) until = std::max(until, r.will_retry_until);
    out += "THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\n";
    std::string when = until > 0 ? "until " + human_date(until) : "for a while";
    out += paragraph(
        "Your message could not be delivered yet to one or more recipients. The mail system will keep "
        "trying " +
        when + "; if delivery still fails then, you will receive a final notice. " + attached);
  } else {
    out += paragraph("Your message was delivered to the recipients listed below, as you asked to be told. " + attached);
  }
  for (const DsnRecipient& r : report.recipients) {
    std::string status = status_code(r);
    std::string line = "<" + clean_word(r.address) + ">: ";
    switch (r.action) {
      case DsnAction::failed:
        line += "could not be delivered: " + plain_reason(status) + ".";
        break;
      case DsnAction::delayed:
        line += "not delivered yet: " + plain_reason(status) + ".";
        if (r.will_retry_until > 0) line += " Tries continue until " + human_date(r.will_retry_until) + ".";
        break;
      case DsnAction::delivered:
        line += "delivered.";
        break;
      case DsnAction::relayed:
        line += "passed on to a mail system that does not report delivery; no further notice will come.";
        break;
      case DsnAction::expanded:
        line += "delivered to a list or alias, which passed it on to its members.";
        break;
    }
    out += "\n" + paragraph(line, "", "    ");
    std::string diagnostic = clean_text(r.diagnostic);
    if (!diagnostic.empty()) {
      std::string said = r.remote_mta.empty() || !r.diagnostic_is_smtp
                             ? "Reason: " + diagnostic
                             : "The server " + clean_word(r.remote_mta) + " said: " + diagnostic;
      out += paragraph(said, "    ", "    ");
    }
  }
  return out;
}

std::string status_part(const DsnReport& report) {
  std::string out = field("Reporting-MTA", "dns; " + clean_word(report.reporting_mta));
  if (!report.envid.empty()) out += field("Original-Envelope-Id", clean_text(report.envid, 500));
  if (report.arrival > 0) out += field("Arrival-Date", date_time(report.arrival));
  for (const DsnRecipient& r : report.recipients) {
    out += "\n";
    if (!r.orcpt.empty()) out += field("Original-Recipient", clean_word(r.orcpt));
    out += field("Final-Recipient", "rfc822;" + clean_word(r.address));
    out += field("Action", action_name(r.action));
    out += field("Status", status_code(r));
    // RFC 3464 2.3.5: a host name ("mx.example.org"), without the "[address]" the log shows.
    if (!r.remote_mta.empty())
      out += field("Remote-MTA", "dns; " + clean_word(r.remote_mta.substr(0, r.remote_mta.find(" ["))));
    std::string diagnostic = clean_text(r.diagnostic);
    if (!diagnostic.empty())
      out += field("Diagnostic-Code", std::string(r.diagnostic_is_smtp ? "smtp; " : "x-tern; ") + diagnostic);
    if (r.last_attempt > 0) out += field("Last-Attempt-Date", date_time(r.last_attempt));
    if (r.action == DsnAction::delayed && r.will_retry_until > 0)
      out += field("Will-Retry-Until", date_time(r.will_retry_until));
  }
  return out;
}

bool has_8bit(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

bool has_long_line(std::string_view s) {
  size_t start = 0;
  while (start < s.size()) {
    size_t lf = s.find('\n', start);
    size_t end = lf == std::string_view::npos ? s.size() : lf;
    if (end - start > max_line) return true;
    if (lf == std::string_view::npos) break;
    start = lf + 1;
  }
  return false;
}

// The returned header section, every line kept under 998 octets (the spool's messages came in
// under that limit, so this only guards against a header tern did not receive itself).
std::string cut_long_lines(std::string_view s) {
  std::string out;
  size_t start = 0;
  while (start < s.size()) {
    size_t lf = s.find('\n', start);
    size_t end = lf == std::string_view::npos ? s.size() : lf;
    out.append(s.substr(start, std::min(end - start, max_line)));
    out += '\n';
    if (lf == std::string_view::npos) break;
    start = lf + 1;
  }
  return out;
}

// RFC 2046 5.1.1 bchars, at most 70: the seed keeps its letters, digits, "." and "-"; any other
// byte becomes ".".
std::string boundary_candidate(std::string_view seed, unsigned counter) {
  std::string clean;
  for (char c : seed) clean += std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '.';
  if (clean.size() > 40) clean.resize(40);
  return "=_tern-dsn_" + clean + "_" + std::to_string(counter);
}

std::string part_header(std::string_view type, std::string_view description, bool eight_bit) {
  std::string out = "Content-Description: " + std::string(description) + "\nContent-Type: " + std::string(type) + "\n";
  if (eight_bit) out += "Content-Transfer-Encoding: 8bit\n";
  return out;
}

}  // namespace

std::string_view header_section(std::string_view message) {
  if (message.starts_with("\n")) return message.substr(0, 1);
  size_t blank = message.find("\n\n");
  return blank == std::string_view::npos ? message : message.substr(0, blank + 2);
}

std::string make_dsn(const DsnReport& report) {
  Kind kind = kind_of(report);
  bool full = report.return_full && report.original.size() <= report.max_returned && !has_long_line(report.original);

  std::string human = human_part(report, kind, full);
  std::string status = status_part(report);
  std::string returned = full ? report.original : cut_long_lines(header_section(report.original));
  if (!returned.empty() && returned.back() != '\n') returned += '\n';

  std::string boundary;
  for (unsigned counter = 0;; ++counter) {
    boundary = boundary_candidate(report.boundary_seed, counter);
    if (human.find(boundary) == std::string::npos && status.find(boundary) == std::string::npos &&
        returned.find(boundary) == std::string::npos)
      break;
  }

  std::string_view subject = kind == Kind::failure ? "Undelivered Mail Returned to Sender"
                             : kind == Kind::delay ? "Delayed Mail (still being retried)"
                                                   : "Successful Mail Delivery Report";
  std::string_view returned_what = kind == Kind::failure ? "Undelivered Message"
                                   : kind == Kind::delay ? "Delayed Message"
                                                         : "Delivered Message";

  std::string out;
  out += field("From", "Mail Delivery System <" + clean_word(report.postmaster) + ">");
  out += field("To", "<" + clean_word(report.to.empty() ? report.sender : report.to) + ">");
  out += field("Subject", subject);
  out += field("Date", date_time(report.now));
  out += field("Message-ID", "<" + clean_word(report.queue_id) + ".dsn." + std::to_string(report.now) + "@" +
                                 clean_word(report.reporting_mta) + ">");
  out += "Auto-Submitted: auto-replied\n";
  out += "MIME-Version: 1.0\n";
  out += "Content-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"" + boundary + "\"\n";
  bool human_8bit = has_8bit(human), status_8bit = has_8bit(status), returned_8bit = has_8bit(returned);
  if (human_8bit || status_8bit || returned_8bit) out += "Content-Transfer-Encoding: 8bit\n";
  out += "\nThis is a MIME-encapsulated message.\n\n";

  out += "--" + boundary + "\n";
  out += part_header(human_8bit ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii", "Notification",
                     human_8bit);
  out += "\n" + human + "\n";

  out += "--" + boundary + "\n";
  out += part_header("message/delivery-status", "Delivery report", status_8bit);
  out += "\n" + status + "\n";

  out += "--" + boundary + "\n";
  if (full) {
    out += part_header("message/rfc822", returned_what, returned_8bit);
  } else {
    out += part_header("text/rfc822-headers", std::string(returned_what) + " Headers", returned_8bit);
  }
  out += "\n" + returned + "\n";
  out += "--" + boundary + "--\n";
  return out;
}

}  // namespace tern::queue
