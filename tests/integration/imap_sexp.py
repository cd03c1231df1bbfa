"""A small, strict parser for IMAP server responses (RFC 9051 section 9 / RFC 3501 section 9
formal syntax), and a raw IMAPS reader that returns responses byte-exactly, for the
integration tests (used by test_imap_mime.py).

Values:
  NIL                 -> None
  atom / number       -> Atom (a bytes subclass; number atoms stay bytes, use int())
  quoted string       -> Quoted (bytes; escapes \\ and \" resolved)
  literal {n} / ~{n}  -> Literal (bytes, exactly n octets; .binary is True for ~{n})
  parenthesised list  -> list
A FETCH attribute name with a section, e.g. BODY[HEADER.FIELDS (Subject From)]<10>, is
one Atom (the section text kept verbatim), as RFC 9051 section 7.5.2 writes it.

Strict means: quoted strings may only escape '\\' and '"' and may not hold CR, LF or NUL;
atoms only hold ATOM-CHARs (plus ']' in resp-text-code atoms, which we do not parse
here); a literal's octet count must be followed by CRLF; lists must balance; nothing but
one SP separates items (none between two lists, as in "1*address" and "1*body").
Any violation raises SexpError with the offset.
"""

import re
import socket

__all__ = ["Atom", "Quoted", "Literal", "SexpError", "parse", "parse_response",
           "fetch_items", "RawImap"]


class Atom(bytes):
    def __repr__(self):
        return "Atom(%s)" % bytes.__repr__(self)


class Quoted(bytes):
    def __repr__(self):
        return "Quoted(%s)" % bytes.__repr__(self)


class Literal(bytes):
    binary = False

    def __repr__(self):
        return "Literal(%s%s)" % ("~" if self.binary else "", bytes.__repr__(self)[:80])


class SexpError(ValueError):
    pass


# RFC 9051: ATOM-CHAR = any CHAR except atom-specials;
# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
# list-wildcards = "%" / "*"; quoted-specials = DQUOTE / "\"; resp-specials = "]".
# We allow '%' and '*' (flag \* and list-mailbox) and '\' only as the first char (\Seen).
# '[' is an ATOM-CHAR but starts a section in fetch att names; atom() handles it.
_ATOM_CHARS = frozenset(c for c in range(0x21, 0x7f) if chr(c) not in '(){ "\\]%*[')
_ATOM_EXTRA = frozenset(b"%*")


class _Parser:
    def __init__(self, data):
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("bytes required")
        self.d = bytes(data)
        self.i = 0

    def err(self, msg):
        ctx = self.d[max(0, self.i - 30):self.i + 30]
        raise SexpError(f"{msg} at offset {self.i}: ...{ctx!r}...")

    def peek(self):
        return self.d[self.i] if self.i < len(self.d) else None

    def expect(self, b):
        if not self.d.startswith(b, self.i):
            self.err(f"expected {b!r}")
        self.i += len(b)

    def value(self):
        c = self.peek()
        if c is None:
            self.err("unexpected end of input")
        if c == 0x28:  # (
            return self.list_()
        if c == 0x22:  # "
            return self.quoted()
        if c == 0x7b or (c == 0x7e and self.d[self.i + 1:self.i + 2] == b"{"):
            return self.literal()
        return self.atom()

    def list_(self):
        self.expect(b"(")
        out = []
        if self.peek() == 0x29:
            self.i += 1
            return out
        while True:
            out.append(self.value())
            c = self.peek()
            if c == 0x29:
                self.i += 1
                return out
            if c == 0x28 and isinstance(out[-1], list):
                # "1*address" and "1*body" are written without SP: ")("
                continue
            if c != 0x20:
                self.err("expected SP or ')' in list")
            self.i += 1
            if self.peek() in (0x20, 0x29):
                self.err("empty list item (double SP or SP before ')')")

    def quoted(self):
        self.expect(b'"')
        out = bytearray()
        while True:
            c = self.peek()
            if c is None:
                self.err("unterminated quoted string")
            if c in (0x0d, 0x0a, 0x00):
                self.err("CR, LF or NUL in a quoted string")
            self.i += 1
            if c == 0x22:
                return Quoted(bytes(out))
            if c == 0x5c:
                e = self.peek()
                if e not in (0x22, 0x5c):
                    self.err("invalid escape in quoted string (only \\\\ and \\\")")
                out.append(e)
                self.i += 1
                continue
            out.append(c)

    def literal(self):
        binary = self.peek() == 0x7e
        if binary:
            self.i += 1
        m = re.compile(rb"\{(\d{1,19})\}\r\n").match(self.d, self.i)
        if not m:
            self.err("malformed literal header (want {n}CRLF)")
        n = int(m.group(1))
        self.i = m.end()
        if self.i + n > len(self.d):
            self.err(f"literal of {n} octets runs past the end of the response")
        lit = Literal(self.d[self.i:self.i + n])
        lit.binary = binary
        if not binary and b"\x00" in lit:
            self.err("NUL in a non-binary literal (RFC 3516 requires ~{n})")
        self.i += n
        return lit

    def atom(self):
        start = self.i
        c = self.peek()
        if c == 0x5c:  # flag: \Seen, \*
            self.i += 1
            if self.peek() == 0x2a:
                self.i += 1
                return Atom(self.d[start:self.i])
        while self.peek() is not None and (self.peek() in _ATOM_CHARS
                                           or self.peek() in _ATOM_EXTRA):
            self.i += 1
        if self.peek() == 0x5b:  # [section] (fetch att names like BODY[1.MIME])
            self.section()
            if self.peek() == 0x3c:  # <origin>
                m = re.compile(rb"<\d{1,10}>").match(self.d, self.i)
                if not m:
                    self.err("malformed <origin> after a section")
                self.i = m.end()
        if self.i == start or (c == 0x5c and self.i == start + 1):
            self.err("expected an atom")
        a = Atom(self.d[start:self.i])
        if a == b"NIL":
            return None
        return a

    def section(self):
        self.expect(b"[")
        depth = 0
        while True:
            c = self.peek()
            if c is None:
                self.err("unterminated section '['")
            if c in (0x0d, 0x0a, 0x00):
                self.err("CR/LF/NUL inside a section")
            if c == 0x22:
                self.quoted()
                continue
            self.i += 1
            if c == 0x28:
                depth += 1
            elif c == 0x29:
                depth -= 1
                if depth < 0:
                    self.err("unbalanced ')' in a section")
            elif c == 0x5d and depth == 0:
                return
            elif c == 0x5d:
                self.err("']' inside a parenthesised header list")


def parse(data):
    """Parses exactly one value from data (bytes); raises SexpError if anything is left."""
    p = _Parser(data)
    v = p.value()
    if p.i != len(p.d):
        p.err("trailing data after the value")
    return v


def parse_response(data):
    """Parses one whole untagged/tagged response (without its final CRLF) into a list of
    values separated by single SPs, e.g. b'* 3 FETCH (UID 7)' -> [Atom(b'*'), Atom(b'3'),
    Atom(b'FETCH'), [Atom(b'UID'), Atom(b'7')]]. Response text after OK/NO/BAD/BYE is not
    s-expression syntax; use this only for data responses."""
    p = _Parser(data)
    out = []
    if p.peek() == 0x2a:
        p.i += 1
        out.append(Atom(b"*"))
        if p.peek() is not None:
            p.expect(b" ")
    while p.peek() is not None:
        out.append(p.value())
        if p.peek() is None:
            break
        p.expect(b" ")
        if p.peek() is None:
            p.err("trailing SP")
    return out


def fetch_items(resp):
    """For b'* n FETCH (K1 V1 K2 V2 ...)' returns (n, {K (upper-cased bytes): V}) with a
    strict check of the shape; duplicate keys are an error."""
    vals = parse_response(resp)
    if len(vals) != 4 or vals[0] != b"*" or not isinstance(vals[1], Atom) \
            or not vals[1].isdigit() or vals[2].upper() != b"FETCH" \
            or not isinstance(vals[3], list):
        raise SexpError(f"not a FETCH response: {resp[:120]!r}")
    lst = vals[3]
    if len(lst) % 2:
        raise SexpError(f"odd number of items in FETCH list: {resp[:200]!r}")
    out = {}
    for k, v in zip(lst[0::2], lst[1::2]):
        if not isinstance(k, Atom):
            raise SexpError(f"FETCH item name is not an atom: {k!r}")
        key = bytes(k).upper()
        if key in out:
            raise SexpError(f"duplicate FETCH item {key!r}")
        out[key] = v
    return int(vals[1]), out


class RawImap:
    """A byte-exact IMAP client over an existing (TLS) socket: each response is returned as
    the exact bytes the server sent (CRLF of the last line removed), literals included."""

    def __init__(self, sock, timeout=30):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.n = 0

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError(f"connection closed; pending {bytes(self.buf[:200])!r}")
        self.buf += chunk

    def _line(self):
        start = 0
        while True:
            j = self.buf.find(b"\r\n", start)
            if j >= 0:
                line = bytes(self.buf[:j])
                del self.buf[:j + 2]
                return line
            start = max(0, len(self.buf) - 1)
            if len(self.buf) > 64 << 20:
                raise AssertionError("response line over 64 MiB without CRLF")
            self._fill()

    def _exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    _LIT_END = re.compile(rb"~?\{(\d+)\}$")

    def response(self):
        """One complete response (all its literals inlined), without the final CRLF."""
        out = bytearray()
        while True:
            line = self._line()
            out += line
            m = self._LIT_END.search(line)
            if not m:
                return bytes(out)
            out += b"\r\n" + self._exact(int(m.group(1)))

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def command(self, text):
        """Sends `tag text`; returns (untagged responses, tagged completion line)."""
        self.n += 1
        tag = b"c%d" % self.n
        self.send(tag + b" " + (text if isinstance(text, bytes) else text.encode()) + b"\r\n")
        return self.collect(tag)

    def collect(self, tag):
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b" "):
                return untagged, r
            untagged.append(r)

    def append(self, mailbox, message, binary=False):
        """APPEND with a synchronising literal (a literal8 ~{n} when binary, RFC 3516);
        returns the tagged completion line."""
        self.n += 1
        tag = b"c%d" % self.n
        self.send(tag + b" APPEND " + mailbox.encode() + b" " + (b"~" if binary else b"") +
                  b"{%d}\r\n" % len(message))
        r = self.response()
        if not r.startswith(b"+"):
            if r.startswith(tag + b" "):
                return r
            raise AssertionError(f"APPEND: unexpected {r[:200]!r}")
        self.send(message + b"\r\n")
        return self.collect(tag)[1]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _selftest():
    ok = [
        (b'(A "b\\"c" NIL {3}\r\nx\ny ())', [Atom(b"A"), b'b"c', None, b"x\ny", []]),
        (b'(BODY[HEADER.FIELDS (Subject "From")]<10> "x")',
         [Atom(b'BODY[HEADER.FIELDS (Subject "From")]<10>'), b"x"]),
        (b"(\\Seen \\* $Label)", [Atom(b"\\Seen"), Atom(b"\\*"), Atom(b"$Label")]),
        (b"(BINARY[1] ~{2}\r\n\x00a)", [Atom(b"BINARY[1]"), b"\x00a"]),
    ]
    for data, want in ok:
        got = parse(data)
        assert got == want, (data, got)
    bad = [b"(A", b"(A))", b'"a\\n"', b'"a\r\nb"', b"{3}\r\nab", b"(A  B)", b"(A )",
           b"{2}\nab", b'"abc', b"(A)(B)", b"BODY[1", b"{2}\r\n\x00a"]
    for data in bad:
        try:
            parse(data)
        except SexpError:
            continue
        raise AssertionError(f"accepted {data!r}")
    n, items = fetch_items(b'* 1 FETCH (UID 5 BODY[] {2}\r\nab RFC822.SIZE 2)')
    assert n == 1 and items == {b"UID": b"5", b"BODY[]": b"ab", b"RFC822.SIZE": b"2"}


_selftest()
