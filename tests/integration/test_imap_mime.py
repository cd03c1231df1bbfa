"""IMAP ENVELOPE, BODYSTRUCTURE, BODY[section] and BINARY[section] (RFC 9051 6.4.5 and
7.5.2, RFC 3516) on a corpus of real-world-shaped messages that this test builds with
Python's email package: plain text, multipart/alternative, nested multipart/mixed with
attachments (RFC 2231 filenames), message/rfc822, encoded words, 8-bit bodies, groups,
missing headers, calendar invites, multipart/signed, multipart/report DSNs, a 2 MB
attachment, and malformed mail (no boundary, unclosed boundary, header without colon,
1000-level nesting, NUL, CR-only line ends).

Each message is APPENDed to a folder and some are also delivered over SMTP to INBOX. One
daemon serves the whole module. FETCH responses are read byte-exactly from a raw IMAPS
socket and parsed with the strict s-expression parser in imap_sexp.py; the results are
compared with what Python's email.parser (policy=compat32, raw values) reads from the same
bytes. Malformed messages only need valid syntax and self-consistent sizes.
"""

import email.header
import email.utils
import io
import random
import re
import smtplib
import socket
from email import policy as email_policy
from email.charset import QP, Charset
from email.generator import BytesGenerator
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser

import pytest

from conftest import Postern, postern_bin
from helpers import HOSTNAME, PASSWORDS, tls_client_context
from imap_sexp import Atom, RawImap, SexpError, fetch_items

ALICE = "alice@example.test"
FOLDER = "Corpus"
COMPAT = email_policy.compat32
CRLF_COMPAT = COMPAT.clone(linesep="\r\n")

pytestmark = pytest.mark.time_limit(60)


# ---- the corpus ---------------------------------------------------------------------------

def crlf(data):
    """LF or CRLF line ends -> CRLF (does not touch a lone CR)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def flat(msg):
    """A message object as bytes with CRLF line ends, headers not re-folded."""
    if isinstance(msg, EmailMessage):
        pol = msg.policy.clone(linesep="\r\n")
    else:
        pol = CRLF_COMPAT
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=pol).flatten(msg)
    return crlf(out.getvalue())


def hdrs(m, mid, subject, frm="Alice Example <alice@example.org>",
         to="Bob Example <bob@example.test>", date="Tue, 01 Dec 2026 10:00:00 +0100"):
    if frm is not None:
        m["From"] = frm
    m["To"] = to
    m["Subject"] = subject
    if date is not None:
        m["Date"] = date
    m["Message-ID"] = f"<{mid}@corpus.example.org>"
    if "MIME-Version" not in m:
        m["MIME-Version"] = "1.0"
    return m


def qp_text(text, subtype="plain"):
    cs = Charset("utf-8")
    cs.body_encoding = QP
    return MIMEText(text, subtype, cs)


def c_plain():
    m = EmailMessage()
    m["From"] = "Alice Example <alice@example.org>"
    m["To"] = "Bob <bob@example.test>, carol@example.net"
    m["Cc"] = '"Dave, Jr." <dave@example.com>'
    m["Bcc"] = "eve@example.com"
    m["Subject"] = 'Plain text with "quotes" and a back\\slash'
    m["Date"] = "Tue, 01 Dec 2026 10:00:00 +0100"
    m["Message-ID"] = "<plain-1@corpus.example.org>"
    m["In-Reply-To"] = "<parent-0@corpus.example.org>"
    m.set_content("Hello Bob,\n\nthis is plain text.\n-- \nAlice\n")
    return flat(m)


def c_sender_replyto():
    # Sender and Reply-To present, a folded Subject; no MIME headers at all
    return crlf(b"From: Alice <alice@example.org>\n"
                b"Sender: Secretary <sec@example.org>\n"
                b"Reply-To: Replies <replies@example.org>, other@example.net\n"
                b"To: bob@example.test\n"
                b"Subject: a rather long subject line that the sender's mail program\n"
                b"\tfolded onto a second line\n"
                b"Date: Wed, 2 Dec 2026 08:15:00 -0500 (EST)\n"
                b"Message-ID: <sender-1@corpus.example.org>\n"
                b"References: <a@x> <b@y>\n"
                b"In-Reply-To: <b@y>\n"
                b"\n"
                b"No Content-Type: this is text/plain; charset=us-ascii by default.\n"
                b"Second line without a final newline")


def c_alternative():
    m = MIMEMultipart("alternative")
    m.attach(MIMEText("Hi there,\nthe plain part.\n", "plain", "us-ascii"))
    m.attach(MIMEText("<p>Hi <b>there</b> &mdash; caf\u00e9 \u20ac</p>\n", "html", "utf-8"))
    return flat(hdrs(m, "alt-1", "multipart/alternative"))


def _mixed(mid):
    m = MIMEMultipart("mixed")
    m.preamble = "This is a multi-part message in MIME format."
    m.epilogue = "the epilogue"
    alt = MIMEMultipart("alternative")
    alt.attach(qp_text("Gr\u00fc\u00dfe aus K\u00f6ln, caf\u00e9 = coffee\nLine two is a rather "
                       "long line that quoted-printable has to break with a soft line "
                       "break somewhere in the middle of it.\n"))
    alt.attach(qp_text("<html><body><p>Gr\u00fc\u00dfe</p></body></html>\n", "html"))
    m.attach(alt)
    pdf = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<</Type/Catalog>>endobj\n" +
           bytes(range(256)) * 8 + b"\n%%EOF\n")
    a = MIMEApplication(pdf, "pdf")
    a.set_param("name", "report.pdf")
    a.add_header("Content-Disposition", "attachment", filename="report.pdf")
    a.add_header("Content-ID", "<pdf-part@corpus.example.org>")
    a.add_header("Content-Description", "Quarterly report")
    m.attach(a)
    b = MIMEApplication(b"\x00\x01binary payload\xff" * 40, "octet-stream")
    b.add_header("Content-Disposition", "attachment",
                 filename=("utf-8", "", "\u00dcberweisung \u20ac 2026.pdf"))
    m.attach(b)
    return hdrs(m, mid, "nested multipart/mixed with attachments")


def c_mixed():
    return flat(_mixed("mixed-1"))


def c_rfc822():
    inner = _mixed("inner-1")
    del inner["Subject"]
    inner["Subject"] = "the original message"
    inner.replace_header("From", "Carol <carol@example.net>")
    m = MIMEMultipart("mixed")
    m.attach(MIMEText("See the forwarded message below.\n", "plain", "us-ascii"))
    fwd = MIMEMessage(inner)
    fwd.add_header("Content-Disposition", "inline")
    m.attach(fwd)
    m.attach(MIMEText("After the forwarded message.\n", "plain", "us-ascii"))
    return flat(hdrs(m, "fwd-1", "Fwd: the original message"))


def c_rfc822_simple():
    inner = MIMEText("A simple forwarded body.\nTwo lines.\n", "plain", "us-ascii")
    hdrs(inner, "inner-2", "simple inner", frm="Zed <zed@example.com>")
    m = MIMEMultipart("mixed")
    m.attach(MIMEMessage(inner))
    return flat(hdrs(m, "fwd-2", "Fwd: simple inner"))


def c_encoded_words():
    return crlf(b"From: =?ISO-8859-1?Q?Andr=E9_Pirard?= <andre@example.org>\n"
                b"To: =?UTF-8?B?w4lsb2TDr2U=?= <elodie@example.test>\n"
                b"Subject: =?UTF-8?B?w4nDqcOgIOKCrCB0ZXN0?= =?ISO-8859-1?Q?caf=E9?=\n"
                b"Date: Thu, 03 Dec 2026 12:00:00 +0000\n"
                b"Message-ID: <ew-1@corpus.example.org>\n"
                b"MIME-Version: 1.0\n"
                b"Content-Type: text/plain; charset=ISO-8859-1\n"
                b"Content-Transfer-Encoding: quoted-printable\n"
                b"\n"
                b"Caf=E9 cr=E8me br=FBl=E9e.\n"
                b"Soft line=\n"
                b" break.\n")


def c_eightbit():
    return crlf("From: J\u00fcrgen <juergen@example.org>\n"
                "To: bob@example.test\n"
                "Subject: 8-bit UTF-8 without Content-Transfer-Encoding \u2713\n"
                "Date: Fri, 04 Dec 2026 09:00:00 +0100\n"
                "Message-ID: <8bit-1@corpus.example.org>\n"
                "MIME-Version: 1.0\n"
                "Content-Type: text/plain; charset=utf-8\n"
                "\n"
                "Gr\u00fc\u00dfe, \u65e5\u672c\u8a9e, \u0417\u0434\u0440\u0430\u0432\u0441\u0442"
                "\u0432\u0443\u0439\u0442\u0435!\n"
                "Second line.\n".encode("utf-8"))


def c_group():
    return crlf(b"From: Alice <alice@example.org>\n"
                b"To: undisclosed-recipients:;\n"
                b'Cc: Friends: joe@example.com, "Ann" <ann@example.com>;, solo@example.net\n'
                b"Subject: group addresses\n"
                b"Date: Sat, 05 Dec 2026 10:00:00 +0000\n"
                b"Message-ID: <group-1@corpus.example.org>\n"
                b"\n"
                b"Body.\n")


def c_no_date_from():
    return crlf(b"To: bob@example.test\n"
                b"Subject: no Date and no From\n"
                b"Message-ID: <nodate-1@corpus.example.org>\n"
                b"\n"
                b"Body without Date and From.\n")


def c_calendar():
    ics = ("BEGIN:VCALENDAR\nPRODID:-//Corpus//EN\nVERSION:2.0\nMETHOD:REQUEST\n"
           "BEGIN:VEVENT\nUID:evt-1@corpus.example.org\nDTSTAMP:20261201T100000Z\n"
           "DTSTART:20261210T090000Z\nDTEND:20261210T100000Z\n"
           "SUMMARY:Planning \u2014 Q1\nORGANIZER:mailto:alice@example.org\n"
           "ATTENDEE;RSVP=TRUE:mailto:bob@example.test\nEND:VEVENT\nEND:VCALENDAR\n")
    m = MIMEMultipart("alternative")
    m.attach(MIMEText("You are invited: Planning Q1.\n", "plain", "us-ascii"))
    cal = MIMEText(ics, "calendar", "utf-8")
    cal.set_param("method", "REQUEST")
    m.attach(cal)
    return flat(hdrs(m, "cal-1", "Invitation: Planning Q1"))


def c_signed():
    return crlf(b"From: Alice <alice@example.org>\n"
                b"To: bob@example.test\n"
                b"Subject: signed\n"
                b"Date: Sun, 06 Dec 2026 10:00:00 +0000\n"
                b"Message-ID: <signed-1@corpus.example.org>\n"
                b"MIME-Version: 1.0\n"
                b'Content-Type: multipart/signed; micalg=pgp-sha256;\n'
                b' protocol="application/pgp-signature"; boundary="=-=sig=-="\n'
                b"\n"
                b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\n"
                b"--=-=sig=-=\n"
                b"Content-Type: text/plain; charset=us-ascii\n"
                b"Content-Transfer-Encoding: 7bit\n"
                b"\n"
                b"Signed text.\n"
                b"\n"
                b"--=-=sig=-=\n"
                b'Content-Type: application/pgp-signature; name="signature.asc"\n'
                b'Content-Description: OpenPGP digital signature\n'
                b'Content-Disposition: attachment; filename="signature.asc"\n'
                b"\n"
                b"-----BEGIN PGP SIGNATURE-----\n"
                b"\n"
                b"iQEzBAEBCAAdFiEEAAAAAAAAAAAAAAAAAAAAAAAAAAAFAmAAAAAACgkQAAAAAAAA\n"
                b"=AAAA\n"
                b"-----END PGP SIGNATURE-----\n"
                b"--=-=sig=-=--\n")


def c_dsn():
    return crlf(b"From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\n"
                b"To: alice@example.org\n"
                b"Subject: Undelivered Mail Returned to Sender\n"
                b"Date: Mon, 07 Dec 2026 10:00:00 +0000\n"
                b"Message-ID: <dsn-1@corpus.example.org>\n"
                b"MIME-Version: 1.0\n"
                b"Content-Type: multipart/report; report-type=delivery-status;\n"
                b'\tboundary="dsn-boundary"\n'
                b"Auto-Submitted: auto-replied\n"
                b"\n"
                b"--dsn-boundary\n"
                b"Content-Description: Notification\n"
                b"Content-Type: text/plain; charset=us-ascii\n"
                b"\n"
                b"Your message could not be delivered.\n"
                b"\n"
                b"--dsn-boundary\n"
                b"Content-Description: Delivery report\n"
                b"Content-Type: message/delivery-status\n"
                b"\n"
                b"Reporting-MTA: dns; mx.example.org\n"
                b"Arrival-Date: Mon, 07 Dec 2026 09:59:00 +0000\n"
                b"\n"
                b"Final-Recipient: rfc822; nobody@example.net\n"
                b"Action: failed\n"
                b"Status: 5.1.1\n"
                b"Diagnostic-Code: smtp; 550 5.1.1 no such user\n"
                b"\n"
                b"--dsn-boundary\n"
                b"Content-Description: Undelivered Message\n"
                b"Content-Type: message/rfc822\n"
                b"\n"
                b"From: Alice <alice@example.org>\n"
                b"To: nobody@example.net\n"
                b"Subject: hello\n"
                b"Date: Mon, 07 Dec 2026 09:58:00 +0000\n"
                b"Message-ID: <orig-1@example.org>\n"
                b"\n"
                b"Hello nobody.\n"
                b"\n"
                b"--dsn-boundary--\n")


def c_large():
    m = MIMEMultipart("mixed")
    m.attach(MIMEText("A 2 MB attachment follows.\n", "plain", "us-ascii"))
    blob = random.Random(2026).randbytes(2 << 20)
    a = MIMEApplication(blob, "octet-stream")
    a.add_header("Content-Disposition", "attachment", filename="blob.bin")
    m.attach(a)
    return flat(hdrs(m, "large-1", "2 MB attachment"))


# -- malformed --

def c_bad_no_boundary():
    return crlf(b"From: a@example.org\nTo: b@example.test\nSubject: multipart without "
                b"boundary\nMIME-Version: 1.0\nContent-Type: multipart/mixed\n\n"
                b"--foo\nContent-Type: text/plain\n\nbody\n--foo--\n")


def c_bad_unclosed():
    return crlf(b"From: a@example.org\nTo: b@example.test\nSubject: boundary never closed\n"
                b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n"
                b"--b1\nContent-Type: text/plain\n\npart one\n--b1\n"
                b"Content-Type: multipart/alternative; boundary=\"b2\"\n\n--b2\n"
                b"Content-Type: text/html\n\n<p>never closed\n")


def c_bad_no_colon():
    return crlf(b"From: a@example.org\nTo: b@example.test\nThis header line has no colon\n"
                b"Subject: after the bad line\n\nbody\n")


def c_bad_deep():
    depth = 1000
    head = [b"From: a@example.org\nTo: b@example.test\nSubject: 1000 levels\n"
            b"MIME-Version: 1.0\n"]
    for i in range(depth):
        head.append(b'Content-Type: multipart/mixed; boundary="d%d"\n\n--d%d\n' % (i, i))
    head.append(b"Content-Type: text/plain\n\ninnermost\n")
    for i in reversed(range(depth)):
        head.append(b"--d%d--\n" % i)
    return crlf(b"".join(head))


def c_bad_nul():
    return crlf(b"From: a@example.org\nTo: b@example.test\nSubject: a NUL\x00in the subject\n"
                b"Content-Type: text/plain\n\nbody with a \x00 NUL byte\n")


def c_bad_cr_only():
    return (b"From: a@example.org\rTo: b@example.test\rSubject: CR-only line ends\r"
            b"Content-Type: text/plain\r\rline one\rline two\r")


# name -> (builder, well_formed, also delivered over SMTP)
CORPUS = {
    "plain": (c_plain, True, True),
    "sender_replyto": (c_sender_replyto, True, False),
    "alternative": (c_alternative, True, False),
    "mixed": (c_mixed, True, True),
    "rfc822": (c_rfc822, True, True),
    "rfc822_simple": (c_rfc822_simple, True, False),
    "encoded_words": (c_encoded_words, True, False),
    "eightbit": (c_eightbit, True, True),
    "group": (c_group, True, False),
    "no_date_from": (c_no_date_from, True, False),
    "calendar": (c_calendar, True, False),
    "signed": (c_signed, True, False),
    "dsn": (c_dsn, True, True),
    "large": (c_large, True, False),
    "bad_no_boundary": (c_bad_no_boundary, False, False),
    "bad_unclosed": (c_bad_unclosed, False, False),
    "bad_no_colon": (c_bad_no_colon, False, False),
    "bad_deep": (c_bad_deep, False, False),
    "bad_nul": (c_bad_nul, False, False),
    "bad_cr_only": (c_bad_cr_only, False, False),
}

# Known server bugs: (name, via) -> (reason, exception). Each is xfail(strict=True).
XFAIL = {}


# ---- the server and the client --------------------------------------------------------------

def imap_connect(p):
    raw = socket.create_connection(("127.0.0.1", p.port("imaps")), timeout=30)
    sock = tls_client_context(p.tls).wrap_socket(raw, server_hostname=HOSTNAME)
    c = RawImap(sock)
    greeting = c.response()
    assert greeting.startswith(b"* OK"), greeting
    _, t = c.command(f'LOGIN "{ALICE}" "{PASSWORDS[ALICE]}"')
    assert t.split()[1] == b"OK", t
    return c


def tagged_ok(t):
    assert t.split(b" ", 2)[1] == b"OK", t


class Corpus:
    def __init__(self, p):
        self.p = p
        self.raw = {name: b() for name, (b, _, _) in CORPUS.items()}
        self.uid = {}       # (name, via) -> (mailbox, uid)
        self.append_result = {}


@pytest.fixture(scope="module")
def corpus(tls_material, tmp_path_factory):
    base = tmp_path_factory.mktemp("mime")
    p = Postern(postern_bin(), base, tls_material)
    try:
        p.init(["--smarthost", "127.0.0.1:1"])
        p.add_user(ALICE)
        p.start()
        cp = Corpus(p)
        c = imap_connect(p)
        tagged_ok(c.command(f"CREATE {FOLDER}")[1])
        for name, data in cp.raw.items():
            t = c.append(FOLDER, data)
            cp.append_result[name] = t
            m = re.match(rb"c\d+ OK \[APPENDUID \d+ (\d+)\]", t)
            if m:
                cp.uid[(name, "append")] = (FOLDER, int(m.group(1)))
            elif b"\x00" in data:
                # RFC 9051: a literal is CHAR8 (no NUL); RFC 3516: literal8 may hold NUL
                t = c.append(FOLDER, data, binary=True)
                cp.append_result[name + "~"] = t
                m = re.match(rb"c\d+ OK \[APPENDUID \d+ (\d+)\]", t)
                if m:
                    cp.uid[(name, "append")] = (FOLDER, int(m.group(1)))
        # the SMTP path: same bytes, delivered to INBOX
        smtp_names = [n for n, (_, _, s) in CORPUS.items() if s]
        with smtplib.SMTP("127.0.0.1", p.port("smtp"), local_hostname="client.test",
                          timeout=30) as s:
            for name in smtp_names:
                opts = ["BODY=8BITMIME"] if name == "eightbit" else []
                s.sendmail("sender@remote.test", [ALICE], cp.raw[name], mail_options=opts)
        p.wait_messages(ALICE, len(smtp_names), timeout=20)
        tagged_ok(c.command("SELECT INBOX")[1])
        u, t = c.command("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        tagged_ok(t)
        by_mid = {}
        for r in u:
            _, items = fetch_items(r)
            hdr = [v for k, v in items.items() if k.startswith(b"BODY[")][0]
            mid = BytesParser(policy=COMPAT).parsebytes(hdr, headersonly=True)["Message-ID"]
            by_mid[mid.strip()] = int(items[b"UID"])
        for name in smtp_names:
            mid = BytesParser(policy=COMPAT).parsebytes(cp.raw[name])["Message-ID"].strip()
            assert mid in by_mid, f"{name}: delivered over SMTP but not in INBOX ({by_mid})"
            cp.uid[(name, "smtp")] = ("INBOX", by_mid[mid])
        c.command("LOGOUT")
        c.close()
        yield cp
    finally:
        p.stop()
        p.scan_logs()
        if p.problems:
            pytest.fail("daemon problems:\n" + "\n".join(p.problems), pytrace=False)


def fetch(c, uid, items):
    """UID FETCH of items; returns {ITEM NAME: value} merged over the FETCH responses."""
    u, t = c.command(f"UID FETCH {uid} ({' '.join(items)})")
    tagged_ok(t)
    out = {}
    for r in u:
        if not re.match(rb"\* \d+ FETCH ", r):
            continue
        _, its = fetch_items(r)  # strict parse: raises SexpError on any syntax error
        for k, v in its.items():
            if k in out and k not in (b"UID", b"FLAGS"):
                raise AssertionError(f"item {k!r} returned twice")
            out[k] = v
    assert out.get(b"UID") is not None and int(out[b"UID"]) == uid, out.keys()
    return out


def item(res, prefix):
    """The item named prefix (exactly, when it ends with ']'; else the one starting so)."""
    if prefix.endswith(b"]"):
        assert prefix in res, f"no {prefix!r} in {list(res)}"
        return res[prefix]
    keys = [k for k in res if k.startswith(prefix)]
    assert len(keys) == 1, f"want one item starting {prefix!r}, got {list(res)}"
    return res[keys[0]]


# ---- what Python reads ----------------------------------------------------------------------

def raw_str(v):
    """compat32 raw header value / payload (str with surrogateescape) -> bytes."""
    if v is None:
        return None
    assert isinstance(v, str), v
    return v.encode("ascii", "surrogateescape")


def raw_header(msg, name):
    """The first `name` header's raw value as compat32 stored it (msg[name] would turn a
    value with 8-bit octets into a decoded Header object)."""
    for k, v in msg._headers:
        if k.lower() == name.lower():
            return v
    return None


def raw_items(msg):
    return [(k.lower(), imap_trim(raw_str(v))) for k, v in msg._headers]


def imap_trim(b):
    """What an ENVELOPE string holds for a raw header value: CR/LF/NUL removed, trimmed."""
    if b is None:
        return None
    return re.sub(rb"[\r\n\x00]", b"", b).strip(b" \t")


def decode_words(s):
    if s is None:
        return None
    if isinstance(s, bytes):
        s = s.decode("utf-8", "surrogateescape")
    return str(email.header.make_header(email.header.decode_header(s)))


def split_top(value):
    """Splits an address-list header value at top-level ',' ':' ';' (outside quotes,
    <> and comments). Yields ('group', name) / ('addr', text) / ('end',)."""
    out, cur, depth, quote, angle, esc = [], "", 0, False, False, False
    ingroup = False
    for ch in value:
        if esc:
            cur += ch
            esc = False
            continue
        if quote:
            cur += ch
            if ch == "\\":
                esc = True
            elif ch == '"':
                quote = False
            continue
        if ch == '"':
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif depth == 0 and not angle:
            if ch == ":" and not ingroup:
                out.append(("group", cur.strip()))
                cur, ingroup = "", True
                continue
            if ch == ";" and ingroup:
                if cur.strip():
                    out.append(("addr", cur.strip()))
                out.append(("end",))
                cur, ingroup = "", False
                continue
            if ch == ",":
                if cur.strip():
                    out.append(("addr", cur.strip()))
                cur = ""
                continue
        cur += ch
    if cur.strip():
        out.append(("addr", cur.strip()))
    return out


def expected_addresses(msg, name):
    """ENVELOPE address list for header `name`: None, or a list of (name, mailbox, host)
    tuples with (None, None, groupname, None)-style group markers as 4-tuples."""
    v = raw_header(msg, name)
    if v is None:
        return None
    v = re.sub(r"[\r\n]", "", raw_str(v).decode("utf-8", "surrogateescape"))
    out = []
    for tok in split_top(v):
        if tok[0] == "group":
            out.append(("GROUP", tok[1]))
        elif tok[0] == "end":
            out.append(("END",))
        else:
            nm, addr = email.utils.parseaddr(tok[1])
            local, _, host = addr.rpartition("@")
            out.append((decode_words(nm) or None, local, host))
    return out or None


def server_addresses(v):
    if v is None:
        return None
    assert isinstance(v, list) and v, f"address list must be NIL or a non-empty list: {v!r}"
    out = []
    for a in v:
        assert isinstance(a, list) and len(a) == 4, f"address must have 4 fields: {a!r}"
        for f in a:
            assert f is None or isinstance(f, (bytes,)) and not isinstance(f, Atom), \
                f"address field must be nstring: {a!r}"
        name, adl, mailbox, host = a
        if host is None and mailbox is not None:
            out.append(("GROUP", mailbox.decode()))
        elif host is None and mailbox is None:
            out.append(("END",))
        else:
            out.append((decode_words(name) if name is not None else None,
                        (mailbox or b"").decode("utf-8"), (host or b"").decode("utf-8")))
    return out


def check_envelope(env, msg):
    assert isinstance(env, list) and len(env) == 10, f"ENVELOPE has 10 fields: {env!r}"
    date, subject, frm, sender, reply_to, to, cc, bcc, irt, mid = env
    for name, got in (("Date", date), ("Subject", subject), ("In-Reply-To", irt),
                      ("Message-ID", mid)):
        want = imap_trim(raw_str(raw_header(msg, name)))
        assert got == want, f"ENVELOPE {name}: got {got!r}, Python reads {want!r}"
    want_from = expected_addresses(msg, "From")
    assert server_addresses(frm) == want_from, f"from: {frm!r} vs {want_from!r}"
    for name, got in (("Sender", sender), ("Reply-To", reply_to)):
        want = expected_addresses(msg, name) if raw_header(msg, name) is not None \
            else want_from
        assert server_addresses(got) == want, f"{name}: {got!r} vs {want!r}"
    for name, got in (("To", to), ("Cc", cc), ("Bcc", bcc)):
        want = expected_addresses(msg, name)
        assert server_addresses(got) == want, f"{name}: {got!r} vs {want!r}"


def join_sec(base, i):
    return f"{base}.{i}" if base else str(i)


class PyNode:
    """A body part as Python's parser sees it, numbered the IMAP way (RFC 9051 6.4.5)."""

    def __init__(self, part, sec):
        self.part = part
        self.sec = sec
        self.type = part.get_content_maintype().lower()
        self.subtype = part.get_content_subtype().lower()
        self.children = []
        self.inner = None      # message/rfc822: (inner message, node of its body)
        self.body_of_message = False  # the body of a (top or encapsulated) message

    @property
    def leaf(self):
        return not self.children


def py_body(msg, base):
    """Node for a message's body: a multipart's node keeps the message's section number
    (its children are base.1 ...), a single part is base.1 (or "1" at the top)."""
    if msg.get_content_maintype() == "multipart" and msg.is_multipart():
        n = py_multipart(msg, base)
    else:
        n = py_part(msg, join_sec(base, 1))
    n.body_of_message = True
    return n


def py_multipart(part, sec):
    n = PyNode(part, sec)
    n.children = [py_part(c, join_sec(sec, i)) for i, c in enumerate(part.get_payload(), 1)]
    return n


def py_part(part, sec):
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        return py_multipart(part, sec)
    n = PyNode(part, sec)
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload(0)
        n.inner = (inner, py_body(inner, sec))
    return n


def py_raw_payload(n):
    """The part's body octets as they are in the message (CRLF), as Python extracts them."""
    p = n.part
    if n.type == "message" and n.subtype == "rfc822":
        return flat(p.get_payload(0))
    if n.type == "message" and n.subtype == "delivery-status":
        # Python parsed the body into header blocks; generate it back
        return flat(p).split(b"\r\n\r\n", 1)[1]
    # get_payload(decode=False), but without the charset decoding compat32 applies to a
    # payload with 8-bit octets: the octets themselves
    payload = p._payload
    return crlf(raw_str(payload) if isinstance(payload, str) else payload)


def py_walk(node):
    yield node
    for c in node.children:
        yield from py_walk(c)
    if node.inner:
        yield from py_walk(node.inner[1])


# ---- what the server says -------------------------------------------------------------------

class BsNode:
    def __init__(self, sec):
        self.sec = sec
        self.children = []
        self.inner = None
        self.params = {}
        self.disposition = None
        self.lines = None
        self.size = None


def nstr(v, what):
    assert v is None or (isinstance(v, bytes) and not isinstance(v, Atom)), \
        f"{what}: want a string or NIL, got {v!r}"
    return v


def sstr(v, what):
    assert isinstance(v, bytes) and not isinstance(v, Atom), f"{what}: want a string: {v!r}"
    return v


def number(v, what):
    assert isinstance(v, Atom) and v.isdigit(), f"{what}: want a number, got {v!r}"
    return int(v)


def params_of(v, what):
    if v is None:
        return {}
    assert isinstance(v, list) and v and len(v) % 2 == 0, f"{what}: bad param list {v!r}"
    out = {}
    for k, val in zip(v[0::2], v[1::2]):
        out[sstr(k, what).decode().lower()] = sstr(val, what)
    return out


def bs_body(v, base, ext):
    assert isinstance(v, list) and v, f"body must be a non-empty list: {v!r}"
    if isinstance(v[0], list):
        return bs_multipart(v, base, ext)
    return bs_leaf(v, join_sec(base, 1), ext)


def bs_multipart(v, sec, ext):
    n = BsNode(sec)
    n.type = "multipart"
    i = 0
    while i < len(v) and isinstance(v[i], list):
        n.children.append(bs_part(v[i], join_sec(sec, i + 1), ext))
        i += 1
    n.subtype = sstr(v[i], "multipart subtype").decode().lower()
    rest = v[i + 1:]
    if ext:
        assert len(rest) >= 1, f"BODYSTRUCTURE multipart without extension data: {v!r}"
        n.params = params_of(rest[0], "multipart params")
        if len(rest) > 1:
            n.disposition = rest[1]
    else:
        assert rest == [], f"BODY (non-extensible) multipart has extension data: {rest!r}"
    return n


def bs_part(v, sec, ext):
    assert isinstance(v, list) and v, f"body part must be a non-empty list: {v!r}"
    if isinstance(v[0], list):
        return bs_multipart(v, sec, ext)
    return bs_leaf(v, sec, ext)


def bs_leaf(v, sec, ext):
    n = BsNode(sec)
    assert len(v) >= 7, f"body-type-1part needs 7 fields: {v!r}"
    n.type = sstr(v[0], "type").decode().lower()
    n.subtype = sstr(v[1], "subtype").decode().lower()
    n.params = params_of(v[2], "params")
    n.id = nstr(v[3], "body-fld-id")
    n.desc = nstr(v[4], "body-fld-desc")
    n.encoding = sstr(v[5], "body-fld-enc").decode().lower()
    n.size = number(v[6], "body-fld-octets")
    rest = v[7:]
    if n.type == "message" and n.subtype in ("rfc822", "global"):
        assert len(rest) >= 3, f"message/rfc822 needs envelope, body, lines: {v!r}"
        n.envelope = rest[0]
        n.inner = bs_body(rest[1], sec, ext)
        n.lines = number(rest[2], "body-fld-lines")
        rest = rest[3:]
    elif n.type == "text":
        assert len(rest) >= 1, f"text part needs body-fld-lines: {v!r}"
        n.lines = number(rest[0], "body-fld-lines")
        rest = rest[1:]
    if ext:
        if len(rest) >= 1:
            nstr(rest[0], "body-fld-md5")
        if len(rest) >= 2:
            n.disposition = rest[1]
            if rest[1] is not None:
                assert isinstance(rest[1], list) and len(rest[1]) == 2, rest[1]
                sstr(rest[1][0], "disposition type")
    else:
        assert rest == [], f"BODY (non-extensible) leaf has extension data: {rest!r}"
    return n


def bs_walk(node):
    yield node
    for c in node.children:
        yield from bs_walk(c)
    if node.inner:
        yield from bs_walk(node.inner)


def line_counts(body):
    """Acceptable body-fld-lines for a body: its LF count, or one more when the last line
    has no line end (RFC 9051 leaves that case open)."""
    n = body.count(b"\n")
    return {n, n + 1} if body and not body.endswith(b"\n") else {n}


def decode_param(params, name):
    """A parameter value as text, whichever way the server sent it (plain, RFC 2231
    name*=charset''%XX, or RFC 2047)."""
    if name + "*" in params:
        cs, _, rest = params[name + "*"].decode().partition("''")
        return email.utils.unquote(re.sub(
            r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), rest)
            .encode("latin-1").decode(cs or "ascii"))
    if name in params:
        return decode_words(params[name])
    return None


def py_param(part, name, header="content-type"):
    v = part.get_param(name, header=header)
    if v is None:
        return None
    return email.utils.collapse_rfc2231_value(v)


def header_fields(block):
    """Splits a header block (CRLF, with or without the blank line) into raw fields."""
    fields = []
    for line in block.split(b"\r\n"):
        if line == b"":
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields


def field_name(f):
    return f.split(b":", 1)[0].strip().lower()


# ---- the checks -----------------------------------------------------------------------------

def leaf_items(sec, encoded):
    its = [f"BODY.PEEK[{sec}]"]
    if "." in sec or sec.isdigit():
        its.append(f"BODY.PEEK[{sec}.MIME]")
    if encoded:
        its += [f"BINARY.PEEK[{sec}]", f"BINARY.SIZE[{sec}]"]
    return its


def check_self_consistent(c, uid):
    """Valid syntax and sizes == octets for everything the server describes."""
    top = ["UID", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "BODY.PEEK[]",
           "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]"]
    r = fetch(c, uid, top)
    whole = item(r, b"BODY[]")
    assert number(r[b"RFC822.SIZE"], "RFC822.SIZE") == len(whole)
    assert item(r, b"BODY[HEADER]") + item(r, b"BODY[TEXT]") == whole
    env = r[b"ENVELOPE"]
    assert isinstance(env, list) and len(env) == 10, env
    for i in (0, 1, 8, 9):
        nstr(env[i], "envelope string")
    for i in range(2, 8):
        server_addresses(env[i])
    bs = bs_body(r[b"BODYSTRUCTURE"], "", True)
    body = bs_body(r[b"BODY"], "", False)
    assert [(n.sec, n.type, n.subtype, n.size) for n in bs_walk(bs)] == \
        [(n.sec, n.type, n.subtype, n.size) for n in bs_walk(body)]
    leaves = [n for n in bs_walk(bs) if not n.children][:50]
    items = []
    for n in leaves:
        items += [f"BODY.PEEK[{n.sec}]"]
    r2 = fetch(c, uid, ["UID"] + items)
    for n in leaves:
        got = r2[f"BODY[{n.sec}]".encode()]
        assert got is not None, f"BODY[{n.sec}] is NIL"
        assert n.size == len(got), f"part {n.sec}: size {n.size} != {len(got)} octets"
        if n.lines is not None:
            assert n.lines in line_counts(got), f"part {n.sec}: lines {n.lines}"
    return r, bs


def check_well_formed(c, uid, raw, smtp):
    top = ["UID", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY", "BODY.PEEK[]",
           "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]", "BODY.PEEK[HEADER.FIELDS (Subject From)]",
           "BODY.PEEK[HEADER.FIELDS.NOT (Subject From)]", "BODY.PEEK[]<10.20>",
           "BODY.PEEK[1]<2.5>", "BODY.PEEK[TEXT]<%d.7>" % (1 << 30)]
    r = fetch(c, uid, top)
    whole = item(r, b"BODY[]")
    assert isinstance(whole, bytes)
    if smtp:
        # delivery may only add trace headers in front (and the CRLF that ends DATA)
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        assert whole.endswith(raw), "SMTP delivery changed the message beyond adding headers"
        raw = whole
    else:
        assert whole == raw, "BODY[] differs from the APPENDed message"
    assert number(r[b"RFC822.SIZE"], "RFC822.SIZE") == len(raw) == len(whole)
    msg = BytesParser(policy=COMPAT).parsebytes(raw)
    hend = raw.index(b"\r\n\r\n") + 4
    assert item(r, b"BODY[HEADER]") == raw[:hend]
    assert item(r, b"BODY[TEXT]") == raw[hend:]
    assert r[b"BODY[]<10>"] == raw[10:30]
    # RFC 9051 6.4.5: a partial past the end is an empty string
    assert r[b"BODY[TEXT]<%d>" % (1 << 30)] == b""
    fields = header_fields(raw[:hend])
    want = b"".join(f + b"\r\n" for f in fields if field_name(f) in (b"subject", b"from"))
    assert item(r, b"BODY[HEADER.FIELDS (") == want + b"\r\n"
    want = b"".join(f + b"\r\n" for f in fields if field_name(f) not in (b"subject", b"from"))
    assert item(r, b"BODY[HEADER.FIELDS.NOT") == want + b"\r\n"

    check_envelope(r[b"ENVELOPE"], msg)

    bs = bs_body(r[b"BODYSTRUCTURE"], "", True)
    body = bs_body(r[b"BODY"], "", False)
    py = py_body(msg, "")
    pys, bss = list(py_walk(py)), list(bs_walk(bs))
    assert [(n.sec, n.type, n.subtype) for n in bss] == \
        [(n.sec, n.type, n.subtype) for n in pys], "BODYSTRUCTURE tree != Python's walk"
    assert [(n.sec, n.type, n.subtype, n.size, n.lines) for n in bs_walk(body)] == \
        [(n.sec, n.type, n.subtype, n.size, n.lines) for n in bss], "BODY != BODYSTRUCTURE"

    items = ["UID"]
    for pn, bn in zip(pys, bss):
        if pn.body_of_message and not pn.leaf:
            continue  # "" or the same number as its message/rfc822 part
        items.append(f"BODY.PEEK[{pn.sec}]")
        if not pn.body_of_message:
            items.append(f"BODY.PEEK[{pn.sec}.MIME]")
        if pn.leaf and not pn.inner and bn.type != "message":
            # (BINARY of a message/* part: see test_binary_of_message_and_multipart_parts)
            items += [f"BINARY.PEEK[{pn.sec}]", f"BINARY.SIZE[{pn.sec}]"]
            if bn.encoding in ("base64", "quoted-printable"):
                items.append(f"BINARY.PEEK[{pn.sec}]<3.10>")
        if pn.inner:
            items += [f"BODY.PEEK[{pn.sec}.HEADER]", f"BODY.PEEK[{pn.sec}.TEXT]"]
    r2 = fetch(c, uid, items + ([] if "BODY.PEEK[1]" in items else ["BODY.PEEK[1]"]))
    assert r[b"BODY[1]<2>"] == r2[b"BODY[1]"][2:7], "partial BODY[1]<2.5>"

    for pn, bn in zip(pys, bss):
        where = f"part {pn.sec or '(top)'} {pn.type}/{pn.subtype}"
        part = pn.part
        # parameters Python and the server both know
        if bn.type != "multipart":
            for pname in ("charset", "name", "method", "protocol", "report-type"):
                want = py_param(part, pname)
                if want is None and pname == "charset" and pn.type == "text":
                    want = "us-ascii"
                got = decode_param(bn.params, pname)
                if want is None:
                    assert got is None, f"{where}: server has {pname}={got!r}"
                else:
                    assert got is not None and got.lower() == want.lower(), \
                        f"{where}: {pname} {got!r} != Python's {want!r}"
            want_fn = py_param(part, "filename", "content-disposition")
            if want_fn is not None or bn.disposition is not None:
                assert bn.disposition is not None, f"{where}: no disposition"
                dtype = bn.disposition[0].decode().lower()
                assert dtype == part.get_content_disposition(), where
                got_fn = decode_param(params_of(bn.disposition[1], "dsp"), "filename")
                assert got_fn == want_fn, f"{where}: filename {got_fn!r} != {want_fn!r}"
            want_enc = (raw_header(part, "Content-Transfer-Encoding") or "7bit").strip().lower()
            assert bn.encoding == want_enc, f"{where}: encoding {bn.encoding} != {want_enc}"
            assert imap_trim(raw_str(raw_header(part, "Content-ID"))) == bn.id, where
            assert imap_trim(raw_str(raw_header(part, "Content-Description"))) == bn.desc, \
                where
        else:
            assert bn.subtype == pn.subtype
            for pname in ("boundary", "protocol", "micalg", "report-type"):
                want = py_param(part, pname)
                got = decode_param(bn.params, pname)
                assert (got is None) == (want is None) and \
                    (want is None or got.lower() == want.lower()), f"{where}: {pname}"
        if pn.body_of_message and not pn.leaf:
            continue
        got = r2[f"BODY[{pn.sec}]".encode()]
        assert isinstance(got, bytes), f"{where}: BODY[{pn.sec}] is {got!r}"
        if bn.type != "multipart":
            assert bn.size == len(got), f"{where}: size {bn.size} != {len(got)} octets"
            if bn.lines is not None:
                assert bn.lines in line_counts(got), \
                    f"{where}: lines {bn.lines} not in {line_counts(got)}"
            want = py_raw_payload(pn)
            assert got == want, f"{where}: BODY[{pn.sec}] differs from Python's payload " \
                                f"({len(got)} vs {len(want)} octets)"
        mime_key = f"BODY[{pn.sec}.MIME]".encode()
        if mime_key in r2:
            got_mime = r2[mime_key]
            assert got_mime.endswith(b"\r\n\r\n") or got_mime == b"\r\n", \
                f"{where}: MIME header must end with a blank line: {got_mime[-20:]!r}"
            hp = BytesParser(policy=COMPAT).parsebytes(got_mime, headersonly=True)
            assert raw_items(hp) == raw_items(part), f"{where}: {pn.sec}.MIME headers"
        if pn.leaf and f"BINARY[{pn.sec}]".encode() in r2:
            b = r2[f"BINARY[{pn.sec}]".encode()]
            bsize = number(r2[f"BINARY.SIZE[{pn.sec}]".encode()], "BINARY.SIZE")
            assert isinstance(b, bytes) and bsize == len(b), f"{where}: BINARY.SIZE"
            partial = r2.get(f"BINARY[{pn.sec}]<3>".encode())
            assert partial is None or partial == b[3:13], f"{where}: BINARY[]<3.10>"
            if bn.encoding == "base64":
                assert b == part.get_payload(decode=True), f"{where}: BINARY (base64)"
            elif bn.encoding == "quoted-printable":
                # hard line breaks are CRLF in the canonical form (RFC 2045 6.7 rule 4);
                # crlf() only guards against a Python that decodes them to LF
                assert b == crlf(part.get_payload(decode=True)), f"{where}: BINARY (QP)"
            else:
                assert b == got, f"{where}: BINARY of a {bn.encoding} part != BODY"
        if pn.inner:
            inner_msg, _ = pn.inner
            h = r2[f"BODY[{pn.sec}.HEADER]".encode()]
            t = r2[f"BODY[{pn.sec}.TEXT]".encode()]
            assert h + t == got, f"{where}: HEADER + TEXT != the encapsulated message"
            check_envelope(bn.envelope, inner_msg)
    return r


def check_nul(c, uid, raw):
    """A message stored with NUL octets (APPENDed as a literal8): BODY[...] and RFC822*
    are plain literals, which RFC 9051 forbids to hold NUL (CHAR8), so the server sends
    each NUL as 0x80, as Dovecot does (same length: sizes stay true); BINARY[1] (RFC 3516)
    is a literal8 ~{n} with the real octets. fetch_items() raises SexpError on a NUL in a
    plain literal, so a server that sends one fails here too."""
    want = raw.replace(b"\x00", b"\x80")
    r = fetch(c, uid, ["UID", "BODY.PEEK[]", "BODY.PEEK[HEADER]", "BODY.PEEK[TEXT]",
                       "BODY.PEEK[1]", "RFC822.SIZE"])
    whole = item(r, b"BODY[]")
    assert b"\x00" not in whole and whole == want, f"BODY[]: {whole!r}"
    assert item(r, b"BODY[HEADER]") + item(r, b"BODY[TEXT]") == want
    assert b"\x80" in item(r, b"BODY[HEADER]") and b"\x80" in item(r, b"BODY[1]")
    assert number(r[b"RFC822.SIZE"], "RFC822.SIZE") == len(raw)
    r = fetch(c, uid, ["UID", "BINARY.PEEK[1]", "BINARY.SIZE[1]", "RFC822"])
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert item(r, b"BINARY[1]") == body and b"\x00" in body, f"BINARY[1]: {r!r}"
    assert number(r[b"BINARY.SIZE[1]"], "BINARY.SIZE") == len(body)
    assert item(r, b"RFC822") == want


def message_ids():
    out = []
    for name, (_, good, smtp) in CORPUS.items():
        for via in ("append", "smtp") if smtp else ("append",):
            xf = XFAIL.get((name, via))
            marks = [pytest.mark.xfail(strict=True, reason=xf[0], raises=xf[1])] if xf else []
            out.append(pytest.param(name, via, marks=marks, id=f"{name}-{via}"))
    return out


@pytest.mark.parametrize("name,via", message_ids())
def test_corpus_message(corpus, name, via):
    _, good, _ = CORPUS[name]
    raw = corpus.raw[name]
    t = corpus.append_result.get(name)
    if b"\x00" in raw:
        # NUL in a plain literal is a syntax error (RFC 9051 CHAR8): BAD or NO, not OK
        assert re.match(rb"c\d+ (BAD|NO) ", t), f"APPEND of a NUL in a literal: {t!r}"
        t = corpus.append_result.get(name + "~")
    if (name, via) not in corpus.uid:
        assert good is False, f"APPEND of a well-formed message failed: {t!r}"
        # A server may refuse malformed input with NO (never BAD for valid syntax)
        assert re.match(rb"c\d+ NO ", t or b""), f"APPEND refused without NO: {t!r}"
        return
    mailbox, uid = corpus.uid[(name, via)]
    c = imap_connect(corpus.p)
    try:
        tagged_ok(c.command(f"EXAMINE {mailbox}")[1])
        if good:
            check_well_formed(c, uid, raw, via == "smtp")
        _, bs = check_self_consistent(c, uid)
        if b"\x00" in raw:
            check_nul(c, uid, raw)
        if name == "bad_deep":
            depth, node = 0, bs
            while node.children:
                depth, node = depth + 1, node.children[0]
            assert 1 <= depth < 1000, f"1000-level nesting not capped: depth {depth}"
    finally:
        c.close()


def test_sexp_parser_rejects_broken_syntax():
    for bad in (b"* 1 FETCH (UID 1", b"* 1 FETCH (UID 1))", b'* 1 FETCH (X "a\\q")',
                b"* 1 FETCH (BODY[] {5}\r\nabc)"):
        with pytest.raises(SexpError):
            fetch_items(bad)
    n, its = fetch_items(b'* 2 FETCH (UID 9 BODY[1.MIME] {4}\r\na\r\n\r ENVELOPE (NIL "s" '
                         b'NIL NIL NIL NIL NIL NIL NIL NIL))')
    assert n == 2 and its[b"BODY[1.MIME]"] == b"a\r\n\r" and its[b"ENVELOPE"][1] == b"s"


def test_binary_of_message_and_multipart_parts(corpus):
    """BINARY of a part that is not a leaf (RFC 3516): a complete FETCH or a clean tagged
    NO, with the connection kept (an early server wrote half a FETCH line, then the NO,
    and closed the connection). Sections: rfc822 message part 2 (message/rfc822) and
    2.1 (its multipart/mixed body's first part, multipart/alternative)."""
    mailbox, uid = corpus.uid[("rfc822", "append")]
    c = imap_connect(corpus.p)
    try:
        tagged_ok(c.command(f"EXAMINE {mailbox}")[1])
        for att in ("BINARY.PEEK[2]", "BINARY.SIZE[2]", "BINARY.PEEK[2.1]",
                    "BINARY.SIZE[2.1]"):
            u, t = c.command(f"UID FETCH {uid} (UID {att})")
            assert re.match(rb"c\d+ (OK|NO) ", t), f"{att}: {t!r}"
            for r in u:
                fetch_items(r)  # any untagged FETCH must be complete and valid
            _, t = c.command("NOOP")
            tagged_ok(t)
    finally:
        c.close()
