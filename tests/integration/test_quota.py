"""Mailbox quota: `postern user quota`, refusal at RCPT (452 4.2.2 / 552 5.2.2 as
mailbox.quota_exceeded says), refusal at delivery when one message would overflow,
the Maildir++ maildirsize file, and the IMAP side (GETQUOTAROOT, APPEND over quota).
"""

import imaplib
import json
import os
import time

from helpers import PASSWORDS, make_message, smtp_client, tls_client_context

ALICE = "alice@example.test"
BOB = "bob@example.test"


def deliver(p, to=ALICE, size=0, sender="sender@remote.test"):
    """One message over the MX listener; returns (smtplib reply to RCPT, token)."""
    body = ("x" * 70 + "\r\n") * (size // 72 + 1) if size else "short\r\n"
    msg, token = make_message(sender=sender, to=to, body=body)
    with smtp_client(p.port("smtp")) as c:
        c.ehlo("client.test")
        c.mail(sender)
        code, text = c.rcpt(to)
        if code == 250:
            c.data(msg)
    return code, text, token


def usage(p, address=ALICE):
    out = p.cli("user", "quota", address).stdout
    for line in out.splitlines():
        if line.startswith("used: "):
            parts = line.split()
            return int(parts[1]), int(parts[3])
    raise AssertionError(f"no usage line in {out!r}")


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def status_json(p, what):
    res = p.cli("status", what, "--json", check=False)
    return json.loads(res.stdout) if res.stdout.strip() else []


def test_quota_cli_shows_default_and_override(postern):
    out = postern.cli("user", "quota", ALICE).stdout
    assert "storage limit (bytes): 1073741824 (default)" in out
    assert "message limit: unlimited (default)" in out
    out = postern.cli("user", "quota", ALICE, "20K", "--messages", "7").stdout
    assert "storage limit (bytes): 20480\n" in out
    assert "message limit: 7\n" in out
    out = postern.cli("user", "quota", ALICE, "unlimited").stdout
    assert "storage limit (bytes): unlimited\n" in out
    out = postern.cli("user", "quota", ALICE, "default", "--messages", "default").stdout
    assert "(default)" in out and "20480" not in out
    res = postern.cli("user", "quota", "nobody@example.test", check=False)
    assert res.returncode != 0 and "no such user" in res.stderr
    res = postern.cli("user", "quota", ALICE, "lots", check=False)
    assert res.returncode != 0 and "expected a size" in res.stderr


def test_full_mailbox_refused_at_rcpt_with_452(postern):
    postern.cli("user", "quota", ALICE, "8K")
    code, _, t1 = deliver(postern, size=3000)
    assert code == 250
    postern.wait_exact(ALICE, [t1], settle=0)
    used, count = usage(postern)
    assert count == 1 and used > 3000
    code, _, t2 = deliver(postern, size=6000)
    assert code == 250                       # 3 KB used of 8: accepted at RCPT ...
    # ... but this one would overflow: delivery is deferred (tempfail), not lost
    rec = wait_for(lambda: [r for r in status_json(postern, ALICE)
                            if r["status"] == "deferred"], what="deferred delivery")
    assert "4.2.2" in rec[0]["last_reply"]
    code, text, _ = deliver(postern, size=100)
    assert code == 250                       # still under: small mail fits
    postern.wait_messages(ALICE, 2)
    # fill it up from outside (another tool), then RCPT sees the full mailbox
    postern.cli("user", "quota", ALICE, "2K")
    code, text, _ = deliver(postern)
    assert code == 452, (code, text)
    assert text.startswith(b"4.2.2"), text
    # the other user is not affected
    code, _, _ = deliver(postern, to=BOB)
    assert code == 250
    # raising the quota lets the deferred message in after a retry
    postern.cli("user", "quota", ALICE, "1M")
    postern.cli("queue", "retry", "all")
    postern.wait_exact(ALICE, [t2], settle=0)


def test_bounce_policy_answers_552(make_postern):
    p = make_postern(config={"mailbox.quota_exceeded": "bounce",
                             "mailbox.quota_messages": "1"})
    code, _, t1 = deliver(p)
    assert code == 250
    p.wait_exact(ALICE, [t1], settle=0)
    code, text, _ = deliver(p)
    assert code == 552, (code, text)
    assert text.startswith(b"5.2.2"), text


def test_bounce_policy_at_delivery_sends_a_dsn(make_postern):
    p = make_postern(config={"mailbox.quota_exceeded": "bounce"})
    p.cli("user", "quota", ALICE, "4K")
    code, _, token = deliver(p, size=8000, sender=BOB)
    assert code == 250                       # empty mailbox: accepted at RCPT
    [dsn] = p.wait_messages(BOB, 1)
    assert b"5.2.2" in dsn and b"multipart/report" in dsn
    assert p.messages(ALICE) == []


def test_maildirsize_follows_deliveries(postern):
    tokens = [deliver(postern, size=1000)[2] for _ in range(3)]
    postern.wait_exact(ALICE, tokens, settle=0)
    used, count = usage(postern)
    files = []
    for sub in ("new", "cur"):
        d = os.path.join(postern.maildir(ALICE), sub)
        files += [os.path.join(d, n) for n in os.listdir(d)]
    assert count == 3
    assert used == sum(os.path.getsize(f) for f in files)
    with open(os.path.join(postern.maildir(ALICE), "maildirsize")) as f:
        lines = f.read().splitlines()
    assert len(lines) >= 2                   # the definition line and usage lines


def flatten(x):
    if isinstance(x, bytes):
        return [x]
    out = []
    for y in x or ():
        out += flatten(y)
    return out


def imap_login(p, user=ALICE):
    c = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=tls_client_context(p.tls),
                          timeout=10)
    c.login(user, PASSWORDS[user])
    return c


def test_imap_quota_and_append_over_quota(postern):
    postern.cli("user", "quota", ALICE, "10K")
    t = deliver(postern, size=2000)[2]
    postern.wait_exact(ALICE, [t], settle=0)
    used, _ = usage(postern)
    c = imap_login(postern)
    try:
        typ, data = c.getquotaroot("INBOX")
        assert typ == "OK"
        text = b" ".join(flatten(data))
        # STORAGE is in KiB (RFC 9208): usage rounded up, limit 10
        assert b"STORAGE" in text and b" 10)" in text, data
        assert f"STORAGE {(used + 1023) // 1024} 10".encode() in text, (used, data)
        big, _ = make_message(body=("y" * 70 + "\r\n") * 200)   # ~14 KB
        typ, data = c.append("INBOX", None, None, big)
        assert typ == "NO" and b"[OVERQUOTA]" in data[0], (typ, data)
        # the session goes on
        assert c.noop()[0] == "OK"
    finally:
        c.logout()
    assert usage(postern)[1] == 1
