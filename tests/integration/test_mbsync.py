"""mbsync (Debian isync) against Postern over IMAPS: a two-way sync of a mailbox with
folders, changes on both sides carried across, and a last sync that changes nothing.
"""

import imaplib
import os
import re
import shutil
import subprocess
import time

import pytest

from helpers import PASSWORDS, make_message, smtp_client, tls_client_context

ALICE = "alice@example.test"

pytestmark = pytest.mark.skipif(shutil.which("mbsync") is None,
                                reason="mbsync (isync) is installed by scripts/deps.sh")


def write_config(p, tmp):
    near = os.path.join(tmp, "near")
    os.makedirs(near, exist_ok=True)
    conf = os.path.join(tmp, "mbsyncrc")
    with open(conf, "w") as f:
        f.write(f"""IMAPAccount postern
Host localhost
Port {p.port("imaps")}
User {ALICE}
Pass {PASSWORDS[ALICE]}
SSLType IMAPS
CertificateFile {p.tls["ca"]}
SystemCertificates no
AuthMechs LOGIN PLAIN

IMAPStore far
Account postern

MaildirStore near
Path {near}/
Inbox {near}/INBOX
SubFolders Verbatim

Channel all
Far :far:
Near :near:
Patterns *
Create Both
Remove None
Expunge Both
Sync All
SyncState *
""")
    return conf, near


def mbsync(conf):
    res = subprocess.run(["mbsync", "-c", conf, "-a"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, f"mbsync failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res


def imap(p):
    c = imaplib.IMAP4_SSL("127.0.0.1", p.port("imaps"), ssl_context=tls_client_context(p.tls),
                          timeout=10)
    c.login(ALICE, PASSWORDS[ALICE])
    return c


def server_state(p):
    """{folder: sorted [(uid, flags, message-id)]} over IMAP."""
    c = imap(p)
    try:
        typ, lines = c.list()
        assert typ == "OK"
        names = []
        for line in lines:
            m = re.match(rb'\((.*?)\) "(.)" (.*)$', line)
            assert m, line
            name = m.group(3).decode()
            if name.startswith('"'):
                name = name[1:-1]
            if b"\\Noselect" not in m.group(1) and b"\\NonExistent" not in m.group(1):
                names.append(name)
        state = {}
        for name in sorted(names):
            typ, _ = c.select(f'"{name}"', readonly=True)
            assert typ == "OK", name
            typ, data = c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert typ == "OK"
            msgs = []
            for item in data:
                if not isinstance(item, tuple):
                    continue
                uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1)
                msgs.append((uid, flags.decode(), item[1].strip().decode()))
            state[name] = sorted(msgs)
            c.close()
        return state
    finally:
        c.logout()


def near_files(near):
    """Every message file on the near side: {relative dir: sorted names}."""
    out = {}
    for root, dirs, files in os.walk(near):
        if os.path.basename(root) in ("cur", "new"):
            out[os.path.relpath(root, near)] = sorted(files)
    return out


def deliver(p, token_prefix):
    msg, token = make_message(to=ALICE, token=None)
    with smtp_client(p.port("smtp")) as c:
        c.sendmail("sender@remote.test", [ALICE], msg)
    return token


@pytest.mark.time_limit(180)
def test_two_way_sync_with_folders(postern, tmp_path):
    p = postern
    tokens = [deliver(p, "in") for _ in range(3)]
    p.wait_exact(ALICE, tokens, settle=0)
    c = imap(p)
    try:
        assert c.create("Projects")[0] == "OK"
        assert c.create("Projects.2026")[0] == "OK"
        msg, t_proj = make_message(to=ALICE)
        assert c.append("Projects", "(\\Flagged)", None, msg)[0] == "OK"
    finally:
        c.logout()

    conf, near = write_config(p, str(tmp_path))
    mbsync(conf)
    files = near_files(near)
    assert len(files.get("INBOX/cur", []) + files.get("INBOX/new", [])) == 3, files
    proj = files.get("Projects/cur", []) + files.get("Projects/new", [])
    assert len(proj) == 1, files
    assert re.search(r":2,[A-Z]*F", proj[0]), proj       # \Flagged came across
    assert os.path.isdir(os.path.join(near, "Projects.2026")) or \
        os.path.isdir(os.path.join(near, "Projects/2026")), os.listdir(near)

    # changes on the near side: a new message in Projects, \Seen on one INBOX message
    msg, t_near = make_message(to=ALICE, subject="written offline")
    newname = f"{int(time.time())}.near1.localhost"
    with open(os.path.join(near, "Projects", "new", newname), "wb") as f:
        f.write(msg.replace(b"\r\n", b"\n"))
    inbox_cur = os.path.join(near, "INBOX", "cur")
    inbox_new = os.path.join(near, "INBOX", "new")
    first = sorted(os.listdir(inbox_cur))[0] if os.listdir(inbox_cur) else None
    if first is None:
        first = sorted(os.listdir(inbox_new))[0]
        os.rename(os.path.join(inbox_new, first), os.path.join(inbox_cur, first + ":2,S"))
    else:
        base = first.split(":2,")[0]
        flags = first.split(":2,")[1] if ":2," in first else ""
        os.rename(os.path.join(inbox_cur, first),
                  os.path.join(inbox_cur, base + ":2," + "".join(sorted(flags + "S"))))
    # and one on the server: a delivery
    t_late = deliver(p, "late")
    p.wait_exact(ALICE, tokens + [t_late], settle=0)

    mbsync(conf)
    state = server_state(p)
    assert len(state["Projects"]) == 2
    assert any(t_near in mid for _, _, mid in state["Projects"]), state["Projects"]
    assert len(state["INBOX"]) == 4
    assert sum(1 for _, flags, _ in state["INBOX"] if "\\Seen" in flags) == 1, state["INBOX"]
    files = near_files(near)
    assert len(files.get("INBOX/cur", []) + files.get("INBOX/new", [])) == 4

    # a sync with nothing to do changes nothing on either side
    before_server, before_near = state, near_files(near)
    mbsync(conf)
    assert server_state(p) == before_server
    assert near_files(near) == before_near
