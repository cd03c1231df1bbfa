"""Login security (issue 6) on the IMAP and POP3 side: access rules and IP blocks at
connect ("* BYE" / "-ERR", then close), app passwords and their scope, 2FA making the
main password useless for IMAP/POP3/SMTP, revoked app passwords, expired passwords,
and plaintext login only where listen.<listener>.allow_plaintext_auth says so.

Different clients are played by 127.0.0.x source addresses (the listeners bind
127.0.0.1; Linux routes all of 127/8 to lo). 127.0.0.1 itself is never blocked or
denied: the fixture's readiness probe uses it.
"""

import base64
import hashlib
import hmac
import imaplib
import json
import os
import poplib
import re
import smtplib
import socket
import sqlite3
import ssl
import struct
import time
import urllib.parse

import pytest

from helpers import tls_client_context

ALICE = "alice@example.test"
BOB = "bob@example.test"
ALICE_PW = "Tr0ub4dor&3-horse"
BOB_PW = "correct-Staple-7-battery"
WRONG_PW = "Not-the-Right-0ne"
PLAINTEXT_WARNING = "plaintext login on listener {} (allow_plaintext_auth"


def make(make_postern, **extra):
    # short throttle delays: failed logins here are on purpose
    config = {"security.auth_delay_ms": "20"}
    config.update(extra)
    p = make_postern(config=config, users=(), start=False)
    p.add_user(ALICE, ALICE_PW)
    p.add_user(BOB, BOB_PW)
    p.start()
    return p


def audit(p):
    path = os.path.join(p.dir, "audit.log")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def events(p, event, **fields):
    return [e for e in audit(p) if e.get("event") == event
            and all(e.get(k) == v for k, v in fields.items())]


# ---- clients from a chosen source address ------------------------------------------------

def connect(p, listener, source="127.0.0.1", timeout=10):
    sock = socket.create_connection(("127.0.0.1", p.port(listener)), timeout=timeout,
                                    source_address=(source, 0))
    if listener in ("imaps", "pop3s"):
        sock = tls_client_context(p.tls).wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def greeting(p, listener, source="127.0.0.1"):
    """(first line, closed after it) a client from source gets on listener."""
    sock = connect(p, listener, source)
    try:
        f = sock.makefile("rb")
        line = f.readline(1024).decode("utf-8", "replace").rstrip("\r\n")
        sock.settimeout(3)
        try:
            closed = f.read(1) == b""
        except (socket.timeout, TimeoutError):
            closed = False
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        return line, closed
    finally:
        sock.close()


def admitted(p, listener, source):
    line, _ = greeting(p, listener, source)
    return line.startswith("* OK" if listener.startswith("imap") else "+OK")


class SourceIMAP(imaplib.IMAP4_SSL):
    """imaplib over implicit TLS from a chosen source address."""

    def __init__(self, port, source, ssl_context):
        self._source = source
        super().__init__("127.0.0.1", port, ssl_context=ssl_context, timeout=20)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class SourcePOP3(poplib.POP3_SSL):
    """poplib over implicit TLS from a chosen source address."""

    def __init__(self, port, source, context):
        self._source = source
        super().__init__("127.0.0.1", port, context=context, timeout=20)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)


def imap_close(m):
    """Closes an imaplib client whether or not LOGOUT already did."""
    try:
        m.shutdown()
    except OSError:
        pass


def imap_login(p, user, password, source="127.0.0.1"):
    """(ok, text) of LOGIN on imaps from source."""
    m = SourceIMAP(p.port("imaps"), source, p.client_context())
    try:
        typ, data = m.login(user, password)
        m.logout()
        return typ == "OK", b" ".join(data).decode()
    except imaplib.IMAP4.error as e:
        return False, str(e)
    finally:
        imap_close(m)


def imap_authenticate_plain(p, user, password):
    """(ok, text) of AUTHENTICATE PLAIN on imap after STARTTLS."""
    m = imaplib.IMAP4("127.0.0.1", p.port("imap"), timeout=20)
    try:
        m.starttls(ssl_context=p.client_context())
        typ, data = m.authenticate("PLAIN", lambda _: f"\0{user}\0{password}".encode())
        m.logout()
        return typ == "OK", b" ".join(data).decode()
    except imaplib.IMAP4.error as e:
        return False, str(e)
    finally:
        imap_close(m)


def pop3_login(p, user, password, source="127.0.0.1"):
    """(ok, text) of USER/PASS on pop3s from source."""
    c = SourcePOP3(p.port("pop3s"), source, p.client_context())
    try:
        c.user(user)
        text = c.pass_(password).decode()
        c.quit()
        return True, text
    except poplib.error_proto as e:
        return False, e.args[0].decode() if isinstance(e.args[0], bytes) else str(e)
    finally:
        c.close()


def pop3_auth_plain(p, user, password):
    """(ok, text) of AUTH PLAIN on pop3 after STLS."""
    c = poplib.POP3("127.0.0.1", p.port("pop3"), timeout=20)
    try:
        c.stls(context=p.client_context())
        ir = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        text = c._shortcmd(f"AUTH PLAIN {ir}").decode()
        c.quit()
        return True, text
    except poplib.error_proto as e:
        return False, e.args[0].decode() if isinstance(e.args[0], bytes) else str(e)
    finally:
        c.close()


def smtp_login(p, user, password, source="127.0.0.1"):
    """SMTP AUTH reply code on submission after STARTTLS."""
    with smtplib.SMTP("127.0.0.1", p.port("submission"), local_hostname="client.test",
                      timeout=20, source_address=(source, 0)) as s:
        s.ehlo()
        s.starttls(context=p.client_context())
        s.ehlo()
        try:
            return s.login(user, password)[0]
        except smtplib.SMTPAuthenticationError as e:
            return e.smtp_code


def app_password(p, address, name, scope=None):
    args = ["user", "app-password", "add", address, "--name", name]
    if scope is not None:
        args += ["--scope", scope]
    pw = p.cli(*args).stdout.strip().splitlines()[-1].strip()
    assert len(pw) >= 16 and " " not in pw, pw
    return pw


def totp(secret_b32, t, step=30, digits=6):
    """RFC 6238 (HMAC-SHA1) with RFC 4226's dynamic truncation."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(t) // step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return f"{code:0{digits}d}"


def enable_2fa(p, address):
    res = p.cli("user", "2fa", "enable", address)
    uris = [l for l in res.stdout.splitlines() if l.startswith("otpauth://")]
    assert len(uris) == 1, res.stdout
    secret = urllib.parse.parse_qs(urllib.parse.urlparse(uris[0]).query)["secret"][0]
    # stay inside one 30 s step between computing and checking the code
    left = 30 - time.time() % 30
    if left < 3:
        time.sleep(left + 0.2)
    p.cli("user", "2fa", "verify", address, totp(secret, time.time()))


# ---- access rules and blocks at connect ---------------------------------------------------

def test_access_rules_refuse_imap_and_pop3_at_connect(make_postern):
    p = make(make_postern)
    for listener in ("imap", "imaps", "pop3", "pop3s"):
        assert admitted(p, listener, "127.0.0.9"), listener

    p.cli("access", "deny", "127.0.0.9/32")
    # takes effect for the next connection, no restart; refused, then closed
    for listener in ("imap", "imaps"):
        assert greeting(p, listener, "127.0.0.9") == ("* BYE Access denied", True), listener
    for listener in ("pop3", "pop3s"):
        assert greeting(p, listener, "127.0.0.9") == ("-ERR Access denied", True), listener
    assert admitted(p, "imap", "127.0.0.8") and admitted(p, "pop3", "127.0.0.8")
    assert "ip=127.0.0.9 refused: access rule" in p.log_text()

    # a deny rule for one listener only
    p.cli("access", "deny", "127.0.0.10/32", "--listener", "imap")
    assert greeting(p, "imap", "127.0.0.10") == ("* BYE Access denied", True)
    assert admitted(p, "imaps", "127.0.0.10")
    assert admitted(p, "pop3", "127.0.0.10")

    # an allow rule on a listener admits only its CIDRs there
    p.cli("access", "allow", "127.0.0.11/32", "--listener", "pop3s")
    assert admitted(p, "pop3s", "127.0.0.11")
    assert greeting(p, "pop3s", "127.0.0.12") == ("-ERR Access denied", True)
    assert admitted(p, "pop3", "127.0.0.12") and admitted(p, "imaps", "127.0.0.12")

    p.cli("access", "del", "127.0.0.9/32")
    p.cli("access", "del", "127.0.0.11/32", "--listener", "pop3s")
    assert admitted(p, "imap", "127.0.0.9") and admitted(p, "pop3", "127.0.0.9")
    assert admitted(p, "pop3s", "127.0.0.12")
    # and can log in again
    ok, text = imap_login(p, ALICE, ALICE_PW, "127.0.0.9")
    assert ok, text


def test_blocked_ip_refused_at_connect_other_ip_works(make_postern):
    p = make(make_postern, **{"security.max_failures_per_ip": "3",
                              "security.auth_delay_ms": "20",
                              "security.block_duration": "1h"})
    attacker, friend = "127.0.0.20", "127.0.0.21"
    # a session the attacker opened before it was blocked
    early = SourceIMAP(p.port("imaps"), attacker, p.client_context())
    for _ in range(3):
        ok, text = imap_login(p, ALICE, WRONG_PW, attacker)
        assert not ok and "AUTHENTICATIONFAILED" in text, text

    line, closed = greeting(p, "imap", attacker)
    assert line == "* BYE Temporarily blocked after failed logins" and closed, line
    assert greeting(p, "imaps", attacker)[0] == "* BYE Temporarily blocked after failed logins"
    line, closed = greeting(p, "pop3", attacker)
    assert line == "-ERR [SYS/TEMP] Temporarily blocked after failed logins" and closed, line
    assert "ip=127.0.0.20 refused: ip blocked after failed logins" in p.log_text()
    # its open session cannot log in even with the right password ...
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        early.login(ALICE, ALICE_PW)
    imap_close(early)
    # ... while another address still can, on IMAP and POP3
    assert admitted(p, "imap", friend)
    assert imap_login(p, ALICE, ALICE_PW, friend)[0]
    assert pop3_login(p, ALICE, ALICE_PW, friend)[0]

    fails = events(p, "login", result="fail", ip=attacker)
    assert [e.get("protocol") for e in fails] == ["imap"] * 4, fails
    assert [e.get("mechanism") for e in fails] == ["LOGIN"] * 4, fails
    assert events(p, "ip_blocked", ip=attacker), audit(p)

    p.cli("security", "unblock", attacker)
    assert admitted(p, "imap", attacker) and admitted(p, "pop3s", attacker)
    assert imap_login(p, ALICE, ALICE_PW, attacker)[0]


# ---- app passwords and 2FA ---------------------------------------------------------------

def test_app_password_scope_imap_only(make_postern):
    p = make(make_postern)
    pw = app_password(p, ALICE, "mua", "imap")
    ok, text = imap_login(p, ALICE, pw)
    assert ok, text
    assert imap_authenticate_plain(p, ALICE, pw)[0]
    # out of scope: refused like a wrong password
    ok, text = pop3_login(p, ALICE, pw)
    assert not ok and text == "-ERR [AUTH] Authentication failed", text
    assert not pop3_auth_plain(p, ALICE, pw)[0]
    assert smtp_login(p, ALICE, pw) == 535
    # not bob's
    assert not imap_login(p, BOB, pw)[0]
    # the main password keeps working while 2FA is off
    assert imap_login(p, ALICE, ALICE_PW)[0] and pop3_login(p, ALICE, ALICE_PW)[0]

    used = events(p, "login", result="ok", address=ALICE, protocol="imap",
                  credential="app_password:mua")
    assert {e.get("mechanism") for e in used} == {"LOGIN", "PLAIN"}, used
    scope = events(p, "login", result="fail", address=ALICE, reason="scope")
    assert {e.get("protocol") for e in scope} == {"pop3", "smtp"}, scope
    assert {e.get("mechanism") for e in scope if e.get("protocol") == "pop3"} \
        == {"USER", "PLAIN"}, scope


def test_2fa_main_password_refused_app_password_works(make_postern):
    p = make(make_postern)
    pw = app_password(p, ALICE, "all")   # default scope: smtp, imap, pop3
    enable_2fa(p, ALICE)

    ok, text = imap_login(p, ALICE, ALICE_PW)
    assert not ok and "AUTHENTICATIONFAILED" in text, text
    ok, text = pop3_login(p, ALICE, ALICE_PW)
    assert not ok and text == "-ERR [AUTH] Authentication failed", text
    assert smtp_login(p, ALICE, ALICE_PW) == 535
    assert imap_login(p, ALICE, pw)[0]
    assert pop3_login(p, ALICE, pw)[0]
    assert pop3_auth_plain(p, ALICE, pw)[0]
    assert smtp_login(p, ALICE, pw) == 235
    # bob has no 2FA: his password still works
    assert imap_login(p, BOB, BOB_PW)[0]

    reasons = {e.get("protocol") for e in events(p, "login", result="fail", address=ALICE,
                                                  reason="2fa_requires_app_password")}
    assert reasons == {"imap", "pop3", "smtp"}, audit(p)


def test_revoked_app_password_fails(make_postern):
    p = make(make_postern)
    pw = app_password(p, BOB, "tablet", "imap,pop3")
    assert imap_login(p, BOB, pw)[0] and pop3_login(p, BOB, pw)[0]
    p.cli("user", "app-password", "revoke", BOB, "tablet")
    ok, text = imap_login(p, BOB, pw)
    assert not ok and "AUTHENTICATIONFAILED" in text, text
    assert not pop3_login(p, BOB, pw)[0]
    assert imap_login(p, BOB, BOB_PW)[0]


def test_expired_password_on_imap_and_pop3(make_postern):
    p = make(make_postern, **{"security.password_max_age": "30d"})
    assert imap_login(p, ALICE, ALICE_PW)[0]
    db = sqlite3.connect(os.path.join(p.dir, "postern.db"), timeout=10)
    with db:
        db.execute("UPDATE users SET password_changed = ? WHERE address = ?",
                   (int(time.time()) - 31 * 86400, ALICE))
    db.close()
    ok, text = imap_login(p, ALICE, ALICE_PW)
    assert not ok and "[EXPIRED] Password expired, set a new one" in text, text
    ok, text = pop3_login(p, ALICE, ALICE_PW)
    assert (ok, text) == (False, "-ERR [AUTH] Password expired, set a new one")
    # a wrong password does not learn that
    ok, text = imap_login(p, ALICE, WRONG_PW)
    assert not ok and "EXPIRED" not in text, text

    # it counts towards max_auth_failures (3): the third refusal ends the session
    m = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=p.client_context(),
                          timeout=20)
    try:
        for _ in range(3):
            typ, data = m._simple_command("LOGIN", ALICE, m._quote(ALICE_PW))
            assert typ == "NO" and b"[EXPIRED]" in data[0], (typ, data)
        with pytest.raises(imaplib.IMAP4.abort):
            m.noop()
    finally:
        imap_close(m)


# ---- plaintext login ---------------------------------------------------------------------

def imap_plain_caps(p):
    m = imaplib.IMAP4("127.0.0.1", p.port("imap"), timeout=20)
    return m, set(m.capabilities)


def pop3_capa(c):
    return {k.upper() + (" " + " ".join(v) if v else "") for k, v in c.capa().items()}


def test_plaintext_login_refused_by_default(make_postern):
    p = make(make_postern)
    m, caps = imap_plain_caps(p)
    try:
        assert {"STARTTLS", "LOGINDISABLED"} <= caps and "AUTH=PLAIN" not in caps, caps
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            m.login(ALICE, ALICE_PW)
        typ, data = m._simple_command("AUTHENTICATE", "PLAIN",
                                      base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode())
                                      .decode())
        assert typ == "NO" and b"PRIVACYREQUIRED" in data[0], (typ, data)
    finally:
        imap_close(m)
    c = poplib.POP3("127.0.0.1", p.port("pop3"), timeout=20)
    try:
        capa = pop3_capa(c)
        assert "STLS" in capa and "USER" not in capa and "SASL PLAIN" not in capa, capa
        with pytest.raises(poplib.error_proto, match="STLS"):
            c.user(ALICE)
    finally:
        c.close()
    assert "allow_plaintext_auth" not in p.log_text()


def test_allow_plaintext_auth_on_the_imap_listener(make_postern):
    p = make(make_postern, **{"listen.imap.allow_plaintext_auth": "yes"})
    m, caps = imap_plain_caps(p)
    try:
        assert {"STARTTLS", "AUTH=PLAIN"} <= caps and "LOGINDISABLED" not in caps, caps
        typ, _ = m.login(ALICE, ALICE_PW)
        assert typ == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK", data
        m.logout()
    finally:
        imap_close(m)
    m = imaplib.IMAP4("127.0.0.1", p.port("imap"), timeout=20)
    try:
        typ, _ = m.authenticate("PLAIN", lambda _: f"\0{BOB}\0{BOB_PW}".encode())
        assert typ == "OK"
        m.logout()
    finally:
        imap_close(m)
    log = p.log_text()
    assert log.count(PLAINTEXT_WARNING.format("imap")) == 2, log[-3000:]
    # a login over TLS is not reported as plaintext
    assert imap_authenticate_plain(p, ALICE, ALICE_PW)[0]
    assert p.log_text().count(PLAINTEXT_WARNING.format("imap")) == 2
    # the switch is per listener: pop3 still wants STLS
    c = poplib.POP3("127.0.0.1", p.port("pop3"), timeout=20)
    try:
        assert "USER" not in pop3_capa(c)
        with pytest.raises(poplib.error_proto, match="STLS"):
            c.user(ALICE)
    finally:
        c.close()


def test_allow_plaintext_auth_on_the_pop3_listener(make_postern):
    p = make(make_postern, **{"listen.pop3.allow_plaintext_auth": "yes"})
    c = poplib.POP3("127.0.0.1", p.port("pop3"), timeout=20)
    try:
        capa = pop3_capa(c)
        assert {"STLS", "USER", "SASL PLAIN"} <= capa, capa
        c.user(ALICE)
        assert c.pass_(ALICE_PW).startswith(b"+OK")
        c.quit()
    finally:
        c.close()
    c = poplib.POP3("127.0.0.1", p.port("pop3"), timeout=20)
    try:
        ir = base64.b64encode(f"\0{BOB}\0{BOB_PW}".encode()).decode()
        assert c._shortcmd(f"AUTH PLAIN {ir}").startswith(b"+OK")
        c.quit()
    finally:
        c.close()
    assert p.log_text().count(PLAINTEXT_WARNING.format("pop3")) == 2
    m, caps = imap_plain_caps(p)
    try:
        assert "LOGINDISABLED" in caps, caps
    finally:
        imap_close(m)
