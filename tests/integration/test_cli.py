"""The `postern` command line: init, domain/user/alias management, check-config, queue."""

import os
import re
import smtplib
import subprocess
import time

import pytest

from helpers import PASSWORDS, make_message, queue_id_from, smtp_client

ALICE = "alice@example.test"


def assert_fails(res, what):
    assert res.returncode != 0, f"{what}: exit 0\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert res.stderr.strip(), f"{what}: failed without a message on stderr"


def words(out):
    return set(out.split())


# ---- init -----------------------------------------------------------------------------

def test_init_layout(make_postern):
    p = make_postern(start=False, users=())
    for name in ("postern.conf", "postern.db"):
        assert os.path.isfile(os.path.join(p.dir, name)), name
    for name in ("mail", "spool"):
        assert os.path.isdir(os.path.join(p.dir, name)), name
    text = "\n".join(p.config_lines())
    assert f"127.0.0.1:{p.port('smtp')}" in text
    res = p.cli("check-config")
    assert res.returncode == 0
    assert "example.test" in words(p.cli("domain", "list").stdout)


def test_init_self_signed_certificate(make_postern):
    p = make_postern(tls=False)   # no --cert/--key: init makes its own
    tls_dir = os.path.join(p.dir, "tls")
    files = os.listdir(tls_dir)
    assert files, "init made no certificate"
    for name in files:
        mode = os.stat(os.path.join(tls_dir, name)).st_mode
        if "key" in name:
            assert mode & 0o077 == 0, f"private key {name} is readable by others: {oct(mode)}"
    with smtp_client(p.port("submission")) as s:
        s.ehlo()
        s.starttls(context=p.client_context())
        s.ehlo()
        s.login(ALICE, PASSWORDS[ALICE])


def test_init_refuses_existing_instance(make_postern):
    p = make_postern(start=False, users=())
    before = open(p.conf).read()
    res = p.run(["init", p.dir, "--domain", "other.test"])
    assert_fails(res, "init over an existing instance")
    assert open(p.conf).read() == before


def test_bad_invocations(make_postern):
    p = make_postern(start=False, users=())
    assert_fails(p.run(["-c", p.conf, "frobnicate"]), "unknown command")
    assert_fails(p.run(["-c", p.conf]), "no command")
    assert_fails(p.run(["-c", p.conf, "domain"]), "domain without a subcommand")
    assert_fails(p.run(["-c", p.conf, "domain", "explode", "x.test"]), "domain explode")
    assert_fails(p.run(["-c", os.path.join(p.dir, "missing.conf"), "check-config"]),
                 "missing config file")
    assert_fails(p.run(["init"]), "init without a directory")


def test_config_from_environment(make_postern):
    p = make_postern(start=False, users=())
    env = p.env()
    env["POSTERN_CONFIG"] = p.conf
    res = subprocess.run([p.bin, "domain", "list"], capture_output=True, text=True, env=env,
                         timeout=30, cwd=p.base)
    assert res.returncode == 0, res.stderr
    assert "example.test" in words(res.stdout)


# ---- domains, users, aliases ----------------------------------------------------------

def test_domains(make_postern):
    p = make_postern(start=False, users=())
    p.cli("domain", "add", "other.test")
    assert {"example.test", "other.test"} <= words(p.cli("domain", "list").stdout)
    assert_fails(p.cli("domain", "add", "other.test", check=False), "duplicate domain")
    assert_fails(p.cli("domain", "add", "not a domain!", check=False), "invalid domain")
    assert_fails(p.cli("domain", "add", "bad..test", check=False), "invalid domain")
    p.cli("domain", "del", "other.test")
    assert "other.test" not in words(p.cli("domain", "list").stdout)
    assert_fails(p.cli("domain", "del", "never.test", check=False), "deleting unknown domain")


def test_domain_case_folded(make_postern):
    p = make_postern(start=False, users=())
    p.cli("domain", "add", "Mixed.TEST")
    listed = words(p.cli("domain", "list").stdout)
    assert "mixed.test" in listed or "Mixed.TEST" in listed
    assert_fails(p.cli("domain", "add", "mixed.test", check=False), "same domain, other case")


def test_users(make_postern):
    p = make_postern(start=False, users=())
    p.add_user(ALICE)
    p.cli("user", "add", "carol@example.test", "--password-stdin", input="Granite-Orchid-8142\n")
    assert {ALICE, "carol@example.test"} <= words(p.cli("user", "list").stdout)
    assert_fails(p.cli("user", "add", "carol@example.test", "--password-stdin",
                       input="Willow-Beacon-6631\n", check=False), "duplicate user")
    assert_fails(p.cli("user", "add", "dan@example.test", "--password-stdin",
                       input="short\n", check=False), "password shorter than 12 (policy)")
    assert_fails(p.cli("user", "add", "dan@example.test", "--password-stdin",
                       input="\n", check=False), "empty password")
    assert_fails(p.cli("user", "add", "erin@not-local.test", "--password-stdin",
                       input="Copper-Thistle-4470\n", check=False), "user in a non-local domain")
    assert_fails(p.cli("user", "add", "no-at-sign", "--password-stdin",
                       input="Copper-Thistle-4470\n", check=False), "invalid address")
    assert_fails(p.cli("user", "add", "a b@example.test", "--password-stdin",
                       input="Copper-Thistle-4470\n", check=False), "invalid address")
    assert_fails(p.cli("user", "add", "../../etc@example.test", "--password-stdin",
                       input="Copper-Thistle-4470\n", check=False), "path traversal local part")
    assert_fails(p.cli("user", "passwd", "ghost@example.test", "--password-stdin",
                       input="Copper-Thistle-4470\n", check=False), "passwd of unknown user")
    p.cli("user", "passwd", "carol@example.test", "--password-stdin", input="Harbor-Willow-9021\n")
    p.cli("user", "del", "carol@example.test")
    assert "carol@example.test" not in words(p.cli("user", "list").stdout)
    assert_fails(p.cli("user", "del", "carol@example.test", check=False), "deleting twice")
    listing = p.cli("user", "list").stdout
    assert PASSWORDS[ALICE] not in listing


def test_passwords_hashed_with_argon2id(make_postern):
    p = make_postern(start=False)
    blob = b""
    for suffix in ("", "-wal", "-journal"):
        path = os.path.join(p.dir, "postern.db" + suffix)
        if os.path.exists(path):
            blob += open(path, "rb").read()
    for pw in PASSWORDS.values():
        assert pw.encode() not in blob, "a password is stored in plaintext"
    assert b"$argon2id$" in blob, "no argon2id hash in the database"


def test_deleted_user_refused_live(postern):
    postern.cli("user", "del", "bob@example.test")
    with smtp_client(postern.port()) as s:
        s.ehlo()
        s.mail("sender@remote.test")
        code, resp = s.rcpt("bob@example.test")
        assert code == 550 and b"5.1.1" in resp, (code, resp)


def test_aliases(make_postern):
    p = make_postern(start=False)
    p.cli("alias", "add", "team@example.test", "alice@example.test,bob@example.test")
    p.cli("alias", "add", "@example.test", "alice@example.test")
    out = p.cli("alias", "list").stdout
    assert "team@example.test" in out and "bob@example.test" in out, out
    assert "@example.test" in out
    assert_fails(p.cli("alias", "add", "x@not-local.test", "alice@example.test", check=False),
                 "alias in a non-local domain")
    assert_fails(p.cli("alias", "add", "y@example.test", check=False), "alias without target")
    assert_fails(p.cli("alias", "add", "z@example.test", "not an address", check=False),
                 "invalid target")
    p.cli("alias", "del", "team@example.test")
    out = p.cli("alias", "list").stdout
    assert "team@example.test" not in out, out
    assert_fails(p.cli("alias", "del", "team@example.test", check=False), "deleting twice")


# ---- check-config ---------------------------------------------------------------------

def append_lines(p, lines):
    with open(p.conf, "a", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    return [len(p.config_lines()) - len(lines) + i + 1 for i in range(len(lines))]


def assert_line_errors(res, p, linenos):
    assert res.returncode != 0, f"check-config accepted a bad file:\n{open(p.conf).read()}"
    for n in linenos:
        pat = re.escape(os.path.basename(p.conf)) + f":{n}: ?\\S"
        assert re.search(pat, res.stderr), f"no 'FILE:{n}: reason' in stderr:\n{res.stderr}"


def test_check_config_ok(make_postern):
    p = make_postern(start=False, users=())
    p.set_config("smtp.command_timeout", "5m")
    p.set_config("smtp.data_timeout", "600")
    p.set_config("smtp.max_message_size", "1G")
    p.set_config("smtp.bare_lf", "normalize")
    p.set_config("smtp.max_line_length", "998")
    res = p.cli("check-config", check=False)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("line", [
    "smtp.no_such_key = 1",
    "nonsense_key = yes",
])
def test_check_config_unknown_key(make_postern, line):
    p = make_postern(start=False, users=())
    [n] = append_lines(p, [line])
    assert_line_errors(p.cli("check-config", check=False), p, [n])


@pytest.mark.parametrize("line", [
    "smtp.max_recipients = abc",
    "smtp.max_recipients = -1",
    "smtp.max_recipients = 99999999999999999999999",
    "smtp.max_message_size = 10X",
    "smtp.max_message_size = ",
    "smtp.bare_lf = maybe",
    "smtp.command_timeout = soon",
    "smtp.max_connections = 1.5",
    "this line has no equals sign",
])
def test_check_config_bad_value(make_postern, line):
    p = make_postern(start=False, users=())
    key = line.split("=")[0].strip()
    if "=" in line:
        # replace init's line if there is one so the error is about the value only
        p.set_config(key, line.split("=", 1)[1].strip())
        n = [i + 1 for i, l in enumerate(p.config_lines())
             if re.match(r"\s*" + re.escape(key) + r"\s*=", l)][0]
    else:
        [n] = append_lines(p, [line])
    assert_line_errors(p.cli("check-config", check=False), p, [n])


def test_check_config_duplicate_key(make_postern):
    p = make_postern(start=False, users=())
    first, second = append_lines(p, ["smtp.max_errors = 5", "smtp.max_errors = 6"])
    lines = [i + 1 for i, l in enumerate(p.config_lines())
             if re.match(r"\s*smtp\.max_errors\s*=", l)]
    assert_line_errors(p.cli("check-config", check=False), p, [lines[-1]])


def test_check_config_reports_every_error(make_postern):
    p = make_postern(start=False, users=())
    lines = append_lines(p, ["bogus.one = 1", "# a comment", "", "bogus.two = 2",
                             "smtp.bare_lf = sometimes"])
    assert_line_errors(p.cli("check-config", check=False), p, [lines[0], lines[3], lines[4]])


def test_serve_refuses_bad_config(make_postern):
    p = make_postern(start=False, users=())
    [n] = append_lines(p, ["smtp.unknown_thing = 1"])
    res = p.run(["-c", p.conf, "serve"], timeout=30)
    assert res.returncode != 0
    assert re.search(re.escape(os.path.basename(p.conf)) + f":{n}:", res.stderr), res.stderr


# ---- reload -----------------------------------------------------------------------------

def ehlo_size(p):
    with smtp_client(p.port()) as s:
        s.ehlo()
        return int(s.esmtp_features["size"])


def test_sighup_reload(postern):
    assert ehlo_size(postern) != 10240
    postern.set_config("smtp.max_message_size", "10K")
    postern.reload()
    deadline = time.monotonic() + 10
    while ehlo_size(postern) != 10240:
        assert time.monotonic() < deadline, "SIGHUP did not apply the new max_message_size"
        time.sleep(0.2)
    assert postern.running()


def test_sighup_with_bad_config_keeps_serving(postern):
    append_lines(postern, ["bogus.key = 1"])
    postern.reload()
    time.sleep(1.5)
    assert postern.running(), "a bad config on SIGHUP must not stop the daemon"
    msg, token = make_message()
    with smtp_client(postern.port()) as s:
        s.ehlo()
        s.sendmail("sender@remote.test", [ALICE], msg)
    postern.wait_exact(ALICE, [token])


# ---- queue ------------------------------------------------------------------------------

def queue_remote(p, rcpt="friend@remote.test"):
    msg, token = make_message(sender=ALICE, to=rcpt)
    with smtplib.SMTP_SSL("127.0.0.1", p.port("submissions"), local_hostname="client.test",
                          context=p.client_context(), timeout=10) as s:
        s.login(ALICE, PASSWORDS[ALICE])
        s.mail(ALICE)
        assert s.rcpt(rcpt)[0] == 250
        code, resp = s.data(msg)
        assert code == 250, resp
        return queue_id_from(resp)


def test_queue_list_show_delete(postern):
    assert postern.queue_ids() == []
    q1 = queue_remote(postern, "friend@remote.test")
    q2 = queue_remote(postern, "other@elsewhere.test")
    ids = [i.upper() for i in postern.queue_ids()]
    assert q1.upper() in ids and q2.upper() in ids, postern.cli("queue", "list").stdout
    show = postern.cli("queue", "show", q1).stdout
    assert "friend@remote.test" in show and ALICE in show, show
    postern.cli("queue", "delete", q1)
    ids = [i.upper() for i in postern.queue_ids()]
    assert q1.upper() not in ids and q2.upper() in ids
    assert_fails(postern.cli("queue", "show", q1, check=False), "show of a deleted id")
    assert_fails(postern.cli("queue", "delete", q1, check=False), "delete of a deleted id")
    for bad in ("0000000000000000", "../../postern.conf", "zz", ""):
        assert_fails(postern.cli("queue", "show", bad, check=False), f"queue show {bad!r}")
        assert_fails(postern.cli("queue", "delete", bad, check=False), f"queue delete {bad!r}")
    assert os.path.exists(postern.conf)


def test_queue_survives_restart(postern):
    q = queue_remote(postern)
    postern.restart()
    assert q.upper() in [i.upper() for i in postern.queue_ids()]


def test_odd_names_stay_inside_the_data_dir(make_postern):
    p = make_postern(users=())
    for dom in ("../evil.test", "a/b.test", ".test", "evil.test/..", "-x.test", "a..b.test"):
        assert_fails(p.cli("domain", "add", dom, check=False), f"domain add {dom!r}")
    for addr in (".hidden@example.test", "..@example.test", "../x@example.test",
                 "x.@example.test"):
        assert_fails(p.cli("user", "add", addr, "--password-stdin", input="Copper-Thistle-4470\n",
                           check=False), f"user add {addr!r} (not a valid dot-atom)")
    accepted = []
    for addr in ("a/b@example.test", '"../../x"@example.test', '"a/../../b"@example.test',
                 "new@example.test"):
        res = p.cli("user", "add", addr, "--password-stdin", input="Copper-Thistle-4470\n",
                    check=False)
        if res.returncode == 0:
            accepted.append(addr)
    assert "new@example.test" in accepted
    with smtp_client(p.port()) as s:
        s.ehlo()
        for addr in accepted:
            s.mail("sender@remote.test")
            code, resp = s.rcpt(addr)
            assert code == 250, (addr, code, resp)
            code, resp = s.data(make_message(to=addr)[0])
            assert code == 250, (addr, code, resp)
    p.wait_messages("new@example.test", 1)
    time.sleep(1.5)
    mail = os.path.join(p.dir, "mail")
    for root, dirs, files in os.walk(p.base):
        for name in files:
            path = os.path.join(root, name)
            if os.path.relpath(path, p.dir).startswith(".."):
                assert os.path.basename(path).startswith("serve."), \
                    f"file written outside the data dir: {path}"
            elif os.path.basename(root) in ("new", "cur"):
                parts = os.path.relpath(path, mail).split(os.sep)
                assert len(parts) == 4 and parts[0] == "example.test" and \
                    parts[1] not in (".", ".."), f"message stored outside a user's Maildir: {path}"


def peer_cn(p):
    from helpers import RawSMTP
    with RawSMTP(p.port("submissions"), tls=p.client_context()) as c:
        c.reply()
        cert = c.sock.getpeercert()
    return dict(x[0] for x in cert["subject"])["commonName"]


def test_sighup_reloads_certificate(make_postern, tls_material, tmp_path):
    from helpers import issue_cert
    import shutil
    p = make_postern(start=False)
    cert = str(tmp_path / "live.pem")
    key = str(tmp_path / "live.key")
    first = issue_cert(tls_material, str(tmp_path), "first.example.test")
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    p.set_config("tls.cert", cert)
    p.set_config("tls.key", key)
    p.start()
    assert peer_cn(p) == "first.example.test"
    second = issue_cert(tls_material, str(tmp_path), "second.example.test")
    shutil.copy(second[0], cert + ".new")
    shutil.copy(second[1], key + ".new")
    os.replace(key + ".new", key)
    os.replace(cert + ".new", cert)
    p.reload()
    deadline = time.monotonic() + 10
    while peer_cn(p) != "second.example.test":
        assert time.monotonic() < deadline, "SIGHUP did not load the new certificate"
        time.sleep(0.2)
