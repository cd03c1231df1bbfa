"""Configured limits and their standard replies."""

import time

import pytest

from helpers import RawSMTP, dot_stuff, make_message, smtp_client


def session(p, listener="smtp"):
    c = RawSMTP(p.port(listener))
    r = c.reply()
    assert r.code == 220, r
    c.ehlo()
    return c


def test_size_advertised_and_refused_at_mail(make_postern):
    p = make_postern(config={"smtp.max_message_size": "10K"})
    with smtp_client(p.port()) as s:
        s.ehlo()
        assert int(s.esmtp_features["size"]) == 10240, s.esmtp_features
    with session(p) as c:
        r = c.cmd("MAIL FROM:<sender@remote.test> SIZE=20000")
        assert r.code == 552 and "5.3.4" in r.text, r
        r = c.cmd("MAIL FROM:<sender@remote.test> SIZE=5000")
        assert r.code == 250, r


def test_size_suffix_m(make_postern):
    p = make_postern(config={"smtp.max_message_size": "1M"})
    with smtp_client(p.port()) as s:
        s.ehlo()
        assert int(s.esmtp_features["size"]) == 1024 * 1024, s.esmtp_features


def test_size_refused_in_data(make_postern):
    p = make_postern(config={"smtp.max_message_size": "10K"})
    big, big_token = make_message(body=("x" * 70 + "\r\n") * 300)   # ~21 KB
    small, small_token = make_message(body=("y" * 70 + "\r\n") * 60)  # ~4.3 KB
    with session(p) as c:
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(big) + b".\r\n")
        r = c.reply()
        assert r.code == 552 and "5.3.4" in r.text, r
        assert c.pending(0.5) == b""
        # the session goes on and a small message is fine
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(small) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
    msgs = p.wait_exact("alice@example.test", [small_token])
    assert not any(big_token.encode() in m for m in msgs)


def test_size_refused_in_bdat(make_postern):
    p = make_postern(config={"smtp.max_message_size": "10K"})
    big = b"Subject: big bdat\r\n\r\n" + (b"z" * 70 + b"\r\n") * 300
    with session(p) as c:
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        half = len(big) // 2
        c.send(b"BDAT %d\r\n" % half + big[:half])
        r1 = c.reply()
        c.send(b"BDAT %d LAST\r\n" % (len(big) - half) + big[half:])
        r2 = c.reply()
        assert any(r.code == 552 and "5.3.4" in r.text for r in (r1, r2)), (r1, r2)
        assert r2.code != 250, r2
        assert c.cmd("NOOP").code == 250
    time.sleep(1)
    assert p.messages("alice@example.test") == []


def test_line_length(make_postern):
    p = make_postern(config={"smtp.max_line_length": "1000"})
    ok, ok_token = make_message(body="a" * 900 + "\r\n")
    bad, bad_token = make_message(body="b" * 2000 + "\r\n")
    with session(p) as c:
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(bad) + b".\r\n")
        r = c.reply()
        assert r.code // 100 == 5, f"2000-octet line with a 1000 limit: {r}"
        closed, data = c.closed_within(0.5)
        assert data == b"", data
        if not closed:
            assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
            assert c.cmd("RCPT TO:<alice@example.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(ok) + b".\r\n")
            r = c.reply()
            assert r.code == 250, f"900-octet line with a 1000 limit: {r}"
    if not closed:
        msgs = p.wait_exact("alice@example.test", [ok_token])
        assert not any(bad_token.encode() in m for m in msgs)


def test_command_line_too_long(postern):
    with session(postern) as c:
        r = c.cmd("MAIL FROM:<" + "a" * 3000 + "@remote.test>")
        assert r.code in (500, 501, 553), r
        # the session may go on, or end with a 421 (the line may have been a flood)
        try:
            r = c.cmd("NOOP")
        except (EOFError, ConnectionError):
            return
        assert r.code in (250, 421), r


def test_max_recipients_452(make_postern):
    p = make_postern(config={"smtp.max_recipients": "3"})
    msg, token = make_message()
    with session(p) as c:
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        for rcpt in ("alice@example.test", "bob@example.test", "alice+x@example.test"):
            r = c.cmd(f"RCPT TO:<{rcpt}>")
            assert r.code == 250, r
        r = c.cmd("RCPT TO:<bob+y@example.test>")
        assert r.code == 452 and "4.5.3" in r.text, r
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        assert c.reply().code == 250
    p.wait_exact("bob@example.test", [token])
    p.wait_messages("alice@example.test", 1)


def _open_banners(p, n):
    conns = []
    for _ in range(n):
        c = RawSMTP(p.port())
        r = c.reply()
        assert r.code == 220, f"connection {len(conns) + 1}: {r}"
        conns.append(c)
    return conns


def _refused(p):
    c = RawSMTP(p.port())
    try:
        try:
            r = c.reply()
        except (EOFError, ConnectionError):
            return None
        return r
    finally:
        c.close()


@pytest.mark.parametrize("key,workers", [("smtp.max_connections_per_ip", "1"),
                                         ("smtp.max_connections_per_ip", "3"),
                                         ("smtp.max_connections", "3")])
def test_connection_limits_421(make_postern, key, workers):
    p = make_postern(config={key: "3", "smtpd_workers": workers})
    time.sleep(0.3)  # let the daemon see the readiness probes close
    conns = _open_banners(p, 3)
    try:
        r = _refused(p)
        assert r is not None and r.code == 421, f"4th connection with {key}=3: {r}"
        # freeing one slot lets a new client in
        conns.pop().close()
        deadline = time.monotonic() + 5
        while True:
            c = RawSMTP(p.port())
            try:
                r = c.reply()
            finally:
                c.close()
            if r.code == 220:
                break
            assert time.monotonic() < deadline, f"slot not freed: {r}"
            time.sleep(0.1)
    finally:
        for c in conns:
            c.close()


def test_max_errors_disconnects(make_postern):
    p = make_postern(config={"smtp.max_errors": "3"})
    with session(p) as c:
        replies = []
        closed = False
        for i in range(5):
            try:
                r = c.cmd(f"BOGUS{i}")
            except (EOFError, ConnectionError):
                closed = True
                break
            replies.append(r)
            if r.code == 421:
                break
        if not closed:
            closed, data = c.closed_within(3)
        assert closed, f"not disconnected after {len(replies)} errors: {replies}"
        assert len([r for r in replies if r.code // 100 == 5]) <= 3, replies
        assert replies[-1].code == 421 or len(replies) <= 3, replies


def test_command_timeout(make_postern):
    p = make_postern(config={"smtp.command_timeout": "2"})
    with session(p) as c:
        t0 = time.monotonic()
        closed, data = c.closed_within(12)
        elapsed = time.monotonic() - t0
        assert closed, "idle session not closed by smtp.command_timeout = 2"
        assert 1.5 <= elapsed <= 8, elapsed
        assert data.startswith(b"421"), data


def test_data_timeout(make_postern):
    p = make_postern(config={"smtp.data_timeout": "2", "smtp.command_timeout": "30"})
    with session(p) as c:
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: stalled\r\n\r\nhalf a message\r\n")
        t0 = time.monotonic()
        closed, data = c.closed_within(12)
        elapsed = time.monotonic() - t0
        assert closed, "stalled DATA not closed by smtp.data_timeout = 2"
        assert 1.5 <= elapsed <= 8, elapsed
        assert data.startswith(b"421"), data
    time.sleep(1)
    assert p.messages("alice@example.test") == []
