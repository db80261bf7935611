"""postern-sendmail: the drop that cron and scripts use, picked up by queued."""

import os
import pwd
import re
import shutil
import signal
import subprocess

import postern
from postern import Instance, Skip, parse_kv, relay_instance, scaled, wait_for

LOGIN = pwd.getpwuid(os.getuid()).pw_name
DROP_NAME_RE = re.compile(r"^[0-9a-f]{32}$")


def _sendmail(inst, args, data, user=None, conf=None):
    exe = postern.bin_path("postern-sendmail")
    if not os.path.exists(exe):
        raise AssertionError("%s not built" % exe)
    cmd = [exe, "-C", conf or inst.conf] + args
    if user is not None:
        cmd = ["runuser", "-u", user, "--"] + cmd
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=scaled(20))
    return p


def _ok(p):
    assert p.returncode == 0, "postern-sendmail exited %d: %r" % (p.returncode, p.stderr)


def _header(content, name):
    """Values of every `name:` field in the header section (unfolded)."""
    hb = postern.header_block(content)
    return [re.sub(rb"\r?\n[ \t]", b" ", m.group(1)).strip()
            for m in re.finditer(rb"(?im)^" + re.escape(name.encode()) +
                                 rb":((?:[^\r\n]*)(?:\r?\n[ \t][^\r\n]*)*)", hb)]


def _pickup_lines(inst, since=None):
    return [parse_kv(l) for l in inst.find_log("queued", r"\bevent=pickup\b", since)]


def _other_user(inst):
    """A local user that is neither root nor the daemons' user (who owns
    drop/ and so may list it); None if there is none."""
    for name in ("daemon", "bin", "sys", "games", "man", "lp", "mail", "news"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid != 0 and name != inst.user:
            return pw
    return None


def _drop_files(inst):
    return [n for n in os.listdir(os.path.join(inst.spool, "drop"))]


def test_sendmail_recipient_arguments():
    with Instance() as inst:
        inst.start()
        msg = b"Subject: from sendmail\nTo: user@localhost\n\nline one\n.\nline after a lone dot\n"
        p = _sendmail(inst, ["-i", "-f", "cron@example.org", "user@localhost"], msg)
        assert p.returncode == 0, "postern-sendmail exited %d: %r" % (p.returncode, p.stderr)
        files = inst.wait_maildir("user", 1)
        with open(files[0], "rb") as f:
            data = f.read()
        assert data.startswith(b"Return-Path: <cron@example.org>"), data[:200]
        # -i: a lone "." is data, not the end of the message.
        assert data.endswith(b"line one\n.\nline after a lone dot\n"), data[-200:]
        assert re.search(rb"(?im)^Subject: from sendmail$", data)


def test_sendmail_t_reads_recipients_from_headers():
    with Instance() as inst:
        inst.start()
        msg = (b"From: app@example.org\nTo: user@localhost\nCc: other@localhost\n"
               b"Bcc: hidden@localhost\nSubject: -t\n\nbody\n")
        p = _sendmail(inst, ["-t", "-i"], msg)
        assert p.returncode == 0, "postern-sendmail -t exited %d: %r" % (p.returncode, p.stderr)
        for u in ("user", "other", "hidden"):
            inst.wait_maildir(u, 1)
        with open(inst.maildir_files("user")[0], "rb") as f:
            data = f.read()
        assert not re.search(rb"(?im)^Bcc:", data), "Bcc: header was not removed"


def test_sendmail_lone_dot_ends_message_without_i():
    with Instance() as inst:
        inst.start()
        msg = b"Subject: dot\n\nline one\n.\nnot part of the message\n"
        _ok(_sendmail(inst, ["user@localhost"], msg))
        files = inst.wait_maildir("user", 1)
        with open(files[0], "rb") as f:
            data = f.read()
        assert data.endswith(b"\n\nline one\n"), data[-200:]
        assert b"not part" not in data


def test_sendmail_t_bcc_removed_at_upstream():
    with relay_instance() as (inst, up):
        msg = (b"From: App <app@example.org>\n"
               b"To: \"Doe, John\" <john@example.net>,\n  team: ann@example.net,\n"
               b"\t(the boss) bob@example.net;\n"
               b"Cc: carol@example.net\nBcc: hidden@example.net, (also)\n dave@example.net\n"
               b"Subject: -t at the upstream\n\nbody\n")
        _ok(_sendmail(inst, ["-t"], msg))
        m = up.wait_messages(1)[0]
        assert sorted(m["rcpt_tos"]) == sorted([
            "john@example.net", "ann@example.net", "bob@example.net", "carol@example.net",
            "hidden@example.net", "dave@example.net"]), m["rcpt_tos"]
        c = m["content"]
        assert not re.search(rb"(?im)^Bcc:", c), "Bcc: reached the upstream:\n%r" % c[:800]
        assert b"hidden@example.net" not in c and b"dave@example.net" not in c
        assert _header(c, "To")[0].startswith(b"\"Doe, John\" <john@example.net>")
        assert _header(c, "Cc") == [b"carol@example.net"]
        # queued logged one pickup with every recipient
        pk = _pickup_lines(inst)
        assert len(pk) == 1 and pk[0]["nrcpt"] == "6", pk


def test_sendmail_envelope_sender():
    with relay_instance() as (inst, up):
        _ok(_sendmail(inst, ["-f", "bounces@example.org", "a@example.net"], b"Subject: f\n\nx\n"))
        _ok(_sendmail(inst, ["b@example.net"], b"Subject: default\n\nx\n"))
        _ok(_sendmail(inst, ["-f", "<>", "c@example.net"], b"Subject: null\n\nx\n"))
        msgs = up.wait_messages(3)
        by = {m["rcpt_tos"][0]: m for m in msgs}
        assert by["a@example.net"]["mail_from"] == "bounces@example.org"
        # without -f: the login name at the configured hostname
        assert by["b@example.net"]["mail_from"] == "%s@postern.test" % LOGIN, \
            by["b@example.net"]["mail_from"]
        assert by["c@example.net"]["mail_from"] in ("", "<>"), by["c@example.net"]["mail_from"]
        # a From: made for the null sender names the login, never "<>"
        assert _header(by["c@example.net"]["content"], "From")[0].endswith(
            b"<%s@postern.test>" % LOGIN.encode())


def test_sendmail_from_display_name():
    with relay_instance() as (inst, up):
        _ok(_sendmail(inst, ["-F", "Cron Daemon", "-f", "cron@example.org", "a@example.net"],
                      b"Subject: no From\n\nx\n"))
        _ok(_sendmail(inst, ["-F", "J\u00f6rg Doe".encode().decode(), "b@example.net"],
                      b"Subject: non-ASCII name\n\nx\n"))
        _ok(_sendmail(inst, ["-F", "Ignored", "c@example.net"],
                      b"From: Kept <kept@example.org>\nSubject: has From\n\nx\n"))
        msgs = {m["rcpt_tos"][0]: m for m in up.wait_messages(3)}
        assert _header(msgs["a@example.net"]["content"], "From") == \
            [b"Cron Daemon <cron@example.org>"], msgs["a@example.net"]["content"][:500]
        assert _header(msgs["b@example.net"]["content"], "From") == \
            [b"=?UTF-8?B?SsO2cmcgRG9l?= <%s@postern.test>" % LOGIN.encode()]
        assert _header(msgs["c@example.net"]["content"], "From") == [b"Kept <kept@example.org>"]


def test_sendmail_date_and_message_id():
    with relay_instance() as (inst, up):
        _ok(_sendmail(inst, ["a@example.net"], b"Subject: bare\n\nx\n"))
        qid = parse_kv(inst.wait_log("queued", r"\bevent=pickup\b")[0])["qid"]
        present = (b"Subject: complete\nDate: Mon, 01 Jan 2024 10:00:00 +0100\n"
                   b"Message-ID: <mine.123@example.org>\n\nx\n")
        _ok(_sendmail(inst, ["b@example.net"], present))
        msgs = {m["rcpt_tos"][0]: m for m in up.wait_messages(2)}
        bare = msgs["a@example.net"]["content"]
        assert _header(bare, "Message-ID") == [b"<%s@postern.test>" % qid.encode()], bare[:600]
        dates = _header(bare, "Date")
        assert len(dates) == 1 and re.match(
            rb"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov"
            rb"|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}$", dates[0]), dates
        rec = _header(bare, "Received")
        assert rec and re.match(rb"^by postern\.test \(postern-sendmail, uid %d\)\s+id %s; " %
                                (os.getuid(), qid.encode()), rec[0]), rec
        comp = msgs["b@example.net"]["content"]
        assert _header(comp, "Date") == [b"Mon, 01 Jan 2024 10:00:00 +0100"]
        assert _header(comp, "Message-ID") == [b"<mine.123@example.org>"]


def test_sendmail_line_ends_and_long_lines():
    with relay_instance() as (inst, up):
        long_line = b"x" * 2500
        msg = b"Subject: lines\n\nbare LF\r\ncrlf\rbare CR\n" + long_line + b"\nno end"
        _ok(_sendmail(inst, ["-i", "a@example.net"], msg))
        c = up.wait_messages(1)[0]["content"]
        assert not re.search(rb"(?<!\r)\n", c), "bare LF reached the upstream"
        assert not re.search(rb"\r(?!\n)", c), "bare CR reached the upstream"
        lines = c.split(b"\r\n")
        assert max(len(l) for l in lines) <= 998, max(len(l) for l in lines)
        body = c.split(b"\r\n\r\n", 1)[1]
        assert body == (b"bare LF\r\ncrlf\r\nbare CR\r\n" + b"x" * 998 + b"\r\n" + b"x" * 998 +
                        b"\r\n" + b"x" * 504 + b"\r\nno end\r\n"), body[:200]


def test_sendmail_while_stopped():
    """The daemons are down: the drop waits on disk, exit 0; after start the
    message arrives exactly once and the drop is gone."""
    with relay_instance() as (inst, up):
        inst.stop()
        p = _sendmail(inst, ["late@example.net"], b"Subject: while stopped\n\nx\n")
        _ok(p)
        drops = _drop_files(inst)
        assert len(drops) == 1 and DROP_NAME_RE.match(drops[0]), drops
        st = os.stat(os.path.join(inst.spool, "drop", drops[0]))
        assert st.st_mode & 0o777 == 0o644 and st.st_nlink == 1, oct(st.st_mode)
        mark = inst.log_mark()
        inst.start()
        up.wait_messages(1)
        qid = parse_kv(inst.wait_log("queued", r"\bevent=pickup\b", since=mark)[0])["qid"]
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid, since=mark)
        # The drop is gone once its message is queued, so no scan finds it again.
        assert _drop_files(inst) == []
        mark2 = inst.log_mark()
        _ok(_sendmail(inst, ["next@example.net"], b"Subject: next\n\nx\n"))
        up.wait_messages(2)
        assert len(_pickup_lines(inst, since=mark)) == 2, _pickup_lines(inst, since=mark)
        assert [m["rcpt_tos"] for m in up.messages] == [["late@example.net"], ["next@example.net"]]
        assert not inst.find_log("queued", r"\bevent=corrupt\b", since=mark2)


def test_sendmail_survives_kill_of_queued():
    """queued is frozen when the drop is written and then killed -9: the
    drop waits on disk, the restarted queued picks it up, exactly once."""
    with relay_instance() as (inst, up):
        old = inst.pids()["queued"]
        os.kill(old, signal.SIGSTOP)
        try:
            _ok(_sendmail(inst, ["killed@example.net"], b"Subject: kill -9\n\nx\n"))
            assert len(_drop_files(inst)) == 1
        finally:
            os.kill(old, signal.SIGKILL)
        wait_for(lambda: inst.pids().get("queued") not in (None, old), 15,
                 what="the master to restart queued")
        m = up.wait_messages(1)[0]
        assert m["rcpt_tos"] == ["killed@example.net"]
        qid = parse_kv(inst.wait_log("queued", r"\bevent=pickup\b")[0])["qid"]
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
        assert _drop_files(inst) == [] and len(_pickup_lines(inst)) == 1
        assert len(up.messages) == 1


def test_sendmail_unprivileged_user():
    if not postern.is_root():
        raise Skip("needs root to run postern-sendmail as another local user")
    if shutil.which("runuser") is None:
        raise Skip("runuser (util-linux) is not installed")
    with relay_instance() as (inst, up):
        pw = _other_user(inst)
        if pw is None:
            raise Skip("no local user other than root and %s to submit as" % inst.user)
        drop = os.path.join(inst.spool, "drop")
        st = os.stat(drop)
        assert st.st_mode & 0o7777 == 0o1733, oct(st.st_mode)
        assert st.st_uid == pwd.getpwnam(inst.user).pw_uid
        # The drop directory cannot be listed by the submitting user.
        ls = subprocess.run(["runuser", "-u", pw.pw_name, "--", "ls", drop],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(10))
        assert ls.returncode != 0 and b"ermission denied" in ls.stderr, (ls.returncode, ls.stderr)
        # ... and yet it can submit, even with a strict umask.
        p = _sendmail(inst, ["rcpt@example.net"], b"Subject: from %s\n\nx\n" % pw.pw_name.encode(),
                      user=pw.pw_name)
        _ok(p)
        m = up.wait_messages(1)[0]
        assert m["mail_from"] == "%s@postern.test" % pw.pw_name, m["mail_from"]
        rec = _header(m["content"], "Received")[0]
        assert b"(postern-sendmail, uid %d)" % pw.pw_uid in rec, rec
        pk = _pickup_lines(inst)
        assert pk and pk[0]["uid"] == str(pw.pw_uid), pk
        # A uid without a passwd entry is told so at once (queued would
        # have to move its drop to corrupt/).
        if shutil.which("setpriv"):
            p = subprocess.run(["setpriv", "--reuid=3999999", "--regid=3999999", "--clear-groups",
                                postern.bin_path("postern-sendmail"), "-C", inst.conf,
                                "x@example.net"], input=b"x\n", stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=scaled(20))
            assert p.returncode == 67 and b"uid 3999999 has no passwd entry" in p.stderr, \
                (p.returncode, p.stderr)
        # -f may name anyone (as with sendmail), but Received: names the uid.
        _ok(_sendmail(inst, ["-f", "root@postern.test", "x@example.net"], b"S: x\n\nx\n",
                      user=pw.pw_name))
        m = up.wait_messages(2)[1]
        assert b"uid %d)" % pw.pw_uid in _header(m["content"], "Received")[0]


def test_sendmail_tempfail_when_drop_not_writable():
    with Instance() as inst:
        inst.start()
        drop = os.path.join(inst.spool, "drop")
        user = None
        if postern.is_root():
            pw = _other_user(inst)
            if pw is None:
                raise Skip("no unprivileged user to run as (root ignores the mode)")
            user = pw.pw_name
        os.chmod(drop, 0o500)
        try:
            p = _sendmail(inst, ["user@localhost"], b"Subject: x\n\nx\n", user=user)
        finally:
            os.chmod(drop, 0o1733)
        assert p.returncode == 75, "exit %d, expected 75 (EX_TEMPFAIL): %r" % (p.returncode,
                                                                               p.stderr)
        err = p.stderr.decode()
        assert drop in err and "Permission denied" in err, err
        assert _drop_files(inst) == []
        assert inst.maildir_files("user") == []


def test_sendmail_usage_and_limits():
    with Instance(settings={"smtpd": {"max_message_size": 2048, "max_recipients": 3}}) as inst:
        inst.start()
        for args, code, text in [
                (["-X", "a@localhost"], 64, "unknown option -X"),
                (["-bp"], 64, "postern queue"),
                (["-q"], 64, "postern flush"),
                ([], 64, "no recipients"),
                (["-f"], 64, "needs a value"),
                (["not an address"], 64, "bad recipient"),
                (["a@localhost", "b@localhost", "c@localhost", "d@localhost"], 65, "too many"),
                (["-f", "bad@", "a@localhost"], 64, "-f"),
        ]:
            p = _sendmail(inst, args, b"Subject: x\n\nx\n")
            assert p.returncode == code and text in p.stderr.decode(), (args, p.returncode, p.stderr)
        p = _sendmail(inst, ["a@localhost"], b"x" * 3000)
        assert p.returncode == 65 and b"max_message_size" in p.stderr, (p.returncode, p.stderr)
        p = _sendmail(inst, ["a@localhost"], b"Subject: x\n\na\0b\n")
        assert p.returncode == 65 and b"NUL" in p.stderr, (p.returncode, p.stderr)
        p = _sendmail(inst, ["-t"], b"Subject: nobody\n\nx\n")
        assert p.returncode == 65 and b"no recipients" in p.stderr, (p.returncode, p.stderr)
        p = _sendmail(inst, ["-t"], b"To: 1@x.example, 2@x.example\nCc: 3@x.example, 4@x.example\n\n")
        assert p.returncode == 65 and b"too many" in p.stderr, (p.returncode, p.stderr)
        # Harmless flags that programs pass are accepted.
        p = _sendmail(inst, ["-oem", "-odi", "-oQ/var/spool/x", "-v", "-bm", "-U", "-B", "8BITMIME",
                             "-N", "never", "-FCronDaemon", "-oi", "--", "user@localhost"],
                      b"Subject: flags\n\nx\n")
        _ok(p)
        inst.wait_maildir("user", 1)
        # Nothing refused was left behind, not even a temporary file.
        wait_for(lambda: _drop_files(inst) == [], 10, what="drop/ to be empty")
        bad = os.path.join(inst.dir, "bad.conf")
        with open(bad, "w") as f:
            f.write("no_such_key = 1;\n")
        p = _sendmail(inst, ["a@localhost"], b"x\n", conf=bad)
        assert p.returncode == 78 and b"no_such_key" in p.stderr, (p.returncode, p.stderr)


def test_sendmail_corrupt_drop_goes_to_corrupt():
    """Files planted in drop/ are hostile input: each ends in corrupt/ with a
    log line, queued keeps running and keeps picking up good drops."""
    with Instance() as inst:
        inst.start()
        queued = inst.pids()["queued"]
        drop = os.path.join(inst.spool, "drop")
        torn = "0123456789abcdef0123456789abcdef"
        with open(os.path.join(drop, torn), "wb") as f:
            f.write(b"POSTERN-DROP 1\nuid=%d\ntime=1\nrcpt=user@localhost\n\nSubject: torn\n\nhal"
                    % os.getuid())
        junk = "fedcba9876543210fedcba9876543210"
        with open(os.path.join(drop, junk), "wb") as f:
            f.write(b"\x00\x01 not a drop file at all \xff")
        for name, why in ((torn, "torn drop"), (junk, "bad magic")):
            line = inst.wait_log("queued", r"\bevent=corrupt\b.*\bfile=drop/%s\b" % name)[0]
            kv = parse_kv(line)
            assert why in kv["error"], line
            assert os.path.exists(os.path.join(inst.spool, "corrupt", "drop." + name)), \
                os.listdir(os.path.join(inst.spool, "corrupt"))
        assert _drop_files(inst) == []
        assert inst.pids()["queued"] == queued, "queued restarted"
        _ok(_sendmail(inst, ["user@localhost"], b"Subject: still works\n\nx\n"))
        inst.wait_maildir("user", 1)
        assert inst.pids()["queued"] == queued
