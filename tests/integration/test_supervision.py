"""Crash-loop throttling: a child killed once while serving comes back at
once; one that keeps dying (5 deaths within a minute) is restarted with a
growing, logged backoff, and is still restarted in the end."""

import os
import signal
import time

from postern import Instance, wait_for, pid_alive


def _smtpd_pid(inst):
    p = inst.pids().get("smtpd")
    return p[0] if isinstance(p, list) else p


def _kill_and_wait_new(inst, timeout):
    old = _smtpd_pid(inst)
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()
    new = wait_for(lambda: (lambda p: p if p and p != old and pid_alive(p) else None)(_smtpd_pid(inst)),
                   timeout, interval=0.02, what="a new smtpd after kill -9 %d" % old)
    # wait until it is serving again, so the next kill hits a ready child
    inst.wait_log("smtpd", r"\bevent=ready\b.*\bpid=%d\b" % new, timeout=timeout)
    return time.monotonic() - t0


def test_crash_loop_is_throttled_and_logged():
    with Instance() as inst:
        inst.start()
        quick = [_kill_and_wait_new(inst, 3) for _ in range(4)]
        assert max(quick) < 1.0, "a child killed while serving must come back at once: %r" % quick
        assert not inst.find_log("master", r"\bevent=throttled\b"), "throttled too early"
        # The fifth death within a minute is a crash loop: backoff, logged.
        took = _kill_and_wait_new(inst, 10)
        lines = inst.find_log("master", r"\bevent=throttled\b.*\bcomponent=smtpd\b")
        assert lines, "no event=throttled for smtpd after 5 quick deaths"
        assert "retry_in_ms=" in lines[-1], lines[-1]
        assert took >= 0.2, "restart after a crash loop came without backoff (%.3fs)" % took
        # It does come back, and the rest kept running.
        assert inst.pids().get("queued"), "queued is gone"
