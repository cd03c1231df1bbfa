"""Regressions in the mailbox store seen through the daemon (review r2): COPY into the
same folder after another tool renamed a file, a folder deleted and created again gets a
new UIDVALIDITY, QRESYNC after an index rebuild, MULTIAPPEND against the quota, APPEND
of a CR before a CRLF, and POP3 RETR whose file needs a rescan while the index is locked
(the worker's other sessions must not wait).

Clients: raw IMAP (test_imap.Raw) and POP3 (test_pop3.raw_login) over TLS; sqlite3 to
hold the index's write lock as another process would.
"""

import os
import re
import sqlite3
import time

import pytest

from helpers import make_message
from test_imap import ALICE, Raw, deliver_n
from test_pop3 import deliver as pop3_deliver, raw_login


def cur_files(p, address=ALICE):
    d = os.path.join(p.maildir(address), "cur")
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def rename_flag(p, uid, letter, address=ALICE):
    """Another tool (mutt) changes a message's flags: renames its file in cur/."""
    d = os.path.join(p.maildir(address), "cur")
    name = next(n for n in cur_files(p, address) if f",U={uid}:" in n)
    os.rename(os.path.join(d, name), os.path.join(d, name + letter))


def status(r, box, items="MESSAGES UIDNEXT UIDVALIDITY"):
    u, t, _ = r.cmd(f"STATUS {box} ({items})")
    assert b"OK" in t, t
    line = next(l for l in u if l.startswith(b"* STATUS"))
    return {k.decode(): int(v) for k, v in re.findall(rb"([A-Z]+) (\d+)", line)}


def append(r, box, msg):
    r.send(f"a{r.n} APPEND {box} {{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
    u, t, _ = r.collect(f"a{r.n}")
    r.n += 1
    return t


def test_copy_into_same_folder_after_outside_rename(postern):
    deliver_n(postern, 3)
    r = Raw(postern)
    r.login()
    r.cmd("SELECT INBOX")
    rename_flag(postern, 3, "S")
    u, t, _ = r.cmd("COPY 1:3 INBOX")
    assert re.search(rb"OK \[COPYUID \d+ 1:3 4:6\]", t), t
    assert status(r, "INBOX")["UIDNEXT"] == 7
    t = append(r, "INBOX", make_message(subject="after copy")[0])
    assert re.search(rb"OK \[APPENDUID \d+ 7\]", t), t
    deliver_n(postern, 1)
    s = status(r, "INBOX")
    assert s["MESSAGES"] == 8 and s["UIDNEXT"] == 9, s
    r.close()


def test_recreated_folder_gets_new_uidvalidity(postern):
    r = Raw(postern)
    r.login()
    assert b"OK" in r.cmd("CREATE X")[1]
    append(r, "X", make_message(subject="old")[0])
    before = status(r, "X")["UIDVALIDITY"]
    assert b"OK" in r.cmd("DELETE X")[1]
    assert b"OK" in r.cmd("CREATE X")[1]
    t = append(r, "X", make_message(subject="new")[0])
    uidv, uid = map(int, re.search(rb"APPENDUID (\d+) (\d+)", t).groups())
    assert uidv != before and uid == 1, (before, t)
    r.close()


def test_qresync_after_index_rebuild(postern):
    """RFC 7162 3.2.5.1: a client from before a rebuild still learns of the messages
    expunged meanwhile (the rebuild lost the expunge history)."""
    deliver_n(postern, 4)
    r = Raw(postern)
    r.login()
    r.cmd("ENABLE QRESYNC")
    u, t, _ = r.cmd("SELECT INBOX")
    text = b"\n".join(u)
    uv = int(re.search(rb"UIDVALIDITY (\d+)", text).group(1))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1))
    r.close()
    # another client removes UID 2
    o = Raw(postern)
    o.login()
    o.cmd("SELECT INBOX")
    o.cmd("UID STORE 2 +FLAGS (\\Deleted)")
    assert b"OK" in o.cmd("UID EXPUNGE 2")[1]
    o.close()
    # the index is lost and rebuilt from the Maildir
    postern.stop()
    for suffix in ("", "-wal", "-shm"):
        path = os.path.join(postern.maildir(ALICE), "postern-index.db" + suffix)
        if os.path.exists(path):
            os.unlink(path)
    postern.start()
    r = Raw(postern)
    r.login()
    r.cmd("ENABLE QRESYNC")
    u, t, _ = r.cmd(f"SELECT INBOX (QRESYNC ({uv} {hms} 1:4))")
    assert b"OK" in t, t
    text = b"\n".join(u)
    assert f"UIDVALIDITY {uv}".encode() in text, text
    assert b"* VANISHED (EARLIER) 2" in u, text
    r.cmd("UNSELECT")
    u, t, _ = r.cmd(f"SELECT INBOX (QRESYNC ({uv} {hms}))")
    assert b"* VANISHED (EARLIER) 2" in u, u
    new_hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(u)).group(1))
    assert new_hms > hms
    # from after the rebuild: nothing vanished
    r.cmd("UNSELECT")
    u, t, _ = r.cmd(f"SELECT INBOX (QRESYNC ({uv} {new_hms} 1:4))")
    assert not any(l.startswith(b"* VANISHED") for l in u), u
    r.close()


def test_multiappend_checks_the_quota_as_a_whole(make_postern):
    p = make_postern(config={"mailbox.quota": "4K"})
    r = Raw(p)
    r.login()
    msgs = [make_message(subject=f"part {i}", body="x" * 1400 + "\r\n")[0] for i in range(3)]
    assert all(len(m) < 2048 for m in msgs)
    data = b"m APPEND INBOX"
    for m in msgs:
        data += b" {%d+}\r\n" % len(m) + m
    r.send(data + b"\r\n")
    u, t, _ = r.collect("m")
    assert t.startswith(b"m NO [OVERQUOTA]"), t
    assert status(r, "INBOX")["MESSAGES"] == 0
    # two fit
    data = b"n APPEND INBOX"
    for m in msgs[:2]:
        data += b" {%d+}\r\n" % len(m) + m
    r.send(data + b"\r\n")
    u, t, _ = r.collect("n")
    assert t.startswith(b"n OK"), t
    r.close()


def test_append_cr_before_crlf_fetches_back_exactly(postern):
    msg = make_message(subject="cr", body="line one\r\r\nline two\rthree\r\n")[0]
    r = Raw(postern)
    r.login()
    t = append(r, "INBOX", msg)
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", t).group(1))
    r.cmd("SELECT INBOX")
    u, t, lits = r.cmd(f"UID FETCH {uid} (RFC822.SIZE BODY.PEEK[])")
    assert b"OK" in t, t
    size = int(re.search(rb"RFC822\.SIZE (\d+)", u[0]).group(1))
    assert lits[0] == msg
    assert size == len(msg)
    r.close()


@pytest.mark.time_limit(60)
def test_pop3_retr_rescan_does_not_block_the_worker(make_postern):
    """RETR of a message whose file another tool renamed makes the store rescan the
    folder under the index's write lock; while another process holds that lock, the
    worker's other sessions are served."""
    p = make_postern(config={"imapd_workers": "1"})
    pop3_deliver(p)
    a = raw_login(p)
    b = raw_login(p)
    rename_flag(p, 1, "F")
    db = sqlite3.connect(os.path.join(p.maildir(ALICE), "postern-index.db"),
                         isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    try:
        a.send("RETR 1\r\n")
        time.sleep(0.3)                       # a's rescan waits for the lock now
        t0 = time.monotonic()
        assert b.cmd("NOOP").startswith("+OK")
        waited = time.monotonic() - t0
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
    finally:
        db.execute("COMMIT")
        db.close()
    assert waited < 1.0, f"NOOP of another session waited {waited:.1f}s"
    assert a.line().startswith("+OK")
    body = b"\r\n".join(a.multiline())
    assert b"Hello over POP3." in body
    assert a.cmd("QUIT").startswith("+OK")
    assert b.cmd("QUIT").startswith("+OK")
