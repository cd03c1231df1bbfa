"""The DSN builder (src/lib-queue/dsn.c) as Python's email package reads it.

Runs the cmocka test binary test-dsn with DSN_DUMP_DIR set: every report its cases build
is written there (NN-label.eml) with the input it was built from (NN-label.json) and the
original message (NN-label.orig). Each report must pass dsn_check.check_dsn(), and every
field must round-trip: the expectation is computed here, independently of the C code,
from the input and the rules in dsn.h (control characters to one space, 8-bit bytes to '?'
outside addresses, lines cut at 998 octets, originals over DSN_FULL_MAX returned as
headers).

TEST_DSN_BIN overrides the binary (default: <repo>/build/src/lib-queue/test-dsn).
"""

import datetime
import email.utils
import glob
import json
import os
import subprocess

import pytest

from dsn_check import SUBJECTS, DSNError, check_dsn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LINE_MAX = 998


def dsn_bin():
    path = os.environ.get("TEST_DSN_BIN") or os.path.join(
        REPO, "build", "src", "lib-queue", "test-dsn")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.skip(f"DSN unit test binary not found: {path} (build with cmocka, or set "
                    "TEST_DSN_BIN)")
    return path


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    d = tmp_path_factory.mktemp("dsn-dump")
    res = subprocess.run([dsn_bin()], env=dict(os.environ, DSN_DUMP_DIR=str(d)),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"test-dsn failed:\n{res.stdout}\n{res.stderr}"
    out = []
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        base = path[:-len(".json")]
        with open(path, "rb") as f:
            report = json.loads(f.read().decode("utf-8", "surrogateescape"))
        with open(base + ".eml", "rb") as f:
            eml = f.read()
        with open(base + ".orig", "rb") as f:
            orig = f.read()
        out.append((os.path.basename(base), report, eml, orig))
    return out


# ---- the expectation, from the rules in dsn.h ---------------------------------------

def clean(value, room, ascii_only):
    """dsn.h: each run of control characters becomes one space; with ascii_only, bytes
    >= 0x80 become '?', otherwise a UTF-8 sequence is kept whole or dropped; at most room
    octets."""
    out = bytearray()
    in_ctl = False
    for c in value.encode("utf-8", "surrogateescape"):
        if c < 0x20 or c == 0x7F:
            if in_ctl:
                continue
            in_ctl = True
            c = 0x20
        else:
            in_ctl = False
        need = 1
        if c >= 0x80:
            if ascii_only:
                c = ord("?")
            elif c >= 0xF0:
                need = 4
            elif c >= 0xE0:
                need = 3
            elif c >= 0xC0:
                need = 2
        if len(out) + need > room:
            break
        out.append(c)
    return bytes(out)


def field(name, prefix, value, ascii_only=True, suffix=""):
    """The value (after "Name: ") of the line name + ": " + prefix + clean(value) + suffix,
    as dsn_check returns it."""
    head = f"{name}: {prefix}".encode()
    line = head + clean(value, LINE_MAX - len(suffix) - len(head), ascii_only) + suffix.encode()
    return line[len(name) + 2:].decode("utf-8", "replace").lstrip(" \t")


def date(t):
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(t, datetime.timezone.utc))


def header_block(orig, limit):
    if orig.startswith(b"\n") or not orig:
        return b""
    i = orig.find(b"\n\n")
    block = orig if i < 0 else orig[:i + 1]
    if len(block) > limit:
        j = orig.rfind(b"\n", 0, limit)
        block = b"" if j < 0 else orig[:j + 1]
    return block


def expect_from(report, orig):
    rcpts = []
    for r in report["rcpts"]:
        e = {
            "Final-Recipient": field("Final-Recipient", "rfc822; ", r["final_recipient"], False),
            "Action": r["action"],
            "Status": r["status"],
            "Original-Recipient": None,
            "Remote-MTA": None,
            "Diagnostic-Code": None,
            "Last-Attempt-Date": None,
            "Will-Retry-Until": None,
        }
        if r["orcpt"] is not None:
            e["Original-Recipient"] = field(
                "Original-Recipient", "" if ";" in r["orcpt"] else "rfc822;", r["orcpt"], False)
        if r["remote_mta"] is not None:
            e["Remote-MTA"] = field("Remote-MTA", "dns; ", r["remote_mta"])
        if r["diagnostic"] is not None:
            e["Diagnostic-Code"] = field("Diagnostic-Code", "smtp; ", r["diagnostic"])
        if r["last_attempt"]:
            e["Last-Attempt-Date"] = date(r["last_attempt"])
        if r["action"] == "delayed" and r["will_retry_until"]:
            e["Will-Retry-Until"] = date(r["will_retry_until"])
        rcpts.append(e)
    actions = {r["action"] for r in report["rcpts"]}
    subject = SUBJECTS["failed" if "failed" in actions else
                       "delayed" if "delayed" in actions else "success"]
    headers_only = report["headers_only"] or report["original_len"] > report["full_max"]
    to = clean(report["original_sender"], LINE_MAX - len("To: <>"), False)
    expect = {
        "subject": subject,
        "to": to.decode("utf-8", "replace"),
        "reporting_mta": report["reporting_mta"],
        "queue_id": report["queue_id"],
        "envid": None if report["envid"] is None else
        field("Original-Envelope-Id", "", report["envid"]),
        "arrival_date": report["arrival_date"],
        "date": report["now"],
        "rcpts": rcpts,
        "headers_only": headers_only,
        "text_contains": [f"This is the mail system at host {report['reporting_mta']}.",
                          f"The queue id of your message was {report['queue_id']}."],
    }
    if not headers_only or len(header_block(orig, len(orig) + 1)) <= report["full_max"]:
        expect["original"] = orig
    for r in report["rcpts"]:
        if len(r["final_recipient"]) < 200:
            addr = clean(r["final_recipient"], LINE_MAX, False).decode("utf-8", "replace")
            expect["text_contains"].append(f"  <{addr}> ({r['status']})")
    return expect


# ---- tests ------------------------------------------------------------------------------

def test_every_case_dumped(dumps):
    labels = {label.split("-", 1)[1] for label, _, _, _ in dumps}
    for want in ("failed", "delayed", "delivered", "relayed", "expanded", "several-recipients",
                 "orcpt-and-envid", "headers-only", "no-body--headers", "empty-line-only--full",
                 "huge-original", "headers-over-the-limit", "injection", "long-values",
                 "8bit-original", "boundary-collision", "boundary-in-diagnostic"):
        assert want in labels, f"no dump for case {want!r}; have {sorted(labels)}"
    assert len(dumps) >= 40


def test_dsn_round_trip(dumps):
    failures = []
    for label, report, eml, orig in dumps:
        expect = expect_from(report, orig)
        try:
            d = check_dsn(eml, expect)
            # CRLF, as the DSN travels over SMTP, parses the same.
            crlf = check_dsn(eml.replace(b"\n", b"\r\n"), expect)
            assert crlf["rcpts"] == d["rcpts"], "CRLF changes the recipients"
            # The attached part, byte for byte, even when cut.
            want = header_block(orig, report["full_max"]) if expect["headers_only"] else orig
            assert d["original_bytes"] == want, \
                f"part 3 is {len(d['original_bytes'])} octets, want {len(want)}"
            if orig.startswith(b"From: Alice"):
                got = dict(d["original_headers"])
                assert got.get("Subject") == "lunch", got
                assert got.get("Message-ID") == "<m1@example.test>", got
        except (DSNError, AssertionError) as e:
            failures.append(f"{label}: {str(e)[:3000]}")
    assert not failures, "\n\n".join(failures)


def test_injection_stays_in_its_field(dumps):
    (label, report, eml, orig), = [x for x in dumps if x[0].endswith("-injection")]
    d = check_dsn(eml)
    msg = d["msg"]
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert [k.lower() for k in msg.keys()] == [
        "from", "to", "subject", "date", "message-id", "auto-submitted", "mime-version",
        "content-type"]
    for block in msg.get_payload()[1].get_payload():
        assert block["Bcc"] is None and block["X-Injected"] is None and block["Evil"] is None
    assert len(d["rcpts"]) == 2
    assert d["part_types"][0] == "text/plain"
    assert "<b>hi</b>" not in d["msg"].get_payload()[0].get_content().split("\n\n")[0]


def test_check_dsn_catches_broken_reports(dumps):
    """dsn_check must fail on the faults it claims to find."""
    (label, report, eml, orig), = [x for x in dumps if x[0].endswith("-failed")]
    check_dsn(eml)
    broken = {
        "no Auto-Submitted": eml.replace(b"Auto-Submitted: auto-replied\n", b""),
        "wrong subject": eml.replace(b"Subject: Undelivered Mail Returned to Sender",
                                     b"Subject: Successful Mail Delivery Report"),
        "bad action": eml.replace(b"Action: failed", b"Action: bounced"),
        "bad status": eml.replace(b"Status: 5.1.1", b"Status: 5.1"),
        "no close delimiter": eml[:eml.rindex(b"--\n")] + b"\n",
        "long line": eml.replace(b"No such user", b"x" * 1000),
        "not a report": eml.replace(b"multipart/report", b"multipart/mixed"),
    }
    for what, raw in broken.items():
        with pytest.raises(DSNError):
            check_dsn(raw)
            pytest.fail(f"check_dsn accepted a DSN with {what}")
    with pytest.raises(DSNError):
        check_dsn(eml, {"rcpts": [{"Status": "5.1.2"}]})
    with pytest.raises(DSNError):
        check_dsn(eml, {"original": b"Subject: other\n\nbody\n"})
    with pytest.raises(DSNError):
        check_dsn(eml, {"envid": "something"})
