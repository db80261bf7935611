"""Supervision: kill -9 and restart of each child, stop, daemonize, privileges."""

import os
import pwd
import signal
import time

import postern
from postern import (Instance, relay_instance, assert_mail_flows, wait_for, pid_alive,
                     proc_exe, proc_uids)

RESTART_WITHIN = 2.0   # seconds for a killed child to reappear in `postern status`


def _role_pids(pids, role):
    v = pids.get(role)
    return list(v) if isinstance(v, list) else ([v] if v else [])


def _kill_child(role):
    with relay_instance() as (inst, up):
        before = inst.pids()
        assert before.get("smtpd") and before.get("queued") and before["deliverd"], \
            "status lacks a child: %r" % before
        victim = _role_pids(before, role)[0]
        mark = inst.log_mark()
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()

        def replaced():
            p = inst.pids()
            now = _role_pids(p, role)
            if victim in now or len(now) != len(_role_pids(before, role)):
                return None
            return p if all(pid_alive(x) for x in now) else None
        after = wait_for(replaced, RESTART_WITHIN, interval=0.02,
                         what="a new %s pid in `postern status` after kill -9 %d" % (role, victim))
        took = time.monotonic() - t0
        new = [x for x in _role_pids(after, role) if x not in _role_pids(before, role)]
        assert len(new) == 1, "expected exactly one new %s pid, before %r after %r" % (
            role, before, after)
        # The master noticed and said so.
        inst.wait_log("master", r"\bevent=exited\b.*\bcomponent=%s\b.*\bpid=%d\b" % (role, victim),
                      since=mark)
        # A lost child stops nothing else.
        for other in ("master", "smtpd", "queued"):
            if other != role:
                assert after[other] == before[other], "%s pid changed %d -> %d after killing %s" % (
                    other, before[other], after[other], role)
        if role != "deliverd":
            assert after["deliverd"] == before["deliverd"], \
                "deliverd pids changed %r -> %r after killing %s" % (before["deliverd"],
                                                                     after["deliverd"], role)
        else:
            kept = [x for x in before["deliverd"] if x != victim]
            assert all(x in after["deliverd"] for x in kept), \
                "other deliverd processes changed: %r -> %r" % (before["deliverd"], after["deliverd"])
        inst.wait_log(role, r"\bevent=ready\b", since=mark)
        assert_mail_flows(inst, up)
        return took


def test_kill9_smtpd():
    _kill_child("smtpd")


def test_kill9_queued():
    _kill_child("queued")


def test_kill9_deliverd():
    _kill_child("deliverd")


def _restart(role):
    with relay_instance() as (inst, up):
        before = inst.pids()
        mark = inst.log_mark()
        cp = inst.cli("restart", role)
        assert cp.returncode == 0, "`postern restart %s` exited %d: %s%s" % (
            role, cp.returncode, cp.stdout, cp.stderr)
        old = set(_role_pids(before, role))

        def replaced():
            p = inst.pids()
            now = _role_pids(p, role)
            if not now or old & set(now) or len(now) != len(old):
                return None
            return p
        after = wait_for(replaced, 10, what="new %s pid(s) after `postern restart %s` (before %r)"
                         % (role, role, sorted(old)))
        for other in ("master", "smtpd", "queued", "deliverd"):
            if other != role:
                assert after[other] == before[other], \
                    "`restart %s` changed %s: %r -> %r" % (role, other, before[other], after[other])
        inst.wait_log(role, r"\bevent=ready\b", since=mark, count=len(old))
        assert_mail_flows(inst, up)


def test_restart_smtpd():
    _restart("smtpd")


def test_restart_queued():
    _restart("queued")


def test_restart_deliverd():
    _restart("deliverd")


def test_master_pid_file_and_exe_names():
    with Instance() as inst:
        inst.start()
        pids = inst.pids()
        mp = inst.master_pid_from_file()
        assert mp is not None, "no pid in run/master.pid"
        assert mp == pids["master"], "run/master.pid %d != status master %d" % (mp, pids["master"])
        for role in postern.COMPONENTS:
            for pid in _role_pids(pids, role):
                exe = proc_exe(pid)
                assert exe is not None, "cannot read /proc/%d/exe" % pid
                exe = exe.replace(" (deleted)", "")
                assert os.path.basename(exe) == role, "/proc/%d/exe is %s, expected .../%s" % (
                    pid, exe, role)
                if role != "master":
                    assert postern.proc_ppid(pid) == mp, "%s %d is not a child of the master %d" % (
                        role, pid, mp)


def test_children_privileges():
    with Instance() as inst:
        inst.start()
        pids = inst.pids()
        if postern.is_root():
            pw = pwd.getpwnam("nobody")
            uid, gid = pw.pw_uid, pw.pw_gid
        else:
            uid, gid = os.getuid(), os.getgid()
        for role in postern.CHILDREN:
            for pid in _role_pids(pids, role):
                uids = proc_uids(pid)
                assert uids == (uid,) * 4, "%s %d runs with uids %r, expected all %d" % (
                    role, pid, uids, uid)
                with open("/proc/%d/status" % pid) as f:
                    st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
                gids = tuple(int(x) for x in st["Gid"].split())
                assert gids == (gid,) * 4, "%s %d runs with gids %r, expected all %d" % (
                    role, pid, gids, gid)
                if postern.is_root():
                    groups = [int(x) for x in st.get("Groups", "").split()]
                    assert set(groups) <= {gid}, "%s %d kept supplementary groups %r" % (
                        role, pid, groups)
        if postern.is_root():
            assert proc_uids(pids["master"])[1] == 0, "master is not root when started as root"


def test_stop_leaves_no_process():
    with Instance() as inst:
        inst.start()
        pids = inst.pids()
        allp = [pids["master"], pids["smtpd"], pids["queued"]] + pids["deliverd"]
        cp = inst.stop(timeout=15)
        assert cp is not None, "`postern stop` did not exit within 15s"
        assert cp.returncode == 0, "`postern stop` exited %d: %s%s" % (
            cp.returncode, cp.stdout, cp.stderr)
        wait_for(lambda: not any(pid_alive(p) for p in allp), 5,
                 what="every process to exit after `postern stop` (alive: %r)" % allp)
        # Nothing else runs with its working directory in this instance.
        stray = []
        for pid in postern.all_pids():
            try:
                cwd = os.readlink("/proc/%d/cwd" % pid)
            except OSError:
                continue
            if (cwd == inst.dir or cwd.startswith(inst.dir + os.sep)) and pid != os.getpid() \
                    and pid_alive(pid):
                stray.append((pid, proc_exe(pid), cwd))
        assert not stray, "processes still running in the instance: %r" % stray
        assert not postern.port_open(inst.port), "port %d still accepts connections" % inst.port


def test_start_daemonizes():
    with Instance() as inst:
        t0 = time.monotonic()
        cp = inst.cli("start", timeout=20)
        took = time.monotonic() - t0
        assert cp.returncode == 0, "`postern start` exited %d: %s%s" % (
            cp.returncode, cp.stdout, cp.stderr)
        mp = inst.master_pid_from_file()
        assert mp, "no run/master.pid after `postern start` returned"
        inst.daemon_pid = mp
        inst._known_pids.add(mp)
        assert pid_alive(mp), "master %d is not running after `postern start` returned" % mp
        # It returned once the master was up and ready.
        assert inst.find_log("master", r"\bevent=ready\b"), \
            "`postern start` returned (after %.1fs) before master logged event=ready" % took
        inst.wait_ready()
        exe = (proc_exe(mp) or "").replace(" (deleted)", "")
        assert os.path.basename(exe) == "master", "pid file names %d (%s), not the master" % (mp, exe)
        assert inst.pids()["master"] == mp
        code, text = inst.send("user@example.org", ["user@localhost"],
                               postern.make_message(to="user@localhost"))
        assert code == 250, "DATA answered %d %s" % (code, text)
        inst.wait_maildir("user", 1)
        cp = inst.stop()
        assert cp is not None and cp.returncode == 0, "`postern stop` failed"
        assert not pid_alive(mp), "master %d still alive after stop" % mp
