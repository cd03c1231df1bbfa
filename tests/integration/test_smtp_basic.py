"""MX listener basics: delivery with real clients, EHLO, simple commands, PIPELINING, BDAT."""

import os
import re
import subprocess
import time

from helpers import (
    HOSTNAME,
    RawSMTP,
    dot_stuff,
    headers_named,
    make_message,
    queue_id_from,
    smtp_client,
    unique_token,
)


def test_delivery_with_smtplib(postern):
    msg, token = make_message(body="line one\r\n.leading dot\r\n..two dots\r\nlast\r\n")
    with smtp_client(postern.port()) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert s.mail("sender@remote.test")[0] == 250
        assert s.rcpt("alice@example.test")[0] == 250
        code, resp = s.data(msg)
        assert code == 250, resp
        qid = queue_id_from(resp)
    [m] = postern.wait_exact("alice@example.test", [token])
    assert b"\r" not in m, "Maildir files must use LF line endings"
    head = m.split(b"\n\n", 1)[0].decode()
    assert head.startswith("Return-Path:"), head[:200]
    assert headers_named(m, "Return-Path") == ["<sender@remote.test>"]
    assert [v.lower() for v in headers_named(m, "Delivered-To")] == ["alice@example.test"]
    received = headers_named(m, "Received")
    assert received, "a Received: header must be added"
    assert HOSTNAME in received[0], received[0]
    body = m.split(b"\n\n", 1)[1]
    # smtplib dot-stuffs; the server must un-stuff.
    assert body == b"line one\n.leading dot\n..two dots\nlast\n", body
    assert qid in postern.log_text(), "the queue id must appear in the log"


def test_banner_and_ehlo_keywords(postern):
    with smtp_client(postern.port()) as s:
        code, _ = s.ehlo()
        assert code == 250
        f = s.esmtp_features
        for kw in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                   "chunking", "starttls"):
            assert kw in f, f"EHLO lacks {kw.upper()}: {f}"
        assert re.fullmatch(r"\d+", f["size"].strip()), f"SIZE needs a number: {f['size']!r}"
        assert int(f["size"]) > 0
        assert "auth" not in f, "AUTH must never be offered on the MX listener"
    with RawSMTP(postern.port()) as c:
        banner = c.reply()
        assert banner.code == 220
        assert banner.lines[0].startswith(HOSTNAME), banner
        r = c.cmd("EHLO client.test")
        assert r.code == 250 and r.lines[0].startswith(HOSTNAME), r


def test_mx_after_starttls_no_auth(postern):
    with smtp_client(postern.port()) as s:
        s.ehlo()
        s.starttls(context=postern.client_context())
        code, _ = s.ehlo()
        assert code == 250
        assert "starttls" not in s.esmtp_features
        assert "auth" not in s.esmtp_features, "AUTH must never be offered on MX, even in TLS"
        code, resp = s.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQtcHc=")
        assert code >= 500, (code, resp)
        # and mail still flows over TLS on MX
        msg, token = make_message()
        s.sendmail("sender@remote.test", ["alice@example.test"], msg)
    [m] = postern.wait_exact("alice@example.test", [token])
    assert "TLS" in headers_named(m, "Received")[0]


def test_helo(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        r = c.cmd("HELO client.test")
        assert r.code == 250, r
        msg, token = make_message()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
    postern.wait_exact("alice@example.test", [token])


def test_vrfy_answers_252_without_disclosure(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        known = c.cmd("VRFY alice@example.test")
        unknown = c.cmd("VRFY nobody-here@example.test")
        plain = c.cmd("VRFY alice")
        assert known.code == 252, known
        assert unknown.code == 252, unknown
        assert plain.code == 252, plain
        assert known.text.replace("alice@example.test", "X") == \
            unknown.text.replace("nobody-here@example.test", "X"), (known, unknown)
        for r in (known, unknown, plain):
            assert re.match(r"2\.\d\.\d ", r.lines[-1]), f"no enhanced status code: {r}"


def test_help_noop_rset_quit(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        r = c.cmd("HELP")
        assert r.code in (211, 214), r
        r = c.cmd("NOOP")
        assert r.code == 250 and r.lines[-1].startswith("2.0.0"), r
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        r = c.cmd("RSET")
        assert r.code == 250 and r.lines[-1].startswith("2.0.0"), r
        # the transaction is gone
        r = c.cmd("DATA")
        assert r.code in (503, 554), f"DATA after RSET: {r}"
        r = c.cmd("QUIT")
        assert r.code == 221 and r.lines[-1].startswith("2.0.0"), r
        closed, data = c.closed_within(5)
        assert closed and data == b"", (closed, data)


def test_unknown_user_5_1_1(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<nobody@example.test>")
        assert r.code == 550 and "5.1.1" in r.text, r
        # a good recipient in the same transaction still works
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.code == 250, r


def test_unknown_command_500(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        r = c.cmd("FROBNICATE now")
        assert r.code == 500, r
        assert re.match(r"5\.5\.\d ", r.lines[-1]), r
        # session goes on
        assert c.cmd("NOOP").code == 250


def test_bad_sequence_503(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        r = c.cmd("MAIL FROM:<sender@remote.test>")
        assert r.code == 503, f"MAIL before EHLO: {r}"
        c.ehlo()
        r = c.cmd("RCPT TO:<alice@example.test>")
        assert r.code == 503, f"RCPT before MAIL: {r}"
        r = c.cmd("DATA")
        assert r.code == 503, f"DATA before MAIL: {r}"
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("MAIL FROM:<sender@remote.test>")
        assert r.code == 503, f"nested MAIL: {r}"
        r = c.cmd("DATA")
        assert r.code in (503, 554), f"DATA without RCPT: {r}"
        assert c.cmd("NOOP").code == 250


def test_syntax_errors_501(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        for bad in ("MAIL FROM:", "MAIL FROM:<unterminated", "MAIL TO:<a@b.test>",
                    "MAIL FROM:<a@b.test> NOSUCHPARAM=1"):
            r = c.cmd(bad)
            assert r.code in (501, 555, 500), f"{bad!r}: {r}"
        # a missing required argument is a parameter syntax error (RFC 5321 4.2.3: 501)
        for bad in ("EHLO", "HELO"):
            r = c.cmd(bad)
            assert r.code == 501, f"{bad!r}: {r}"
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250


def test_pipelining(postern):
    msg, token = make_message()
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        c.send(b"MAIL FROM:<sender@remote.test>\r\n"
               b"RCPT TO:<alice@example.test>\r\n"
               b"RCPT TO:<nobody@example.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\n"
               b"DATA\r\n")
        codes = [c.reply().code for _ in range(5)]
        assert codes == [250, 250, 550, 250, 354], codes
        # message, then RSET/MAIL/RCPT/DATA pipelined after the final dot
        msg2, token2 = make_message(to="bob@example.test")
        c.send(dot_stuff(msg) + b".\r\n"
               b"MAIL FROM:<sender2@remote.test>\r\n"
               b"RCPT TO:<bob@example.test>\r\n"
               b"DATA\r\n")
        r = c.reply()
        assert r.code == 250, r
        queue_id_from(r.text)
        codes = [c.reply().code for _ in range(3)]
        assert codes == [250, 250, 354], codes
        c.send(dot_stuff(msg2) + b".\r\nQUIT\r\n")
        assert c.reply().code == 250
        assert c.reply().code == 221
    postern.wait_exact("alice@example.test", [token])
    postern.wait_exact("bob@example.test", [token, token2])


def test_bdat_chunking(postern):
    token = unique_token()
    body = (f"Subject: bdat {token}\r\nMessage-ID: <{token}@client.test>\r\n\r\n"
            ".not stuffed\r\nsecond line\r\n..two\r\nend\r\n").encode()
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        # split inside a CRLF and inside a line
        cut1 = body.index(b"\r\n.not") + 1
        cut2 = body.index(b"second") + 3
        parts = [body[:cut1], body[cut1:cut2], body[cut2:]]
        c.send(b"BDAT %d\r\n" % len(parts[0]) + parts[0])
        r = c.reply()
        assert r.code == 250, r
        c.send(b"BDAT %d\r\n" % len(parts[1]) + parts[1])
        assert c.reply().code == 250
        c.send(b"BDAT %d LAST\r\n" % len(parts[2]) + parts[2])
        r = c.reply()
        assert r.code == 250, r
        queue_id_from(r.text)
        # BDAT 0 LAST with everything pipelined, and a chunk that holds "\r\n.\r\n"
        token2 = unique_token()
        body2 = (f"Subject: bdat2 {token2}\r\n\r\nbefore\r\n.\r\nafter the dot line\r\n").encode()
        c.send(b"MAIL FROM:<sender@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
               + b"BDAT %d\r\n" % len(body2) + body2 + b"BDAT 0 LAST\r\n")
        codes = [c.reply() for _ in range(4)]
        assert [r.code for r in codes] == [250, 250, 250, 250], codes
        queue_id_from(codes[3].text)
        assert c.cmd("QUIT").code == 221
    msgs = postern.wait_exact("alice@example.test", [token, token2])
    m1 = [m for m in msgs if token.encode() in m][0]
    assert m1.split(b"\n\n", 1)[1] == b".not stuffed\nsecond line\n..two\nend\n"
    m2 = [m for m in msgs if token2.encode() in m][0]
    assert m2.split(b"\n\n", 1)[1] == b"before\n.\nafter the dot line\n"


def test_bdat_and_data_do_not_mix(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        c.send(b"BDAT 5\r\nabcde")
        assert c.reply().code == 250
        r = c.cmd("DATA")
        assert r.code == 503, f"DATA after BDAT: {r}"


def test_swaks(postern):
    token = unique_token()
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(postern.port()),
         "--ehlo", "client.test", "--from", "swaks@remote.test", "--to", "alice@example.test",
         "--header", f"Subject: swaks {token}", "--body", f"body {token}",
         "--timeout", "10"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"<[-~] *250 2\.0\.0 Ok: queued as [0-9A-Fa-f]{16}", res.stdout), res.stdout
    [m] = postern.wait_exact("alice@example.test", [token])
    assert headers_named(m, "Return-Path") == ["<swaks@remote.test>"]


def test_swaks_starttls_on_mx(postern):
    token = unique_token()
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(postern.port()), "--tls",
         "--ehlo", "client.test", "--from", "swaks@remote.test", "--to", "bob@example.test",
         "--header", f"Subject: swaks-tls {token}", "--timeout", "10"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    postern.wait_exact("bob@example.test", [token])


def test_curl(postern, tmp_path):
    msg, token = make_message(sender="curl@remote.test")
    path = tmp_path / "mail.eml"
    path.write_bytes(msg)
    res = subprocess.run(
        ["curl", "-sS", "--max-time", "20", f"smtp://127.0.0.1:{postern.port()}/client.test",
         "--mail-from", "curl@remote.test", "--mail-rcpt", "alice@example.test",
         "--mail-rcpt", "bob@example.test", "-T", str(path)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    postern.wait_exact("alice@example.test", [token])
    postern.wait_exact("bob@example.test", [token])


def test_curl_starttls(postern, tmp_path, tls_material):
    msg, token = make_message(sender="curl@remote.test")
    path = tmp_path / "mail.eml"
    path.write_bytes(msg)
    res = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", tls_material["ca"],
         f"smtp://127.0.0.1:{postern.port()}/client.test",
         "--mail-from", "curl@remote.test", "--mail-rcpt", "alice@example.test",
         "-T", str(path)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    postern.wait_exact("alice@example.test", [token])


def test_8bitmime_body_intact(postern):
    body = "Grüße aus Köln — ünïcödé ✓\r\n"
    msg, token = make_message(body=body, extra_headers=["Content-Transfer-Encoding: 8bit"])
    with smtp_client(postern.port()) as s:
        s.ehlo()
        s.sendmail("sender@remote.test", ["alice@example.test"], msg,
                   mail_options=["BODY=8BITMIME"])
    [m] = postern.wait_exact("alice@example.test", [token])
    assert m.split(b"\n\n", 1)[1] == body.replace("\r\n", "\n").encode("utf-8")


def test_null_sender(postern):
    msg, token = make_message(sender="MAILER-DAEMON@remote.test")
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        assert c.reply().code == 250
    [m] = postern.wait_exact("alice@example.test", [token])
    assert headers_named(m, "Return-Path") == ["<>"]


def test_many_messages_one_session(postern):
    tokens = []
    with smtp_client(postern.port()) as s:
        s.ehlo()
        for i in range(20):
            msg, token = make_message(to="bob@example.test")
            tokens.append(token)
            s.sendmail("sender@remote.test", ["bob@example.test"], msg)
    postern.wait_exact("bob@example.test", tokens)


def test_maildir_layout(postern):
    msg, token = make_message()
    with smtp_client(postern.port()) as s:
        s.ehlo()
        s.sendmail("sender@remote.test", ["alice@example.test"], msg)
    postern.wait_exact("alice@example.test", [token])
    md = postern.maildir("alice@example.test")
    for sub in ("cur", "new", "tmp"):
        assert os.path.isdir(os.path.join(md, sub)), f"Maildir lacks {sub}/"
    assert os.listdir(os.path.join(md, "tmp")) == [], "tmp/ must be empty after delivery"


def test_ehlo_resets_transaction(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        c.ehlo()
        r = c.cmd("DATA")
        assert r.code in (503, 554), f"transaction survived a new EHLO: {r}"
        r = c.cmd("RCPT TO:<alice@example.test>")
        assert r.code == 503, r


def test_binary_8bit_body_intact(postern):
    octets = bytes(b for b in range(1, 256) if b not in (10, 13))
    body = b"".join(octets[i:i + 60] + b"\r\n" for i in range(0, len(octets), 60))
    token = unique_token()
    msg = (f"Subject: 8bit {token}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").encode() + body
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test> BODY=8BITMIME").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
    [m] = postern.wait_exact("alice@example.test", [token])
    assert m.split(b"\n\n", 1)[1] == body.replace(b"\r\n", b"\n")


def test_postmaster(postern):
    # RFC 5321 4.5.1: postmaster@<served domain> and the bare <Postmaster> MUST be accepted.
    # The first user of a domain became its postmaster when it was added.
    aliases = postern.cli("alias", "list").stdout
    assert "postmaster@example.test" in aliases and "alice@example.test" in aliases, aliases
    msg, token = make_message(to="postmaster@example.test")
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<PostMaster@example.test>")
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<Postmaster>")
        assert r.code == 250, f"RCPT TO:<Postmaster> (no domain): {r}"
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        assert c.reply().code == 250
    # both name alice's mailbox: one copy
    postern.wait_exact("alice@example.test", [token])


def test_postmaster_alias_is_not_overwritten(postern):
    postern.cli("alias", "del", "postmaster@example.test")
    postern.cli("alias", "add", "postmaster@example.test", "bob@example.test")
    postern.add_user("carol@example.test")
    aliases = postern.cli("alias", "list").stdout
    line = [l for l in aliases.splitlines() if l.startswith("postmaster@example.test")]
    assert line and "bob@example.test" in line[0] and "carol" not in line[0], aliases


def test_pipelining_flood_backpressure(postern):
    import threading
    n = 20000
    with RawSMTP(postern.port(), timeout=30) as c:
        c.reply()
        c.ehlo()
        sender = threading.Thread(target=lambda: c.send(b"NOOP\r\n" * n), daemon=True)
        sender.start()
        time.sleep(2)   # the client is not reading: the server must not buffer without bound
        codes = [c.reply().code for _ in range(n)]
        sender.join(30)
        assert codes.count(250) == n, f"{codes.count(250)} of {n} NOOPs answered 250"
        assert c.cmd("QUIT").code == 221
