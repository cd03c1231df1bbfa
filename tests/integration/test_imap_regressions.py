"""IMAP regressions found in protocol review, one test per finding, against the real daemon
over IMAPS with a raw socket client (test_imap.Raw): QRESYNC VANISHED with "*" above the
highest UID (RFC 7162 3.2.6), BINARY errors before any output (RFC 3516 / RFC 9051 7.5.2),
a selected mailbox deleted under the session, long [MODIFIED] sets and UNCHANGEDSINCE 0
(RFC 7162 3.1.3), UID 4294967295 versus "*", a message that starts with its empty line,
IDLE ended by a bad line, untagged FLAGS for new keywords (RFC 9051 7.3.5), and LIST/LSUB
of a parent that exists only through a subscribed child (RFC 5258 3.5, RFC 3501 6.3.9).
"""

import re
import time

import pytest

from test_imap import Raw

pytestmark = pytest.mark.time_limit(60)


def append(r, box, msg, flags=""):
    if isinstance(msg, str):
        msg = msg.encode()
    r.n += 1
    tag = f"a{r.n}"
    fl = f"({flags}) " if flags else ""
    r.send(f"{tag} APPEND {box} {fl}{{{len(msg)}+}}\r\n".encode() + msg + b"\r\n")
    u, t, _ = r.collect(tag)
    assert b" OK " in t, t
    return t


def session(p, box=None, n=0, user="alice@example.test", create=True):
    r = Raw(p)
    r.login(user)
    if box is not None:
        if create:
            r.cmd(f"CREATE {box}")
        for i in range(n):
            append(r, box, f"Subject: m{i}\r\n\r\nbody {i}\r\n")
    return r


def ok_line(t):
    assert re.match(rb"^\S+ OK", t), t


def test_qresync_uid_fetch_vanished_star_above_last_uid(postern):
    """UIDs expunged above the current last UID are reported for "1:*" (finding 1)."""
    a = session(postern, "Q1", 5)
    a.cmd("ENABLE QRESYNC")
    u, t, _ = a.cmd("SELECT Q1")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(u)).group(1))
    b = session(postern)
    b.cmd("SELECT Q1")
    b.cmd("STORE 4:5 +FLAGS.SILENT (\\Deleted)")
    b.cmd("EXPUNGE")
    a.cmd("UNSELECT")
    a.cmd("SELECT Q1")
    u, t, _ = a.cmd(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    ok_line(t)
    assert b"* VANISHED (EARLIER) 4:5" in u, u
    # an explicit range with a number above the last UID too
    u, t, _ = a.cmd(f"UID FETCH 2:5 (FLAGS) (CHANGEDSINCE {hms} VANISHED)")
    assert b"* VANISHED (EARLIER) 4:5" in u, u
    a.close()
    b.close()


def test_qresync_select_known_uids_star_reports_vanished(postern):
    """SELECT (QRESYNC (uv modseq 1:*)) reports what was expunged since: the known-uids
    "1:*" is resolved before it filters VANISHED (EARLIER) (RFC 7162 3.2.5.2)."""
    a = session(postern, "Q2", 5)
    a.cmd("ENABLE QRESYNC")
    u, t, _ = a.cmd("SELECT Q2")
    j = b"\n".join(u)
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", j).group(1))
    uv = int(re.search(rb"UIDVALIDITY (\d+)", j).group(1))
    a.cmd("UNSELECT")
    b = session(postern)
    b.cmd("SELECT Q2")
    b.cmd("STORE 2,4:5 +FLAGS.SILENT (\\Deleted)")
    u, t, _ = b.cmd("EXPUNGE")
    ok_line(t)
    b.close()
    u, t, _ = a.cmd(f"SELECT Q2 (QRESYNC ({uv} {hms} 1:*))")
    ok_line(t)
    assert b"* VANISHED (EARLIER) 2,4:5" in u, u
    # the explicit form agrees
    a.cmd("UNSELECT")
    u, t, _ = a.cmd(f"SELECT Q2 (QRESYNC ({uv} {hms} 1:5))")
    assert b"* VANISHED (EARLIER) 2,4:5" in u, u
    a.close()


MP_UUENCODE = (
    "From: a@b\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
    "--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    "--XX\r\nContent-Type: application/octet-stream\r\n"
    "Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 f\r\n#86)C\r\n`\r\nend\r\n"
    "--XX\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
    "--YY\r\nContent-Type: text/plain\r\n\r\ninner\r\n--YY--\r\n"
    "--XX--\r\n")


def test_binary_errors_come_before_any_output(postern):
    """UNKNOWN-CTE and BINARY of a multipart part: a tagged NO and no half-written FETCH;
    a part that does not exist is empty data; the session goes on (finding 2)."""
    r = session(postern, "Bin")
    append(r, "Bin", "Subject: plain\r\n\r\nfirst\r\n")
    append(r, "Bin", MP_UUENCODE)
    r.cmd("SELECT Bin")
    for item in ("BINARY.PEEK[2]", "BINARY.PEEK[3]", "BINARY.SIZE[2]"):
        u, t, _ = r.cmd(f"FETCH 2 (UID {item})")
        assert re.match(rb"^\S+ NO \[UNKNOWN-CTE\]", t), (item, t)
        assert not any(l.startswith(b"* 2 FETCH") for l in u), (item, u)
    # earlier messages of the set are complete; the bad one is not started
    u, t, _ = r.cmd("FETCH 1:2 (BINARY.PEEK[1] BINARY.PEEK[2])")
    assert re.match(rb"^\S+ NO \[UNKNOWN-CTE\]", t), t
    assert len(u) == 1 and u[0].startswith(b"* 1 FETCH (BINARY[1] {7}\r\nfirst\r\n"), u
    assert u[0].endswith(b")"), u
    u, t, _ = r.cmd("FETCH 2 (BINARY.PEEK[1] BINARY.PEEK[9] BINARY.SIZE[9])")
    ok_line(t)
    assert b"BINARY[1] {5}\r\nhello " in u[0], u
    assert b"BINARY[9] {0}\r\n" in u[0] or b'BINARY[9] ""' in u[0], u
    assert b"BINARY.SIZE[9] 0" in u[0], u
    u, t, _ = r.cmd("NOOP")
    ok_line(t)
    r.close()


def test_selected_mailbox_deleted_by_other_session_says_bye(postern):
    """A session whose selected mailbox was deleted says BYE and closes (finding 3)."""
    a = session(postern, "Del2", 2)
    b = session(postern)
    b.cmd("SELECT Del2")
    a.cmd("DELETE Del2")
    b.n += 1
    b.send(f"t{b.n} NOOP\r\n")
    lines = []
    try:
        while True:
            lines.append(b.line())
    except (EOFError, ConnectionError, OSError):
        pass
    assert any(l.startswith(b"* BYE Selected mailbox was deleted") for l in lines), lines
    a.close()
    b.close()


def modified_set(p, n):
    """STORE (UNCHANGEDSINCE) on 1:n where another session changed every odd message:
    returns (expected set text, tagged line)."""
    a = session(p, "Mod")
    a.cmd("SELECT Mod")
    for i in range(n):
        append(a, "Mod", f"Subject: {i}\r\n\r\nx\r\n")
    u, t, _ = a.cmd("SELECT Mod (CONDSTORE)")
    hms = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(u)).group(1))
    b = session(p)
    b.cmd("SELECT Mod")
    odd = list(range(1, n + 1, 2))
    b.cmd("STORE %s +FLAGS.SILENT (\\Answered)" % ",".join(map(str, odd)))
    u, t, _ = a.cmd(f"STORE 1:* (UNCHANGEDSINCE {hms}) +FLAGS.SILENT (\\Draft)")
    a.close()
    b.close()
    return ",".join(map(str, odd)).encode(), t


def test_modified_set_longer_than_400_bytes(postern):
    """[MODIFIED set] is not dropped when the set text is over 400 bytes (finding 4)."""
    want, t = modified_set(postern, 260)
    assert len(want) > 400
    m = re.match(rb"^\S+ OK \[MODIFIED ([0-9,:]+)\]", t)
    assert m and m.group(1) == want, t


def test_modified_set_longer_than_the_tagged_text_buffer(postern):
    want, t = modified_set(postern, 400)
    assert len(want) > 600
    m = re.match(rb"^\S+ OK \[MODIFIED ([0-9,:]+)\]", t)
    assert m and m.group(1) == want, t


def test_unchangedsince_zero_always_fails(postern):
    """RFC 7162 3.1.3: UNCHANGEDSINCE 0 always fails for flags (finding 5)."""
    r = session(postern, "U0", 2)
    r.cmd("SELECT U0")
    u, t, _ = r.cmd("STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS (\\Flagged)")
    assert re.match(rb"^\S+ OK \[MODIFIED 1:2\]", t), t
    assert not any(b"Flagged" in l for l in u), u
    u, t, _ = r.cmd("FETCH 1:2 (FLAGS)")
    assert not any(b"Flagged" in l for l in u), u
    u, t, _ = r.cmd("UID STORE 1:* (UNCHANGEDSINCE 0) FLAGS (\\Seen)")
    assert re.match(rb"^\S+ OK \[MODIFIED 1:2\]", t), t
    r.close()


def test_uid_4294967295_is_a_number_not_star(postern):
    """UID 4294967295 means that UID, not the last message (finding 6)."""
    r = session(postern, "Big", 3)
    r.cmd("SELECT Big")
    u, t, _ = r.cmd("UID FETCH 4294967295 (FLAGS)")
    ok_line(t)
    assert u == [], u
    u, t, _ = r.cmd("UID STORE 4294967295 +FLAGS (\\Flagged)")
    ok_line(t)
    assert u == [], u
    u, t, _ = r.cmd("UID SEARCH UID 4294967295")
    assert u == [b"* SEARCH"], u
    u, t, _ = r.cmd("UID FETCH * (FLAGS)")
    assert len(u) == 1 and u[0].startswith(b"* 3 FETCH"), u
    u, t, _ = r.cmd("UID FETCH 4294967295:* (FLAGS)")
    assert len(u) == 1 and u[0].startswith(b"* 3 FETCH"), u
    r.close()


def test_message_starting_with_empty_line(postern):
    """No header fields: BODY[HEADER] is the empty line, BODY[TEXT] the rest (finding 8)."""
    r = session(postern, "Empty")
    msg = b"\r\n\r\nonlybody\r\n"
    append(r, "Empty", msg)
    r.cmd("SELECT Empty")
    u, t, lits = r.cmd("FETCH 1 (RFC822.SIZE BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[])")
    ok_line(t)
    assert b"RFC822.SIZE 14" in u[0], u
    assert lits == [b"\r\n", b"\r\nonlybody\r\n", msg], lits
    u, t, lits = r.cmd("FETCH 1 (BODY.PEEK[TEXT] BODY.PEEK[HEADER])")
    assert lits == [b"\r\nonlybody\r\n", b"\r\n"], lits
    r.close()


def test_idle_bad_line_while_sync_runs_is_bad(postern):
    """A bad line ends IDLE with BAD, also when a sync job is running (finding 9)."""
    for _ in range(5):
        r = session(postern, "Idle", 1) if _ == 0 else session(postern)
        r.cmd("SELECT Idle")
        r.send("i1 IDLE\r\n")
        assert r.line().startswith(b"+")
        # the line comes right behind "+": the first sync is usually still running
        r.send("NOTDONE\r\n")
        u, t, _ = r.collect("i1")
        assert re.match(rb"^i1 BAD", t), t
        r.close()


def test_new_keyword_announces_flags(postern):
    """A STORE that adds a keyword new to the mailbox sends FLAGS and PERMANENTFLAGS
    before the FETCH, in this session and in another one (finding 10)."""
    a = session(postern, "Kw", 2)
    a.cmd("SELECT Kw")
    b = session(postern)
    b.cmd("SELECT Kw")
    u, t, _ = a.cmd("STORE 1 +FLAGS ($Important)")
    ok_line(t)
    iflags = [i for i, l in enumerate(u) if l.startswith(b"* FLAGS (")]
    iperm = [i for i, l in enumerate(u) if l.startswith(b"* OK [PERMANENTFLAGS (")]
    ifetch = [i for i, l in enumerate(u) if l.startswith(b"* 1 FETCH")]
    assert iflags and iperm and ifetch, u
    assert iflags[0] < ifetch[0] and iperm[0] < ifetch[0], u
    assert b"$Important" in u[iflags[0]] and b"$Important" in u[iperm[0]], u
    assert b"\\*" in u[iperm[0]], u
    # an existing keyword again: no new FLAGS
    u, t, _ = a.cmd("STORE 2 +FLAGS ($Important)")
    assert not any(l.startswith(b"* FLAGS") for l in u), u
    # .SILENT still announces
    u, t, _ = a.cmd("STORE 2 +FLAGS.SILENT (Later)")
    assert any(l.startswith(b"* FLAGS (") and b"Later" in l for l in u), u
    # the other session learns both on its next command, before the FETCHes
    u, t, _ = b.cmd("NOOP")
    iflags = [i for i, l in enumerate(u) if l.startswith(b"* FLAGS (")]
    ifetch = [i for i, l in enumerate(u) if b" FETCH " in l]
    assert iflags and ifetch and iflags[0] < ifetch[0], u
    text = b"\n".join(l for l in u if l.startswith(b"* FLAGS"))
    assert b"$Important" in text and b"Later" in text, u
    u, t, _ = b.cmd("NOOP")
    assert not any(l.startswith(b"* FLAGS") for l in u), u
    a.close()
    b.close()


def test_list_recursivematch_and_lsub_of_unsubscribed_parent(postern):
    """Only Foo.Bar subscribed: LIST (SUBSCRIBED RECURSIVEMATCH) "" "%" gives Foo with
    CHILDINFO ("SUBSCRIBED"); LSUB "" "%" gives Foo with \\Noselect (finding 11)."""
    r = session(postern)
    r.cmd("CREATE Foo.Bar")
    r.cmd("SUBSCRIBE Foo.Bar")
    r.cmd("UNSUBSCRIBE Foo")
    u, t, _ = r.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    ok_line(t)
    foo = [l for l in u if re.search(rb' "\." "?Foo"?( \(|$)', l)]
    assert len(foo) == 1, u
    assert b'("CHILDINFO" ("SUBSCRIBED"))' in foo[0] or \
        b'(CHILDINFO ("SUBSCRIBED"))' in foo[0], foo
    assert b"\\Subscribed" not in foo[0], foo
    u, t, _ = r.cmd('LSUB "" "%"')
    ok_line(t)
    foo = [l for l in u if re.search(rb' "\." "?Foo"?( \(|$)', l)]
    assert len(foo) == 1 and b"\\Noselect" in foo[0], u
    # with Foo subscribed too, LSUB shows it selectable
    r.cmd("SUBSCRIBE Foo")
    u, t, _ = r.cmd('LSUB "" "%"')
    foo = [l for l in u if re.search(rb' "\." "?Foo"?( \(|$)', l)]
    assert len(foo) == 1 and b"\\Noselect" not in foo[0], u
    r.close()


def test_rename_of_parent_existing_only_through_children(postern):
    """RENAME of a name that exists only as the parent of Kids.A is answered consistently
    (finding 11): either the whole hierarchy moves, or NO [NONEXISTENT] and nothing
    changes."""
    r = session(postern)
    r.cmd("CREATE Kids.A")
    u, t, _ = r.cmd("DELETE Kids")
    ok_line(t)
    u, t, _ = r.cmd('LIST "" "Kids*"')
    assert any(l.endswith(b'"Kids"') and (b"\\Noselect" in l or b"\\NonExistent" in l)
               for l in u), u
    u, t, _ = r.cmd("RENAME Kids Moved")
    if re.match(rb"^\S+ OK", t):
        u, t, _ = r.cmd('LIST "" "*"')
        names = b"\n".join(u)
        assert b"Moved.A" in names and b"Kids.A" not in names, u
    else:
        assert re.match(rb"^\S+ NO \[NONEXISTENT\]", t), t
        u, t, _ = r.cmd('LIST "" "*"')
        names = b"\n".join(u)
        assert b"Kids.A" in names and b"Moved" not in names, u
    r.close()
