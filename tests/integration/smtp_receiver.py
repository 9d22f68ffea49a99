"""A scriptable SMTP server on loopback: the remote peer of tern's outbound relay in the tests.

    with SmtpReceiver(starttls=(cert.chainfile, cert.keyfile)) as mx:
        mx.rules.append(("RCPT TO:<bad@", "550 5.1.1 no such user", None))
        ...                                   # route tern's relay to 127.0.0.1:mx.port
        [msg] = mx.wait_for(1)
        assert msg.tls and msg.rcpt_to == ["good@remote.test"]

It behaves like a strict but ordinary MTA: EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN, MAIL, RCPT,
DATA, RSET, NOOP and QUIT with Postfix-like replies; MAIL and RCPT parameters that were not
advertised are refused (555), as is a non-ASCII address without SMTPUTF8 (553); MAIL needs a
HELO/EHLO first (also again after STARTTLS). Replies are written when the server runs out of
input, as real servers do, so a pipelined group is answered in one packet.

Scripting: `rules` is a list of (command_prefix, reply, times), checked in order against each
command line (case-insensitive prefix match); the first rule that matches answers instead:
  * a 4xx/5xx reply refuses the command, which then has no effect; a 421 reply also closes the
    connection, as does any reply to QUIT;
  * a 2xx/3xx reply lets the command run as usual and replaces only the reply text;
  * an empty reply closes the connection without answering (earlier replies are still sent).
`times` counts down and the rule is removed when it reaches 0; None keeps it forever. Two pseudo
commands match only a rule with exactly that name: "CONNECT" gives the greeting (a 4xx greeting
closes the connection; after a 5xx one every command but QUIT gets 503) and "DATA-END" the reply
after the final dot (a 4xx/5xx reply puts the message in `rejected` instead of `messages`).
A reply may have several lines separated by "\\n"; the code of the first line is used on all.

Everything is recorded: `messages` (accepted, as Received), `rejected`, `commands` (every command
line without CRLF; not AUTH responses nor message data), `connections`, and, for diagnosis,
`tls_errors` (failed handshakes), `protocol_errors` (client mistakes such as a command pipelined
after one that must end a group, a bare LF in a command line, or data sent after STARTTLS before
the handshake) and `errors` (tracebacks of the server itself, which should stay empty).
"""
from __future__ import annotations

import base64
import binascii
import email
import email.message
import email.policy
import itertools
import re
import socket
import ssl
import threading
import time
import traceback
from dataclasses import dataclass

DEFAULT_TIMEOUT = 10.0
SESSION_TIMEOUT = 60.0
MAX_LINE = 1 << 20
PSEUDO_COMMANDS = ("CONNECT", "DATA-END")
# Commands after which a client must wait for the reply (RFC 2920 section 3.1, RFC 3207).
GROUP_ENDERS = frozenset({"EHLO", "HELO", "DATA", "STARTTLS", "QUIT", "NOOP", "VRFY", "EXPN"})

Rule = tuple  # (command_prefix: str, reply: str, times: int | None)

_CODE_RE = re.compile(r"^\d{3}(?:[ -]|$)")
_tls_local = threading.local()  # the SNI seen by the handshake running in this thread


@dataclass
class Received:
    """One message as the receiver got it. Parameters are keyword (upper case) -> raw value, or
    None for a keyword without a value (SMTPUTF8); xtext values (ENVID, ORCPT) are not decoded."""
    mail_from: str
    mail_params: dict
    rcpt_to: list[str]
    rcpt_params: list[dict]
    data: bytes  # as received (CRLF line ends unless the client sent bare LFs), dot-unstuffed
    tls: bool
    tls_version: str | None
    sni: str | None
    auth_user: str | None
    helo: str
    bare_lf: bool = False  # some line ended in LF without CR
    bare_cr: bool = False  # some line held a CR not followed by LF

    def message(self) -> email.message.EmailMessage:
        """The data parsed with the standard library's email package."""
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _Closed(Exception):
    """The connection is finished (peer closed, line too long, or the script said so)."""


def format_reply(text: str) -> bytes:
    """'250 a\\nb' -> b'250-a\\r\\n250 b\\r\\n'. Lines may carry their own code and separator,
    which are replaced by the first line's code and the right separator."""
    lines = text.replace("\r\n", "\n").split("\n")
    if not _CODE_RE.match(lines[0]):
        raise ValueError(f"an SMTP reply must start with a 3-digit code: {text!r}")
    code = lines[0][:3]
    out = []
    for i, line in enumerate(lines):
        if _CODE_RE.match(line):
            line = line[4:]
        out.append(f"{code}{' ' if i == len(lines) - 1 else '-'}{line}")
    return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


def _is_positive(reply: str) -> bool:
    return reply[:1] in ("2", "3")


def _parse_path(arg: str, keyword: str) -> tuple[str, dict] | None:
    """'FROM:<a@b> SIZE=10 SMTPUTF8' -> ('a@b', {'SIZE': '10', 'SMTPUTF8': None}); None when
    malformed. Spaces after the colon are tolerated; a source route is dropped."""
    if arg[:len(keyword)].upper() != keyword:
        return None
    rest = arg[len(keyword):].lstrip(" ")
    if not rest.startswith("<"):
        return None
    i, quoted = 1, False
    while i < len(rest):
        c = rest[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            break
        i += 1
    else:
        return None
    address = rest[1:i]
    if address.startswith("@") and ":" in address:
        address = address.split(":", 1)[1]
    tail = rest[i + 1:]
    if tail and not tail.startswith(" "):
        return None
    params: dict = {}
    for word in tail.split():
        key, eq, value = word.partition("=")
        if not key:
            return None
        params[key.upper()] = value if eq else None
    return address, params


def _sni_callback(sslobj, server_name, context):
    _tls_local.sni = server_name
    return None


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 or later) that records the client's SNI name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    ctx.sni_callback = _sni_callback
    return ctx


class _Session:
    """One SMTP connection, run in its own thread."""

    def __init__(self, server: SmtpReceiver, sock: socket.socket, peer):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closing = False
        self.closed = False
        self.rejecting = False  # after a 5xx greeting
        self.tls = False
        self.tls_version: str | None = None
        self.sni: str | None = None
        self.helo: str | None = None
        self.esmtp = False
        self.auth_user: str | None = None
        self._after = None
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.mail_from: str | None = None
        self.mail_params: dict = {}
        self.rcpt_to: list[str] = []
        self.rcpt_params: list[dict] = []

    # -- I/O ------------------------------------------------------------------------------------

    def reply(self, text: str) -> None:
        self.outbuf += format_reply(text)
        if text.startswith("421"):
            self.closing = True

    def flush(self) -> None:
        if self.outbuf:
            data = bytes(self.outbuf)
            self.outbuf.clear()
            self.sock.sendall(data)

    def readline(self) -> bytes:
        """The next line including its LF; replies pending are sent before waiting for input."""
        while True:
            i = self.inbuf.find(b"\n")
            if i >= 0:
                line = bytes(self.inbuf[:i + 1])
                del self.inbuf[:i + 1]
                return line
            if len(self.inbuf) > MAX_LINE:
                raise _Closed("line too long")
            self.flush()
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed("closed by the client")
            self.inbuf += chunk

    def close(self) -> None:
        with self.server._cond:  # so that stop() never shuts down a descriptor number reused since
            self.closed = True
            try:
                self.sock.close()
            except OSError:
                pass

    # -- the session ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.sock.settimeout(SESSION_TIMEOUT)
            if self.greet():
                while not self.closing:
                    self.handle(self.readline())
            self.flush()
        except (_Closed, OSError):  # includes ssl.SSLError and socket timeouts
            pass
        except Exception:
            self.server._note("errors", f"session {self.peer}:\n{traceback.format_exc()}")
        finally:
            self.close()
            self.server._session_done(self)

    def greet(self) -> bool:
        srv = self.server
        scripted = srv._match_rule("CONNECT", pseudo=True)
        text = scripted if scripted is not None else srv.greeting.format(hostname=srv.hostname)
        if text == "":
            return False
        self.reply(text)
        if text.startswith("4"):
            self.flush()
            return False
        self.rejecting = text.startswith("5")
        return True

    def handle(self, raw: bytes) -> None:
        srv = self.server
        text = raw.decode("utf-8", "surrogateescape")
        if text.endswith("\r\n"):
            line = text[:-2]
        else:
            line = text[:-1]
            srv._note("protocol_errors", f"bare LF after command {line!r}")
        srv._record_command(line)
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        if self.inbuf and (verb in GROUP_ENDERS or not (srv.pipelining and self.esmtp)):
            srv._note("protocol_errors", f"command pipelined after {line!r}: {bytes(self.inbuf[:200])!r}")
        if self.rejecting:
            if verb == "QUIT":
                self.reply("221 2.0.0 Bye")
                self.closing = True
            else:
                self.reply("503 5.5.0 Error: no SMTP service here")
            return
        scripted = srv._match_rule(line)
        if scripted == "":
            self.flush()
            self.closing = True
            return
        if scripted is not None and not _is_positive(scripted):
            self.reply(scripted)
        else:
            handler = getattr(self, "cmd_" + verb.lower(), None) if verb.isalpha() else None
            self._after = None
            normal = handler(arg) if handler else "500 5.5.2 Error: command not recognized"
            self.reply(scripted if scripted is not None else normal)
            after, self._after = self._after, None
            if after:
                after()
        if verb == "QUIT":
            self.closing = True

    # -- commands (each returns its reply; _after runs once the reply is queued) ----------------

    def cmd_ehlo(self, arg: str) -> str:
        srv = self.server
        if not arg.strip():
            return "501 5.5.4 Syntax: EHLO hostname"
        self._reset_transaction()
        self.helo, self.esmtp = arg.strip(), True
        lines = [f"250 {srv.hostname}"]
        if srv.pipelining:
            lines.append("PIPELINING")
        lines.append(f"SIZE {srv.size}" if srv.size is not None else "SIZE")
        if srv.eightbitmime:
            lines.append("8BITMIME")
        if srv.smtputf8:
            lines.append("SMTPUTF8")
        if srv.dsn:
            lines.append("DSN")
        lines.append("ENHANCEDSTATUSCODES")
        if srv.ssl_context is not None and not self.tls:
            lines.append("STARTTLS")
        if self._auth_allowed():
            lines.append("AUTH PLAIN LOGIN")
        return "\n".join(lines)

    def cmd_helo(self, arg: str) -> str:
        if not arg.strip():
            return "501 5.5.4 Syntax: HELO hostname"
        self._reset_transaction()
        self.helo, self.esmtp = arg.strip(), False
        return f"250 {self.server.hostname}"

    def cmd_starttls(self, arg: str) -> str:
        if self.tls:
            return "554 5.5.1 Error: TLS already active"
        if self.server.ssl_context is None:
            return "502 5.5.1 Error: command not implemented"
        if arg.strip():
            return "501 5.5.4 Syntax: STARTTLS"
        self._after = self._start_tls
        return "220 2.0.0 Ready to start TLS"

    def _start_tls(self) -> None:
        srv = self.server
        self.flush()
        if self.inbuf:
            srv._note("protocol_errors", f"data sent after STARTTLS before the handshake, discarded: "
                                         f"{bytes(self.inbuf[:200])!r}")
            self.inbuf.clear()
        _tls_local.sni = None
        with srv._cond:  # stop() must always find the live socket object in self.sock
            self.sock = srv.ssl_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        try:
            self.sock.do_handshake()
        except (ssl.SSLError, OSError) as e:
            srv._note("tls_errors", f"{self.peer}: {e}")
            raise _Closed("TLS handshake failed") from e
        self.tls, self.tls_version, self.sni = True, self.sock.version(), getattr(_tls_local, "sni", None)
        self.helo, self.esmtp, self.auth_user = None, False, None
        self._reset_transaction()

    def _auth_allowed(self) -> bool:
        srv = self.server
        return bool(srv.auth) and (srv.ssl_context is None or self.tls) and self.auth_user is None

    def _challenge(self, prompt: str) -> str | None:
        """Sends "334 prompt" and returns the client's response line (None for "*")."""
        self.reply("334 " + prompt)
        line = self.readline().decode("utf-8", "surrogateescape").rstrip("\r\n")
        return None if line == "*" else line

    def cmd_auth(self, arg: str) -> str:
        srv = self.server
        if not srv.auth:
            return "503 5.5.1 Error: authentication not enabled"
        if srv.ssl_context is not None and not self.tls:
            return "538 5.7.11 Encryption required for requested authentication mechanism"
        if not self.esmtp:
            return "503 5.5.1 Error: send EHLO first"
        if self.auth_user is not None:
            return "503 5.5.1 Error: already authenticated"
        if self.mail_from is not None:
            return "503 5.5.1 Error: MAIL transaction in progress"
        mech, _, initial = arg.strip().partition(" ")
        mech, initial = mech.upper(), initial.strip()

        def decode(value: str | None) -> str:
            if value is None:
                raise _Aborted()
            return base64.b64decode("" if value == "=" else value, validate=True).decode("utf-8", "surrogateescape")

        try:
            if mech == "PLAIN":
                parts = decode(initial or self._challenge("")).split("\0")
                if len(parts) != 3:
                    return "535 5.7.8 Authentication credentials invalid"
                authzid, user, password = parts
            elif mech == "LOGIN":
                authzid = ""
                user = decode(initial or self._challenge("VXNlcm5hbWU6"))
                password = decode(self._challenge("UGFzc3dvcmQ6"))
            else:
                return "504 5.5.4 Unrecognized authentication type"
        except _Aborted:
            return "501 5.7.0 Authentication aborted"
        except (binascii.Error, ValueError):
            return "501 5.5.2 Cannot decode response"
        if srv.auth.get(user) == password and authzid in ("", user):
            self.auth_user = user
            return "235 2.7.0 Authentication successful"
        return "535 5.7.8 Authentication credentials invalid"

    def cmd_mail(self, arg: str) -> str:
        srv = self.server
        if self.helo is None:
            return "503 5.5.1 Error: send HELO/EHLO first"
        if srv.require_tls and not self.tls:
            return "530 5.7.0 Must issue a STARTTLS command first"
        if srv.auth and self.auth_user is None:
            return "530 5.7.0 Authentication required"
        if self.mail_from is not None:
            return "503 5.5.1 Error: nested MAIL command"
        parsed = _parse_path(arg, "FROM:")
        if parsed is None:
            return "501 5.5.4 Syntax: MAIL FROM:<address>"
        address, params = parsed
        if params and not self.esmtp:
            return "555 5.5.4 Unsupported option: parameters need EHLO"
        for key, value in params.items():
            if key == "SIZE":
                if not (value or "").isdigit():
                    return "501 5.5.4 Bad SIZE parameter"
                if srv.size is not None and int(value) > srv.size:
                    return "552 5.3.4 Message size exceeds fixed limit"
            elif key == "BODY":
                if (value or "").upper() not in (("7BIT", "8BITMIME") if srv.eightbitmime else ("7BIT",)):
                    return f"555 5.5.4 Unsupported option: BODY={value}"
            elif key == "SMTPUTF8" and srv.smtputf8:
                if value is not None:
                    return "501 5.5.4 Bad SMTPUTF8 parameter"
            elif key == "RET" and srv.dsn:
                if (value or "").upper() not in ("FULL", "HDRS"):
                    return "501 5.5.4 Bad RET parameter"
            elif key == "ENVID" and srv.dsn:
                if not value:
                    return "501 5.5.4 Bad ENVID parameter"
            elif key == "AUTH" and srv.auth:
                pass
            else:
                return f"555 5.5.4 Unsupported option: {key}"
        if not address.isascii() and "SMTPUTF8" not in params:
            return "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
        self.mail_from, self.mail_params = address, params
        return "250 2.1.0 Ok"

    def cmd_rcpt(self, arg: str) -> str:
        srv = self.server
        if self.mail_from is None:
            return "503 5.5.1 Error: need MAIL command"
        parsed = _parse_path(arg, "TO:")
        if parsed is None:
            return "501 5.5.4 Syntax: RCPT TO:<address>"
        address, params = parsed
        if not address:
            return "501 5.1.3 Bad recipient address syntax"
        for key, value in params.items():
            if key == "NOTIFY" and srv.dsn:
                words = (value or "").upper().split(",")
                if not (words == ["NEVER"] or (words and set(words) <= {"SUCCESS", "FAILURE", "DELAY"})):
                    return "501 5.5.4 Bad NOTIFY parameter"
            elif key == "ORCPT" and srv.dsn:
                if ";" not in (value or ""):
                    return "501 5.5.4 Bad ORCPT parameter"
            else:
                return f"555 5.5.4 Unsupported option: {key}"
        if not address.isascii() and "SMTPUTF8" not in self.mail_params:
            return "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
        self.rcpt_to.append(address)
        self.rcpt_params.append(params)
        return "250 2.1.5 Ok"

    def cmd_data(self, arg: str) -> str:
        if arg.strip():
            return "501 5.5.4 Syntax: DATA"
        if self.mail_from is None:
            return "503 5.5.1 Error: need RCPT command"
        if not self.rcpt_to:
            return "554 5.5.1 Error: no valid recipients"
        self._after = self._read_data
        return "354 End data with <CR><LF>.<CR><LF>"

    def _read_data(self) -> None:
        srv = self.server
        lines, bare_lf, bare_cr = [], False, False
        while True:
            line = self.readline()
            if line == b".\r\n":
                break
            crlf = line.endswith(b"\r\n")
            bare_lf |= not crlf
            bare_cr |= b"\r" in (line[:-2] if crlf else line[:-1])
            lines.append(line[1:] if line.startswith(b".") else line)
        msg = Received(
            mail_from=self.mail_from, mail_params=self.mail_params, rcpt_to=self.rcpt_to,
            rcpt_params=self.rcpt_params, data=b"".join(lines), tls=self.tls,
            tls_version=self.tls_version, sni=self.sni, auth_user=self.auth_user, helo=self.helo,
            bare_lf=bare_lf, bare_cr=bare_cr)
        self._reset_transaction()
        scripted = srv._match_rule("DATA-END", pseudo=True)
        if scripted is not None and not _is_positive(scripted):
            srv._note("rejected", msg)
            if scripted == "":
                self.flush()
                self.closing = True
            else:
                self.reply(scripted)
        elif srv.size is not None and len(msg.data) > srv.size:
            srv._note("rejected", msg)
            self.reply("552 5.3.4 Message size exceeds fixed limit")
        else:
            queue_id = srv._record_message(msg)
            self.reply(scripted if scripted is not None else f"250 2.0.0 Ok: queued as {queue_id}")

    def cmd_rset(self, arg: str) -> str:
        if arg.strip():
            return "501 5.5.4 Syntax: RSET"
        self._reset_transaction()
        return "250 2.0.0 Ok"

    def cmd_noop(self, arg: str) -> str:
        return "250 2.0.0 Ok"

    def cmd_quit(self, arg: str) -> str:
        return "221 2.0.0 Bye"


class _Aborted(Exception):
    """The client answered "*" to an AUTH challenge."""


class SmtpReceiver:
    """The server; see the module docstring. `start()` (or `with`) binds; `port` is then the
    port actually bound. `ssl_context` (None without starttls) may be adjusted before clients
    connect, e.g. its maximum_version."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, hostname: str = "mx.test",
                 starttls: tuple[str, str] | None = None, require_tls: bool = False,
                 auth: dict[str, str] | None = None, pipelining: bool = True, dsn: bool = True,
                 eightbitmime: bool = True, smtputf8: bool = True, size: int | None = None,
                 greeting: str = "220 {hostname} ESMTP test"):
        if require_tls and starttls is None:
            raise ValueError("require_tls needs starttls=(certfile, keyfile)")
        self.host = host
        self.port = port
        self.hostname = hostname
        self.ssl_context: ssl.SSLContext | None = server_context(*starttls) if starttls else None
        self.require_tls = require_tls
        self.auth = dict(auth) if auth else None
        self.pipelining = pipelining
        self.dsn = dsn
        self.eightbitmime = eightbitmime
        self.smtputf8 = smtputf8
        self.size = size
        self.greeting = greeting
        self.rules: list[Rule] = []
        self.messages: list[Received] = []
        self.rejected: list[Received] = []
        self.commands: list[str] = []
        self.connections = 0
        self.tls_errors: list[str] = []
        self.protocol_errors: list[str] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._queue_ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sessions: dict[_Session, threading.Thread] = {}

    def __enter__(self) -> SmtpReceiver:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SmtpReceiver {self.hostname} on {self.host}:{self.port}>"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> SmtpReceiver:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.2)
        self._listener = sock
        self.port = sock.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name=f"smtp-receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.05)
                continue
            conn.settimeout(SESSION_TIMEOUT)
            session = _Session(self, conn, peer)
            thread = threading.Thread(target=session.run, name=f"smtp-receiver-{self.port}-{peer[1]}", daemon=True)
            with self._cond:
                if self._stopping.is_set():
                    conn.close()
                    return
                self.connections += 1
                self._sessions[session] = thread
                self._cond.notify_all()
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops accepting, ends every open session and waits for the threads (idempotent)."""
        self._stopping.set()
        if self._listener is not None:
            for end in (lambda: self._listener.shutdown(socket.SHUT_RDWR), self._listener.close):
                try:
                    end()  # shutdown wakes the accept() at once on Linux
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            sessions = dict(self._sessions)
            for session in sessions:
                if not session.closed:
                    _shutdown(session.sock)
        deadline = time.monotonic() + timeout
        for thread in sessions.values():
            if thread.ident is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _session_done(self, session: _Session) -> None:
        with self._cond:
            self._sessions.pop(session, None)

    # -- recording and scripting ----------------------------------------------------------------

    def _match_rule(self, line: str, pseudo: bool = False) -> str | None:
        """The reply of the first rule matching the command line (counting it down), or None."""
        with self._cond:
            rules = self.rules
            for i, rule in enumerate(rules):
                prefix, reply, times = (tuple(rule) + (None,))[:3]
                if times is not None and times <= 0:
                    continue
                name = prefix.upper()
                if pseudo:
                    if name != line:
                        continue
                elif name in PSEUDO_COMMANDS or not line.upper().startswith(name):
                    continue
                if times is not None:
                    if times <= 1:
                        del rules[i]
                    else:
                        rules[i] = (prefix, reply, times - 1)
                return reply
        return None

    def _record_command(self, line: str) -> None:
        with self._cond:
            self.commands.append(line)

    def _record_message(self, msg: Received) -> str:
        with self._cond:
            self.messages.append(msg)
            queue_id = f"R{next(self._queue_ids):05d}"
            self._cond.notify_all()
        return queue_id

    def _note(self, attribute: str, item) -> None:
        with self._cond:
            getattr(self, attribute).append(item)
            self._cond.notify_all()

    # -- waiting --------------------------------------------------------------------------------

    def wait_for(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[Received]:
        """Blocks until at least `count` messages were accepted; returns (a copy of) them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self!r}: expected {count} message(s) within {timeout:g}s, got "
                        f"{len(self.messages)} ({len(self.rejected)} rejected) over "
                        f"{self.connections} connection(s); last commands: {self.commands[-15:]}; "
                        f"TLS errors: {self.tls_errors}; protocol errors: {self.protocol_errors}; "
                        f"server errors: {self.errors}")
                self._cond.wait(left)
            return list(self.messages)

    def wait_connections(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Blocks until at least `count` connections were accepted; returns the count."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.connections < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self!r}: expected {count} connection(s) within "
                                         f"{timeout:g}s, got {self.connections}")
                self._cond.wait(left)
            return self.connections


def _shutdown(sock: socket.socket) -> None:
    """Wakes a thread blocked reading `sock` (plain or TLS) by shutting the connection down
    through a duplicate descriptor, leaving the socket object itself to its thread."""
    try:
        fd = sock.fileno()
        if fd < 0:
            return
        dup = socket.socket(fileno=socket.dup(fd))
    except OSError:
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        dup.close()
