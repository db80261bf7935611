"""Log files for unattended operation: per-component log levels
(log.COMPONENT.level, applied on reload), reopening every log after
logrotate moved the files away (SIGUSR1 or `postern reload`)."""

import os
import signal

from postern import Instance, make_message, wait_for, COMPONENTS


def test_per_component_log_level():
    with Instance(settings={"log": {"level": "info", "smtpd": {"level": "debug"}}}) as inst:
        inst.start()
        # smtpd logs its queued connection at debug; queued its workers at debug.
        inst.wait_log("smtpd", r" debug smtpd event=queued_connected")
        assert not inst.find_log("queued", r" debug queued "), "queued logged debug at level info"
        # Changed on reload: queued to debug, then a new deliverd connects.
        inst.update({"log": {"queued": {"level": "debug"}}})
        mark = inst.log_mark()
        inst.cli("reload", check=True)
        inst.wait_log("queued", r"event=reloaded", since=mark)
        inst.cli("restart", "deliverd", check=True)
        inst.wait_log("queued", r" debug queued event=worker_connected", since=mark)


def test_log_level_unknown_key_rejected():
    with Instance(raw="") as inst:
        inst.update({"log": {"smtpd": {"level": "debug", "colour": "red"}}})
        cp = inst.cli("check")
        assert cp.returncode == 78, (cp.returncode, cp.stdout, cp.stderr)
        assert "unknown key 'log.smtpd.colour'" in cp.stderr and "postern.conf:" in cp.stderr, cp.stderr
        inst.update({"log": {"smtpd": {"level": "loud", "colour": None}}})
        cp = inst.cli("check")
        assert cp.returncode == 78 and "log.smtpd.level" in cp.stderr, cp.stderr


def rotate_and_check(inst, trigger):
    before = inst.send_ok("user@example.org", ["a@localhost"], make_message(subject="before"))
    inst.wait_maildir("a", 1)
    inst.wait_log("deliverd", r"event=delivered qid=%s" % before)
    for c in COMPONENTS:
        os.rename(inst.log_path(c), inst.log_path(c) + ".1")
    trigger()
    # Every component opens a new file (the master logs logs_reopened in its own).
    wait_for(lambda: all(os.path.exists(inst.log_path(c)) for c in COMPONENTS), 10,
             what="new log files in %s" % inst.log_dir)
    after = inst.send_ok("user@example.org", ["a@localhost"], make_message(subject="after"))
    inst.wait_maildir("a", 2)
    inst.wait_log("smtpd", r"event=accepted qid=%s" % after)
    inst.wait_log("queued", r"event=removed qid=%s" % after)
    inst.wait_log("deliverd", r"event=delivered qid=%s" % after)
    # Nothing lost: the first message's lines are all in the rotated files.
    old = {c: open(inst.log_path(c) + ".1").read() for c in COMPONENTS}
    assert "event=accepted qid=%s" % before in old["smtpd"]
    assert "event=delivered qid=%s" % before in old["deliverd"]
    assert "qid=%s" % after not in "".join(old.values()), "lines after the reopen went to the old files"


def test_log_reopen_on_sigusr1():
    with Instance() as inst:
        inst.start()
        master = inst.pids()["master"]
        rotate_and_check(inst, lambda: os.kill(master, signal.SIGUSR1))
        inst.wait_log("master", r"event=logs_reopened")


def test_log_reopen_on_reload():
    with Instance() as inst:
        inst.start()
        rotate_and_check(inst, lambda: inst.cli("reload", check=True))
