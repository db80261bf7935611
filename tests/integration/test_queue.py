"""queued: retries with backoff, DSN bounces and delay warnings (RFC 3464
in RFC 6522's multipart/report), null-sender failures, queue
administration (`postern queue`, `queue show|delete|hold|release`,
`flush`) and a graceful stop under load.  Issue #4."""

import email
import email.policy
import re
import socket
import threading
import time

import postern
from postern import make_message, parse_kv, wait_for, scaled, QID_RE
from upstreams import ScriptedUpstream, relayed

SENDER = "user@example.org"
SLOW_RETRY = {"queue": {"retry_min": 300, "retry_max": 600, "lifetime": 3600}}

BUSY = "451 4.2.1 <%s>: mailbox busy, try later"
NOUSER = "550 5.1.1 <%s>: no such user here"


# ------------------------------------------------------------------ helpers

def _cli(inst, *args, ok=True):
    cp = inst.cli(*args)
    if ok:
        assert cp.returncode == 0, "`postern %s` exited %d: %s%s" % (
            " ".join(args), cp.returncode, cp.stdout, cp.stderr)
    else:
        assert cp.returncode != 0, "`postern %s` exited 0 (expected an error): %s" % (
            " ".join(args), cp.stdout)
    return cp


def parse_queue(text):
    """`postern queue` output as {qid: {"line", "arrival", "size", "sender",
    "held", "rcpts": {addr: line}}} plus the count from the last line."""
    out, cur, count = {}, None, None
    for l in text.splitlines():
        m = re.match(r"^(%s)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\d+)\s+<([^>]*)>(\s+HELD)?\s*$"
                     % QID_RE, l)
        if m:
            cur = {"line": l, "arrival": m.group(2), "size": int(m.group(3)),
                   "sender": m.group(4), "held": bool(m.group(5)), "rcpts": {}}
            out[m.group(1)] = cur
            continue
        m = re.match(r"^\s+<([^>]*)>\s+(.*)$", l)
        if m and cur is not None:
            cur["rcpts"][m.group(1)] = m.group(2)
            continue
        m = re.match(r"^-- (\d+) messages? in the queue$", l)
        if m:
            count = int(m.group(1))
            continue
        raise AssertionError("unexpected line in `postern queue` output: %r\n%s" % (l, text))
    assert count is not None, "no '-- N messages in the queue' line:\n%s" % text
    assert count == len(out), "count line says %d, listed %d:\n%s" % (count, len(out), text)
    return out


def _queue(inst):
    return parse_queue(_cli(inst, "queue").stdout)


def _event(inst, comp, event, qid, rcpt=None):
    rx = r"\bevent=%s\b.*\bqid=%s\b" % (event, qid)
    if rcpt:
        rx += r".*\brcpt=<%s>" % re.escape(rcpt)
    return inst.find_log(comp, rx)


def _wait_event(inst, comp, event, qid, rcpt=None, count=1, timeout=15):
    rx = r"\bevent=%s\b.*\bqid=%s\b" % (event, qid)
    if rcpt:
        rx += r".*\brcpt=<%s>" % re.escape(rcpt)
    return inst.wait_log(comp, rx, timeout=timeout, count=count)


def parse_dsn(content):
    """Check the RFC 6522/3464 shape of a DSN; return a dict with the
    message, the text part, the per-message and per-recipient fields and
    the returned headers."""
    msg = email.message_from_bytes(content, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", \
        "DSN Content-Type %r:\n%s" % (msg.get_content_type(), content[:1500])
    assert msg.get_param("report-type") == "delivery-status", \
        "report-type=%r" % msg.get_param("report-type")
    assert (msg["Auto-Submitted"] or "").strip() == "auto-replied", \
        "Auto-Submitted: %r" % msg["Auto-Submitted"]
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 3, \
        "expected 3 parts, got %r" % [p.get_content_type() for p in parts]
    types = [p.get_content_type() for p in parts]
    assert types == ["text/plain", "message/delivery-status", "text/rfc822-headers"], \
        "DSN parts %r" % types
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, "delivery-status blocks: %r" % blocks
    per_msg = dict(blocks[0].items())
    assert per_msg.get("Reporting-MTA", "").startswith("dns;"), "per-message fields %r" % per_msg
    per_rcpt = [dict(b.items()) for b in blocks[1:]]
    for r in per_rcpt:
        for f in ("Final-Recipient", "Action", "Status"):
            assert f in r, "per-recipient block lacks %s: %r" % (f, r)
        assert re.match(r"^[245]\.\d{1,3}\.\d{1,3}$", r["Status"]), "Status %r" % r["Status"]
    text = parts[0].get_payload(decode=True).decode("ascii", "replace")
    return {"msg": msg, "text": text, "per_msg": per_msg, "rcpts": per_rcpt,
            "headers": parts[2].get_payload()}


def _rcpt_block(dsn, rcpt):
    for r in dsn["rcpts"]:
        if r["Final-Recipient"].split(";", 1)[-1].strip().strip("<>").lower() == rcpt:
            return r
    raise AssertionError("no Final-Recipient %s in %r" % (rcpt, dsn["rcpts"]))


def _unfold(s):
    return re.sub(r"\r?\n[ \t]+", " ", s)


# ------------------------------------------------------------------ bounces

def test_bounce_and_expiry_dsns_to_remote_sender():
    """bad@ is refused with 550 at once, tmp@ gets 451 until the lifetime
    ends: two failure DSNs to the sender (null reverse path), each naming
    its recipient, the smarthost and that host's exact reply."""
    def rcpt(conn, addr):
        if addr == "bad@example.net":
            return NOUSER % addr
        if addr == "tmp@example.net":
            return BUSY % addr
        return None

    lifetime = int(scaled(3))
    up = ScriptedUpstream(rcpt_reply=rcpt)
    host = "127.0.0.1:%d" % up.port
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 2, "lifetime": lifetime}}) as inst:
        tag = "dsn-%d" % time.time_ns()
        orig = make_message(subject=tag, to="ok@example.net, bad@example.net, tmp@example.net")
        qid = inst.send_ok(SENDER, ["ok@example.net", "bad@example.net", "tmp@example.net"], orig)
        _wait_event(inst, "queued", "removed", qid, timeout=lifetime + 15)
        exp = _event(inst, "queued", "bounced", qid, "tmp@example.net")
        assert exp and parse_kv(exp[0]).get("reason") == "expired", "no expiry bounce: %r" % exp
        attempts = len(_event(inst, "deliverd", "deferred", qid, "tmp@example.net"))
        assert attempts >= 2, "tmp@ was tried %d time(s) before it expired" % attempts

        dsns = up.wait(lambda: (lambda d: d if len(d) >= 2 else None)(
            [m for m in up.messages if m["mail_from"] == ""]), 15, "two DSNs")
        assert len(dsns) == 2, "expected 2 DSNs, got %d" % len(dsns)
        assert up.deliveries("ok@example.net") == 1
        orig_msgid = re.search(rb"(?im)^Message-ID:\s*(\S+)", orig).group(1).decode()
        by_rcpt = {}
        for m in dsns:
            assert m["rcpt_tos"] == [SENDER], "DSN sent to %r" % m["rcpt_tos"]
            d = parse_dsn(m["content"])
            names = [r["Final-Recipient"] for r in d["rcpts"]]
            assert len(names) == 1, "one DSN per event expected, got %r" % names
            by_rcpt[names[0].split(";")[-1].strip()] = d
        assert set(by_rcpt) == {"bad@example.net", "tmp@example.net"}, "DSNs for %r" % set(by_rcpt)

        for rcpt, reply in (("bad@example.net", NOUSER % "bad@example.net"),
                            ("tmp@example.net", BUSY % "tmp@example.net")):
            d = by_rcpt[rcpt]
            assert d["msg"]["From"] and "MAILER-DAEMON" in d["msg"]["From"], d["msg"]["From"]
            assert rcpt in d["text"], "text part does not name %s:\n%s" % (rcpt, d["text"])
            assert host in d["text"], "text part does not name the host %s:\n%s" % (host, d["text"])
            assert reply in _unfold(d["text"]), \
                "text part lacks the exact reply %r:\n%s" % (reply, d["text"])
            r = _rcpt_block(d, rcpt)
            assert r["Action"] == "failed", "Action %r" % r["Action"]
            want = "5.1.1" if rcpt.startswith("bad") else "5.2.1"   # 4.2.1 expired -> 5.2.1
            assert r["Status"] == want, "%s Status %r, expected %s" % (rcpt, r["Status"], want)
            diag = _unfold(r.get("Diagnostic-Code", ""))
            assert diag.startswith("smtp;") and reply in diag, "Diagnostic-Code %r" % diag
            assert host in r.get("Remote-MTA", ""), "Remote-MTA %r" % r.get("Remote-MTA")
            assert qid in d["msg"].as_string() or qid in str(d["per_msg"]), "the DSN does not name %s" % qid
            hdrs = d["headers"]
            assert ("Subject: %s" % tag) in hdrs and orig_msgid in hdrs, \
                "text/rfc822-headers lacks the original Subject/Message-ID:\n%s" % hdrs
            assert "hello" not in hdrs, "the original body leaked into text/rfc822-headers"
        dsn_lines = inst.find_log("queued", r"\bevent=dsn_failed\b.*\bqid=%s\b" % qid)
        assert len(dsn_lines) == 2, "event=dsn_failed lines: %r" % dsn_lines


def test_expired_local_sender_gets_dsn_in_maildir():
    """A sender in a local domain gets the DSN in its Maildir, with an
    empty Return-Path and the remote server's reply."""
    up = ScriptedUpstream(rcpt_reply=lambda c, a: BUSY % a)
    lifetime = int(scaled(2))
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 1, "lifetime": lifetime}}) as inst:
        tag = "local-dsn-%d" % time.time_ns()
        qid = inst.send_ok("user@localhost", ["far@example.net"],
                           make_message(sender="user@localhost", to="far@example.net", subject=tag))
        files = inst.wait_maildir("user", 1, timeout=lifetime + 15)
        _wait_event(inst, "queued", "removed", qid)
        with open(files[0], "rb") as f:
            data = f.read()
        assert re.match(rb"Return-Path: <>\r?\n", data), "Return-Path: %r" % data[:80]
        d = parse_dsn(data)
        assert "far@example.net" in d["text"] and BUSY % "far@example.net" in _unfold(d["text"])
        assert "127.0.0.1:%d" % up.port in d["text"]
        r = _rcpt_block(d, "far@example.net")
        assert r["Action"] == "failed" and r["Status"] == "5.2.1", r
        assert ("Subject: %s" % tag) in d["headers"]
        assert len(inst.maildir_files("user")) == 1
        assert not up.messages, "something was relayed: %r" % up.messages


def test_delay_warning_sent_exactly_once():
    """warn_after = 1 s and a recipient that keeps getting 451: one
    "delayed" DSN, however many retries follow; retries back off from
    retry_min to retry_max."""
    slow = "slow@example.net"
    up = ScriptedUpstream(rcpt_reply=lambda c, a: BUSY % a if a == slow else None)
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 2, "lifetime": 600,
                                         "warn_after": 1}}) as inst:
        tag = "delay-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, [slow], make_message(subject=tag, to=slow))
        dsn = up.wait(lambda: [m for m in up.messages if m["mail_from"] == ""], 20, "a delay DSN")
        # Three more attempts after the warning went out.
        n = len(_event(inst, "deliverd", "deferred", qid, slow))
        _wait_event(inst, "deliverd", "deferred", qid, slow, count=n + 3, timeout=20)
        dsns = [m for m in up.snapshot() if m["mail_from"] == ""]
        assert len(dsns) == 1, "%d delay DSNs, expected exactly 1" % len(dsns)
        assert dsns[0]["rcpt_tos"] == [SENDER]
        d = parse_dsn(dsns[0]["content"])
        r = _rcpt_block(d, slow)
        assert r["Action"] == "delayed", "Action %r" % r["Action"]
        assert r["Status"].startswith("4."), "Status %r for a delay" % r["Status"]
        assert "Will-Retry-Until" in r, "no Will-Retry-Until: %r" % r
        assert BUSY % slow in _unfold(d["text"]) and BUSY % slow in _unfold(r.get("Diagnostic-Code", ""))
        assert ("Subject: %s" % tag) in d["headers"]
        assert len(_event(inst, "queued", "dsn_delayed", qid)) == 1
        assert not _event(inst, "queued", "dsn_failed", qid)

        sched = [parse_kv(l).get("next_in") for l in _event(inst, "queued", "scheduled", qid)]
        assert sched[:1] == ["1s"] and len(sched) >= 3 and set(sched[1:]) == {"2s"}, \
            "backoff next_in=%r, expected 1s then 2s (retry_max)" % sched
        show = _cli(inst, "queue", "show", qid).stdout
        assert "delay warning sent" in show, "`queue show` does not say the warning was sent:\n%s" % show
        _cli(inst, "queue", "delete", qid)


def test_null_sender_failure_is_never_bounced():
    """MAIL FROM:<> and a 550: deliverd bounces it, queued suppresses the
    DSN and keeps the message listed until its lifetime ends."""
    up = ScriptedUpstream(rcpt_reply=lambda c, a: NOUSER % a)
    lifetime = int(scaled(5))
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 2, "lifetime": lifetime}}) as inst:
        t0 = time.monotonic()
        qid = inst.send_ok("", ["gone@example.net"], make_message(sender="<>", to="gone@example.net"))
        b = parse_kv(_wait_event(inst, "deliverd", "bounced", qid, "gone@example.net")[0])
        assert b.get("reply", "").startswith(NOUSER % "gone@example.net"), b
        _wait_event(inst, "queued", "bounce_suppressed", qid, "gone@example.net")
        listing = _queue(inst)
        assert qid in listing, "a failed null-sender message is not listed within its lifetime"
        assert listing[qid]["sender"] == ""
        assert listing[qid]["rcpts"]["gone@example.net"].startswith("bounced"), listing[qid]
        _wait_event(inst, "queued", "removed", qid, timeout=lifetime + 10)
        assert time.monotonic() - t0 >= lifetime - 1.5, \
            "removed after %.1fs, before its lifetime of %ds" % (time.monotonic() - t0, lifetime)
        assert qid not in _queue(inst)
        assert not up.messages, "something was delivered: %r" % [
            (m["mail_from"], m["rcpt_tos"]) for m in up.messages]
        assert not _event(inst, "queued", "dsn_failed", qid)
        queued = inst.find_log("queued", r"\bevent=queued\b")
        assert len(queued) == 1, "a DSN was queued: %r" % queued
        assert not inst.maildir_files("user")


# ------------------------------------------------------------------ administration

def test_queue_list_and_show():
    """`postern queue`: one line per message (id, arrival, size, sender),
    then its recipients with state and last error; `queue show ID`: the
    envelope, each recipient's state and the log lines of ID."""
    grey = "451 4.7.1 <grey@example.net>: greylisted, come back later"
    nouser = NOUSER % "bad@example.net"
    replies = {"grey@example.net": grey, "bad@example.net": nouser}
    up = ScriptedUpstream(rcpt_reply=lambda c, a: replies.get(a))
    with relayed(up, settings=SLOW_RETRY) as inst:
        assert _queue(inst) == {}
        qid = inst.send_ok(SENDER, ["ok@example.net", "grey@example.net", "bad@example.net"],
                           make_message(subject="listing"))
        _wait_event(inst, "queued", "scheduled", qid)
        # The DSN for bad@ is a message of its own: let it go first.
        dsn = parse_kv(_wait_event(inst, "queued", "dsn_failed", qid)[0])["dsn_qid"]
        _wait_event(inst, "queued", "removed", dsn)
        size = int(parse_kv(_event(inst, "queued", "queued", qid)[0])["size"])
        listing = _queue(inst)
        assert list(listing) == [qid], "listed %r" % list(listing)
        e = listing[qid]
        assert e["sender"] == SENDER and e["size"] == size and not e["held"], e
        assert e["arrival"].startswith(time.strftime("%Y-")), e["arrival"]
        assert e["rcpts"]["ok@example.net"].startswith("delivered"), e["rcpts"]
        g = e["rcpts"]["grey@example.net"]
        assert g.startswith("deferred") and grey in g and "attempts 1" in g, \
            "grey@ line %r lacks state, attempts and the reply %r" % (g, grey)

        show = _cli(inst, "queue", "show", qid).stdout
        assert ("queue id:  %s" % qid) in show and ("<%s>" % SENDER) in show, show
        assert re.search(r"(?m)^\s+<grey@example\.net> deferred", show) and grey in show, show
        assert re.search(r"(?m)^\s+<ok@example\.net> delivered", show), show
        assert re.search(r"(?m)^\s+<bad@example\.net> bounced", show) and nouser in show, show
        logpart = show.split("\nlog:\n", 1)
        assert len(logpart) == 2, "no log: section in `queue show`:\n%s" % show
        loglines = [l for l in logpart[1].splitlines() if l.strip()]
        assert loglines and all(("qid=%s" % qid) in l for l in loglines), loglines
        for comp, ev in (("smtpd", "accepted"), ("queued", "queued"), ("deliverd", "deferred"),
                         ("deliverd", "delivered")):
            assert any(" %s " % comp in l and "event=%s" % ev in l for l in loglines), \
                "`queue show` log lacks %s event=%s:\n%s" % (comp, ev, logpart[1])

        cp = _cli(inst, "queue", "show", "0123456789ABCDEF", ok=False)
        assert "no such message" in cp.stderr, cp.stderr
        _cli(inst, "queue", "show", "not-a-queue-id", ok=False)

        # The listing gives every recipient's last error, a bounce's too
        # (the admin sees why without `queue show`).
        b = e["rcpts"]["bad@example.net"]
        assert b.startswith("bounced") and nouser in b, \
            "`postern queue` line for a bounced recipient lacks its last error %r: %r" % (nouser, b)


def test_queue_delete_one_and_all():
    up = ScriptedUpstream(rcpt_reply=lambda c, a: BUSY % a)
    with relayed(up, settings=SLOW_RETRY) as inst:
        qids = [inst.send_ok(SENDER, ["d%d@example.net" % i], make_message(subject="del-%d" % i))
                for i in range(3)]
        for q in qids:
            _wait_event(inst, "queued", "scheduled", q)
        assert set(_queue(inst)) == set(qids)

        cp = _cli(inst, "queue", "delete", qids[0])
        assert cp.stdout.strip() == "%s: deleted" % qids[0], "delete printed %r" % cp.stdout
        _wait_event(inst, "queued", "deleted", qids[0])
        assert set(_queue(inst)) == set(qids[1:])
        for sub in ("queue", "state", "incoming"):
            assert qids[0] not in inst.spool_files(sub), "%s still in spool/%s" % (qids[0], sub)
        cp = _cli(inst, "queue", "delete", qids[0], ok=False)
        assert "no such message" in cp.stdout + cp.stderr, cp.stdout + cp.stderr
        _cli(inst, "queue", "delete", "nonsense", ok=False)

        cp = _cli(inst, "queue", "delete", "ALL")
        for q in qids[1:]:
            assert "%s: deleted" % q in cp.stdout, "delete ALL printed %r" % cp.stdout
        assert _queue(inst) == {}
        for sub in ("queue", "state", "incoming"):
            assert not inst.spool_files(sub), "spool/%s: %r" % (sub, inst.spool_files(sub))
        cp = _cli(inst, "queue", "delete", "ALL")
        assert "empty" in cp.stdout, "delete ALL on an empty queue printed %r" % cp.stdout
        # No DSN for deleted mail, nothing delivered.
        assert not up.messages
        assert not inst.find_log("queued", r"\bevent=dsn_")


def test_delete_during_a_delivery():
    """`queue delete` while a deliverd holds the message: it says so, and
    the message is removed when that delivery ends (here with a 451 that
    would otherwise mean a retry)."""
    entered = threading.Event()
    release = threading.Event()

    def hold(conn, env):
        entered.set()
        release.wait(scaled(30))
        return "451 4.3.0 try again later"

    up = ScriptedUpstream(data_reply=hold)
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 2}}) as inst:
        try:
            qid = inst.send_ok(SENDER, ["busy@example.net"], make_message(subject="delete-busy"))
            assert entered.wait(scaled(15)), "no delivery attempt reached the upstream"
            cp = _cli(inst, "queue", "delete", qid)
            assert cp.stdout.strip() == "%s: delivery in progress; deleted when it ends" % qid, \
                "delete during a delivery printed %r" % cp.stdout
            _wait_event(inst, "queued", "delete_requested", qid)
            assert qid in _queue(inst), "deleted before its delivery ended"
            release.set()
            _wait_event(inst, "queued", "deleted", qid)
            assert qid not in _queue(inst)
            for sub in ("queue", "state"):
                assert qid not in inst.spool_files(sub), "%s still in spool/%s" % (qid, sub)
            assert not _event(inst, "queued", "scheduled", qid), "a retry was scheduled"
            with up.cond:
                assert len(up.attempts) == 1, "tried %d times" % len(up.attempts)
        finally:
            release.set()      # before the cleanup, which would wait for the held session


def test_hold_release_flush():
    """With retry_min = 300: flush retries deferred mail now but not a
    held message (not even after a restart); release tries it at once."""
    accept = threading.Event()
    up = ScriptedUpstream(rcpt_reply=lambda c, a: None if accept.is_set() else BUSY % a)
    with relayed(up, settings=SLOW_RETRY) as inst:
        held = inst.send_ok(SENDER, ["held@example.net"], make_message(subject="held"))
        other = inst.send_ok(SENDER, ["other@example.net"], make_message(subject="other"))
        for q in (held, other):
            _wait_event(inst, "queued", "scheduled", q)

        cp = _cli(inst, "queue", "hold", held)
        assert cp.stdout.strip() == "%s: held" % held, cp.stdout
        _wait_event(inst, "queued", "held", held)
        assert "already held" in _cli(inst, "queue", "hold", held).stdout
        q = _queue(inst)
        assert q[held]["held"] and not q[other]["held"], q
        _cli(inst, "queue", "hold", "0123456789ABCDEF", ok=False)
        _cli(inst, "queue", "release", "0123456789ABCDEF", ok=False)

        # A restart keeps the hold (it is in the state file).
        inst.stop()
        inst.start()
        assert _queue(inst)[held]["held"], "the hold did not survive a restart"

        accept.set()
        mark = inst.log_mark()
        cp = _cli(inst, "flush")
        assert cp.stdout.strip() == "1 deferred message scheduled for delivery now", \
            "flush printed %r (the held message must not count)" % cp.stdout
        flush = inst.wait_log("queued", r"\bevent=flush\b", since=mark)
        assert parse_kv(flush[0]).get("messages") == "1", flush
        _wait_event(inst, "deliverd", "delivered", other, timeout=10)
        _wait_event(inst, "queued", "removed", other)
        assert not inst.find_log("deliverd", r"\bqid=%s\b" % held, since=mark), \
            "the held message was tried after flush"
        assert up.deliveries("held@example.net") == 0

        mark = inst.log_mark()
        t0 = time.monotonic()
        cp = _cli(inst, "queue", "release", held)
        assert cp.stdout.strip() == "%s: released" % held, cp.stdout
        _wait_event(inst, "deliverd", "delivered", held, timeout=10)
        assert time.monotonic() - t0 < scaled(10)
        _wait_event(inst, "queued", "removed", held)
        assert up.deliveries("held@example.net") == 1 and up.deliveries("other@example.net") == 1
        assert "0 deferred messages" in _cli(inst, "flush").stdout
        _cli(inst, "queue", "release", held, ok=False)


# ------------------------------------------------------------------ graceful stop

class _Dropped(Exception):
    pass


def _reply(sock, buf):
    """Read one SMTP reply; return (code, text, rest of buffer)."""
    lines = []
    while True:
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise _Dropped("connection closed (after %r)" % lines)
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        line = line.rstrip(b"\r").decode("utf-8", "replace")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), " / ".join(lines), buf


def _send_one(port, token, body):
    """One message on its own connection.  Returns (outcome, detail):
    accepted (detail = qid), refused (no session), tempfail (a 4xx/421 at
    any step), closed (the connection went away before DATA), lost (it
    went away after 354 without a final reply: never acceptable)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=scaled(20))
    except OSError as e:
        return "refused", str(e)
    buf = b""
    stage = "banner"
    try:
        code, text, buf = _reply(s, buf)
        if code != 220:
            return ("tempfail" if code // 100 == 4 else "error"), text
        stage = "envelope"
        for cmd in ("EHLO load.test", "MAIL FROM:<%s>" % SENDER, "RCPT TO:<load@example.net>", "DATA"):
            s.sendall(cmd.encode() + b"\r\n")
            code, text, buf = _reply(s, buf)
            if code // 100 == 4:
                return "tempfail", text
            if code not in (250, 354):
                return "error", "%s -> %s" % (cmd, text)
        stage = "data"
        msg = make_message(subject=token, body=body)
        s.sendall(msg + b"\r\n.\r\n")
        code, text, buf = _reply(s, buf)
        if code == 250:
            m = re.search(r"queued as (%s)" % QID_RE, text)
            return "accepted", m.group(1) if m else text
        return ("tempfail" if code // 100 == 4 else "error"), text
    except (_Dropped, OSError) as e:
        if stage == "banner":
            return "refused", str(e)
        return ("lost" if stage == "data" else "closed"), str(e)
    finally:
        try:
            s.close()
        except OSError:
            pass


def test_graceful_stop_under_load():
    """`postern stop` while clients send: whatever got 250 is delivered
    (before the stop or after the next start); an idle session gets 421;
    a session in the middle of DATA may finish and gets a final reply."""
    def slow(conn, env):
        time.sleep(0.05)        # a slowish smarthost, so mail queues up
        return None

    up = ScriptedUpstream(data_reply=slow)
    body = b"".join(b"load line %04d ..................................\r\n" % i for i in range(100))
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 2, "concurrency": 2}}) as inst:
        results = []
        lock = threading.Lock()
        stop_load = threading.Event()

        def load(i):
            # Until the listener is gone; paced so the stop finds clients
            # at every stage of a session, not a finished burst.
            for j in range(150):
                if stop_load.is_set():
                    return
                token = "load-%d-%d-%d" % (i, j, time.time_ns())
                outcome, detail = _send_one(inst.port, token, body)
                with lock:
                    results.append((token, outcome, detail))
                if outcome == "refused":
                    return
                time.sleep(0.03)

        threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(3)]
        for t in threads:
            t.start()

        # An idle session (after EHLO) and one in the middle of DATA.
        idle = postern.SMTPClient(inst.port)
        mid = postern.SMTPClient(inst.port)
        try:
            idle.expect("220")
            idle.cmd("EHLO idle.test", "250")
            mid.expect("220")
            mid.cmd("EHLO mid.test", "250")
            mid.cmd("MAIL FROM:<%s>" % SENDER, "250")
            mid.cmd("RCPT TO:<mid@example.net>", "250")
            mid.cmd("DATA", "354")
            mid_token = "mid-data-%d" % time.time_ns()
            msg = make_message(subject=mid_token, body=body)
            half = len(msg) // 2
            mid.send_raw(msg[:half])

            # Stop with some mail delivered and more still queued.
            wait_for(lambda: sum(1 for r in results if r[1] == "accepted") >= 15, 30,
                     what="15 messages accepted under load")
            up.wait_messages(3, timeout=20)
            mark = inst.log_mark()
            stopper_out = {}
            stopper = threading.Thread(target=lambda: stopper_out.update(cp=inst.stop(timeout=40)),
                                       daemon=True)
            stopper.start()
            inst.wait_log("smtpd", r"\bevent=stopping\b", since=mark, timeout=10)

            code, lines = idle.read_reply()
            assert code == 421, "idle session got %d %s at stop, expected 421" % (code, lines)
            mid.send_raw(msg[half:] + b"\r\n.\r\n")
            try:
                code, lines = mid.read_reply()
            except ConnectionError as e:
                raise AssertionError("a session in the middle of DATA was dropped at stop "
                                     "without a reply: %s" % e)
            assert code == 250 or code // 100 == 4, "mid-DATA session got %d %s" % (code, lines)
            mid_qid = None
            if code == 250:
                mid_qid = re.search(r"queued as (%s)" % QID_RE, " ".join(lines)).group(1)
                results.append((mid_token, "accepted", mid_qid))
        finally:
            idle.close()
            mid.close()

        stopper.join(scaled(45))
        assert not stopper.is_alive(), "`postern stop` did not return"
        cp = stopper_out.get("cp")
        assert cp is not None and cp.returncode == 0, "`postern stop`: %r" % cp
        stop_load.set()
        for t in threads:
            t.join(scaled(30))
        assert not any(t.is_alive() for t in threads), "a load client hung"

        with lock:
            res = list(results)
        accepted = {tok: det for tok, out, det in res if out == "accepted"}
        by = {}
        for _, out, _ in res:
            by[out] = by.get(out, 0) + 1
        delivered_before = {tok for tok in accepted if up.with_token(tok)}
        in_spool = set(inst.spool_files("incoming")) | set(inst.spool_files("queue"))
        missing = [(tok, q) for tok, q in accepted.items()
                   if tok not in delivered_before and q not in in_spool]
        crashes = inst.find_log("master", r"\bevent=exited\b.*status=\"signal", since=mark)
        print("outcomes %r; delivered before restart %d of %d accepted; %d in the spool; "
              "children killed by a signal during stop: %d"
              % (by, len(delivered_before), len(accepted), len(in_spool), len(crashes)))
        for l in crashes:
            print("  " + l)
        lost = [r for r in res if r[1] in ("lost", "error")]
        assert not lost, "clients lost after 354 or got errors: %r" % lost[:5]
        assert not missing, "%d message(s) got 250 but are neither delivered nor in the spool " \
            "after stop: %r" % (len(missing), missing[:5])

        inst.start()
        up.wait(lambda: all(any(tok.encode() in m["content"] for m in up.messages) for tok in accepted),
                30, "every accepted message to arrive after the restart")
        dups = sum(max(0, len(up.with_token(tok)) - 1) for tok in accepted)
        print("after restart: %d accepted, all delivered, %d duplicate(s)" % (len(accepted), dups))


test_graceful_stop_under_load.timeout = 120
