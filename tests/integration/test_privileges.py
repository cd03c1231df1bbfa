"""Least privilege (DESIGN.md principle 3): started as root with `user = nobody`, the
master keeps root (to bind and restart), every child runs as the unprivileged user,
and mail still flows: the directory reads the account database, the queue writes the
spool, the deliverer writes Maildirs — all as that user."""

import os
import pwd
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
