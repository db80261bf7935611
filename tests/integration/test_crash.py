"""Crash safety: SIGKILL of any postern process at random moments while
clients submit mail loses nothing that was answered 250 (delivery is at
least once: duplicates are counted, not failed).  Issue #4."""

import os
import random
import re
import signal
import smtplib
import threading
import time

import postern
from postern import (Instance, make_message, wait_for, scaled, pid_alive, proc_exe,
                     descendants, kill_pid, QID_RE)
from upstreams import ScriptedUpstream, relayed

SENDER = "user@example.org"
TOKEN_RE = re.compile(rb"crash-\d+-\d+-\d+")


def _roles(master_pid):
    """{pid: role} of the master and its live children (by executable)."""
    out = {}
    if master_pid and pid_alive(master_pid):
        out[master_pid] = "master"
        for p in descendants(master_pid):
            exe = (proc_exe(p) or "").replace(" (deleted)", "")
            name = os.path.basename(exe)
            if name in postern.CHILDREN and pid_alive(p):
                out[p] = name
    return out


def _send(port, token):
    """One message on its own connection: the queue id if it got 250, else None."""
    try:
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="crash.test", timeout=scaled(15))
    except (OSError, smtplib.SMTPException):
        return None
    try:
        code, text = s.ehlo()
        if code != 250:
            return None
        code, text = s.mail(SENDER)
        if code != 250:
            return None
        code, text = s.rcpt("crash@example.net")
        if code != 250:
            return None
        code, text = s.data(make_message(subject=token, body=b"crash test body\r\n"))
        if code != 250:
            return None
        m = re.search(r"queued as (%s)" % QID_RE, text.decode("utf-8", "replace"))
        return m.group(1) if m else "?"
    except (OSError, smtplib.SMTPException):
        return None
    finally:
        try:
            s.close()
        except OSError:
            pass


def _restart(inst, old_master):
    """The master is gone: `postern start` again at once.  Its old children
    may still be finishing (the kernel sent them SIGTERM): the new master
    must cope with that, as after a real crash under a service manager."""
    wait_for(lambda: not pid_alive(old_master), 5, what="the killed master to be gone")
    inst.proc = None
    inst.daemon_pid = None
    deadline = time.monotonic() + scaled(20)
    while True:
        try:
            inst.start(foreground=False, timeout=20)
            return
        except AssertionError as e:
            if time.monotonic() > deadline:
                raise AssertionError("postern did not start again after its master was killed: %s" % e)
            inst.daemon_pid = None
            time.sleep(0.2)    # retry pace, bounded by the deadline


def _kill_ours(pids):
    """SIGKILL whichever of pids is still a postern process of this build."""
    build = postern.BUILD + os.sep
    for p in pids:
        if pid_alive(p) and (proc_exe(p) or "").startswith(build):
            kill_pid(p)


def test_random_sigkill_loses_nothing():
    n_threads, per_thread = 6, 50
    seed = int(os.environ.get("POSTERN_CRASH_SEED") or time.time_ns() % 1000000)
    rng = random.Random(seed)
    print("POSTERN_CRASH_SEED=%d" % seed)
    seen = set()                 # every daemon pid met, for the cleanup
    up = ScriptedUpstream()
    up.start()
    inst = Instance(relay=up.port, settings={"queue": {"retry_min": 1, "retry_max": 2,
                                                       "lifetime": 3600, "concurrency": 3}})
    try:
        inst.start(foreground=False)
        accepted = {}            # token -> qid
        attempts = [0]
        lock = threading.Lock()
        send_deadline = time.monotonic() + scaled(35)

        def client(i):
            for j in range(per_thread):
                if time.monotonic() > send_deadline:
                    return
                token = "crash-%d-%d-%d" % (i, j, time.time_ns())
                qid = _send(inst.port, token)
                with lock:
                    attempts[0] += 1
                    if qid:
                        accepted[token] = qid
                # Spread the submissions over the kills (load shape, not a wait).
                time.sleep(rng.uniform(0.1, 0.5))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_threads)]
        for t in threads:
            t.start()

        kills = {"master": 0, "smtpd": 0, "queued": 0, "deliverd": 0}
        first_seen = {}
        quick = {}               # role -> kills in a row of a process younger than 10 s
        plan = []
        while any(t.is_alive() for t in threads):
            time.sleep(rng.uniform(0.3, 1.2))
            master = inst.daemon_pid or inst.master_pid_from_file()
            roles = _roles(master)
            now = time.monotonic()
            for p in roles:
                first_seen.setdefault(p, now)
            seen.update(roles)
            # Spare a process that was just (re)spawned once it has been
            # killed young twice in a row: the master's crash-loop backoff
            # (0.25 s doubling) would otherwise keep it down for long.
            cands = [(p, r) for p, r in roles.items()
                     if now - first_seen[p] >= 1.0 and (r == "master" or quick.get(r, 0) < 2
                                                        or now - first_seen[p] >= 10)]
            if not cands:
                continue
            # Roles in shuffled rounds, so every kind of process dies at
            # least once; the master at most 3 times (each costs a restart).
            if not plan:
                plan.extend(["deliverd", "queued", "smtpd", "deliverd"]
                            + (["master"] if kills["master"] < 3 else []))
                rng.shuffle(plan)
            want = plan.pop()
            pick = [c for c in cands if c[1] == want] or [c for c in cands if c[1] != "master"]
            if not pick:
                continue
            victim, role = rng.choice(pick)
            if role != "master":
                quick[role] = quick.get(role, 0) + 1 if now - first_seen[victim] < 10 else 0
            kill_pid(victim, signal.SIGKILL)
            kills[role] += 1
            if role == "master":
                _restart(inst, master)
                quick.clear()

        for t in threads:
            t.join(scaled(20))
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        if not inst.running():
            _restart(inst, inst.daemon_pid or inst.master_pid_from_file() or 0)

        with lock:
            acc = dict(accepted)
            sent = attempts[0]

        def counts():
            c = {}
            for m in up.messages:
                t = TOKEN_RE.search(m["content"])
                if t:
                    c[t.group(0).decode()] = c.get(t.group(0).decode(), 0) + 1
            return c

        def missing():
            c = counts()
            return [t for t in acc if t not in c]
        try:
            up.wait(lambda: not missing(), 40, "every message that got 250 to arrive")
        finally:
            with up.cond:
                c = counts()
            lost = [(t, acc[t]) for t in acc if t not in c]
            delivered = sum(1 for t in acc if t in c)
            dups = sum(n - 1 for n in c.values() if n > 1)
            unacked = sum(1 for t in c if t not in acc)
            print("sent %d, got 250: %d, delivered: %d, duplicated: %d, delivered without a 250: %d, "
                  "lost: %d; kills %r" % (sent, len(acc), delivered, dups, unacked, len(lost), kills))
            for t, q in lost[:10]:
                print("  lost %s qid=%s: %r" % (t, q, inst.grep(q)))
        assert len(acc) >= 50, "only %d of %d messages got 250: too few to mean anything" % (len(acc), sent)
        assert all(kills.values()), "not every kind of process was killed: %r" % kills
        # Nothing stays behind: the queue drains, no file was torn.
        wait_for(lambda: not inst.spool_files("queue") and not inst.spool_files("incoming"), 30,
                 what="the queue to drain (left: %r)" % inst.spool_files("queue"))
        assert not inst.spool_files("corrupt"), "torn files in spool/corrupt: %r" % inst.spool_files("corrupt")
    finally:
        inst.cleanup()
        _kill_ours(seen)
        up.stop()


test_random_sigkill_loses_nothing.timeout = 100


def test_queued_killed_during_a_delivery():
    """queued dies (kill -9) while a deliverd waits for the upstream's reply
    to the data: the message is delivered again by the new queued (at
    least once), and the deliverd, finding queued gone when it reports,
    reconnects instead of crashing."""
    entered = threading.Event()
    release = threading.Event()

    def hold_first(conn, env):
        if not entered.is_set():
            entered.set()
            release.wait(scaled(30))
        return None

    up = ScriptedUpstream(data_reply=hold_first)
    # One deliverd: the redelivery must wait for it, so by the time the
    # message is removed that deliverd has dealt with the lost queued.
    with relayed(up, settings={"queue": {"retry_min": 1, "retry_max": 2, "concurrency": 1}}) as inst:
        try:
            tag = "queued-gone-%d" % time.time_ns()
            qid = inst.send_ok(SENDER, ["held@example.net"], make_message(subject=tag))
            assert entered.wait(scaled(15)), "no delivery attempt reached the upstream"
            old = inst.pids()["queued"]
            agent = inst.pids()["deliverd"]
            mark = inst.log_mark()
            kill_pid(old, signal.SIGKILL)
            wait_for(lambda: (lambda q: q and q != old)(inst.pids().get("queued")), 10,
                     what="queued to be restarted")
            inst.wait_log("queued", r"\bevent=ready\b", since=mark)
            release.set()
            up.wait_messages(1)
            inst.wait_log("deliverd", r"\bevent=queued_disconnected\b", since=mark)
            inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid, since=mark, timeout=20)
            assert len(up.with_token(tag)) >= 1
            died = inst.find_log("master", r"\bevent=exited\b.*\bcomponent=deliverd\b", since=mark)
            assert not died, "deliverd died after queued went away during its delivery:\n  %s\n" \
                "deliverd.log:\n  %s" % ("\n  ".join(died), "\n  ".join(
                    inst.find_log("deliverd", r".", since=mark)))
            assert inst.pids()["deliverd"] == agent, "deliverd %r replaced by %r" % (
                agent, inst.pids()["deliverd"])
        finally:
            release.set()      # before the cleanup, which would wait for the held session
