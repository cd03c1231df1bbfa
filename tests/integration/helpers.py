"""Helpers for the integration tests: ports, TLS material, a raw SMTP client, Maildir."""

import os
import random
import re
import smtplib
import socket
import ssl
import subprocess
import time
import uuid

HOSTNAME = "mail.example.test"
DOMAIN = "example.test"
PASSWORDS = {
    "alice@example.test": "Maple-Harbor-4821",
    "bob@example.test": "Cobalt-Ridge-7390",
}
QUEUED_RE = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})\b")

_given_ports = set()


def free_port():
    """A free loopback TCP port below the usual ephemeral range (so client sockets do not
    take it between now and the daemon's bind), random so parallel runs don't collide."""
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port in _given_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _given_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def make_tls_material(directory):
    """A throwaway CA and a server certificate for mail.example.test, localhost, 127.0.0.1."""
    def ossl(*args):
        subprocess.run(["openssl"] + list(args), cwd=directory, check=True,
                       capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", "3", "-subj", "/CN=Postern Test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", f"/CN={HOSTNAME}")
    with open(os.path.join(directory, "ext.cnf"), "w") as f:
        f.write(f"subjectAltName=DNS:{HOSTNAME},DNS:localhost,IP:127.0.0.1\n"
                "basicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "3", "-extfile", "ext.cnf")
    os.chmod(os.path.join(directory, "server.key"), 0o600)
    return {
        "ca": os.path.join(directory, "ca.pem"),
        "cert": os.path.join(directory, "server.pem"),
        "key": os.path.join(directory, "server.key"),
    }


def issue_cert(tls, directory, cn):
    """A new server certificate (CN=cn, same SANs) from the test CA in `tls`; returns
    (cert path, key path) in directory."""
    ca_dir = os.path.dirname(tls["ca"])
    cert = os.path.join(directory, f"{cn}.pem")
    key = os.path.join(directory, f"{cn}.key")
    csr = os.path.join(directory, f"{cn}.csr")
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                    csr, "-subj", f"/CN={cn}"], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", tls["ca"], "-CAkey",
                    os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-out", cert, "-days",
                    "3", "-extfile", os.path.join(ca_dir, "ext.cnf")],
                   check=True, capture_output=True, timeout=60)
    os.chmod(key, 0o600)
    return cert, key


def tls_client_context(tls):
    """A client context that verifies the daemon's certificate against the test CA
    (or, for an instance using init's own self-signed certificate, verifies nothing)."""
    if tls is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=tls["ca"])


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines  # text after "NNN-" / "NNN "

    @property
    def text(self):
        return "\n".join(self.lines)

    def __str__(self):
        return " / ".join(f"{self.code} {l}" for l in self.lines)

    __repr__ = __str__


ENHANCED_RE = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}( |$)")


def check_enhanced_code(r):
    """RFC 2034: with ENHANCEDSTATUSCODES every reply (except the greeting, the EHLO/HELO
    reply and the 334/354 continuations) starts its text with class.subject.detail, whose
    class matches the reply code."""
    if r.code in (220, 334, 354):
        return
    if r.code == 250 and r.lines[0].startswith(HOSTNAME):
        return  # EHLO / HELO
    m = ENHANCED_RE.match(r.lines[0])
    assert m and int(m.group(1)) == r.code // 100, \
        f"reply without a matching enhanced status code: {r}"


class RawSMTP:
    """A minimal SMTP client over a raw socket, for exact control of bytes on the wire.

    Every read has a timeout; EOFError means the server closed the connection."""

    def __init__(self, port, host="127.0.0.1", timeout=10, tls=None):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        self.buf = b""
        # ENHANCEDSTATUSCODES is advertised: check every reply carries one
        self.check_enhanced = True

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise AssertionError("reply line too long / no CRLF: %r" % self.buf[:200])
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        lines = []
        while True:
            raw = self.line()
            text = raw.decode("utf-8", "replace")
            m = re.match(r"^(\d{3})([ -])(.*)$", text)
            if not m and re.match(r"^\d{3}$", text):
                m = re.match(r"^(\d{3})()()$", text)
            assert m, f"malformed reply line {raw!r}"
            lines.append(m.group(3))
            if m.group(2) != "-":
                r = Reply(int(m.group(1)), lines)
                if self.check_enhanced:
                    check_enhanced_code(r)
                return r

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def ehlo(self, name="client.test"):
        r = self.cmd(f"EHLO {name}")
        assert r.code == 250, f"EHLO: {r}"
        return r

    def pending(self, wait=1.0):
        """Whatever the server sends within `wait` seconds (b'' if nothing; EOF ends it)."""
        out = self.buf
        self.buf = b""
        self.sock.settimeout(0.1)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                if not data:
                    break
                out += data
        finally:
            self.sock.settimeout(self.timeout)
        return out

    def closed_within(self, wait):
        """True if the server closes the connection within `wait` s; returns (closed, data)."""
        out = self.buf
        self.buf = b""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                    return True, out
                if not data:
                    return True, out
                out += data
            return False, out
        finally:
            try:
                self.sock.settimeout(self.timeout)
            except OSError:
                pass

    def starttls(self, ctx, host="127.0.0.1"):
        r = self.cmd("STARTTLS")
        assert r.code == 220, f"STARTTLS: {r}"
        assert self.buf == b"", f"data after the 220 to STARTTLS: {self.buf!r}"
        self.sock = ctx.wrap_socket(self.sock, server_hostname=host)
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def unique_token(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex}"


def make_message(sender="sender@remote.test", to="alice@example.test", subject=None,
                 body="Hello from the Postern integration tests.\r\n", token=None,
                 extra_headers=()):
    """An RFC 5322 message as bytes with CRLF line ends. The token (unique) is both in
    the Message-ID and the Subject so that delivered copies can be counted."""
    token = token or unique_token()
    subject = subject or f"test {token}"
    headers = [
        f"From: <{sender}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Message-ID: <{token}@client.test>",
        "Date: Mon, 23 Nov 2026 12:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ] + list(extra_headers)
    text = "\r\n".join(headers) + "\r\n\r\n" + body
    return text.encode("utf-8"), token


def smtp_client(port, timeout=10):
    return smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=timeout)


def queue_id_from(resp):
    """The queue id from a 250 reply text (bytes or str) after DATA/BDAT LAST."""
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    m = QUEUED_RE.search(resp)
    assert m, f"no '2.0.0 Ok: queued as <16 hex>' in {resp!r}"
    return m.group(1)


def send_raw_message(client, sender, rcpts, message, ehlo=True):
    """EHLO/MAIL/RCPT/DATA on a RawSMTP client; returns the reply to the end of data."""
    if ehlo:
        client.ehlo()
    r = client.cmd(f"MAIL FROM:<{sender}>")
    assert r.code == 250, f"MAIL: {r}"
    for rcpt in rcpts:
        r = client.cmd(f"RCPT TO:<{rcpt}>")
        assert r.code == 250, f"RCPT {rcpt}: {r}"
    r = client.cmd("DATA")
    assert r.code == 354, f"DATA: {r}"
    client.send(dot_stuff(message) + b".\r\n")
    return client.reply()


def dot_stuff(message):
    """CRLF-terminated, dot-stuffed DATA payload (without the final .CRLF)."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    lines = message.split(b"\r\n")
    return b"\r\n".join((b"." + l if l.startswith(b".") else l) for l in lines)


def split_address(address):
    local, _, domain = address.rpartition("@")
    return local, domain


def maildir_path(data_dir, address):
    local, domain = split_address(address)
    return os.path.join(data_dir, "mail", domain.lower(), local.lower())


def read_maildir(data_dir, address):
    """The messages (bytes) in new/ and cur/ of the address's Maildir, sorted by name."""
    base = maildir_path(data_dir, address)
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(base, sub)
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith("."):
                continue
            try:
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
            except FileNotFoundError:
                continue
    return out


def header_block(message):
    """The header section of a delivered (LF) message as text."""
    head = message.split(b"\n\n", 1)[0]
    return head.decode("utf-8", "replace")


def headers_named(message, name):
    """Unfolded values of every header `name` (case-insensitive) in a delivered message."""
    out = []
    cur = None
    for line in header_block(message).split("\n"):
        if line[:1] in (" ", "\t") and cur is not None:
            out[-1] += " " + line.strip()
            continue
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name.lower():
            out.append(v.strip())
            cur = True
        else:
            cur = None
    return out
