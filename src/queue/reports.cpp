#include "queue/reports.h"

#include <algorithm>
#include <cctype>

namespace tern::queue {
namespace {

constexpr uint8_t notify_never = 1, notify_success = 2, notify_failure = 4, notify_delay = 8;

DsnRecipient dsn_recipient(const SpoolRecipient& r, DsnAction action, const std::string& fallback) {
  DsnRecipient d;
  d.address = r.address;
  d.orcpt = r.orcpt;
  d.action = action;
  d.status = action == DsnAction::delivered || action == DsnAction::relayed ? "2.0.0" : status_code(r.error, fallback);
  d.remote_mta = r.error_mta;
  d.diagnostic = r.error;
  d.diagnostic_is_smtp = !r.error_mta.empty();
  return d;
}

DsnReport base_report(const SpoolEnvelope& e, const ReportSettings& s, int64_t now) {
  DsnReport rep;
  rep.reporting_mta = s.hostname;
  rep.queue_id = e.id;
  rep.envid = e.envid;
  rep.sender = e.sender;
  rep.postmaster = "MAILER-DAEMON@" + s.hostname;
  rep.arrival = e.received;
  rep.now = now;
  rep.return_full = e.ret == 1;
  return rep;
}

}  // namespace

std::string domain_of(std::string_view address) {
  auto at = address.rfind('@');
  if (at == std::string_view::npos) return "";
  std::string d(address.substr(at + 1));
  for (char& c : d) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return d;
}

std::string status_code(std::string_view text, std::string_view fallback) {
  for (size_t i = 0; i + 4 < text.size(); ++i) {
    if (i > 0 && text[i - 1] != ' ' && text[i - 1] != '#' && text[i - 1] != '(') continue;  // qmail: "(#5.4.6)"
    char cls = text[i];
    if ((cls != '2' && cls != '4' && cls != '5') || text[i + 1] != '.') continue;
    size_t j = i + 2, k = j;
    while (k < text.size() && k - j < 3 && std::isdigit(static_cast<unsigned char>(text[k]))) ++k;
    if (k == j || k >= text.size() || text[k] != '.') continue;
    size_t m = k + 1, n = m;
    while (n < text.size() && n - m < 3 && std::isdigit(static_cast<unsigned char>(text[n]))) ++n;
    if (n == m || (n < text.size() && text[n] != ' ' && text[n] != ':' && text[n] != ',' && text[n] != ')')) continue;
    return std::string(text.substr(i, n - i));
  }
  return std::string(fallback);
}

uint32_t retry_delay(uint32_t initial, uint32_t max, uint32_t attempts) {
  uint64_t d = uint64_t(initial) * attempts * attempts;
  return static_cast<uint32_t>(std::min<uint64_t>(d, max));
}

std::optional<PendingReport> final_report(const SpoolEnvelope& e, const ReportSettings& s, int64_t now) {
  PendingReport p;
  p.report = base_report(e, s, now);
  for (size_t i = 0; i < e.recipients.size(); ++i) {
    const SpoolRecipient& r = e.recipients[i];
    if (r.reported || r.state == RecipientState::pending) continue;
    bool failed = r.state == RecipientState::failed;
    bool wanted = failed ? (r.notify == 0 || (r.notify & notify_failure)) : (r.notify & notify_success) != 0;
    if (r.notify & notify_never) wanted = false;
    if (!wanted) continue;
    p.recipients.push_back(i);
    DsnAction action = failed ? DsnAction::failed : r.relayed ? DsnAction::relayed : DsnAction::delivered;
    DsnRecipient d = dsn_recipient(r, action, failed ? "5.0.0" : "2.0.0");
    d.last_attempt = now;
    p.report.recipients.push_back(std::move(d));
  }
  if (p.recipients.empty()) return std::nullopt;
  bool any_failure = std::any_of(p.report.recipients.begin(), p.report.recipients.end(),
                                 [](const DsnRecipient& d) { return d.action == DsnAction::failed; });
  if (!e.sender.empty() && e.kind == MessageKind::normal) {
    p.to = e.sender;
    p.kind = MessageKind::bounce;
  } else if (!any_failure || e.kind == MessageKind::double_bounce || s.double_bounce_to.empty()) {
    p.dropped = true;  // success notices for a null sender, or a report about a report that failed
  } else {
    p.to = s.double_bounce_to;
    p.report.to = p.to;
    p.kind = MessageKind::double_bounce;
    p.report.return_full = false;
  }
  return p;
}

std::optional<PendingReport> delay_report(const SpoolEnvelope& e, const ReportSettings& s, int64_t now, int64_t delay) {
  if (delay <= 0 || e.delay_warned || e.sender.empty() || e.kind != MessageKind::normal) return std::nullopt;
  if (now - e.received < delay) return std::nullopt;
  PendingReport p;
  p.report = base_report(e, s, now);
  p.report.return_full = false;  // a notice, not a return: the header is enough
  p.to = e.sender;
  for (size_t i = 0; i < e.recipients.size(); ++i) {
    const SpoolRecipient& r = e.recipients[i];
    if (r.state != RecipientState::pending) continue;
    if (r.notify != 0 && !(r.notify & notify_delay)) continue;
    DsnRecipient d = dsn_recipient(r, DsnAction::delayed, "4.0.0");
    d.last_attempt = r.attempts ? now : 0;
    d.will_retry_until = e.received + s.lifetime;
    p.report.recipients.push_back(std::move(d));
    p.recipients.push_back(i);
  }
  if (p.recipients.empty()) return std::nullopt;
  return p;
}

}  // namespace tern::queue
