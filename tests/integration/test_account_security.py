"""Account security from the command line (issue 6): the password policy of
`postern user add|passwd` (and --force), app passwords, TOTP enrolment
checked against Python's own RFC 6238 computation, per-account login
allowlists, and the audit log line each of them writes.

These drive the `postern` CLI against a fresh data directory; the daemon is
not needed (the login side is tested with real clients elsewhere)."""

import base64
import hashlib
import hmac
import json
import os
import pty
import re
import struct
import subprocess
import time
import urllib.parse

import pytest

CAROL = "carol@example.test"
GOOD_PW = "Tr0ub4dor&3-horse"
APP_PW_RE = re.compile(r"^[a-km-z2-9]{4}(-[a-km-z2-9]{4}){5}$")
RECOVERY_RE = re.compile(r"^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$")


# ---- helpers ---------------------------------------------------------------------------

@pytest.fixture
def inst(make_postern):
    """A data directory with the domain example.test and carol@ (no daemon)."""
    p = make_postern(users=(), start=False)
    p.cli("user", "add", CAROL, "--password-stdin", input=GOOD_PW + "\n")
    return p


def audit_path(p):
    return os.path.join(p.dir, "audit.log")


def audit_events(p, event=None):
    """Every audit line, parsed (each must be one JSON object)."""
    path = audit_path(p)
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            assert line.endswith("\n"), f"audit line not terminated: {line!r}"
            obj = json.loads(line)
            assert isinstance(obj, dict)
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", obj["time"]), obj
            if event is None or obj.get("event") == event:
                out.append(obj)
    return out


def assert_fails(res, *needles):
    assert res.returncode == 1, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    for n in needles:
        assert n in res.stderr, f"{n!r} not in stderr: {res.stderr!r}"


def totp(secret_b32, t, step=30, digits=6):
    """RFC 6238 (HMAC-SHA1) with RFC 4226's dynamic truncation."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(t) // step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 10 ** digits
    return f"{code:0{digits}d}"


def away_from_step_boundary(margin=3):
    """Waits until the current 30 s step has at least margin seconds left, so
    a code computed here is checked by the CLI in the same step."""
    left = 30 - time.time() % 30
    if left < margin:
        time.sleep(left + 0.2)


def enable_2fa(p, address=CAROL):
    res = p.cli("user", "2fa", "enable", address)
    uris = [l for l in res.stdout.splitlines() if l.startswith("otpauth://")]
    assert len(uris) == 1, res.stdout
    uri = urllib.parse.urlparse(uris[0])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    assert urllib.parse.unquote(uri.path) == f"/Postern:{address}"
    q = urllib.parse.parse_qs(uri.query)
    assert q["issuer"] == ["Postern"] and q["digits"] == ["6"] and q["period"] == ["30"]
    assert q["algorithm"] == ["SHA1"]
    secret = q["secret"][0]
    assert re.match(r"^[A-Z2-7]{32}$", secret), secret      # 20 bytes, base32
    codes = [l for l in res.stdout.splitlines() if RECOVERY_RE.match(l)]
    return res, secret, codes


# ---- password policy -------------------------------------------------------------------

POLICY_CASES = [
    # label, address, password, expected stderr fragment (None: accepted)
    ("too short", "dave@example.test", "Xk9#mW2q-7", "too short"),
    ("common long walk qwerty123456", "dave@example.test", "qwerty123456", "too common"),
    ("common walk 1qaz2wsx3edc", "dave@example.test", "1qaz2wsx3edc", "too common"),
    ("common Password123!", "dave@example.test", "Password123!", "too common"),
    ("leet P@ssw0rd2024!", "dave@example.test", "P@ssw0rd2024!", "too common"),
    ("contains the local part", "dave@example.test", "my-DAVE-is-Kx9q2", "user name"),
    ("one character repeated", "dave@example.test", "aaaaaaaaaaaaaaaa", "repeated"),
    ("acceptable", "dave@example.test", "vq7-Lm2p-X9zk-horse", None),
]


@pytest.mark.parametrize("label,address,password,reason", POLICY_CASES,
                         ids=[c[0] for c in POLICY_CASES])
def test_user_add_policy(inst, label, address, password, reason):
    res = inst.cli("user", "add", address, "--password-stdin", input=password + "\n",
                   check=False)
    users = inst.cli("user", "list").stdout.split()
    if reason is None:
        assert res.returncode == 0, res.stderr
        assert address in users
    else:
        assert_fails(res, reason)
        assert "--force" in res.stderr       # the operator learns how to override
        assert address not in users


def test_user_passwd_policy_and_force(inst):
    for pw, reason in (("short-1", "too short"), ("qwerty123456", "too common"),
                       ("1qaz2wsx3edc", "too common"), ("Carol-Kx9q2-xyz", "user name")):
        res = inst.cli("user", "passwd", CAROL, "--password-stdin", input=pw + "\n",
                       check=False)
        assert_fails(res, reason)
    assert not [e for e in audit_events(inst, "password_changed")
                if e.get("command") == "user passwd"], "refused changes are not audited"

    res = inst.cli("user", "passwd", CAROL, "--password-stdin", input="Zq8!tuvw-Hx3k-long\n")
    assert "changed password" in res.stdout
    ok = [e for e in audit_events(inst, "password_changed") if e["command"] == "user passwd"]
    assert len(ok) == 1 and ok[0]["address"] == CAROL and "forced" not in ok[0]

    # --force: the operator overrides the policy for this one user, logged.
    res = inst.cli("user", "passwd", CAROL, "--password-stdin", "--force",
                   input="qwerty123456\n")
    assert "changed password" in res.stdout
    assert "--force" in res.stderr and CAROL in res.stderr     # the log line
    forced = [e for e in audit_events(inst, "password_changed") if e.get("forced") == "yes"]
    assert len(forced) == 1 and forced[0]["address"] == CAROL
    # The password never reaches the audit log.
    with open(audit_path(inst), encoding="utf-8") as f:
        assert "qwerty123456" not in f.read()

    # --force does not lift the library's own rules.
    res = inst.cli("user", "passwd", CAROL, "--password-stdin", "--force", input="\n",
                   check=False)
    assert_fails(res, "empty")
    res = inst.cli("user", "add", "erin@example.test", "--password-stdin", "--force",
                   input="short\n")
    assert "erin@example.test" in inst.cli("user", "list").stdout.split()
    res = inst.cli("user", "del", CAROL, "--force", check=False)
    assert res.returncode == 2


def test_min_length_from_config(make_postern):
    p = make_postern(users=(), start=False, config={"security.password_min_length": "20"})
    res = p.cli("user", "add", CAROL, "--password-stdin", input=GOOD_PW + "\n", check=False)
    assert_fails(res, "at least 20")
    p.cli("user", "add", CAROL, "--password-stdin", input=GOOD_PW + "-and-more\n")


# ---- app passwords ---------------------------------------------------------------------

def test_app_password_add_list_revoke(inst):
    res = inst.cli("user", "app-password", "add", CAROL, "--name", "phone",
                   "--scope", "imap,smtp")
    lines = res.stdout.splitlines()
    assert lines[-2] == f"app password phone for {CAROL} (scope smtp,imap):"
    pw = lines[-1]
    assert APP_PW_RE.match(pw), pw

    res = inst.cli("user", "app-password", "add", "CAROL@example.test", "--name", "laptop")
    pw2 = res.stdout.splitlines()[-1]
    assert APP_PW_RE.match(pw2) and pw2 != pw
    assert "(scope smtp,imap,pop3)" in res.stdout

    listing = inst.cli("user", "app-password", "list", CAROL).stdout.splitlines()
    assert len(listing) == 2
    assert listing[0].startswith("laptop\t") and listing[1].startswith("phone\t")
    assert "scope smtp,imap\t" in listing[1]
    for line in listing:
        assert re.search(r"created \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line), line
        assert line.rstrip().endswith("last used never"), line
        assert pw not in line and pw2 not in line
    with open(audit_path(inst), encoding="utf-8") as f:
        text = f.read()
    assert pw not in text and pw.replace("-", "") not in text

    created = audit_events(inst, "app_password_created")
    assert [(e["address"], e["name"], e["scope"]) for e in created] == [
        (CAROL, "phone", "smtp,imap"), (CAROL, "laptop", "smtp,imap,pop3")]

    # Errors.
    assert_fails(inst.cli("user", "app-password", "add", CAROL, "--name", "phone",
                          check=False), "already")
    assert_fails(inst.cli("user", "app-password", "add", "nobody@example.test", "--name", "x",
                          check=False), "no such user")
    assert_fails(inst.cli("user", "app-password", "add", CAROL, "--name", "x", "--scope",
                          "imap,http", check=False), "scope")
    assert_fails(inst.cli("user", "app-password", "list", "nobody@example.test",
                          check=False), "no such user")
    assert inst.cli("user", "app-password", "add", CAROL, check=False).returncode == 2

    inst.cli("user", "app-password", "revoke", CAROL, "phone")
    listing = inst.cli("user", "app-password", "list", CAROL).stdout.splitlines()
    assert len(listing) == 1 and listing[0].startswith("laptop\t")
    assert_fails(inst.cli("user", "app-password", "revoke", CAROL, "phone", check=False),
                 "no app password")
    revoked = audit_events(inst, "app_password_revoked")
    assert [(e["address"], e["name"]) for e in revoked] == [(CAROL, "phone")]

    inst.cli("user", "app-password", "revoke", CAROL, "laptop")
    assert "no app passwords" in inst.cli("user", "app-password", "list", CAROL).stdout


def test_app_password_allow_from(inst):
    res = inst.cli("user", "app-password", "add", CAROL, "--name", "office",
                   "--allow-from", "192.0.2.7/24, 2001:db8::/32")
    assert APP_PW_RE.match(res.stdout.splitlines()[-1])
    line = inst.cli("user", "app-password", "list", CAROL).stdout.splitlines()[0]
    assert line.endswith("allow-from 192.0.2.0/24,2001:db8::/32"), line
    assert_fails(inst.cli("user", "app-password", "add", CAROL, "--name", "bad",
                          "--allow-from", "192.0.2.0/33", check=False), "invalid CIDR")
    assert "bad\t" not in inst.cli("user", "app-password", "list", CAROL).stdout


# ---- TOTP ------------------------------------------------------------------------------

def test_2fa_enable_verify_replay_disable(inst):
    res, secret, codes = enable_2fa(inst)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "2fa verify" in res.stdout
    assert "\x1b[" not in res.stdout        # no QR code when stdout is not a terminal
    assert [e["address"] for e in audit_events(inst, "2fa_enrolment_started")] == [CAROL]

    away_from_step_boundary()
    now = time.time()
    valid = {totp(secret, now + d) for d in (-30, 0, 30)}
    wrong = next(c for c in ("000000", "111111", "123456", "654321") if c not in valid)
    assert_fails(inst.cli("user", "2fa", "verify", CAROL, wrong, check=False), "invalid")
    assert_fails(inst.cli("user", "2fa", "verify", CAROL, "12ab56", check=False), "invalid")
    assert not audit_events(inst, "2fa_enabled")

    # The previous step is inside the window (+-1 step) ...
    res = inst.cli("user", "2fa", "verify", CAROL, totp(secret, now - 30))
    assert res.stdout.strip() == f"2fa is on for {CAROL}"
    assert [e["address"] for e in audit_events(inst, "2fa_enabled")] == [CAROL]
    # ... then the current one; neither can be used again, nor anything older.
    away_from_step_boundary()
    now = time.time()
    code = totp(secret, now)
    inst.cli("user", "2fa", "verify", CAROL, code)
    assert_fails(inst.cli("user", "2fa", "verify", CAROL, code, check=False), "already used")
    assert_fails(inst.cli("user", "2fa", "verify", CAROL, totp(secret, now - 30),
                          check=False), "invalid")
    assert len(audit_events(inst, "2fa_enabled")) == 1    # only the first confirmation

    # Enrolling again while on is refused: disable first.
    assert_fails(inst.cli("user", "2fa", "enable", CAROL, check=False), "already on")
    inst.cli("user", "2fa", "disable", CAROL)
    assert [e["address"] for e in audit_events(inst, "2fa_disabled")] == [CAROL]
    assert_fails(inst.cli("user", "2fa", "verify", CAROL, totp(secret, time.time() + 30),
                          check=False), "not enabled")
    assert_fails(inst.cli("user", "2fa", "disable", CAROL, check=False), "not enabled")

    # A new enrolment has a new secret; the old one's codes do not confirm it.
    _, secret2, _ = enable_2fa(inst)
    assert secret2 != secret
    away_from_step_boundary()
    old = totp(secret, time.time())
    if old != totp(secret2, time.time()):
        assert_fails(inst.cli("user", "2fa", "verify", CAROL, old, check=False), "invalid")
    inst.cli("user", "2fa", "verify", CAROL, totp(secret2, time.time()))

    with open(audit_path(inst), encoding="utf-8") as f:
        text = f.read()
    assert secret not in text and secret2 not in text
    assert not any(c in text for c in codes)


def test_2fa_errors(inst):
    assert_fails(inst.cli("user", "2fa", "enable", "nobody@example.test", check=False),
                 "no such user")
    assert_fails(inst.cli("user", "2fa", "verify", CAROL, "123456", check=False),
                 "not enabled")
    assert inst.cli("user", "2fa", "verify", CAROL, check=False).returncode == 2
    assert inst.cli("user", "2fa", "frobnicate", CAROL, check=False).returncode == 2


def test_2fa_enable_draws_qr_code_on_a_terminal(inst):
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([inst.bin, "-c", inst.conf, "user", "2fa", "enable", CAROL],
                                stdout=slave, stderr=subprocess.PIPE, env=inst.env())
        os.close(slave)
        slave = None
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=30) == 0
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    text = out.decode("utf-8")
    assert "otpauth://totp/Postern:" in text
    qr_lines = [l for l in text.splitlines() if "\x1b[30;47m" in l]
    assert len(qr_lines) >= 12, text
    assert all("\u2588" in l or "\u2580" in l or "\u2584" in l for l in qr_lines[1:-1])
    assert len([l for l in text.splitlines() if RECOVERY_RE.match(l.strip())]) == 10


# ---- per-account login allowlist -------------------------------------------------------

def test_allow_from(inst):
    assert "from anywhere" in inst.cli("user", "allow-from", CAROL).stdout
    res = inst.cli("user", "allow-from", CAROL, "127.0.0.5,10.1.2.3/8", "2001:db8::/32")
    assert res.stdout.strip() == f"{CAROL} may log in from 127.0.0.5,10.0.0.0/8,2001:db8::/32"
    assert "127.0.0.5,10.0.0.0/8,2001:db8::/32" in inst.cli("user", "allow-from", CAROL).stdout

    for bad in ("127.0.0.0/33", "example.com", "10.0.0.0/8,,", "::1/200"):
        assert_fails(inst.cli("user", "allow-from", CAROL, bad, check=False), "invalid CIDR")
    # A refused change leaves the list as it was.
    assert "127.0.0.5,10.0.0.0/8" in inst.cli("user", "allow-from", CAROL).stdout
    assert_fails(inst.cli("user", "allow-from", "nobody@example.test", "10.0.0.0/8",
                          check=False), "no such user")
    assert inst.cli("user", "allow-from", CAROL, "--clear", "10.0.0.0/8",
                    check=False).returncode == 2

    inst.cli("user", "allow-from", CAROL, "--clear")
    assert "from anywhere" in inst.cli("user", "allow-from", CAROL).stdout

    changes = audit_events(inst, "allow_from_changed")
    assert [(e["address"], e["allow_from"]) for e in changes] == [
        (CAROL, "127.0.0.5,10.0.0.0/8,2001:db8::/32"), (CAROL, "")]
