"""Login security (issue 6) on the SMTP side: IP access rules at connect, the throttle
(slower replies, then an IP block that survives a restart), account locks (soft and
hard), per-account allow-from, password expiry, plaintext AUTH only where allowed, and
the audit log with `postern security log`.

Different clients are played by 127.0.0.x source addresses (the listeners bind
127.0.0.1; Linux routes all of 127/8 to lo). 127.0.0.1 itself is never blocked or
denied: the fixture's readiness probe uses it.
"""

import calendar
import datetime
import json
import os
import re
import smtplib
import socket
import sqlite3
import ssl
import time

import pytest

from helpers import tls_client_context

ALICE = "alice@example.test"
BOB = "bob@example.test"
ALICE_PW = "Tr0ub4dor&3-horse"
BOB_PW = "correct-Staple-7-battery"
WRONG_PW = "Not-the-Right-0ne"

FAST = {
    "security.max_failures_per_ip": "4",
    "security.auth_delay_ms": "50",
    "security.block_duration": "1h",
}


def make(make_postern, **extra):
    config = dict(FAST)
    config.update(extra)
    p = make_postern(config=config, users=(), start=False)
    p.add_user(ALICE, ALICE_PW)
    p.add_user(BOB, BOB_PW)
    p.start()
    return p


def greeting(p, listener="smtp", source="127.0.0.1"):
    """(code, text, closed) of the first reply a client from source gets."""
    sock = socket.create_connection(("127.0.0.1", p.port(listener)), timeout=10,
                                    source_address=(source, 0))
    try:
        if listener == "submissions":
            sock = tls_client_context(p.tls).wrap_socket(sock, server_hostname="127.0.0.1")
        f = sock.makefile("rb")
        line = f.readline(1024).decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("220"):
            return 220, line[4:], False
        sock.settimeout(3)
        try:
            rest = f.read(1)
            closed = rest == b""
        except (socket.timeout, TimeoutError):
            closed = False
        except (ConnectionResetError, ssl.SSLError):
            closed = True
        return int(line[:3]), line[4:], closed
    finally:
        sock.close()


def session(p, source="127.0.0.1"):
    """An smtplib client on submission from source, after STARTTLS and EHLO."""
    s = smtplib.SMTP("127.0.0.1", p.port("submission"), local_hostname="client.test",
                     timeout=20, source_address=(source, 0))
    s.ehlo()
    s.starttls(context=p.client_context())
    s.ehlo()
    return s


def auth(s, user, password):
    """One AUTH PLAIN attempt (smtplib's login() would retry with LOGIN); (code, text,
    seconds the reply took)."""
    s.user, s.password = user, password
    t0 = time.monotonic()
    try:
        code, resp = s.auth("PLAIN", s.auth_plain, initial_response_ok=True)
    except smtplib.SMTPAuthenticationError as e:
        code, resp = e.smtp_code, e.smtp_error
    return code, resp.decode("utf-8", "replace"), time.monotonic() - t0


def login(p, user, password, source="127.0.0.1"):
    s = session(p, source)
    try:
        return auth(s, user, password)
    finally:
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass


def audit(p):
    path = os.path.join(p.dir, "audit.log")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def events(p, event, **fields):
    return [e for e in audit(p) if e.get("event") == event
            and all(e.get(k) == v for k, v in fields.items())]


# ---- access rules at connect ---------------------------------------------------------

def test_access_deny_and_allow_rules(make_postern):
    p = make(make_postern)
    assert greeting(p, "smtp", "127.0.0.5")[0] == 220

    res = p.cli("access", "deny", "127.0.0.5/32")
    assert "deny" in res.stdout
    # takes effect for the next connection, no restart
    code, text, closed = greeting(p, "smtp", "127.0.0.5")
    assert (code, text) == (554, "5.7.1 Access denied") and closed
    assert greeting(p, "submission", "127.0.0.5")[0] == 554
    assert greeting(p, "submissions", "127.0.0.5")[0] == 554
    assert greeting(p, "smtp", "127.0.0.6")[0] == 220

    # a rule for one listener only
    p.cli("access", "deny", "127.0.0.7", "--listener", "submission")
    assert greeting(p, "submission", "127.0.0.7")[0] == 554
    assert greeting(p, "smtp", "127.0.0.7")[0] == 220

    # an allow rule on a listener admits only its CIDRs there
    p.cli("access", "allow", "127.0.0.8/32", "--listener", "submissions")
    assert greeting(p, "submissions", "127.0.0.8")[0] == 220
    assert greeting(p, "submissions", "127.0.0.9")[0] == 554
    assert greeting(p, "submission", "127.0.0.9")[0] == 220

    listed = p.cli("access", "list").stdout
    assert re.search(r"^deny\s+127\.0\.0\.5(/32)?\s+all\b", listed, re.M), listed
    assert re.search(r"^deny\s+127\.0\.0\.7\S*\s+submission\b", listed, re.M), listed
    assert re.search(r"^allow\s+127\.0\.0\.8(/32)?\s+submissions\b", listed, re.M), listed

    p.cli("access", "del", "127.0.0.5/32")
    p.cli("access", "del", "127.0.0.8/32", "--listener", "submissions")
    assert greeting(p, "smtp", "127.0.0.5")[0] == 220
    assert greeting(p, "submissions", "127.0.0.9")[0] == 220
    assert "127.0.0.5 " not in p.cli("access", "list").stdout

    # bad input is refused with a reason
    bad = p.cli("access", "deny", "300.1.2.3/8", check=False)
    assert bad.returncode == 1 and bad.stderr.strip(), bad
    bad = p.cli("access", "deny", "127.0.0.0/8", "--listener", "bogus", check=False)
    assert bad.returncode == 1 and "bogus" in bad.stderr, bad
    bad = p.cli("access", "del", "192.0.2.0/24", check=False)
    assert bad.returncode == 1, bad

    added = events(p, "access_rule_added")
    assert {"action": "deny", "cidr": "127.0.0.5/32", "listener": "all"}.items() \
        <= added[0].items(), added
    removed = events(p, "access_rule_removed", cidr="127.0.0.8/32")
    assert removed and removed[0]["listener"] == "submissions", removed


# ---- throttle and IP blocks ---------------------------------------------------------------

def test_brute_force_slowed_then_blocked_and_survives_restart(make_postern):
    p = make(make_postern)
    attacker, friend = "127.0.0.2", "127.0.0.3"

    # a session the attacker opened before it was blocked
    early = session(p, attacker)

    times = []
    for _ in range(4):
        code, text, took = login(p, ALICE, WRONG_PW, attacker)
        assert code == 535 and "5.7.8" in text, (code, text)
        times.append(took)
    # delays 50, 100, 200, 400 ms on top of the same argon2id check
    assert times[3] > times[0] + 0.2, times
    assert times[2] > times[0], times

    # the fourth failure blocked the IP: refused at connect
    code, text, closed = greeting(p, "submission", attacker)
    assert code == 421 and "blocked" in text and closed, (code, text)
    assert greeting(p, "smtp", attacker)[0] == 421
    # its open session cannot log in even with the right password
    code, _, _ = auth(early, ALICE, ALICE_PW)
    assert code == 535
    early.close()
    # ... while the account's owner elsewhere still can
    assert login(p, ALICE, ALICE_PW, friend)[0] == 235

    blocked = [e for e in events(p, "ip_blocked") if e.get("ip") == attacker]
    assert len(blocked) == 1, audit(p)
    fails = events(p, "login", result="fail", ip=attacker)
    assert [e["reason"] for e in fails] == ["wrong_password"] * 4 + ["ip_blocked"], fails
    assert "auth failed ip=127.0.0.2 user=alice@example.test" in p.log_text()

    listed = p.cli("security", "blocked").stdout
    assert re.search(r"^ip\s+127\.0\.0\.2\s", listed, re.M), listed

    # state lives in postern.db: a restart keeps the block
    p.stop()
    p.start()
    assert greeting(p, "submission", attacker)[0] == 421

    res = p.cli("security", "unblock", attacker)
    assert attacker in res.stdout
    assert greeting(p, "submission", attacker)[0] == 220
    assert login(p, ALICE, ALICE_PW, attacker)[0] == 235
    assert events(p, "unblocked", ip=attacker)
    again = p.cli("security", "unblock", attacker, check=False)
    assert again.returncode == 1 and "not blocked" in again.stderr, again
    assert "127.0.0.2" not in p.cli("security", "blocked").stdout


def test_success_does_not_reset_the_ip_failures(make_postern):
    p = make(make_postern)
    src = "127.0.0.4"
    for _ in range(3):
        assert login(p, BOB, WRONG_PW, src)[0] == 535
    # a success clears only this IP's record against bob (the soft lock); the
    # IP-wide count ages out with the window, so owning one account does not
    # reset the count of guesses at others (security review of issue 6)
    assert login(p, BOB, BOB_PW, src)[0] == 235
    assert greeting(p, "submission", src)[0] == 220
    # unknown users count like wrong passwords: the fourth failure blocks
    assert login(p, "nobody@example.test", WRONG_PW, src)[0] == 535
    assert greeting(p, "submission", src)[0] == 421
    assert events(p, "login", result="fail", reason="unknown_user",
                  address="nobody@example.test")


def imap_login(p, user, password, source):
    """A LOGIN over IMAPS from source; the tagged reply line."""
    sock = socket.create_connection(("127.0.0.1", p.port("imaps")), timeout=20,
                                    source_address=(source, 0))
    with tls_client_context(p.tls).wrap_socket(sock, server_hostname="127.0.0.1") as t:
        f = t.makefile("rwb")
        greet = f.readline(1024)
        if not greet.startswith(b"* OK"):
            return greet.decode("utf-8", "replace")
        f.write(f'a1 LOGIN "{user}" "{password}"\r\n'.encode())
        f.flush()
        while True:
            line = f.readline(4096)
            if not line or line.startswith(b"a1 "):
                return line.decode("utf-8", "replace")


def test_failures_count_across_protocols(make_postern):
    p = make(make_postern)
    src = "127.0.0.60"
    for _ in range(2):
        assert imap_login(p, ALICE, WRONG_PW, src).startswith("a1 NO")
    for _ in range(2):
        assert login(p, ALICE, WRONG_PW, src)[0] == 535
    # one directory counts for every worker and protocol: the fourth failure blocked
    assert greeting(p, "submission", src)[0] == 421
    assert not imap_login(p, ALICE, ALICE_PW, src).startswith("a1 OK")
    protos = [e["protocol"] for e in events(p, "login", result="fail", ip=src)]
    assert protos[:4] == ["imap", "imap", "smtp", "smtp"], protos


# ---- account locks -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_account_lock(make_postern, mode):
    p = make(make_postern, **{"security.max_failures_per_ip": "100",
                              "security.max_failures_per_account": "3",
                              "security.account_lock": mode})
    attackers = ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
    for src in attackers:
        assert login(p, BOB, WRONG_PW, src)[0] == 535
    locked = events(p, "account_locked", address=BOB)
    assert len(locked) == 1, audit(p)
    listed = p.cli("security", "blocked").stdout
    assert re.search(r"^account\s+bob@example\.test\s", listed, re.M), listed

    # an IP that failed against the account is refused even with the right password
    assert login(p, BOB, BOB_PW, attackers[0])[0] == 535
    # a clean IP: soft lets the owner in, hard does not
    code = login(p, BOB, BOB_PW, "127.0.0.20")[0]
    assert code == (235 if mode == "soft" else 535)
    assert events(p, "login", result="fail", reason="account_locked", address=BOB)
    # other accounts are not affected
    assert login(p, ALICE, ALICE_PW, attackers[1])[0] == 235

    p.cli("security", "unblock", BOB)
    assert login(p, BOB, BOB_PW, "127.0.0.21")[0] == 235
    assert events(p, "unblocked", address=BOB)


# ---- per-account allow-from -------------------------------------------------------------

def test_allow_from_refuses_other_ips_like_a_wrong_password(make_postern):
    p = make(make_postern)
    p.cli("user", "allow-from", ALICE, "127.0.0.30/32")
    code, text, _ = login(p, ALICE, ALICE_PW, "127.0.0.31")
    assert code == 535 and "5.7.8" in text, (code, text)
    assert login(p, ALICE, ALICE_PW, "127.0.0.30")[0] == 235
    fail = events(p, "login", result="fail", ip="127.0.0.31", address=ALICE)
    assert fail and fail[-1]["reason"] == "not_allowed_from_ip", fail
    p.cli("user", "allow-from", ALICE, "--clear")
    assert login(p, ALICE, ALICE_PW, "127.0.0.31")[0] == 235


# ---- password expiry ----------------------------------------------------------------------

def test_expired_password(make_postern):
    p = make(make_postern, **{"security.password_max_age": "30d"})
    assert login(p, ALICE, ALICE_PW)[0] == 235
    db = sqlite3.connect(os.path.join(p.dir, "postern.db"), timeout=10)
    with db:
        db.execute("UPDATE users SET password_changed = ? WHERE address = ?",
                   (int(time.time()) - 31 * 86400, ALICE))
    db.close()
    code, text, _ = login(p, ALICE, ALICE_PW)
    assert (code, text) == (535, "5.7.8 Password expired, set a new one")
    # a wrong password does not learn that
    code, text, _ = login(p, ALICE, WRONG_PW)
    assert code == 535 and "expired" not in text
    assert events(p, "login", result="fail", reason="expired", address=ALICE)
    assert "password expired" in p.log_text()


# ---- plaintext AUTH -----------------------------------------------------------------------

def test_plaintext_auth_only_where_allowed(make_postern):
    p = make(make_postern)
    with smtplib.SMTP("127.0.0.1", p.port("submission"), timeout=10) as s:
        s.ehlo()
        assert "auth" not in s.esmtp_features
        code, _ = s.docmd("AUTH", "PLAIN")
        assert code == 530
    q = make(make_postern, **{"listen.submission.allow_plaintext_auth": "yes"})
    with smtplib.SMTP("127.0.0.1", q.port("submission"), timeout=10) as s:
        s.ehlo()
        assert "auth" in s.esmtp_features
        assert auth(s, ALICE, ALICE_PW)[0] == 235
    assert re.search(r"PLAINTEXT login.*allow_plaintext_auth", q.log_text())


# ---- audit log and `security log` ----------------------------------------------------------

def iso_now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def test_audit_log_and_security_log_filters(make_postern):
    p = make(make_postern)
    assert login(p, ALICE, ALICE_PW, "127.0.0.40")[0] == 235
    assert login(p, BOB, WRONG_PW, "127.0.0.41")[0] == 535
    time.sleep(1.1)
    middle = iso_now()
    time.sleep(0.1)
    assert login(p, ALICE, WRONG_PW, "127.0.0.42")[0] == 535

    ok = events(p, "login", result="ok", address=ALICE)
    assert len(ok) == 1, audit(p)
    assert {"ip": "127.0.0.40", "protocol": "smtp", "mechanism": "PLAIN",
            "credential": "password"}.items() <= ok[0].items(), ok
    assert "reason" not in ok[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ok[0]["time"])
    fail = events(p, "login", result="fail", address=BOB)
    assert {"ip": "127.0.0.41", "protocol": "smtp", "mechanism": "PLAIN",
            "reason": "wrong_password"}.items() <= fail[0].items(), fail
    # no secret ever reaches the audit log
    with open(os.path.join(p.dir, "audit.log"), encoding="utf-8") as f:
        raw = f.read()
    for secret in (ALICE_PW, BOB_PW, WRONG_PW):
        assert secret not in raw

    out = p.cli("security", "log", "--address", ALICE, "--json").stdout.splitlines()
    got = [json.loads(line) for line in out]
    assert got and all(e["address"] == ALICE for e in got), got
    assert [(e["result"], e["ip"]) for e in got if e["event"] == "login"] == [
        ("ok", "127.0.0.40"), ("fail", "127.0.0.42")], got

    out = p.cli("security", "log", "--since", middle, "--json").stdout.splitlines()
    got = [json.loads(line) for line in out]
    assert [(e["address"], e["ip"]) for e in got] == [(ALICE, "127.0.0.42")], got

    lines = raw.splitlines()
    assert p.cli("security", "log", "--since", "1h", "--json").stdout.splitlines() == lines
    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert p.cli("security", "log", "--since", future).stdout == ""

    text = [line for line in p.cli("security", "log", "--address", BOB).stdout.splitlines()
            if " login " in line]
    assert len(text) == 1, text
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ login fail bob@example\.test "
                    r"127\.0\.0\.41 smtp wrong_password\b", text[0]), text

    bad = p.cli("security", "log", "--since", "yesterday", check=False)
    assert bad.returncode == 1 and "--since" in bad.stderr


def test_security_log_since_date_and_json_lines_as_written(make_postern):
    p = make(make_postern)
    assert login(p, ALICE, WRONG_PW, "127.0.0.50")[0] == 535
    today = time.strftime("%Y-%m-%d", time.gmtime())
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    with open(os.path.join(p.dir, "audit.log"), encoding="utf-8") as f:
        raw = f.read().splitlines()
    assert p.cli("security", "log", "--since", today, "--json").stdout.splitlines() == raw
    assert p.cli("security", "log", "--since", tomorrow, "--json").stdout == ""
    assert calendar.timegm(time.strptime(today, "%Y-%m-%d")) <= time.time()
