"""`postern reload`: a changed config takes effect without a restart of the
master; a broken one is refused and the running config keeps working."""

import time

import postern
from postern import Instance, Upstream, make_message, assert_mail_flows


def test_reload_switches_relay():
    up1 = Upstream().start()
    up2 = Upstream().start()
    try:
        with Instance(relay=up1.port) as inst:
            inst.start()
            master = inst.pids()["master"]
            assert_mail_flows(inst, up1)
            inst.update({"relay": {"port": up2.port}})
            cp = inst.cli("reload")
            assert cp.returncode == 0, "`postern reload` exited %d: %s%s" % (
                cp.returncode, cp.stdout, cp.stderr)
            # Children may be replaced; wait until the new config is in use.
            tag = "after-reload-%d" % time.time_ns()
            deadline = time.monotonic() + postern.scaled(15)
            while not any(tag.encode() in m["content"] for m in up2.messages):
                assert time.monotonic() < deadline, "no message reached the new relay after reload"
                inst.send_ok("user@example.org", ["x@example.net"], make_message(subject=tag))
                try:
                    up2.wait_messages(len(up2.messages) + 1, timeout=3)
                except AssertionError:
                    pass
            assert inst.pids()["master"] == master, "reload replaced the master"
    finally:
        up1.stop()
        up2.stop()


def test_reload_refuses_broken_config():
    with postern.relay_instance() as (inst, up):
        before = inst.pids()
        good = inst.config_text()
        inst.write_config(good + "frobnicate = 1;\n")
        line = good.count("\n") + 1
        cp = inst.cli("reload")
        assert cp.returncode != 0, "`postern reload` with a broken config exited 0: %s%s" % (
            cp.stdout, cp.stderr)
        want = "%s:%d:" % (inst.conf, line)
        assert want in cp.stderr + cp.stdout, "reload error does not name %s: %r" % (
            want, cp.stderr + cp.stdout)
        # The CLI itself needs a readable config to find the master again.
        inst.write_config(good)
        assert inst.pids()["master"] == before["master"], "master replaced after a refused reload"
        assert_mail_flows(inst, up)
