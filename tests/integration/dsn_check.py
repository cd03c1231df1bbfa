"""Parse and check a delivery status notification (RFC 3464 multipart/report) from Postern.

    from dsn_check import check_dsn
    dsn = check_dsn(raw, {"to": "alice@example.test",
                          "rcpts": [{"Final-Recipient": "rfc822; bob@example.com",
                                     "Action": "failed", "Status": "5.1.1"}],
                          "original": original_bytes})
    assert "No such user" in dsn["rcpts"][0]["Diagnostic-Code"]

check_dsn() parses with Python's email package (policy=email.policy.default), asserts the
structure every DSN must have whatever the test, compares it with `expect`, and returns a
dict (see parse_dsn()). A mismatch raises AssertionError with the DSN in the message.

The structure checked always (RFC 3461-3464, RFC 6522, RFC 3834, RFC 5322):
  - multipart/report; report-type=delivery-status, a boundary of 1-70 characters that
    occurs in none of the parts, and exactly three parts: text/plain, message/delivery-status,
    then message/rfc822 or text/rfc822-headers; no MIME defects at the top or in the parts;
  - From "Mail Delivery System" <MAILER-DAEMON@host>, a To, a Date that parses, a
    Message-ID, MIME-Version: 1.0, Auto-Submitted: auto-replied;
  - per-message fields with Reporting-MTA "dns; host" and Arrival-Date; at least one
    per-recipient block, each with Final-Recipient, Action (failed, delayed, delivered,
    relayed, expanded) and an RFC 3463 Status; Will-Retry-Until only with Action: delayed;
  - the Subject that goes with the most severe action present;
  - outside the attached original: no CR except before LF, no line over 998 octets.

Raw input may use LF (the spool) or CRLF (as received over SMTP) line endings.
"""

import datetime
import email
import email.policy
import email.utils
import re

SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
}
ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
PER_MESSAGE_FIELDS = ("Reporting-MTA", "X-Postern-Queue-ID", "Original-Envelope-Id",
                      "Arrival-Date")
PER_RCPT_FIELDS = ("Original-Recipient", "Final-Recipient", "Action", "Status", "Remote-MTA",
                   "Diagnostic-Code", "Last-Attempt-Date", "Will-Retry-Until")
STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
LINE_MAX = 998


class DSNError(AssertionError):
    pass


def _text(value):
    """A raw header value as str: folding undone, 8-bit bytes (kept by the parser as
    surrogate escapes) decoded as UTF-8."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value).rstrip("\r\n")
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


def _raw_fields(msg):
    """{name: value} of a header block, the values as they were written (no RFC 2047
    decoding), names in their canonical case from PER_*_FIELDS when known."""
    canon = {n.lower(): n for n in PER_MESSAGE_FIELDS + PER_RCPT_FIELDS}
    out = {}
    for name, value in msg.raw_items():
        key = canon.get(name.lower(), name)
        if key in out:
            raise DSNError(f"field {key} twice in one block")
        out[key] = _text(value)
    return out


def _raw_split(raw, boundary):
    """(data, parts): data is raw with LF line endings, parts the (start, end) offsets in
    data of each body part (headers and body) split on the boundary as RFC 2046 5.1.1 says:
    the line end before a delimiter belongs to the delimiter."""
    data = raw.replace(b"\r\n", b"\n")
    b = boundary.encode("ascii")
    hend = data.find(b"\n\n")
    if hend < 0:
        raise DSNError("no empty line after the header")
    delim_re = re.compile(b"\n--" + re.escape(b) + b"(--)?\n")
    delims = [m.start() for m in delim_re.finditer(data, hend + 1)]
    if len(delims) != 4:
        raise DSNError(f"{len(delims)} delimiter lines for boundary {boundary!r}, want 4")
    if data[delims[3]:] != b"\n--" + b + b"--\n":
        raise DSNError("the message does not end with the close delimiter")
    if any(data.startswith(b"\n--" + b + b"--", d) for d in delims[:3]):
        raise DSNError("close delimiter before the third part")
    return data, [(delims[i] + len(b) + 4, delims[i + 1]) for i in range(3)]


def _split_part(part):
    """(header bytes, body bytes) of one raw body part."""
    if part.startswith(b"\n"):
        return b"", part[1:]
    i = part.find(b"\n\n")
    if i < 0:
        raise DSNError("body part without an empty line after its header")
    return part[:i + 1], part[i + 2:]


def parse_dsn(raw):
    """Parses a DSN without checking it. Returns a dict:
      subject, from, to, date, message_id, auto_submitted, mime_version: header values (str);
      content_type, report_type, boundary;
      part_types: the three parts' content types;
      text: part 1 decoded;
      per_message: {field: value} of the delivery-status per-message block;
      rcpts: [{field: value}] per recipient (Final-Recipient, Original-Recipient, Action,
             Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until as
             present, values as written);
      original_type: "message/rfc822" or "text/rfc822-headers";
      original_headers: [(name, value)] of the attached message or header block;
      original_bytes: part 3's body, byte for byte (LF line endings);
      part_headers: [bytes] the three parts' raw MIME headers;
      raw_parts: [bytes] the three parts, raw, split on the boundary;
      msg: the email.message.EmailMessage."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    top = {name.lower(): _text(value) for name, value in msg.raw_items()}
    res = {
        "msg": msg,
        "subject": top.get("subject"),
        "from": top.get("from"),
        "to": top.get("to"),
        "date": top.get("date"),
        "message_id": top.get("message-id"),
        "auto_submitted": top.get("auto-submitted"),
        "mime_version": top.get("mime-version"),
        "content_type": msg.get_content_type(),
        "report_type": msg.get_param("report-type"),
        "boundary": msg.get_boundary(),
        "part_types": [],
        "text": None,
        "per_message": {},
        "rcpts": [],
        "original_type": None,
        "original_headers": [],
        "original_bytes": None,
        "part_headers": [],
        "raw_parts": [],
    }
    if not msg.is_multipart():
        return res
    parts = msg.get_payload()
    res["part_types"] = [p.get_content_type() for p in parts]
    if len(parts) >= 1 and parts[0].get_content_type() == "text/plain":
        res["text"] = parts[0].get_content()
    if len(parts) >= 2 and parts[1].get_content_type() == "message/delivery-status":
        blocks = parts[1].get_payload()
        if blocks:
            res["per_message"] = _raw_fields(blocks[0])
            res["rcpts"] = [_raw_fields(b) for b in blocks[1:]]
    if len(parts) >= 3:
        res["original_type"] = parts[2].get_content_type()
    if res["boundary"]:
        try:
            data, raw_parts = _raw_split(raw, res["boundary"])
        except DSNError:
            raw_parts = []
        if raw_parts:
            raw_parts = [data[a:e] for a, e in raw_parts]
            res["raw_parts"] = raw_parts
            split = [_split_part(p) for p in raw_parts]
            res["part_headers"] = [h for h, _ in split]
            res["original_bytes"] = split[2][1]
            hdr = email.message_from_bytes(split[2][1], policy=email.policy.default)
            res["original_headers"] = [(n, _text(v)) for n, v in hdr.raw_items()]
    return res


def _fail(raw, why):
    shown = raw[:4000].decode("utf-8", "replace")
    raise DSNError(f"{why}\n---- DSN (first 4000 octets) ----\n{shown}")


def _most_severe(rcpts):
    actions = {r.get("Action") for r in rcpts}
    if "failed" in actions:
        return "failed"
    if "delayed" in actions:
        return "delayed"
    return "success"


def _header_block(original):
    data = original.replace(b"\r\n", b"\n")
    if data.startswith(b"\n"):
        return b""
    i = data.find(b"\n\n")
    return data if i < 0 else data[:i + 1]


def check_structure(raw, d):
    """The checks every DSN must pass (see the module doc); raises DSNError."""
    if d["content_type"] != "multipart/report":
        _fail(raw, f"Content-Type is {d['content_type']}, not multipart/report")
    if d["report_type"] != "delivery-status":
        _fail(raw, f"report-type is {d['report_type']!r}")
    b = d["boundary"]
    if not b or len(b) > 70:
        _fail(raw, f"bad boundary {b!r}")
    msg = d["msg"]
    if msg.defects:
        _fail(raw, f"MIME defects: {msg.defects}")
    parts = msg.get_payload()
    if len(parts) != 3:
        _fail(raw, f"{len(parts)} parts, want 3")
    for p in parts:
        if p.defects:
            _fail(raw, f"defects in {p.get_content_type()}: {p.defects}")
    if d["part_types"][:2] != ["text/plain", "message/delivery-status"] or \
            d["part_types"][2] not in ("message/rfc822", "text/rfc822-headers"):
        _fail(raw, f"part types {d['part_types']}")
    if parts[0].get_content_charset() != "utf-8":
        _fail(raw, f"text part charset {parts[0].get_content_charset()!r}")
    try:
        data, offsets = _raw_split(raw, b)
    except DSNError as e:
        _fail(raw, str(e))
    for i, (start, end) in enumerate(offsets):
        if b.encode() in _split_part(data[start:end])[1]:
            _fail(raw, f"boundary occurs in part {i + 1}")

    name, addr = email.utils.parseaddr(d["from"] or "")
    if name != "Mail Delivery System" or not addr.startswith("MAILER-DAEMON@"):
        _fail(raw, f"From is {d['from']!r}")
    if not d["to"]:
        _fail(raw, "no To")
    if d["auto_submitted"] != "auto-replied":
        _fail(raw, f"Auto-Submitted is {d['auto_submitted']!r}")
    if d["mime_version"] != "1.0":
        _fail(raw, f"MIME-Version is {d['mime_version']!r}")
    if not d["message_id"] or not re.fullmatch(r"<[^<>@\s]+@[^<>@\s]+>", d["message_id"]):
        _fail(raw, f"Message-ID is {d['message_id']!r}")
    try:
        email.utils.parsedate_to_datetime(d["date"])
    except (TypeError, ValueError):
        _fail(raw, f"Date does not parse: {d['date']!r}")

    pm = d["per_message"]
    if not pm.get("Reporting-MTA", "").startswith("dns; "):
        _fail(raw, f"Reporting-MTA is {pm.get('Reporting-MTA')!r}")
    for f in ("Arrival-Date",):
        if f not in pm:
            _fail(raw, f"no {f} in the per-message fields")
    try:
        email.utils.parsedate_to_datetime(pm["Arrival-Date"])
    except (TypeError, ValueError):
        _fail(raw, f"Arrival-Date does not parse: {pm['Arrival-Date']!r}")
    if not d["rcpts"]:
        _fail(raw, "no per-recipient fields")
    for i, r in enumerate(d["rcpts"]):
        for f in ("Final-Recipient", "Action", "Status"):
            if f not in r:
                _fail(raw, f"recipient {i}: no {f}")
        if r["Action"] not in ACTIONS:
            _fail(raw, f"recipient {i}: Action {r['Action']!r}")
        if not STATUS_RE.match(r["Status"]):
            _fail(raw, f"recipient {i}: Status {r['Status']!r}")
        if "Will-Retry-Until" in r and r["Action"] != "delayed":
            _fail(raw, f"recipient {i}: Will-Retry-Until with Action {r['Action']}")
    want = SUBJECTS[_most_severe(d["rcpts"])]
    if d["subject"] != want:
        _fail(raw, f"Subject is {d['subject']!r}, want {want!r}")

    # Everything we generated, i.e. up to part 3's body: line rules.
    start, end = offsets[2]
    generated = data[:end - len(_split_part(data[start:end])[1])]
    for n, line in enumerate(generated.split(b"\n")):
        if b"\r" in line:
            _fail(raw, f"bare CR in line {n + 1}")
        if len(line) > LINE_MAX:
            _fail(raw, f"line {n + 1} has {len(line)} octets")


def check_dsn(raw_bytes, expect=None):
    """Parses raw_bytes (a DSN as bytes, LF or CRLF), checks its structure (module doc)
    and what `expect` asks, and returns parse_dsn()'s dict. Keys of expect, all optional:
      subject, reporting_mta, queue_id: exact values (reporting_mta without "dns; ");
      to: the address in To (without <>);
      envid: the Original-Envelope-Id, or None for "absent";
      arrival_date: unix seconds or the RFC 5322 string;
      date: unix seconds or the RFC 5322 string of the report's Date;
      rcpts: one dict per recipient, in order, {field: value}; a value None means the
             field must be absent; fields not named are not compared;
      headers_only: True for text/rfc822-headers, False for message/rfc822;
      original: the original message (bytes): part 3 must hold it, or with headers_only
                its header block;
      original_headers: {name: value} that the attached header must contain;
      text_contains: strings the text/plain part must contain."""
    if isinstance(raw_bytes, str):
        raw_bytes = raw_bytes.encode("utf-8", "surrogateescape")
    d = parse_dsn(raw_bytes)
    check_structure(raw_bytes, d)
    expect = expect or {}

    def eq(what, got, want):
        if got != want:
            _fail(raw_bytes, f"{what}: got {got!r}, want {want!r}")

    def date_str(v):
        if isinstance(v, int):
            return email.utils.format_datetime(
                datetime.datetime.fromtimestamp(v, datetime.timezone.utc))
        return v

    if "subject" in expect:
        eq("Subject", d["subject"], expect["subject"])
    if "to" in expect:
        eq("To", d["to"], "<" + expect["to"] + ">")
    if "reporting_mta" in expect:
        eq("Reporting-MTA", d["per_message"].get("Reporting-MTA"),
           "dns; " + expect["reporting_mta"])
        eq("From", email.utils.parseaddr(d["from"])[1],
           "MAILER-DAEMON@" + expect["reporting_mta"])
    if "queue_id" in expect:
        eq("X-Postern-Queue-ID", d["per_message"].get("X-Postern-Queue-ID"), expect["queue_id"])
    if "envid" in expect:
        eq("Original-Envelope-Id", d["per_message"].get("Original-Envelope-Id"),
           expect["envid"])
    if "arrival_date" in expect:
        eq("Arrival-Date", d["per_message"].get("Arrival-Date"),
           date_str(expect["arrival_date"]))
    if "date" in expect:
        eq("Date", d["date"], date_str(expect["date"]))
    if "rcpts" in expect:
        eq("number of recipients", len(d["rcpts"]), len(expect["rcpts"]))
        for i, (got, want) in enumerate(zip(d["rcpts"], expect["rcpts"])):
            for field, value in want.items():
                eq(f"recipient {i} {field}", got.get(field), value)
    if "headers_only" in expect:
        eq("part 3 type", d["original_type"],
           "text/rfc822-headers" if expect["headers_only"] else "message/rfc822")
    if "original" in expect:
        want = expect["original"].replace(b"\r\n", b"\n")
        if d["original_type"] == "text/rfc822-headers":
            want = _header_block(want)
        if d["original_bytes"] != want:
            _fail(raw_bytes, f"attached original differs: {len(d['original_bytes'])} octets, "
                  f"want {len(want)}")
    if "original_headers" in expect:
        got = {n.lower(): v for n, v in d["original_headers"]}
        for name, value in expect["original_headers"].items():
            eq(f"original header {name}", got.get(name.lower()), value)
    for s in expect.get("text_contains", ()):
        if s not in d["text"]:
            _fail(raw_bytes, f"text part does not contain {s!r}")
    return d
