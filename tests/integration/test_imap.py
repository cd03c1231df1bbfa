"""IMAP (RFC 9051 / RFC 3501 and extensions) against the real daemon: Python imaplib over
IMAPS and STARTTLS, a raw socket client for what imaplib cannot say (LITERAL+, pipelining,
broken input, IDLE, QRESYNC), messages delivered over SMTP, and curl's imap:// support.
"""

import imaplib
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from helpers import HOSTNAME, PASSWORDS, make_message, smtp_client, tls_client_context

ALICE = "alice@example.test"
BOB = "bob@example.test"


# ---- clients ----------------------------------------------------------------------------

def imaps(p, user=ALICE, login=True):
    c = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=tls_client_context(p.tls),
                          timeout=15)
    if login:
        c.login(user, PASSWORDS[user])
    return c


class Raw:
    """A line-level IMAP client: send a tagged command, collect responses (with literals)
    up to the tagged completion."""

    def __init__(self, p, tls=True, timeout=15, port=None):
        raw = socket.create_connection(("127.0.0.1", port or p.port("imaps" if tls else "imap")),
                                       timeout=timeout)
        if tls:
            raw = tls_client_context(p.tls).wrap_socket(raw, server_hostname=HOSTNAME)
        self.sock = raw
        self.buf = b""
        self.n = 0
        self.greeting = self.line()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed inside a literal")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self):
        """One response line with any literals inlined as (text, [literals])."""
        line = self.line()
        lits = []
        while True:
            m = re.search(rb"~?\{(\d+)\}$", line)
            if not m:
                return line, lits
            data = self.exact(int(m.group(1)))
            lits.append(data)
            line = line + b"\r\n" + data + self.line()

    def cmd(self, text, tag=None):
        self.n += 1
        tag = tag or f"t{self.n}"
        self.send(f"{tag} {text}\r\n")
        return self.collect(tag)

    def collect(self, tag):
        untagged = []
        lits = []
        while True:
            line, ls = self.response()
            lits += ls
            if line.startswith(tag.encode() + b" "):
                return untagged, line, lits
            untagged.append(line)

    def login(self, user=ALICE):
        u, t, _ = self.cmd(f'LOGIN "{user}" "{PASSWORDS[user]}"')
        assert b"OK" in t, t
        return t

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def deliver(p, to=ALICE, subject=None, body="Hello from the IMAP tests.\r\n", extra=()):
    msg, token = make_message(to=to, subject=subject, body=body, extra_headers=extra)
    with smtp_client(p.port("smtp")) as c:
        c.sendmail("sender@remote.test", [to], msg)
    return token


def deliver_n(p, n, to=ALICE, **kw):
    tokens = [deliver(p, to=to, **kw) for _ in range(n)]
    p.wait_exact(to, tokens, settle=0)
    return tokens


def ok(res):
    typ, data = res
    assert typ == "OK", data
    return data


# ---- connection, TLS, login ---------------------------------------------------------------

def test_imaps_greeting_capabilities_login_logout(postern):
    r = Raw(postern)
    assert r.greeting.startswith(b"* OK [CAPABILITY ")
    caps = r.greeting.split(b"[CAPABILITY ")[1].split(b"]")[0].split()
    for c in (b"IMAP4rev1", b"IMAP4rev2", b"AUTH=PLAIN", b"SASL-IR", b"LITERAL+", b"IDLE"):
        assert c in caps
    assert b"LOGINDISABLED" not in caps and b"STARTTLS" not in caps
    t = r.login()
    assert b"[CAPABILITY " in t
    for c in (b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"ESEARCH",
              b"QUOTA", b"APPENDLIMIT=", b"LIST-STATUS", b"BINARY", b"MULTIAPPEND"):
        assert c in t, c
    u, t, _ = r.cmd("LOGOUT")
    assert any(l.startswith(b"* BYE") for l in u) and b"OK" in t
    r.close()
    log = postern.log_text()
    assert re.search(r"login user=alice@example.test mechanism=LOGIN", log)


def test_imaplib_over_imaps(postern):
    c = imaps(postern)
    assert "IMAP4REV2" in c.capabilities or "IMAP4rev2" in c.capabilities
    ok(c.noop())
    typ, data = c.namespace()
    assert typ == "OK" and b'(("" "."))' in data[0]
    c.logout()


def test_plaintext_login_refused_before_starttls(postern):
    c = imaplib.IMAP4("127.0.0.1", postern.port("imap"), timeout=15)
    assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
    assert not any(x.startswith("AUTH=") for x in c.capabilities)
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        c.login(ALICE, PASSWORDS[ALICE])
    c.starttls(ssl_context=tls_client_context(postern.tls))
    assert "AUTH=PLAIN" in c.capabilities and "LOGINDISABLED" not in c.capabilities
    c.login(ALICE, PASSWORDS[ALICE])
    ok(c.select("INBOX"))
    c.logout()


def test_starttls_discards_pipelined_plaintext(postern):
    r = Raw(postern, tls=False)
    # The injected command rides in the same packet as STARTTLS.
    r.send(b"a STARTTLS\r\nb CAPABILITY\r\n")
    line = r.line()
    assert line.startswith(b"a OK"), line
    tls = tls_client_context(postern.tls).wrap_socket(r.sock, server_hostname=HOSTNAME)
    r.sock = tls
    r.buf = b""
    u, t, _ = r.cmd("NOOP", tag="c")
    # "b CAPABILITY" must never have been answered
    assert not any(l.startswith(b"b ") for l in u) and t.startswith(b"c OK")
    assert "discarded" in postern.log_text()
    r.close()


def test_authenticate_plain_and_sasl_ir(postern):
    c = imaps(postern, login=False)
    c.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode())
    assert c.state == "AUTH"
    c.logout()
    import base64
    r = Raw(postern)
    ir = base64.b64encode(f"\0{BOB}\0{PASSWORDS[BOB]}".encode()).decode()
    u, t, _ = r.cmd(f"AUTHENTICATE PLAIN {ir}")
    assert t.startswith(b"t1 OK [CAPABILITY"), t
    r.close()
    # cancelled exchange
    r = Raw(postern)
    r.send("x AUTHENTICATE PLAIN\r\n")
    assert r.line().startswith(b"+")
    r.send("*\r\n")
    assert r.line().startswith(b"x BAD")
    r.close()


def test_failed_logins_then_bye(postern):
    r = Raw(postern)
    for i in range(2):
        u, t, _ = r.cmd(f'LOGIN "{ALICE}" "wrong-{i}"')
        assert b"NO [AUTHENTICATIONFAILED]" in t
    u, t, _ = r.cmd(f'LOGIN "{ALICE}" "wrong-3"')
    assert b"NO [AUTHENTICATIONFAILED]" in t
    assert r.line().startswith(b"* BYE")
    with pytest.raises((EOFError, OSError)):
        r.line()
    assert "auth failed user=alice@example.test" in postern.log_text()


def test_commands_before_login_and_bad_syntax(postern):
    r = Raw(postern)
    u, t, _ = r.cmd("SELECT INBOX")
    assert t.startswith(b"t1 BAD")
    u, t, _ = r.cmd("FOO")
    assert t.startswith(b"t2 BAD")
    r.login()
    u, t, _ = r.cmd("FETCH 1 FLAGS")
    assert t.startswith(b"t4 BAD")   # not selected
    ok_ = r.cmd("SELECT INBOX")[1]
    assert b"OK" in ok_
    u, t, _ = r.cmd("FETCH 1:x FLAGS")
    assert b"BAD" in t
    u, t, _ = r.cmd("FETCH 1 (FLAGS")
    assert b"BAD" in t
    u, t, _ = r.cmd("SEARCH (FROM")
    assert b"BAD" in t
    u, t, _ = r.cmd("NOOP")
    assert b"OK" in t      # the connection lives on
    r.close()


def test_huge_nonsync_literal_is_not_buffered(postern):
    r = Raw(postern)
    r.login()
    # 64 MiB announced with LITERAL+ on a command that does not take big literals:
    # the server refuses it (BAD) and/or closes, without waiting for or keeping it.
    r.send("a LOGIN {67108864+}\r\n")
    r.sock.settimeout(10)
    try:
        line = r.line()
        assert b"BAD" in line or line.startswith(b"* BYE"), line
    except (EOFError, ConnectionError):
        pass
    r.close()


# ---- mailboxes ---------------------------------------------------------------------------

def test_list_special_use_and_extended(postern):
    c = imaps(postern)
    data = ok(c.list())
    text = b"\n".join(data)
    for name, attr in ((b"Sent", b"\\Sent"), (b"Drafts", b"\\Drafts"), (b"Trash", b"\\Trash"),
                       (b"Junk", b"\\Junk"), (b"Archive", b"\\Archive")):
        assert re.search(rb"\([^)]*" + re.escape(attr) + rb"[^)]*\) \".\" \"?" + name, text), text
    assert re.search(rb'\) "\." "?INBOX', text)
    r = Raw(postern)
    r.login()
    u, t, _ = r.cmd('LIST "" ""')
    assert u == [b'* LIST (\\Noselect) "." ""']
    u, t, _ = r.cmd('LIST (SPECIAL-USE) "" "*"')
    assert len(u) == 5 and not any(b"INBOX" in l for l in u)
    u, t, _ = r.cmd('LIST "" "*" RETURN (SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT))')
    assert b"OK" in t
    assert any(l.startswith(b"* STATUS") and b"MESSAGES 0" in l for l in u)
    assert any(b"\\Subscribed" in l for l in u)
    u, t, _ = r.cmd('LIST "" "%"')
    assert len([l for l in u if l.startswith(b"* LIST")]) >= 6
    r.close()


def test_create_rename_delete_subscribe(postern):
    c = imaps(postern)
    ok(c.create("Projects"))
    ok(c.create("Projects.2026"))
    typ, data = c.create("Projects")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    text = b"\n".join(ok(c.list('""', "Projects*")))
    assert b"\\HasChildren" in text and b"Projects.2026" in text
    ok(c.rename("Projects", "Work"))
    text = b"\n".join(ok(c.list('""', "*")))
    assert b"Work.2026" in text and b"Projects" not in text
    ok(c.subscribe("Work"))
    text = b"\n".join(ok(c.lsub('""', "*")))
    assert b"Work" in text
    ok(c.unsubscribe("Work"))
    assert ok(c.lsub('""', "W*")) == [None]
    ok(c.delete("Work.2026"))
    ok(c.delete("Work"))
    typ, data = c.delete("INBOX")
    assert typ == "NO"
    typ, data = c.select("Nope")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    # non-ASCII names travel as modified UTF-7 (RFC 3501 5.1.3)
    ok(c.create("&ZeVnLIqe-"))
    assert b"&ZeVnLIqe-" in b"\n".join(ok(c.list('""', "*")))
    c.logout()


def test_status_and_quota(postern):
    deliver_n(postern, 2)
    c = imaps(postern)
    typ, data = c.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY SIZE HIGHESTMODSEQ)")
    assert typ == "OK"
    m = re.search(rb"MESSAGES (\d+).*UIDNEXT (\d+).*UNSEEN (\d+)|MESSAGES (\d+)", data[0])
    assert b"MESSAGES 2" in data[0] and b"UNSEEN 2" in data[0] and b"SIZE " in data[0], data
    typ, data = c.getquotaroot("INBOX")
    assert typ == "OK"
    flat = b" ".join(x if isinstance(x, bytes) else b" ".join(x) for x in data)
    assert b'QUOTAROOT' in flat or b'""' in flat
    assert b"STORAGE" in flat
    typ, data = c._simple_command("SETQUOTA", '""', "(STORAGE 10)")
    assert typ == "NO"
    c.logout()


def test_append_appenduid_and_fetch_back(postern):
    c = imaps(postern)
    msg, token = make_message(subject="appended")
    typ, data = c.append("Drafts", "(\\Draft $Label)", imaplib.Time2Internaldate(time.time()),
                         msg)
    assert typ == "OK" and b"APPENDUID" in data[0], data
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1))
    ok(c.select("Drafts"))
    typ, data = c.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == msg
    assert b"\\Draft" in data[0][0] and b"$Label" in data[0][0]
    typ, data = c.append("NoSuchBox", None, None, msg)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    c.logout()


def test_append_too_big_refused_before_literal(make_postern):
    p = make_postern(config={"imap.max_append_size": "10K"})
    r = Raw(p)
    t = r.login()
    limit = int(re.search(rb"APPENDLIMIT=(\d+)", t).group(1))
    assert limit == 10240
    size = limit + 1
    r.send(f"a APPEND INBOX {{{size}}}\r\n")
    line = r.line()
    # no "+" continuation: the client must not send the literal
    assert line.startswith(b"a NO [TOOBIG]"), line
    u, t, _ = r.cmd("NOOP")
    assert b"OK" in t
    # the same with LITERAL+: refused, the octets skipped, the session lives
    r.send(f"b APPEND INBOX {{20+}}\r\n" + "x" * 20 + "\r\n")
    line = r.line()
    assert line.startswith(b"b OK") or line.startswith(b"b NO"), line
    u, t, _ = r.cmd("NOOP")
    assert b"OK" in t
    r.close()


def test_multiappend_and_literal_plus(postern):
    r = Raw(postern)
    r.login()
    m1, _ = make_message(subject="one")
    m2, _ = make_message(subject="two")
    r.send(b"a APPEND INBOX (\\Seen) {%d+}\r\n" % len(m1) + m1 +
           b" {%d+}\r\n" % len(m2) + m2 + b"\r\n")
    u, t, _ = r.collect("a")
    assert re.match(rb"a OK \[APPENDUID \d+ 1:2\]", t), t
    u, t, _ = r.cmd("STATUS INBOX (MESSAGES)")
    assert any(b"MESSAGES 2" in l for l in u)
    r.close()


# ---- selected state ----------------------------------------------------------------------

def test_select_fetch_items(postern):
    body = "Line one\r\nLine two\r\n"
    tokens = deliver_n(postern, 3, body=body)
    r = Raw(postern)
    r.login()
    u, t, _ = r.cmd("SELECT INBOX")
    assert b"* 3 EXISTS" in u and b"[READ-WRITE]" in t
    assert any(b"UIDVALIDITY" in l for l in u) and any(b"UIDNEXT" in l for l in u)
    u, t, lits = r.cmd("FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    assert b"OK" in t
    fetches = [l for l in u if re.match(rb"\* \d+ FETCH", l)]
    assert len(fetches) == 3
    f1 = fetches[0]
    assert b"INTERNALDATE \"" in f1 and b"RFC822.SIZE " in f1
    assert b"ENVELOPE (\"Mon, 23 Nov 2026 12:00:00 +0000\"" in f1, f1
    assert tokens[0].encode() in f1
    assert b"BODYSTRUCTURE (\"TEXT\" \"PLAIN\"" in f1.upper()
    size = int(re.search(rb"RFC822\.SIZE (\d+)", f1).group(1))
    u, t, lits = r.cmd("FETCH 1 BODY.PEEK[]")
    assert len(lits[0]) == size and lits[0].endswith(body.encode())
    assert b"\r\n" in lits[0] and b"\n\n" not in lits[0].replace(b"\r\n", b"")
    u, t, lits = r.cmd("FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]")
    assert lits[0].startswith(b"Subject: test ") and lits[0].endswith(b"\r\n\r\n")
    u, t, lits = r.cmd("FETCH 1 BODY.PEEK[TEXT]")
    assert lits[0] == body.encode()
    u, t, lits = r.cmd("FETCH 1 BODY.PEEK[]<0.10>")
    assert re.search(rb"BODY\[\]<0> \{10\}", u[0]) and len(lits[0]) == 10
    u, t, lits = r.cmd("FETCH 1 BODY.PEEK[TEXT]<5.4>")
    assert lits[0] == body.encode()[5:9]
    u, t, lits = r.cmd("FETCH 1 (RFC822.HEADER BINARY.PEEK[1] BINARY.SIZE[1])")
    assert b"OK" in t and b"BINARY.SIZE[1] " in u[0]
    # non-PEEK sets \Seen and reports it
    u, t, lits = r.cmd("FETCH 2 BODY[TEXT]")
    assert b"\\Seen" in u[0]
    u, t, _ = r.cmd("FETCH 2 FLAGS")
    assert b"\\Seen" in u[0]
    u, t, _ = r.cmd("UID FETCH 1:* FLAGS")
    assert all(b"UID " in l for l in u if b"FETCH" in l)
    u, t, _ = r.cmd("FETCH 1:2 FAST")
    assert len(u) == 2 and b"RFC822.SIZE" in u[0]
    u, t, _ = r.cmd("FETCH 9 FLAGS")
    assert b"BAD" in t
    r.close()


def test_imaplib_fetch_store_search_expunge(postern):
    deliver_n(postern, 4, subject="alpha report")
    deliver(postern, subject="beta notes", body="the secret word is pumpernickel\r\n")
    postern.wait_messages(ALICE, 5)
    c = imaps(postern)
    typ, data = c.select("INBOX")
    assert data[0] == b"5"
    typ, data = c.fetch("1", "(RFC822)")
    assert data[0][1].startswith(b"From: <sender@remote.test>") or b"Subject:" in data[0][1]
    ok(c.store("1:2", "+FLAGS", "(\\Flagged)"))
    typ, data = c.store("3", "+FLAGS.SILENT", "(\\Deleted)")
    assert typ == "OK"
    assert ok(c.search(None, "FLAGGED"))[0].split() == [b"1", b"2"]
    assert ok(c.search(None, "SUBJECT", "beta"))[0].split() == [b"5"]
    assert ok(c.search(None, "BODY", "pumpernickel"))[0].split() == [b"5"]
    assert ok(c.search(None, "TEXT", "PUMPERNICKEL"))[0].split() == [b"5"]
    assert ok(c.search(None, "NOT", "FLAGGED", "UNDELETED"))[0].split() == [b"4", b"5"]
    assert ok(c.search(None, "OR", "DELETED", "FLAGGED"))[0].split() == [b"1", b"2", b"3"]
    assert ok(c.search(None, "LARGER", "10", "SINCE", "1-Jan-2000"))[0].split() \
        == [b"1", b"2", b"3", b"4", b"5"]
    assert ok(c.search(None, "SENTON", "23-Nov-2026"))[0].split() == [b"1", b"2", b"3", b"4", b"5"]
    uids = ok(c.uid("SEARCH", None, "ALL"))[0].split()
    assert len(uids) == 5
    assert ok(c.uid("SEARCH", None, "UID", uids[-1].decode()))[0].split() == [uids[-1]]
    typ, data = c.search(None, "CHARSET", "KOI8-R", "ALL")
    assert typ == "NO"
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"3"]
    typ, data = c.select("INBOX")
    assert data[0] == b"4"
    ok(c.store("1", "-FLAGS", "(\\Flagged)"))
    assert ok(c.search(None, "FLAGGED"))[0].split() == [b"2"]
    c.logout()


def test_esearch_and_searchres(postern):
    deliver_n(postern, 5)
    r = Raw(postern)
    r.login()
    r.cmd("SELECT INBOX")
    r.cmd("STORE 2,4 +FLAGS (\\Flagged)")
    u, t, _ = r.cmd("SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED", tag="s1")
    assert u == [b'* ESEARCH (TAG "s1") MIN 2 MAX 4 COUNT 2 ALL 2,4'], u
    u, t, _ = r.cmd("UID SEARCH RETURN (COUNT) ALL", tag="s2")
    assert re.match(rb'\* ESEARCH \(TAG "s2"\) UID COUNT 5', u[0]), u
    u, t, _ = r.cmd("SEARCH RETURN (SAVE) FLAGGED")
    assert u == [] and b"OK" in t
    u, t, _ = r.cmd("FETCH $ (FLAGS)")
    assert len([l for l in u if b"FETCH" in l]) == 2
    u, t, _ = r.cmd("SEARCH RETURN () UNFLAGGED")
    assert u[0].endswith(b"ALL 1,3,5")
    r.cmd("ENABLE IMAP4rev2")
    u, t, _ = r.cmd("SEARCH FLAGGED")
    assert u[0].startswith(b"* ESEARCH") and b"ALL 2,4" in u[0]
    r.close()


def test_copy_move_uidplus(postern):
    deliver_n(postern, 3)
    c = imaps(postern)
    ok(c.select("INBOX"))
    typ, data = c.copy("1:2", "Archive")
    assert typ == "OK" and re.search(rb"COPYUID \d+ \d+:\d+ \d+:\d+", data[0]), data
    typ, data = c.copy("1", "Nope")
    assert typ == "NO" and b"TRYCREATE" in data[0]
    typ, data = c._simple_command("MOVE", "3", "Trash")
    assert typ == "OK"
    assert any(b"COPYUID" in x for x in c.untagged_responses.get("OK", []))
    assert c.untagged_responses.get("EXPUNGE") == [b"3"]
    typ, data = c.uid("MOVE", "1", "Junk")
    assert typ == "OK"
    ok(c.select("Archive", readonly=True))
    assert ok(c.search(None, "ALL"))[0].split() == [b"1", b"2"]
    typ, data = c.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "NO"
    ok(c.select("Trash"))
    assert len(ok(c.search(None, "ALL"))[0].split()) == 1
    c.logout()


def test_uid_expunge_and_close(postern):
    deliver_n(postern, 3)
    c = imaps(postern)
    ok(c.select("INBOX"))
    uids = ok(c.uid("SEARCH", None, "ALL"))[0].split()
    ok(c.store("1:3", "+FLAGS", "(\\Deleted)"))
    typ, data = c.uid("EXPUNGE", uids[0].decode())
    assert typ == "OK"
    ok(c.close())
    ok(c.select("INBOX"))
    assert ok(c.search(None, "ALL")) == [b""]
    c.logout()


def test_unselect_and_examine(postern):
    deliver_n(postern, 1)
    r = Raw(postern)
    r.login()
    u, t, _ = r.cmd("EXAMINE INBOX")
    assert b"[READ-ONLY]" in t
    u, t, _ = r.cmd("FETCH 1 BODY[]")
    u, t, _ = r.cmd("FETCH 1 FLAGS")
    assert b"\\Seen" not in u[0]
    u, t, _ = r.cmd("UNSELECT")
    assert b"OK" in t
    u, t, _ = r.cmd("FETCH 1 FLAGS")
    assert b"BAD" in t
    r.close()


# ---- several sessions, IDLE --------------------------------------------------------------

def test_two_sessions_see_flags_and_expunges(postern):
    deliver_n(postern, 3)
    a = Raw(postern)
    a.login()
    a.cmd("SELECT INBOX")
    b = Raw(postern)
    b.login()
    b.cmd("SELECT INBOX")
    a.cmd("STORE 2 +FLAGS (\\Flagged)")
    u, t, _ = b.cmd("NOOP")
    assert any(re.match(rb"\* 2 FETCH \(.*FLAGS \([^)]*\\Flagged", l) for l in u), u
    a.cmd("STORE 1 +FLAGS (\\Deleted)")
    a.cmd("EXPUNGE")
    # no EXPUNGE during FETCH (RFC 9051 7.5.1), but at the next NOOP
    u, t, _ = b.cmd("FETCH 1:* FLAGS")
    assert not any(b"EXPUNGE" in l for l in u)
    u, t, _ = b.cmd("NOOP")
    assert b"* 1 EXPUNGE" in u, u
    deliver(postern)
    postern.wait_messages(ALICE, 3)
    deadline = time.monotonic() + 10
    while True:
        u, t, _ = b.cmd("NOOP")
        if any(l.endswith(b" EXISTS") for l in u):
            assert b"* 3 EXISTS" in u
            break
        assert time.monotonic() < deadline, "EXISTS never came"
        time.sleep(0.2)
    a.close()
    b.close()


def test_idle_sees_smtp_delivery(postern):
    deliver_n(postern, 1)
    r = Raw(postern)
    r.login()
    r.cmd("SELECT INBOX")
    r.send("i1 IDLE\r\n")
    assert r.line().startswith(b"+ ")
    t0 = time.monotonic()
    deliver(postern)
    r.sock.settimeout(20)
    while True:
        line = r.line()
        if line.endswith(b"EXISTS"):
            assert line == b"* 2 EXISTS"
            break
    assert time.monotonic() - t0 < 15
    r.send("DONE\r\n")
    u, t, _ = r.collect("i1")
    assert t.startswith(b"i1 OK")
    u, t, _ = r.cmd("NOOP")
    assert b"OK" in t
    r.close()


# ---- CONDSTORE / QRESYNC ------------------------------------------------------------------

def test_condstore_changedsince_unchangedsince(postern):
    deliver_n(postern, 3)
    r = Raw(postern)
    r.login()
    u, t, _ = r.cmd("SELECT INBOX (CONDSTORE)")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(u)).group(1))
    u, t, _ = r.cmd("STORE 2 +FLAGS (\\Answered)")
    m2 = int(re.search(rb"MODSEQ \((\d+)\)", u[0]).group(1))
    assert m2 > hms
    u, t, _ = r.cmd(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})")
    assert len(u) == 1 and u[0].startswith(b"* 2 FETCH") and b"MODSEQ" in u[0]
    u, t, _ = r.cmd(f"STORE 1:3 (UNCHANGEDSINCE {hms}) +FLAGS (\\Seen)")
    assert re.search(rb"OK \[MODIFIED 2\]", t), t
    u, t, _ = r.cmd("UID FETCH 1:* (MODSEQ)")
    assert all(b"MODSEQ" in l for l in u)
    r.close()


def test_qresync_select_vanished(postern):
    deliver_n(postern, 4)
    r = Raw(postern)
    r.login()
    u, t, _ = r.cmd("ENABLE QRESYNC")
    assert b"* ENABLED QRESYNC" in u
    u, t, _ = r.cmd("SELECT INBOX")
    text = b"\n".join(u)
    uv = int(re.search(rb"UIDVALIDITY (\d+)", text).group(1))
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", text).group(1))
    u, t, _ = r.cmd("UID SEARCH ALL")
    uids = [int(x) for x in u[0].split()[2:]]
    r.cmd("STORE 1 +FLAGS (\\Deleted)")
    u, t, _ = r.cmd("EXPUNGE")
    assert any(l.startswith(b"* VANISHED") for l in u), u   # not EXPUNGE under QRESYNC
    r.cmd("STORE 1 +FLAGS (\\Flagged)")
    r.cmd("UNSELECT")
    u, t, _ = r.cmd(f"SELECT INBOX (QRESYNC ({uv} {hms} 1:{uids[-1]}))")
    text = b"\n".join(u)
    assert f"* VANISHED (EARLIER) {uids[0]}".encode() in text, text
    assert re.search(rb"\* 1 FETCH \(UID %d FLAGS \([^)]*\\Flagged" % uids[1], text), text
    u, t, _ = r.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    assert any(l.startswith(b"* VANISHED (EARLIER)") for l in u)
    r.close()


# ---- curl ----------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_fetches_a_message(postern):
    token = deliver(postern, subject="for curl")
    postern.wait_exact(ALICE, [token], settle=0)
    url = f"imaps://127.0.0.1:{postern.port('imaps')}/INBOX;UID=1"
    res = subprocess.run(["curl", "-sS", "--cacert", postern.tls["ca"], "--user",
                          f"{ALICE}:{PASSWORDS[ALICE]}", url], capture_output=True, timeout=30,
                         env={**os.environ, "CURL_CA_BUNDLE": postern.tls["ca"]})
    # the certificate names mail.example.test and 127.0.0.1
    assert res.returncode == 0, res.stderr
    assert token.encode() in res.stdout
    url = f"imap://127.0.0.1:{postern.port('imap')}/INBOX;UID=1"
    res = subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", postern.tls["ca"], "--user",
                          f"{ALICE}:{PASSWORDS[ALICE]}", url], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert token.encode() in res.stdout


# ---- big mailbox, chunked output ---------------------------------------------------------

@pytest.mark.time_limit(180)
def test_big_fetch_is_chunked_and_complete(postern):
    # one big message (2 MiB) and a few hundred small ones via APPEND
    c = imaps(postern)
    big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 2100
    ok(c.append("INBOX", None, None, big))
    small, _ = make_message(subject="small")
    r = Raw(postern)
    r.login()
    payload = b"".join(b"a%d APPEND INBOX {%d+}\r\n" % (i, len(small)) + small + b"\r\n"
                       for i in range(450))
    r.send(payload)
    for i in range(450):
        r.collect(f"a{i}")
    u, t, lits = r.cmd("SELECT INBOX")
    assert b"* 451 EXISTS" in u
    u, t, lits = r.cmd("FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])")
    assert b"OK" in t and len(lits) == 451
    assert lits[0] == big
    assert all(l == small for l in lits[1:])
    c.logout()
    r.close()



def test_big_message_over_starttls(postern):
    big = b"Subject: big\r\n\r\n" + (b"z" * 500 + b"\r\n") * 6000   # ~3 MiB
    c = imaplib.IMAP4("127.0.0.1", postern.port("imap"), timeout=30)
    c.starttls(ssl_context=tls_client_context(postern.tls))
    c.login(ALICE, PASSWORDS[ALICE])
    ok(c.append("INBOX", None, None, big))
    ok(c.select("INBOX"))
    typ, data = c.fetch("1", "(BODY.PEEK[] BODY.PEEK[TEXT]<100.50>)")
    assert typ == "OK" and data[0][1] == big
    assert data[1][1] == big[len(b"Subject: big\r\n\r\n") + 100:][:50]
    c.logout()


def test_sessions_per_account_are_limited(make_postern):
    """imap.max_connections_per_user counts IMAP and POP3 sessions of one account
    across workers; other accounts are not affected and a slot comes back at logout."""
    import poplib
    p = make_postern(config={"imap.max_connections_per_user": "2"})
    ctx = tls_client_context(p.tls)
    a1 = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=ctx, timeout=10)
    a1.login("alice@example.test", PASSWORDS["alice@example.test"])
    pop = poplib.POP3_SSL("127.0.0.1", p.port("pop3s"), context=ctx, timeout=10)
    pop.user("alice@example.test")
    pop.pass_(PASSWORDS["alice@example.test"])
    a3 = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=ctx, timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\]"):
        a3.login("alice@example.test", PASSWORDS["alice@example.test"])
    pop2 = poplib.POP3_SSL("127.0.0.1", p.port("pop3s"), context=ctx, timeout=10)
    pop2.user("alice@example.test")
    with pytest.raises(poplib.error_proto, match=r"IN-USE"):
        pop2.pass_(PASSWORDS["alice@example.test"])
    b = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=ctx, timeout=10)
    b.login("bob@example.test", PASSWORDS["bob@example.test"])
    b.logout()
    pop.quit()
    # the POP3 slot is free again (the session in a3 is still not logged in)
    deadline = time.monotonic() + 5
    while True:
        try:
            a3.login("alice@example.test", PASSWORDS["alice@example.test"])
            break
        except imaplib.IMAP4.error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    a3.logout()
    a1.logout()
