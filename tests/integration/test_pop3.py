"""POP3 (RFC 1939, 2449 CAPA, 2595 STLS, 5034 AUTH PLAIN) on the pop3 and pop3s
listeners: logins, plaintext refusal before TLS, CAPA before/after TLS, STAT/LIST/UIDL
(stable across sessions and restarts), RETR (content equal to the Maildir, dot-stuffing,
a large message streamed), TOP, DELE only at QUIT, RSET, a dropped connection keeps mail,
bad input, STLS injection, and curl's pop3s:// client.

Clients: Python's poplib, raw sockets for what poplib cannot send, curl.
"""

import base64
import os
import poplib
import re
import socket
import ssl
import subprocess
import time

import pytest

from helpers import HOSTNAME, PASSWORDS, make_message, smtp_client, tls_client_context

ALICE = "alice@example.test"
BOB = "bob@example.test"


# ---- helpers ---------------------------------------------------------------------------

def deliver(p, to=ALICE, body="Hello over POP3.\r\n", subject=None):
    """One message over the MX listener; waits until it is in the Maildir. Returns
    (message bytes as sent, token)."""
    msg, token = make_message(to=to, body=body, subject=subject)
    before = len(p.messages(to))
    with smtp_client(p.port("smtp")) as c:
        c.sendmail("sender@remote.test", [to], msg)
    p.wait_messages(to, before + 1)
    return msg, token


def crlf(data):
    """A Maildir file (LF line ends) as POP3 sends it."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def pop3s(p, user=ALICE, password=None, timeout=15):
    c = poplib.POP3_SSL("127.0.0.1", p.port("pop3s"), timeout=timeout,
                        context=tls_client_context(p.tls))
    c.user(user)
    c.pass_(password or PASSWORDS[user])
    return c


def message_files(p, address=ALICE):
    """(name, bytes) of the messages in the Maildir, sorted by name."""
    base = p.maildir(address)
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(base, sub)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if name.startswith("."):
                continue
            with open(os.path.join(d, name), "rb") as f:
                out.append((f"{sub}/{name}", f.read()))
    return out


def by_token(p, token, address=ALICE):
    for name, data in message_files(p, address):
        if token.encode() in data:
            return name, data
    return None, None


class RawPOP3:
    """A line-level POP3 client over a plain or TLS socket."""

    def __init__(self, port, tls_ctx=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_ctx is not None:
            self.sock = tls_ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.f = self.sock.makefile("rb")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def line(self):
        line = self.f.readline(65536)
        if not line:
            raise EOFError("connection closed")
        assert line.endswith(b"\r\n"), f"line without CRLF: {line!r}"
        return line[:-2].decode("utf-8", "replace")

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.line()

    def multiline(self):
        """The lines of a multi-line response after its status line, unstuffed (bytes)."""
        lines = []
        while True:
            line = self.f.readline(65536)
            assert line.endswith(b"\r\n"), f"line without CRLF: {line!r}"
            line = line[:-2]
            if line == b".":
                return lines
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line)

    def starttls(self, ctx):
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.f = self.sock.makefile("rb")

    def closed(self, timeout=5):
        """True when the server closes the connection (EOF) within timeout; lines
        before the EOF are skipped."""
        self.sock.settimeout(timeout)
        try:
            while self.f.readline(65536) != b"":
                pass
            return True
        except (ConnectionError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def raw_pop3s(p):
    c = RawPOP3(p.port("pop3s"), tls_ctx=tls_client_context(p.tls))
    assert c.line().startswith("+OK")
    return c


def raw_login(p, user=ALICE):
    c = raw_pop3s(p)
    assert c.cmd(f"USER {user}").startswith("+OK")
    r = c.cmd(f"PASS {PASSWORDS[user]}")
    assert r.startswith("+OK"), r
    return c


def plain_b64(authcid, password, authzid=""):
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


# ---- login -----------------------------------------------------------------------------

def test_pop3s_user_pass_and_stat(postern):
    deliver(postern)
    deliver(postern)
    c = pop3s(postern)
    try:
        count, size = c.stat()
        files = message_files(postern)
        assert count == 2
        assert size == sum(len(crlf(d)) for _, d in files)
        assert c.noop().startswith(b"+OK")
    finally:
        assert c.quit().startswith(b"+OK")


def test_auth_plain_initial_response_and_continuation(postern):
    deliver(postern)
    c = raw_pop3s(postern)
    try:
        r = c.cmd("AUTH PLAIN " + plain_b64(ALICE, PASSWORDS[ALICE]))
        assert r.startswith("+OK"), r
        assert c.cmd("STAT").startswith("+OK 1 ")
    finally:
        c.close()
    c = raw_pop3s(postern)
    try:
        # RFC 5034 4: "+ " continuation, then the response on its own line.
        assert c.cmd("AUTH PLAIN") == "+ "
        r = c.cmd(plain_b64(ALICE, PASSWORDS[ALICE], authzid=ALICE))
        assert r.startswith("+OK"), r
        assert c.cmd("STAT").startswith("+OK 1 ")
        assert c.cmd("QUIT").startswith("+OK")
    finally:
        c.close()


def test_auth_failures(postern):
    c = raw_pop3s(postern)
    try:
        assert c.cmd("AUTH PLAIN " + plain_b64(ALICE, "wrong")).startswith("-ERR [AUTH]")
        assert c.cmd("AUTH PLAIN") == "+ "
        assert c.cmd("*").startswith("-ERR")          # cancelled
        assert c.cmd("AUTH PLAIN !!notbase64").startswith("-ERR")
        assert c.cmd("AUTH LOGIN").startswith("-ERR")  # not offered
        # Another user as the authorisation identity: no proxy logins.
        r = c.cmd("AUTH PLAIN " + plain_b64(ALICE, PASSWORDS[ALICE], authzid=BOB))
        assert r.startswith("-ERR [AUTH]"), r
        # The session is still usable.
        assert c.cmd("USER " + ALICE).startswith("+OK")
        assert c.cmd("PASS " + PASSWORDS[ALICE]).startswith("+OK")
    finally:
        c.close()


def test_max_auth_failures_closes(postern):
    c = raw_pop3s(postern)
    try:
        for i in range(3):
            assert c.cmd("USER " + ALICE).startswith("+OK")
            r = c.cmd("PASS not-the-password")
            assert r.startswith("-ERR [AUTH]"), r
        # auth.max_failures (3) reached: the server says so and hangs up.
        assert c.line().startswith("-ERR")
        assert c.closed()
    finally:
        c.close()


def test_pass_without_user_and_wrong_state(postern):
    c = raw_pop3s(postern)
    try:
        assert c.cmd("PASS x").startswith("-ERR")
        assert c.cmd("STAT").startswith("-ERR")
        assert c.cmd("RETR 1").startswith("-ERR")
        assert c.cmd("APOP alice 0123456789abcdef0123456789abcdef").startswith("-ERR")
    finally:
        c.close()


# ---- TLS -------------------------------------------------------------------------------

def test_plaintext_refused_before_stls_and_capa(postern):
    deliver(postern)
    c = poplib.POP3("127.0.0.1", postern.port("pop3"), timeout=10)
    try:
        caps = c.capa()
        assert "STLS" in caps
        assert "USER" not in caps and "SASL" not in caps
        for cap in ("TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE"):
            assert cap in caps, caps
        assert caps.get("IMPLEMENTATION") == ["Postern"]
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            c.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            c._shortcmd("AUTH PLAIN " + plain_b64(ALICE, PASSWORDS[ALICE]))
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            c._shortcmd("PASS " + PASSWORDS[ALICE])

        c.stls(context=tls_client_context(postern.tls))
        caps = c.capa()
        assert "STLS" not in caps
        assert "USER" in caps
        assert caps.get("SASL") == ["PLAIN"]
        c.user(ALICE)
        c.pass_(PASSWORDS[ALICE])
        assert c.stat()[0] == 1
        # STLS only once, and never after login.
        with pytest.raises(poplib.error_proto):
            c._shortcmd("STLS")
    finally:
        c.quit()


def test_pop3s_capa_and_no_stls(postern):
    c = raw_pop3s(postern)
    try:
        assert c.cmd("CAPA").startswith("+OK")
        caps = [l.decode() for l in c.multiline()]
        assert "USER" in caps and "SASL PLAIN" in caps and "STLS" not in caps
        assert c.cmd("STLS").startswith("-ERR")
        assert c.cmd("USER " + ALICE).startswith("+OK")
        assert c.cmd("PASS " + PASSWORDS[ALICE]).startswith("+OK")
        assert c.cmd("CAPA").startswith("+OK")
        caps = [l.decode() for l in c.multiline()]
        assert "TOP" in caps and "UIDL" in caps and "USER" not in caps
    finally:
        c.close()


def test_stls_discards_pipelined_plaintext(postern):
    """RFC 2595 / CVE-2011-0411: commands sent after STLS in the same packet are
    discarded, never answered (inside TLS or out)."""
    c = RawPOP3(postern.port("pop3"))
    try:
        assert c.line().startswith("+OK")
        c.send("STLS\r\nUSER " + ALICE + "\r\nCAPA\r\n")
        assert c.line().startswith("+OK")
        # Had the server answered USER/CAPA in plaintext, the handshake would fail.
        c.starttls(tls_client_context(postern.tls))
        # The first reply inside TLS is to what we send now, not to the injected lines.
        assert c.cmd("NOOP").startswith("-ERR")     # NOOP: not valid before login
        assert c.cmd("PASS " + PASSWORDS[ALICE]).startswith("-ERR")  # USER was discarded
    finally:
        c.close()
    assert "discarded" in postern.log_text()


# ---- STAT / LIST / UIDL ----------------------------------------------------------------

def test_list_uidl_stable_across_sessions_and_restart(postern):
    for _ in range(3):
        deliver(postern)
    c = pop3s(postern)
    try:
        resp, lines, _ = c.list()
        assert resp.startswith(b"+OK 3 messages")
        sizes = {int(a): int(b) for a, b in (l.split() for l in lines)}
        assert sorted(sizes) == [1, 2, 3]
        assert c.list(2) == b"+OK 2 %d" % sizes[2]
        _, ulines, _ = c.uidl()
        uidls = dict(l.decode().split() for l in ulines)
        assert len(set(uidls.values())) == 3
        for u in uidls.values():
            assert re.fullmatch(r"[\x21-\x7e]{1,70}", u)
        assert c.uidl(3).decode().split()[2] == uidls["3"]
    finally:
        c.quit()
    # Sizes are the CRLF sizes of the files (RFC822.SIZE).
    assert sorted(sizes.values()) == sorted(len(crlf(d)) for _, d in message_files(postern))

    c = pop3s(postern)
    try:
        _, ulines, _ = c.uidl()
        assert dict(l.decode().split() for l in ulines) == uidls
    finally:
        c.quit()

    postern.restart()
    c = pop3s(postern)
    try:
        _, ulines, _ = c.uidl()
        assert dict(l.decode().split() for l in ulines) == uidls
        # A new message gets a new UIDL; the old ones stay.
        deliver(postern)
    finally:
        c.quit()
    c = pop3s(postern)
    try:
        _, ulines, _ = c.uidl()
        now = dict(l.decode().split() for l in ulines)
        assert {k: now[k] for k in uidls} == uidls
        assert now["4"] not in uidls.values()
    finally:
        c.quit()


def test_pipelining(postern):
    deliver(postern)
    c = raw_login(postern)
    try:
        c.send("STAT\r\nLIST\r\nUIDL 1\r\nNOOP\r\nQUIT\r\n")
        assert c.line().startswith("+OK 1 ")
        assert c.line().startswith("+OK 1 messages")
        assert len(c.multiline()) == 1
        assert c.line().startswith("+OK 1 ")
        assert c.line() == "+OK"
        assert c.line().startswith("+OK")
        assert c.closed()
    finally:
        c.close()


# ---- RETR / TOP ------------------------------------------------------------------------

DOT_BODY = ("first line\r\n"
            ".leading dot\r\n"
            "..two dots\r\n"
            ".\r\n"
            "after a lone dot\r\n"
            " .space dot\r\n"
            "last line\r\n")


def test_retr_content_and_dot_stuffing(postern):
    sent, token = deliver(postern, body=DOT_BODY)
    name, stored = by_token(postern, token)
    c = pop3s(postern)
    try:
        resp, lines, octets = c.retr(1)
        size = int(resp.split()[1])
        assert size == len(crlf(stored))
        got = b"\r\n".join(lines) + b"\r\n"
        assert got == crlf(stored)
        # What was sent over SMTP is there, byte for byte (the server adds trace
        # headers at the top only).
        assert got.endswith(sent.split(b"\r\n\r\n", 1)[1])
        assert sent.split(b"\r\n\r\n", 1)[0] in got
    finally:
        c.quit()

    # On the wire: lines starting with "." are stuffed, a lone "." becomes "..".
    c = raw_login(postern)
    try:
        c.send("RETR 1\r\n")
        assert c.line().startswith("+OK")
        raw = []
        while True:
            line = c.f.readline()
            if line == b".\r\n":
                break
            raw.append(line)
        wire = b"".join(raw)
        assert b"\r\n..leading dot\r\n" in wire
        assert b"\r\n...two dots\r\n" in wire
        assert b"\r\n..\r\nafter a lone dot\r\n" in wire
        assert b"\r\n .space dot\r\n" in wire
        assert b"\n" not in wire.replace(b"\r\n", b"")
        assert c.cmd("NOOP") == "+OK"
    finally:
        c.close()


def test_retr_large_message_streamed(postern):
    line = "." + "x" * 70 + "\r\n"
    body = line * 45000  # ~3.2 MB, every line dot-stuffed
    _, token = deliver(postern, body=body)
    _, stored = by_token(postern, token)
    c = pop3s(postern, timeout=60)
    try:
        resp, lines, octets = c.retr(1)
        got = b"\r\n".join(lines) + b"\r\n"
        assert len(got) == len(crlf(stored))
        assert got == crlf(stored)
        # The session is fine afterwards.
        assert c.stat()[0] == 1
    finally:
        c.quit()


def test_top(postern):
    body = "body 1\r\n.body 2\r\nbody 3\r\nbody 4\r\n"
    _, token = deliver(postern, body=body)
    _, stored = by_token(postern, token)
    head = crlf(stored).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    c = pop3s(postern)
    try:
        _, lines, _ = c.top(1, 0)
        assert lines == head + [b""]
        _, lines, _ = c.top(1, 2)
        assert lines == head + [b"", b"body 1", b".body 2"]
        _, lines, _ = c.top(1, 100)
        assert lines == head + [b"", b"body 1", b".body 2", b"body 3", b"body 4"]
        with pytest.raises(poplib.error_proto):
            c.top(2, 1)
        with pytest.raises(poplib.error_proto):
            c._shortcmd("TOP 1")
    finally:
        c.quit()
    # TOP does not mark the message seen; RETR does (at QUIT).
    name, _ = by_token(postern, token)
    assert not re.search(r":2,[A-Z]*S", name), name
    c = pop3s(postern)
    c.retr(1)
    c.quit()
    name, _ = by_token(postern, token)
    assert re.search(r":2,[A-Z]*S", name), name


# ---- DELE / RSET / QUIT ----------------------------------------------------------------

def test_dele_applied_at_quit(postern):
    tokens = [deliver(postern)[1] for _ in range(3)]
    c = pop3s(postern)
    try:
        _, ulines, _ = c.uidl()
        uidls = dict(l.decode().split() for l in ulines)
        assert all(by_token(postern, t)[1] for t in tokens)
        assert c.dele(2).startswith(b"+OK")
        with pytest.raises(poplib.error_proto, match="message 2 already deleted"):
            c.retr(2)
        with pytest.raises(poplib.error_proto, match="already deleted"):
            c.dele(2)
        with pytest.raises(poplib.error_proto):
            c.list(2)
        assert c.stat()[0] == 2
        resp, lines, _ = c.list()
        assert [int(l.split()[0]) for l in lines] == [1, 3]
        # Not removed before QUIT.
        assert len(message_files(postern)) == 3
        _, m2, _ = c.retr(3)  # numbers do not shift
    finally:
        assert c.quit().startswith(b"+OK")
    left = message_files(postern)
    assert len(left) == 2
    c = pop3s(postern)
    try:
        assert c.stat()[0] == 2
        _, ulines, _ = c.uidl()
        now = [l.decode().split()[1] for l in ulines]
        assert now == [uidls["1"], uidls["3"]]
    finally:
        c.quit()


def test_dele_rset_keeps(postern):
    deliver(postern)
    deliver(postern)
    c = pop3s(postern)
    try:
        c.dele(1)
        c.dele(2)
        assert c.stat()[0] == 0
        resp = c.rset()
        assert resp.startswith(b"+OK")
        assert c.stat()[0] == 2
        assert c.retr(1)[0].startswith(b"+OK")
    finally:
        c.quit()
    assert len(message_files(postern)) == 2


def test_dele_dropped_connection_keeps(postern):
    deliver(postern)
    deliver(postern)
    c = raw_login(postern)
    assert c.cmd("DELE 1").startswith("+OK")
    assert c.cmd("DELE 2").startswith("+OK")
    c.close()  # no QUIT: RFC 1939 6, no UPDATE state
    time.sleep(0.5)
    assert len(message_files(postern)) == 2
    c = pop3s(postern)
    try:
        assert c.stat()[0] == 2
    finally:
        c.quit()


def test_quit_in_authorization(postern):
    c = raw_pop3s(postern)
    assert c.cmd("QUIT").startswith("+OK")
    assert c.closed()
    c.close()


# ---- bad input -------------------------------------------------------------------------

def test_bad_commands_session_lives(postern):
    deliver(postern)
    c = raw_pop3s(postern)
    try:
        assert c.cmd("FOO").startswith("-ERR")
        assert c.cmd("RETRIEVE 1").startswith("-ERR")
        assert c.cmd("").startswith("-ERR")
        assert c.cmd("A" * 300).startswith("-ERR")       # RFC 2449: 255 octets
        assert c.cmd("USER " + ALICE).startswith("+OK")
        assert c.cmd("PASS " + PASSWORDS[ALICE]).startswith("+OK")
        assert c.cmd("RETR x").startswith("-ERR")
        assert c.cmd("RETR 0").startswith("-ERR")
        assert c.cmd("RETR 99").startswith("-ERR")
        assert c.cmd("RETR 4294967296").startswith("-ERR")
        assert c.cmd("LIST 1 2").startswith("-ERR")
        assert c.cmd("USER bob").startswith("-ERR")       # not in TRANSACTION
        assert c.cmd("stat").startswith("+OK 1 ")           # keywords: any case
        assert c.cmd("NOOP") == "+OK"
    finally:
        c.close()


def test_too_many_errors_closes(postern):
    c = raw_pop3s(postern)
    try:
        replies = []
        for _ in range(10):
            replies.append(c.cmd("BOGUS"))
        assert all(r.startswith("-ERR") for r in replies)
        assert c.line().startswith("-ERR")  # "too many errors"
        assert c.closed()
    finally:
        c.close()


def test_overlong_line_without_end_disconnects(postern):
    c = raw_pop3s(postern)
    try:
        try:
            c.send(b"X" * (200 * 1024))
        except (ConnectionError, ssl.SSLError):
            pass
        assert c.closed(timeout=10)
    finally:
        c.close()


# ---- curl ------------------------------------------------------------------------------

def test_curl_pop3s(postern):
    _, token = deliver(postern, body=DOT_BODY)
    _, stored = by_token(postern, token)
    port = postern.port("pop3s")
    base = ["curl", "-sS", "--max-time", "20", "--cacert", postern.tls["ca"],
            "--resolve", f"{HOSTNAME}:{port}:127.0.0.1",
            "--resolve", f"{HOSTNAME}:{postern.port('pop3')}:127.0.0.1",
            "-u", f"{ALICE}:{PASSWORDS[ALICE]}"]
    res = subprocess.run(base + [f"pop3s://{HOSTNAME}:{port}/1"], capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == crlf(stored)
    res = subprocess.run(base + [f"pop3s://{HOSTNAME}:{port}/"], capture_output=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().split() == ["1", str(len(crlf(stored)))]
    # curl over pop3 with STLS required.
    res = subprocess.run(base + ["--ssl-reqd", f"pop3://{HOSTNAME}:{postern.port('pop3')}/1"],
                         capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == crlf(stored)


# ---- concurrency, timeouts -------------------------------------------------------------

def test_two_sessions_snapshot_and_removed_message(postern):
    """Each session sees the snapshot taken at its login (RFC 1939 5); a message removed
    by another session's QUIT cannot be retrieved, and the session lives on."""
    deliver(postern)
    deliver(postern)
    a = pop3s(postern)
    b = pop3s(postern)
    try:
        assert a.dele(1).startswith(b"+OK")
        assert a.quit().startswith(b"+OK")
        deliver(postern)                      # arrives during b's session
        assert b.stat()[0] == 2               # b's snapshot: unchanged
        with pytest.raises(poplib.error_proto, match="removed"):
            b.retr(1)
        assert b.retr(2)[0].startswith(b"+OK")
        assert b.dele(2).startswith(b"+OK")
    finally:
        assert b.quit().startswith(b"+OK")
    assert len(message_files(postern)) == 1
    c = pop3s(postern)
    try:
        assert c.stat()[0] == 1               # the one delivered meanwhile
    finally:
        c.quit()


@pytest.mark.time_limit(60)
def test_login_timeout_closes_silently(make_postern):
    p = make_postern(config={"imap.login_timeout": "5"})
    c = raw_pop3s(p)
    try:
        start = time.monotonic()
        c.sock.settimeout(15)
        # RFC 1939 3: the autologout timer closes without a response.
        assert c.f.readline() == b""
        assert 4 <= time.monotonic() - start < 14
    finally:
        c.close()
