"""Self-tests of the remote MX fixture (remote_mx.py), driven with smtplib, ssl and raw
sockets; no Postern daemon is involved. Each behaviour, the records the delivery tests
rely on (messages, ESMTP parameters, transactions, log, pipelining, concurrency, TLS) and
the life cycle (start/stop/restart, bind errors, bounded timeouts) are checked."""

import os
import smtplib
import socket
import ssl
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from remote_mx import RemoteMX, free_mx_port, make_test_ca, mx_ca, remote_mx  # noqa: E402,F401

HOST = "127.0.0.2"


@pytest.fixture
def port():
    return free_mx_port([HOST, "127.0.0.3", "127.0.0.4"])


def client(host=HOST, port=None, timeout=5):
    return smtplib.SMTP(host, port, local_hostname="client.test", timeout=timeout)


class Raw:
    """Line-oriented raw client (no reply checks), for exact bytes on the wire."""

    def __init__(self, port, host=HOST, timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.f = self.sock.makefile("rb")

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("server closed the connection")
            lines.append(line.rstrip(b"\r\n").decode())
            if line[3:4] != b"-":
                return lines

    def close(self):
        self.f.close()
        self.sock.close()


MESSAGE = ("From: <sénder@remote.test>\r\nTo: <bob@remote.test>\r\nSubject: héllo\r\n\r\n"
           "Grüße, 8-bit body\r\n.leading dot line\r\n").encode("utf-8")


def test_accept_records_message_params_and_log(remote_mx, port):
    mx = remote_mx(host=HOST, port=port)
    with client(port=port) as s:
        s.ehlo()
        assert s.ehlo_resp.decode().splitlines()[0] == "mx1.example.test"
        for ext in ("size", "8bitmime", "smtputf8", "pipelining", "dsn",
                    "enhancedstatuscodes"):
            assert s.has_extn(ext), ext
        assert s.esmtp_features["size"] == "33554432"
        for ext in ("starttls", "chunking", "auth"):
            assert not s.has_extn(ext), ext
        s.sendmail("sénder@remote.test", ["bob@remote.test", "carol@remote.test"], MESSAGE,
                   mail_options=["SMTPUTF8", "BODY=8BITMIME", "RET=HDRS", "ENVID=env+2Bid"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@remote.test"])
        code, text = s.rset()
        assert (code, text) == (250, b"2.0.0 OK")  # enhanced code added to aiosmtpd's text
    [m] = mx.wait_messages(1)
    assert m.mail_from == "sénder@remote.test"
    assert m.rcpt_tos == ["bob@remote.test", "carol@remote.test"]
    assert m.content == MESSAGE  # dot-unstuffed, CRLF and 8-bit bytes intact
    assert m.eight_bit and m.smtputf8 and m.body == "8BITMIME" and m.esmtp
    # smtplib adds size= itself; words are recorded as sent, keywords upper-cased in params
    assert m.mail_options == [f"size={len(MESSAGE)}", "SMTPUTF8", "BODY=8BITMIME",
                              "RET=HDRS", "ENVID=env+2Bid"]
    assert m.mail_params == {"SMTPUTF8": True, "BODY": "8BITMIME",
                             "SIZE": str(len(MESSAGE)), "RET": "HDRS",
                             "ENVID": "env+2Bid"}
    assert m.rcpt_params["bob@remote.test"] == {"NOTIFY": "SUCCESS,FAILURE",
                                                "ORCPT": "rfc822;Bob@remote.test"}
    assert m.rcpt_options.count("ORCPT=rfc822;Bob@remote.test") == 2  # as sent, case kept
    assert m.tls is False and m.tls_version is None
    assert m.peer_ip == "127.0.0.1" and m.helo == "client.test" and m.connection == 1
    assert m.parsed()["Subject"] == "héllo"
    assert m.reply.startswith("250 2.0.0 Ok: queued as ")
    assert mx.transactions == [("sénder@remote.test", ["bob@remote.test",
                                                       "carol@remote.test"], "accepted")]
    log = mx.log
    assert log[0] == "ehlo client.test"
    assert [l.split()[0].upper() for l in log] == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA",
                                                   "RSET", "QUIT"]
    assert "Grüße" not in " ".join(log)  # message data is not in the command log
    assert mx.pipelined == []  # smtplib waits for every reply
    mx.wait_idle(5)
    assert (mx.connections, mx.current, mx.max_concurrent) == (1, 0, 1)
    assert mx.errors == []


def test_null_sender_several_messages_per_connection(remote_mx, port):
    mx = remote_mx(host=HOST, port=port)
    with client(port=port) as s:
        s.sendmail("<>", ["bob@remote.test"], b"Subject: bounce\r\n\r\nx\r\n")
        s.sendmail("a@remote.test", ["bob@remote.test"], b"Subject: two\r\n\r\ny\r\n")
    msgs = mx.wait_messages(2)
    assert [m.mail_from for m in msgs] == ["", "a@remote.test"]
    assert [m.connection for m in msgs] == [1, 1]
    assert msgs[0].reply != msgs[1].reply  # distinct queue ids
    assert mx.connections == 1


def test_tempfail(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="tempfail")
    with client(port=port) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("a@remote.test", ["bob@remote.test", "c@remote.test"], b"x\r\n")
        assert e.value.recipients["bob@remote.test"] == (
            451, b"4.3.0 Temporary failure, try again later")
    [t] = mx.wait_transactions(1)
    assert t == ("a@remote.test", ["bob@remote.test", "c@remote.test"], "tempfail")
    assert t.accepted_rcpts == [] and t.reply.startswith("451 4.3.0")
    assert mx.messages == []


def test_tempfail_then_accept_counts_transactions(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="tempfail_then_accept", tempfail_count=2)
    results = []
    for _ in range(3):  # a new connection per attempt, like a retrying client
        with client(port=port) as s:
            try:
                s.sendmail("a@remote.test", ["bob@remote.test"], b"Subject: t\r\n\r\nx\r\n")
                results.append("ok")
            except smtplib.SMTPRecipientsRefused as e:
                results.append(e.recipients["bob@remote.test"][0])
    assert results == [451, 451, "ok"]
    assert [t.outcome for t in mx.wait_transactions(3)] == ["tempfail", "tempfail",
                                                            "accepted"]
    assert len(mx.messages) == 1 and mx.connections == 3


def test_reject(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="reject")
    with client(port=port) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("a@remote.test", ["nobody@remote.test"], b"x\r\n")
        assert e.value.recipients["nobody@remote.test"] == (550, b"5.1.1 No such user")
    assert [t.outcome for t in mx.wait_transactions(1)] == ["rejected"]
    assert mx.messages == []


def test_reject_data(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="reject_data")
    with client(port=port) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@remote.test", ["bob@remote.test"], b"x\r\n")
        assert e.value.smtp_code == 554 and e.value.smtp_error.startswith(b"5.6.0")
    [t] = mx.wait_transactions(1)
    assert t.outcome == "rejected" and t.accepted_rcpts == ["bob@remote.test"]
    assert mx.messages == []


def test_callable_behaviour_and_runtime_switch(remote_mx, port):
    seen = []

    def decide(peer, msg):
        seen.append((peer, msg.rcpt_tos))
        return "452 4.2.2 Mailbox full" if b"full" in msg.content else "250 2.0.0 fine"

    mx = remote_mx(host=HOST, port=port, behaviour=decide)
    with client(port=port) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@remote.test", ["bob@remote.test"], b"the box is full\r\n")
        assert (e.value.smtp_code, e.value.smtp_error) == (452, b"4.2.2 Mailbox full")
        s.sendmail("a@remote.test", ["bob@remote.test"], b"fine\r\n")
        mx.behaviour = "reject"  # read per decision
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@remote.test", ["bob@remote.test"], b"again\r\n")
    assert seen == [(mx, ["bob@remote.test"])] * 2
    assert [m.reply for m in mx.messages] == ["250 2.0.0 fine"]
    assert [t.outcome for t in mx.wait_transactions(3)] == ["tempfail", "accepted",
                                                            "rejected"]


def test_callable_that_raises_gives_tempfail_and_error(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour=lambda p, m: 1 / 0)
    with client(port=port) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@remote.test", ["bob@remote.test"], b"x\r\n")
        assert e.value.smtp_code == 451
    assert "ZeroDivisionError" in mx.errors[0]


def test_hang_times_out_the_client(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="hang")
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
        client(port=port, timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 3
    mx.wait_idle(5)
    assert mx.connections == 1 and mx.messages == [] and mx.transactions == []
    # a hung connection stays open until the client goes away
    sock = socket.create_connection((HOST, port), timeout=5)
    sock.sendall(b"EHLO blind.test\r\n")
    sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        sock.recv(10)
    mx.wait_for(lambda p: p.log == ["EHLO blind.test"], 5, "blind EHLO logged")
    assert mx.current == 1
    sock.close()
    mx.wait_idle(5)


def test_close_disconnects_at_once(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="close")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client(port=port, timeout=5)
    mx.wait_idle(5)
    assert mx.connections == 1 and mx.transactions == []


def test_starttls_with_test_ca(remote_mx, mx_ca, port):
    ca, issue = mx_ca
    cert, key = issue("mx1.example.test")
    mx = remote_mx(host=HOST, port=port, starttls=(cert, key))
    ctx = ssl.create_default_context(cafile=ca)
    with client(port=port) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        s._host = "mx1.example.test"  # verify the MX name while connecting to its address
        s.starttls(context=ctx)
        s.ehlo()
        assert not s.has_extn("starttls")  # not offered again inside TLS
        assert s.has_extn("smtputf8")
        s.sendmail("a@remote.test", ["bob@remote.test"], b"Subject: tls\r\n\r\nsecret\r\n")
    [m] = mx.wait_messages(1)
    assert m.tls is True and m.tls_version == "TLSv1.3" and m.tls_cipher
    assert m.tls_sni == "mx1.example.test"
    assert mx.starttls == 1 and mx.tls_failures == 0
    assert [l.split()[0].upper() for l in mx.log] == ["EHLO", "STARTTLS", "EHLO", "MAIL",
                                                      "RCPT", "DATA", "QUIT"]


def test_starttls_wrong_name_fails_verification(remote_mx, mx_ca, port):
    ca, issue = mx_ca
    cert, key = issue("wrong.example.test", alt_names=["127.0.0.9"])
    mx = remote_mx(host=HOST, port=port, starttls=(cert, key))
    ctx = ssl.create_default_context(cafile=ca)
    with client(port=port) as s:
        s.ehlo()
        s._host = "mx1.example.test"
        with pytest.raises(ssl.SSLCertVerificationError) as e:
            s.starttls(context=ctx)
        assert "mx1.example.test" in str(e.value)
    mx.wait_for(lambda p: p.tls_failures == 1, 5, "the failed handshake")
    mx.wait_idle(5)
    assert mx.starttls == 1 and mx.messages == []
    # the same CA's certificate does verify for its own names (incl. the IP SAN)
    with client(port=port) as s:
        s.ehlo()
        s._host = "127.0.0.9"
        s.starttls(context=ctx)
        s.noop()


def test_tls_version_recorded_with_tls12_client(remote_mx, mx_ca, port):
    ca, issue = mx_ca
    mx = remote_mx(host=HOST, port=port, starttls=issue("mx1.example.test"))
    ctx = ssl.create_default_context(cafile=ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with client(port=port) as s:
        s._host = "mx1.example.test"
        s.starttls(context=ctx)
        s.sendmail("a@remote.test", ["bob@remote.test"], b"x\r\n")
    assert mx.wait_messages(1)[0].tls_version == "TLSv1.2"


def test_concurrency_with_delay(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, delay=0.3)
    errors = []
    barrier = threading.Barrier(3)

    def one(i):
        try:
            barrier.wait(5)
            with client(port=port) as s:
                s.sendmail("a@remote.test", [f"u{i}@remote.test"], b"x\r\n")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    elapsed = time.monotonic() - t0
    assert errors == []
    mx.wait_messages(3)
    mx.wait_idle(5)
    assert mx.connections == 3 and mx.max_concurrent == 3 and mx.current == 0
    # greeting, EHLO, MAIL, RCPT, DATA, end of data, QUIT: 7 delayed replies each, in
    # parallel rather than one after another
    assert 7 * 0.3 <= elapsed < 3 * 7 * 0.3


def test_ehlo_drop_and_extra(remote_mx, port):
    mx = remote_mx(host=HOST, port=port,
                   ehlo_drop=("SMTPUTF8", "8bitmime", "PIPELINING", "SIZE", "DSN"),
                   ehlo_extra=("XFOO bar",))
    with client(port=port) as s:
        s.ehlo()
        for ext in ("smtputf8", "8bitmime", "pipelining", "size", "dsn"):
            assert not s.has_extn(ext), ext
        assert s.has_extn("enhancedstatuscodes") and s.esmtp_features["xfoo"] == "bar"
        # parameters of extensions not advertised are refused
        for opt in ("SMTPUTF8", "BODY=8BITMIME", "SIZE=10", "RET=FULL", "XFOO=1"):
            assert s.docmd(f"MAIL FROM:<a@remote.test> {opt}")[0] == 555, opt
        s.mail("a@remote.test")
        assert s.docmd("RCPT TO:<b@remote.test> NOTIFY=NEVER")[0] == 555
        assert s.rcpt("b@remote.test")[0] == 250
        s.rset()
        # without SMTPUTF8, aiosmtpd refuses non-ASCII commands
        s.send("MAIL FROM:<sénder@remote.test>\r\n".encode())
        assert s.getreply()[0] == 500
    assert mx.messages == []


def test_size_limit(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, size_limit=1000)
    with client(port=port) as s:
        s.ehlo()
        assert s.esmtp_features["size"] == "1000"
        code, text = s.mail("a@remote.test", ["SIZE=1001"])
        assert (code, text[:5]) == (552, b"5.3.4")
        # without SIZE= (smtplib's mail() adds none) too much data is refused at the end
        assert s.mail("a@remote.test")[0] == 250
        assert s.rcpt("bob@remote.test")[0] == 250
        assert s.data(b"x" * 900 + b"\r\n" * 60)[0] == 552
        s.sendmail("a@remote.test", ["bob@remote.test"], b"y" * 500 + b"\r\n")
    assert len(mx.messages) == 1
    assert [t.outcome for t in mx.wait_transactions(2)] == ["rejected", "accepted"]


def test_dsn_parameter_syntax_is_checked(remote_mx, port):
    remote_mx(host=HOST, port=port)
    with client(port=port) as s:
        s.ehlo()
        assert s.mail("a@remote.test", ["RET=ALL"])[0] == 501
        assert s.mail("a@remote.test", ["ENVID=a b+zz"])[0] == 501
        assert s.mail("a@remote.test", ["SMTPUTF8", "SMTPUTF8"])[0] == 501
        assert s.mail("a@remote.test", ["ENVID=x+2B"])[0] == 250
        for bad in ("NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "ORCPT=bob@remote.test",
                    "ORCPT=rfc822;bob=x@remote.test"):
            assert s.rcpt("b@remote.test", [bad])[0] == 501, bad
        assert s.rcpt("b@remote.test", ["NOTIFY=NEVER", "ORCPT=utf-8;b\u00e9@remote.test"]
                      )[0] == 250


def test_helo_and_pipelining_detection(remote_mx, port):
    mx = remote_mx(host=HOST, port=port)
    r = Raw(port)
    try:
        assert r.reply()[0].startswith("220 mx1.example.test ESMTP")
        r.send("HELO old.test\r\n")
        assert r.reply() == ["250 mx1.example.test"]
        assert r.send("MAIL FROM:<a@remote.test> SIZE=10\r\n") is None
        assert r.reply()[0].startswith("501 5.5.4")  # no parameters after HELO
        r.send("EHLO new.test\r\n")
        assert r.reply()[-1] == "250 ENHANCEDSTATUSCODES"
        r.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\n"
               "RCPT TO:<c@remote.test>\r\nDATA\r\n")
        assert [r.reply()[0][:3] for _ in range(4)] == ["250", "250", "250", "354"]
        r.send("Subject: p\r\n\r\n..dot\r\n.\r\n")
        assert r.reply()[0].startswith("250 2.0.0 Ok: queued as")
        r.send("QUIT\r\n")
        assert r.reply() == ["221 2.0.0 Bye"]
    finally:
        r.close()
    [m] = mx.wait_messages(1)
    assert m.content == b"Subject: p\r\n\r\n.dot\r\n" and m.helo == "new.test" and m.esmtp
    # one TCP segment: everything after MAIL arrived before MAIL's reply was sent
    assert mx.pipelined == ["RCPT TO:<b@remote.test>", "RCPT TO:<c@remote.test>", "DATA"]
    assert mx.log[0] == "HELO old.test" and mx.errors == []


def test_pipelined_tempfail_refuses_data(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="tempfail")
    r = Raw(port)
    try:
        r.reply()
        r.send("EHLO c.test\r\n")
        r.reply()
        r.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\n")
        replies = [r.reply()[0] for _ in range(3)]
        assert [x[:9] for x in replies] == ["250 2.1.0", "451 4.3.0", "554 5.5.1"]
        r.send("RSET\r\n")
        assert r.reply() == ["250 2.0.0 OK"]
    finally:
        r.close()
    [t] = mx.wait_transactions(1)
    assert t.outcome == "tempfail" and t.replies == [
        "451 4.3.0 Temporary failure, try again later"]
    assert mx.pipelined == ["RCPT TO:<b@remote.test>", "DATA"] and mx.messages == []


def test_data_before_354_is_a_recorded_violation(remote_mx, port):
    mx = remote_mx(host=HOST, port=port)
    r = Raw(port)
    try:
        r.reply()
        r.send("EHLO c.test\r\n")
        r.reply()
        r.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\nbody\r\n.\r\n")
        assert [r.reply()[0][:3] for _ in range(4)] == ["250", "250", "354", "250"]
    finally:
        r.close()
    mx.wait_messages(1)
    assert any("before the 354" in e for e in mx.errors)


def test_chunking_bdat(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, chunking=True)
    r = Raw(port)
    try:
        r.reply()
        r.send("EHLO c.test\r\n")
        assert "CHUNKING" in [l[4:] for l in r.reply()]
        body1, body2 = b"Subject: b\r\n\r\n.no unstuffing\r\n", b"tail\r\n"
        r.send(b"MAIL FROM:<a@remote.test> BODY=8BITMIME\r\nRCPT TO:<b@remote.test>\r\n"
               + b"BDAT %d\r\n" % len(body1) + body1 + b"BDAT %d LAST\r\n" % len(body2)
               + body2)
        replies = [r.reply()[0] for _ in range(4)]
        assert replies[:3] == ["250 2.1.0 Ok", "250 2.1.5 Ok",
                               f"250 2.0.0 {len(body1)} octets received"]
        assert replies[3].startswith("250 2.0.0 Ok: queued as")
        r.send("BDAT 0 LAST\r\n")
        assert r.reply()[0].startswith("503")
    finally:
        r.close()
    [m] = mx.wait_messages(1)
    assert m.content == body1 + body2 and m.chunked
    assert [l.split()[0] for l in mx.log] == ["EHLO", "MAIL", "RCPT", "BDAT", "BDAT", "BDAT"]


def test_bdat_not_recognised_without_chunking(remote_mx, port):
    mx = remote_mx(host=HOST, port=port)
    with client(port=port) as s:
        s.ehlo()
        assert not s.has_extn("chunking")
        s.mail("a@remote.test")
        s.rcpt("b@remote.test")
        assert s.docmd("BDAT 3 LAST")[0] == 500
    assert "BDAT 3 LAST" in mx.log


def test_peers_share_a_port_on_different_addresses(port):
    with RemoteMX(host="127.0.0.3", port=port, hostname="mx2.example.test") as mx2, \
            RemoteMX(host="127.0.0.4", port=port, behaviour="reject",
                     hostname="mx3.example.test") as mx3:
        with client("127.0.0.3", port) as s:
            assert s.ehlo_or_helo_if_needed() is None
            assert s.ehlo_resp.startswith(b"mx2.example.test")
            s.sendmail("a@remote.test", ["b@remote.test"], b"x\r\n")
        with client("127.0.0.4", port) as s:
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                s.sendmail("a@remote.test", ["b@remote.test"], b"x\r\n")
        assert len(mx2.messages) == 1 and mx3.messages == []
        # a second peer on a taken address fails to start, with the bind error
        with pytest.raises(OSError):
            RemoteMX(host="127.0.0.3", port=port).start()


def test_stop_closes_connections_and_restart(port):
    mx = RemoteMX(host=HOST, port=port, behaviour="hang")
    mx.start()
    hung = socket.create_connection((HOST, port), timeout=5)
    s = socket.create_connection((HOST, port), timeout=5)
    mx.wait_for(lambda p: p.current == 2, 5, "2 open connections")
    t0 = time.monotonic()
    mx.stop()
    assert time.monotonic() - t0 < 2
    assert hung.recv(10) == b""  # closed by stop()
    hung.close()
    s.close()
    assert mx.connections == 2 and mx.current == 0
    mx.stop()  # twice is fine
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=5)
    # the same address and port again, right away, with a session open at stop()
    with RemoteMX(host=HOST, port=port) as again:
        c = client(port=port)
        c.ehlo()
    with pytest.raises(smtplib.SMTPServerDisconnected):
        c.noop()
    c.close()
    assert again.connections == 1


def test_wait_messages_times_out_with_a_useful_message(remote_mx, port):
    mx = remote_mx(host=HOST, port=port, behaviour="tempfail")
    with client(port=port) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            s.sendmail("a@remote.test", ["b@remote.test"], b"x\r\n")
    t0 = time.monotonic()
    with pytest.raises(AssertionError) as e:
        mx.wait_messages(1, timeout=0.3)
    assert time.monotonic() - t0 < 1.5
    text = str(e.value)
    assert "1 message(s)" in text and "tempfail" in text and "rcpt TO:<b@remote.test>" in text


def test_unknown_behaviour_is_refused():
    with pytest.raises(ValueError):
        RemoteMX(host=HOST, port=25000, behaviour="sometimes")


def test_make_test_ca_certificates(tmp_path):
    ca, issue = make_test_ca(tmp_path)
    cert, key = issue("mx1.example.test", alt_names=["mx.example.test", "127.0.0.5"])
    cert2, _ = issue("mx1.example.test")
    assert cert != cert2 and os.path.exists(ca) and oct(os.stat(key).st_mode & 0o777) == "0o600"
    info = ssl._ssl._test_decode_cert(cert)
    assert ("DNS", "mx1.example.test") in info["subjectAltName"]
    assert ("DNS", "mx.example.test") in info["subjectAltName"]
    assert ("IP Address", "127.0.0.5") in info["subjectAltName"]
    assert info["issuer"] == ((("commonName", "Remote MX Test CA"),),)
