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
        # docs/config.md: "500 5.5.2, the session continues"
        assert c.cmd("NOOP").code == 250


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


def test_max_errors_reached_by_a_refused_message_closes(make_postern):
    """The error that reaches the limit may be the reply to a message (here a bare LF):
    after that 421 the session is over, whatever state the transaction was in."""
    p = make_postern(config={"smtp.max_errors": "3"})
    with session(p) as c:
        assert c.cmd("BOGUS1").code == 500
        assert c.cmd("BOGUS2").code == 500
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: x\r\n\r\nbare\nLF\r\n.\r\n")
        r = c.reply()
        assert r.code // 100 == 5, r
        r = c.reply()
        assert r.code == 421, f"the third error must end the session: {r}"
        # nothing more is answered: the server closes
        try:
            c.send(b"NOOP\r\n")
        except OSError:
            pass
        closed, data = c.closed_within(5)
        assert closed and b"250" not in data, f"session went on after 421: {data!r}"


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


def test_line_length_boundary(make_postern):
    # docs/config.md: the limit counts octets without the CRLF; 550 5.5.2 after the data
    p = make_postern(config={"smtp.max_line_length": "1000"})
    ok, ok_token = make_message(body="a" * 1000 + "\r\n")
    bad, bad_token = make_message(body="b" * 1001 + "\r\n")
    with session(p) as c:
        for msg, want in ((ok, 250), (bad, 550)):
            assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
            assert c.cmd("RCPT TO:<alice@example.test>").code == 250
            assert c.cmd("DATA").code == 354
            c.send(dot_stuff(msg) + b".\r\n")
            r = c.reply()
            assert r.code == want, r
            if want == 550:
                assert "5.5.2" in r.text, r
    msgs = p.wait_exact("alice@example.test", [ok_token])
    assert not any(bad_token.encode() in m for m in msgs)


def test_large_message_intact(postern):
    import hashlib
    import os as _os
    lines = [base64_line(_os.urandom(57)) for _ in range(150000)]   # ~11.5 MB
    body = "\r\n".join(lines) + "\r\n"
    msg, token = make_message(body=body)
    with session(postern) as c:
        assert c.cmd("MAIL FROM:<sender@remote.test> SIZE=%d" % len(msg)).code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        c.sock.settimeout(60)
        r = c.reply()
        assert r.code == 250, r
    [m] = postern.wait_exact("alice@example.test", [token], timeout=30)
    got = m.split(b"\n\n", 1)[1]
    want = body.replace("\r\n", "\n").encode()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(), \
        f"body changed: {len(got)} vs {len(want)} bytes"


def base64_line(raw):
    import base64
    return base64.b64encode(raw).decode()


def test_auth_exchange_times_out(make_postern):
    p = make_postern(config={"smtp.command_timeout": "2"})
    c = RawSMTP(p.port("submissions"), tls=p.client_context())
    with c:
        assert c.reply().code == 220
        c.ehlo()
        assert c.cmd("AUTH LOGIN").code == 334
        closed, data = c.closed_within(12)
        assert closed, "a client stalled inside AUTH is never dropped"


def _abandon(p, kind):
    import socket
    import struct
    if kind == "close":            # close without a word
        RawSMTP(p.port()).close()
    elif kind == "rst":            # abortive close (RST) after the banner
        c = RawSMTP(p.port())
        c.reply()
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    elif kind == "mid-data":       # drop in the middle of DATA
        c = session(p)
        c.cmd("MAIL FROM:<sender@remote.test>")
        c.cmd("RCPT TO:<alice@example.test>")
        c.cmd("DATA")
        c.send(b"Subject: x\r\n\r\npartial")
        c.close()
    elif kind == "tls-handshake":  # drop during the TLS handshake on submissions
        s = socket.create_connection(("127.0.0.1", p.port("submissions")), timeout=5)
        s.send(b"\x16\x03\x01\x00\x50")
        s.close()
    elif kind == "starttls":       # STARTTLS then vanish
        c = session(p)
        c.cmd("STARTTLS")
        c.close()
    elif kind == "starttls-garbage":  # STARTTLS, then a broken handshake
        c = session(p)
        c.cmd("STARTTLS")
        c.send(b"\x16\x03\x01\x00\x50")
        c.close()
    elif kind == "tls-quit":       # full TLS session, QUIT
        c = RawSMTP(p.port("submissions"), tls=p.client_context())
        c.reply()
        c.cmd("QUIT")
        c.close()
    elif kind == "quit":
        c = session(p)
        c.cmd("QUIT")
        c.close()


@pytest.mark.parametrize("kind", ["quit", "close", "rst", "mid-data", "tls-handshake",
                                  "starttls", "starttls-garbage", "tls-quit"])
def test_connection_counter_does_not_leak(make_postern, kind):
    p = make_postern(config={"smtp.max_connections_per_ip": "5", "smtp.max_connections": "5"})
    for i in range(20):
        try:
            _abandon(p, kind)
        except (OSError, EOFError, AssertionError):
            pass
        time.sleep(0.05)
    # every slot must come back
    deadline = time.monotonic() + 10
    while True:
        conns = []
        try:
            for _ in range(5):
                c = RawSMTP(p.port())
                conns.append(c)
                r = c.reply()
                if r.code != 220:
                    raise AssertionError(f"slot {len(conns)}: {r}")
            break
        except (AssertionError, EOFError) as e:
            assert time.monotonic() < deadline, f"connection slots leaked after '{kind}': {e}"
            time.sleep(0.3)
        finally:
            for c in conns:
                c.close()
