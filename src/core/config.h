// Configuration: one TOML file, parsed and validated in one pass.
// parse_config() is pure (text in, Config or problems out) so it is unit-tested and fuzzable;
// every problem names the file, line, key and what to write instead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/network.h"

namespace tern {

struct ListenAddress {
  std::string host;  // numeric IPv4 or IPv6 address, without brackets
  uint16_t port = 0;
  std::string text() const;
};

// [[smtp.access]]: a client rule written in the configuration (docs/smtp-policy.md).
struct SmtpAccess {
  std::vector<Network> networks;
  bool deny = false;
  std::string message;                                         // deny: the 554 text
  std::vector<std::pair<std::string, std::string>> variables;  // the tcprules variables it stands for
};

struct Config {
  std::string source_path;  // absolute path of the file this came from
  std::string hostname;
  std::filesystem::path data_dir;  // absolute

  struct RunAs {
    std::string smtp = "tern-smtp";
    std::string queue = "tern-queue";
    std::string deliver = "tern-vmail";
    std::string directory = "tern-dir";
    std::string relay = "tern-relay";
  } run_as;

  struct Smtp {
    std::vector<ListenAddress> listen;
    uint64_t max_message_size = 26214400;
    uint32_t max_recipients = 1000;
    uint32_t max_connections = 500;
    uint32_t max_errors = 10;
    uint32_t command_timeout = 300;  // seconds, RFC 5321 4.5.3.2
    uint32_t data_timeout = 600;
    // Clients in these networks ("192.0.2.0/24", "2001:db8::/32", "127.0.0.1") may relay: mail
    // for domains not hosted here is accepted from them (qmail's tcprules RELAYCLIENT,
    // Postfix's mynetworks). Empty: nobody relays without authenticating.
    std::vector<Network> relay_networks;
    // Submission (RFC 6409, port 587: STARTTLS, AUTH before MAIL) and submissions (RFC 8314,
    // port 465: implicit TLS, AUTH before MAIL). Empty: not offered.
    std::vector<ListenAddress> submission_listen;
    std::vector<ListenAddress> smtps_listen;
    bool allow_insecure_auth = false;  // AUTH without TLS (qmail's ALLOW_INSECURE_AUTH); never on the internet
    bool sender_login_match = true;    // an authenticated client may only use MAIL FROM addresses it owns
    uint32_t max_auth_failures = 3;    // failed AUTH attempts in one session before it is closed
    bool received_auth_user = false;   // name the AUTH user in the Received header (else only in the log)
    // Connection limits (tcpserver -c and the limits patch). Clients in relay_networks are not
    // counted against the per-address and per-network limits. 0 = refuse every connection.
    uint32_t max_connections_per_ip = 50;        // MAXCONNIP
    uint32_t max_connections_per_network = 100;  // MAXCONNC: per IPv4 /24 or IPv6 /64
    double max_load = 0;                         // MAXLOAD as a 1-minute load average; 0 = no limit
    // The 421 texts of the limits (DIEMSG_*); "" = tern's own text.
    std::string too_many_connections_message;
    std::string too_many_per_ip_message;
    std::string too_many_per_network_message;
    std::string overloaded_message;
    uint32_t greeting_delay = 0;     // GREETDELAY seconds before the 220
    bool drop_early_talkers = true;  // DROP_PRE_GREET: a client that talks during the delay gets 554 and is dropped
    // MFCHECK: the MAIL FROM domain must have an MX or an address. "off", "log" (log only) or "reject".
    std::string sender_domain_check = "off";
    uint32_t max_unknown_recipients = 10;  // VALIDRCPTTO_LIMIT: unknown RCPTs before 421; 0 = no limit
    // badmailfrom / badrcptto: patterns (docs/smtp-policy.md) from the list and from the files.
    std::vector<std::string> bad_senders, bad_recipients;
    std::string bad_senders_file, bad_recipients_file;  // absolute; re-read when they change
    std::string access_rules;        // a tcprules-syntax file (absolute), re-read when it changes; "" = none
    std::vector<SmtpAccess> access;  // [[smtp.access]], tried before the access_rules file
  } smtp;

  // SPF at MAIL FROM (RFC 7208; the combined patch's SPFBEHAVIOR) for clients that are neither
  // authenticated nor relay clients, on port 25.
  // The pop3 service (docs/pop3.md). Both lists empty: no POP3.
  struct Pop3 {
    std::vector<ListenAddress> listen;        // port 110: plain text, STLS (RFC 2595)
    std::vector<ListenAddress> pop3s_listen;  // port 995: implicit TLS (RFC 8314)
    bool plaintext_auth_without_tls = false;  // USER/PASS and AUTH PLAIN before STLS
    uint32_t max_connections = 500;
    uint32_t max_connections_per_ip = 20;  // 0 = no limit
    uint32_t login_timeout = 60;           // seconds idle before login
    uint32_t idle_timeout = 600;           // seconds idle after login (RFC 1939 3: at least 600)
    uint32_t max_auth_failures = 3;        // failed logins in one connection, then it is closed
  } pop3;

  // The imap service (docs/imap.md). Both lists empty: no IMAP.
  struct Imap {
    std::vector<ListenAddress> listen;        // port 143: plain text, STARTTLS (LOGINDISABLED before it)
    std::vector<ListenAddress> imaps_listen;  // port 993: implicit TLS (RFC 8314)
    bool plaintext_auth_without_tls = false;  // LOGIN and AUTHENTICATE PLAIN before STARTTLS
    uint32_t max_connections = 1000;
    uint32_t max_connections_per_ip = 50;  // 0 = no limit
    uint32_t login_timeout = 60;           // seconds idle before login
    uint32_t idle_timeout = 1800;          // seconds idle after login (RFC 9051 5.4: at least 30 minutes)
    uint32_t max_auth_failures = 3;        // failed logins in one connection, then it is closed
  } imap;

  struct Spf {
    std::string policy = "off";    // "off", "header" (Received-SPF only), "reject_fail", "reject_softfail"
    bool defer_temperror = false;  // a DNS error answers 451 4.4.3 instead of accepting
  } spf;

  // DNS block and allow lists (rblsmtpd's job), checked at RCPT for unauthenticated clients.
  struct Dnsbl {
    std::vector<std::string> zones;        // listed: an A record in 127.0.0.0/8 (-r)
    std::vector<std::string> allow_zones;  // listed here: skip the block lists (-a)
    std::vector<Network> allow_networks;
    bool permanent = true;     // 554 5.7.1 (rblsmtpd -b); false: 451 4.7.1
    bool fail_closed = false;  // rblsmtpd -c: DNS trouble answers 451 instead of passing
  } dnsbl;

  // Greylisting (jgreylist's job) on port 25 for unauthenticated clients outside relay_networks.
  struct Greylist {
    bool enabled = false;
    uint32_t hold = 300;            // seconds before a retry is accepted
    uint32_t retry_window = 86400;  // a retry later than this starts over
    uint32_t expiry = 3110400;      // 36 days: passed triplets and allowed clients forgotten after this
    uint32_t auto_allow = 5;        // passed triplets after which a client passes everything; 0 = never
    std::string key = "network";    // "network" (/24 or /64) or "address"
    bool triplet = true;            // false: by client only, like jgreylist
    std::vector<Network> allow_networks;
  } greylist;

  // The certificates the smtp service presents (STARTTLS, port 465). Chains in PEM (the leaf
  // first), unencrypted keys readable by run_as.smtp. Reloaded on SIGHUP.
  struct Tls {
    std::string certificate;  // absolute, or "" for no TLS
    std::string key;
    struct Sni {
      std::vector<std::string> names;  // "mail.example.com" or "*.example.com", lowercased
      std::string certificate;
      std::string key;
    };
    std::vector<Sni> sni;  // [[sni]]: chosen by the name the client asks for; else the default
  } tls;

  struct Queue {
    uint32_t concurrency_local = 10;      // 0 holds deliveries, like qmail's concurrencylocal
    uint32_t concurrency_remote = 20;     // outbound transactions at once (qmail's concurrencyremote)
    uint32_t concurrency_per_domain = 5;  // outbound transactions at once to one destination domain
    uint32_t retry_initial = 60;          // seconds before the first retry
    uint32_t retry_max = 3600;            // cap on the interval between retries
    uint32_t lifetime = 604800;           // seconds a message may stay queued (qmail's queuelifetime)
    uint32_t delay_warning = 14400;       // seconds before a "still trying" notice; 0 = never
    std::string double_bounce_to;         // qmail's doublebounceto; "" = directory.postmaster or postmaster@hostname
  } queue;

  // Outbound SMTP (the relay service): how tern talks to other servers.
  struct Relay {
    std::string helo;         // name sent in EHLO; "" = server.hostname
    std::string source_ipv4;  // bind outbound IPv4 connections to this address; "" = any
    std::string source_ipv6;
    std::string ip_version = "both";  // "both", "ipv4" or "ipv6"
    std::string tls = "may";          // default TLS policy: none, may, encrypt, verify
    bool dane = true;                 // honour DANE TLSA records (DNSSEC-validated) on "may"
    bool mta_sts = true;              // honour MTA-STS policies (RFC 8461) of MX destinations
    std::string tls_ca_file;          // CA bundle for "verify"; "" = the system's
    uint32_t connect_timeout = 30;
    uint32_t max_recipients = 100;        // per SMTP transaction
    uint32_t connection_cache_time = 10;  // seconds an idle connection is kept for the next message
    uint16_t port = 25;                   // port for MX deliveries (tests use another)
  } relay;

  // smtproutes: where mail for a domain goes instead of its MX, and per-domain TLS policy.
  struct Route {
    std::string domain;  // "example.com", ".example.com" (its subdomains) or "*" (everything else)
    std::string host;    // relay host name or [address]; "" = the domain's MX, as usual
    uint16_t port = 25;
    std::string tls;  // "" = relay.tls
    std::string auth_user;
    std::string auth_password_file;  // readable by the relay user; the password is its first line
  };
  std::vector<Route> routes;

  struct Dns {
    std::vector<std::string> forwarders;  // "ip" or "ip@port"; empty = /etc/resolv.conf
    std::string trust_anchor;             // DNSSEC anchor file; "" = /usr/share/dns/root.key
  } dns;

  // Accounts live in the directory database (docs/accounts.md); this says where and how.
  struct Directory {
    std::string backend = "sqlite";     // or "postgresql"
    std::filesystem::path sqlite_path;  // absolute; default <data_dir>/directory/accounts.db
    std::string postgresql;             // libpq connection string
    std::string extension_separators = "+-";
    std::string postmaster;  // where postmaster@ and abuse@ go unless a domain overrides it
    std::string password_scheme = "yescrypt";
    uint32_t auth_max_failures_account = 10;  // failed logins per account within the window
    uint32_t auth_max_failures_client = 30;   // failed logins per client address within the window
    uint32_t auth_failure_window = 900;       // seconds
  } directory;

  struct Delivery {
    uint32_t over_quota_grace = 86400;       // seconds a full mailbox defers mail before it bounces; 0 = at once
    std::string forward_sender = "rewrite";  // remote forwards: "rewrite" to the forwarding address, or "keep"
  } delivery;

  // DKIM signing keys, made by `tern dkim keygen` (docs/mail-authentication.md).
  struct Dkim {
    std::filesystem::path key_dir;  // absolute; default <data_dir>/dkim, one subdirectory per domain
    std::string selector = "tern";  // the selector keygen and signing use unless told otherwise
    bool sign = true;               // the relay signs authenticated users' mail and tern's reports (keys permitting)
    bool arc_seal = true;           // the relay ARC-seals mail tern forwards (keys permitting)
  } dkim;

  // Checks of mail received on port 25 from clients neither authenticated nor in relay_networks:
  // SPF, DKIM, ARC and DMARC, reported in an Authentication-Results field (RFC 8601).
  struct Mailauth {
    bool verify = true;
    std::string authserv_id;                       // "" = server.hostname
    uint64_t max_verify_size = 32 * 1024 * 1024;   // bytes held for DKIM; larger mail is not checked
    std::string dmarc_reject = "reject";           // a p=reject failure: "reject" (550 5.7.1), "junk" or "none"
    std::string dmarc_quarantine = "junk";         // a p=quarantine failure: "junk" or "none"
    std::vector<std::string> arc_trusted_sealers;  // their arc=pass excuses a DMARC failure (RFC 7489 6.7)
    bool dmarc_reports = false;                    // send daily aggregate reports to the rua= of policies
    std::string report_from;                       // "" = dmarc-reports@server.hostname
    std::string report_org;                        // "" = server.hostname
    uint32_t report_interval = 86400;              // seconds per report period (RFC 7489's ri default)
  } mailauth;
  std::string dmarc_report_from() const {
    return mailauth.report_from.empty() ? "dmarc-reports@" + hostname : mailauth.report_from;
  }
  std::string authserv_id() const { return mailauth.authserv_id.empty() ? hostname : mailauth.authserv_id; }

  std::filesystem::path spool_dir() const { return data_dir / "spool"; }
  std::filesystem::path domains_dir() const { return data_dir / "domains"; }
  std::filesystem::path run_dir() const { return data_dir / "run"; }
  std::filesystem::path tls_dir() const { return data_dir / "tls"; }
  std::filesystem::path directory_dir() const { return data_dir / "directory"; }
  std::filesystem::path smtp_state_dir() const { return data_dir / "smtp"; }  // greylisting state
};

struct ConfigProblem {
  std::string file;
  int line = 0;  // 0 when the problem is not tied to a line
  std::string key;
  std::string message;  // what is wrong and what to write instead
};

std::string format_problem(const ConfigProblem& p);

struct ConfigResult {
  std::optional<Config> config;  // set only when problems is empty
  std::vector<ConfigProblem> problems;
};

// base_dir resolves a relative data_dir; filename is used in problem reports.
ConfigResult parse_config(std::string_view text, std::string_view filename, const std::filesystem::path& base_dir);
ConfigResult load_config(const std::filesystem::path& path);

// The configuration `tern serve --dev` writes at first start (ports 2525, data beside the file).
std::string dev_config_text();

std::string to_lower(std::string_view s);

}  // namespace tern
