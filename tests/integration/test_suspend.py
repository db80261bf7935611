"""A dead next hop is suspended: after its every host failed as a whole,
queued defers the rest of its mail without a connection ("delivery
temporarily suspended") until queue.retry_min has passed or the admin runs
`postern flush`; then everything is delivered exactly once.  Issue #8 (a
dead smarthost with 100,000 queued messages cost one connection attempt
per message per retry round)."""

import postern
from postern import make_message, parse_kv, wait_for
from upstreams import ScriptedUpstream

SENDER = "user@example.org"
N = 30


def test_dead_smarthost_is_suspended_then_flushed():
    up = ScriptedUpstream()          # not started yet: its port refuses
    settings = {"queue": {"retry_min": 300, "retry_max": 600, "per_destination": 2}}
    with postern.Instance(relay=postern.relay_settings(up.port), settings=settings) as inst:
        inst.start()
        qids = [inst.send_ok(SENDER, ["dead%d@example.net" % i], make_message(subject="dead-%d" % i))
                for i in range(N)]
        line = inst.wait_log("queued", r"\bevent=destination_suspended\b")[0]
        kv = parse_kv(line)
        assert kv["transport"] == "relay" and kv["nexthop"] == "127.0.0.1", kv
        assert "Connection refused" in kv["reason"], kv
        assert kv["seconds"] == "300", kv
        # Every message is deferred; only a few ever tried to connect.
        deferred = lambda: {parse_kv(l)["qid"] for l in
                            inst.find_log("queued", r"\bevent=scheduled\b")}
        wait_for(lambda: deferred() >= set(qids), timeout=20, what="all %d messages deferred" % N)
        tried = inst.find_log("deliverd", r"\bevent=host_failed\b")
        assert 1 <= len(tried) <= 2 * settings["queue"]["per_destination"], \
            "%d connection attempts for %d messages to a dead smarthost" % (len(tried), N)
        suspended = inst.find_log("queued", r"\bevent=deferred\b.*delivery temporarily suspended")
        assert len(suspended) >= N - 2 * settings["queue"]["per_destination"], len(suspended)
        assert all("retry_in=" in l for l in suspended)
        # `postern queue` shows the reason the admin needs.
        out = inst.cli("queue").stdout
        assert "delivery temporarily suspended" in out and "Connection refused" in out, out

        # The smarthost is back: flush delivers everything, once.
        up.start()
        try:
            cp = inst.cli("flush")
            assert cp.returncode == 0, cp.stderr
            inst.wait_log("queued", r"\bevent=destination_resumed\b.*reason=\"admin flush\"")
            up.wait_messages(N, timeout=30)
            for q in qids:
                inst.wait_log("queued", r"\bevent=removed qid=%s\b" % q, timeout=30)
            with up.cond:
                subjects = sorted(m["content"].split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
                                  for m in up.messages)
            assert subjects == sorted(b"dead-%d" % i for i in range(N)), subjects
        finally:
            up.stop()


def test_suspension_ends_when_a_probe_gets_through():
    """Without a flush: once queue.retry_min has passed, the next attempt
    is a probe; when it is delivered the suspension ends and the rest
    follows without waiting for another round."""
    up = ScriptedUpstream()
    settings = {"queue": {"retry_min": 2, "retry_max": 2, "per_destination": 1}}
    with postern.Instance(relay=postern.relay_settings(up.port), settings=settings) as inst:
        inst.start()
        qids = [inst.send_ok(SENDER, ["probe%d@example.net" % i], make_message(subject="p-%d" % i))
                for i in range(5)]
        inst.wait_log("queued", r"\bevent=destination_suspended\b")
        wait_for(lambda: {parse_kv(l)["qid"] for l in inst.find_log("queued", r"\bevent=scheduled\b")}
                 >= set(qids), timeout=20, what="all 5 deferred")
        up.start()
        try:
            line = inst.wait_log("queued", r"\bevent=destination_resumed\b", timeout=20)[0]
            assert parse_kv(line)["reason"] == "a delivery got through", line
            up.wait_messages(5, timeout=30)
            for q in qids:
                inst.wait_log("queued", r"\bevent=removed qid=%s\b" % q, timeout=20)
            with up.cond:
                assert len(up.messages) == 5, len(up.messages)
        finally:
            up.stop()
