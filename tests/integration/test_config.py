"""`postern check`: exit 78 with FILE:LINE for every kind of config error, 0 when valid;
and `start --foreground` on a broken file fails fast."""

import subprocess
import time

import postern
from postern import Instance, render_config, merge, scaled

EX_CONFIG = 78
MARK = "# <-- here"


def _write_case(inst, drop, tail):
    """Config = the instance's good settings without the groups in `drop`,
    followed by `tail`; return (path, line number of the MARK line)."""
    settings = merge(inst.settings, {k: None for k in drop})
    text = render_config(settings) + tail
    lines = text.split("\n")
    line = next(i + 1 for i, l in enumerate(lines) if MARK in l)
    inst.write_config(text)
    return inst.conf, line


def _expect_error(drop, tail, what):
    with Instance() as inst:
        path, line = _write_case(inst, drop, tail)
        cp = inst.cli("check")
        with open(path) as f:
            text = f.read()
        assert cp.returncode == EX_CONFIG, "%s: `postern check` exited %d, expected %d\n" \
            "stdout: %s\nstderr: %s\nconfig:\n%s" % (what, cp.returncode, EX_CONFIG, cp.stdout,
                                                     cp.stderr, text)
        want = "%s:%d:" % (path, line)
        assert want in cp.stderr, "%s: stderr does not contain %r: %r" % (what, want, cp.stderr)
        return cp.stderr


def test_unknown_key_top_level():
    err = _expect_error([], 'frobnicate = 1;   %s\n' % MARK, "unknown top-level key")
    assert "frobnicate" in err, "message does not name the key: %r" % err


def test_unknown_key_in_group():
    err = _expect_error(["smtpd"], 'smtpd = {\n  mynetworks = [ "127.0.0.0/8" ];\n'
                        '  max_mesage_size = 1000000;   %s\n};\n' % MARK, "unknown key in smtpd")
    assert "max_mesage_size" in err, "message does not name the key: %r" % err


def test_wrong_type_port():
    _expect_error(["listen"], 'listen = (\n  { address = "127.0.0.1";\n'
                  '    port = "abc";   %s\n    mode = "smtp"; }\n);\n' % MARK,
                  'listen port = "abc"')


def test_wrong_type_relay_port():
    _expect_error(["relay"], 'relay = {\n  host = "127.0.0.1";\n  port = "abc";   %s\n'
                  '  tls = "none";\n};\n' % MARK, 'relay port = "abc"')


def test_syntax_error():
    _expect_error([], 'metrics = { listen "127.0.0.1:9925"; };   %s\n' % MARK,
                  "missing '=' (syntax error)")


def test_out_of_range_value():
    _expect_error(["queue"], 'queue = {\n  retry_min = 1;\n  concurrency = 0;   %s\n};\n' % MARK,
                  "queue.concurrency = 0")


def test_out_of_range_port():
    _expect_error(["listen"], 'listen = (\n  { address = "127.0.0.1";\n'
                  '    port = 70000;   %s\n    mode = "smtp"; }\n);\n' % MARK, "listen port = 70000")


def test_bad_enum_value():
    _expect_error(["relay"], 'relay = {\n  host = "127.0.0.1";\n  port = 25;\n'
                  '  tls = "sometimes";   %s\n};\n' % MARK, 'relay tls = "sometimes"')


def test_bad_mynetworks_entry():
    _expect_error(["smtpd"], 'smtpd = {\n  mynetworks = [ "127.0.0.0/8", "not-a-network" ];   %s\n'
                  '};\n' % MARK, 'mynetworks "not-a-network"')


def test_bad_mynetworks_prefix():
    _expect_error(["smtpd"], 'smtpd = {\n  mynetworks = [ "10.0.0.0/33" ];   %s\n};\n' % MARK,
                  'mynetworks "10.0.0.0/33"')


def test_valid_config_checks_ok():
    with Instance(relay=25) as inst:
        cp = inst.cli("check")
        assert cp.returncode == 0, "`postern check` on a valid config exited %d: %s%s\nconfig:\n%s" % (
            cp.returncode, cp.stdout, cp.stderr, inst.config_text())


def test_missing_file():
    with Instance() as inst:
        path = inst.conf + ".missing"
        p = subprocess.run([postern.bin_path("postern"), "-c", path, "check"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=scaled(20))
        assert p.returncode != 0, "`postern check` on a missing file exited 0"
        assert path in p.stderr.decode(errors="replace"), "stderr does not name %s: %r" % (
            path, p.stderr)


def test_start_with_broken_config_fails_fast():
    with Instance() as inst:
        path, line = _write_case(inst, [], 'frobnicate = 1;   %s\n' % MARK)
        t0 = time.monotonic()
        p = subprocess.Popen([postern.bin_path("postern"), "-c", path, "start", "--foreground"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = p.communicate(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            postern.kill_pgrp(p.pid)
            p.communicate(timeout=10)
            raise AssertionError("`postern start --foreground` with a broken config still running "
                                 "after 10s")
        took = time.monotonic() - t0
        err = err.decode("utf-8", "replace")
        assert p.returncode != 0, "start with a broken config exited 0 (after %.1fs)" % took
        want = "%s:%d:" % (path, line)
        assert want in err, "stderr of start does not contain %r: %r" % (want, err)
        # Nothing may keep running (the master must not have spawned children).
        assert not postern.port_open(inst.port), "port %d is open after a failed start" % inst.port
