"""Many clients at once: every message accepted and delivered exactly once."""

import smtplib
import threading

import pytest

from helpers import PASSWORDS, make_message, queue_id_from, smtp_client

CLIENTS = 100


def run_clients(n, work):
    """Runs work(i, barrier) in n threads; returns {i: result or exception}."""
    barrier = threading.Barrier(n, timeout=60)
    results = {}

    def runner(i):
        try:
            results[i] = work(i, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = e
            try:
                barrier.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "client threads hung"
    return results


@pytest.mark.time_limit(240)
def test_100_concurrent_mx_clients(make_postern):
    p = make_postern(config={"smtp.max_connections_per_ip": "500",
                             "smtp.max_connections": "1000"})
    rcpts = ["alice@example.test", "bob@example.test"]

    def work(i, barrier):
        rcpt = rcpts[i % 2]
        msg, token = make_message(to=rcpt)
        with smtp_client(p.port(), timeout=60) as s:
            s.ehlo()
            barrier.wait()          # all 100 sessions are open at the same time
            assert s.mail("sender@remote.test")[0] == 250
            assert s.rcpt(rcpt)[0] == 250
            code, resp = s.data(msg)
            assert code == 250, resp
            return rcpt, token, queue_id_from(resp)

    results = run_clients(CLIENTS, work)
    errors = {i: r for i, r in results.items() if isinstance(r, BaseException)}
    assert not errors, f"{len(errors)} clients failed, e.g. {list(errors.items())[:3]}"
    qids = [r[2] for r in results.values()]
    assert len(set(qids)) == CLIENTS, "queue ids must be unique"
    for rcpt in rcpts:
        tokens = [r[1] for r in results.values() if r[0] == rcpt]
        msgs = p.wait_exact(rcpt, tokens, timeout=60)
        assert len(msgs) == len(tokens), f"{rcpt}: {len(msgs)} files for {len(tokens)} messages"


@pytest.mark.time_limit(240)
def test_50_concurrent_submissions_clients(make_postern):
    p = make_postern(config={"smtp.max_connections_per_ip": "500"})
    ctx = p.client_context()

    def work(i, barrier):
        msg, token = make_message(sender="alice@example.test", to="bob@example.test")
        with smtplib.SMTP_SSL("127.0.0.1", p.port("submissions"), local_hostname="client.test",
                              context=ctx, timeout=60) as s:
            s.ehlo()
            barrier.wait()
            s.login("alice@example.test", PASSWORDS["alice@example.test"])
            s.sendmail("alice@example.test", ["bob@example.test"], msg)
            return token

    results = run_clients(50, work)
    errors = {i: r for i, r in results.items() if isinstance(r, BaseException)}
    assert not errors, f"{len(errors)} clients failed, e.g. {list(errors.items())[:3]}"
    p.wait_exact("bob@example.test", list(results.values()), timeout=60)
