"""Address handling: case, plus-addressing, aliases, catch-all, SMTPUTF8."""

import os
import time

import pytest

from helpers import RawSMTP, dot_stuff, make_message, headers_named


def deliver(p, rcpts, sender="sender@remote.test", mail_params="", message=None):
    """One transaction on MX with raw commands; returns (rcpt replies, final reply, token)."""
    if message is None:
        message, token = make_message(sender=sender)
    else:
        token = None
    with RawSMTP(p.port()) as c:
        assert c.reply().code == 220
        c.ehlo()
        r = c.cmd(f"MAIL FROM:<{sender}>{mail_params}")
        assert r.code == 250, r
        replies = [c.cmd(f"RCPT TO:<{rcpt}>") for rcpt in rcpts]
        if not any(r.code == 250 for r in replies):
            return replies, None, token
        assert c.cmd("DATA").code == 354
        c.send(dot_stuff(message) + b".\r\n")
        final = c.reply()
    return replies, final, token


@pytest.mark.parametrize("rcpt", ["ALICE@EXAMPLE.TEST", "Alice@Example.Test",
                                  "alice@EXAMPLE.test", "aLiCe@example.TEST"])
def test_case_insensitive(postern, rcpt):
    replies, final, token = deliver(postern, [rcpt])
    assert replies[0].code == 250, replies
    assert final.code == 250, final
    postern.wait_exact("alice@example.test", [token])


@pytest.mark.parametrize("rcpt", ["alice+news@example.test",
                                  "ALICE+Tag@Example.Test", "alice+a+b@example.test"])
def test_plus_addressing(postern, rcpt):
    replies, final, token = deliver(postern, [rcpt])
    assert replies[0].code == 250, replies
    assert final.code == 250, final
    postern.wait_exact("alice@example.test", [token])
    assert not os.path.exists(postern.maildir(rcpt)), "plus address got its own Maildir"


def test_plus_addressing_unknown_user(postern):
    replies, final, _ = deliver(postern, ["nobody+tag@example.test"])
    assert replies[0].code == 550 and "5.1.1" in replies[0].text, replies


def test_unknown_domain_is_relay(postern):
    replies, _, _ = deliver(postern, ["alice@other.test"])
    assert replies[0].code // 100 == 5 and "5.7.1" in replies[0].text, replies


def test_alias_one_to_many(postern):
    postern.cli("alias", "add", "team@example.test", "alice@example.test,bob@example.test")
    replies, final, token = deliver(postern, ["team@example.test"])
    assert replies[0].code == 250, replies
    assert final.code == 250, final
    postern.wait_exact("alice@example.test", [token])
    postern.wait_exact("bob@example.test", [token])
    assert not os.path.exists(postern.maildir("team@example.test"))


def test_alias_case_and_plus(postern):
    postern.cli("alias", "add", "team@example.test", "alice@example.test,bob@example.test")
    replies, final, token = deliver(postern, ["TEAM+x@Example.Test"])
    assert replies[0].code == 250, replies
    postern.wait_exact("alice@example.test", [token])
    postern.wait_exact("bob@example.test", [token])


def test_alias_and_member_in_one_transaction(postern):
    # alice gets the message once even when named directly and through an alias
    postern.cli("alias", "add", "team@example.test", "alice@example.test,bob@example.test")
    replies, final, token = deliver(postern, ["team@example.test", "alice@example.test"])
    assert [r.code for r in replies] == [250, 250], replies
    assert final.code == 250
    postern.wait_exact("bob@example.test", [token])
    postern.wait_exact("alice@example.test", [token])


def test_catch_all(postern):
    postern.cli("alias", "add", "@example.test", "alice@example.test")
    replies, final, token = deliver(postern, ["anything-at-all@example.test"])
    assert replies[0].code == 250, replies
    assert final.code == 250
    postern.wait_exact("alice@example.test", [token])
    # a real user keeps getting their own mail, not the catch-all target
    replies, final, token2 = deliver(postern, ["bob@example.test"])
    assert final.code == 250
    postern.wait_exact("bob@example.test", [token2])
    time.sleep(0.5)
    assert not any(token2.encode() in m for m in postern.messages("alice@example.test"))


def test_alias_removed(postern):
    postern.cli("alias", "add", "team@example.test", "alice@example.test")
    postern.cli("alias", "del", "team@example.test")
    replies, _, _ = deliver(postern, ["team@example.test"])
    assert replies[0].code == 550 and "5.1.1" in replies[0].text, replies


def test_user_added_while_running(postern):
    replies, _, _ = deliver(postern, ["carol@example.test"])
    assert replies[0].code == 550, replies
    postern.add_user("carol@example.test", "Velvet-Canyon-3318")
    replies, final, token = deliver(postern, ["carol@example.test"])
    assert replies[0].code == 250, replies
    postern.wait_exact("carol@example.test", [token])


def test_domain_added_while_running(postern):
    postern.cli("domain", "add", "second.test")
    postern.add_user("dave@second.test", "Amber-Falcon-6604")
    replies, final, token = deliver(postern, ["Dave@SECOND.test"])
    assert replies[0].code == 250, replies
    postern.wait_exact("dave@second.test", [token])


def test_utf8_local_part_with_smtputf8(postern):
    user = "δοκιμή@example.test"
    postern.add_user(user, "Silver-Meadow-2275")
    msg = ("From: <sender@remote.test>\r\nTo: <δοκιμή@example.test>\r\n"
           "Subject: ünïcödé\r\nMessage-ID: <utf8-1@client.test>\r\n\r\nΓειά σου\r\n").encode()
    replies, final, _ = deliver(postern, [user], mail_params=" SMTPUTF8 BODY=8BITMIME",
                                message=msg)
    assert replies[0].code == 250, replies
    assert final.code == 250, final
    [m] = postern.wait_exact(user, ["utf8-1@client.test"])
    assert "Γειά σου".encode() in m
    assert [v for v in headers_named(m, "Delivered-To")] == [user]


def test_utf8_sender_with_smtputf8(postern):
    msg, token = make_message(sender="jörg@remote.test")
    replies, final, _ = deliver(postern, ["alice@example.test"], sender="jörg@remote.test",
                                mail_params=" SMTPUTF8", message=msg)
    assert replies[0].code == 250, replies
    assert final.code == 250, final
    [m] = postern.wait_exact("alice@example.test", [token])
    assert headers_named(m, "Return-Path") == ["<jörg@remote.test>"]


def test_utf8_address_without_smtputf8_refused(postern):
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        r = c.cmd("MAIL FROM:<jörg@remote.test>")
        assert r.code // 100 == 5, f"UTF-8 MAIL FROM without SMTPUTF8: {r}"
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<δοκιμή@example.test>")
        assert r.code // 100 == 5, f"UTF-8 RCPT without SMTPUTF8: {r}"


def test_invalid_utf8_refused(postern):
    with RawSMTP(postern.port()) as c:
        c.check_enhanced = False
        c.reply()
        c.ehlo()
        r = c.cmd(b"MAIL FROM:<j\xc3\x28rg@remote.test> SMTPUTF8")
        assert r.code // 100 == 5, f"invalid UTF-8 address: {r}"
        assert c.cmd("NOOP").code == 250


def test_local_part_and_domain_limits(postern):
    with RawSMTP(postern.port()) as c:
        c.check_enhanced = False
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<" + "a" * 65 + "@example.test>")
        assert r.code // 100 == 5, r
        r = c.cmd("RCPT TO:<a@" + ("b" * 63 + ".") * 4 + "test>")
        assert r.code // 100 == 5, r
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250


def test_duplicate_recipient_delivered_once(postern):
    replies, final, token = deliver(postern, ["alice@example.test", "ALICE@example.test",
                                              "alice+x@example.test"])
    assert [r.code for r in replies] == [250, 250, 250], replies
    assert final.code == 250
    postern.wait_exact("alice@example.test", [token])


def test_alias_to_remote_is_forwarded(postern):
    # forwarding through a local alias is not relaying: accepted and queued
    postern.cli("alias", "add", "fwd@example.test", "friend@remote.test,alice@example.test")
    replies, final, token = deliver(postern, ["fwd@example.test"])
    assert replies[0].code == 250, replies
    assert final.code == 250, final
    postern.wait_exact("alice@example.test", [token])
    assert postern.queue_ids(), "the remote alias target is not in the queue"


def test_nested_alias(postern):
    postern.cli("alias", "add", "outer@example.test", "inner@example.test")
    postern.cli("alias", "add", "inner@example.test", "alice@example.test")
    replies, final, token = deliver(postern, ["outer@example.test"])
    assert replies[0].code == 250, replies
    postern.wait_exact("alice@example.test", [token])


def test_alias_loop_does_not_hang(postern):
    postern.cli("alias", "add", "loop1@example.test", "loop2@example.test")
    postern.cli("alias", "add", "loop2@example.test", "loop1@example.test")
    with RawSMTP(postern.port()) as c:
        c.reply()
        c.ehlo()
        assert c.cmd("MAIL FROM:<sender@remote.test>").code == 250
        r = c.cmd("RCPT TO:<loop1@example.test>")
        assert r.code // 100 in (4, 5), f"alias loop: {r}"
        assert c.cmd("RCPT TO:<alice@example.test>").code == 250
