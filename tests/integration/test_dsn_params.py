"""RFC 3461 DSN parameters on the way in: EHLO advertises DSN; MAIL takes RET and ENVID,
RCPT takes NOTIFY and ORCPT; malformed values get 501 5.5.4; accepted values reach the
spool envelope (read straight from DATA/spool/queue/<ID>, format in src/lib-queue/spool.h)
in canonical form, so the queue can honour them in its DSNs and pass them on."""

import os
import smtplib
import socket
import struct

import pytest

from helpers import (
    PASSWORDS,
    RawSMTP,
    free_port,
    make_message,
    queue_id_from,
    smtp_client,
)

ALICE = "alice@example.test"

SPOOL_MAGIC = b"POSTERN-SPOOL 1\n"
SPOOL_END_MAGIC = b"POSTEND1"
SPOOL_END_SIZE = 40


# ---- spool reader (src/lib-queue/spool.h) -----------------------------------------------

def read_spool_envelope(path):
    """The envelope of a committed spool file as a dict: the message-level records by name
    and "rcpts", a list of dicts (address, mailbox, orcpt, notify; None when absent)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(SPOOL_MAGIC), f"{path}: bad magic {data[:16]!r}"
    end = data[-SPOOL_END_SIZE:]
    assert end[:8] == SPOOL_END_MAGIC, f"{path}: no end record"
    env_len, body_len = struct.unpack(">QQ", end[8:24])
    assert env_len + body_len + SPOOL_END_SIZE == len(data), f"{path}: sizes do not add up"
    names = {b"I": "id", b"T": "queued_at", b"S": "sender", b"H": "helo", b"C": "client_ip",
             b"A": "auth_user", b"E": "envid", b"R": "ret", b"F": "flags"}
    rcpt_names = {b"m": "mailbox", b"o": "orcpt", b"n": "notify"}
    env = {"rcpts": []}
    pos = len(SPOOL_MAGIC)
    while pos < env_len:
        rtype = data[pos:pos + 1]
        (length,) = struct.unpack(">I", data[pos + 1:pos + 5])
        value = data[pos + 5:pos + 5 + length]
        assert pos + 5 + length <= env_len, f"{path}: record runs past the envelope"
        pos += 5 + length
        if rtype == b"r":
            env["rcpts"].append({"address": value.decode(), "mailbox": None, "orcpt": None,
                                 "notify": None})
        elif rtype in rcpt_names:
            assert env["rcpts"], f"{path}: {rtype!r} before any recipient"
            key = rcpt_names[rtype]
            assert env["rcpts"][-1][key] is None, f"{path}: {key} twice"
            env["rcpts"][-1][key] = value.decode()
        elif rtype in names:
            key = names[rtype]
            assert key not in env, f"{path}: {key} twice"
            env[key] = value if key in ("queued_at", "flags") else value.decode()
        else:
            pytest.fail(f"{path}: unknown record type {rtype!r}")
    assert pos == env_len
    return env


def spool_file(p, qid):
    return os.path.join(p.dir, "spool", "queue", qid.upper())


def closed_port():
    """A loopback port nothing listens on (connection refused: a temporary failure)."""
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


@pytest.fixture
def held(make_postern):
    """A daemon whose remote mail stays in the queue: everything is relayed through a
    smarthost that refuses connections, so remote delivery fails temporarily."""
    return make_postern(config={"outbound.smarthost": f"127.0.0.1:{closed_port()}"})


def submit(p, rcpts, mail_options=(), rcpt_options=None):
    """Sends as alice over submissions (implicit TLS, AUTH); rcpt_options maps a recipient
    to its options. Returns the queue id."""
    msg, _ = make_message(sender=ALICE, to=rcpts[0])
    with smtplib.SMTP_SSL("127.0.0.1", p.port("submissions"), local_hostname="client.test",
                          context=p.client_context(), timeout=10) as s:
        s.login(ALICE, PASSWORDS[ALICE])
        assert s.has_extn("dsn"), s.esmtp_features
        code, resp = s.mail(ALICE, list(mail_options))
        assert code == 250, (code, resp)
        for rcpt in rcpts:
            code, resp = s.rcpt(rcpt, list((rcpt_options or {}).get(rcpt, ())))
            assert code == 250, (rcpt, code, resp)
        code, resp = s.data(msg)
        assert code == 250, (code, resp)
        return queue_id_from(resp)


# ---- EHLO ------------------------------------------------------------------------------

def test_ehlo_advertises_dsn(postern):
    with smtp_client(postern.port()) as s:
        s.ehlo()
        assert s.has_extn("dsn"), f"MX EHLO lacks DSN: {s.esmtp_features}"
    with smtp_client(postern.port("submission")) as s:
        s.ehlo()
        assert s.has_extn("dsn"), s.esmtp_features
        s.starttls(context=postern.client_context())
        s.ehlo()
        assert s.has_extn("dsn"), f"submission EHLO after STARTTLS lacks DSN: {s.esmtp_features}"
    with RawSMTP(postern.port()) as c:
        c.reply()
        r = c.cmd("HELO client.test")
        assert r.code == 250 and "DSN" not in r.text, f"HELO is not EHLO: {r}"


# ---- values reach the spool ------------------------------------------------------------

def test_dsn_params_in_spool_envelope(held):
    friend, other, third = "friend@remote.test", "other@elsewhere.test", "third@remote.test"
    qid = submit(
        held, [friend, other, third],
        mail_options=["RET=hdrs", "ENVID=QQ+2Bx+3Dy+20z"],
        rcpt_options={
            friend: ["NOTIFY=failure,Success", "ORCPT=RFC822;Friend+2Btag@remote.test"],
            other: ["NOTIFY=never", "ORCPT=utf-8;other@elsewhere.test"],
        })
    path = spool_file(held, qid)
    assert os.path.exists(path), f"no spool file {path}; queue: {os.listdir(os.path.dirname(path))}"
    env = read_spool_envelope(path)
    assert env["id"] == qid.upper()
    assert env["sender"] == ALICE
    assert env["envid"] == "QQ+x=y z", env
    assert env["ret"] == "HDRS", env
    by_addr = {r["address"]: r for r in env["rcpts"]}
    assert set(by_addr) == {friend, other, third}, env["rcpts"]
    assert by_addr[friend]["notify"] == "SUCCESS,FAILURE", by_addr[friend]
    assert by_addr[friend]["orcpt"] == "rfc822;Friend+tag@remote.test", by_addr[friend]
    assert by_addr[other]["notify"] == "NEVER", by_addr[other]
    assert by_addr[other]["orcpt"] == "utf-8;other@elsewhere.test", by_addr[other]
    assert by_addr[third]["notify"] is None and by_addr[third]["orcpt"] is None, by_addr[third]
    assert all(r["mailbox"] is None for r in env["rcpts"]), "remote recipients have no mailbox"


def test_no_dsn_params_no_records(held):
    qid = submit(held, ["friend@remote.test"])
    env = read_spool_envelope(spool_file(held, qid))
    assert "envid" not in env and "ret" not in env, env
    [r] = env["rcpts"]
    assert r["notify"] is None and r["orcpt"] is None, r


def test_params_do_not_leak_into_next_transaction(held):
    """RSET and a new MAIL start clean: RET/ENVID of an earlier transaction are gone."""
    msg, _ = make_message(sender=ALICE, to="friend@remote.test")
    with smtplib.SMTP_SSL("127.0.0.1", held.port("submissions"), local_hostname="client.test",
                          context=held.client_context(), timeout=10) as s:
        s.login(ALICE, PASSWORDS[ALICE])
        assert s.mail(ALICE, ["RET=FULL", "ENVID=first"])[0] == 250
        assert s.rcpt("friend@remote.test", ["NOTIFY=DELAY"])[0] == 250
        assert s.rset()[0] == 250
        assert s.mail(ALICE, ["ENVID=second"])[0] == 250
        assert s.rcpt("friend@remote.test")[0] == 250
        code, resp = s.data(msg)
        assert code == 250, resp
        qid = queue_id_from(resp)
    env = read_spool_envelope(spool_file(held, qid))
    assert env["envid"] == "second" and "ret" not in env, env
    assert env["rcpts"][0]["notify"] is None, env["rcpts"]


def test_envid_length_limit(held):
    qid = submit(held, ["friend@remote.test"], mail_options=["ENVID=" + "e" * 100])
    assert read_spool_envelope(spool_file(held, qid))["envid"] == "e" * 100
    # 100 characters after decoding: "+41" is one
    qid = submit(held, ["friend@remote.test"], mail_options=["ENVID=" + "+41" * 100])
    assert read_spool_envelope(spool_file(held, qid))["envid"] == "A" * 100


def test_local_delivery_with_dsn_params(postern):
    msg, token = make_message(to="alice@example.test")
    with smtp_client(postern.port()) as s:
        s.ehlo()
        s.sendmail("sender@remote.test", ["alice@example.test"], msg,
                   mail_options=["RET=FULL", "ENVID=abc"],
                   rcpt_options=["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;alice@example.test"])
    postern.wait_exact("alice@example.test", [token])


# ---- malformed values ------------------------------------------------------------------

BAD_MAIL = [
    ("RET=FOO", 501),
    ("RET=FULLX", 501),
    ("RET", 501),
    ("RET=FULL RET=HDRS", 501),             # duplicate (lib-smtp)
    ("ENVID", 501),
    ("ENVID=a=b", 501),                     # '=' is not xtext
    ("ENVID=+ZZ", 501),
    ("ENVID=abc+4", 501),                   # truncated +XX
    ("ENVID=a+0D+0AX-Injected:+20yes", 501),
    ("ENVID=a+00b", 501),
    ("ENVID=a+C3+A9", 501),                 # 8-bit
    ("ENVID=" + "e" * 101, 501),
    ("ENVID=" + "+41" * 101, 501),
    ("NOTIFY=NEVER", 555),                  # an RCPT parameter
    ("ORCPT=rfc822;a@b.example", 555),
]

BAD_RCPT = [
    ("NOTIFY", 501),
    ("NOTIFY=SOMETIMES", 501),
    ("NOTIFY=NEVER,SUCCESS", 501),
    ("NOTIFY=FAILURE,NEVER", 501),
    ("NOTIFY=SUCCESS,SUCCESS", 501),
    ("NOTIFY=success,Success", 501),
    ("NOTIFY=SUCCESS,", 501),
    ("NOTIFY=,SUCCESS", 501),
    ("NOTIFY=SUCCESS,,DELAY", 501),
    ("NOTIFY=SUCCESS FAILURE", 501),        # "FAILURE" is then an unknown parameter
    ("ORCPT", 501),
    ("ORCPT=rfc822", 501),
    ("ORCPT=rfc822;", 501),
    ("ORCPT=x400;a@b.example", 501),
    ("ORCPT=;a@b.example", 501),
    ("ORCPT=rfc8222;a@b.example", 501),
    ("ORCPT=rfc822;a+ZZ@b.example", 501),
    ("ORCPT=rfc822;a+0D+0A@b.example", 501),
    ("ORCPT=rfc822;a=b@b.example", 501),
    ("ORCPT=rfc822;" + "a" * 490 + "+40" + "b" * 10, 501),   # 501 characters decoded
    ("RET=FULL", 555),                      # a MAIL parameter
    ("ENVID=x", 555),
    ("XFOO=1", 555),
]


def bad_expected(param, code):
    # "NOTIFY=SUCCESS FAILURE": FAILURE parses as a second parameter without a value and
    # is refused as unknown (555) once NOTIFY passed; either way not accepted.
    return (501, 555) if param == "NOTIFY=SUCCESS FAILURE" else (code,)


def test_bad_mail_params(postern):
    # A new session per case: more than max_errors bad commands close one.
    for param, code in BAD_MAIL:
        with postern.raw() as c:
            c.reply()
            c.ehlo()
            r = c.cmd(f"MAIL FROM:<sender@remote.test> {param}")
            assert r.code in bad_expected(param, code) and "5.5.4" in r.text, (param, r)
            # the session is still usable, and good values pass
            r = c.cmd("MAIL FROM:<sender@remote.test> RET=hdrs ENVID=" + "+41" * 100)
            assert r.code == 250, (param, r)


def test_bad_rcpt_params(postern):
    for param, code in BAD_RCPT:
        with postern.raw() as c:
            c.reply()
            c.ehlo()
            assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
            r = c.cmd(f"RCPT TO:<alice@example.test> {param}")
            assert r.code in bad_expected(param, code) and "5.5.4" in r.text, (param, r)
            r = c.cmd("RCPT TO:<alice@example.test> NOTIFY=delay,FAILURE "
                      "ORCPT=UTF-8;alice@example.test")
            assert r.code == 250, (param, r)
    with postern.raw() as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<bob@example.test> ORCPT=rfc822;" + "a" * 490 + "+40" + "b" * 9)
        assert r.code == 250, f"500 characters decoded is the limit: {r}"


def test_error_texts_are_clear(postern):
    with postern.raw() as c:
        c.reply()
        c.ehlo()
        r = c.cmd("MAIL FROM:<sender@remote.test> RET=BODY")
        assert r.code == 501 and "RET" in r.text and "FULL" in r.text and "HDRS" in r.text, r
        r = c.cmd("MAIL FROM:<sender@remote.test> ENVID=+0A")
        assert r.code == 501 and "ENVID" in r.text, r
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<alice@example.test> NOTIFY=NEVER,DELAY")
        assert r.code == 501 and "NOTIFY" in r.text, r
        r = c.cmd("RCPT TO:<alice@example.test> ORCPT=foo;bar")
        assert r.code == 501 and "ORCPT" in r.text, r
        r = c.cmd("RCPT TO:<alice@example.test> BY=10;R")
        assert r.code == 555 and "BY" in r.text, r
