"""Submission (STARTTLS, 587-style) and submissions (implicit TLS, 465-style) with AUTH."""

import base64
import re
import smtplib
import subprocess

import pytest

from helpers import (
    PASSWORDS,
    RawSMTP,
    headers_named,
    make_message,
    queue_id_from,
    smtp_client,
    unique_token,
)

ALICE = "alice@example.test"
BOB = "bob@example.test"


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def plain(user, password, authzid=""):
    return b64(f"{authzid}\0{user}\0{password}")


def submission(postern, login=True, user=ALICE, mech="PLAIN"):
    s = smtp_client(postern.port("submission"))
    s.ehlo()
    s.starttls(context=postern.client_context())
    s.ehlo()
    if login:
        s.user, s.password = user, PASSWORDS[user]
        auth = s.auth_plain if mech == "PLAIN" else s.auth_login
        code, resp = s.auth(mech, auth, initial_response_ok=(mech == "PLAIN"))
        assert code == 235, (code, resp)
    return s


def tls_raw(postern):
    c = RawSMTP(postern.port("submission"))
    assert c.reply().code == 220
    c.ehlo()
    c.starttls(postern.client_context())
    c.ehlo()
    return c


def test_ehlo_before_and_after_starttls(postern):
    with smtp_client(postern.port("submission")) as s:
        s.ehlo()
        f = s.esmtp_features
        assert "starttls" in f, f
        assert "auth" not in f, f"AUTH offered before TLS: {f}"
        s.starttls(context=postern.client_context())
        s.ehlo()
        f = s.esmtp_features
        assert "starttls" not in f, f"STARTTLS offered inside TLS: {f}"
        mechs = f.get("auth", "").upper().split()
        assert "PLAIN" in mechs and "LOGIN" in mechs, f
        for kw in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes",
                   "chunking"):
            assert kw in f, f"EHLO lacks {kw.upper()}: {f}"


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_starttls_auth_and_send_local(postern, mech):
    msg, token = make_message(sender=ALICE, to=BOB)
    with submission(postern, mech=mech) as s:
        code, _ = s.mail(ALICE)
        assert code == 250
        assert s.rcpt(BOB)[0] == 250
        code, resp = s.data(msg)
        assert code == 250, resp
        queue_id_from(resp)
    [m] = postern.wait_exact(BOB, [token])
    rcv = headers_named(m, "Received")[0]
    assert re.search(r"TLS ?v?1\.[23]", rcv), f"Received lacks the TLS version: {rcv}"
    assert ALICE in rcv or "alice" in rcv, f"Received lacks the authenticated user: {rcv}"


def test_auth_login_with_initial_response(postern):
    # smtplib's default sends the user name as initial response (RFC 4954 allows it).
    with smtp_client(postern.port("submission")) as s:
        s.ehlo()
        s.starttls(context=postern.client_context())
        s.ehlo()
        s.user, s.password = ALICE, PASSWORDS[ALICE]
        code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=True)
        assert code == 235, (code, resp)


def test_auth_login_raw(postern):
    with tls_raw(postern) as c:
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334, r
        r = c.cmd(b64(ALICE))
        assert r.code == 334, r
        r = c.cmd(b64(PASSWORDS[ALICE]))
        assert r.code == 235 and "2.7.0" in r.text, r
        r = c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE]))
        assert r.code == 503, f"second AUTH: {r}"


def test_smtps_implicit_tls(postern):
    msg, token = make_message(sender=ALICE, to=BOB)
    with smtplib.SMTP_SSL("127.0.0.1", postern.port("submissions"), local_hostname="client.test",
                          context=postern.client_context(), timeout=10) as s:
        s.ehlo()
        f = s.esmtp_features
        assert "starttls" not in f, f
        assert "PLAIN" in f.get("auth", "").upper().split(), f
        s.login(ALICE, PASSWORDS[ALICE])
        s.sendmail(ALICE, [BOB], msg)
    [m] = postern.wait_exact(BOB, [token])
    assert re.search(r"TLS ?v?1\.[23]", headers_named(m, "Received")[0])


def test_auth_before_tls_refused(postern):
    with RawSMTP(postern.port("submission")) as c:
        c.reply()
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE]))
        assert r.code == 530 and "5.7.0" in r.text, r
        r = c.cmd("AUTH LOGIN")
        assert r.code == 530 and "5.7.0" in r.text, r
        r = c.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 530 and "5.7.0" in r.text, r


def test_wrong_password_535(postern):
    with tls_raw(postern) as c:
        r = c.cmd("AUTH PLAIN " + plain(ALICE, "wrong-password"))
        assert r.code == 535 and "5.7.8" in r.text, r
        r = c.cmd("AUTH PLAIN " + plain("nobody@example.test", "whatever-pw"))
        assert r.code == 535 and "5.7.8" in r.text, r
        # the right one still works (2 failures < default limit of 3)
        r = c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE]))
        assert r.code == 235, r


def test_wrong_password_smtplib(postern):
    with smtp_client(postern.port("submission")) as s:
        s.ehlo()
        s.starttls(context=postern.client_context())
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(ALICE, "not-the-password")
        assert e.value.smtp_code == 535


def test_auth_authzid_other_user_refused(postern):
    with tls_raw(postern) as c:
        r = c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE], authzid=BOB))
        assert r.code != 235 and r.code >= 500, f"authzid {BOB} with alice's password: {r}"


def test_auth_cancel(postern):
    with tls_raw(postern) as c:
        r = c.cmd("AUTH LOGIN")
        assert r.code == 334
        r = c.cmd("*")
        assert r.code == 501, r
        r = c.cmd("AUTH PLAIN")
        assert r.code == 334, r
        r = c.cmd("not base64 !!!")
        assert r.code in (501, 535), r


@pytest.mark.parametrize("listener", ["submission", "submissions"])
def test_mail_before_auth_530(postern, listener):
    if listener == "submission":
        c = tls_raw(postern)
    else:
        c = postern.raw("submissions")
        assert c.reply().code == 220
        c.ehlo()
    with c:
        r = c.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 530 and "5.7.0" in r.text, r
        r = c.cmd("RCPT TO:<bob@example.test>")
        assert r.code in (503, 530), r


def test_sender_ownership(postern):
    with submission(postern) as s:
        code, resp = s.mail(BOB)
        assert code in (550, 553) and b"5.7.1" in resp, (code, resp)
        s.rset()
        code, resp = s.mail("someone@remote.test")
        assert code in (550, 553) and b"5.7.1" in resp, (code, resp)
        s.rset()
        code, resp = s.mail("Alice@EXAMPLE.test")
        assert code == 250, f"own address in other case: {code} {resp}"


def test_sender_alias_allowed(postern):
    postern.cli("alias", "add", "sales@example.test", ALICE)
    msg, token = make_message(sender="sales@example.test", to=BOB)
    with submission(postern) as s:
        code, resp = s.mail("sales@example.test")
        assert code == 250, (code, resp)
        assert s.rcpt(BOB)[0] == 250
        assert s.data(msg)[0] == 250
    postern.wait_exact(BOB, [token])
    # bob may not use alice's alias
    with submission(postern, user=BOB) as s:
        code, resp = s.mail("sales@example.test")
        assert code in (550, 553) and b"5.7.1" in resp, (code, resp)


def test_remote_recipient_queued(postern):
    msg, token = make_message(sender=ALICE, to="friend@remote.test")
    with submission(postern) as s:
        assert s.mail(ALICE)[0] == 250
        code, resp = s.rcpt("friend@remote.test")
        assert code == 250, (code, resp)
        assert s.rcpt(BOB)[0] == 250
        code, resp = s.data(msg)
        assert code == 250, resp
        qid = queue_id_from(resp)
    postern.wait_exact(BOB, [token])
    res = postern.cli("queue", "list")
    assert qid.lower() in res.stdout.lower(), f"queue list lacks {qid}:\n{res.stdout}"
    assert "friend@remote.test" in res.stdout or qid in res.stdout
    show = postern.cli("queue", "show", qid)
    assert "friend@remote.test" in show.stdout, show.stdout
    assert "alice@example.test" in show.stdout, show.stdout


@pytest.mark.parametrize("limit", [2])
def test_max_auth_failures_disconnects(make_postern, limit):
    p = make_postern(config={"smtp.max_auth_failures": str(limit)})
    with tls_raw(p) as c:
        replies = []
        closed = False
        for i in range(limit + 1):
            try:
                r = c.cmd("AUTH PLAIN " + plain(ALICE, f"wrong-{i}-password"))
            except (EOFError, ConnectionError, OSError):
                closed = True
                break
            replies.append(r)
            if r.code == 421:
                break
        if not closed:
            closed, data = c.closed_within(5)
        assert closed, f"still connected after {len(replies)} failed AUTHs: {replies}"
        assert len(replies) <= limit + 1
        assert all(r.code in (535, 421) for r in replies), replies
        assert sum(1 for r in replies if r.code == 535) <= limit, replies


def test_swaks_submission_starttls_auth(postern, tls_material):
    token = unique_token()
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(postern.port("submission")),
         "--tls", "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", PASSWORDS[ALICE],
         "--ehlo", "client.test", "--from", ALICE, "--to", BOB,
         "--header", f"Subject: swaks-sub {token}", "--timeout", "10"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    postern.wait_exact(BOB, [token])


def test_swaks_submissions_login(postern):
    token = unique_token()
    res = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(postern.port("submissions")),
         "--tls-on-connect", "--auth", "LOGIN", "--auth-user", ALICE,
         "--auth-password", PASSWORDS[ALICE],
         "--ehlo", "client.test", "--from", ALICE, "--to", BOB,
         "--header", f"Subject: swaks-subs {token}", "--timeout", "10"],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    postern.wait_exact(BOB, [token])


@pytest.mark.parametrize("mode", ["smtps", "starttls"])
def test_curl_submission(postern, tmp_path, tls_material, mode):
    msg, token = make_message(sender=ALICE, to=BOB)
    path = tmp_path / "mail.eml"
    path.write_bytes(msg)
    if mode == "smtps":
        url = f"smtps://127.0.0.1:{postern.port('submissions')}/client.test"
        extra = []
    else:
        url = f"smtp://127.0.0.1:{postern.port('submission')}/client.test"
        extra = ["--ssl-reqd"]
    res = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", tls_material["ca"], url, *extra,
         "--user", f"{ALICE}:{PASSWORDS[ALICE]}", "--mail-from", ALICE, "--mail-rcpt", BOB,
         "-T", str(path)],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    postern.wait_exact(BOB, [token])


def test_password_change_takes_effect(postern):
    postern.cli("user", "passwd", ALICE, "--password-stdin", input="Indigo-Summit-1187\n")
    with tls_raw(postern) as c:
        r = c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE]))
        assert r.code == 535, f"old password still accepted: {r}"
        r = c.cmd("AUTH PLAIN " + plain(ALICE, "Indigo-Summit-1187"))
        assert r.code == 235, r


def test_auth_authzid_same_user_and_case(postern):
    with tls_raw(postern) as c:
        r = c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE], authzid=ALICE))
        assert r.code == 235, f"authzid equal to the user: {r}"
    with tls_raw(postern) as c:
        r = c.cmd("AUTH PLAIN " + plain("Alice@EXAMPLE.test", PASSWORDS[ALICE]))
        assert r.code == 235, f"user name in another case: {r}"
        assert c.cmd("MAIL FROM:<alice@example.test>").code == 250


def test_ehlo_after_auth_keeps_auth(postern):
    # RFC 4954 4: a new EHLO does not reset the authentication state
    with tls_raw(postern) as c:
        assert c.cmd("AUTH PLAIN " + plain(ALICE, PASSWORDS[ALICE])).code == 235
        c.ehlo()
        r = c.cmd("MAIL FROM:<alice@example.test>")
        assert r.code == 250, r
