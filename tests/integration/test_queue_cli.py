"""`postern queue list|show|retry|hold|release|delete` and `postern status` against a
stopped daemon: the CLI reads SPOOL_DIR/status.db and the spool files, and applies
admin changes itself when no queue listens on run/q.sock. A fake queue on that socket
checks the IPC_Q_ADMIN exchange of the online path.

The spool files and status.db rows are written here from Python, in the formats of
src/lib-queue/spool.h and src/lib-queue/qstatus.h, so every state is set up exactly.
"""

import json
import os
import re
import socket
import sqlite3
import struct
import threading
import time

import pytest

ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

ID_A = "00000000000000AA"
ID_B = "00000000000000BB"
ID_C = "00000000000000CC"
ID_NONE = "0000000000000000"

NOW = int(time.time())

SCHEMA = """
CREATE TABLE messages (
  id TEXT PRIMARY KEY, sender TEXT NOT NULL, size INTEGER NOT NULL,
  queued_at INTEGER NOT NULL, auth_user TEXT, held INTEGER NOT NULL DEFAULT 0,
  delay_notified INTEGER NOT NULL DEFAULT 0, finished_at INTEGER);
CREATE TABLE recipients (
  id TEXT NOT NULL, idx INTEGER NOT NULL, address TEXT NOT NULL, mailbox TEXT,
  status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_reply TEXT,
  next_attempt INTEGER NOT NULL DEFAULT 0, remote_host TEXT, tls TEXT,
  updated_at INTEGER NOT NULL, PRIMARY KEY (id, idx));
CREATE INDEX recipients_address ON recipients (address COLLATE NOCASE);
CREATE INDEX messages_finished_at ON messages (finished_at);
PRAGMA user_version = 1;
"""

NASTY_REPLY = '451 4.7.1 "grey"\\listed\r\n\x1b[31mred\x1b[0m été \u2028 end'


def assert_fails(res, what, code=1):
    assert res.returncode == code, (f"{what}: exit {res.returncode}, expected {code}\n"
                                    f"stdout: {res.stdout}\nstderr: {res.stderr}")
    assert res.stderr.strip(), f"{what}: failed without a message on stderr"


# ---- writing spool files and status rows -------------------------------------------------

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def _record(rtype, value):
    if isinstance(value, str):
        value = value.encode()
    return rtype.encode() + struct.pack(">I", len(value)) + value


def write_spool(spool_dir, qid, sender, rcpts, body=b"Subject: hi\n\nhello\n",
                queued_at=NOW - 600, auth="alice@example.test"):
    """A committed spool file; rcpts: list of (address, mailbox or None)."""
    env = b"POSTERN-SPOOL 1\n"
    env += _record("I", qid) + _record("T", struct.pack(">q", queued_at))
    env += _record("S", sender) + _record("H", "client.test") + _record("C", "127.0.0.1")
    if auth:
        env += _record("A", auth)
    env += _record("F", struct.pack(">I", 0))
    for address, mailbox in rcpts:
        env += _record("r", address)
        if mailbox:
            env += _record("m", mailbox)
    end = b"POSTEND1" + struct.pack(">QQII", len(env), len(body), crc32c(env), crc32c(body))
    end += struct.pack(">II", crc32c(end), 0)
    qdir = os.path.join(spool_dir, "queue")
    os.makedirs(qdir, mode=0o700, exist_ok=True)
    path = os.path.join(qdir, qid)
    with open(path, "wb") as f:
        f.write(env + body + end)
    return path


class Store:
    """status.db as the queue writes it."""

    def __init__(self, path):
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(SCHEMA)

    def message(self, qid, sender, rcpts, queued_at=NOW - 600, size=1234, held=0,
                finished_at=None, auth="alice@example.test"):
        self.db.execute("INSERT INTO messages (id, sender, size, queued_at, auth_user, held,"
                        " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (qid, sender, size, queued_at, auth, held, finished_at))
        for idx, r in enumerate(rcpts):
            r = dict(r)
            self.db.execute(
                "INSERT INTO recipients (id, idx, address, mailbox, status, attempts,"
                " last_reply, next_attempt, remote_host, tls, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (qid, idx, r["address"], r.get("mailbox"), r.get("status", "queued"),
                 r.get("attempts", 0), r.get("last_reply"), r.get("next_attempt", 0),
                 r.get("remote_host"), r.get("tls"), r.get("updated_at", NOW - 60)))

    def one(self, sql, *args):
        row = self.db.execute(sql, args).fetchone()
        return row[0] if row is not None else None

    def close(self):
        self.db.close()


def spool_dir(p):
    return os.path.join(p.dir, "spool")


def status_db(p):
    return os.path.join(spool_dir(p), "status.db")


@pytest.fixture
def inst(make_postern):
    """An initialised instance that is never started."""
    return make_postern(start=False, users=())


@pytest.fixture
def queued(inst):
    """Three messages: A (two recipients, one deferred with a hostile reply, one
    delivered), B (held), C (finished, spool file gone)."""
    sd = spool_dir(inst)
    write_spool(sd, ID_A, "alice@example.test",
                [("Friend@Remote.test", None), ("bob@example.test", "bob@example.test")],
                queued_at=NOW - 900)
    write_spool(sd, ID_B, "alice@example.test", [("friend@remote.test", None)],
                queued_at=NOW - 300)
    st = Store(status_db(inst))
    st.message(ID_A, "alice@example.test", [
        dict(address="Friend@Remote.test", status="deferred", attempts=3,
             last_reply=NASTY_REPLY, next_attempt=NOW + 1200,
             remote_host="mx.remote.test[127.0.0.2]",
             tls="TLSv1.3 TLS_AES_256_GCM_SHA384", updated_at=NOW - 100),
        dict(address="bob@example.test", mailbox="bob@example.test", status="delivered",
             attempts=1, last_reply="250 2.0.0 ok", updated_at=NOW - 800),
    ], queued_at=NOW - 900, size=4321)
    st.message(ID_B, "alice@example.test", [
        dict(address="friend@remote.test", status="deferred", attempts=1,
             last_reply="421 try later", next_attempt=NOW + 60, updated_at=NOW - 50),
    ], queued_at=NOW - 300, held=1)
    st.message(ID_C, "", [
        dict(address="friend@remote.test", status="bounced", attempts=2,
             last_reply="550 5.1.1 no such user", updated_at=NOW - 2000),
    ], queued_at=NOW - 3000, finished_at=NOW - 2000, auth=None)
    yield st
    st.close()


# ---- list --------------------------------------------------------------------------------

def test_list_without_status_db(inst):
    assert not os.path.exists(status_db(inst))
    res = inst.cli("queue", "list")
    assert res.stdout == "queue is empty\n"
    res = inst.cli("queue", "list", "--json")
    assert json.loads(res.stdout) == []
    assert not os.path.exists(status_db(inst)), "a read-only listing created status.db"
    assert inst.queue_ids() == []


def test_list_text(inst, queued):
    out = inst.cli("queue", "list").stdout
    assert ID_A in out and ID_B in out, out
    assert ID_C not in out, "a finished message is listed"
    assert out.index(ID_A) < out.index(ID_B), "not oldest first"
    lines = out.split("\n")   # not splitlines(): the reply holds U+2028
    head_b = next(line for line in lines if line.startswith(ID_B))
    assert "(held)" in head_b and "<alice@example.test>" in head_b
    head_a = next(line for line in lines if line.startswith(ID_A))
    assert "(held)" not in head_a and "4321" in head_a
    friend = next(line for line in lines if "Friend@Remote.test" in line)
    assert friend.startswith("    deferred") and "attempts=3" in friend
    assert "next=" in friend and "mx.remote.test[127.0.0.2]" in friend
    # The hostile reply cannot reach the terminal raw.
    assert "\x1b" not in out and "\r" not in out
    assert "\\x1b[31mred" in friend and "été" in friend
    held = [line for line in lines if "friend@remote.test" in line]
    assert len(held) == 1 and held[0].startswith("    held"), out
    assert out.rstrip().endswith("2 messages in the queue")
    assert sorted(i.upper() for i in inst.queue_ids()) == [ID_A, ID_B]


def test_list_json(inst, queued):
    msgs = json.loads(inst.cli("queue", "list", "--json").stdout)
    assert [m["id"] for m in msgs] == [ID_A, ID_B]
    a, b = msgs
    assert a["sender"] == "alice@example.test" and a["size"] == 4321
    assert a["held"] is False and b["held"] is True
    assert ISO_RE.match(a["queued_at"]), a["queued_at"]
    assert a["queued_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 900))
    r0, r1 = a["recipients"]
    assert r0["address"] == "Friend@Remote.test" and r0["status"] == "deferred"
    assert r0["attempts"] == 3
    assert r0["last_reply"] == NASTY_REPLY, "the reply did not survive JSON escaping"
    assert r0["next_attempt"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(NOW + 1200))
    assert r0["remote_host"] == "mx.remote.test[127.0.0.2]"
    assert r0["tls"] == "TLSv1.3 TLS_AES_256_GCM_SHA384"
    assert r1["status"] == "delivered" and r1["next_attempt"] is None
    assert r1["remote_host"] is None and r1["last_reply"] == "250 2.0.0 ok"
    (rb,) = b["recipients"]
    assert rb["status"] == "held", "a non-final recipient of a held message"
    for r in (r0, r1, rb):
        assert set(r) >= {"address", "status", "attempts", "last_reply", "next_attempt",
                          "remote_host", "tls"}


def test_list_usage(inst):
    for args in (("queue",), ("queue", "list", "--xml"), ("queue", "list", "--json", "x"),
                 ("queue", "frobnicate", ID_A), ("queue", "show")):
        res = inst.cli(*args, check=False)
        assert res.returncode == 2, f"{args}: exit {res.returncode}"
        assert "usage" in res.stderr


# ---- status ------------------------------------------------------------------------------

def test_status_by_address(inst, queued):
    res = inst.cli("status", "FRIEND@remote.TEST")
    out = res.stdout
    # Every recipient row with that address, finished or not, newest first.
    assert out.count("friend@remote.test") + out.count("Friend@Remote.test") >= 3, out
    ia, ib, ic = out.index(ID_A), out.index(ID_B), out.index(ID_C)
    assert ib < ia < ic, out
    assert "550 5.1.1 no such user" in out and "\x1b" not in out

    recs = json.loads(inst.cli("status", "friend@remote.test", "--json").stdout)
    assert [r["id"] for r in recs] == [ID_B, ID_A, ID_C]
    assert [r["status"] for r in recs] == ["held", "deferred", "bounced"]
    assert recs[1]["last_reply"] == NASTY_REPLY
    assert recs[2]["next_attempt"] is None
    for r in recs:
        assert ISO_RE.match(r["queued_at"])
    # --json may come first.
    assert json.loads(inst.cli("status", "--json", "friend@remote.test").stdout) == recs


def test_status_by_id(inst, queued):
    recs = json.loads(inst.cli("status", ID_A.lower(), "--json").stdout)
    assert [(r["id"], r["address"]) for r in recs] == [
        (ID_A, "Friend@Remote.test"), (ID_A, "bob@example.test")]
    # A finished message still answers by id.
    out = inst.cli("status", ID_C).stdout
    assert ID_C in out and "bounced" in out


def test_status_nothing_found(inst, queued):
    assert_fails(inst.cli("status", "nobody@example.test", check=False), "unknown address")
    res = inst.cli("status", "nobody@example.test", "--json", check=False)
    assert res.returncode == 1 and json.loads(res.stdout) == []
    assert_fails(inst.cli("status", ID_NONE, check=False), "unknown id")
    assert inst.cli("status", check=False).returncode == 2
    assert inst.cli("status", "a@b", "c@d", check=False).returncode == 2


def test_status_without_status_db(inst):
    assert_fails(inst.cli("status", "friend@remote.test", check=False), "no status.db")
    assert not os.path.exists(status_db(inst))


# ---- show --------------------------------------------------------------------------------

def test_show(inst, queued):
    out = inst.cli("queue", "show", ID_A).stdout
    assert "remote <Friend@Remote.test>" in out
    assert "local  <bob@example.test> -> bob@example.test" in out
    assert "client: 127.0.0.1 helo=client.test auth=alice@example.test" in out
    assert "delivery status:" in out and "deferred" in out and "delivered" in out
    assert "mx.remote.test[127.0.0.2]" in out
    assert out.endswith("Subject: hi\n\nhello\n")
    # Finished (spool file gone) or never queued: unknown.
    assert_fails(inst.cli("queue", "show", ID_C, check=False), "show of a finished message")
    assert_fails(inst.cli("queue", "show", ID_NONE, check=False), "show of an unknown id")


def test_show_without_status(inst):
    write_spool(spool_dir(inst), ID_A, "alice@example.test", [("x@remote.test", None)])
    out = inst.cli("queue", "show", ID_A).stdout
    assert "remote <x@remote.test>" in out and "none recorded" in out


# ---- admin commands, daemon stopped ------------------------------------------------------

def test_offline_hold_release(inst, queued):
    out = inst.cli("queue", "hold", ID_A).stdout
    assert ID_A in out and "held" in out
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_A) == 1
    msgs = json.loads(inst.cli("queue", "list", "--json").stdout)
    a = next(m for m in msgs if m["id"] == ID_A)
    assert a["held"] is True
    assert [r["status"] for r in a["recipients"]] == ["held", "delivered"]

    inst.cli("queue", "release", ID_B.lower())
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_B) == 0
    assert "(held)" not in next(line for line in inst.cli("queue", "list").stdout.split("\n")
                                if line.startswith(ID_B))


def test_offline_hold_without_status_db(inst):
    """A message queued before status.db existed gets its rows from the spool file."""
    write_spool(spool_dir(inst), ID_A, "alice@example.test",
                [("x@remote.test", None), ("bob@example.test", "bob@example.test")])
    inst.cli("queue", "hold", ID_A)
    db = sqlite3.connect(status_db(inst))
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("SELECT held, sender FROM messages WHERE id = ?",
                          (ID_A,)).fetchone() == (1, "alice@example.test")
        rows = db.execute("SELECT idx, address, mailbox, status FROM recipients"
                          " WHERE id = ? ORDER BY idx", (ID_A,)).fetchall()
    finally:
        db.close()
    assert rows == [(0, "x@remote.test", None, "queued"),
                    (1, "bob@example.test", "bob@example.test", "queued")]
    msgs = json.loads(inst.cli("queue", "list", "--json").stdout)
    assert [m["id"] for m in msgs] == [ID_A] and msgs[0]["held"] is True


def test_offline_retry(inst, queued):
    inst.cli("queue", "retry", ID_A)
    assert queued.one("SELECT next_attempt FROM recipients WHERE id = ? AND idx = 0",
                      ID_A) == 0
    assert queued.one("SELECT next_attempt FROM recipients WHERE id = ?", ID_B) == NOW + 60
    assert queued.one("SELECT status FROM recipients WHERE id = ? AND idx = 1",
                      ID_A) == "delivered"
    inst.cli("queue", "retry", "all")
    assert queued.one("SELECT next_attempt FROM recipients WHERE id = ?", ID_B) == 0
    rec = json.loads(inst.cli("status", ID_B, "--json").stdout)[0]
    assert rec["next_attempt"] is None


def test_offline_retry_without_status_db(inst):
    write_spool(spool_dir(inst), ID_A, "alice@example.test", [("x@remote.test", None)])
    inst.cli("queue", "retry", ID_A)
    inst.cli("queue", "retry", "all")
    assert_fails(inst.cli("queue", "retry", ID_NONE, check=False), "retry of an unknown id")


def test_offline_delete(inst, queued):
    path = os.path.join(spool_dir(inst), "queue", ID_A)
    assert os.path.exists(path)
    out = inst.cli("queue", "delete", ID_A).stdout
    assert ID_A in out
    assert not os.path.exists(path)
    finished = queued.one("SELECT finished_at FROM messages WHERE id = ?", ID_A)
    assert finished is not None and abs(finished - time.time()) < 60
    assert ID_A not in inst.cli("queue", "list").stdout
    assert ID_A in inst.cli("status", ID_A).stdout, "the history of a deleted message"
    assert_fails(inst.cli("queue", "show", ID_A, check=False), "show after delete")
    assert_fails(inst.cli("queue", "delete", ID_A, check=False), "delete twice")
    assert os.path.exists(os.path.join(spool_dir(inst), "queue", ID_B))


def test_admin_unknown_and_bad_ids(inst, queued):
    for op in ("retry", "hold", "release", "delete", "show"):
        assert_fails(inst.cli("queue", op, ID_NONE, check=False), f"{op} {ID_NONE}")
        # Finished: the status row exists, the spool file does not.
        assert_fails(inst.cli("queue", op, ID_C, check=False), f"{op} of a finished message")
        for bad in ("zz", "../../postern.conf", "", "0" * 17, "G" * 16, "all" if op != "retry"
                    else "everything"):
            assert_fails(inst.cli("queue", op, bad, check=False), f"{op} {bad!r}")
    assert os.path.exists(inst.conf)
    # Nothing changed.
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_C) == 0
    assert queued.one("SELECT finished_at FROM messages WHERE id = ?", ID_C) == NOW - 2000


# ---- admin commands, daemon running (a fake queue on run/q.sock) -------------------------

IPC_Q_ADMIN = 400
IPC_Q_ADMIN_REPLY = 401
OPS = {"retry": 0, "hold": 1, "release": 2, "delete": 3}


def _put_str(s):
    if s is None:
        return struct.pack("=I", 0xFFFFFFFF)
    b = s.encode() + b"\0"
    return struct.pack("=I", len(b)) + b


def _recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


class FakeQueue:
    """Listens on DATA/run/q.sock like the queue process; answers each IPC_Q_ADMIN with
    the next (status, text) from `replies` (None: close without answering)."""

    def __init__(self, data_dir, replies):
        self.replies = list(replies)
        self.requests = []
        self.errors = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        run = os.path.join(data_dir, "run")
        cwd = os.getcwd()
        os.chdir(run)   # sun_path is 108 bytes; pytest's tmp paths can be longer
        try:
            self.sock.bind("q.sock")
        finally:
            os.chdir(cwd)
        self.sock.listen(4)
        self.sock.settimeout(30)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            for reply in self.replies:
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(10)
                    mtype, length, req_id = struct.unpack("=IIQ", _recv_exact(conn, 16))
                    payload = _recv_exact(conn, length)
                    op, slen = struct.unpack_from("=II", payload)
                    target = payload[8:8 + slen]
                    assert len(payload) == 8 + slen and target.endswith(b"\0"), payload
                    self.requests.append((mtype, op, target[:-1].decode()))
                    if reply is None:
                        continue
                    status, text = reply
                    body = struct.pack("=I", status) + _put_str(text)
                    conn.sendall(struct.pack("=IIQ", IPC_Q_ADMIN_REPLY, len(body), req_id)
                                 + body)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))

    def close(self):
        self.thread.join(15)
        self.sock.close()
        assert not self.errors, self.errors


def test_online_admin_requests(inst, queued):
    fake = FakeQueue(inst.dir, [(0, f"held {ID_A}"), (0, "retrying 3 messages"),
                                (1, "no such message"), (2, "disk on fire"), (0, None)])
    try:
        res = inst.cli("queue", "hold", ID_A.lower())
        assert res.stdout == f"held {ID_A}\n"
        res = inst.cli("queue", "retry", "all")
        assert res.stdout == "retrying 3 messages\n"
        res = inst.cli("queue", "delete", ID_NONE, check=False)
        assert_fails(res, "UNKNOWN_ID from the queue")
        assert "no such message" in res.stderr
        res = inst.cli("queue", "release", ID_B, check=False)
        assert_fails(res, "ERROR from the queue")
        assert "disk on fire" in res.stderr
        res = inst.cli("queue", "retry", ID_B)
        assert res.returncode == 0 and res.stdout.strip()
    finally:
        fake.close()
    assert fake.requests == [(IPC_Q_ADMIN, OPS["hold"], ID_A),
                             (IPC_Q_ADMIN, OPS["retry"], "all"),
                             (IPC_Q_ADMIN, OPS["delete"], ID_NONE),
                             (IPC_Q_ADMIN, OPS["release"], ID_B),
                             (IPC_Q_ADMIN, OPS["retry"], ID_B)]
    # The daemon owns the change: nothing was applied offline.
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_A) == 0
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_B) == 1


def test_online_queue_closes_without_answer(inst, queued):
    fake = FakeQueue(inst.dir, [None])
    try:
        t0 = time.monotonic()
        res = inst.cli("queue", "hold", ID_A, check=False)
        assert time.monotonic() - t0 < 20
        assert_fails(res, "queue closed the connection")
    finally:
        fake.close()
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_A) == 0


def test_stale_socket_means_offline(inst, queued):
    """A socket file left by a stopped daemon: ECONNREFUSED, so the change is made here."""
    fake = FakeQueue(inst.dir, [])
    fake.close()   # bound, closed: the file stays, nobody listens
    assert os.path.exists(os.path.join(inst.dir, "run", "q.sock"))
    inst.cli("queue", "hold", ID_A)
    assert queued.one("SELECT held FROM messages WHERE id = ?", ID_A) == 1
