"""The on-demand deliverd pool (issue #8): the master starts the minimum
(2, or queue.concurrency if smaller); queued asks for one more while jobs
wait and no deliverd is idle, never beyond queue.concurrency (nor beyond
what queue.per_destination lets run); a deliverd idle for queue.max_idle
retires (event=retired, exit 0, not restarted and not counted as a
restart); a job is never lost to a retirement; a deliverd killed while
busy is restarted and its message retried as before."""

import os
import re
import signal
import threading
import time

import postern
from postern import free_port, make_message, pid_alive, wait_for
from upstreams import ScriptedUpstream, relayed
from test_metrics import scrape, val, wait_metric

SENDER = "app@example.org"
POOL_MIN = 2


def deliverd_pids(inst):
    return inst.pids()["deliverd"]


def deliverd_rows(inst):
    return [r for r in inst.status() if r["name"] == "deliverd"]


def wait_pool(inst, n, timeout=15):
    """Wait until `postern status` lists exactly n deliverd, all ready."""
    return wait_for(lambda: (lambda rows: rows if len(rows) == n and all(
                        r["state"] == "ready" for r in rows) else None)(deliverd_rows(inst)),
                    timeout, what="%d ready deliverd in `postern status`" % n)


class Gate:
    """A data_reply hook that holds every transaction until open() (one
    upstream thread per connection, so each deliverd waits on its own),
    counting how many are held at once."""

    def __init__(self, reply_when_released=None, hold_while=None):
        self.ev = threading.Event()
        self.lock = threading.Lock()
        self.held = 0
        self.peak = 0
        self.reply = reply_when_released
        self.hold_while = hold_while or (lambda: True)

    def __call__(self, conn, env):
        if not self.hold_while():
            return None
        with self.lock:
            self.held += 1
            self.peak = max(self.peak, self.held)
        try:
            self.ev.wait(postern.scaled(60))
        finally:
            with self.lock:
                self.held -= 1
        return self.reply

    def wait_held(self, n, timeout=20):
        return wait_for(lambda: self.held >= n, timeout,
                        what="%d transactions held at the upstream (held %d)" % (n, self.held))

    def open(self):
        self.ev.set()


def send_many(inst, n, tag):
    """n messages, one recipient each; returns [(qid, rcpt)]."""
    out = []
    for i in range(n):
        rcpt = "%s-%d@example.net" % (tag, i)
        out.append((inst.send_ok(SENDER, [rcpt], make_message(subject="%s %d" % (tag, i), to=rcpt)),
                    rcpt))
    return out


def assert_delivered_once(inst, up, sent, timeout=30):
    up.wait(lambda: all(up.deliveries(r) >= 1 for _, r in sent), timeout,
            "every message accepted by the upstream")
    for qid, _ in sent:
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid, timeout=15)
    dup = {r: up.deliveries(r) for _, r in sent if up.deliveries(r) != 1}
    assert not dup, "delivered more than once: %r" % dup


def master_deliverd_events(inst, event, since):
    return inst.find_log("master", r"\bevent=%s\b.*\bcomponent=deliverd\b" % event, since=since)


def test_pool_starts_at_minimum():
    """Only the minimum runs at start, whatever queue.concurrency allows;
    a concurrency below the minimum is the whole pool."""
    with postern.Instance(settings={"queue": {"concurrency": 20}}) as inst:
        inst.start()
        rows = deliverd_rows(inst)
        assert len(rows) == POOL_MIN, "deliverd at start with concurrency 20: %r" % rows
        spawned = inst.find_log("master", r"\bevent=spawned\b.*\bcomponent=deliverd\b")
        assert len(spawned) == POOL_MIN, spawned
        ready = inst.find_log("master", r"\bevent=ready\b")
        assert ready and "components=%d" % (2 + POOL_MIN) in ready[-1], ready
    with postern.Instance(settings={"queue": {"concurrency": 1}}) as inst:
        inst.start()
        assert len(deliverd_rows(inst)) == 1, inst.status()


def test_pool_grows_to_concurrency_then_retires():
    """A burst to a slow upstream grows the pool to queue.concurrency and
    no further; with max_idle = 1 the extra ones retire afterwards, the
    master restarts none of them, and every message arrives once."""
    gate = Gate()
    up = ScriptedUpstream(data_reply=gate)
    settings = {"queue": {"concurrency": 4, "per_destination": 10, "max_idle": 1}}
    with relayed(up, settings=settings) as inst:
        wait_pool(inst, POOL_MIN)
        mark = inst.log_mark()
        sent = send_many(inst, 8, "burst")
        gate.wait_held(4)
        rows = wait_pool(inst, 4)
        # The four others wait in queued: the pool is at its limit and
        # stays there (the master refuses, queued stops asking).
        deadline = time.monotonic() + postern.scaled(1.5)
        while time.monotonic() < deadline:
            n = len(deliverd_rows(inst))
            assert n <= 4, "%d deliverd with queue.concurrency = 4" % n
            assert gate.held <= 4, "%d transactions at once with 4 deliverd" % gate.held
            time.sleep(0.1)
        grow = inst.find_log("master", r"\bevent=pool_grow\b", since=mark)
        assert len(grow) == 2, grow
        assert all(int(postern.parse_kv(l)["processes"]) <= 4 for l in grow), grow
        grown = {r["pid"] for r in rows}

        gate.open()
        assert_delivered_once(inst, up, sent)
        assert gate.peak == 4, gate.peak
        assert not inst.find_log("deliverd", r"\bevent=deferred\b", since=mark)

        # Back to the minimum: two retire, each logged by itself and by the master.
        retired = inst.wait_log("deliverd", r"\bevent=retired idle=\d+s\b", since=mark, count=2,
                                timeout=15)
        rows = wait_pool(inst, POOL_MIN)
        assert {r["pid"] for r in rows} < grown, (rows, grown)
        gone = grown - {r["pid"] for r in rows}
        wait_for(lambda: not any(pid_alive(p) for p in gone), 5, what="retired deliverd to exit")
        mlines = master_deliverd_events(inst, "retired", mark)
        assert len(mlines) == 2, mlines
        assert {int(postern.parse_kv(l)["pid"]) for l in mlines} == gone, (mlines, gone)
        assert len(inst.find_log("queued", r"\bevent=worker_retired\b", since=mark)) == 2
        for ev in ("restarted", "exited", "throttled"):
            assert not master_deliverd_events(inst, ev, mark), \
                "master %s a retired deliverd: %r" % (ev, master_deliverd_events(inst, ev, mark))
        assert all(r["restarts"] == "0" for r in inst.status()), inst.status()
        assert len(retired) == 2, retired

        # And it grows again when needed.
        more = send_many(inst, 3, "again")
        assert_delivered_once(inst, up, more)


def test_pool_bounded_by_per_destination():
    """One smarthost and per_destination = 3: a fourth deliverd could only
    wait, so the pool stops at 3 although concurrency allows 6."""
    gate = Gate()
    up = ScriptedUpstream(data_reply=gate)
    settings = {"queue": {"concurrency": 6, "per_destination": 3}}
    with relayed(up, settings=settings) as inst:
        wait_pool(inst, POOL_MIN)
        sent = send_many(inst, 6, "hop")
        gate.wait_held(3)
        wait_pool(inst, 3)
        deadline = time.monotonic() + postern.scaled(1.5)
        while time.monotonic() < deadline:
            assert len(deliverd_rows(inst)) == 3, inst.status()
            time.sleep(0.1)
        gate.open()
        assert_delivered_once(inst, up, sent)
        assert gate.peak == 3, gate.peak


class SlowQuitUpstream(ScriptedUpstream):
    """Answers QUIT after quit_delay seconds.  A deliverd that reaches
    max_idle closes its kept connection (QUIT) before it asks to retire, so
    for that long queued still counts it idle and may send it a JOB: the
    JOB and the RETIRE cross on the channel."""

    quit_delay = 0.5

    def _reply(self, io, conn, text):
        if isinstance(text, str) and text.startswith("221"):
            time.sleep(self.quit_delay)
        return super()._reply(io, conn, text)


def test_pool_retirement_never_loses_a_job():
    """Messages arrive while deliverd keep reaching max_idle = 1 and asking
    to retire, so JOBs and RETIREs cross: queued refuses those retirements,
    every message is delivered exactly once, no job is deferred for a
    vanished agent, and agents did retire."""
    # A transaction takes 0.3 s, so a burst of 4 needs 4 agents.
    up = SlowQuitUpstream(data_reply=lambda conn, env: time.sleep(0.3))
    settings = {"queue": {"concurrency": 4, "per_destination": 10, "max_idle": 1},
                "log": {"queued": {"level": "debug"}}}
    with relayed(up, settings=settings) as inst:
        wait_pool(inst, POOL_MIN)
        mark = inst.log_mark()
        sent = []
        # The load's shape, not a wait: bursts that grow the pool, then
        # messages spaced about max_idle (plus a transaction) apart, when
        # idle agents ask to retire.
        gaps = [0.0, 1.2, 1.3, 1.25, 1.35, 0.0, 1.3, 1.28, 1.32, 1.26, 0.0, 1.3, 1.24, 1.36]
        for rnd, gap in enumerate(gaps):
            time.sleep(gap)
            sent += send_many(inst, 4 if gap == 0.0 else 2, "race%d" % rnd)
        assert_delivered_once(inst, up, sent, timeout=40)
        assert not inst.find_log("queued", r"\bevent=worker_gone\b.*\bbusy=yes\b", since=mark)
        assert not inst.find_log("queued", r"\bevent=deferred\b", since=mark)
        assert not inst.find_log("deliverd", r"\bevent=deferred\b", since=mark)
        assert inst.find_log("deliverd", r"\bevent=retired\b", since=mark), "no deliverd retired"
        # The crossing did happen: queued refused a RETIRE from an agent it
        # had just sent a JOB (and that job was delivered, above).
        assert inst.find_log("queued", r"\bevent=retire_refused\b.*\bbusy=yes\b", since=mark), \
            "no RETIRE crossed a JOB; the test no longer exercises the race"
        for ev in ("exited", "restarted"):
            assert not master_deliverd_events(inst, ev, mark), master_deliverd_events(inst, ev, mark)
        # Each retirement was agreed by queued first.
        assert len(inst.find_log("queued", r"\bevent=worker_retired\b", since=mark)) == \
            len(inst.find_log("deliverd", r"\bevent=retired\b", since=mark))
        wait_pool(inst, POOL_MIN)


def test_pool_kill9_busy_deliverd_restarted():
    """kill -9 of busy deliverd (the pool grown to 3): the master restarts
    each at once as before (a crash, counted), queued retries their
    messages, each arrives once; later the extra one retires, which is
    not counted as a restart."""
    state = {"killed": False}
    gate = Gate(reply_when_released="451 4.3.0 the client of this transaction was killed",
                hold_while=lambda: not state["killed"])
    up = ScriptedUpstream(data_reply=gate)
    mport = free_port()
    settings = {"queue": {"concurrency": 4, "per_destination": 10, "max_idle": 1},
                "metrics": {"listen": "127.0.0.1:%d" % mport}}
    with relayed(up, settings=settings) as inst:
        wait_pool(inst, POOL_MIN)
        mark = inst.log_mark()
        sent = send_many(inst, 3, "kill")
        gate.wait_held(3)
        busy = deliverd_pids(inst)
        assert len(busy) == 3, busy
        state["killed"] = True
        for p in busy:
            os.kill(p, signal.SIGKILL)
        wait_for(lambda: (lambda d: len(d) >= 3 and not set(d) & set(busy))(deliverd_pids(inst)),
                 10, what="3 new deliverd")
        gate.open()
        assert_delivered_once(inst, up, sent)
        exited = master_deliverd_events(inst, "exited", mark)
        assert len(exited) == 3 and all("expected=no" in l for l in exited), exited
        assert len(master_deliverd_events(inst, "restarted", mark)) == 3
        assert len(inst.find_log("queued", r"\bevent=worker_gone\b.*\bbusy=yes\b", since=mark)) == 3
        # Back to the minimum by retirement; restarts stay at the 3 crashes.
        inst.wait_log("deliverd", r"\bevent=retired\b", since=mark)
        wait_pool(inst, POOL_MIN)
        wait_metric(mport, "postern_component_processes", POOL_MIN, component="deliverd",
                    state="ready")
        m = scrape(mport)
        assert val(m, "postern_component_restarts_total", component="deliverd") == 3
        assert val(m, "postern_component_processes", component="deliverd", state="ready") == POOL_MIN
        assert val(m, "postern_component_processes", component="deliverd", state="not_ready") == 0


def test_pool_max_idle_reload_and_restart():
    """A change of max_idle takes effect on reload (idle agents retire at
    once); a change of concurrency waits for the next start (the pool
    keeps its old minimum and limit); `postern restart deliverd` replaces
    the whole running pool."""
    gate = Gate()
    up = ScriptedUpstream(data_reply=gate)
    settings = {"queue": {"concurrency": 3, "per_destination": 10, "max_idle": 86400}}
    with relayed(up, settings=settings) as inst:
        wait_pool(inst, POOL_MIN)
        sent = send_many(inst, 3, "reload")
        gate.wait_held(3)
        gate.open()
        assert_delivered_once(inst, up, sent)
        rows = wait_pool(inst, 3)

        # restart: every running deliverd is replaced, the pool keeps its size.
        mark = inst.log_mark()
        old = {r["pid"] for r in rows}
        inst.cli("restart", "deliverd", check=True)
        inst.wait_log("deliverd", r"\bevent=ready\b", since=mark, count=3)
        rows = wait_pool(inst, 3)
        assert not old & {r["pid"] for r in rows}, (old, rows)
        assert not inst.find_log("deliverd", r"\bevent=retired\b")

        mark = inst.log_mark()
        inst.update(settings={"queue": {"max_idle": 1, "concurrency": 1}})
        inst.cli("reload", check=True)
        inst.wait_log("master", r"\bevent=reload_partial\b.*queue\.concurrency", since=mark)
        inst.wait_log("deliverd", r"\bevent=retired\b", since=mark, timeout=10)
        # Down to the minimum of the concurrency the pool started with.
        wait_pool(inst, POOL_MIN)
        assert len(inst.find_log("deliverd", r"\bevent=retired\b", since=mark)) == 1
        more = send_many(inst, 2, "after")
        assert_delivered_once(inst, up, more)


test_pool_retirement_never_loses_a_job.timeout = 120
