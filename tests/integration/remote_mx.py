"""Remote MX peers for the outbound-delivery tests: real SMTP servers on 127.0.0.x.

A RemoteMX is an aiosmtpd SMTP server (Debian's python3-aiosmtpd) running on its own
asyncio event loop in a background thread, bound to one loopback address (Linux routes all
of 127/8 to lo, so 127.0.0.2 ... 127.0.0.254 work without setup) and a port the test picks.
Postern's outbound client connects to every MX on one configured port, so several peers
share a port number on different addresses: free_mx_port(hosts) picks one free on all.

    port = free_mx_port(["127.0.0.2", "127.0.0.3"])
    with RemoteMX(host="127.0.0.2", port=port, behaviour="tempfail") as mx1, \\
         RemoteMX(host="127.0.0.3", port=port) as mx2:
        ... make Postern deliver ...
        msg = mx2.wait_messages(1)[0]
        assert msg.rcpt_tos == ["bob@remote.test"] and msg.tls is False
        assert [t.outcome for t in mx1.transactions] == ["tempfail"]

Behaviours (`behaviour=`, may be reassigned while the peer runs; it is read per decision):
  "accept"                every RCPT 250, end of DATA 250 2.0.0
  "tempfail"              every RCPT 451 4.3.0
  "tempfail_then_accept"  the first `tempfail_count` transactions (MAIL commands, counted
                          over all connections) get 451 4.3.0 at every RCPT, later ones 250
  "reject"                every RCPT 550 5.1.1 No such user
  "reject_data"           RCPTs 250, end of DATA 554 5.6.0
  "hang"                  accept the TCP connection and never send a byte
  "close"                 accept the TCP connection and close it at once
  callable(peer, msg)     RCPTs 250; end of DATA replies with the returned string (e.g.
                          "452 4.2.2 Mailbox full"); msg is the Message that would be
                          recorded. Only a 2xx reply records it in peer.messages.

What the EHLO reply advertises (drop any with ehlo_drop=("SMTPUTF8", ...), add lines with
ehlo_extra=("XFOO bar",)): SIZE <size_limit or 33554432>, 8BITMIME, SMTPUTF8, PIPELINING,
DSN, ENHANCEDSTATUSCODES, STARTTLS (only with starttls=(cert, key) and before TLS), and
CHUNKING only with chunking=True. aiosmtpd has no BDAT; this module adds a small one (RFC
3030, without BINARYMIME) used only when chunking=True, so by default CHUNKING is never
advertised and a BDAT gets "500 ... not recognized".

The peer is strict, to catch client bugs: an ESMTP parameter whose extension is not
advertised (SIZE=, BODY=, SMTPUTF8, RET=, ENVID=, NOTIFY=, ORCPT=, or anything unknown) is
refused with 555 5.5.4; malformed DSN values with 501 5.5.4; MAIL SIZE= above the limit and
message data above it with 552 5.3.4; without SMTPUTF8 a non-ASCII command gets aiosmtpd's
"500 Error: strict ASCII mode". Data lines longer than 1000 octets get 500 (aiosmtpd).
8-bit data is accepted whether or not BODY=8BITMIME was given (Message.eight_bit says).
With ENHANCEDSTATUSCODES advertised every reply except the greeting, EHLO/HELO and 354
carries an enhanced status code.

What is recorded (all read from the test thread; lists are copies):
  peer.messages      Message: .mail_from ("" for the null sender <>), .rcpt_tos,
                     .content (bytes, dot-unstuffed, CRLF as sent), .tls, .tls_version
                     ("TLSv1.3"), .tls_cipher, .tls_sni (server name the client sent),
                     .mail_options / .rcpt_options (parameter words exactly as sent;
                     rcpt_options flat over the accepted recipients like aiosmtpd's),
                     .mail_params ({"SIZE": "123", "SMTPUTF8": True}, keywords upper case,
                     values as sent), .rcpt_params ({rcpt: {"NOTIFY": "FAILURE"}}),
                     .helo, .esmtp, .peer_ip, .connection (1-based), .chunked (BDAT),
                     .eight_bit, .time, .reply; .parsed() is an email.message.EmailMessage
  peer.transactions  Transaction (a 3-tuple mail_from, rcpt_tos, outcome; rcpt_tos are all
                     RCPTs tried): outcome "accepted" | "tempfail" | "rejected" | "aborted"
                     (client left, or RSET, before a final reply); also .replies, .reply,
                     .accepted_rcpts, .connection, .time
  peer.log           every command line received, decoded (not message data); for "hang"
                     and "close" peers whatever lines the client sent anyway
  peer.pipelined     command lines that arrived before the reply to the previous command
                     was sent (proof that the client pipelined; never a false positive)
  peer.connections / .current / .max_concurrent; peer.starttls (STARTTLS commands),
  peer.tls_failures (handshakes that failed), peer.errors (fixture-side problems and client
  protocol violations such as data sent before the 354)

delay=s sleeps s seconds before every reply (the greeting, each command's reply, the reply
to the end of data), to hold connections open for concurrency tests.

make_test_ca(dir) -> (ca_cert_path, issue); issue(hostname, alt_names=()) -> (cert, key):
a throwaway CA made with the openssl command line tool (EC P-256, valid 3 days) whose
certificates Postern's client can be told to trust; issue a certificate for a wrong name to
test verification failures.

Pytest fixtures: remote_mx(**kw) is a factory returning started peers that are stopped at
teardown (each peer's summary goes to a failing test's output); mx_ca is make_test_ca in a
temp dir.
"""

import asyncio
import collections
import email
import email.policy
import itertools
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback

import pytest
from aiosmtpd.smtp import SMTP as _AioSMTP
from aiosmtpd.smtp import TLSSetupException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402

BEHAVIOURS = ("accept", "tempfail", "tempfail_then_accept", "reject", "reject_data",
              "hang", "close")
DEFAULT_SIZE = 33554432
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
LOG_MAX = 100000            # entries kept in log / transactions; more are counted only
SESSION_TIMEOUT = 120       # aiosmtpd idle timeout per connection

REPLY_TEMPFAIL = "451 4.3.0 Temporary failure, try again later"
REPLY_REJECT = "550 5.1.1 No such user"
REPLY_REJECT_DATA = "554 5.6.0 Message rejected by the remote MX fixture"

_ENHANCED_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}( |$)")
_REPLY_RE = re.compile(r"^([245])(\d\d)([ -])(.*)$", re.S)
_XTEXT_RE = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")


# ---------------------------------------------------------------------------------------
# ports and certificates


def _bindable(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_mx_port(hosts=("127.0.0.2",)):
    """A TCP port free on every address in hosts (and on 127.0.0.1), chosen like
    helpers.free_port() (20000-32000, random, never handed out twice in this process)."""
    hosts = [hosts] if isinstance(hosts, str) else list(hosts)
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(20000, 32000)
        if port in helpers._given_ports:
            continue
        if all(_bindable(h, port) for h in hosts + ["127.0.0.1"]):
            helpers._given_ports.add(port)
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def make_test_ca(directory, name="Remote MX Test CA"):
    """A throwaway CA in directory (ca.pem, ca.key). Returns (ca_cert_path, issue) where
    issue(hostname, alt_names=()) makes a CA-signed server certificate with CN=hostname and
    subjectAltName DNS:hostname plus alt_names (names that parse as IP addresses become
    IP: entries) and returns (cert_path, key_path). Keys are EC P-256 (fast to make)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    ca_cert = os.path.join(directory, "ca.pem")
    ca_key = os.path.join(directory, "ca.key")

    def ossl(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=directory, capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args[:2])} failed: "
                               f"{r.stderr.decode('utf-8', 'replace')}")

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert, "-days", "3",
         "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    os.chmod(ca_key, 0o600)
    counter = itertools.count(1)

    def issue(hostname, alt_names=()):
        base = os.path.join(directory,
                            f"{re.sub(r'[^A-Za-z0-9.-]', '_', hostname)}-{next(counter)}")
        sans = []
        for n in [hostname] + list(alt_names):
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in n else socket.AF_INET, n)
                sans.append(f"IP:{n}")
            except OSError:
                sans.append(f"DNS:{n}")
        with open(base + ".ext", "w") as f:
            f.write(f"subjectAltName={','.join(sans)}\n"
                    "basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n")
        ossl("req", *ec, "-keyout", base + ".key", "-out", base + ".csr",
             "-subj", f"/CN={hostname}")
        ossl("x509", "-req", "-in", base + ".csr", "-CA", ca_cert, "-CAkey", ca_key,
             "-set_serial", str(random.SystemRandom().randrange(1, 1 << 62)),
             "-out", base + ".pem", "-days", "3", "-extfile", base + ".ext")
        os.chmod(base + ".key", 0o600)
        return base + ".pem", base + ".key"

    return ca_cert, issue


# ---------------------------------------------------------------------------------------
# records


class Message:
    """One message a peer accepted (see the module comment for the fields)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def parsed(self):
        """The content parsed as an email.message.EmailMessage."""
        return email.message_from_bytes(self.content, policy=email.policy.default)

    def __repr__(self):
        return (f"<Message from={self.mail_from!r} to={self.rcpt_tos!r} "
                f"{len(self.content)} octets tls={self.tls_version} "
                f"conn={self.connection}>")


class Transaction(tuple):
    """(mail_from, rcpt_tos, outcome) with more detail as attributes."""

    def __new__(cls, mail_from, rcpt_tos, outcome, **kw):
        self = super().__new__(cls, (mail_from, list(rcpt_tos), outcome))
        self.__dict__.update(kw)
        return self

    mail_from = property(lambda self: self[0])
    rcpt_tos = property(lambda self: self[1])
    outcome = property(lambda self: self[2])


def _outcome(reply):
    return {"2": "accepted", "4": "tempfail", "5": "rejected"}.get(str(reply)[:1], "aborted")


def _xtext_ok(value):
    return bool(_XTEXT_RE.match(value))


# ---------------------------------------------------------------------------------------
# the SMTP session (aiosmtpd subclass) and the raw session for "hang" / "close"


class _Handler:
    """aiosmtpd calls handle_DATA at the end of data; the session does the work."""

    async def handle_DATA(self, server, session, envelope):
        return server._mx_data_end(envelope.original_content, chunked=False)


class _Txn:
    def __init__(self, mail_from, options, params):
        self.mail_from = mail_from
        self.options = options
        self.params = params
        self.index = None           # for tempfail_then_accept: assigned at the first RCPT
        self.rcpts = []
        self.replies = []
        self.accepted = []          # (rcpt, options, params)
        self.chunks = []            # BDAT
        self.chunk_bytes = 0
        self.bdat_failed = None


class _Session(_AioSMTP):
    """One SMTP connection to a peer. Everything runs on the peer's loop thread."""

    def __init__(self, peer, loop):
        self._mx = peer
        self._mx_conn = None            # connection number
        self._mx_ip = None
        self._mx_gone = False
        self._mx_txn = None
        self._mx_in_data = False
        self._mx_greeted = False
        self._mx_raw_reply = False      # EHLO / HELO reply: no enhanced code
        self._mx_delay_next = True      # the greeting is delayed too
        self._mx_more_buffered = False
        self._mx_last_reply = None
        self._mx_tls = None             # (version, cipher, sni)
        self._mx_helo = None
        super().__init__(
            _Handler(), data_size_limit=peer.size_limit or DEFAULT_SIZE,
            enable_SMTPUTF8="SMTPUTF8" not in peer._dropped(), decode_data=False,
            hostname=peer.hostname, ident="ESMTP remote MX test fixture",
            tls_context=peer._tls_context, require_starttls=False,
            timeout=SESSION_TIMEOUT, loop=loop)
        # aiosmtpd's limits live in a dict shared by the class; keep ours per instance
        # (RFC 5321 4.5.3.1.4 plus room for SMTPUTF8 and DSN parameters).
        self.command_size_limits = collections.defaultdict(lambda: 1000)

    # --- connection bookkeeping -------------------------------------------------------

    def connection_made(self, transport):
        starttls = self._original_transport is not None
        super().connection_made(transport)
        if starttls:
            obj = transport.get_extra_info("ssl_object")
            if obj is not None:
                cipher = obj.cipher()
                self._mx_tls = (obj.version(), cipher[0] if cipher else None,
                                getattr(obj, "_mx_sni", None))
            self._mx_more_buffered = False
        else:
            peer = transport.get_extra_info("peername")
            self._mx_ip = peer[0] if peer else None
            self._mx_conn = self._mx._opened(self)

    def connection_lost(self, error):
        self._mx_end_txn(None)
        if not self._mx_gone:
            self._mx_gone = True
            self._mx._closed(self)
        super().connection_lost(error)

    def mx_abort(self):
        t = self._original_transport or self.transport
        if t is not None:
            t.abort()

    def _client_connected_cb(self, reader, writer):
        super()._client_connected_cb(reader, writer)
        readuntil = reader.readuntil

        async def logged_readuntil(separator=b"\n"):
            line = await readuntil(separator)
            self._mx_line(line, reader)
            return line

        reader.readuntil = logged_readuntil

    def _mx_line(self, line, reader):
        """Every line aiosmtpd reads passes here: log commands, spot pipelining."""
        if self._mx_in_data:
            if line == b".\r\n":
                self._mx_delay_next = True
            return
        self._mx_delay_next = True
        text = line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
        pipelined = self._mx_more_buffered
        buffered = len(getattr(reader, "_buffer", b"")) > 0
        self._mx_more_buffered = buffered
        verb = text.split(" ", 1)[0].upper()
        if verb == "BDAT":
            self._mx_more_buffered = False  # the chunk follows; decided after reading it
        if buffered and verb == "DATA":
            self._mx.errors_add(f"conn {self._mx_conn}: data sent before the 354 to DATA")
        if buffered and verb == "STARTTLS":
            self._mx.errors_add(f"conn {self._mx_conn}: data pipelined after STARTTLS")
        self._mx.log_add(text, pipelined)

    # --- replies ------------------------------------------------------------------------

    async def push(self, status):
        if self._mx_delay_next:
            self._mx_delay_next = False
            if self._mx.delay:
                await asyncio.sleep(self._mx.delay)
        if isinstance(status, str):
            if not self._mx_greeted:
                self._mx_greeted = True
            elif not self._mx_raw_reply and self._mx_advertises("ENHANCEDSTATUSCODES"):
                m = _REPLY_RE.match(status)
                if m and not _ENHANCED_RE.match(m.group(4)):
                    status = f"{m.group(1)}{m.group(2)}{m.group(3)}{m.group(1)}.0.0 {m.group(4)}"
            self._mx_last_reply = status
        await super().push(status)

    def _mx_advertises(self, keyword):
        return keyword in self._mx._keywords(self._tls_protocol is not None)

    # --- transactions -------------------------------------------------------------------

    def _set_rset_state(self):
        self._mx_end_txn(None)
        super()._set_rset_state()

    def _set_post_data_state(self):
        self._mx_end_txn(None)
        super()._set_post_data_state()

    def _mx_end_txn(self, final_reply):
        txn = self._mx_txn
        if txn is None:
            return
        self._mx_txn = None
        if final_reply is not None:
            outcome, reply = _outcome(final_reply), final_reply
        elif self._mx_in_data and self._mx_last_reply and \
                not self._mx_last_reply.startswith("354"):
            # aiosmtpd refused the data itself (line too long, too much data)
            outcome, reply = _outcome(self._mx_last_reply), self._mx_last_reply
        elif txn.replies and not any(r.startswith("2") for r in txn.replies):
            reply = txn.replies[-1]
            outcome = "tempfail" if any(r.startswith("4") for r in txn.replies) \
                else "rejected"
        else:
            outcome, reply = "aborted", None
        self._mx.transaction_add(Transaction(
            txn.mail_from, txn.rcpts, outcome, reply=reply, replies=list(txn.replies),
            accepted_rcpts=[a[0] for a in txn.accepted], connection=self._mx_conn,
            peer_ip=self._mx_ip, time=time.time()))

    # --- commands -----------------------------------------------------------------------

    async def smtp_EHLO(self, hostname):
        if not hostname:
            await self.push("501 5.5.4 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        self._mx_helo = ("EHLO", hostname)
        lines = [self.hostname] + self._mx._capabilities(self._tls_protocol is not None)
        self._mx_raw_reply = True
        try:
            for i, text in enumerate(lines):
                await self.push(("250 " if i == len(lines) - 1 else "250-") + text)
        finally:
            self._mx_raw_reply = False

    async def smtp_HELO(self, hostname):
        self._mx_raw_reply = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._mx_raw_reply = False
        if hostname:
            self._mx_helo = ("HELO", hostname)

    def _mx_params(self, words, allowed):
        """Parse ESMTP parameter words: (dict, None) or (None, error reply)."""
        params = {}
        for w in words:
            key, eq, value = w.partition("=")
            key = key.upper()
            if not key or not key.replace("-", "").isalnum() or (eq and not value):
                return None, "501 5.5.4 Malformed parameter: " + w
            if key in params:
                return None, "501 5.5.4 Duplicate parameter: " + key
            if key not in allowed or not self._mx_advertises(allowed[key]):
                return None, "555 5.5.4 Unsupported parameter: " + key
            params[key] = value if eq else True
        return params, None

    async def smtp_MAIL(self, arg):
        if await self.check_helo_needed():
            return
        syntaxerr = "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"
        arg = self._strip_command_keyword("FROM:", arg) if arg else None
        if arg is None:
            return await self.push(syntaxerr)
        address, rest = self._getaddr(arg)
        if address is None:
            return await self.push("553 5.1.3 Malformed address")
        if not address:
            return await self.push(syntaxerr)
        if address == "<>":
            address = ""
        if self._mx_txn is not None:
            return await self.push("503 5.5.1 Nested MAIL command")
        words = rest.split()
        if words and not self.session.extended_smtp:
            return await self.push(syntaxerr)
        params, err = self._mx_params(words, {
            "SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8",
            "RET": "DSN", "ENVID": "DSN", "AUTH": "AUTH"})
        if err:
            return await self.push(err)
        if "BODY" in params and str(params["BODY"]).upper() not in ("7BIT", "8BITMIME"):
            return await self.push("501 5.5.4 BODY must be 7BIT or 8BITMIME")
        if "SMTPUTF8" in params and params["SMTPUTF8"] is not True:
            return await self.push("501 5.5.4 SMTPUTF8 takes no value")
        if "RET" in params and str(params["RET"]).upper() not in ("FULL", "HDRS"):
            return await self.push("501 5.5.4 RET must be FULL or HDRS")
        if "ENVID" in params and (params["ENVID"] is True or len(params["ENVID"]) > 100
                                  or not _xtext_ok(params["ENVID"])):
            return await self.push("501 5.5.4 Malformed ENVID")
        if "SIZE" in params:
            size = params["SIZE"]
            if size is True or not size.isdigit():
                return await self.push("501 5.5.4 Malformed SIZE")
            if int(size) > self.data_size_limit:
                return await self.push("552 5.3.4 Message size exceeds fixed limit")
        self._mx_txn = _Txn(address, words, params)
        self.envelope.mail_from = address or "<>"
        self.envelope.mail_options.extend(words)
        self.envelope.smtp_utf8 = "SMTPUTF8" in params
        await self.push("250 2.1.0 Ok")

    async def smtp_RCPT(self, arg):
        if await self.check_helo_needed():
            return
        txn = self._mx_txn
        if txn is None:
            return await self.push("503 5.5.1 Need MAIL command")
        syntaxerr = "501 5.5.4 Syntax: RCPT TO:<address> [parameters]"
        arg = self._strip_command_keyword("TO:", arg) if arg else None
        if arg is None:
            return await self.push(syntaxerr)
        address, rest = self._getaddr(arg)
        if address is None or address == "<>":
            return await self.push("553 5.1.3 Malformed address")
        if not address:
            return await self.push(syntaxerr)
        words = rest.split()
        if words and not self.session.extended_smtp:
            return await self.push(syntaxerr)
        params, err = self._mx_params(words, {"NOTIFY": "DSN", "ORCPT": "DSN"})
        if err:
            return await self.push(err)
        if "NOTIFY" in params:
            v = params["NOTIFY"]
            items = [] if v is True else v.upper().split(",")
            if not items or len(set(items)) != len(items) or \
                    not set(items) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"} or \
                    ("NEVER" in items and len(items) > 1):
                return await self.push("501 5.5.4 Malformed NOTIFY")
        if "ORCPT" in params:
            v = params["ORCPT"]
            atype, semi, orcpt = ("", "", "") if v is True else v.partition(";")
            if not semi or not orcpt or \
                    (atype.lower() == "rfc822" and not _xtext_ok(orcpt)):
                return await self.push("501 5.5.4 Malformed ORCPT")
        if txn.index is None:
            txn.index = self._mx.next_txn_index()
        reply = self._mx.rcpt_reply(txn.index)
        txn.rcpts.append(address)
        txn.replies.append(reply)
        if reply.startswith("2"):
            txn.accepted.append((address, words, params))
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(words)
        await self.push(reply)

    async def smtp_DATA(self, arg):
        if self._mx_txn is not None and self._mx_txn.chunks:
            return await self.push("503 5.5.1 DATA after BDAT")
        if self._mx_txn is not None and not self.envelope.rcpt_tos and not arg:
            return await self.push("554 5.5.1 No valid recipients")
        self._mx_in_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self._mx_in_data = False

    async def smtp_BDAT(self, arg):
        """RFC 3030 BDAT <size> [LAST], only when CHUNKING is advertised."""
        if not self._mx_advertises("CHUNKING"):
            return await self.push('500 Error: command "BDAT" not recognized')
        words = (arg or "").split()
        if not 1 <= len(words) <= 2 or not words[0].isdigit() or \
                (len(words) == 2 and words[1].upper() != "LAST"):
            # the chunk size is unknown: the stream cannot be resynchronised
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            self.transport.close()
            return
        size, last = int(words[0]), len(words) == 2
        self._mx_in_data = True
        try:
            chunk = await self._reader.readexactly(size) if size else b""
        finally:
            self._mx_in_data = False
        self._mx_more_buffered = len(getattr(self._reader, "_buffer", b"")) > 0
        txn = self._mx_txn
        if txn is None or not self.session.host_name:
            return await self.push("503 5.5.1 Need MAIL command")
        if not self.envelope.rcpt_tos:
            return await self.push("554 5.5.1 No valid recipients")
        txn.chunk_bytes += size
        if txn.chunk_bytes > self.data_size_limit:
            txn.bdat_failed = "552 5.3.4 Message size exceeds fixed limit"
            txn.chunks = [b""]
        elif txn.bdat_failed is None:
            txn.chunks.append(chunk)
        if not last:
            return await self.push(f"250 2.0.0 {size} octets received")
        if txn.bdat_failed:
            reply = txn.bdat_failed
            self._mx_end_txn(reply)
        else:
            reply = self._mx_data_end(b"".join(txn.chunks), chunked=True)
        self._set_post_data_state()
        await self.push(reply)

    async def smtp_STARTTLS(self, arg):
        self._mx.count_starttls()
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException:
            self._mx.count_tls_failure()
            raise

    def _mx_data_end(self, content, chunked):
        """The end of a message (DATA or BDAT LAST): decide, record, return the reply."""
        txn = self._mx_txn
        rcpt_params = {}
        rcpt_options = []
        for rcpt, words, params in txn.accepted:
            rcpt_params.setdefault(rcpt, params)
            rcpt_options.extend(words)
        tls = self._mx_tls
        msg = Message(
            mail_from=txn.mail_from, rcpt_tos=[a[0] for a in txn.accepted],
            content=bytes(content), tls=tls is not None,
            tls_version=tls[0] if tls else None, tls_cipher=tls[1] if tls else None,
            tls_sni=tls[2] if tls else None, mail_options=list(txn.options),
            rcpt_options=rcpt_options, mail_params=dict(txn.params),
            rcpt_params=rcpt_params, smtputf8="SMTPUTF8" in txn.params,
            body=txn.params.get("BODY"), eight_bit=any(b > 127 for b in content),
            chunked=chunked, helo=self._mx_helo[1] if self._mx_helo else None,
            esmtp=bool(self._mx_helo and self._mx_helo[0] == "EHLO"),
            peer_ip=self._mx_ip, connection=self._mx_conn, time=time.time(), reply=None)
        reply = self._mx.data_reply(msg)
        msg.reply = reply
        if reply.startswith("2"):
            self._mx.message_add(msg)
        self._mx_end_txn(reply)
        return reply


class _RawSession(asyncio.Protocol):
    """A connection to a "hang" or "close" peer: no SMTP at all."""

    def __init__(self, peer, behaviour):
        self._mx = peer
        self._behaviour = behaviour
        self._gone = False
        self._buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self._mx._opened(self)
        if self._behaviour == "close":
            transport.close()

    def data_received(self, data):
        self._buf = (self._buf + data)[-65536:]
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._mx.log_add(line.rstrip(b"\r").decode("utf-8", "backslashreplace"), False)

    def connection_lost(self, exc):
        if not self._gone:
            self._gone = True
            self._mx._closed(self)

    def mx_abort(self):
        if self.transport is not None:
            self.transport.abort()


# ---------------------------------------------------------------------------------------
# the peer


class RemoteMX:
    """A remote MX on host:port; see the module comment. start()/stop() or `with`."""

    def __init__(self, host="127.0.0.2", port=None, behaviour="accept", starttls=None,
                 hostname="mx1.example.test", ehlo_extra=(), ehlo_drop=(),
                 size_limit=None, delay=0.0, tempfail_count=1, chunking=False):
        if not callable(behaviour) and behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")
        if port is None:
            raise ValueError("port is required (see free_mx_port)")
        self.host = host
        self.port = int(port)
        self.behaviour = behaviour
        self.starttls_files = starttls
        self.hostname = hostname
        self.ehlo_extra = tuple(ehlo_extra)
        self.ehlo_drop = tuple(ehlo_drop)
        self.size_limit = size_limit
        self.delay = float(delay)
        self.tempfail_count = int(tempfail_count)
        self.chunking = chunking
        self._tls_context = None
        self._cond = threading.Condition()
        self._loop = None
        self._thread = None
        self._server = None
        self._sessions = set()
        self._reset_records()

    def _reset_records(self):
        self._messages = []
        self._transactions = []
        self._log = []
        self._pipelined = []
        self._errors = []
        self._dropped_entries = 0
        self._connections = 0
        self._current = 0
        self._max_concurrent = 0
        self._txn_counter = 0
        self._starttls = 0
        self._tls_failures = 0

    def __repr__(self):
        b = self.behaviour if isinstance(self.behaviour, str) else "callable"
        return f"<RemoteMX {self.hostname} {self.host}:{self.port} {b}>"

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    # --- EHLO ---------------------------------------------------------------------------

    def _dropped(self):
        return {d.upper() for d in self.ehlo_drop}

    def _capabilities(self, tls_active):
        caps = [f"SIZE {self.size_limit or DEFAULT_SIZE}", "8BITMIME", "SMTPUTF8",
                "PIPELINING", "DSN", "ENHANCEDSTATUSCODES"]
        if self.chunking:
            caps.append("CHUNKING")
        if self._tls_context is not None and not tls_active:
            caps.append("STARTTLS")
        caps += list(self.ehlo_extra)
        drop = self._dropped()
        return [c for c in caps if c.split()[0].upper() not in drop]

    def _keywords(self, tls_active):
        return {c.split()[0].upper() for c in self._capabilities(tls_active)}

    # --- decisions (loop thread) --------------------------------------------------------

    def next_txn_index(self):
        with self._cond:
            i = self._txn_counter
            self._txn_counter += 1
            return i

    def rcpt_reply(self, txn_index):
        b = self.behaviour
        if b == "tempfail" or (b == "tempfail_then_accept" and txn_index < self.tempfail_count):
            return REPLY_TEMPFAIL
        if b == "reject":
            return REPLY_REJECT
        return "250 2.1.5 Ok"

    def data_reply(self, msg):
        b = self.behaviour
        if callable(b):
            try:
                reply = str(b(self, msg))
            except Exception:
                self.errors_add("behaviour callable raised:\n" + traceback.format_exc())
                return "451 4.3.0 The fixture's behaviour callable raised"
            if not re.match(r"^[2-5]\d\d( |$)", reply):
                self.errors_add(f"behaviour callable returned a bad reply {reply!r}")
                return "451 4.3.0 The fixture's behaviour callable returned a bad reply"
            return reply
        if b == "reject_data":
            return REPLY_REJECT_DATA
        with self._cond:
            n = len(self._messages) + 1
        return f"250 2.0.0 Ok: queued as {self.host.replace('.', '')}{n:06d}"

    # --- records (loop thread writes, test thread reads) --------------------------------

    def _opened(self, session):
        with self._cond:
            self._sessions.add(session)
            self._connections += 1
            self._current += 1
            self._max_concurrent = max(self._max_concurrent, self._current)
            self._cond.notify_all()
            return self._connections

    def _closed(self, session):
        with self._cond:
            self._sessions.discard(session)
            self._current -= 1
            self._cond.notify_all()

    def _append(self, lst, item):
        if len(lst) >= LOG_MAX:
            self._dropped_entries += 1
        else:
            lst.append(item)

    def log_add(self, line, pipelined):
        with self._cond:
            self._append(self._log, line)
            if pipelined:
                self._append(self._pipelined, line)
            self._cond.notify_all()

    def errors_add(self, text):
        with self._cond:
            self._append(self._errors, text)

    def message_add(self, msg):
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    def transaction_add(self, txn):
        with self._cond:
            self._append(self._transactions, txn)
            self._cond.notify_all()

    def count_starttls(self):
        with self._cond:
            self._starttls += 1

    def count_tls_failure(self):
        with self._cond:
            self._tls_failures += 1
            self._cond.notify_all()

    def _get(self, name):
        with self._cond:
            v = getattr(self, name)
            return list(v) if isinstance(v, list) else v

    messages = property(lambda self: self._get("_messages"))
    transactions = property(lambda self: self._get("_transactions"))
    log = property(lambda self: self._get("_log"))
    pipelined = property(lambda self: self._get("_pipelined"))
    errors = property(lambda self: self._get("_errors"))
    connections = property(lambda self: self._get("_connections"))
    current = property(lambda self: self._get("_current"))
    max_concurrent = property(lambda self: self._get("_max_concurrent"))
    starttls = property(lambda self: self._get("_starttls"))
    tls_failures = property(lambda self: self._get("_tls_failures"))

    def describe(self):
        """A few lines for assertion messages and teardown output."""
        with self._cond:
            outcomes = collections.Counter(t.outcome for t in self._transactions)
            return (f"{self!r}: {len(self._messages)} messages, connections="
                    f"{self._connections} (open {self._current}, max concurrent "
                    f"{self._max_concurrent}), transactions={dict(outcomes)}, STARTTLS="
                    f"{self._starttls} (failed {self._tls_failures}), errors="
                    f"{self._errors[-3:]}\n  last commands: {self._log[-15:]}")

    def wait_for(self, predicate, timeout=20, what="condition"):
        """Wait until predicate(self) is true (checked whenever something is recorded);
        AssertionError with describe() on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                # predicate reads properties, which take the (reentrant) lock again
                if predicate(self):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        raise AssertionError(f"timed out after {timeout}s waiting for {what}: "
                             f"{self.describe()}")

    def wait_messages(self, n, timeout=20):
        """The messages once at least n have been accepted (AssertionError on timeout)."""
        self.wait_for(lambda p: len(p._messages) >= n, timeout, f"{n} message(s)")
        return self.messages

    def wait_transactions(self, n, timeout=20):
        """The transactions once at least n have ended (AssertionError on timeout)."""
        self.wait_for(lambda p: len(p._transactions) >= n, timeout, f"{n} transaction(s)")
        return self.transactions

    def wait_connections(self, n, timeout=20):
        """Wait until at least n connections have been accepted."""
        self.wait_for(lambda p: p._connections >= n, timeout, f"{n} connection(s)")

    def wait_idle(self, timeout=20):
        """Wait until no connection is open."""
        self.wait_for(lambda p: p._current == 0, timeout, "all connections closed")

    # --- life cycle ---------------------------------------------------------------------

    def _factory(self):
        b = self.behaviour
        if b in ("hang", "close"):
            return _RawSession(self, b)
        return _Session(self, self._loop)

    def start(self):
        """Listen on host:port; returns once connections are accepted. Raises OSError if
        the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} already started")
        if self.starttls_files:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.starttls_files)

            def sni(sslobj, name, _ctx):
                try:
                    sslobj._mx_sni = name
                except AttributeError:
                    pass
            ctx.sni_callback = sni
            self._tls_context = ctx
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure = []

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(self._loop.create_server(
                    self._factory, self.host, self.port, reuse_address=True))
            except BaseException as e:  # noqa: B902 - handed to start()
                failure.append(e)
                ready.set()
                self._loop.close()
                return
            ready.set()
            try:
                self._loop.run_forever()
            finally:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.close()

        self._thread = threading.Thread(target=run, name=f"remote-mx-{self.address}",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError(f"{self!r} did not start within {START_TIMEOUT}s")
        if failure:
            self._thread.join(STOP_TIMEOUT)
            self._thread = None
            raise failure[0]
        return self

    async def _shutdown(self):
        self._server.close()
        with self._cond:
            sessions = list(self._sessions)
        for s in sessions:
            s.mx_abort()
        await asyncio.sleep(0)
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT / 2)

    def stop(self):
        """Stop listening, close every connection, end the thread (bounded in time).
        The records stay readable. Safe to call twice."""
        if self._thread is None:
            return
        loop, thread = self._loop, self._thread
        self._thread = None
        if thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                raise RuntimeError(f"{self!r}: loop thread did not stop")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# ---------------------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture
def remote_mx():
    """Factory: remote_mx(**RemoteMX kwargs) -> a started RemoteMX, stopped at teardown."""
    peers = []

    def make(**kw):
        peer = RemoteMX(**kw)
        peer.start()
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()
        # Captured: pytest shows it with a failing test only.
        sys.stderr.write(f"--- remote MX ---\n{peer.describe()}\n")


@pytest.fixture
def mx_ca(tmp_path):
    """(ca_cert_path, issue) from make_test_ca in a temp dir."""
    return make_test_ca(tmp_path / "mx-ca")
