"""Integration fixtures: run the real `postern` daemon and talk to it over loopback.

Every test that uses the `postern` fixture (or `make_postern`) gets its own instance:
`postern init` into a temp dir with free loopback ports and a throwaway CA-signed
certificate, one or more users, then `postern serve` in its own process group with
stderr in a log file. At teardown the daemon is stopped with SIGTERM and the test
FAILS if the daemon did not stop cleanly, died from a signal, left processes behind,
or its log shows a sanitizer report or a crash.

POSTERN_BIN overrides the binary (default: <repo>/build/postern).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import (  # noqa: E402
    DOMAIN,
    HOSTNAME,
    PASSWORDS,
    RawSMTP,
    free_port,
    make_tls_material,
    maildir_path,
    read_maildir,
    tls_client_context,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMTP_LISTENERS = ("smtp", "submission", "submissions")
MAIL_LISTENERS = ("imap", "imaps", "pop3", "pop3s")
ON_LISTENERS = SMTP_LISTENERS + MAIL_LISTENERS
OFF_LISTENERS = ("http",)

CRASH_PATTERNS = [
    re.compile(r"AddressSanitizer"),
    re.compile(r"LeakSanitizer"),
    re.compile(r"UndefinedBehaviorSanitizer"),
    re.compile(r"ThreadSanitizer"),
    re.compile(r"runtime error:"),
    re.compile(r"panic", re.IGNORECASE),
    re.compile(r"Segmentation fault"),
    re.compile(r"\b(SIGSEGV|SIGBUS|SIGABRT|SIGFPE|SIGILL)\b"),
    re.compile(r"\bsignal (4|6|7|8|11)\b"),
    re.compile(r"double free|heap-use-after-free|stack-buffer-overflow"),
]


def postern_bin():
    path = os.environ.get("POSTERN_BIN") or os.path.join(REPO, "build", "postern")
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(
            f"postern binary not found or not executable: {path}\n"
            "build it with `meson setup build && ninja -C build`, or set POSTERN_BIN",
            pytrace=False,
        )
    return path


def _proc_pgid_members(pgid):
    """Live (non-zombie) pids whose process group is pgid."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces/parens.
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) < 3:
            continue
        state, pgrp = rest[0], int(rest[2])
        if pgrp == pgid and state not in ("Z", "X"):
            pids.append(int(name))
    return pids


def _procs_mentioning(text):
    """Live pids whose command line contains text (our per-instance config path)."""
    pids = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2:].split()[0]
        if text.encode() in cmd and state not in ("Z", "X"):
            pids.append(int(name))
    return pids


class Postern:
    """One daemon instance in its own directory."""

    def __init__(self, binary, base, tls, hostname=HOSTNAME, domain=DOMAIN):
        self.bin = binary
        self.base = str(base)
        self.dir = os.path.join(self.base, "data")
        self.conf = os.path.join(self.dir, "postern.conf")
        self.hostname = hostname
        self.domain = domain
        self.tls = tls  # dict: ca, cert, key
        self.ports = {name: free_port() for name in ON_LISTENERS}
        self.proc = None
        self.runs = 0
        self.logs = []
        self.problems = []
        self.expected_death = False

    # ---- command line -------------------------------------------------------------
    def env(self):
        env = dict(os.environ)
        env.pop("POSTERN_CONFIG", None)
        return env

    def run(self, args, input=None, timeout=60):
        """Runs the binary with raw args; returns CompletedProcess (text)."""
        res = subprocess.run(
            [self.bin] + list(args), input=input, capture_output=True, text=True,
            timeout=timeout, env=self.env(),
        )
        for pat in CRASH_PATTERNS:
            if pat.search(res.stderr):
                self.problems.append(f"`postern {' '.join(args)}` stderr shows "
                                     f"{pat.pattern!r}:\n{res.stderr[-3000:]}")
                break
        if res.returncode < 0:
            self.problems.append(f"`postern {' '.join(args)}` died from signal "
                                 f"{-res.returncode}")
        return res

    def cli(self, *args, input=None, check=True, timeout=60):
        """`postern -c CONF args...`; with check=True a non-zero exit fails the test."""
        res = self.run(["-c", self.conf] + list(args), input=input, timeout=timeout)
        if check and res.returncode != 0:
            pytest.fail(
                f"`postern -c CONF {' '.join(args)}` exited {res.returncode}\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}", pytrace=False)
        return res

    def init(self, extra=()):
        args = ["init", self.dir, "--hostname", self.hostname, "--domain", self.domain]
        for name in ON_LISTENERS:
            args += [f"--listen-{name}", f"127.0.0.1:{self.ports[name]}"]
        for name in OFF_LISTENERS:
            args += [f"--listen-{name}", "off"]
        if self.tls is not None:
            args += ["--cert", self.tls["cert"], "--key", self.tls["key"]]
        args += list(extra)
        res = self.run(args)
        if res.returncode != 0:
            pytest.fail(f"postern init failed ({res.returncode}):\n{res.stdout}\n{res.stderr}",
                        pytrace=False)
        return res

    def add_user(self, address, password=None):
        password = password or PASSWORDS.get(address, "Quartz-Lantern-5529")
        self.cli("user", "add", address, "--password-stdin", input=password + "\n")
        return password

    def set_config(self, key, value):
        """Replaces an existing `key = ...` line (keeping its position) or appends one."""
        with open(self.conf, encoding="utf-8") as f:
            lines = f.read().splitlines()
        pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i, line in enumerate(lines):
            if pat.match(line):
                lines[i] = f"{key} = {value}"
                break
        else:
            lines.append(f"{key} = {value}")
        with open(self.conf, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    def config_lines(self):
        with open(self.conf, encoding="utf-8") as f:
            return f.read().splitlines()

    # ---- daemon -----------------------------------------------------------------
    @property
    def log_path(self):
        return self.logs[-1] if self.logs else None

    def start(self, timeout=20):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.runs += 1
        log = os.path.join(self.base, f"serve.{self.runs}.log")
        self.logs.append(log)
        with open(log, "wb") as logf:
            self.proc = subprocess.Popen(
                [self.bin, "-c", self.conf, "serve"], stdin=subprocess.DEVNULL,
                stdout=logf, stderr=subprocess.STDOUT, env=self.env(),
                start_new_session=True,
            )
        self.expected_death = False
        self.wait_ready(timeout)

    def _mail_greeting(self, name):
        """None when the IMAP/POP3 listener greets ("* OK" / "+OK"), else why not."""
        want = b"* OK" if name.startswith("imap") else b"+OK"
        try:
            with socket.create_connection(("127.0.0.1", self.port(name)), timeout=2) as raw:
                sock = raw
                if name in ("imaps", "pop3s"):
                    sock = tls_client_context(self.tls).wrap_socket(
                        raw, server_hostname=self.hostname)
                line = sock.makefile("rb").readline(1024)
                if line.startswith(want):
                    return None
                return f"{name} greeted {line!r}"
        except (OSError, EOFError) as e:
            return f"{name}: {e!r}"

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        pending = list(ON_LISTENERS)
        last_err = None
        while pending:
            if self.proc.poll() is not None:
                pytest.fail(f"postern serve exited with {self.proc.returncode} before it was "
                            f"ready\n--- log ---\n{self.log_tail()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"postern serve not ready after {timeout}s (waiting for "
                            f"{pending}: {last_err})\n--- log ---\n{self.log_tail()}",
                            pytrace=False)
            name = pending[0]
            if name in MAIL_LISTENERS:
                err = self._mail_greeting(name)
                if err is None:
                    pending.pop(0)
                    continue
                last_err = err
                time.sleep(0.05)
                continue
            try:
                ctx = tls_client_context(self.tls) if name == "submissions" else None
                c = RawSMTP(self.port(name), timeout=2, tls=ctx)
                try:
                    r = c.reply()
                finally:
                    c.close()
                if r.code == 220:
                    pending.pop(0)
                    continue
                last_err = f"{name} greeted {r}"
            except (OSError, EOFError) as e:
                last_err = f"{name}: {e!r}"
            time.sleep(0.05)

    def port(self, name="smtp"):
        return self.ports[name]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def stop(self, timeout=20):
        """Graceful stop (SIGTERM); records problems instead of raising."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is not None:
            if not self.expected_death:
                self.problems.append(
                    f"daemon (run {self.runs}) was not running at teardown: exit status "
                    f"{proc.returncode}" + (f" (signal {-proc.returncode})"
                                            if proc.returncode < 0 else ""))
            self._reap_group(proc.pid)
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"daemon did not exit within {timeout}s of SIGTERM")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        else:
            if proc.returncode < 0:
                self.problems.append(f"daemon died from signal {-proc.returncode} after SIGTERM "
                                     "(expected a graceful exit 0)")
            elif proc.returncode != 0:
                self.problems.append(f"daemon exited {proc.returncode} after SIGTERM "
                                     "(expected 0)")
        self._reap_group(proc.pid, graceful=True)

    def _reap_group(self, pgid, graceful=False):
        deadline = time.monotonic() + 5
        while _proc_pgid_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _proc_pgid_members(pgid)
        if left:
            if graceful:
                self.problems.append(f"processes {left} of the daemon's group outlived the "
                                     "master's graceful exit")
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        stray = _procs_mentioning(self.conf)
        if stray:
            self.problems.append(f"daemon processes {stray} escaped the process group")
            for pid in stray:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def kill9(self):
        """kill -9 of the master and all its children (the whole process group)."""
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        deadline = time.monotonic() + 5
        while (_proc_pgid_members(proc.pid) or _procs_mentioning(self.conf)) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        stray = _proc_pgid_members(proc.pid) + _procs_mentioning(self.conf)
        if stray:
            self.problems.append(f"processes {stray} survived kill -9 of the process group")
            for pid in set(stray):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def restart(self):
        if self.running():
            self.stop()
        self.start()

    def log_text(self, all_runs=True):
        out = []
        for path in (self.logs if all_runs else self.logs[-1:]):
            try:
                with open(path, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def log_tail(self, n=60):
        return "\n".join(self.log_text(all_runs=False).splitlines()[-n:])

    def scan_logs(self):
        for path in self.logs:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            for i, line in enumerate(text.splitlines(), 1):
                for pat in CRASH_PATTERNS:
                    if pat.search(line):
                        lo = max(0, i - 3)
                        ctx = "\n".join(text.splitlines()[lo:i + 15])
                        self.problems.append(f"{os.path.basename(path)}:{i}: crash/sanitizer "
                                             f"marker {pat.pattern!r}:\n{ctx}")
                        break

    # ---- mail ---------------------------------------------------------------------
    def maildir(self, address):
        return maildir_path(self.dir, address)

    def messages(self, address):
        return read_maildir(self.dir, address)

    def wait_messages(self, address, count, timeout=10):
        """Polls the Maildir until it holds at least count messages; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(address)
            if len(msgs) >= count:
                return msgs
            if time.monotonic() > deadline:
                pytest.fail(f"{address}: {len(msgs)} message(s) delivered after {timeout}s, "
                            f"expected {count}\n--- log ---\n{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def wait_exact(self, address, tokens, timeout=10, settle=1.0):
        """Waits until every token appears in exactly one delivered message, then checks
        (after `settle` seconds) that no duplicates arrived. Returns the messages."""
        tokens = [t.encode() if isinstance(t, str) else t for t in tokens]
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages(address)
            counts = {t: sum(1 for m in msgs if t in m) for t in tokens}
            if all(c >= 1 for c in counts.values()):
                break
            if time.monotonic() > deadline:
                missing = [t for t, c in counts.items() if c == 0]
                pytest.fail(f"{address}: {len(missing)} of {len(tokens)} messages not delivered "
                            f"after {timeout}s, e.g. {missing[:3]}\n--- log ---\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.05)
        time.sleep(settle)
        msgs = self.messages(address)
        counts = {t: sum(1 for m in msgs if t in m) for t in tokens}
        dup = {t: c for t, c in counts.items() if c != 1}
        assert not dup, f"{address}: messages delivered more than once: {dup}"
        return msgs

    def raw(self, listener="smtp", tls=None, timeout=10):
        """A RawSMTP client on a listener; submissions is wrapped in TLS automatically."""
        if tls is None and listener == "submissions":
            tls = tls_client_context(self.tls)
        return RawSMTP(self.port(listener), timeout=timeout, tls=tls)

    def client_context(self):
        return tls_client_context(self.tls)

    def queue_ids(self):
        res = self.cli("queue", "list")
        return re.findall(r"\b[0-9A-Fa-f]{16}\b", res.stdout)


# ---- fixtures -------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tls_material(tmp_path_factory):
    return make_tls_material(str(tmp_path_factory.mktemp("ca")))


@pytest.fixture
def make_postern(tmp_path, tls_material):
    """Factory: make_postern(config={...}, users=[...], start=True, init_args=(),
    hold_remote=True).

    Returns a Postern instance; all instances are stopped and checked at teardown."""
    binary = postern_bin()
    made = []

    def make(config=None, users=("alice@example.test", "bob@example.test"), start=True,
             init_args=(), tls=True, hold_remote=True):
        base = tmp_path / f"p{len(made)}"
        base.mkdir()
        inst = Postern(binary, base, tls_material if tls else None)
        made.append(inst)
        if hold_remote:
            # No DNS here: mail to remote domains goes to a smarthost on a closed
            # loopback port, so it stays queued (deferred) for the test to look at.
            init_args = list(init_args) + ["--smarthost", "127.0.0.1:1"]
        inst.init(init_args)
        for key, value in (config or {}).items():
            inst.set_config(key, value)
        for user in users:
            inst.add_user(user)
        if start:
            inst.start()
        return inst

    yield make

    signal.alarm(0)  # teardown is bounded by stop()'s own timeouts
    problems = []
    for inst in made:
        inst.stop()
        inst.scan_logs()
        for p in inst.problems:
            problems.append(f"[{inst.base}] {p}")
    if problems:
        pytest.fail("daemon problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def postern(make_postern):
    """A running daemon with the default config and users alice@ and bob@example.test."""
    return make_postern()


# ---- per-test time limit ----------------------------------------------------------------

class TimeLimitExceeded(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "time_limit(seconds): per-test wall clock limit "
                                       "(default 120 s)")


@pytest.fixture(autouse=True)
def _time_limit(request):
    mark = request.node.get_closest_marker("time_limit")
    limit = int(mark.args[0]) if mark else 120

    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"test exceeded its time limit of {limit}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
