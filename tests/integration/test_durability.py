"""Write errors: a full spool answers 4xx (never 250); a full Maildir defers, never loses."""

import os
import subprocess
import time

import pytest

from helpers import RawSMTP, dot_stuff, make_message, queue_id_from

ALICE = "alice@example.test"


@pytest.fixture
def tmpfs():
    """mount(path, size): a small tmpfs on path (needs root); unmounted at teardown.
    Request this fixture BEFORE make_postern so the daemon stops first."""
    mounted = []

    def mount(path, size):
        os.makedirs(path, exist_ok=True)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              path], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to simulate a full disk: {res.stderr.strip()}")
        mounted.append(path)

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", path], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def umount(path):
    subprocess.run(["umount", path], check=True, capture_output=True, timeout=30)


def send(p, msg, rcpt=ALICE):
    with RawSMTP(p.port()) as c:
        assert c.reply().code == 220
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250
        r = c.cmd("DATA")
        if r.code != 354:
            return r
        c.send(dot_stuff(msg) + b".\r\n")
        return c.reply()


def test_spool_full_gives_4xx(tmpfs, make_postern):
    p = make_postern(start=False)
    tmpfs(os.path.join(p.dir, "spool"), "256k")
    p.start()
    big, big_token = make_message(body=("x" * 98 + "\r\n") * 4000)   # ~400 KB
    r = send(p, big)
    assert r.code // 100 == 4, f"a message that cannot be spooled must get 4xx: {r}"
    # the failed write does not leak space or block later mail
    for _ in range(3):
        small, token = make_message(body=("y" * 98 + "\r\n") * 500)  # ~50 KB
        r = send(p, small)
        assert r.code == 250, r
        p.wait_exact(ALICE, [token])
    time.sleep(1)
    assert not any(big_token.encode() in m for m in p.messages(ALICE))
    assert p.queue_ids() == []


def test_maildir_full_defers_and_delivers_after_restart(tmpfs, make_postern):
    p = make_postern(start=False)
    mbox = p.maildir(ALICE)
    tmpfs(mbox, "64k")
    p.start()
    msg, token = make_message(body=("z" * 98 + "\r\n") * 2000)  # ~200 KB
    r = send(p, msg)
    assert r.code == 250, r
    qid = queue_id_from(r.text)
    deadline = time.monotonic() + 10
    while qid.upper() not in [i.upper() for i in p.queue_ids()]:
        assert time.monotonic() < deadline, "a message that could not be delivered vanished " \
                                            "from the queue"
        time.sleep(0.2)
    time.sleep(2)
    assert p.messages(ALICE) == [], "a truncated message became visible in the Maildir"
    assert qid.upper() in [i.upper() for i in p.queue_ids()], "deferred message left the queue"
    p.stop()
    umount(mbox)
    p.start()
    p.wait_exact(ALICE, [token], timeout=15, settle=2)
