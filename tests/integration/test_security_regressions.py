"""Regression tests for the security review of issue 6 (login security).

One test per finding: a login to an account of one's own must not reset the
IP's failure count; IPv6 clients are throttled per /64; `security log` text
output escapes control characters; an audit log created by a root-run CLI
command belongs to the run user; `tls add` keeps certbot's symbolic links;
`security unblock` normalises addresses; `postern reload` reaches the
directory's security settings.
"""
import base64
import os
import re
import shutil
import smtplib
import socket
import time

import pytest

from helpers import issue_cert

ALICE = "alice@example.test"
BOB = "bob@example.test"
ALICE_PW = "Tr0ub4dor&3-horse"
BOB_PW = "correct-Staple-7-battery"
WRONG = "Not-the-Right-0ne"

FAST = {
    "security.max_failures_per_ip": "4",
    "security.auth_delay_ms": "50",
    "security.block_duration": "1h",
}


def make(make_postern, start=True, **extra):
    cfg = dict(FAST)
    cfg.update(extra)
    p = make_postern(config=cfg, users=(), start=False)
    p.add_user(ALICE, ALICE_PW)
    p.add_user(BOB, BOB_PW)
    if start:
        p.start()
    return p


def session(p, source, host="127.0.0.1"):
    s = smtplib.SMTP(host, p.port("submission"), local_hostname="c.test", timeout=30,
                     source_address=(source, 0))
    ctx = p.client_context()
    if host != "127.0.0.1":
        ctx.check_hostname = False      # the test certificate names 127.0.0.1; CA still checked
    s.ehlo()
    s.starttls(context=ctx)
    s.ehlo()
    return s


def auth_plain_raw(s, authcid, pw):
    blob = base64.b64encode(b"\0" + authcid + b"\0" + pw.encode()).decode()
    return s.docmd("AUTH", "PLAIN " + blob)[0]


def login(p, user, pw, source, host="127.0.0.1"):
    s = session(p, source, host)
    try:
        return auth_plain_raw(s, user.encode(), pw)
    finally:
        s.close()


def greeting_code(p, source, host="127.0.0.1"):
    with socket.create_connection((host, p.port("submission")), timeout=10,
                                  source_address=(source, 0)) as sock:
        return int(sock.makefile("rb").readline(1024)[:3])


# ---- 1: a success does not reset the IP-wide count ---------------------------------------

def test_own_account_login_does_not_reset_the_throttle(make_postern):
    """An attacker owning bob guesses alice's password, logging in to bob between
    guesses: the fourth failure still blocks it."""
    p = make(make_postern)
    src = "127.0.0.9"
    for i in range(3):
        assert login(p, ALICE, WRONG + str(i), src) == 535
    assert login(p, BOB, BOB_PW, src) == 235
    assert login(p, ALICE, WRONG + "x", src) == 535
    assert greeting_code(p, src) == 421
    assert re.search(r"^ip\s+127\.0\.0\.9\s", p.cli("security", "blocked").stdout, re.M)
    # the account's owner elsewhere is unaffected
    assert login(p, ALICE, ALICE_PW, "127.0.0.19") == 235


def test_success_clears_the_soft_lock_record_of_that_account_only(make_postern):
    """Soft lock: an IP that failed against alice and then logged in to alice is
    let in again; its failures against bob still count."""
    p = make(make_postern, **{"security.max_failures_per_ip": "50",
                              "security.max_failures_per_account": "3",
                              "security.account_lock": "soft"})
    src = "127.0.0.21"
    assert login(p, ALICE, WRONG, src) == 535
    assert login(p, ALICE, ALICE_PW, src) == 235
    for _ in range(3):                       # alice locked, from elsewhere
        assert login(p, ALICE, WRONG, "127.0.0.22") == 535
    assert login(p, ALICE, ALICE_PW, "127.0.0.22") == 535     # tried: refused
    assert login(p, ALICE, ALICE_PW, src) == 235              # record cleared: in


# ---- 2 and 6: IPv6 per /64, unblock normalises -------------------------------------------

def _ipv6_available():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback")
def test_ipv6_client_blocked_per_64_and_unblock_accepts_address_or_prefix(make_postern):
    p = make(make_postern, start=False)
    p.set_config("listen.submission", f"[::1]:{p.port('submission')}")
    def wait_ready(timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if greeting_code(p, "::1", "::1") == 220:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, p.log_tail()
            time.sleep(0.05)

    p.wait_ready = wait_ready
    p.start()
    for i in range(4):
        assert login(p, ALICE, WRONG + str(i), "::1", "::1") == 535
    assert greeting_code(p, "::1", "::1") == 421
    listed = p.cli("security", "blocked").stdout
    assert re.search(r"^ip\s+::/64\s", listed, re.M), listed
    # any address inside the /64, in any spelling, names the block
    res = p.cli("security", "unblock", "0:0:0:0:0:0:0:1")
    assert "::/64" in res.stdout, res.stdout
    assert greeting_code(p, "::1", "::1") == 220
    for i in range(4):
        assert login(p, ALICE, WRONG + str(i), "::1", "::1") == 535
    assert "::/64" in p.cli("security", "unblock", "::/64").stdout
    assert greeting_code(p, "::1", "::1") == 220
    bad = p.cli("security", "unblock", "::/48", check=False)
    assert bad.returncode == 1 and "neither" in bad.stderr, bad


def test_unblock_normalises_the_address(make_postern):
    p = make(make_postern)
    src = "127.0.0.23"
    for i in range(4):
        assert login(p, ALICE, WRONG + str(i), src) == 535
    assert greeting_code(p, src) == 421
    res = p.cli("security", "unblock", "::FFFF:127.0.0.23")
    assert "unblocked 127.0.0.23" in res.stdout, res.stdout
    assert greeting_code(p, src) == 220
    junk = p.cli("security", "unblock", "127.0.0.23x", check=False)
    assert junk.returncode == 1


# ---- 3: `security log` escapes control characters -----------------------------------------

def test_security_log_text_escapes_control_characters(make_postern):
    p = make(make_postern)
    fake = (b"x\n2030-01-01T00:00:00Z login ok alice@example.test 6.6.6.6 imap "
            b"\x1b[2Jevil\x7f")
    s = session(p, "127.0.0.10")
    assert auth_plain_raw(s, fake, WRONG) == 535
    s.close()
    deadline = time.monotonic() + 5
    while "evil" not in p.cli("security", "log").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    out = p.cli("security", "log").stdout
    assert "\n2030-01-01t00:00:00z login ok" not in out.lower(), out
    assert "\x1b" not in out and "\x7f" not in out, repr(out)
    line = [l for l in out.splitlines() if "evil" in l]
    assert len(line) == 1, out
    # (the directory lower-cases the user name)
    assert "x\\x0a2030-01-01t00:00:00z login ok alice@example.test" in line[0], line
    assert "\\x1b[2jevil\\x7f" in line[0], line
    # --json stays JSON: the escapes are JSON's
    js = p.cli("security", "log", "--json").stdout
    assert "\\n2030-01-01" in js and "\\u001b[2j" in js.lower(), js


# ---- 4: an audit log created by a root-run CLI belongs to the run user --------------------

@pytest.fixture
def traversable_dirs():
    changed = []

    def open_up(path):
        path = os.path.dirname(os.path.abspath(path))
        while path != "/":
            mode = os.stat(path).st_mode
            if not mode & 0o001:
                changed.append((path, mode))
                os.chmod(path, mode | 0o001)
            path = os.path.dirname(path)
    yield open_up
    for path, mode in reversed(changed):
        os.chmod(path, mode & 0o7777)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as user = nobody")
def test_audit_log_created_by_root_cli_stays_writable(make_postern, traversable_dirs):
    import pwd
    nobody = pwd.getpwnam("nobody")
    p = make_postern(config={"user": "nobody"}, users=(), start=False)
    traversable_dirs(p.dir)
    p.add_user(ALICE, ALICE_PW)
    p.start()
    audit = os.path.join(p.dir, "audit.log")
    if os.path.exists(audit):
        os.rename(audit, audit + ".1")       # logrotate
    p.cli("access", "deny", "192.0.2.0/24")  # the root CLI writes first
    st = os.stat(audit)
    assert st.st_uid == nobody.pw_uid, (st.st_uid, oct(st.st_mode))
    assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
    s = session(p, "127.0.0.11")
    assert auth_plain_raw(s, ALICE.encode(), WRONG) == 535
    s.close()
    deadline = time.monotonic() + 5
    while '"event":"login"' not in open(audit).read():
        assert time.monotonic() < deadline, open(audit).read()
        time.sleep(0.1)
    assert '"access_rule_added"' in open(audit).read()


# ---- 5: `tls add` keeps symbolic links (certbot) ------------------------------------------

def test_tls_add_writes_through_symlinked_cert_and_key(make_postern, tmp_path):
    p = make_postern(start=False)
    live = tmp_path / "live"
    archive = tmp_path / "archive"
    live.mkdir()
    archive.mkdir()
    shutil.copy(p.tls["cert"], archive / "fullchain1.pem")
    shutil.copy(p.tls["key"], archive / "privkey1.pem")
    os.chmod(archive / "privkey1.pem", 0o600)
    os.symlink(archive / "fullchain1.pem", live / "fullchain.pem")
    os.symlink("../archive/privkey1.pem", live / "privkey.pem")     # relative, as certbot
    p.set_config("tls.cert", str(live / "fullchain.pem"))
    p.set_config("tls.key", str(live / "privkey.pem"))
    d = tmp_path / "new"
    d.mkdir()
    c, k = issue_cert(p.tls, str(d), p.hostname)
    p.cli("tls", "add", c, k)
    assert os.path.islink(live / "fullchain.pem")
    assert os.path.islink(live / "privkey.pem")
    assert sorted(os.listdir(live)) == ["fullchain.pem", "privkey.pem"]
    assert sorted(os.listdir(archive)) == ["fullchain1.pem", "privkey1.pem"]
    assert open(archive / "fullchain1.pem").read() == open(c).read()
    assert open(archive / "privkey1.pem").read() == open(k).read()
    assert os.stat(archive / "privkey1.pem").st_mode & 0o777 == 0o600
    # the daemon starts on the linked pair
    p.start()
    assert "tls" in p.cli("tls", "show").stdout.lower()


# ---- 7: reload reaches the directory -------------------------------------------------------

def test_reload_applies_new_security_limits(make_postern):
    p = make(make_postern, **{"security.max_failures_per_ip": "10"})
    src = "127.0.0.24"
    assert login(p, ALICE, WRONG, src) == 535
    p.set_config("security.max_failures_per_ip", "2")
    p.cli("reload")
    deadline = time.monotonic() + 10
    while not re.search(r"directory.*reload: configuration re-read", p.log_text()):
        assert time.monotonic() < deadline, p.log_tail()
        time.sleep(0.1)
    assert login(p, ALICE, WRONG, src) == 535     # the second failure: now the limit
    assert greeting_code(p, src) == 421
