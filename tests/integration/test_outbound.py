"""Outbound delivery: the real daemon delivers to real SMTP peers (aiosmtpd, see
remote_mx.py) found through a real DNS server (unbound, see dnsserver.py)."""

import json
import time

import pytest

from dnsserver import DNSServer
from helpers import PASSWORDS, smtp_client
from remote_mx import RemoteMX, free_mx_port, make_test_ca

ALICE = "alice@example.test"

FAST = {  # short timeouts and retries for tests
    "queue.retry_min": "1",
    "queue.retry_max": "2",
    "outbound.command_timeout": "3",
    "outbound.connect_timeout": "3",
}


def submit(postern, rcpts, body=None, sender=ALICE, mail_options=(), rcpt_options=()):
    body = body or (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: outbound test\r\n"
                    f"\r\nHello from Postern.\r\n")
    s = smtp_client(postern.port("submission"))
    s.ehlo()
    s.starttls(context=postern.client_context())
    s.ehlo()
    s.login(ALICE, PASSWORDS[ALICE])
    s.sendmail(sender, rcpts, body, mail_options=list(mail_options),
               rcpt_options=list(rcpt_options))
    s.quit()


def queue_json(postern):
    return json.loads(postern.cli("queue", "list", "--json").stdout)


def status_json(postern, what):
    res = postern.cli("status", what, "--json", check=False)
    return json.loads(res.stdout) if res.stdout.strip() else []


def wait_for(pred, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def world(make_postern, tmp_path):
    """DNS + a peer factory + a Postern pointed at them."""
    made = []

    class World:
        def __init__(self):
            self.port = free_mx_port([f"127.0.0.{i}" for i in range(2, 12)])
            self.dns = None

        def start_dns(self, records):
            self.dns = DNSServer(records)
            self.dns.start()
            made.append(self.dns)
            return self.dns

        def peer(self, host, **kw):
            p = RemoteMX(host=host, port=self.port, **kw)
            p.start()
            made.append(p)
            return p

        def postern(self, config=None, **kw):
            cfg = dict(FAST)
            cfg.update(config or {})
            return make_postern(config=cfg, init_args=["--resolver", self.dns.address,
                                                       "--remote-port", str(self.port)],
                                hold_remote=False, **kw)

    w = World()
    yield w
    for m in reversed(made):
        m.stop()


def test_delivers_to_mx_with_starttls(world, tmp_path):
    ca, issue = make_test_ca(str(tmp_path / "ca"))
    cert, key = issue("mx1.remote.test")
    world.start_dns(["remote.test. MX 10 mx1.remote.test.", "mx1.remote.test. A 127.0.0.2"])
    peer = world.peer("127.0.0.2", starttls=(cert, key), hostname="mx1.remote.test")
    p = world.postern()
    submit(p, ["bob@remote.test"])
    [msg] = peer.wait_messages(1)
    assert msg.mail_from == ALICE
    assert msg.rcpt_tos == ["bob@remote.test"]
    assert msg.tls, "opportunistic STARTTLS was not used"
    assert b"Hello from Postern." in msg.content
    recs = wait_for(lambda: [r for r in status_json(p, "bob@remote.test")
                             if r["status"] == "delivered"], what="delivered status")
    assert "mx1.remote.test[127.0.0.2]" in recs[0]["remote_host"]
    assert recs[0]["tls"] and "TLS" in recs[0]["tls"]


MX1 = ["remote.test. MX 10 mx1.remote.test.", "mx1.remote.test. A 127.0.0.2"]


def test_retry_after_4xx_then_success(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", behaviour="tempfail_then_accept", tempfail_count=2)
    p = world.postern()
    submit(p, ["bob@remote.test"])
    [msg] = peer.wait_messages(1, timeout=30)
    assert msg.rcpt_tos == ["bob@remote.test"]
    assert len(peer.transactions) == 3, peer.transactions
    [rec] = wait_for(lambda: [r for r in status_json(p, "bob@remote.test")
                              if r["status"] == "delivered"], what="delivered")
    assert rec["attempts"] == 2, rec
    # nothing is left in the queue and no notice went to the sender
    assert queue_json(p) == []
    time.sleep(0.5)
    assert p.messages(ALICE) == []


def test_permanent_failure_bounces_once_with_a_dsn(world):
    from dsn_check import check_dsn
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", behaviour="reject")
    p = world.postern()
    submit(p, ["bob@remote.test"], mail_options=["RET=HDRS", "ENVID=env-42"],
           rcpt_options=["ORCPT=rfc822;Bob@remote.test"])
    [dsn_raw] = p.wait_messages(ALICE, 1, timeout=20)
    dsn = check_dsn(dsn_raw, {"to": ALICE, "envid": "env-42", "headers_only": True})
    [r] = dsn["rcpts"]
    assert r["Final-Recipient"].lower() == "rfc822; bob@remote.test"
    assert r["Original-Recipient"].lower() == "rfc822;bob@remote.test"
    assert r["Action"] == "failed"
    assert r["Status"] == "5.1.1"
    assert r["Remote-MTA"] == "dns; mx1.remote.test"
    assert "550" in r["Diagnostic-Code"] and "No such user" in r["Diagnostic-Code"]
    assert "outbound test" in dict(dsn["original_headers"]).get("Subject", "")
    # exactly one notice; the peer saw one attempt; status says bounced
    time.sleep(1.0)
    assert len(p.messages(ALICE)) == 1
    assert len(peer.transactions) == 1
    [rec] = status_json(p, "bob@remote.test")
    assert rec["status"] == "bounced" and rec["attempts"] == 0


def test_expiry_sends_a_dsn(world):
    from dsn_check import check_dsn
    world.start_dns(MX1)
    world.peer("127.0.0.2", behaviour="tempfail")
    p = world.postern({"queue.lifetime": "3", "queue.delay_warning": "0"})
    submit(p, ["bob@remote.test"])
    [dsn_raw] = p.wait_messages(ALICE, 1, timeout=30)
    dsn = check_dsn(dsn_raw, {"to": ALICE})
    [r] = dsn["rcpts"]
    assert r["Action"] == "failed"
    assert r["Status"].startswith("4."), r
    assert "451" in r.get("Diagnostic-Code", "")
    [rec] = status_json(p, "bob@remote.test")
    assert rec["status"] == "expired"


def test_delay_warning(world):
    from dsn_check import check_dsn
    world.start_dns(MX1)
    world.peer("127.0.0.2", behaviour="tempfail")
    p = world.postern({"queue.delay_warning": "2"})
    submit(p, ["bob@remote.test"])
    [dsn_raw] = p.wait_messages(ALICE, 1, timeout=30)
    dsn = check_dsn(dsn_raw, {"to": ALICE})
    [r] = dsn["rcpts"]
    assert r["Action"] == "delayed" and r["Status"].startswith("4.")
    assert "Will-Retry-Until" in r
    # once only, and the message stays queued
    time.sleep(3)
    assert len(p.messages(ALICE)) == 1
    [m] = queue_json(p)
    assert m["recipients"][0]["status"] == "deferred"


def test_null_sender_is_never_bounced(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", behaviour="reject")
    p = world.postern()
    res = p.cli("sendmail", "-f", "<>", "bob@remote.test",
                input="Subject: bounce me not\n\nbody\n")
    assert res.returncode == 0
    wait_for(lambda: len(peer.transactions) >= 1, what="the attempt")
    wait_for(lambda: queue_json(p) == [], what="queue empty")
    time.sleep(1.0)
    for user in (ALICE, "bob@example.test", "postmaster@example.test"):
        assert p.messages(user) == [], user
    assert "notice to" not in p.log_text()


def test_null_mx_bounces_at_once(world):
    world.start_dns(["nomail.test. MX 0 ."])
    p = world.postern()
    submit(p, ["bob@nomail.test"])
    [dsn_raw] = p.wait_messages(ALICE, 1, timeout=20)
    assert b"5.1.10" in dsn_raw
    [rec] = status_json(p, "bob@nomail.test")
    assert rec["status"] == "bounced" and "null MX" in rec["last_reply"]


def test_mx_preference_and_fallback(world):
    world.start_dns(["remote.test. MX 10 mx1.remote.test.", "remote.test. MX 20 mx2.remote.test.",
                     "remote2.test. MX 10 mx1.remote.test.",
                     "remote2.test. MX 20 mx2.remote.test.",
                     "mx1.remote.test. A 127.0.0.3", "mx2.remote.test. A 127.0.0.4"])
    # mx1 is down: nothing listens on 127.0.0.3
    peer2 = world.peer("127.0.0.4", hostname="mx2.remote.test")
    p = world.postern()
    submit(p, ["bob@remote.test"])
    peer2.wait_messages(1)
    [rec] = wait_for(lambda: [r for r in status_json(p, "bob@remote.test")
                              if r["status"] == "delivered"], what="delivered")
    assert "mx2.remote.test[127.0.0.4]" in rec["remote_host"]
    # with both up, the preferred one takes the mail (another domain with the same MX
    # hosts, so the cached connection to mx2 for remote.test plays no part)
    peer1 = world.peer("127.0.0.3", hostname="mx1.remote.test")
    submit(p, ["carol@remote2.test"])
    peer1.wait_messages(1)
    assert len(peer2.messages) == 1


def test_tls_encrypt_policy_refuses_a_peer_without_starttls(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2")  # no STARTTLS offered
    p = world.postern({"outbound.domain.remote.test": "tls=encrypt"})
    submit(p, ["bob@remote.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], what="deferred")
    assert "STARTTLS" in m["recipients"][0]["last_reply"]
    assert peer.messages == [] and peer.transactions == []


def test_tls_verify_policy(world, tmp_path):
    ca, issue = make_test_ca(str(tmp_path / "ca"))
    good = issue("mx1.remote.test")
    bad = issue("wrong.example.net")
    world.start_dns(MX1 + ["other.test. MX 10 mx2.other.test.", "mx2.other.test. A 127.0.0.5"])
    peer_ok = world.peer("127.0.0.2", starttls=good, hostname="mx1.remote.test")
    peer_bad = world.peer("127.0.0.5", starttls=bad, hostname="mx2.other.test")
    p = world.postern({"outbound.tls": "verify", "outbound.tls_ca_file": ca})
    submit(p, ["bob@remote.test", "dave@other.test"])
    [msg] = peer_ok.wait_messages(1)
    assert msg.tls
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if any(r["status"] == "deferred" for r in m["recipients"])],
                   what="deferred")
    [r] = [r for r in m["recipients"] if r["address"] == "dave@other.test"]
    assert "certificate" in r["last_reply"], r
    assert peer_bad.messages == []


def test_smtputf8_message_to_a_peer_without_smtputf8_bounces(world):
    world.start_dns(["xn--bcher-kva.test. MX 10 mx1.remote.test.", "remote.test. MX 10 mx1.remote.test.",
                     "mx1.remote.test. A 127.0.0.2"])
    peer = world.peer("127.0.0.2", ehlo_drop=("SMTPUTF8",))
    p = world.postern()
    body = "From: alice@example.test\r\nSubject: utf8\r\n\r\nhi\r\n".encode()
    submit(p, ["jürgen@remote.test"], body=body, mail_options=["SMTPUTF8"])
    [dsn_raw] = p.wait_messages(ALICE, 1, timeout=20)
    assert b"5.6.7" in dsn_raw
    assert peer.messages == []


def test_concurrency_limit_per_domain(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", delay=0.3)
    p = world.postern({"outbound.domain.remote.test": "concurrency=2"})
    for i in range(8):
        submit(p, [f"user{i}@remote.test"])
    peer.wait_messages(8, timeout=60)
    assert peer.max_concurrent <= 2, peer.max_concurrent
    assert peer.max_concurrent >= 1


def test_rate_limit_per_domain(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2")
    p = world.postern({"outbound.domain.remote.test": "rate=60"})  # one a second
    for i in range(4):
        submit(p, [f"user{i}@remote.test"])
    msgs = peer.wait_messages(4, timeout=30)
    times = sorted(m.time for m in msgs)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.8 for g in gaps), gaps


def test_several_messages_share_one_connection(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2")
    p = world.postern({"outbound.domain.remote.test": "concurrency=1"})
    s = smtp_client(p.port("submission"))
    s.ehlo()
    s.starttls(context=p.client_context())
    s.ehlo()
    s.login(ALICE, PASSWORDS[ALICE])
    for i in range(5):
        s.sendmail(ALICE, [f"u{i}@remote.test", f"v{i}@remote.test"],
                   f"Subject: m{i}\r\n\r\nbody {i}\r\n")
    s.quit()
    msgs = peer.wait_messages(5, timeout=30)
    assert all(len(m.rcpt_tos) == 2 for m in msgs)   # several recipients per transaction
    assert peer.connections < 5, peer.connections


def test_queue_admin_hold_release_retry_delete(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", behaviour="tempfail")
    p = world.postern({"queue.retry_min": "1h", "queue.retry_max": "2h"})
    submit(p, ["bob@remote.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], what="deferred")
    for key in ("id", "sender", "size", "queued_at", "recipients"):
        assert key in m
    r = m["recipients"][0]
    for key in ("address", "status", "attempts", "last_reply", "next_attempt"):
        assert key in r
    assert r["attempts"] == 1 and r["next_attempt"] and "451" in r["last_reply"]
    qid = m["id"]
    p.cli("queue", "hold", qid)
    assert queue_json(p)[0]["recipients"][0]["status"] == "held"
    peer.behaviour = "accept"
    p.cli("queue", "retry", qid)      # held: nothing happens
    time.sleep(1.5)
    assert peer.messages == []
    p.cli("queue", "release", qid)    # release makes it due
    peer.wait_messages(1, timeout=20)
    wait_for(lambda: queue_json(p) == [], what="queue empty")
    # retry all, delete, unknown ids
    peer.behaviour = "tempfail"
    submit(p, ["carol@remote.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], what="deferred")
    assert p.cli("queue", "retry", "0123456789ABCDEF", check=False).returncode != 0
    p.cli("queue", "delete", m["id"])
    assert queue_json(p) == []
    assert p.cli("queue", "delete", m["id"], check=False).returncode != 0
    assert p.messages(ALICE) == []    # deleting is not bouncing


def test_restart_keeps_the_schedule_and_delivers(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", behaviour="tempfail")
    p = world.postern({"queue.retry_min": "1h", "queue.retry_max": "2h"})
    submit(p, ["bob@remote.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], what="deferred")
    before = m["recipients"][0]["next_attempt"]
    p.stop()
    p.start()
    [m2] = queue_json(p)
    assert m2["id"] == m["id"]
    assert m2["recipients"][0]["next_attempt"] == before
    assert m2["recipients"][0]["attempts"] == 1
    peer.behaviour = "accept"
    p.cli("queue", "retry", "all")
    peer.wait_messages(1, timeout=20)


def test_kill9_during_delivery_delivers_once(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", delay=1.0)
    p = world.postern()
    submit(p, ["bob@remote.test"])
    wait_for(lambda: peer.connections >= 1, what="a connection")
    time.sleep(0.5)
    p.kill9()
    p.start()
    msgs = peer.wait_messages(1, timeout=40)
    assert len(msgs) >= 1   # at least once; a kill after the peer's 250 may repeat it
    recs = wait_for(lambda: [r for r in status_json(p, "bob@remote.test")
                             if r["status"] == "delivered"], timeout=40, what="delivered")
    assert len(recs) == 1
    wait_for(lambda: queue_json(p) == [], what="queue empty")


def test_notify_success_and_dsn_parameters_passed_on(world):
    from dsn_check import check_dsn
    world.start_dns(MX1 + ["nodsn.test. MX 10 mx2.nodsn.test.", "mx2.nodsn.test. A 127.0.0.6"])
    peer = world.peer("127.0.0.2")
    plain = world.peer("127.0.0.6", ehlo_drop=("DSN",), hostname="mx2.nodsn.test")
    p = world.postern()
    submit(p, ["bob@remote.test"], mail_options=["RET=FULL", "ENVID=abc"],
           rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob@remote.test"])
    [msg] = peer.wait_messages(1)
    assert "RET=FULL" in msg.mail_options and "ENVID=abc" in msg.mail_options
    assert "NOTIFY=SUCCESS,FAILURE" in msg.rcpt_options
    assert any(o.upper().startswith("ORCPT=RFC822;") for o in msg.rcpt_options)
    # the peer took the DSN request: no success notice from us
    submit(p, ["eve@nodsn.test"], rcpt_options=["NOTIFY=SUCCESS"])
    plain.wait_messages(1)
    [dsn_raw] = p.wait_messages(ALICE, 1, timeout=20)
    dsn = check_dsn(dsn_raw, {"to": ALICE})
    [r] = dsn["rcpts"]
    assert r["Action"] == "relayed" and r["Final-Recipient"].endswith("eve@nodsn.test")
    time.sleep(1)
    assert len(p.messages(ALICE)) == 1


def test_postern_to_postern_end_to_end(world, make_postern):
    # the receiving Postern: domain other.test, its MX listener is the sender's remote port
    rx = make_postern(users=(), start=False, hold_remote=False)
    rx.cli("domain", "add", "other.test")
    rx.add_user("zed@other.test")
    rx.start()
    world.start_dns(["other.test. MX 10 mx.other.test.", "mx.other.test. A 127.0.0.1"])
    world.port = rx.port("smtp")
    p = world.postern()
    big = "x" * 70 + "\r\n"
    body = "Subject: p2p\r\n\r\n" + big * 3000 + ".leading dot\r\nend\r\n"
    submit(p, ["zed@other.test"], body=body)
    [got] = rx.wait_messages("zed@other.test", 1, timeout=30)
    assert b"\n.leading dot\n" in got.replace(b"\r\n", b"\n")
    assert got.replace(b"\r\n", b"\n").count(b"x" * 70) == 3000
    assert b"Received: from mail.example.test" in got or b"Received:" in got
    [rec] = wait_for(lambda: [r for r in status_json(p, "zed@other.test")
                              if r["status"] == "delivered"], what="delivered")
    assert rec["tls"], rec   # the two Posterns spoke TLS


def test_sender_rate_limit(world):
    world.start_dns(["a.test. MX 10 mx1.remote.test.", "b.test. MX 10 mx1.remote.test.",
                     "c.test. MX 10 mx1.remote.test.", "mx1.remote.test. A 127.0.0.2"])
    peer = world.peer("127.0.0.2")
    p = world.postern({"outbound.sender_rate": "60"})   # one message a second per sender
    for dom in ("a.test", "b.test", "c.test"):
        submit(p, [f"x@{dom}"])
    msgs = peer.wait_messages(3, timeout=30)
    times = sorted(m.time for m in msgs)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.8 for g in gaps), gaps


def test_smarthost_with_auth_over_tls(make_postern, tmp_path):
    # the smarthost is a second Postern: submission with STARTTLS and AUTH
    relay = make_postern(users=("alice@example.test",), start=False, hold_remote=False)
    relay.cli("domain", "add", "other.test")
    relay.add_user("zed@other.test")
    relay.start()
    secret = tmp_path / "smarthost.secret"
    secret.write_text(PASSWORDS[ALICE] + "\n")
    p = make_postern(config={"outbound.smarthost_user": ALICE,
                             "outbound.smarthost_password_file": str(secret),
                             "outbound.command_timeout": "5"},
                     init_args=["--smarthost", f"127.0.0.1:{relay.port('submission')}"],
                     hold_remote=False)
    submit(p, ["zed@other.test"])
    [got] = relay.wait_messages("zed@other.test", 1, timeout=20)
    assert b"Hello from Postern." in got
    [rec] = wait_for(lambda: [r for r in status_json(p, "zed@other.test")
                              if r["status"] == "delivered"], what="delivered")
    assert rec["tls"], rec
    assert f"[127.0.0.1]" in rec["remote_host"]
    # a wrong password is a temporary failure, never a bounce, and is not retried in a loop
    secret.write_text("wrong-password\n")
    p.restart()
    submit(p, ["zed@other.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], what="deferred")
    assert "authentication" in m["recipients"][0]["last_reply"], m


def test_hanging_peer_times_out_and_is_retried(world):
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", behaviour="hang")
    p = world.postern()   # outbound.command_timeout = 3
    t0 = time.time()
    submit(p, ["bob@remote.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], timeout=20,
                   what="deferred")
    assert time.time() - t0 < 15
    assert "timeout" in m["recipients"][0]["last_reply"], m
    # the peer comes back to its senses: the retry delivers
    peer.behaviour = "accept"
    p.cli("queue", "retry", "all")
    peer.wait_messages(1, timeout=20)


def test_peer_closing_at_once_falls_back_to_next_mx(world):
    world.start_dns(["remote.test. MX 10 mx1.remote.test.", "remote.test. MX 20 mx2.remote.test.",
                     "mx1.remote.test. A 127.0.0.3", "mx2.remote.test. A 127.0.0.4"])
    bad = world.peer("127.0.0.3", behaviour="close")
    good = world.peer("127.0.0.4", hostname="mx2.remote.test")
    p = world.postern()
    submit(p, ["bob@remote.test"])
    good.wait_messages(1)
    assert bad.connections >= 1


def test_may_policy_falls_back_to_plaintext_when_the_handshake_fails(world, tmp_path):
    import ssl
    ca, issue = make_test_ca(str(tmp_path / "ca"))
    world.start_dns(MX1)
    peer = world.peer("127.0.0.2", starttls=issue("mx1.remote.test"))
    # the peer only speaks TLS 1.1, which Postern refuses: the handshake fails
    peer._tls_context.minimum_version = ssl.TLSVersion.TLSv1
    peer._tls_context.maximum_version = ssl.TLSVersion.TLSv1_1
    p = world.postern()
    submit(p, ["bob@remote.test"])
    [msg] = peer.wait_messages(1, timeout=20)
    assert not msg.tls
    assert peer.connections == 2, peer.connections
    [rec] = wait_for(lambda: [r for r in status_json(p, "bob@remote.test")
                              if r["status"] == "delivered"], what="delivered")
    assert not rec["tls"], rec
    # with encrypt, the same peer is not good enough
    p2 = world.postern({"outbound.tls": "encrypt"})
    submit(p2, ["carol@remote.test"])
    [m] = wait_for(lambda: [m for m in queue_json(p2)
                            if m["recipients"][0]["status"] == "deferred"], what="deferred")
    assert "TLS" in m["recipients"][0]["last_reply"]
    assert len(peer.messages) == 1


def test_dnssec_validation_when_a_trust_anchor_is_configured(world, tmp_path):
    # The test zones are unsigned: with the root's trust anchor, libunbound finds no
    # signatures where the anchor says there must be some, so every answer is bogus
    # and delivery is deferred, never sent to an unauthenticated address.
    anchor = tmp_path / "root.key"
    anchor.write_text(". IN DS 20326 8 2 "
                      "E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n")
    # (not under .test: libunbound treats its RFC 6761 zones as insecure)
    world.start_dns(["remote.example. MX 10 mx1.remote.example.",
                     "mx1.remote.example. A 127.0.0.2"])
    peer = world.peer("127.0.0.2")
    p = world.postern({"outbound.dnssec_trust_anchor": str(anchor)})
    submit(p, ["bob@remote.example"])
    [m] = wait_for(lambda: [m for m in queue_json(p)
                            if m["recipients"][0]["status"] == "deferred"], timeout=40,
                   what="deferred")
    assert "4.4.3" in m["recipients"][0]["last_reply"], m
    assert peer.connections == 0
    # without the anchor the same zone is used as the resolver gives it
    p2 = world.postern()
    submit(p2, ["bob@remote.example"])
    peer.wait_messages(1)
