"""End to end: relay to a smarthost, local Maildir delivery, swaks, status, check."""

import os
import re
import shutil
import subprocess

import postern
from postern import (Instance, make_message, relay_instance, split_first_header,
                     count_headers, scaled)

SENDER = "user@example.org"
RCPTS = ["alice@example.net", "bob@example.net"]

# A body that exercises transparency both ways (a lone ".", lines that start
# with "." and ".."), 8-bit bytes, and an empty line.
BODY = (b"Hello,\r\n"
        b".leading dot line\r\n"
        b"..two leading dots\r\n"
        b".\r\n"
        b"\r\n"
        b"8bit: caf\xc3\xa9 na\xc3\xafve \xe2\x82\xac\r\n"
        b"last line\r\n")


def _message(subject="relay end to end"):
    return make_message(subject=subject, sender=SENDER, to=", ".join(RCPTS), body=BODY)


def test_relay_end_to_end():
    with relay_instance() as (inst, up):
        msg = _message()
        code, text = inst.send(SENDER, RCPTS, msg)
        reply = "%d %s" % (code, text)
        m = postern.QUEUED_RE.match(reply)
        assert m, "DATA reply %r does not match '250 2.0.0 Ok: queued as QID'" % reply
        qid = m.group(1)

        msgs = up.wait_messages(1)
        # Wait for the end of the story before asserting "exactly one".
        inst.wait_log("deliverd", r"\bevent=delivered\b.*\bqid=%s\b" % qid, count=len(RCPTS))
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
        msgs = up.messages
        assert len(msgs) == 1, "upstream got %d transactions, expected 1: %r" % (
            len(msgs), [(x["mail_from"], x["rcpt_tos"]) for x in msgs])
        got = msgs[0]
        assert got["mail_from"] == SENDER, "envelope sender %r" % got["mail_from"]
        assert sorted(got["rcpt_tos"]) == sorted(RCPTS), "envelope recipients %r" % got["rcpt_tos"]

        content = got["content"]
        assert content.startswith(b"Received:"), \
            "relayed message does not start with a Received: header: %r" % content[:200]
        received, rest = split_first_header(content)
        assert count_headers(content, "Received") == 1, \
            "expected exactly one Received: header, got %d" % count_headers(content, "Received")
        assert qid.encode() in received, "Received: header does not name the queue id %s: %r" % (
            qid, received)
        if rest != msg:
            raise AssertionError("relayed content differs from the original after the Received: "
                                 "header:\n sent: %r\n got:  %r" % (msg, rest))

        # One grep follows the message through every component.
        hits = inst.grep(qid)
        acc = [l for l in hits["smtpd"] if re.search(r"\bevent=accepted\b", l)]
        assert acc, "no event=accepted line with qid=%s in smtpd.log" % qid
        kv = postern.parse_kv(acc[0])
        assert kv.get("from") == "<%s>" % SENDER, "accepted from=%r" % kv.get("from")
        assert kv.get("nrcpt") == str(len(RCPTS)), "accepted nrcpt=%r" % kv.get("nrcpt")
        assert int(kv.get("size", "0")) > 0, "accepted size=%r" % kv.get("size")
        assert hits["queued"], "no line with %s in queued.log" % qid
        deliv = [l for l in hits["deliverd"] if re.search(r"\bevent=delivered\b", l)]
        rcpts_logged = sorted(postern.parse_kv(l).get("rcpt") for l in deliv)
        assert rcpts_logged == sorted("<%s>" % r for r in RCPTS), \
            "deliverd event=delivered rcpt values %r" % rcpts_logged
        # Nothing left in the spool.
        for sub in ("incoming", "queue", "state", "tmp"):
            assert not inst.spool_files(sub), "spool/%s not empty: %r" % (sub, inst.spool_files(sub))


LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) "
                     r"(master|smtpd|queued|deliverd) event=[a-z_]+( |$)")


def test_log_lines_follow_interface():
    """The documented log line shapes that operators (and these tests) grep for."""
    with relay_instance() as (inst, up):
        qid = inst.send_ok(SENDER, ["alice@example.net"], _message("log format"))
        up.wait_messages(1)
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
        for comp in postern.COMPONENTS:
            for line in inst.log_lines(comp):
                assert LINE_RE.match(line), "%s.log line does not match " \
                    "'TS LEVEL %s event=NAME ...': %r" % (comp, comp, line)
        acc = inst.find_log("smtpd", r"\bevent=accepted\b.*\bqid=%s\b" % qid)
        assert len(acc) == 1, "event=accepted lines for %s: %r" % (qid, acc)
        kv = postern.parse_kv(acc[0])
        assert kv.get("from") == "<%s>" % SENDER and kv.get("nrcpt") == "1" \
            and kv.get("size", "").isdigit(), "accepted line: %r" % acc[0]
        assert inst.find_log("queued", r"\bevent=queued qid=%s\b" % qid), \
            "no 'event=queued qid=%s' in queued.log" % qid
        deliv = inst.find_log("deliverd", r"\bevent=delivered\b.*\bqid=%s\b" % qid)
        assert len(deliv) == 1, "event=delivered lines: %r" % deliv
        kv = postern.parse_kv(deliv[0])
        assert kv.get("rcpt") == "<alice@example.net>", "delivered rcpt=%r" % kv.get("rcpt")
        assert kv.get("relay") == "127.0.0.1:%d" % up.port, \
            "delivered relay=%r, interface says relay=HOST:PORT (127.0.0.1:%d): %r" % (
                kv.get("relay"), up.port, deliv[0])
        assert re.match(r"250[ -]", kv.get("reply", "")), \
            "delivered reply=%r, interface says reply=\"250 ...\": %r" % (kv.get("reply"), deliv[0])


def test_local_delivery():
    with Instance() as inst:
        inst.start()
        msg = make_message(subject="local delivery", sender=SENDER, to="user@localhost", body=BODY)
        qid = inst.send_ok(SENDER, ["user@localhost"], msg)
        files = inst.wait_maildir("user", 1)
        inst.wait_log("deliverd", r"\bevent=delivered\b.*\bqid=%s\b" % qid)
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
        files = inst.maildir_files("user")
        assert len(files) == 1, "expected one file in Maildir/new, got %r" % files
        for sub in ("tmp", "new", "cur"):
            assert os.path.isdir(os.path.join(inst.maildir("user"), sub)), "Maildir/%s missing" % sub
        assert not inst.maildir_files("user", "tmp"), "Maildir/tmp not empty"
        with open(files[0], "rb") as f:
            data = f.read()
        assert b"\r\n" not in data, "maildir file has CRLF line ends: %r" % data[:300]
        lines = data.split(b"\n")
        assert lines[0].startswith(b"Return-Path:"), "first line is %r" % lines[0]
        assert b"<%s>" % SENDER.encode() in lines[0], "Return-Path line %r" % lines[0]
        assert re.search(rb"(?im)^Delivered-To: *<?user@localhost>?\s*$", postern.header_block(data)), \
            "no Delivered-To: user@localhost header in %r" % postern.header_block(data)
        orig_lf = msg.replace(b"\r\n", b"\n")
        assert data.endswith(orig_lf), \
            "maildir file does not end with the original message (LF):\n want ...%r\n got  %r" % (
                orig_lf[-200:], data[-300:])
        added = data[:-len(orig_lf)]
        assert qid.encode() in added, "prepended headers do not mention qid %s: %r" % (qid, added)


def test_swaks_local():
    swaks = shutil.which("swaks")
    if not swaks:
        raise postern.Skip("swaks not installed")
    with Instance() as inst:
        inst.start()
        p = subprocess.run([swaks, "--server", "127.0.0.1:%d" % inst.port, "--to", "user@localhost",
                            "--from", SENDER, "--helo", "client.test", "--timeout", "20",
                            "--header", "Subject: swaks test"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=scaled(40))
        out = p.stdout.decode("utf-8", "replace")
        assert p.returncode == 0, "swaks exited %d:\n%s" % (p.returncode, out)
        m = re.search(r"<-  250 2\.0\.0 Ok: queued as (%s)" % postern.QID_RE, out)
        assert m, "swaks transcript lacks '250 2.0.0 Ok: queued as':\n%s" % out
        inst.wait_maildir("user", 1)
        with open(inst.maildir_files("user")[0], "rb") as f:
            assert b"Subject: swaks test" in f.read()


def test_status_lists_processes():
    with Instance() as inst:
        inst.start()
        cp = inst.cli("status")
        assert cp.returncode == 0, "status exited %d: %s" % (cp.returncode, cp.stderr)
        lines = [l for l in cp.stdout.splitlines() if l.strip()]
        first = lines[0].split() if lines else []
        assert first and not (len(first) > 1 and first[1].isdigit()), \
            "status output lacks a header line: %r" % cp.stdout
        rows = inst.status()
        names = [r["name"] for r in rows]
        for c in postern.COMPONENTS:
            assert c in names, "`postern status` does not list %s:\n%s" % (c, cp.stdout)
        for c in ("master", "smtpd", "queued"):
            assert names.count(c) == 1, "%s listed %d times" % (c, names.count(c))
        for r in rows:
            assert postern.pid_alive(r["pid"]), "%s pid %d is not alive" % (r["name"], r["pid"])
            if r["name"] != "master":
                assert r["state"] == "ready", "%s state %r after event=ready" % (r["name"], r["state"])
            assert r["restarts"].isdigit(), "restarts column %r" % r["restarts"]
        assert inst.pids()["master"] == inst.master_pid_from_file(), \
            "status master pid != run/master.pid"


def test_check_good_config():
    with Instance() as inst:
        cp = inst.cli("check")
        assert cp.returncode == 0, "`postern check` on a good config exited %d: %s%s" % (
            cp.returncode, cp.stdout, cp.stderr)
