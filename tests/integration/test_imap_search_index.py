"""SEARCH answered from the index: FROM, TO, CC, BCC, SUBJECT (and HEADER with those
fields) and SENT* come from the SEARCH data the index keeps per message (filled when a
message is first parsed: by a SEARCH that had to read the file, or by FETCH ENVELOPE), and
must give exactly what reading the files gives: encoded words decoded, case folded,
repeated fields, missing fields, a message without a header.

The proof that the index answers: a message file changed in place behind the server's back
(Maildir files never change, so the index may keep what it learnt) still matches its old
Subject, while TEXT (always read from the file) sees the new bytes.
"""

import os

from test_imap import ALICE, Raw

MESSAGES = [
    # 1: encoded words in From (Q) and Subject (B)
    b"From: =?UTF-8?Q?Andr=C3=A9_Pirard?= <andre@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: =?UTF-8?B?SMOpbGxvIFfDtnJsZCBhcHBsZQ==?=\r\n"
    b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    b"\r\n"
    b"first body\r\n",
    # 2: two To fields, a Cc, an X- field
    b"From: Carol <carol@example.com>\r\n"
    b"To: a@x.test\r\n"
    b"To: second@y.test\r\n"
    b"Cc: Dave <dave@example.com>\r\n"
    b"Subject: Re: STRASSE meeting\r\n"
    b"X-Tag: blue\r\n"
    b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    b"\r\n"
    b"second body\r\n",
    # 3: Bcc, no Subject, no Date
    b"From: eve@example.com\r\n"
    b"Bcc: secret@hidden.test\r\n"
    b"\r\n"
    b"third body\r\n",
    # 4: no header at all
    b"just a body line, From: nobody\r\n",
    # 5: ISO-8859-1 encoded word
    b"From: \"Frank\" <frank@example.com>\r\n"
    b"Subject: =?ISO-8859-1?Q?caf=E9?= apple\r\n"
    b"Date: Wed, 31 Dec 2003 23:30:00 -0500\r\n"
    b"\r\n"
    b"fifth body\r\n",
]

# (criteria, UTF-8 needle sent as a literal or None, expected sequence numbers)
QUERIES = [
    ("SUBJECT apple", None, {1, 5}),
    ("CHARSET UTF-8 SUBJECT", "H\u00c9LLO w\u00f6rld", {1}),
    ("CHARSET UTF-8 SUBJECT", "CAF\u00c9", {5}),
    ("CHARSET UTF-8 FROM", "andr\u00e9", {1}),
    ("FROM example.com", None, {2, 3, 5}),
    ("FROM frank", None, {5}),
    ("TO second", None, {2}),
    ("TO a@x.test", None, {2}),
    ("TO example", None, {1}),
    ("CC dave", None, {2}),
    ('CC ""', None, {2}),
    ("BCC SECRET", None, {3}),
    ('HEADER SUBJECT ""', None, {1, 2, 5}),
    ('HEADER from ""', None, {1, 2, 3, 5}),
    ("SUBJECT strasse", None, {2}),
    ("SENTON 7-Feb-1994", None, {1}),
    ("SENTON 31-Dec-2003", None, {5}),
    ("SENTSINCE 1-Jan-2000", None, {2, 5}),
    ("SENTBEFORE 1-Jan-2000", None, {1}),
    ("NOT FROM example", None, {4}),
    ("OR SUBJECT apple CC dave", None, {1, 2, 5}),
    ("HEADER X-Tag blue", None, {2}),
    ("SUBJECT apple FROM frank", None, {5}),
]


def search(r, criteria, needle):
    if needle is None:
        u, t, _ = r.cmd(f"SEARCH {criteria}")
    else:
        lit = needle.encode()
        r.n += 1
        tag = f"t{r.n}"
        r.send(f"{tag} SEARCH {criteria} {{{len(lit)}+}}\r\n".encode() + lit + b"\r\n")
        u, t, _ = r.collect(tag)
    assert b" OK" in t, (criteria, t)
    hits = set()
    for line in u:
        if line.startswith(b"* SEARCH"):
            hits |= {int(x) for x in line.split()[2:]}
    return hits


def append_all(r, folder):
    for m in MESSAGES:
        r.n += 1
        tag = f"t{r.n}"
        r.send(f"{tag} APPEND {folder} {{{len(m)}+}}\r\n".encode() + m + b"\r\n")
        _, t, _ = r.collect(tag)
        assert b" OK" in t, t


def check_all(r, what):
    for criteria, needle, want in QUERIES:
        got = search(r, criteria, needle)
        assert got == want, (what, criteria, needle, got, want)


def test_search_index_equals_files(postern):
    r = Raw(postern)
    try:
        r.login()
        append_all(r, "INBOX")
        _, t, _ = r.cmd("SELECT INBOX")
        assert b" OK" in t
        check_all(r, "first search: files")
        check_all(r, "second search: index")

        # A folder whose SEARCH data comes from FETCH ENVELOPE.
        append_all(r, "Archive")
        _, t, _ = r.cmd("SELECT Archive")
        assert b" OK" in t
        u, t, _ = r.cmd("FETCH 1:* (ENVELOPE)")
        assert b" OK" in t and len([x for x in u if b" FETCH " in x]) == 5, u
        check_all(r, "after FETCH ENVELOPE")

        # Change message 5's file in place (same size, same name, same directory
        # mtime): the index still answers SUBJECT with what the message said; TEXT
        # reads the file.
        cur = os.path.join(postern.maildir(ALICE), ".Archive", "cur")
        changed = 0
        for name in os.listdir(cur):
            path = os.path.join(cur, name)
            with open(path, "rb") as f:
                data = f.read()
            if b"caf=E9?= apple" in data:
                with open(path, "r+b") as f:
                    f.write(data.replace(b"caf=E9?= apple", b"caf=E9?= zzzzz"))
                changed += 1
        assert changed == 1
        assert search(r, "SUBJECT apple", None) == {1, 5}
        assert search(r, "TEXT zzzzz", None) == {5}
        assert search(r, "SUBJECT zzzzz", None) == set()

        # COPY takes the SEARCH data along.
        _, t, _ = r.cmd("COPY 1:* Junk")
        assert b" OK" in t
        _, t, _ = r.cmd("SELECT Junk")
        assert b" OK" in t
        assert search(r, "SUBJECT apple", None) == {1, 5}
        assert search(r, "CC dave", None) == {2}
    finally:
        r.close()
