"""TLS policy (issue 6): protocol versions per listener, SNI certificates added with
`postern tls add`, certificate reload (SIGHUP / `postern reload`) without dropping open
sessions, a bad certificate keeping the old one, `postern tls show`, client certificates,
expiry warnings and the audit events of reloads.

Clients: Python's ssl/imaplib/smtplib and `openssl s_client`."""

import imaplib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from helpers import HOSTNAME, RawSMTP

ALICE = "carol@example.test"
ALICE_PW = "Tr0ub4dor&3-horse"
OTHER = "other.example.test"


# ---- certificates ---------------------------------------------------------------------

def ossl(*args, cwd=None):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True,
                   timeout=60)


def issue(tls, directory, name, sans, days=3):
    """A server certificate for `name` with the DNS names `sans`, from the test CA in `tls`;
    returns (cert, key)."""
    directory = str(directory)
    ca_dir = os.path.dirname(tls["ca"])
    base = os.path.join(directory, f"{name}-{time.monotonic_ns()}")
    ext = base + ".ext"
    with open(ext, "w") as f:
        f.write("subjectAltName=" + ",".join(sans) + "\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", base + ".key", "-out",
         base + ".csr", "-subj", f"/CN={name}")
    ossl("x509", "-req", "-in", base + ".csr", "-CA", tls["ca"], "-CAkey",
         os.path.join(ca_dir, "ca.key"), "-CAcreateserial", "-out", base + ".pem", "-days",
         str(days), "-extfile", ext)
    return base + ".pem", base + ".key"


def default_sans():
    return [f"DNS:{HOSTNAME}", "DNS:localhost", "IP:127.0.0.1"]


def own_default_cert(p, tmp_path):
    """Gives the instance its own copy of the default certificate (tests write over it)."""
    cert, key = str(tmp_path / "default.pem"), str(tmp_path / "default.key")
    shutil.copy(p.tls["cert"], cert)
    shutil.copy(p.tls["key"], key)
    p.set_config("tls.cert", cert)
    p.set_config("tls.key", key)
    return cert, key


def serial_of(path):
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-serial"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1].upper()


def peer(p, listener="submissions", server_hostname=HOSTNAME, ctx=None):
    """(commonName, serial) of the certificate a new connection gets."""
    ctx = ctx or p.client_context()
    with socket.create_connection(("127.0.0.1", p.port(listener)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as s:
            cert = s.getpeercert()
    cn = dict(x[0] for x in cert["subject"])["commonName"]
    return cn, cert["serialNumber"].upper()


def wait_for(pred, what, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        last = pred()
        if last:
            return last
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def audit_events(p, event):
    path = os.path.join(p.dir, "audit.log")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [e for e in (json.loads(l) for l in f if l.strip()) if e.get("event") == event]


# ---- protocol versions ----------------------------------------------------------------

def s_client(port, version, starttls=None):
    """`openssl s_client` with one protocol version; (connected, output). SECLEVEL=0 so
    that the client itself is willing to speak TLS 1.0/1.1 (Debian refuses otherwise)."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-brief",
            "-cipher", "DEFAULT:@SECLEVEL=0"]
    if starttls:
        args += ["-starttls", starttls]
    res = subprocess.run(args, input="", capture_output=True, text=True, timeout=30)
    out = res.stdout + res.stderr
    return res.returncode == 0 and "CONNECTION ESTABLISHED" in out, out


LISTENERS = [("smtp", "smtp"), ("submissions", None), ("imaps", None), ("pop3s", None),
             ("submission", "smtp"), ("imap", "imap"), ("pop3", "pop3")]


@pytest.mark.parametrize("listener,starttls", LISTENERS)
def test_old_protocols_refused_modern_accepted(postern, listener, starttls):
    port = postern.port(listener)
    for version in ("-tls1", "-tls1_1"):
        ok, out = s_client(port, version, starttls)
        assert not ok, f"{listener} accepted {version}:\n{out}"
        # refused by the server (an alert or a close), not by our own client (see
        # test_client_can_speak_tls10)
        assert "no protocols available" not in out and "error" in out, out
    for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        ok, out = s_client(port, version, starttls)
        assert ok, f"{listener} refused {version}:\n{out}"
        assert f"Protocol version: {name}" in out, out


def test_client_can_speak_tls10():
    """Control for the test above: our `openssl s_client -tls1` does reach a TLS 1.0
    handshake with a server that allows it, so its failure against Postern is Postern's."""
    d = subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip()
    try:
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out",
             "c.pem", "-days", "1", "-subj", "/CN=control", cwd=d)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                                "-cert", "c.pem", "-key", "k.pem", "-tls1",
                                "-cipher", "DEFAULT:@SECLEVEL=0", "-naccept", "1"],
                               cwd=d, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            ok, out = wait_for(lambda: (lambda r: r if r[0] else None)(
                s_client(port, "-tls1")), "a TLS 1.0 handshake with s_server")
            assert "Protocol version: TLSv1\n" in out or "TLSv1\n" in out, out
        finally:
            srv.kill()
            srv.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def version_ctx(p, maximum):
    ctx = p.client_context()
    ctx.maximum_version = maximum
    return ctx


def test_min_version_tls13_and_listener_override(make_postern):
    p = make_postern(config={"tls.min_version": "TLSv1.3",
                             "tls.imaps.min_version": "TLSv1.2"})
    tls12 = version_ctx(p, ssl.TLSVersion.TLSv1_2)
    for listener in ("submissions", "pop3s"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            peer(p, listener, ctx=tls12)
        assert peer(p, listener)[0] == HOSTNAME  # TLS 1.3 works
    # the override: imaps still takes 1.2
    assert peer(p, "imaps", ctx=tls12)[0] == HOSTNAME
    ok, out = s_client(p.port("smtp"), "-tls1_2", "smtp")
    assert not ok, out
    ok, out = s_client(p.port("imaps"), "-tls1_2")
    assert ok and "Protocol version: TLSv1.2" in out, out
    show = p.cli("tls", "show").stdout
    assert f"submissions 127.0.0.1:{p.port('submissions')}\n  min version: TLSv1.3" in show
    assert f"imaps 127.0.0.1:{p.port('imaps')}\n  min version: TLSv1.2" in show


# ---- SNI, tls add, reload ----------------------------------------------------------------

def imap_login(p):
    m = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=p.client_context(),
                          timeout=10)
    m.login(ALICE, ALICE_PW)
    return m


def smtp_open(p):
    c = RawSMTP(p.port("submissions"), tls=p.client_context())
    assert c.reply().code == 220
    assert c.ehlo().code == 250
    return c


def test_sni_tls_add_reload_keeps_sessions(make_postern, tmp_path):
    p = make_postern(start=False, users=())
    cert, _ = own_default_cert(p, tmp_path)
    p.start()
    p.add_user(ALICE, ALICE_PW)
    first_serial = serial_of(cert)
    assert peer(p) == (HOSTNAME, first_serial)
    assert peer(p, server_hostname=OTHER, ctx=unverified(p))[0] == HOSTNAME  # no such cert yet

    imap = imap_login(p)
    smtp = smtp_open(p)
    imap_serial = imap.sock.getpeercert()["serialNumber"].upper()
    assert imap_serial == first_serial

    # a second certificate, for other.example.test, chosen by SNI after the reload
    o_cert, o_key = issue(p.tls, tmp_path, OTHER, [f"DNS:{OTHER}"])
    out = p.cli("tls", "add", o_cert, o_key).stdout
    installed = os.path.join(p.dir, "tls", "sni", f"{OTHER}.pem")
    assert installed in out and "postern reload" in out, out
    assert os.stat(installed).st_mode & 0o777 == 0o644
    assert os.stat(os.path.join(p.dir, "tls", "sni", f"{OTHER}.key")).st_mode & 0o777 == 0o600
    assert serial_of(cert) == first_serial, "an SNI certificate must not replace the default"
    res = p.cli("reload")
    assert "reload requested" in res.stdout
    other_serial = serial_of(o_cert)
    wait_for(lambda: peer(p, server_hostname=OTHER) == (OTHER, other_serial),
             "the SNI certificate after reload")
    for listener in ("imaps", "pop3s", "submissions"):
        assert peer(p, listener, server_hostname=OTHER) == (OTHER, other_serial), listener
        assert peer(p, listener, server_hostname=HOSTNAME) == (HOSTNAME, first_serial)
    assert peer(p, "submissions", server_hostname="unknown.example.test",
                ctx=unverified(p))[0] == HOSTNAME

    # renewal of the default certificate: tls add writes over tls.cert / tls.key
    r_cert, r_key = issue(p.tls, tmp_path, HOSTNAME, default_sans())
    renewed_serial = serial_of(r_cert)
    out = p.cli("tls", "add", r_cert, r_key).stdout
    assert "default certificate" in out and cert in out, out
    assert serial_of(cert) == renewed_serial
    p.reload()
    wait_for(lambda: peer(p)[1] == renewed_serial, "the renewed default certificate")
    assert peer(p, "imaps")[1] == renewed_serial
    assert peer(p, server_hostname=OTHER)[1] == other_serial

    # the sessions opened before both reloads still work, on their old certificate
    typ, _ = imap.noop()
    assert typ == "OK"
    typ, data = imap.select("INBOX")
    assert typ == "OK", data
    assert imap.sock.getpeercert()["serialNumber"].upper() == first_serial
    assert smtp.cmd("NOOP").code == 250
    assert smtp.cmd("AUTH PLAIN " + plain(ALICE, ALICE_PW)).code == 235
    assert smtp.cmd("MAIL FROM:<carol@example.test>").code == 250
    assert smtp.cmd("RSET").code == 250
    assert smtp.cmd("QUIT").code == 221
    imap.logout()

    events = audit_events(p, "certificate_reload")
    assert [e["result"] for e in events] == ["ok", "ok"], events
    assert f"CN={OTHER}" in events[0]["subject"], events
    assert [e["result"] for e in audit_events(p, "config_reload")] == ["ok", "ok"]


def plain(user, password):
    import base64
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def unverified(p):
    """The test CA, without the host name check (for names no certificate has)."""
    ctx = p.client_context()
    ctx.check_hostname = False
    return ctx


def test_tls_add_replaces_same_name_and_rejects_bad(make_postern, tmp_path):
    p = make_postern(start=False, users=())
    own_default_cert(p, tmp_path)
    a_cert, a_key = issue(p.tls, tmp_path, OTHER, [f"DNS:{OTHER}", "DNS:alt.example.test"])
    p.cli("tls", "add", a_cert, a_key)
    # a new certificate whose first name differs but shares a name replaces the old one
    b_cert, b_key = issue(p.tls, tmp_path, "alt.example.test", ["DNS:alt.example.test"])
    out = p.cli("tls", "add", b_cert, b_key).stdout
    assert "replaced" in out, out
    files = sorted(os.listdir(os.path.join(p.dir, "tls", "sni")))
    assert f"{OTHER}.pem" not in files and "alt.example.test.pem" in files, files
    # key of another certificate, garbage, an expired certificate: refused, nothing written
    res = p.cli("tls", "add", a_cert, b_key, check=False)
    assert res.returncode == 1 and "does not match" in res.stderr, res.stderr
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    res = p.cli("tls", "add", str(junk), b_key, check=False)
    assert res.returncode == 1 and "no PEM certificate" in res.stderr, res.stderr
    e_cert, e_key = expired_cert(p, tmp_path)
    res = p.cli("tls", "add", e_cert, e_key, check=False)
    assert res.returncode == 1 and "expired" in res.stderr, res.stderr
    assert sorted(os.listdir(os.path.join(p.dir, "tls", "sni"))) == files
    # the test CA's certificates live 3 days: tls add warns (3 within the second of issue)
    err = p.cli("tls", "add", b_cert, b_key).stderr
    assert re.search(r"warning: certificate CN=alt\.example\.test expires in [23] days", err), err


def expired_cert(p, tmp_path):
    """A certificate whose notAfter has passed (openssl x509 -not_after needs 3.4;
    use a CA-signed one with a start and end date in the past through `openssl ca`)."""
    d = tmp_path / "expired"
    d.mkdir()
    ca_dir = os.path.dirname(p.tls["ca"])
    (d / "index.txt").write_text("")
    (d / "serial").write_text("1000\n")
    (d / "ca.cnf").write_text(
        "[ca]\ndefault_ca=x\n[x]\n"
        f"dir={d}\ndatabase={d}/index.txt\nserial={d}/serial\nnew_certs_dir={d}\n"
        "default_md=sha256\npolicy=p\ncopy_extensions=none\n"
        "[p]\ncommonName=supplied\n")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "e.key"), "-out",
         str(d / "e.csr"), "-subj", "/CN=old.example.test")
    ossl("ca", "-batch", "-config", str(d / "ca.cnf"), "-cert", p.tls["ca"], "-keyfile",
         os.path.join(ca_dir, "ca.key"), "-in", str(d / "e.csr"), "-out", str(d / "e.pem"),
         "-startdate", "20200101000000Z", "-enddate", "20200201000000Z", "-notext")
    return str(d / "e.pem"), str(d / "e.key")


def test_bad_certificate_on_reload_keeps_old(make_postern, tmp_path):
    p = make_postern(start=False, users=())
    cert, key = own_default_cert(p, tmp_path)
    p.start()
    serial = serial_of(cert)
    imap = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=p.client_context(),
                             timeout=10)
    # a certificate whose key is not the configured one
    other, _ = issue(p.tls, tmp_path, HOSTNAME, default_sans())
    shutil.copy(other, cert)
    p.reload()
    wait_for(lambda: "does not match" in p.log_text(), "the reload error in the log")
    assert "keeping the old certificates" in p.log_text()
    assert p.running()
    for listener in ("submissions", "imaps", "pop3s"):
        assert peer(p, listener)[1] == serial, listener
    # garbage in the file: same
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n")
    p.cli("reload")
    wait_for(lambda: p.log_text().count("keeping the old certificates") >= 2,
             "the second reload error")
    assert peer(p)[1] == serial
    assert imap.noop()[0] == "OK"
    imap.logout()
    fails = audit_events(p, "certificate_reload")
    assert [e["result"] for e in fails] == ["fail", "fail"], fails
    assert "does not match" in fails[0]["error"]
    # `tls show` reports the broken file instead of printing a policy
    res = p.cli("tls", "show", check=False)
    assert res.returncode == 1 and cert in res.stderr, res.stderr


def test_tls_show(make_postern, tmp_path):
    p = make_postern(start=False, users=(),
                     config={"tls.pop3s.ciphersuites": "TLS_CHACHA20_POLY1305_SHA256"})
    cert, _ = own_default_cert(p, tmp_path)
    o_cert, o_key = issue(p.tls, tmp_path, OTHER, [f"DNS:{OTHER}"])
    p.cli("tls", "add", o_cert, o_key)
    out = p.cli("tls", "show").stdout
    for listener in ("smtp", "submission", "submissions", "imap", "imaps", "pop3", "pop3s"):
        assert f"{listener} 127.0.0.1:{p.port(listener)}\n  min version: TLSv1.2\n" in out, \
            out
    assert "http" not in out
    assert out.count(f"subject: CN={HOSTNAME}") == 7
    assert out.count(f"names: {HOSTNAME}, localhost\n") == 7
    assert "ciphers (TLS 1.2): ECDHE-ECDSA-AES128-GCM-SHA256:" in out
    assert "ciphersuites (TLS 1.3): TLS_CHACHA20_POLY1305_SHA256\n" in out
    assert "ciphersuites (TLS 1.3): (OpenSSL default)\n" in out
    assert "client certificates: none" in out
    assert "days left)" in out and "not after: 20" in out
    assert f"file: {cert}" in out
    assert "SNI certificates: 1\n" in out and f"subject: CN={OTHER}" in out
    # the running daemon serves what `tls show` says (after start)
    p.start()
    ctx = p.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", p.port("pop3s")), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME) as s:
            assert s.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"


def test_expiry_warning_at_start(make_postern, tmp_path):
    p = make_postern(start=False, users=())
    # the test CA's certificates are valid for 3 days: 2 whole days left
    own_default_cert(p, tmp_path)
    p.start()
    text = p.log_text()
    assert f"certificate CN={HOSTNAME} expires in 2 days" in text, p.log_tail()
    events = audit_events(p, "certificate_expiring")
    assert events and events[0]["days_left"] == "2" and HOSTNAME in events[0]["subject"]
    # a long-lived certificate: no warning
    q = make_postern(start=False, users=())
    c, k = issue(q.tls, tmp_path, HOSTNAME, default_sans(), days=30)
    q.set_config("tls.cert", c)
    q.set_config("tls.key", k)
    q.start()
    assert "expires in" not in q.log_text()
    assert "30 days left" in q.log_text() or "29 days left" in q.log_text()
    assert audit_events(q, "certificate_expiring") == []


# ---- client certificates ---------------------------------------------------------------

def client_ca(tmp_path, name):
    d = tmp_path / name
    d.mkdir()
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
         "ca.pem", "-days", "3", "-subj", f"/CN={name} CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
         "client.csr", "-subj", f"/CN={name} client", cwd=d)
    (d / "ext.cnf").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    ossl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "client.pem", "-days", "3", "-extfile", "ext.cnf", cwd=d)
    return {"ca": str(d / "ca.pem"), "cert": str(d / "client.pem"),
            "key": str(d / "client.key")}


def starttls_session(p, listener, ctx):
    """STARTTLS on an SMTP listener, then EHLO over TLS; returns the reply code or raises."""
    c = RawSMTP(p.port(listener))
    try:
        assert c.reply().code == 220
        assert c.ehlo().code == 250
        assert c.cmd("STARTTLS").code == 220
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        c.buf = b""
        # TLS 1.3: a refused client certificate shows on the first read
        return c.ehlo().code
    finally:
        c.close()


def test_client_certificates(make_postern, tmp_path):
    good = client_ca(tmp_path, "good")
    bad = client_ca(tmp_path, "bad")
    p = make_postern(users=(), config={
        "tls.smtp.client_cert": "required",
        "tls.smtp.client_ca": good["ca"],
        "tls.submission.client_cert": "optional",
        "tls.client_ca": good["ca"],
    })
    show = p.cli("tls", "show").stdout
    assert f"client certificates: required (CA {good['ca']})" in show
    assert f"client certificates: optional (CA {good['ca']})" in show

    def ctx_with(material, maximum=None):
        ctx = p.client_context()
        if maximum:
            ctx.maximum_version = maximum
        if material:
            ctx.load_cert_chain(material["cert"], material["key"])
        return ctx

    for maximum in (None, ssl.TLSVersion.TLSv1_2):
        # required: no certificate, or one from another CA -> no TLS session
        for material in (None, bad):
            with pytest.raises((ssl.SSLError, ConnectionError, EOFError, OSError)):
                starttls_session(p, "smtp", ctx_with(material, maximum))
        assert starttls_session(p, "smtp", ctx_with(good, maximum)) == 250
        # optional: without one is fine, a good one is fine
        assert starttls_session(p, "submission", ctx_with(None, maximum)) == 250
        assert starttls_session(p, "submission", ctx_with(good, maximum)) == 250
    # the other listeners do not ask
    assert peer(p, "submissions")[0] == HOSTNAME


# ---- postern reload without a daemon ------------------------------------------------------

def test_reload_without_daemon(make_postern):
    p = make_postern(start=False, users=())
    res = p.cli("reload", check=False)
    assert res.returncode == 1 and "not running" in res.stderr, res
    p.start()
    pid_file = os.path.join(p.dir, "run", "master.pid")
    with open(pid_file) as f:
        assert int(f.read().strip()) == p.proc.pid
    assert "reload requested" in p.cli("reload").stdout
    wait_for(lambda: "reload: configuration re-read" in p.log_text(), "the reload")
    p.stop()
    assert not os.path.exists(pid_file), "master.pid must be removed at exit"
    res = p.cli("reload", check=False)
    assert res.returncode == 1 and "not running" in res.stderr, res
    # a stale pid file (a crash) is not taken for a running daemon
    with open(pid_file, "w") as f:
        f.write("999999\n")
    res = p.cli("reload", check=False)
    assert res.returncode == 1 and "not running" in res.stderr, res
