"""`postern sendmail`: the sendmail-compatible local submission command.

Each test runs the real command against a running daemon (the `postern` fixtures) and
checks what lands in the Maildir or the spool: headers added for local submission,
recipient extraction with -t, the "." rule, the envelope sender, the exit codes of
sendmail(8) (0, 64 usage, 65 data error, 75 try later), and invocation through a link
named `sendmail`.
"""

import os
import pwd
import re
import socket
import struct
import subprocess
import time

import pytest

from conftest import CRASH_PATTERNS
from helpers import HOSTNAME, free_port, headers_named, header_block, unique_token
from remote_mx import free_mx_port, remote_mx  # noqa: F401 (fixture)

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
EX_USAGE, EX_DATAERR, EX_TEMPFAIL = 64, 65, 75
QUEUED_RE = re.compile(r"queued as ([0-9A-F]{16})\b")
ME = pwd.getpwuid(os.getuid()).pw_name


def sendmail(p, args, data, binary=None, env=None, timeout=60):
    """Runs `postern -c CONF sendmail ARGS` (or `binary ARGS` when given, e.g. a link
    named sendmail) with data (bytes or str) on stdin; records crashes like Postern.run."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    cmd = [binary] + list(args) if binary else [p.bin, "-c", p.conf, "sendmail"] + list(args)
    res = subprocess.run(cmd, input=data, capture_output=True, timeout=timeout,
                         env=env if env is not None else p.env())
    stderr = res.stderr.decode("utf-8", "replace")
    for pat in CRASH_PATTERNS:
        if pat.search(stderr):
            p.problems.append(f"sendmail {args} stderr shows {pat.pattern!r}:\n{stderr[-3000:]}")
            break
    if res.returncode < 0:
        p.problems.append(f"sendmail {args} died from signal {-res.returncode}")
    res.out = res.stdout.decode("utf-8", "replace")
    res.err = stderr
    return res


def ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.out}\nstderr: {res.err}"
    return res


def queue_id(res):
    m = QUEUED_RE.search(res.out)
    assert m, f"-v printed no queue id: {res.out!r}"
    return m.group(1)


def spool_files(p):
    d = os.path.join(p.dir, "spool", "queue")
    try:
        return sorted(n for n in os.listdir(d) if re.fullmatch(r"[0-9A-F]{16}", n))
    except FileNotFoundError:
        return []


def body_of(msg):
    return msg.split(b"\n\n", 1)[1]


def one_message(p, address, token, timeout=10):
    """The one copy of the message carrying token in address's Maildir (waits for it)."""
    deadline = time.monotonic() + timeout
    while True:
        msgs = [m for m in p.messages(address) if token.encode() in m]
        if msgs or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(msgs) == 1, f"{address}: {len(msgs)} copies with {token}\n{p.log_tail()}"
    return msgs[0]


# ---- headers added for local submission -------------------------------------------------

def test_local_delivery_adds_missing_headers(postern):
    token = unique_token()
    # CRLF input is stored with LF line ends
    data = f"Subject: {token}\r\nTo: alice@example.test\r\n\r\nfirst line\r\nsecond line\r\n"
    res = ok(sendmail(postern, ["-v", ALICE], data.encode()))
    qid = queue_id(res)
    msg = one_message(postern, ALICE, token)
    assert b"\r" not in msg
    assert body_of(msg) == b"first line\nsecond line\n"

    assert headers_named(msg, "Return-Path") == [f"<{ME}@{HOSTNAME}>"]
    date = headers_named(msg, "Date")
    assert len(date) == 1 and re.fullmatch(
        r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", date[0]), date
    mid = headers_named(msg, "Message-ID")
    assert len(mid) == 1 and re.fullmatch(rf"<[^<>@\s]+@{re.escape(HOSTNAME)}>", mid[0]), mid
    assert qid in mid[0]
    # From: the invoking user, with the password file's full name like sendmail(8)
    gecos = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0].strip()
    assert headers_named(msg, "From") == [f'"{gecos}" <{ME}@{HOSTNAME}>' if gecos
                                          else f"{ME}@{HOSTNAME}"]
    received = headers_named(msg, "Received")
    assert len(received) == 1, received
    assert received[0].startswith(f"by {HOSTNAME} (Postern, from userid {os.getuid()})")
    assert f"id {qid}" in received[0] and f"for <{ALICE}>" in received[0]
    # the trace field comes first, the message's own fields keep their order
    names = [l.split(":", 1)[0] for l in header_block(msg).split("\n") if l[:1] not in " \t"]
    assert names[:5] == ["Return-Path", "Delivered-To", "Received", "Subject", "To"], names


def test_existing_headers_are_kept_not_duplicated(postern):
    token = unique_token()
    data = (f"From: Someone <someone@example.test>\nDate: Mon, 23 Nov 2026 12:00:00 +0000\n"
            f"Message-ID: <{token}@client.test>\nSubject: {token}\n\nbody\n")
    ok(sendmail(postern, ["-F", "Ignored Name", ALICE], data))
    msg = one_message(postern, ALICE, token)
    assert headers_named(msg, "From") == ["Someone <someone@example.test>"]
    assert headers_named(msg, "Date") == ["Mon, 23 Nov 2026 12:00:00 +0000"]
    assert headers_named(msg, "Message-ID") == [f"<{token}@client.test>"]
    assert b"Ignored Name" not in msg


def test_message_without_header_gets_a_separator(postern):
    token = unique_token()
    ok(sendmail(postern, [ALICE], f"just a body line {token}\nand another: not a header\n"))
    msg = one_message(postern, ALICE, token)
    assert body_of(msg) == f"just a body line {token}\nand another: not a header\n".encode()
    assert len(headers_named(msg, "From")) == 1


def test_fullname_and_sender(postern):
    token = unique_token()
    ok(sendmail(postern, ["-f", BOB, "-F", 'Bob "the" Builder', ALICE], f"Subject: {token}\n\nx\n"))
    msg = one_message(postern, ALICE, token)
    assert headers_named(msg, "Return-Path") == [f"<{BOB}>"]
    assert headers_named(msg, "From") == [f'"Bob \\"the\\" Builder" <{BOB}>']

    # a newline in -F cannot inject a header; non-ASCII is RFC 2047 encoded
    token = unique_token()
    ok(sendmail(postern, ["-F", "Jörg\nBcc: evil@example.test", ALICE], f"Subject: {token}\n\nx\n"))
    msg = one_message(postern, ALICE, token)
    frm = headers_named(msg, "From")
    assert len(frm) == 1 and frm[0].startswith("=?UTF-8?B?"), frm
    assert headers_named(msg, "Bcc") == []
    assert b"\nBcc:" not in msg


# ---- -t ------------------------------------------------------------------------------------

def test_t_recipients_from_headers_and_bcc_removed(make_postern):
    p = make_postern(users=(ALICE, BOB, CAROL))
    token = unique_token()
    data = (f"Subject: {token}\n"
            "To: \"Alice, A.\" <alice@example.test> (the first),\n"
            "\tundisclosed-recipients:;\n"
            "Cc: team: Bob <bob@example.test>;\n"
            "Bcc: carol@example.test\n"
            "\n"
            "hello\n")
    ok(sendmail(p, ["-t"], data))
    for who in (ALICE, BOB, CAROL):
        msg = one_message(p, who, token)
        assert headers_named(msg, "Bcc") == [], who
        assert headers_named(msg, "To")[0].startswith('"Alice, A." <alice@example.test>')
        # the Bcc recipient is named only in its own copy's Delivered-To
        named = [l for l in header_block(msg).split("\n") if "carol@" in l]
        assert named == ([f"Delivered-To: {CAROL}"] if who == CAROL else []), (who, named)


def test_t_plus_argv_and_duplicates(make_postern):
    p = make_postern(users=(ALICE, BOB))
    token = unique_token()
    # alice is named twice (header and argv): one copy
    ok(sendmail(p, ["-t", "-i", BOB, ALICE], f"To: alice@example.test\nSubject: {token}\n\nx\n"))
    one_message(p, ALICE, token)
    one_message(p, BOB, token)


def test_alias_expansion(postern):
    postern.cli("alias", "add", "sales@example.test", f"{ALICE},{BOB}")
    token = unique_token()
    ok(sendmail(postern, ["sales@example.test"], f"Subject: {token}\n\nx\n"))
    one_message(postern, ALICE, token)
    one_message(postern, BOB, token)


def test_bare_name_is_qualified_with_hostname(postern):
    postern.cli("domain", "add", HOSTNAME)
    postern.cli("alias", "add", f"root@{HOSTNAME}", ALICE)
    token = unique_token()
    ok(sendmail(postern, ["root"], f"Subject: {token}\n\nx\n"))
    msg = one_message(postern, ALICE, token)
    assert f"for <root@{HOSTNAME}>" in headers_named(msg, "Received")[0]


# ---- the "." rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("flags,ends", [([], True), (["-i"], False), (["-oi"], False),
                                        (["-ti"], False)])
def test_dot_line(postern, flags, ends):
    token = unique_token()
    data = f"To: {ALICE}\nSubject: {token}\n\nbefore\n..stuffed stays\n.\nafter\n"
    args = flags + ([] if "-ti" in flags else [ALICE])
    ok(sendmail(postern, args, data))
    body = body_of(one_message(postern, ALICE, token))
    if ends:
        assert body == b"before\n..stuffed stays\n"
    else:
        assert body == b"before\n..stuffed stays\n.\nafter\n"


def test_dot_line_crlf_and_unterminated_last_line(postern):
    token = unique_token()
    ok(sendmail(postern, [ALICE], f"Subject: {token}\r\n\r\nbody\r\n.\r\nignored\r\n".encode()))
    assert body_of(one_message(postern, ALICE, token)) == b"body\n"
    token = unique_token()
    ok(sendmail(postern, [ALICE], f"Subject: {token}\n\nno newline at end"))
    assert body_of(one_message(postern, ALICE, token)) == b"no newline at end\n"


# ---- envelope sender ----------------------------------------------------------------------------

@pytest.mark.parametrize("null", ["<>", ""])
def test_null_sender(postern, null):
    token = unique_token()
    ok(sendmail(postern, ["-f", null, ALICE], f"Subject: {token}\n\nbounce-like\n"))
    msg = one_message(postern, ALICE, token)
    assert headers_named(msg, "Return-Path") == ["<>"]
    # From: falls back to the invoking user, not an empty address
    assert f"{ME}@{HOSTNAME}" in headers_named(msg, "From")[0]


def test_sender_attached_and_angle_forms(postern):
    token = unique_token()
    ok(sendmail(postern, [f"-f<{BOB}>", ALICE], f"Subject: {token}\n\nx\n"))
    assert headers_named(one_message(postern, ALICE, token), "Return-Path") == [f"<{BOB}>"]


# ---- invocation as "sendmail" ---------------------------------------------------------------------

def test_symlink_named_sendmail_uses_postern_config(postern, tmp_path):
    link = tmp_path / "bin" / "sendmail"
    link.parent.mkdir()
    os.symlink(postern.bin, link)
    env = postern.env()
    env["POSTERN_CONFIG"] = postern.conf
    token = unique_token()
    # PHP's default: sendmail -t -i
    ok(sendmail(postern, ["-t", "-i"], f"To: {ALICE}\nSubject: {token}\n\nfrom php\n",
                binary=str(link), env=env))
    one_message(postern, ALICE, token)
    # every argument is sendmail's: "-c" is not postern's config option here
    res = sendmail(postern, ["-c", postern.conf, ALICE], "x\n", binary=str(link), env=env)
    assert res.returncode == EX_USAGE, res.err
    # without POSTERN_CONFIG (and no ./postern.conf) the config cannot be found
    env.pop("POSTERN_CONFIG")
    res = subprocess.run([str(link), ALICE], input=b"x\n", capture_output=True, env=env,
                         cwd=str(tmp_path), timeout=30)
    assert res.returncode not in (0, EX_USAGE) and b"postern.conf" in res.stderr


# ---- options and exit codes ---------------------------------------------------------------------

def test_ignored_and_unknown_options(postern):
    token = unique_token()
    ok(sendmail(postern, ["-oem", "-odi", "-odb", "-oQ/var/spool/mqueue", "-bm", "-B",
                          "8BITMIME", "-B7BIT", "-om", "--", ALICE], f"Subject: {token}\n\nx\n"))
    one_message(postern, ALICE, token)
    for args in (["-X", ALICE], ["-bs"], ["-bp"], ["-oZ", ALICE], ["-f"], ["-B", "BINARYMIME"],
                 ["-q"]):
        res = sendmail(postern, args, "Subject: x\n\nx\n")
        assert res.returncode == EX_USAGE, f"{args}: {res.returncode} {res.err}"
        assert "usage" in res.err


def test_data_errors_exit_65_and_queue_nothing(postern):
    before = spool_files(postern)
    cases = [
        ([], "no recipients"),
        (["-t"], "no recipients"),
        (["nosuchuser@example.test"], "no such user"),
        ([ALICE, "nosuchuser@example.test"], "no such user"),
        (["bad address@"], "address"),
        (["-f", "not an address", ALICE], "address"),
        (["Alice <alice@example.test"], "malformed"),
    ]
    for args, what in cases:
        res = sendmail(postern, args, "Subject: x\n\nx\n")
        assert res.returncode == EX_DATAERR, f"{args}: exit {res.returncode} {res.err}"
        assert what in res.err, f"{args}: {res.err}"
    res = sendmail(postern, ["-t"], "To: Bob <bob@example.test\n\nx\n")
    assert res.returncode == EX_DATAERR and "To:" in res.err, res.err
    res = sendmail(postern, [ALICE], b"Subject: x\n\nnul\x00here\n")
    assert res.returncode == EX_DATAERR and "NUL" in res.err, res.err
    assert spool_files(postern) == before
    assert postern.messages(ALICE) == []


def test_size_limit(make_postern):
    p = make_postern(config={"smtp.max_message_size": "4K"})
    res = sendmail(p, [ALICE], "Subject: big\n\n" + ("x" * 70 + "\n") * 100)
    assert res.returncode == EX_DATAERR and "too big" in res.err, res.err
    # the input fits, the added header fields push it over
    res = sendmail(p, [ALICE], "Subject: big\n\n" + "y" * 4050 + "\n")
    assert res.returncode == EX_DATAERR and "too big" in res.err, res.err
    assert spool_files(p) == [] and p.messages(ALICE) == []
    token = unique_token()
    ok(sendmail(p, [ALICE], f"Subject: {token}\n\nsmall\n"))
    one_message(p, ALICE, token)


def test_8bit_body_and_utf8_headers(postern):
    token = unique_token()
    data = f"Subject: {token} grüße\nContent-Type: text/plain; charset=utf-8\n\nÄrger ✓\n"
    ok(sendmail(postern, [ALICE], data))
    msg = one_message(postern, ALICE, token)
    assert body_of(msg) == "Ärger ✓\n".encode()
    assert f"Subject: {token} grüße".encode() in msg


# ---- the queue ------------------------------------------------------------------------------

def test_daemon_stopped_exits_75_and_loses_nothing(postern):
    postern.stop()
    token = unique_token()
    data = f"Subject: {token}\n\nretry me\n"
    res = sendmail(postern, [ALICE], data)
    assert res.returncode == EX_TEMPFAIL, f"exit {res.returncode}: {res.err}"
    assert "queue" in res.err
    assert spool_files(postern) == []
    postern.start()
    # nothing half-submitted shows up; the caller's retry is delivered once
    assert [m for m in postern.messages(ALICE) if token.encode() in m] == []
    ok(sendmail(postern, [ALICE], data))
    postern.wait_exact(ALICE, [token])


def read_spool_envelope(path):
    """sender, auth user, flags and recipients (address, mailbox or None) of a committed
    spool file (format: src/lib-queue/spool.h)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.startswith(b"POSTERN-SPOOL 1\n") and data[-40:-32] == b"POSTEND1", path
    (env_len,) = struct.unpack(">Q", data[-32:-24])
    env = {"rcpts": []}
    pos = 16
    while pos < env_len:
        rtype, (length,) = data[pos:pos + 1], struct.unpack(">I", data[pos + 1:pos + 5])
        value = data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if rtype == b"r":
            env["rcpts"].append([value.decode(), None])
        elif rtype == b"m":
            env["rcpts"][-1][1] = value.decode()
        elif rtype in (b"S", b"A", b"H", b"C"):
            env[rtype.decode()] = value.decode()
        elif rtype == b"F":
            (env["F"],) = struct.unpack(">I", value)
    assert pos == env_len, path
    return env


def closed_port():
    port = free_port()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_remote_recipient_is_queued(make_postern):
    # a smarthost that refuses connections keeps remote mail in the queue
    p = make_postern(config={"outbound.smarthost": f"127.0.0.1:{closed_port()}"})
    token = unique_token()
    res = ok(sendmail(p, ["-v", "someone@remote.test", ALICE, "-F", "Grüße"],
                      f"Subject: {token}\n\nÄ\n"))
    qid = queue_id(res)
    one_message(p, ALICE, token)
    env = read_spool_envelope(os.path.join(p.dir, "spool", "queue", qid))
    assert env["rcpts"] == [["someone@remote.test", None], [ALICE, ALICE]], env
    assert env["S"] == f"{ME}@{HOSTNAME}"
    assert env["A"] == f"local:{ME}"   # who submitted, for logs and rate limits
    assert "C" not in env              # not from the network
    assert env["F"] & 0x2 and not env["F"] & 0x1   # 8-bit body, ASCII addresses


def test_remote_delivery_through_smarthost(make_postern, remote_mx):
    port = free_mx_port(["127.0.0.2"])
    mx = remote_mx(host="127.0.0.2", port=port)
    p = make_postern(config={"outbound.smarthost": f"127.0.0.2:{port}"})
    token = unique_token()
    ok(sendmail(p, ["-f", "<>", "-i", "someone@remote.test"],
                f"Subject: {token}\n\n.leading dot\nend\n"))
    msg = mx.wait_messages(1)[0]
    assert msg.mail_from == "" and msg.rcpt_tos == ["someone@remote.test"]
    assert token.encode() in msg.content
    # the client restores CRLF and dot-stuffing on the wire; the peer unstuffs
    assert msg.content.endswith(b"\r\n\r\n.leading dot\r\nend\r\n")
    parsed = msg.parsed()
    assert parsed["Message-ID"].endswith(f"@{HOSTNAME}>") and parsed["Date"]
    assert parsed["From"].addresses[0].addr_spec == f"{ME}@{HOSTNAME}"
