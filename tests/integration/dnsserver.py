"""A real DNS server for the tests: unbound serving static test zones on loopback.

DNSServer(records) writes an unbound.conf into a temp dir and runs `/usr/sbin/unbound -d`
(foreground) on 127.0.0.1:<port free for both UDP and TCP>. Every record is a zone-file line
("example.test. MX 10 mx1.example.test.", "mx1.example.test. A 127.0.0.2",
"nullmx.test. MX 0 .", "alias.test. CNAME mx1.example.test.") served as `local-data`
under `local-zone: "." static`: names with data answer it (NODATA for other types), every
other name is NXDOMAIN, and nothing ever leaves the machine (no root hints are used).
CNAME local-data is followed by unbound itself, so a query for an alias gets the chain.

    with DNSServer(["example.test. MX 10 mx.example.test.",
                    "mx.example.test. A 127.0.0.1"]) as dns:
        ... dns.address ...   # "127.0.0.1:PORT", for a resolver's forwarder

zones adds local-zone lines, e.g. [("refused.test.", "always_refuse")] for a zone whose
every query is answered REFUSED (a resolver's "server failure").

The `dns_server` pytest fixture is a factory: dns_server(records, zones=()) returns a
started DNSServer that is stopped at teardown (its log is attached to a failing test's
output).
"""

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import free_port  # noqa: E402

UNBOUND = "/usr/sbin/unbound"
START_TIMEOUT = 10.0


def _udp_port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_udp_tcp_port():
    """A loopback port free for TCP (helpers.free_port) and for UDP."""
    for _ in range(100):
        port = free_port()
        if _udp_port_free(port):
            return port
    raise RuntimeError("no port free for both UDP and TCP")


def _quote(text):
    """A local-data argument: in double quotes, or in single quotes when the record has
    double quotes of its own (TXT data)."""
    if "\n" in text:
        raise ValueError(f"record must not contain a newline: {text!r}")
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    raise ValueError(f"record must not contain both kinds of quotes: {text!r}")


def build_query(name, qtype=1, qid=0x5053):
    """A DNS query message (RD set) for name/qtype, class IN."""
    labels = [l for l in name.rstrip(".").split(".") if l]
    qname = b"".join(bytes([len(l)]) + l.encode("ascii") for l in labels) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


class DNSServer:
    """unbound on loopback serving `records`; see the module comment."""

    def __init__(self, records, port=None, zones=()):
        self.records = list(records)
        self.zones = list(zones)        # extra ("name.", "unbound local-zone type")
        self.port = port
        self.dir = None
        self.proc = None
        self.log_path = None
        self._log = None

    @property
    def address(self):
        """"127.0.0.1:PORT", the form dns_resolver_new() takes as its forwarder."""
        return f"127.0.0.1:{self.port}"

    def _write_config(self):
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            "  do-daemonize: no",
            "  num-threads: 1",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.dir}"',
            f'  pidfile: "{os.path.join(self.dir, "unbound.pid")}"',
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            "  access-control: 127.0.0.0/8 allow",
            '  module-config: "iterator"',
            "  so-reuseport: no",
            # Answers in a fixed order, so tests see the resolver's own shuffling.
            "  rrset-roundrobin: no",
            "  outgoing-range: 64",
            "  num-queries-per-thread: 64",
            # Everything is answered from local data; nothing is forwarded or recursed.
            '  local-zone: "." static',
        ]
        for name, kind in self.zones:
            lines.append(f"  local-zone: {_quote(name)} {kind}")
        for rec in self.records:
            lines.append(f"  local-data: {_quote(rec)}")
        path = os.path.join(self.dir, "unbound.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def _answers(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.05)
        try:
            q = build_query("ready.invalid.")
            s.sendto(q, ("127.0.0.1", self.port))
            data, _ = s.recvfrom(4096)
            return len(data) >= 12 and data[:2] == q[:2]
        except OSError:
            return False
        finally:
            s.close()

    def start(self):
        if not os.access(UNBOUND, os.X_OK):
            pytest.skip(f"{UNBOUND} not installed (apt-get install unbound)")
        self.dir = tempfile.mkdtemp(prefix="postern-dns-")
        if self.port is None:
            self.port = free_udp_tcp_port()
        conf = self._write_config()
        check = subprocess.run(["unbound-checkconf", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"bad unbound.conf: {check.stdout}{check.stderr}")
        self.log_path = os.path.join(self.dir, "unbound.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"unbound exited with {self.proc.returncode}:\n{self.log()}")
            if self._answers():
                return self
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"unbound did not answer within {START_TIMEOUT} s")

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def dns_server():
    """Factory: dns_server(records, zones=()) -> a started DNSServer, stopped at teardown."""
    servers = []

    def make(records, zones=()):
        server = DNSServer(records, zones=zones)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        log = server.log()
        server.stop()
        if log:
            # Captured: pytest shows it with a failing test only.
            sys.stderr.write(f"--- unbound log ---\n{log}")
