"""Least privilege (DESIGN.md principle 3): started as root with `user = nobody`, the
master keeps root (to bind and restart), every child runs as the unprivileged user,
and mail still flows: the directory reads the account database, the queue writes the
spool, the deliverer writes Maildirs — all as that user."""

import os
import pwd
import re
import stat
import subprocess
import smtplib

import pytest

from helpers import PASSWORDS, make_message, tls_client_context
from test_crash import children_of

ALICE = "alice@example.test"


def uids(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture
def traversable():
    """Lets other users traverse the ancestors of a path (pytest's temp root is 0700)."""
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


def test_children_run_as_the_configured_user(make_postern, traversable):
    if os.geteuid() != 0:
        pytest.skip("dropping privileges needs root")
    nobody = pwd.getpwnam("nobody")
    p = make_postern(config={"user": "nobody"}, start=False)
    traversable(p.dir)
    p.start()

    master = p.proc.pid
    assert uids(master)[0] == 0, "the master keeps root to bind and restart children"
    kids = children_of(master)
    assert len(kids) >= 4, kids
    for kid in kids:
        assert uids(kid) == [nobody.pw_uid] * 4, f"child {kid} runs with uids {uids(kid)}"

    # the whole path works unprivileged: AUTH (directory), spool (queue), Maildir (deliver)
    msg, token = make_message(sender=ALICE, to=ALICE)
    with smtplib.SMTP("127.0.0.1", p.port("submission"), timeout=10) as s:
        s.starttls(context=tls_client_context(p.tls))
        s.login(ALICE, PASSWORDS[ALICE])
        s.sendmail(ALICE, [ALICE], msg)
    [m] = p.wait_exact(ALICE, [token])
    new = os.path.join(p.dir, "mail", "example.test", "alice", "new")
    owners = {os.stat(os.path.join(new, f)).st_uid for f in os.listdir(new)}
    assert owners == {nobody.pw_uid}, f"Maildir files owned by {owners}"


def test_any_local_user_can_use_sendmail_but_not_the_queue_controls(make_postern, traversable):
    """`postern sendmail` works for an ordinary user (cron, PHP as www-data) through
    run/submit.sock; the identity comes from the kernel; q.sock stays the daemon's."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    nobody = pwd.getpwnam("nobody")
    p = make_postern()
    traversable(p.conf)
    traversable(p.bin)
    run = os.path.join(p.dir, "run")
    assert stat.S_IMODE(os.stat(p.dir).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(os.path.join(run, "q.sock")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(run, "submit.sock")).st_mode) == 0o666
    assert stat.S_IMODE(os.stat(p.conf).st_mode) == 0o644   # written so by postern init

    def as_nobody():
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    def run_as_nobody(args, data=None):
        return subprocess.run([p.bin, "-c", p.conf] + args, input=data, capture_output=True,
                              text=True, timeout=30, preexec_fn=as_nobody, cwd="/")

    token = "tok-" + os.urandom(6).hex()
    res = run_as_nobody(["sendmail", "-f", "root@example.test", "bob@example.test"],
                        f"Subject: from nobody\n\n{token}\n")
    assert res.returncode == 0, res.stderr
    [msg] = p.wait_messages("bob@example.test", 1)
    assert token.encode() in msg
    assert re.search(rb"from userid %d\b" % nobody.pw_uid, msg), msg[:600]
    # the queue took the identity from the socket, not from the client
    assert re.search(r"local:nobody", p.log_text()), p.log_tail()
    # an unknown local user is refused by the queue with the data-error status
    res = run_as_nobody(["sendmail", "nosuchuser@example.test"], "Subject: x\n\nx\n")
    assert res.returncode == 65, (res.returncode, res.stderr)
    assert "no such user" in res.stderr
    # the queue controls are not for local users
    res = run_as_nobody(["queue", "retry", "all"])
    assert res.returncode != 0
