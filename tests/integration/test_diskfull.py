"""Disk full: a write error while a message is received gets a 4xx, never a 250; the
session and the daemon survive; and a message whose Maildir disk is full stays queued
and is delivered once there is room again.

The small disks are tmpfs mounts (needs root, as CI runs); without the right to mount
the tests are skipped with the reason shown."""

import os
import subprocess
import time

import pytest

from helpers import RawSMTP, dot_stuff, make_message

ALICE = "alice@example.test"


@pytest.fixture
def small_fs(tmp_path):
    mounted = []

    def make(name, size):
        path = tmp_path / name
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                            str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def send(p, message, rcpt=ALICE):
    c = RawSMTP(p.port())
    try:
        assert c.reply().code == 220
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250
        r = c.cmd("DATA")
        if r.code != 354:
            return r, c
        c.send(dot_stuff(message) + b".\r\n")
        return c.reply(), c
    except BaseException:
        c.close()
        raise


def test_spool_full_gets_4xx_and_session_survives(make_postern, small_fs):
    spool = small_fs("spool", "1m")
    p = make_postern(config={"spool_dir": str(spool)})
    big, big_token = make_message(body="x" * 100 + "\r\n", subject="big")
    big = big + (("y" * 998 + "\r\n") * 3000).encode()         # about 3 MB
    r, c = send(p, big)
    with c:
        assert 400 <= r.code < 500, f"a message that does not fit got {r}"
        assert c.cmd("RSET").code == 250
        # the same session and the daemon go on: a small message fits
        small, token = make_message()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd(f"RCPT TO:<{ALICE}>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(small) + b".\r\n")
        assert c.reply().code == 250
    p.wait_exact(ALICE, [token])
    assert all(big_token not in m.decode("utf-8", "replace")
               for m in p.messages(ALICE)), "the refused message was delivered"
    leftovers = os.listdir(spool / "queue")
    deadline = time.monotonic() + 10
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = os.listdir(spool / "queue")
    assert leftovers == [], f"spool files left behind: {leftovers}"


def test_maildir_full_keeps_message_queued_until_room(make_postern, small_fs):
    mail = small_fs("mail", "256k")
    p = make_postern(config={"mail_dir": str(mail)})
    # fill the Maildir disk
    with open(mail / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    msg, token = make_message()
    r, c = send(p, msg)
    c.close()
    assert r.code == 250, r                     # the spool has room: accepted
    qid = r.text.split()[-1]
    deadline = time.monotonic() + 10
    while "deferred id=" + qid not in p.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "deferred id=" + qid in p.log_text(), "no deferral logged for the full disk"
    assert qid in p.cli("queue", "list").stdout, "the deferred message left the queue"
    # room again; a restart retries at once and delivers it exactly once
    os.unlink(mail / "filler")
    p.restart()
    new = mail / "example.test" / "alice" / "new"
    deadline = time.monotonic() + 15
    found = []
    while time.monotonic() < deadline:
        found = [f for f in (os.listdir(new) if new.is_dir() else [])
                 if token.encode() in (new / f).read_bytes()]
        if found:
            break
        time.sleep(0.2)
    time.sleep(1)
    found = [f for f in os.listdir(new) if token.encode() in (new / f).read_bytes()]
    assert len(found) == 1, f"delivered {len(found)} times after the restart"
    assert b"Delivered-To: " + ALICE.encode() in (new / found[0]).read_bytes()
    deadline = time.monotonic() + 10
    while qid in p.cli("queue", "list").stdout and time.monotonic() < deadline:
        time.sleep(0.2)
    assert qid not in p.cli("queue", "list").stdout
