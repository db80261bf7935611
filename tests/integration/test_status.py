"""`postern status` and `postern status --json`: every component with pid,
state, uptime, restarts and last exit, and the queue read from the spool
(messages per state, the oldest message's age)."""

import json

import postern
from postern import Instance, Upstream, make_message, wait_for


def status_json(inst):
    cp = inst.cli("status", "--json")
    assert cp.returncode == 0, "`postern status --json` exited %d: %s%s" % (
        cp.returncode, cp.stdout, cp.stderr)
    try:
        return json.loads(cp.stdout)
    except ValueError as e:
        raise AssertionError("status --json is not JSON (%s): %r" % (e, cp.stdout))


def test_status_json_components_and_queue():
    # The upstream defers one recipient, so one message stays in the queue.
    up = Upstream(rcpt_reply=lambda a: "451 4.7.1 try later" if a.startswith("later") else None)
    up.start()
    try:
        with Instance(relay=up.port,
                      settings={"queue": {"retry_min": 3600, "retry_max": 3600,
                                          "concurrency": 5}}) as inst:
            inst.start()
            st = status_json(inst)
            names = [c["name"] for c in st["components"]]
            assert names[0] == "master", names
            assert names.count("smtpd") == 1 and names.count("queued") == 1, names
            # The deliverd pool starts at its minimum (2); the 3 more that
            # queue.concurrency allows run only when queued asks for them.
            assert names.count("deliverd") == 2, names
            pids = inst.pids()
            for c in st["components"]:
                assert isinstance(c["pid"], int) and c["pid"] > 0, c
                assert c["state"] in ("running", "ready"), c
                assert isinstance(c["uptime"], int) and c["uptime"] >= 0, c
                assert c["restarts"] == 0, c
                assert c["last_exit"] is None, c
            assert st["components"][0]["pid"] == pids["master"]
            q = st["queue"]
            assert q["messages"] == 0 and q["oldest_age"] is None, q

            inst.send_ok("user@example.org", ["now@example.net"], make_message())
            qid = inst.send_ok("user@example.org", ["later@example.net"], make_message())
            up.wait_messages(1)
            inst.wait_log("queued", r"event=scheduled qid=%s\b" % qid)
            q = wait_for(lambda: (lambda s: s if s["messages"] == 1 else None)(status_json(inst)["queue"]),
                         10, what="one message left in the queue")
            assert q["deferred"] == 1 and q["active"] == 0 and q["held"] == 0, q
            assert isinstance(q["oldest_age"], int) and 0 <= q["oldest_age"] < 120, q

            # A restarted component shows its restart count and why it exited.
            old = inst.pids()["smtpd"]
            inst.cli("restart", "smtpd", check=True)
            wait_for(lambda: inst.pids()["smtpd"] not in (0, old), 10, what="a new smtpd")
            smtpd = [c for c in status_json(inst)["components"] if c["name"] == "smtpd"][0]
            assert smtpd["restarts"] == 1 and smtpd["last_exit"], smtpd

            # The plain status has the same queue summary.
            cp = inst.cli("status", check=True)
            assert "queue: 1 message: active 0, deferred 1, held 0" in cp.stdout, cp.stdout
    finally:
        up.stop()


def test_status_not_running():
    with Instance() as inst:
        cp = inst.cli("status", "--json")
        assert cp.returncode == 1 and "not running" in cp.stderr, (cp.returncode, cp.stderr)
