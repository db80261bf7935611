"""The SMTP client side of deliverd against upstreams that misbehave:
per-recipient 2xx/4xx/5xx, refused connections, a connection dropped in
mid-DATA, 421, connection reuse with RSET, PIPELINING, fallback smarthosts.
Issue #4 ("queued and delivered: retries, bounces, crash safety")."""

import threading
import time

import postern
from postern import make_message, free_port, parse_kv
from upstreams import ScriptedUpstream, relayed, DROP, DROP_MID_DATA

SENDER = "user@example.org"
FAST = {"queue": {"retry_min": 1, "retry_max": 2, "lifetime": 120}}


def _lines(inst, event, qid, rcpt=None, comp="deliverd"):
    rx = r"\bevent=%s\b.*\bqid=%s\b" % (event, qid)
    if rcpt:
        rx += r".*\brcpt=<%s>" % rcpt
    return inst.find_log(comp, rx)


def _wait_event(inst, event, qid, rcpt=None, count=1, timeout=15, comp="deliverd"):
    rx = r"\bevent=%s\b.*\bqid=%s\b" % (event, qid)
    if rcpt:
        rx += r".*\brcpt=<%s>" % rcpt
    return inst.wait_log(comp, rx, timeout=timeout, count=count)


def _queue_text(inst):
    cp = inst.cli("queue")
    assert cp.returncode == 0, "`postern queue` exited %d: %s%s" % (cp.returncode, cp.stdout, cp.stderr)
    return cp.stdout


def _recipient_line(listing, rcpt):
    for l in listing.splitlines():
        if l.strip().startswith("<%s>" % rcpt):
            return l.strip()
    return None


# ------------------------------------------------------------------ per-recipient outcomes

def test_per_recipient_outcomes_and_no_resend():
    """ok@ gets 250, tmp@ 451 (until we say so), bad@ 550: one delivered,
    one deferred with the reason, one bounced with a DSN; the retries
    name only tmp@, so ok@ is never sent twice."""
    tmp_ok = threading.Event()
    busy = "451 4.2.1 <tmp@example.net>: mailbox busy, try later"
    nouser = "550 5.1.1 <bad@example.net>: no such user here"

    def rcpt(conn, addr):
        if addr == "bad@example.net":
            return nouser
        if addr == "tmp@example.net" and not tmp_ok.is_set():
            return busy
        return None

    up = ScriptedUpstream(rcpt_reply=rcpt)
    with relayed(up, settings=FAST) as inst:
        rcpts = ["ok@example.net", "tmp@example.net", "bad@example.net"]
        tag = "outcomes-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, rcpts, make_message(subject=tag, to=", ".join(rcpts)))

        d = parse_kv(_wait_event(inst, "delivered", qid, "ok@example.net")[0])
        assert d.get("reply", "").startswith("250"), "delivered reply=%r" % d.get("reply")
        b = parse_kv(_wait_event(inst, "bounced", qid, "bad@example.net")[0])
        # The upstream's exact words, then "(in reply to RCPT TO)".
        assert b.get("reply", "").startswith(nouser), \
            "bounced reply=%r, upstream said %r" % (b.get("reply"), nouser)
        # Two attempts for tmp@ prove a retry happened before we look.
        lines = _wait_event(inst, "deferred", qid, "tmp@example.net", count=2, timeout=20)
        for l in lines:
            kv = parse_kv(l)
            assert kv.get("reply", "").startswith(busy), \
                "deferred reply=%r, upstream said %r" % (kv.get("reply"), busy)
            assert kv.get("relay") == "127.0.0.1:%d" % up.port, "deferred relay=%r" % kv.get("relay")

        listing = _queue_text(inst)
        assert qid in listing, "`postern queue` does not list %s:\n%s" % (qid, listing)
        line = _recipient_line(listing, "tmp@example.net")
        assert line and "deferred" in line and busy in line, \
            "`postern queue` line for tmp@ lacks 'deferred' and the reply %r: %r" % (busy, line)
        line = _recipient_line(listing, "ok@example.net")
        assert line and "delivered" in line, "`postern queue` line for ok@: %r" % line
        line = _recipient_line(listing, "bad@example.net")
        assert line and "bounced" in line, "`postern queue` line for bad@: %r" % line

        tmp_ok.set()
        _wait_event(inst, "delivered", qid, "tmp@example.net", timeout=20)
        _wait_event(inst, "removed", qid, comp="queued")

        # The DSN for bad@ went to the sender with a null reverse path.
        dsn = up.wait(lambda: [m for m in up.messages if m["mail_from"] == ""], 15, "a DSN")
        assert len(dsn) == 1 and dsn[0]["rcpt_tos"] == [SENDER], \
            "DSNs: %r" % [(m["mail_from"], m["rcpt_tos"]) for m in dsn]
        assert b"bad@example.net" in dsn[0]["content"] and b"tmp@example.net" not in \
            dsn[0]["content"].split(b"text/rfc822-headers")[0], "the DSN names the wrong recipients"

        assert up.deliveries("ok@example.net") == 1, "ok@ delivered %d times" % up.deliveries("ok@example.net")
        assert up.deliveries("tmp@example.net") == 1, "tmp@ delivered %d times" % up.deliveries("tmp@example.net")
        assert up.deliveries("bad@example.net") == 0
        assert up.rcpt_commands("ok@example.net") == 1, \
            "RCPT TO:<ok@example.net> sent %d times: an accepted recipient was sent again" \
            % up.rcpt_commands("ok@example.net")
        assert up.rcpt_commands("bad@example.net") == 1, \
            "RCPT TO:<bad@example.net> sent %d times: a bounced recipient was retried" \
            % up.rcpt_commands("bad@example.net")
        n_tmp = up.rcpt_commands("tmp@example.net")
        assert n_tmp >= 3, "tmp@ tried %d times, expected at least 3" % n_tmp


def test_connection_refused_is_deferred_then_delivered():
    port = free_port()   # nobody listens yet
    with postern.Instance(relay=port, settings=FAST) as inst:
        inst.start()
        tag = "refused-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, ["far@example.net"], make_message(subject=tag))
        kv = parse_kv(_wait_event(inst, "deferred", qid, "far@example.net")[0])
        assert "refused" in kv.get("reply", "").lower() and str(port) in kv.get("reply", ""), \
            "deferred reply=%r does not say the connection to port %d was refused" % (kv.get("reply"), port)
        inst.wait_log("deliverd", r"\bevent=host_failed\b.*:%d\b" % port)
        line = _recipient_line(_queue_text(inst), "far@example.net")
        assert line and "deferred" in line and "refused" in line.lower(), \
            "`postern queue` shows %r for a refused connection" % line
        up = ScriptedUpstream(port=port).start()
        try:
            up.wait_messages(1, timeout=20)
            _wait_event(inst, "removed", qid, comp="queued")
            assert len(up.with_token(tag)) == 1
        finally:
            up.stop()


def test_connection_dropped_mid_data_defers_every_recipient():
    """Attempt 1: the upstream closes the connection in the middle of the
    data; attempt 2: it reads all the data and closes without a reply;
    attempt 3: accepted.  Both recipients were accepted at RCPT each time,
    so both are deferred until the end of data is answered."""
    n = {"data": 0}
    lock = threading.Lock()

    def data_cmd(conn, env):
        with lock:
            n["data"] += 1
            return DROP_MID_DATA if n["data"] == 1 else None

    def data(conn, env):
        with lock:
            return DROP if n["data"] == 2 else None

    # A body bigger than a socket buffer, so the drop really is in mid-stream.
    body = b"".join(b"line %06d of a long message body ........................\r\n" % i
                    for i in range(20000))
    up = ScriptedUpstream(data_cmd_reply=data_cmd, data_reply=data)
    with relayed(up, settings=FAST) as inst:
        rcpts = ["one@example.net", "two@example.net"]
        tag = "drop-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, rcpts, make_message(subject=tag, body=body))
        up.wait_messages(1, timeout=30)
        _wait_event(inst, "removed", qid, comp="queued")
        for r in rcpts:
            deferred = _lines(inst, "deferred", qid, r)
            assert len(deferred) == 2, "%s deferred %d times, expected 2 (drop mid-data, drop " \
                "before the reply): %r" % (r, len(deferred), deferred)
            for l in deferred:
                reply = parse_kv(l).get("reply", "")
                assert "lost connection" in reply or "reset" in reply.lower(), \
                    "deferred reply=%r does not say the connection was lost" % reply
            assert len(_lines(inst, "delivered", qid, r)) == 1
            assert up.deliveries(r) == 1, "%s accepted %d times upstream" % (r, up.deliveries(r))
        got = up.with_token(tag)
        assert len(got) == 1 and got[0]["content"].endswith(body), "the accepted copy is not whole"
        assert [a["outcome"] for a in up.attempts][:2] == ["dropped mid-data", "dropped before the reply"]


def test_421_defers_the_whole_transaction():
    """421 after one recipient was accepted, then 421 at the end of data:
    every recipient of the transaction is deferred both times, and each is
    delivered exactly once in the end."""
    n = {"rcpt421": 0, "data421": 0}
    lock = threading.Lock()

    def rcpt(conn, addr):
        with lock:
            if addr == "second@example.net" and n["rcpt421"] == 0:
                n["rcpt421"] += 1
                return "421 4.3.2 Service shutting down, closing transmission channel"
        return None

    def data(conn, env):
        with lock:
            if n["data421"] == 0:
                n["data421"] += 1
                return "421 4.3.2 Out of resources after the data"
        return None

    up = ScriptedUpstream(rcpt_reply=rcpt, data_reply=data)
    with relayed(up, settings=FAST) as inst:
        rcpts = ["first@example.net", "second@example.net"]
        tag = "421-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, rcpts, make_message(subject=tag))
        up.wait_messages(1, timeout=30)
        _wait_event(inst, "removed", qid, comp="queued")
        for r in rcpts:
            deferred = [parse_kv(l).get("reply", "") for l in _lines(inst, "deferred", qid, r)]
            assert len(deferred) == 2, "%s deferred %d times, expected 2: %r" % (r, len(deferred), deferred)
            assert "421 4.3.2 Service shutting down" in deferred[0], "first deferral: %r" % deferred[0]
            assert "421 4.3.2 Out of resources" in deferred[1], "second deferral: %r" % deferred[1]
            assert up.deliveries(r) == 1, "%s delivered %d times" % (r, up.deliveries(r))
        assert not _lines(inst, "bounced", qid), "a 421 made something bounce"


# ------------------------------------------------------------------ connection reuse

def test_connection_reuse_with_rset():
    """Messages sent in a row reach the smarthost over fewer connections
    than messages; a reused connection has RSET between transactions."""
    up = ScriptedUpstream()
    with relayed(up, settings={"queue": {"concurrency": 2}}) as inst:
        n = 6
        qids = []
        for i in range(n):
            qids.append(inst.send_ok(SENDER, ["reuse%d@example.net" % i],
                                     make_message(subject="reuse-%d" % i)))
        msgs = up.wait_messages(n, timeout=20)
        conns = sorted({m["conn"] for m in msgs})
        with up.cond:
            detail = [(c.serial, c.commands) for c in up.connections]
        assert len(conns) < n, "%d messages over %d connections: no reuse\n%r" % (n, len(conns), detail)
        reused = [c for c in up.connections if c.commands.count("MAIL") >= 2]
        assert reused, "no connection carried two transactions: %r" % detail
        for c in reused:
            cmds = c.commands
            mails = [i for i, v in enumerate(cmds) if v == "MAIL"]
            for a, b in zip(mails, mails[1:]):
                assert "RSET" in cmds[a:b], "no RSET between two transactions on connection %d: %r" \
                    % (c.serial, cmds)
            assert cmds.count("EHLO") + cmds.count("HELO") == 1, "EHLO repeated on a reused connection"
            assert not c.pipelined, "pipelined commands although PIPELINING was not offered: %r" % cmds
        # The idle connection is closed with QUIT after a while.
        up.wait(lambda: all(c.closed for c in up.connections), 20, "idle connections to be closed")
        with up.cond:
            assert all(c.quit for c in up.connections), \
                "a connection was closed without QUIT: %r" % [(c.serial, c.commands) for c in up.connections]


def test_cached_connection_closed_by_the_server_is_replaced():
    """The upstream hangs up after each transaction: the connection
    deliverd kept for reuse is dead, so the next message must go over a
    new one without a deferral."""
    _cached_connection_closed(pipelining=False)


def test_cached_connection_closed_with_pipelined_rset_is_replaced():
    """The same with PIPELINING, where the RSET that probes a kept
    connection travels in one write with MAIL, RCPT and DATA: its missing
    reply must send the whole envelope again over a new connection."""
    _cached_connection_closed(pipelining=True)


def _cached_connection_closed(pipelining):
    up = ScriptedUpstream(pipelining=pipelining, close_after_data=lambda conn: True)
    with relayed(up, settings=FAST) as inst:
        q1 = inst.send_ok(SENDER, ["c1@example.net"], make_message(subject="cached-1"))
        up.wait_messages(1)
        up.wait(lambda: up.connections[0].closed, 10, "the upstream to hang up")
        _wait_event(inst, "delivered", q1)
        q2 = inst.send_ok(SENDER, ["c2@example.net"], make_message(subject="cached-2"))
        up.wait_messages(2)
        _wait_event(inst, "delivered", q2)
        assert not inst.find_log("deliverd", r"\bevent=deferred\b"), \
            "a dead cached connection caused a deferral: %r" % inst.find_log("deliverd", r"event=deferred")
        with up.cond:
            assert len(up.connections) >= 2 and up.messages[0]["conn"] != up.messages[1]["conn"], \
                up.connections


def test_pipelining_when_offered():
    """With PIPELINING offered the envelope goes in one write; replies are
    still matched to the right recipients (one 550 among 250s), and a
    transaction whose every recipient is refused (DATA answered 554)
    leaves the connection in step for the next message."""
    def rcpt(conn, addr):
        if addr.startswith("no"):
            return "550 5.1.1 <%s>: unknown user" % addr
        return None

    up = ScriptedUpstream(pipelining=True, rcpt_reply=rcpt)
    with relayed(up, settings=FAST) as inst:
        rcpts = ["p1@example.net", "no1@example.net", "p2@example.net"]
        q1 = inst.send_ok(SENDER, rcpts, make_message(subject="pipe-1"))
        _wait_event(inst, "removed", q1, comp="queued", timeout=20)
        assert {parse_kv(l)["rcpt"] for l in _lines(inst, "delivered", q1)} == \
            {"<p1@example.net>", "<p2@example.net>"}
        b = _lines(inst, "bounced", q1)
        assert len(b) == 1 and parse_kv(b[0]).get("rcpt") == "<no1@example.net>", "bounced: %r" % b
        assert "550 5.1.1 <no1@example.net>" in parse_kv(b[0]).get("reply", ""), b
        q2 = inst.send_ok("nobody-cares@example.org", ["no2@example.net", "no3@example.net"],
                          make_message(subject="pipe-2"))
        assert len(_wait_event(inst, "bounced", q2, count=2, timeout=20)) == 2
        q3 = inst.send_ok(SENDER, ["p3@example.net"], make_message(subject="pipe-3"))
        _wait_event(inst, "delivered", q3, "p3@example.net", timeout=20)
        with up.cond:
            conns = list(up.connections)
        assert any(c.pipelined for c in conns), \
            "PIPELINING was offered but every command waited for its reply: %r" % conns
        for m in up.snapshot():
            assert not [r for r in m["rcpt_tos"] if r.startswith("no")]
        assert up.deliveries("p1@example.net") == 1 and up.deliveries("p2@example.net") == 1
        assert up.deliveries("p3@example.net") == 1


# ------------------------------------------------------------------ fallback smarthosts

def test_fallback_when_first_smarthost_refuses_connections():
    closed = free_port()
    good = ScriptedUpstream()
    relay = {"host": "127.0.0.1", "port": closed, "tls": "none",
             "fallback": ["127.0.0.1:%d" % good.port]}
    with relayed(good, relay=relay, settings=FAST) as inst:
        tag = "fallback-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, ["fb@example.net"], make_message(subject=tag))
        good.wait_messages(1)
        kv = parse_kv(_wait_event(inst, "delivered", qid, "fb@example.net")[0])
        assert kv.get("relay") == "127.0.0.1:%d" % good.port, "delivered via %r" % kv.get("relay")
        hf = inst.find_log("deliverd", r"\bevent=host_failed\b.*127\.0\.0\.1:%d\b" % closed)
        assert hf, "no event=host_failed for the closed smarthost"
        assert not _lines(inst, "deferred", qid), "deferred although the fallback took it"
        assert len(good.with_token(tag)) == 1


def test_fallback_when_first_smarthost_answers_451_to_mail():
    first = ScriptedUpstream(mail_reply=lambda c, s: "451 4.3.0 Try another host, I am busy")
    second = ScriptedUpstream()
    first.start()
    try:
        relay = {"host": "127.0.0.1", "port": first.port, "tls": "none",
                 "fallback": ["127.0.0.1:%d" % second.port]}
        with relayed(second, relay=relay, settings=FAST) as inst:
            tag = "fallback451-%d" % time.time_ns()
            qid = inst.send_ok(SENDER, ["fb@example.net"], make_message(subject=tag))
            second.wait_messages(1)
            kv = parse_kv(_wait_event(inst, "delivered", qid, "fb@example.net")[0])
            assert kv.get("relay") == "127.0.0.1:%d" % second.port, "delivered via %r" % kv.get("relay")
            hf = inst.find_log("deliverd", r"\bevent=host_failed\b.*127\.0\.0\.1:%d\b" % first.port)
            assert hf and "451 4.3.0 Try another host" in parse_kv(hf[0]).get("error", ""), \
                "host_failed for the first smarthost: %r" % hf
            with first.cond:
                assert first.connections and "MAIL" in first.connections[0].commands, \
                    "the first smarthost was not asked: %r" % first.connections
            assert not first.messages
            assert len(second.with_token(tag)) == 1
    finally:
        first.stop()
