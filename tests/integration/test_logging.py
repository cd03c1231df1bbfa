"""The log: one line per event, with the queue id on every line about a message."""

import base64
import re
import time

from helpers import PASSWORDS, RawSMTP, dot_stuff, make_message, queue_id_from


def test_log_lines_for_a_message(postern):
    msg, token = make_message()
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        assert c.cmd("RCPT TO:<nobody@example.test>").code == 550
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(msg) + b".\r\n")
        qid = queue_id_from(c.reply().text)
    postern.wait_exact("alice@example.test", [token])
    time.sleep(0.5)
    log = postern.log_text()
    lines = log.splitlines()
    about = [l for l in lines if qid in l]
    assert any(re.search(r"queued|committed", l, re.I) for l in about), \
        f"no 'queued' line with {qid}:\n" + "\n".join(about)
    assert any(re.search(r"deliver", l, re.I) and "alice@example.test" in l for l in about), \
        f"no 'delivered' line with {qid}:\n" + "\n".join(about)
    assert any("5.1.1" in l for l in lines), "the rejected RCPT is not logged with its reply"
    assert any("connect" in l and "127.0.0.1" in l for l in lines), "no connect line"


def test_log_auth_events(postern):
    ctx = postern.client_context()
    with RawSMTP(postern.port("submission")) as c:
        c.reply()
        c.ehlo()
        c.starttls(ctx)
        c.ehlo()
        bad = base64.b64encode(b"\0alice@example.test\0wrong-password-1").decode()
        assert c.cmd("AUTH PLAIN " + bad).code == 535
        good = base64.b64encode(
            b"\0alice@example.test\0" + PASSWORDS["alice@example.test"].encode()).decode()
        assert c.cmd("AUTH PLAIN " + good).code == 235
    time.sleep(0.5)
    lines = postern.log_text().splitlines()
    assert any(re.search(r"TLSv1\.[23]", l) for l in lines), "no TLS line"
    assert any(re.search(r"auth", l, re.I) and re.search(r"fail", l, re.I)
               and "alice@example.test" in l for l in lines), "auth failure not logged"
    assert any(re.search(r"auth", l, re.I) and re.search(r"ok|success", l, re.I)
               and "alice@example.test" in l for l in lines), "auth success not logged"
    assert not any("wrong-password-1" in l or PASSWORDS["alice@example.test"] in l
                   for l in lines), "a password was written to the log"
