// The IMAP session over a real Maildir in a temporary directory, without sockets: commands in
// (through CommandReader and parse_command, as the service feeds them), exact replies out, and
// the Maildir checked afterwards. Also the pure message_view helpers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "imap/message_view.h"
#include "imap/session.h"
#include "mime/message.h"

using namespace tern::imap;
namespace fs = std::filesystem;

namespace {

// What CAPABILITY lists after login (before it, STARTTLS and LOGINDISABLED or AUTH=PLAIN follow).
const std::string kCaps =
    "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN "
    "SPECIAL-USE LIST-EXTENDED LIST-STATUS QUOTA QUOTA=RES-STORAGE QUOTA=RES-MESSAGE ESEARCH SEARCHRES CONDSTORE "
    "QRESYNC "
    "STATUS=SIZE UTF8=ACCEPT APPENDLIMIT=67108864";

class ImapSession : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("tern-imap-session-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    maildir_ = root_ / "Maildir";
    SessionSettings settings;
    settings.hostname = "mail.example.test";
    settings.tls_active = true;
    session_ = std::make_unique<Session>(settings);
  }
  void TearDown() override { fs::remove_all(root_); }

  // One command line (literals inline are fine: the reader splits them) -> the session's output.
  std::string run(const std::string& line) {
    CommandReader reader;
    reader.feed(line + "\r\n");
    std::string out;
    for (;;) {
      ReadEvent event = reader.next();
      if (event.status == ReadStatus::need_more) return out;
      if (event.status == ReadStatus::continuation) continue;  // the whole literal was fed already
      if (event.status == ReadStatus::error) return out + event.error.reply;
      Response r = event.status == ReadStatus::raw_line
                       ? session_->handle_auth_line(event.line)
                       : session_->handle(event.command, parse_command(event.command, session_->parse_options()));
      out += r.out;
      for (; r.action == Action::more; out += r.out) {
        ++slices_;
        r = session_->resume();
      }
      if (r.action == Action::authenticate)
        out += session_->complete_auth(AuthVerdict::ok, "alice@example.test", maildir_.string(), quota_).out;
      if (session_->wants_raw_line()) reader.expect_raw_line(session_->pending_tag());
    }
  }

  void deliver(const std::string& name, const std::string& text) {
    fs::create_directories(maildir_ / "new");
    fs::create_directories(maildir_ / "cur");
    fs::create_directories(maildir_ / "tmp");
    std::ofstream(maildir_ / name, std::ios::binary) << text;
  }

  void login() {
    Mailstore(maildir_).prepare();
    ASSERT_EQ(run("a LOGIN alice@example.test pw"), "a OK [CAPABILITY " + kCaps + "] Logged in\r\n");
  }

  fs::path root_, maildir_;
  size_t slices_ = 0;  // Action::more answers seen
  tern::deliver::Quota quota_;
  std::unique_ptr<Session> session_;
};

const std::string kMessage =
    "From: Bob <bob@example.org>\n"
    "To: alice@example.test\n"
    "Subject: =?utf-8?q?caf=C3=A9?= menu\n"
    "Date: Mon, 07 Dec 2026 10:00:00 +0100\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=b\n"
    "\n"
    "--b\n"
    "Content-Type: text/plain; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "cr=E8me br=FBl=E9e\n"
    "--b\n"
    "Content-Type: application/octet-stream\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "aGVsbG8=\n"
    "--b--\n";

}  // namespace

TEST_F(ImapSession, CommandsOutOfStateGetExactReplies) {
  EXPECT_EQ(run("a1 SELECT INBOX"), "a1 BAD command not allowed before login; use LOGIN or AUTHENTICATE first\r\n");
  EXPECT_EQ(run("a2 NOOP"), "a2 OK NOOP completed\r\n");
  login();
  EXPECT_EQ(run("a3 LOGIN x y"), "a3 BAD command not allowed after login\r\n");
  EXPECT_EQ(run("a4 FETCH 1 FLAGS"), "a4 BAD command not allowed without a selected mailbox; SELECT one first\r\n");
  EXPECT_EQ(run("a5 SELECT Nowhere"), "a5 NO [NONEXISTENT] mailbox does not exist\r\n");
  EXPECT_EQ(run("a6 GETQUOTAROOT INBOX"), "* QUOTAROOT \"INBOX\"\r\na6 OK GETQUOTAROOT completed\r\n");  // no quota
  EXPECT_EQ(run("a6b GETQUOTA \"\""), "a6b NO [NONEXISTENT] no such quota root\r\n");
  EXPECT_EQ(run("a7 SELECT INBOX (QRESYNC (1 1))"), "a7 BAD QRESYNC must be enabled first (ENABLE QRESYNC)\r\n");
}

TEST_F(ImapSession, LoginWithoutTlsIsRefusedAndSaslPlainWorks) {
  SessionSettings plain;
  plain.hostname = "mail.example.test";
  plain.tls_available = true;
  session_ = std::make_unique<Session>(plain);
  EXPECT_EQ(session_->greeting(),
            "* OK [CAPABILITY " + kCaps + " STARTTLS LOGINDISABLED] mail.example.test IMAP server ready (tern)\r\n");
  EXPECT_EQ(run("a LOGIN alice pw"), "a NO [PRIVACYREQUIRED] LOGIN is disabled without TLS; use STARTTLS first\r\n");
  EXPECT_EQ(run("b STARTTLS"), "b OK Begin TLS negotiation now\r\n");
  session_->tls_started();
  EXPECT_EQ(run("c AUTHENTICATE CRAM-MD5"),
            "c NO [CANNOT] unsupported authentication mechanism (supported: PLAIN)\r\n");
  // "\0alice@example.test\0pw" in base64, sent after the continuation request.
  EXPECT_EQ(run("d AUTHENTICATE PLAIN\r\nAGFsaWNlQGV4YW1wbGUudGVzdABwdw=="),
            "+ \r\nd OK [CAPABILITY " + kCaps + "] Logged in\r\n");
  EXPECT_EQ(session_->pending_user(), "alice@example.test");
  EXPECT_TRUE(session_->pending_password().empty());  // wiped once handed over
}

TEST_F(ImapSession, SelectFetchSectionsSearchAndStore) {
  deliver("new/1700000001.M1P1Q1.h", kMessage);
  deliver("cur/1700000002.M1P1Q1.h:2,S", "Subject: second\n\nplain words\n");
  login();
  std::string select = run("s SELECT INBOX");
  EXPECT_NE(select.find("* 2 EXISTS\r\n"), std::string::npos) << select;
  EXPECT_NE(select.find("* OK [UNSEEN 1] First unseen\r\n"), std::string::npos) << select;
  EXPECT_NE(select.find("s OK [READ-WRITE] SELECT completed\r\n"), std::string::npos) << select;

  EXPECT_EQ(run("f1 FETCH 2 (UID FLAGS RFC822.SIZE)"),
            "* 2 FETCH (UID 2 FLAGS (\\Seen) RFC822.SIZE 32)\r\nf1 OK FETCH completed\r\n");
  EXPECT_EQ(run("f2 FETCH 1 (BODY.PEEK[1])"),
            "* 1 FETCH (BODY[1] {18}\r\ncr=E8me br=FBl=E9e)\r\nf2 OK FETCH completed\r\n");  // the last line end is the
                                                                                             // boundary's
  EXPECT_EQ(run("f3 FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])"),
            "* 1 FETCH (BINARY[2] {5}\r\nhello BINARY.SIZE[2] 5)\r\nf3 OK FETCH completed\r\n");
  EXPECT_EQ(
      run("f4 FETCH 1 (BODY.PEEK[1.MIME])"),
      "* 1 FETCH (BODY[1.MIME] {93}\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
      "quoted-printable\r\n\r\n)\r\nf4 OK FETCH completed\r\n");
  EXPECT_EQ(run("f5 FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject)]<0.9>)"),
            "* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)]<0> {9}\r\nSubject: )\r\nf5 OK FETCH completed\r\n");
  EXPECT_EQ(run("f6 FETCH 1 (BODY.PEEK[9])"), "* 1 FETCH (BODY[9] {0}\r\n)\r\nf6 OK FETCH completed\r\n");
  EXPECT_EQ(run("f7 FETCH 3 FLAGS"), "f7 BAD invalid message number or set\r\n");

  // SEARCH sees decoded text: the RFC 2047 subject and the quoted-printable latin-1 body.
  EXPECT_EQ(run("q2 SEARCH CHARSET UTF-8 BODY {6+}\r\ncrème"), "* SEARCH 1\r\nq2 OK SEARCH completed\r\n");
  EXPECT_EQ(run("q3 SEARCH SUBJECT menu"), "* SEARCH 1\r\nq3 OK SEARCH completed\r\n");
  EXPECT_EQ(run("q4 SEARCH SENTON 7-Dec-2026"), "* SEARCH 1\r\nq4 OK SEARCH completed\r\n");
  EXPECT_EQ(run("q5 UID SEARCH UNSEEN"), "* SEARCH 1\r\nq5 OK SEARCH completed\r\n");
  EXPECT_EQ(run("q6 SEARCH RETURN (MIN COUNT) ALL"),
            "* ESEARCH (TAG \"q6\") MIN 1 COUNT 2\r\nq6 OK SEARCH completed\r\n");
  EXPECT_EQ(run("q7 SEARCH RETURN (SAVE) TEXT plain"), "q7 OK SEARCH completed\r\n");
  EXPECT_EQ(run("q8 FETCH $ (UID)"), "* 2 FETCH (UID 2)\r\nq8 OK FETCH completed\r\n");
  EXPECT_EQ(run("q9 SEARCH CHARSET KOI8-R ALL"), "q9 NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset KOI8-R\r\n");

  // Reading the body without PEEK sets \Seen, in the file name too.
  EXPECT_EQ(run("r FETCH 1 (BODY[2])"),
            "* 1 FETCH (FLAGS (\\Seen) BODY[2] {8}\r\naGVsbG8=)\r\nr OK FETCH completed\r\n");
  EXPECT_TRUE(fs::exists(maildir_ / "cur/1700000001.M1P1Q1.h:2,S"));
  EXPECT_EQ(run("t STORE 1:2 +FLAGS (\\Deleted)"),
            "* 1 FETCH (FLAGS (\\Seen \\Deleted))\r\n* 2 FETCH (FLAGS (\\Seen \\Deleted))\r\nt OK STORE completed\r\n");
  EXPECT_EQ(run("u UID EXPUNGE 2"), "* 2 EXPUNGE\r\nu OK EXPUNGE completed\r\n");
  EXPECT_FALSE(fs::exists(maildir_ / "cur/1700000002.M1P1Q1.h:2,ST"));
  EXPECT_EQ(run("v CLOSE"), "v OK CLOSE completed\r\n");  // expunges the other \Deleted one silently
  EXPECT_TRUE(fs::is_empty(maildir_ / "cur"));
}

TEST_F(ImapSession, ChangesByOthersAreReportedAtTheRightTime) {
  deliver("new/1700000001.M1P1Q1.h", "Subject: one\n\n1\n");
  deliver("new/1700000002.M1P1Q1.h", "Subject: two\n\n2\n");
  login();
  run("s SELECT INBOX");
  // Another session expunges message 1 and a delivery adds one: FETCH by number cannot read it
  // and does not report the expunge (RFC 9051 7.5.1); NOOP reports both.
  fs::remove(maildir_ / "new/1700000001.M1P1Q1.h");
  deliver("new/1700000003.M1P1Q1.h", "Subject: three\n\n3\n");
  EXPECT_EQ(run("f FETCH 1 (BODY.PEEK[])"), "f NO [EXPUNGEISSUED] some of the messages no longer exist\r\n");
  EXPECT_EQ(run("n NOOP"), "* 1 EXPUNGE\r\n* 2 EXISTS\r\nn OK NOOP completed\r\n");
  EXPECT_EQ(run("g FETCH 1:* (UID)"), "* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\ng OK FETCH completed\r\n");
  // IDLE reports as NOOP does; DONE ends it.
  deliver("new/1700000004.M1P1Q1.h", "Subject: four\n\n4\n");
  EXPECT_EQ(run("i IDLE"), "+ idling\r\n* 3 EXISTS\r\n");
  EXPECT_EQ(session_->idle_updates(), "");
  EXPECT_EQ(session_->idle_done("DONE").out, "i OK IDLE terminated\r\n");
}

TEST_F(ImapSession, LongFetchAndSearchComeInSlicesWhileOthersChangeTheFolder) {
  // 1,200 messages of 2,000 octets (2,002 with CRLF): FETCH of every body is 2.4 MB, three slices.
  const std::string body(1980, 'x');
  for (int i = 1; i <= 1200; ++i) {
    std::string text = "Subject: m" + std::to_string(i) + "\n\n" + (i % 100 == 0 ? "needle " : "") + body;
    text.resize(2000, 'y');
    deliver("cur/" + std::to_string(1700000000 + i) + ".M1P1Q1.h:2,S", text);
  }
  login();
  run("s SELECT INBOX");
  std::string all = run("f FETCH 1:* (BODY.PEEK[])");
  EXPECT_GE(slices_, 2u);  // 1 MiB of answer per slice at most
  size_t lines = 0;
  for (size_t at = all.find("FETCH (BODY[] {2002}\r\n"); at != std::string::npos;
       at = all.find("FETCH (BODY[] {2002}\r\n", at + 1))
    ++lines;
  EXPECT_EQ(lines, 1200u);
  EXPECT_NE(all.find("* 1200 FETCH (BODY[] {2002}\r\nSubject: m1200\r\n"), std::string::npos);
  EXPECT_TRUE(all.ends_with(")\r\nf OK FETCH completed\r\n"));
  EXPECT_EQ(run("q SEARCH BODY needle"),
            "* SEARCH 100 200 300 400 500 600 700 800 900 1000 1100 1200\r\nq OK SEARCH completed\r\n");

  // Between two slices another session of the process (sharing the folder's index) expunges
  // messages: the rest of the FETCH skips them and says so; the view keeps its numbers.
  auto indexes = std::make_shared<tern::mailbox::IndexCache>(0);
  SessionSettings settings;
  settings.hostname = "mail.example.test";
  settings.tls_active = true;
  settings.indexes = indexes;
  session_ = std::make_unique<Session>(settings);
  login();
  run("s SELECT INBOX");
  std::unique_ptr<Session> mine = std::move(session_);
  session_ = std::make_unique<Session>(settings);
  login();
  run("t SELECT INBOX");
  EXPECT_EQ(run("d STORE 1199:1200 +FLAGS.SILENT (\\Deleted)"), "d OK STORE completed\r\n");
  std::unique_ptr<Session> other = std::move(session_);
  session_ = std::move(mine);
  CommandReader reader;
  reader.feed("g FETCH 1:* (BODY.PEEK[])\r\n");
  ReadEvent event = reader.next();
  Response r = session_->handle(event.command, parse_command(event.command, session_->parse_options()));
  ASSERT_EQ(r.action, Action::more);
  std::string out = r.out;
  std::swap(session_, other);
  EXPECT_EQ(run("e EXPUNGE"), "* 1200 EXPUNGE\r\n* 1199 EXPUNGE\r\ne OK EXPUNGE completed\r\n");
  std::swap(session_, other);
  for (r = session_->resume(); r.action == Action::more; r = session_->resume()) out += r.out;
  out += r.out;
  EXPECT_NE(out.find("* 1198 FETCH (BODY[] {2002}"), std::string::npos);
  EXPECT_EQ(out.find("* 1199 FETCH"), std::string::npos);
  EXPECT_TRUE(out.ends_with(")\r\ng NO [EXPUNGEISSUED] some of the messages no longer exist\r\n"));
  EXPECT_EQ(run("n NOOP"), "* 1200 EXPUNGE\r\n* 1199 EXPUNGE\r\nn OK NOOP completed\r\n");
}

TEST_F(ImapSession, EnvelopeAndBodystructureComeFromTheFoldersCache) {
  deliver("cur/1700000001.M1P1Q1.h:2,S", "Subject: cached\nFrom: a@example.test\n\nbody\n");
  login();
  run("s SELECT INBOX");
  const std::string envelope =
      "(NIL \"cached\" ((NIL NIL \"a\" \"example.test\")) ((NIL NIL \"a\" \"example.test\")) ((NIL NIL \"a\" "
      "\"example.test\")) NIL NIL NIL NIL NIL)";
  const std::string structure = "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)";
  EXPECT_EQ(run("f FETCH 1 (ENVELOPE BODYSTRUCTURE)"),
            "* 1 FETCH (ENVELOPE " + envelope + " BODYSTRUCTURE " + structure + ")\r\nf OK FETCH completed\r\n");
  std::ifstream in(maildir_ / "tern-cache", std::ios::binary);
  std::stringstream file;
  file << in.rdbuf();
  EXPECT_NE(file.str().find("1 E " + std::to_string(envelope.size()) + "\n" + envelope + "\n"), std::string::npos);
  EXPECT_NE(file.str().find("1 S " + std::to_string(structure.size()) + "\n" + structure + "\n"), std::string::npos);
  // The next FETCH reads the cache, not the message: a record put there is what it answers.
  fs::remove(maildir_ / "tern-cache");
  std::string uidvalidity = file.str().substr(13, file.str().find('\n') - 13);
  std::ofstream(maildir_ / "tern-cache", std::ios::binary) << "tern-cache 1 " << uidvalidity << "\n1 E 5\n(NIL)\n";
  SessionSettings settings;
  settings.hostname = "mail.example.test";
  settings.tls_active = true;
  session_ = std::make_unique<Session>(settings);  // a new session: its own view of the cache file
  login();
  run("s SELECT INBOX");
  EXPECT_EQ(run("f2 FETCH 1 (ENVELOPE BODYSTRUCTURE)"),
            "* 1 FETCH (ENVELOPE (NIL) BODYSTRUCTURE " + structure + ")\r\nf2 OK FETCH completed\r\n");
}

TEST_F(ImapSession, MailboxesAppendCopyMove) {
  login();
  EXPECT_EQ(run("c1 CREATE Work.Reports"), "c1 OK CREATE completed\r\n");
  EXPECT_EQ(run("c2 CREATE Work.Reports"), "c2 NO [ALREADYEXISTS] mailbox already exists\r\n");
  EXPECT_EQ(run("c3 CREATE Work/x"), "c3 NO [CANNOT] mailbox names cannot hold \"/\"\r\n");
  EXPECT_EQ(run("c4 CREATE Notes (USE (\\Sent))"),
            "c4 NO [USEATTR] tern gives special use by name: call the mailbox Sent, Drafts, Trash, Junk or "
            "Archive\r\n");
  EXPECT_EQ(run("l LIST \"\" Work*"),
            "* LIST (\\NonExistent \\HasChildren) \".\" \"Work\"\r\n* LIST (\\HasNoChildren) \".\" \"Work.Reports\"\r\n"
            "l OK LIST completed\r\n");
  EXPECT_EQ(run("l2 LIST (SPECIAL-USE) \"\" *"),
            "* LIST (\\HasNoChildren \\Archive) \".\" \"Archive\"\r\n* LIST (\\HasNoChildren \\Drafts) \".\" "
            "\"Drafts\"\r\n* LIST (\\HasNoChildren \\Junk) \".\" \"Junk\"\r\n* LIST (\\HasNoChildren \\Sent) \".\" "
            "\"Sent\"\r\n* LIST (\\HasNoChildren \\Trash) \".\" \"Trash\"\r\nl2 OK LIST completed\r\n");
  std::string appended = run("a APPEND Work.Reports (\\Seen) {14+}\r\nSubject: r\r\n\r\n");
  EXPECT_TRUE(appended.starts_with("a OK [APPENDUID ")) << appended;
  EXPECT_TRUE(appended.ends_with(" 1] APPEND completed\r\n")) << appended;
  EXPECT_EQ(run("s STATUS Work.Reports (MESSAGES UNSEEN SIZE)"),
            "* STATUS \"Work.Reports\" (MESSAGES 1 UNSEEN 0 SIZE 14)\r\ns OK STATUS completed\r\n");
  run("x SELECT Work.Reports");
  std::string moved = run("m MOVE 1 Trash");
  EXPECT_TRUE(moved.starts_with("* OK [COPYUID ")) << moved;
  EXPECT_TRUE(moved.ends_with(" 1 1] Moved\r\n* 1 EXPUNGE\r\nm OK MOVE completed\r\n")) << moved;
  EXPECT_EQ(run("d DELETE INBOX"), "d NO [CANNOT] INBOX cannot be deleted\r\n");
  EXPECT_EQ(run("r RENAME Work Job"), "r NO [NONEXISTENT] mailbox does not exist\r\n");
  EXPECT_EQ(run("r2 RENAME Work.Reports Job"), "r2 OK RENAME completed\r\n");
  EXPECT_TRUE(fs::is_directory(maildir_ / ".Job" / "cur"));
}

TEST(MessageView, CrlfSectionsDatesAndCase) {
  EXPECT_EQ(to_crlf("a\nb\r\nc\r"), "a\r\nb\r\nc\r");
  EXPECT_TRUE(contains_ignoring_case("Hello World", "wORLD"));
  EXPECT_FALSE(contains_ignoring_case("Hello", "help"));
  EXPECT_EQ(internal_date_text(0), "01-Jan-1970 00:00:00 +0000");
  EXPECT_EQ(internal_date_text(1796670903), "07-Dec-2026 19:15:03 +0000");
  EXPECT_EQ(days_from_civil(2026, 12, 7), 20794);
  auto parsed = tern::mime::parse_message(kMessage);
  EXPECT_EQ(sent_day(parsed), days_from_civil(2026, 12, 7));
  EXPECT_EQ(header_values(parsed, "subject"), "café menu");
  Section header{{}, SectionText::header_fields_not, {"From", "To", "Subject", "Date", "MIME-Version"}};
  EXPECT_EQ(section_bytes(kMessage, parsed, header), "Content-Type: multipart/mixed; boundary=b\r\n\r\n");
  EXPECT_EQ(section_bytes(kMessage, parsed, Section{{3}, SectionText::none, {}}), std::nullopt);
  EXPECT_EQ(section_bytes(kMessage, parsed, Section{{1}, SectionText::header, {}}), std::nullopt);  // not a message
  EXPECT_NE(searchable_text(kMessage, parsed, false, true).find("crème brûlée"), std::string::npos);
}

TEST_F(ImapSession, QuotaIsReportedEnforcedAndKeptInMaildirsize) {
  deliver("new/1700000001.M1P1Q1.h,S=2000", std::string(2000, 'x'));
  quota_ = {3000, 10};
  login();
  EXPECT_EQ(
      run("q1 GETQUOTAROOT INBOX"),
      "* QUOTAROOT \"INBOX\" \"\"\r\n* QUOTA \"\" (STORAGE 2 2 MESSAGE 1 10)\r\nq1 OK GETQUOTAROOT completed\r\n");
  EXPECT_EQ(run("q2 GETQUOTA \"\""), "* QUOTA \"\" (STORAGE 2 2 MESSAGE 1 10)\r\nq2 OK GETQUOTA completed\r\n");
  EXPECT_EQ(run("q3 SETQUOTA \"\" (STORAGE 100)"),
            "q3 NO [NOPERM] quotas are set by the administrator (tern user quota), not over IMAP\r\n");
  EXPECT_EQ(run("a1 APPEND INBOX {1500+}\r\n" + std::string(1500, 'y')),
            "a1 NO [OVERQUOTA] the mailbox is over its quota; delete some mail first\r\n");
  std::string small = run("a2 APPEND INBOX {12+}\r\nSubject: s\r\n");
  EXPECT_TRUE(small.starts_with("a2 OK [APPENDUID ")) << small;
  auto maildirsize = [&] {
    std::ifstream in(maildir_ / "maildirsize");
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(maildirsize(), "3000S,10C\n2000 1\n11 1\n");  // 12 octets sent, stored with LF
  run("s SELECT INBOX");
  run("t STORE 1 +FLAGS.SILENT (\\Deleted)");
  EXPECT_EQ(run("e EXPUNGE"), "* 1 EXPUNGE\r\ne OK EXPUNGE completed\r\n");
  EXPECT_EQ(maildirsize(), "3000S,10C\n2000 1\n11 1\n-2000 -1\n");
}

TEST_F(ImapSession, CondstoreModseqsChangedSinceAndUnchangedSince) {
  deliver("new/1700000001.M1P1Q1.h", "Subject: one\n\n1\n");
  deliver("new/1700000002.M1P1Q1.h", "Subject: two\n\n2\n");
  login();
  EXPECT_EQ(run("e ENABLE CONDSTORE"), "* ENABLED CONDSTORE\r\ne OK ENABLE completed\r\n");
  EXPECT_EQ(run("e2 ENABLE CONDSTORE"), "* ENABLED\r\ne2 OK ENABLE completed\r\n");  // already on
  std::string select = run("s SELECT INBOX (CONDSTORE)");
  EXPECT_NE(select.find("* OK [HIGHESTMODSEQ 1] Highest\r\n"), std::string::npos) << select;
  EXPECT_EQ(run("f FETCH 1:* (FLAGS)"),
            "* 1 FETCH (FLAGS () MODSEQ (1))\r\n* 2 FETCH (FLAGS () MODSEQ (1))\r\nf OK FETCH completed\r\n");
  EXPECT_EQ(run("t STORE 2 +FLAGS (\\Flagged)"),
            "* 2 FETCH (FLAGS (\\Flagged) MODSEQ (2))\r\nt OK STORE completed\r\n");
  EXPECT_EQ(run("c FETCH 1:* (UID) (CHANGEDSINCE 1)"), "* 2 FETCH (UID 2 MODSEQ (2))\r\nc OK FETCH completed\r\n");
  EXPECT_EQ(run("u STORE 1:2 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)"),
            "* 1 FETCH (FLAGS (\\Seen) MODSEQ (3))\r\nu OK [MODIFIED 2] Conditional STORE failed\r\n");
  EXPECT_EQ(run("q SEARCH MODSEQ 2"), "* SEARCH 1 2 (MODSEQ 3)\r\nq OK SEARCH completed\r\n");
  EXPECT_EQ(run("st STATUS INBOX (HIGHESTMODSEQ)"),
            "* STATUS \"INBOX\" (HIGHESTMODSEQ 3)\r\nst OK STATUS completed\r\n");
  EXPECT_EQ(run("v UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)"),
            "v BAD VANISHED needs QRESYNC enabled first (ENABLE QRESYNC)\r\n");
}

TEST_F(ImapSession, KeywordsAreDovecotsLettersAndNames) {
  // A folder Dovecot used: "a" is $Label1, "b" Junk.
  deliver("cur/1700000001.M1P1Q1.h:2,Sb", "Subject: one\n\n1\n");
  deliver("new/1700000002.M1P1Q1.h", "Subject: two\n\n2\n");
  std::ofstream(maildir_ / "dovecot-keywords") << "0 $Label1\n1 Junk\n";
  login();
  std::string select = run("s SELECT INBOX");
  EXPECT_NE(select.find("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Label1 Junk)\r\n"),
            std::string::npos)
      << select;
  EXPECT_NE(select.find("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Label1 Junk "
                        "\\*)] Flags permitted\r\n"),
            std::string::npos)
      << select;
  EXPECT_EQ(run("f FETCH 1 FLAGS"), "* 1 FETCH (FLAGS (\\Seen Junk))\r\nf OK FETCH completed\r\n");
  EXPECT_EQ(run("k SEARCH KEYWORD junk"), "* SEARCH 1\r\nk OK SEARCH completed\r\n");
  EXPECT_EQ(run("u SEARCH UNKEYWORD Junk"), "* SEARCH 2\r\nu OK SEARCH completed\r\n");
  // A new keyword gets the next letter, is written to dovecot-keywords and announced.
  EXPECT_EQ(run("t STORE 2 +FLAGS (NonJunk $Forwarded)"),
            "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Label1 Junk NonJunk)\r\n"
            "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded $Label1 Junk NonJunk "
            "\\*)] Flags permitted\r\n"
            "* 2 FETCH (FLAGS ($Forwarded NonJunk))\r\nt OK STORE completed\r\n");
  EXPECT_TRUE(fs::exists(maildir_ / "cur/1700000002.M1P1Q1.h:2,Pc"));
  std::ifstream in(maildir_ / "dovecot-keywords");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), "0 $Label1\n1 Junk\n2 NonJunk\n");
  EXPECT_EQ(run("r STORE 1 -FLAGS (Junk)"), "* 1 FETCH (FLAGS (\\Seen))\r\nr OK STORE completed\r\n");
  // A copy into another folder gets that folder's numbers for the same names.
  run("c CREATE Other");
  std::ofstream(maildir_ / ".Other" / "dovecot-keywords") << "0 NonJunk\n";
  EXPECT_TRUE(run("y COPY 2 Other").starts_with("y OK [COPYUID "));
  bool found = false;
  for (const auto& e : fs::directory_iterator(maildir_ / ".Other" / "cur"))
    found = found || e.path().filename().string().ends_with(":2,Pa");
  EXPECT_TRUE(found);
}

TEST(Keywords, ParseSkipsWhatItCannotTrust) {
  KeywordMap map = parse_keywords("0 a\nx b\n27 c\n1 A\n1 d\n2 d\n2 \\bad\n3 ok");
  EXPECT_EQ(map.names[0], "a");
  EXPECT_EQ(map.names[1], "d");  // "1 A" repeats a name (keywords ignore case), "x b" and "27 c" are no numbers
  EXPECT_EQ(map.names[2], "");   // "2 d" repeats a name, "2 \bad" is not a keyword
  EXPECT_EQ(map.names[3], "ok");
  EXPECT_EQ(format_keywords(map), "0 a\n1 d\n3 ok\n");
  EXPECT_EQ(map.add("ok"), 3);
  EXPECT_EQ(map.add("new"), 2);  // the first unused number
  EXPECT_EQ(map.add("bad name"), -1);
  for (int i = 0; i < 22; ++i) map.add("k" + std::to_string(i));
  EXPECT_EQ(map.add("one-too-many"), -1);
  EXPECT_EQ(map.names_of(0b1011), (std::vector<std::string>{"a", "d", "ok"}));
}

TEST_F(ImapSession, ListExtendedSubscribedAndRecursiveMatch) {
  login();
  run("c CREATE Work.Reports");
  run("s1 SUBSCRIBE Work.Reports");
  run("s2 SUBSCRIBE Gone");  // subscribed, but no such mailbox
  EXPECT_EQ(run("l1 LIST (SUBSCRIBED) \"\" *"),
            "* LIST (\\NonExistent \\HasNoChildren \\Subscribed) \".\" \"Gone\"\r\n"
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"Work.Reports\"\r\nl1 OK LIST completed\r\n");
  EXPECT_EQ(run("l2 LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %"),
            "* LIST (\\NonExistent \\HasNoChildren \\Subscribed) \".\" \"Gone\"\r\n"
            "* LIST (\\NonExistent \\HasChildren) \".\" \"Work\" (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
            "l2 OK LIST completed\r\n");
  EXPECT_EQ(run("l3 LIST \"\" Work.% RETURN (SUBSCRIBED STATUS (MESSAGES))"),
            "* LIST (\\HasNoChildren \\Subscribed) \".\" \"Work.Reports\"\r\n"
            "* STATUS \"Work.Reports\" (MESSAGES 0)\r\nl3 OK LIST completed\r\n");
  EXPECT_EQ(run("l4 LSUB \"\" *"),
            "* LSUB (\\Noselect) \".\" \"Gone\"\r\n* LSUB () \".\" \"Work.Reports\"\r\n"
            "l4 OK LSUB completed\r\n");
}

TEST_F(ImapSession, Utf8AcceptNamesAndAppend) {
  login();
  run("c CREATE &AOk-t&AOk-");  // "été" in modified UTF-7, before UTF8=ACCEPT
  EXPECT_EQ(run("l1 LIST \"\" &AOk-*"), "* LIST (\\HasNoChildren) \".\" \"&AOk-t&AOk-\"\r\nl1 OK LIST completed\r\n");
  EXPECT_EQ(run("e ENABLE UTF8=ACCEPT"), "* ENABLED UTF8=ACCEPT\r\ne OK ENABLE completed\r\n");
  // Now names go both ways as UTF-8 (as literals, since they hold 8-bit octets).
  EXPECT_EQ(run("l2 LIST \"\" {4+}\r\nét*"), "* LIST (\\HasNoChildren) \".\" {5}\r\nété\r\nl2 OK LIST completed\r\n");
  std::string appended = run("a APPEND {5+}\r\nété UTF8 (~{18+}\r\nSubject: café\r\n\r\n)");
  EXPECT_TRUE(appended.starts_with("a OK [APPENDUID ")) << appended;
  EXPECT_EQ(run("b APPEND INBOX UTF8 ({3+}\r\nabc)"),
            "b BAD APPEND: UTF8 message data must be a literal8 (~{n}, RFC 6855)\r\n");
}

TEST_F(ImapSession, QresyncReportsVanishedAndChangedSinceTheClientsModseq) {
  for (int i = 1; i <= 4; ++i)
    deliver("new/170000000" + std::to_string(i) + ".M1P1Q1.h", "Subject: " + std::to_string(i) + "\n\nx\n");
  login();
  EXPECT_EQ(run("e ENABLE QRESYNC"), "* ENABLED QRESYNC\r\ne OK ENABLE completed\r\n");
  std::string select = run("s SELECT INBOX");
  size_t at = select.find("[UIDVALIDITY ");
  ASSERT_NE(at, std::string::npos);
  std::string uidvalidity = select.substr(at + 13, select.find(']', at) - at - 13);
  // Another client's session: message 2 expunged, message 3 flagged. Expunges are VANISHED now.
  run("t STORE 2 +FLAGS.SILENT (\\Deleted)");
  EXPECT_EQ(run("x EXPUNGE"), "* VANISHED 2\r\nx OK EXPUNGE completed\r\n");
  run("f UID STORE 3 +FLAGS.SILENT (\\Flagged)");
  // A client that saw MODSEQ 1 reselects: it learns what vanished and what changed, and that the
  // previous mailbox was closed.
  std::string again = run("r SELECT INBOX (QRESYNC (" + uidvalidity + " 1 1:4))");
  EXPECT_TRUE(again.starts_with("* OK [CLOSED] Previous mailbox closed\r\n")) << again;
  EXPECT_NE(again.find("* VANISHED (EARLIER) 2\r\n"), std::string::npos) << again;
  EXPECT_NE(again.find("* 2 FETCH (UID 3 FLAGS (\\Flagged) MODSEQ ("), std::string::npos) << again;
  EXPECT_EQ(again.find("UID 1 FLAGS"), std::string::npos) << again;  // unchanged since MODSEQ 1
  // A wrong UIDVALIDITY: nothing beyond a plain SELECT.
  std::string other = run("o SELECT INBOX (QRESYNC (1 1))");
  EXPECT_EQ(other.find("VANISHED"), std::string::npos) << other;
  EXPECT_EQ(run("v UID FETCH 1:4 (FLAGS) (CHANGEDSINCE 1 VANISHED)").substr(0, 40),
            "* VANISHED (EARLIER) 2\r\n* 2 FETCH (UID 3");
}

TEST_F(ImapSession, Imap4rev2AnswersSearchWithEsearchAndDropsRecent) {
  deliver("new/1700000001.M1P1Q1.h", "Subject: one\n\n1\n");
  login();
  EXPECT_EQ(run("e ENABLE IMAP4rev2"), "* ENABLED IMAP4rev2\r\ne OK ENABLE completed\r\n");
  std::string select = run("s SELECT INBOX");
  EXPECT_NE(select.find("* 1 EXISTS\r\n"), std::string::npos);
  EXPECT_EQ(select.find("RECENT"), std::string::npos) << select;
  EXPECT_EQ(run("q SEARCH ALL"), "* ESEARCH (TAG \"q\") ALL 1\r\nq OK SEARCH completed\r\n");
  EXPECT_EQ(run("u UID SEARCH SEEN"), "* ESEARCH (TAG \"u\") UID\r\nu OK SEARCH completed\r\n");
}

TEST_F(ImapSession, RenamingInboxMovesItsMessages) {
  deliver("new/1700000001.M1P1Q1.h", "Subject: one\n\n1\n");
  deliver("cur/1700000002.M1P1Q1.h:2,S", "Subject: two\n\n2\n");
  login();
  EXPECT_EQ(run("r RENAME INBOX Old"), "r OK RENAME completed\r\n");
  EXPECT_EQ(run("s STATUS INBOX (MESSAGES)"), "* STATUS \"INBOX\" (MESSAGES 0)\r\ns OK STATUS completed\r\n");
  EXPECT_EQ(run("t STATUS Old (MESSAGES UNSEEN)"),
            "* STATUS \"Old\" (MESSAGES 2 UNSEEN 1)\r\nt OK STATUS completed\r\n");
  EXPECT_EQ(run("u RENAME Old INBOX"), "u NO [CANNOT] nothing can be renamed to INBOX\r\n");
}
