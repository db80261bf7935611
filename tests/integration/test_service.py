"""The master speaks systemd's sd_notify protocol itself (master/notify.c):
with $NOTIFY_SOCKET set it sends READY=1 once every component is ready,
RELOADING=1 then READY=1 around a reload, STOPPING=1 at shutdown.  The
test plays systemd: it binds the unix datagram socket and reads what
arrives."""

import os
import signal
import socket
import time

from postern import Instance, COMPONENTS, scaled, make_message


class Notify:
    """A bound AF_UNIX datagram socket standing in for systemd's."""

    def __init__(self, path=None, abstract=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.env = "@" + abstract
        else:
            self.sock.bind(path)
            os.chmod(path, 0o777)
            self.env = path
        self.msgs = []

    def recv(self, timeout=15):
        """The next datagram as a dict of its KEY=VALUE lines."""
        self.sock.settimeout(scaled(timeout))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise AssertionError("no sd_notify datagram within %ss (got so far: %r)"
                                 % (scaled(timeout), self.msgs))
        kv = dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l)
        self.msgs.append(kv)
        return kv

    def none_pending(self):
        self.sock.settimeout(0.3)
        try:
            return self.sock.recv(4096)
        except socket.timeout:
            return None

    def close(self):
        self.sock.close()


def start_notified(inst, notify):
    os.environ["NOTIFY_SOCKET"] = notify.env
    try:
        inst.start(wait=False)
    finally:
        del os.environ["NOTIFY_SOCKET"]


def check_lifecycle(inst, notify):
    msg = notify.recv()
    assert msg.get("READY") == "1", msg
    assert msg.get("MAINPID") == str(inst.master_pid_from_file()), msg
    assert "STATUS" in msg, msg
    # READY=1 only after every component logged event=ready.
    for c in COMPONENTS:
        assert inst.find_log(c, r"\bevent=ready\b"), "READY=1 before %s was ready" % c
    inst.wait_ready()
    assert notify.none_pending() is None, "more than one READY=1 at start"
    # The children never see NOTIFY_SOCKET.
    for c, pids in inst.pids().items():
        for pid in (pids if isinstance(pids, list) else [pids]):
            env = open("/proc/%d/environ" % pid, "rb").read().split(b"\0")
            if c != "master":
                assert not any(e.startswith(b"NOTIFY_SOCKET=") for e in env), c
    qid = inst.send_ok("user@example.org", ["a@localhost"], make_message())
    inst.wait_maildir("a", 1)
    assert qid

    before = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
    inst.cli("reload", check=True)
    msg = notify.recv()
    assert msg.get("RELOADING") == "1", msg
    usec = int(msg["MONOTONIC_USEC"])
    assert before - 1e6 <= usec <= time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6 + 1e6, (before, usec)
    msg = notify.recv()
    assert msg.get("READY") == "1", msg

    # A reload with a broken file still ends in READY=1 (old config kept).
    # SIGHUP, as `postern reload` itself refuses to send a broken file.
    good = open(inst.conf).read()
    with open(inst.conf, "w") as f:
        f.write(good + "\nno_such_key = 1;\n")
    os.kill(inst.master_pid_from_file(), signal.SIGHUP)
    assert notify.recv().get("RELOADING") == "1"
    msg = notify.recv()
    assert msg.get("READY") == "1" and "failed" in msg.get("STATUS", ""), msg
    with open(inst.conf, "w") as f:
        f.write(good)

    inst.stop()
    msg = notify.recv()
    assert msg.get("STOPPING") == "1", msg


def test_sd_notify_path_socket():
    with Instance() as inst:
        notify = Notify(path=os.path.join(inst.dir, "notify.sock"))
        try:
            start_notified(inst, notify)
            check_lifecycle(inst, notify)
        finally:
            notify.close()


def test_sd_notify_abstract_socket():
    with Instance() as inst:
        notify = Notify(abstract="postern-test-%d-%d" % (os.getpid(), inst.port))
        try:
            start_notified(inst, notify)
            check_lifecycle(inst, notify)
        finally:
            notify.close()


def test_sd_notify_unset_is_silent():
    """Without NOTIFY_SOCKET nothing changes (no warning in the log)."""
    os.environ.pop("NOTIFY_SOCKET", None)
    with Instance() as inst:
        inst.start()
        inst.cli("reload", check=True)
        inst.wait_log("master", r"event=reloaded")
        assert not inst.find_log("master", r"what=notify"), inst.find_log("master", "notify")
