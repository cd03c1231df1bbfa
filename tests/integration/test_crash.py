"""kill -9 of the whole daemon (master and children) at bad moments: accepted mail is
delivered exactly once after restart, and nothing half-received is ever delivered."""

import os
import random
import signal
import threading
import time

import pytest

from helpers import RawSMTP, dot_stuff, make_message, queue_id_from

ALICE = "alice@example.test"


def open_transaction(p, rcpt=ALICE):
    c = RawSMTP(p.port())
    assert c.reply().code == 220
    c.ehlo()
    assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
    assert c.cmd(f"RCPT TO:<{rcpt}>").code == 250
    return c


def children_of(pid):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        if int(rest[1]) == pid and rest[0] not in ("Z", "X"):
            out.append(int(name))
    return out


def test_kill9_mid_data_nothing_delivered(postern):
    msg, token = make_message(body="partial body line\r\n" * 2000)
    c = open_transaction(postern)
    assert c.cmd("DATA").code == 354
    payload = dot_stuff(msg)
    c.send(payload[: len(payload) // 2])
    time.sleep(0.5)
    postern.kill9()
    c.close()
    postern.start()
    time.sleep(3)
    assert postern.messages(ALICE) == [], "a half-received message was delivered"
    assert postern.queue_ids() == [], "a half-received message is in the queue"
    # and the restarted daemon works
    msg2, token2 = make_message()
    with open_transaction(postern) as c:
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg2) + b".\r\n")
        assert c.reply().code == 250
    [m] = postern.wait_exact(ALICE, [token2])
    assert token.encode() not in m


def test_kill9_mid_bdat_nothing_delivered(postern):
    c = open_transaction(postern)
    chunk = b"Subject: bdat crash\r\n\r\n" + b"y" * 50000 + b"\r\n"
    c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    assert c.reply().code == 250
    c.send(b"BDAT 100000 LAST\r\n" + b"z" * 30000)
    time.sleep(0.5)
    postern.kill9()
    c.close()
    postern.start()
    time.sleep(3)
    assert postern.messages(ALICE) == []
    assert postern.queue_ids() == []


def test_kill9_right_after_250_delivered_once(postern):
    tokens = []
    for _ in range(3):
        msg, token = make_message()
        c = open_transaction(postern)
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        r = c.reply()
        postern.kill9()
        c.close()
        assert r.code == 250, r
        queue_id_from(r.text)
        tokens.append(token)
        postern.start()
        postern.wait_exact(ALICE, tokens, timeout=15)
    postern.wait_exact(ALICE, tokens, settle=2)


def test_kill9_after_250_multi_recipient(postern):
    postern.cli("alias", "add", "team@example.test", "alice@example.test,bob@example.test")
    msg, token = make_message(to="team@example.test")
    with RawSMTP(postern.port()) as c:
        assert c.reply().code == 220
        c.ehlo()
        c.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<team@example.test>\r\n"
               b"RCPT TO:<alice+x@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
        assert [c.reply().code for _ in range(5)] == [250, 250, 250, 250, 354]
        c.send(dot_stuff(msg) + b".\r\n")
        r = c.reply()
        postern.kill9()
        assert r.code == 250, r
    postern.start()
    postern.wait_exact(ALICE, [token], settle=2)
    postern.wait_exact("bob@example.test", [token])


def _send_one(p, rng, rcpt, msg):
    """One MX transaction; returns the final reply or None if anything went wrong."""
    try:
        c = RawSMTP(p.port(), timeout=5)
    except OSError:
        return None
    try:
        if c.reply().code != 220:
            return None
        c.ehlo()
        if c.cmd("MAIL FROM:<sender@remote.test>").code != 250:
            return None
        if c.cmd(f"RCPT TO:<{rcpt}>").code != 250:
            return None
        if c.cmd("DATA").code != 354:
            return None
        payload = dot_stuff(msg) + b".\r\n"
        cut = rng.randint(0, len(payload))
        c.send(payload[:cut])
        c.send(payload[cut:])
        r = c.reply()
        try:
            c.cmd("QUIT")
        except (OSError, EOFError):
            pass
        return r
    except (OSError, EOFError, AssertionError):
        return None
    finally:
        c.close()


def _sender_loop(p, stop, acked, attempted, lock, rng_seed):
    rng = random.Random(rng_seed)
    while not stop.is_set():
        rcpt = rng.choice([ALICE, "bob@example.test"])
        msg, token = make_message(to=rcpt, body=("z" * 70 + "\r\n") * rng.randint(1, 300))
        with lock:
            attempted[token] = rcpt
        r = _send_one(p, rng, rcpt, msg)
        if r is not None and r.code == 250:
            with lock:
                acked[token] = rcpt
        elif r is None:
            time.sleep(0.05)


@pytest.mark.time_limit(int(os.environ.get("POSTERN_CRASH_ROUNDS", "5")) * 20 + 120)
def test_kill9_random_points_exactly_once(postern):
    seed = int(os.environ.get("POSTERN_CRASH_SEED", random.randrange(1 << 30)))
    print(f"POSTERN_CRASH_SEED={seed}")
    rng = random.Random(seed)
    acked, attempted = {}, {}
    lock = threading.Lock()
    rounds = int(os.environ.get("POSTERN_CRASH_ROUNDS", "5"))
    for rnd in range(rounds):
        if not postern.running():
            postern.start()
        stop = threading.Event()
        threads = [threading.Thread(target=_sender_loop,
                                    args=(postern, stop, acked, attempted, lock,
                                          rng.randrange(1 << 30)), daemon=True)
                   for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.3, 2.0))
        postern.kill9()
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
    postern.start()
    assert acked, "no message was accepted at all"
    for rcpt in (ALICE, "bob@example.test"):
        tokens = [t for t, r in acked.items() if r == rcpt]
        if tokens:
            postern.wait_exact(rcpt, tokens, timeout=30, settle=2)
    # messages that never got their 250 may or may not be there, but never twice
    for rcpt in (ALICE, "bob@example.test"):
        msgs = postern.messages(rcpt)
        for token, r in attempted.items():
            if r == rcpt:
                n = sum(1 for m in msgs if token.encode() in m)
                assert n <= 1, f"{token} delivered {n} times (seed {seed})"
    # nothing accepted stays stuck in the queue
    deadline = time.monotonic() + 10
    while postern.queue_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postern.queue_ids() == [], "local mail left in the queue after recovery"
    for rcpt in (ALICE, "bob@example.test"):
        tmp = os.path.join(postern.maildir(rcpt), "tmp")
        if os.path.isdir(tmp):
            leftovers = os.listdir(tmp)
            # a crash may leave tmp files; they must never be visible as mail
            for name in leftovers:
                assert not os.path.exists(os.path.join(postern.maildir(rcpt), "new", name))


def test_killed_child_is_restarted(postern):
    """kill -9 each child process in turn: the master restarts it and mail still flows."""
    master = postern.proc.pid
    kids = children_of(master)
    assert kids, "the master has no child processes"
    for kid in kids:
        try:
            os.kill(kid, signal.SIGKILL)
        except ProcessLookupError:
            continue    # went down with a sibling killed earlier (and was restarted)
        deadline = time.monotonic() + 20
        token = None
        while True:
            assert postern.running(), f"master exited after child {kid} was killed"
            try:
                msg, token = make_message()
                with open_transaction(postern) as c:
                    assert c.cmd("DATA").code == 354
                    c.send(dot_stuff(msg) + b".\r\n")
                    r = c.reply()
                    assert r.code == 250, r
                postern.wait_exact(ALICE, [token], timeout=10, settle=0)
                break
            except (OSError, EOFError, AssertionError) as e:
                if time.monotonic() > deadline:
                    raise AssertionError(f"mail does not flow after killing child {kid}: {e}")
                time.sleep(0.5)
    # a child that died young is restarted after a backoff (1 s, then 2 s, ...)
    deadline = time.monotonic() + 15
    while len(children_of(master)) < len(kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(children_of(master)) >= len(kids), "killed children were not all restarted"


def test_kill9_master_only_children_exit(postern):
    """If only the master dies, its children must not keep serving (or holding the
    listening sockets) as orphans; a restart then works and queued mail is kept."""
    msg, token = make_message()
    with open_transaction(postern) as c:
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        assert c.reply().code == 250
    master = postern.proc.pid
    kids = children_of(master)
    os.kill(master, signal.SIGKILL)
    postern.proc.wait(10)
    postern.expected_death = True
    deadline = time.monotonic() + 10
    alive = kids
    while time.monotonic() < deadline:
        alive = [k for k in kids if os.path.exists(f"/proc/{k}") and
                 open(f"/proc/{k}/stat").read().split(")")[-1].split()[0] not in ("Z", "X")]
        if not alive:
            break
        time.sleep(0.1)
    postern.kill9()   # clean up whatever is left (and record it as a problem)
    assert not alive, f"children {alive} outlived the master by 10 s"
    postern.start()
    postern.wait_exact(ALICE, [token], settle=1)


def smtpd_pids(p):
    """Live smtpd worker pids, from the master's 'started smtpd pid=N' log lines."""
    import re
    pids = [int(x) for x in re.findall(r"started smtpd pid=(\d+)", p.log_text(all_runs=False))]
    master = p.proc.pid
    return [pid for pid in pids if pid in children_of(master)]


def test_worker_killed_mid_data_nothing_delivered(postern):
    msg, token = make_message(body="partial body line\r\n" * 2000)
    c = open_transaction(postern)
    assert c.cmd("DATA").code == 354
    payload = dot_stuff(msg)
    c.send(payload[: len(payload) // 2])
    time.sleep(0.5)
    workers = smtpd_pids(postern)
    assert workers, "no smtpd worker found in the log ('started smtpd pid=N')"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    c.close()
    time.sleep(3)
    assert postern.running()
    assert postern.messages(ALICE) == []
    assert postern.queue_ids() == [], "a half-received message stays in the queue"
    postern.restart()
    time.sleep(2)
    assert postern.messages(ALICE) == [], "a half-received message was delivered after restart"
    msg2, token2 = make_message()
    with open_transaction(postern) as c:
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg2) + b".\r\n")
        assert c.reply().code == 250
    postern.wait_exact(ALICE, [token2])
