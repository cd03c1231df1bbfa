"""Relay refusal, STARTTLS command injection, SMTP smuggling (bare LF / bare CR / NUL)."""

import base64
import os
import socket
import ssl
import time
import warnings

import pytest

from helpers import PASSWORDS, RawSMTP, dot_stuff, make_message, unique_token

# Recipients that must never be accepted from an unauthenticated client on MX: each
# names (or could be read as naming) a mailbox outside the local domains.
RELAY_ATTEMPTS = [
    "<victim@remote.test>",
    "<victim@REMOTE.TEST>",
    "<victim@remote.test.>",
    "<victim@example.test.remote.test>",
    "<victim@remote.example>",
    "<victim@localhost>",
    "<@example.test:victim@remote.test>",
    "<@example.test,@mail.example.test:victim@remote.test>",
    "<@mail.example.test:victim@remote.test>",
    "<victim%remote.test@example.test>",
    "<victim%remote.test>",
    "<victim%remote.test@[127.0.0.1]>",
    "<remote.test!victim@example.test>",
    "<remote.test!victim>",
    '<"victim@remote.test"@example.test>',
    '<"victim%remote.test"@example.test>',
    '<"victim@remote.test">',
    '<"victim\\@remote.test"@example.test>',
    "<victim@remote.test@example.test>",
    "<alice@example.test@remote.test>",
    "<victim@[192.0.2.1]>",
    "<victim@[IPv6:2001:db8::1]>",
    "<victim@[127.0.0.1]>",
    "<victim@[remote.test]>",
    "victim@remote.test",
    " <victim@remote.test>",
    "<victim@remote.test> NOTIFY=NEVER",
    "<victim@remote.test>,<alice@example.test>",
    "<victim@remote.test> <alice@example.test>",
    "<victim\\@remote.test@example.test>",
    "<victim@remote.test\t>",
    "<victim@xn--mnchen-3ya.test>",
    "<victim@münchen.test>",
]


def mail_files(data_dir):
    out = []
    for root, dirs, files in os.walk(os.path.join(data_dir, "mail")):
        if os.path.basename(root) in ("new", "cur"):
            out += [os.path.join(root, f) for f in files]
    return out


def test_relay_refused_in_every_syntax(postern):
    accepted = []
    bad_code = []
    for rcpt in RELAY_ATTEMPTS:
        with RawSMTP(postern.port()) as c:
            c.check_enhanced = False  # reply format is test_smtp_basic's business
            c.reply()
            c.ehlo()
            r = c.cmd("MAIL FROM:<sender@remote.test> SMTPUTF8")
            assert r.code == 250, r
            r = c.cmd("RCPT TO:" + rcpt)
            if r.code // 100 == 2:
                accepted.append((rcpt, str(r)))
                r2 = c.cmd("DATA")
                if r2.code == 354:
                    c.send(b"Subject: relay test\r\n\r\nrelay\r\n.\r\n")
                    accepted.append((rcpt, "DATA -> " + str(c.reply())))
            elif not (r.code // 100 == 5 and any(x in r.text for x in ("5.7.1", "5.1.", "5.5.",
                                                                      "5.6.7"))):
                bad_code.append((rcpt, str(r)))
    assert not accepted, f"relay recipients accepted: {accepted}"
    assert not bad_code, f"relay attempts not answered 5xx 5.7.1/5.1.x/5.5.x: {bad_code}"
    time.sleep(1)
    assert postern.queue_ids() == [], "something was queued"
    assert mail_files(postern.dir) == []


def test_relay_control_local_recipient_accepted(postern):
    # sanity for the test above: the same session shape delivers to a local user
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("RCPT TO:<@remote.test:bob@example.test>").code in (250, 501, 553, 550)


def test_relay_after_starttls_on_mx_still_refused(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        c.starttls(postern.client_context())
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<victim@remote.test>")
        assert r.code // 100 == 5 and "5.7.1" in r.text, r


# ---- STARTTLS injection (CVE-2011-0411 class) -----------------------------------------

def starttls_with_injection(c, ctx, injected):
    """Sends STARTTLS with `injected` plaintext in the same write. Returns the TLS-wrapped
    client, or None when the server refused the TLS session (safe, nothing executed)."""
    c.send(b"STARTTLS\r\n" + injected)
    r = c.reply()
    assert r.code == 220, f"STARTTLS: {r}"
    early = c.pending(0.8)
    assert early == b"", f"plaintext replies to injected commands after the 220: {early!r}"
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    except (ssl.SSLError, OSError):
        return None
    inside = c.pending(1.5)
    assert inside == b"", f"server answered injected commands inside TLS: {inside!r}"
    return c


def test_starttls_injection_mx(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        tls = starttls_with_injection(
            c, postern.client_context(),
            b"RSET\r\nMAIL FROM:<evil@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        if tls is None:
            return
        r = c.cmd("EHLO client.test")
        assert r.code == 250 and "STARTTLS" not in r.text, r
        r = c.cmd("RCPT TO:<alice@example.test>")
        assert r.code == 503, f"injected MAIL FROM was executed: RCPT got {r}"
        r = c.cmd("DATA")
        assert r.code in (503, 554), r


def test_starttls_injection_submission_auth(postern):
    creds = base64.b64encode(b"\0alice@example.test\0" + PASSWORDS["alice@example.test"].encode())
    with RawSMTP(postern.port("submission")) as c:
        c.reply()
        c.ehlo()
        tls = starttls_with_injection(c, postern.client_context(),
                                      b"AUTH PLAIN " + creds + b"\r\n")
        if tls is None:
            return
        c.ehlo()
        r = c.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 530, f"injected AUTH was executed: MAIL got {r}"


def test_starttls_injection_ehlo_only(postern):
    # the classic: a pipelined EHLO must not be answered within TLS
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        tls = starttls_with_injection(c, postern.client_context(), b"EHLO injected.test\r\n")
        if tls is None:
            return
        r = c.cmd("NOOP")
        assert r.code == 250 and len(r.lines) == 1, f"first reply inside TLS: {r}"


def test_starttls_resets_state(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        c.starttls(postern.client_context())
        r = c.cmd("MAIL FROM:<sender@remote.test>")
        assert r.code == 503, f"MAIL accepted without a new EHLO after STARTTLS: {r}"
        c.ehlo()
        r = c.cmd("STARTTLS")
        assert r.code // 100 == 5, f"second STARTTLS: {r}"
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250


def test_starttls_in_transaction_state_not_kept(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("STARTTLS")
        if r.code != 220:
            assert r.code // 100 == 5, r  # refusing STARTTLS mid-transaction is fine
            return
        c.sock = postern.client_context().wrap_socket(c.sock, server_hostname="127.0.0.1")
        c.ehlo()
        r = c.cmd("RCPT TO:<alice@example.test>")
        assert r.code == 503, f"pre-TLS MAIL survived STARTTLS: {r}"


# ---- SMTP smuggling -------------------------------------------------------------------

SMUGGLE_MARKERS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
    "cr-dot-cr": b"\r.\r",
    "lf-dot-cr": b"\n.\r",
    "cr-lf-dot-lf": b"\r\r\n.\n",
}


def smuggle_payload(marker, token, token2):
    return (b"From: <sender@remote.test>\r\nTo: <alice@example.test>\r\n"
            b"Subject: outer " + token.encode() + b"\r\n\r\nfirst line" + marker
            + b"MAIL FROM:<evil@remote.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
            b"From: <ceo@example.test>\r\nSubject: smuggled " + token2.encode()
            + b"\r\n\r\nsmuggled body\r\n.\r\n")


def send_smuggle(postern, marker, split=False):
    token, token2 = unique_token("outer"), unique_token("smuggled")
    payload = smuggle_payload(marker, token, token2)
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        if split:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(payload)):
                c.send(payload[i:i + 1])
                if payload[i:i + 1] in (b"\r", b"\n", b"."):
                    time.sleep(0.01)
        else:
            c.send(payload)
        first = c.reply()
        closed, more = c.closed_within(1.5)
        if not closed:
            quit_r = c.cmd("QUIT")
            assert quit_r.code == 221, f"after the data: {quit_r}"
    return first, more, token, token2


@pytest.mark.parametrize("name", list(SMUGGLE_MARKERS))
def test_smuggling_rejected(postern, name):
    first, more, token, token2 = send_smuggle(postern, SMUGGLE_MARKERS[name])
    assert more == b"", f"extra replies after the end of data (smuggled commands ran?): " \
                        f"first={first} then {more!r}"
    assert first.code // 100 == 5, f"bare LF/CR in DATA must be refused with 5xx: {first}"
    time.sleep(1.5)
    assert postern.messages("alice@example.test") == []
    assert postern.messages("bob@example.test") == [], "smuggled message delivered"
    assert postern.queue_ids() == []


@pytest.mark.parametrize("name", ["lf-dot-lf", "cr-dot-crlf"])
def test_smuggling_rejected_byte_by_byte(postern, name):
    first, more, token, token2 = send_smuggle(postern, SMUGGLE_MARKERS[name], split=True)
    assert more == b"", f"extra replies: first={first} then {more!r}"
    assert first.code // 100 == 5, first
    time.sleep(1)
    assert postern.messages("bob@example.test") == []
    assert postern.messages("alice@example.test") == []


@pytest.mark.parametrize("name", ["lf-dot-lf", "lf-dot-crlf", "crlf-dot-lf", "cr-dot-crlf"])
def test_smuggling_with_normalize_policy(make_postern, name):
    p = make_postern(config={"smtp.bare_lf": "normalize"})
    first, more, token, token2 = send_smuggle(p, SMUGGLE_MARKERS[name])
    assert more == b"", f"extra replies: first={first} then {more!r}"
    time.sleep(1.5)
    assert p.messages("bob@example.test") == [], "smuggled message delivered to bob"
    if first.code == 250:
        [m] = p.wait_exact("alice@example.test", [token])
        assert b"evil@remote.test" in m and token2.encode() in m, \
            "the 'smuggled' part must stay inside the one message"
    else:
        assert first.code // 100 == 5, first
        assert p.messages("alice@example.test") == []


def test_bare_lf_normalized_when_configured(make_postern):
    p = make_postern(config={"smtp.bare_lf": "normalize"})
    msg = b"Subject: normalize\r\nMessage-ID: <n1@client.test>\r\n\r\nhello\nworld\r\nend\r\n"
    with RawSMTP(p.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(msg + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
    [m] = p.wait_exact("alice@example.test", ["n1@client.test"])
    assert m.split(b"\n\n", 1)[1] == b"hello\nworld\nend\n"


def test_bare_lf_rejected_by_default_session_continues(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: x\r\n\r\nbare\nlf\r\n.\r\n")
        r = c.reply()
        assert r.code // 100 == 5, r
        closed, data = c.closed_within(0.5)
        if closed:
            return
        # a clean message afterwards in the same session is accepted
        msg, token = make_message()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        assert c.reply().code == 250
    [m] = postern.wait_exact("alice@example.test", [token])
    assert b"bare" not in m


@pytest.mark.parametrize("marker", [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\x00\n.\x00\n"])
def test_nul_in_data_never_ends_data(postern, marker):
    first, more, token, token2 = send_smuggle(postern, marker)
    assert more == b"", f"extra replies: first={first} then {more!r}"
    time.sleep(1.5)
    assert postern.messages("bob@example.test") == [], "smuggled message delivered"
    if first.code == 250:
        [m] = postern.wait_exact("alice@example.test", [token])
        assert token2.encode() in m
    else:
        assert first.code // 100 == 5, first
        assert postern.messages("alice@example.test") == []


def test_nul_in_commands(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        r = c.cmd(b"MAIL FROM:<sender@remote.test>\x00RCPT TO:<alice@example.test>")
        assert r.code // 100 == 5, r
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd(b"RCPT TO:<alice@example.test\x00@remote.test>")
        assert r.code // 100 == 5, r
        r = c.cmd(b"RCPT TO:<victim@remote.test\x00alice@example.test>")
        assert r.code // 100 == 5, r
        r = c.cmd(b"\x00\x00\x00")
        assert r.code // 100 == 5, r
        assert c.cmd("NOOP").code == 250


def test_end_of_data_split_across_packets(postern):
    msg, token = make_message()
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        data = dot_stuff(msg)
        c.send(data[:-2])
        for piece in (b"\r", b"\n", b".", b"\r", b"\n"):
            time.sleep(0.05)
            c.send(piece)
        r = c.reply()
        assert r.code == 250, r
    [m] = postern.wait_exact("alice@example.test", [token])
    assert m.endswith(b"Postern integration tests.\n"), m[-80:]


def test_dot_line_variants_are_content(postern):
    # lines that merely start with a dot, or are ". " / ".." are content, not the end
    body = b"a\r\n. \r\n..\r\n.x\r\n.\tz\r\nend\r\n"
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: dots\r\nMessage-ID: <dots@client.test>\r\n\r\n" + body + b".\r\n")
        r = c.reply()
        assert r.code == 250, r
        assert c.pending(0.5) == b""
    [m] = postern.wait_exact("alice@example.test", ["dots@client.test"])
    # RFC 5321 4.5.2: the first character of a line that starts with a dot is removed
    assert m.split(b"\n\n", 1)[1] == b"a\n \n.\nx\n\tz\nend\n"


def test_garbage_and_long_commands_no_crash(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        for junk in (b"\xff\xfe\xfd binary", b"MAIL FROM:<" + b"a" * 5000 + b"@remote.test>",
                     b"EHLO " + b"x" * 10000, b"RCPT TO:<" + b"%" * 3000 + b">",
                     b"AUTH PLAIN " + b"A" * 8000):
            try:
                r = c.cmd(junk)
            except (EOFError, ConnectionError):
                break
            assert r.code // 100 in (4, 5), f"{junk[:30]!r}: {r}"
    # the daemon still serves
    with RawSMTP(postern.port()) as c:
        assert c.reply().code == 220


# ---- robustness -------------------------------------------------------------------------

def test_garbage_tls_handshake(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        c.send(b"\x16\x03\x01\x00\x05hello this is not TLS\r\n" * 3)
        closed, _ = c.closed_within(10)
        assert closed, "server kept a broken TLS session open"
    with RawSMTP(postern.port("submissions")) as c:   # implicit TLS port, plaintext client
        c.send(b"EHLO plaintext.test\r\n")
        closed, _ = c.closed_within(10)
        assert closed
    with RawSMTP(postern.port()) as c:
        assert c.reply().code == 220, "daemon no longer serves after bad TLS input"


def test_stalled_tls_handshake_times_out(make_postern):
    p = make_postern(config={"smtp.command_timeout": "2"})
    with RawSMTP(p.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("STARTTLS").code == 220
        closed, _ = c.closed_within(12)
        assert closed, "a client that never starts the TLS handshake is never dropped"
    with RawSMTP(p.port("submissions")) as c:
        closed, _ = c.closed_within(12)
        assert closed, "a client that never sends a ClientHello on submissions is never dropped"


def test_no_log_injection(postern):
    with RawSMTP(postern.port()) as c:
        c.check_enhanced = False
        c.reply()
        for line in (b"EHLO x\nINJECTED-LOG-LINE-1 postern/master: info: fake",
                     b"EHLO x\rINJECTED-LOG-LINE-2",
                     b"MAIL FROM:<a@remote.test>\nINJECTED-LOG-LINE-3",
                     b"NOOP \x1b[2J\x1b[HINJECTED-LOG-LINE-4"):
            try:
                c.cmd(line)
            except (EOFError, ConnectionError):
                break
    time.sleep(0.5)
    for l in postern.log_text().splitlines():
        assert not l.startswith("INJECTED-LOG-LINE"), f"log line injected: {l!r}"
        assert "\x1b" not in l, f"raw escape sequence in the log: {l!r}"
        assert "\r" not in l, f"raw CR in the log: {l!r}"


@pytest.mark.parametrize("size", ["18446744073709551617", "18446744073709551615",
                                  "99999999999999999999999999", "-1", "1e9", "0x10"])
def test_size_parameter_overflow(postern, size):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<sender@remote.test> SIZE={size}")
        assert r.code // 100 == 5, f"SIZE={size}: {r}"


def group_rss_kb(pgid):
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = open(f"/proc/{name}/stat").read()
            if int(stat[stat.rfind(")") + 2:].split()[2]) != pgid:
                continue
            for line in open(f"/proc/{name}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


@pytest.mark.parametrize("size", ["18446744073709551615", "18446744073709551617",
                                  "4294967296", "99999999999999999999999999"])
def test_bdat_size_overflow(postern, size):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        c.send(f"BDAT {size} LAST\r\n".encode() + b"x" * 100000)
        # a refusal, a close, or silently reading (and discarding) the announced chunk
        # are all fine; a 250, or memory sized after the announced chunk, is not
        c.sock.settimeout(3)
        try:
            r = c.reply()
        except (EOFError, ConnectionError, TimeoutError):
            r = None
        assert r is None or r.code // 100 in (4, 5), f"BDAT {size}: {r}"
        rss = group_rss_kb(postern.proc.pid)
        assert rss < 512 * 1024, f"daemon RSS {rss} kB after BDAT {size}"
    time.sleep(0.5)
    assert postern.messages("alice@example.test") == []
    with RawSMTP(postern.port()) as c:
        assert c.reply().code == 220


def test_rset_in_bdat_then_new_transaction(postern):
    msg, token = make_message()
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        c.send(b"BDAT 10\r\n0123456789")
        assert c.reply().code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        c.send(b"BDAT %d LAST\r\n" % len(msg) + msg)
        assert c.reply().code == 250
    [m] = postern.wait_exact("alice@example.test", [token])
    assert b"0123456789" not in m


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_refused(postern, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = getattr(ssl.TLSVersion, version)
            ctx.maximum_version = getattr(ssl.TLSVersion, version)
    except (ValueError, ssl.SSLError) as e:
        pytest.skip(f"this client cannot offer {version}: {e}")
    with pytest.raises((ssl.SSLError, OSError, EOFError)):
        c = RawSMTP(postern.port("submissions"), tls=ctx)
        c.reply()
        c.close()
