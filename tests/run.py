#!/usr/bin/python3
"""postern test runner: unit-test binaries, then integration tests.

    /usr/bin/python3 tests/run.py [--build BUILD] [-k SUBSTR] [-v]
                                  [--unit-only | --integration-only]
                                  [--timeout SECONDS]

Unit tests: every executable BUILD/tests/test_*.  Each prints a last line
"N passed, N failed" and exits non-zero on failure; its counts are added to
the totals.  A binary that crashes, times out or prints no such line counts
as one failure.

Integration tests: every function test_* of tests/integration/test_*.py,
each run as one test case in its own worker process (a fresh
/usr/bin/python3, its own process group, its own temp directory).  The
worker enforces the test's time bound with SIGALRM (so cleanup runs and
the traceback shows where it hung); the runner SIGKILLs it a little later
if that did not work.  The runner is a child subreaper (prctl), so daemons
that a test daemonized or orphaned are reparented to it, and after each
test it kills, by PID, every process left below it.

A test function may set a time bound with an attribute, e.g.
    test_slow.timeout = 120
POSTERN_TIME_SCALE=N multiplies every bound (the runner sets 3 for a
build directory named *asan*).  --keep keeps each test's temp directory;
-v prints full tracebacks and longer daemon log tails on failure.
Output: one line per test ("PASS name", "FAIL name: reason",
"SKIP name: reason"), details after a failure (traceback, the tail of each
component log of the test's instances), and exactly one final line
"N passed, N failed[, N skipped]".  Exit status 0 iff nothing failed.
"""

import argparse
import ctypes
import importlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
INTEG = os.path.join(HERE, "integration")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

DEFAULT_TIMEOUT = 60        # per integration test, seconds
UNIT_TIMEOUT = 120          # per unit-test binary
KILL_GRACE = 15             # after the worker's own alarm
LOG_TAIL = 15               # lines of each component log after a failure
LOG_TAIL_VERBOSE = 200
COMPONENTS = ("master", "smtpd", "queued", "deliverd")

COUNT_RE = re.compile(r"^\s*(\d+) passed, (\d+) failed\s*$")


# ------------------------------------------------------------------ processes

def set_subreaper():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def _ppid_map():
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
            ppid = int(data[data.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def my_descendants():
    children = _ppid_map()
    out, todo = [], [os.getpid()]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers():
    """SIGKILL every process below the runner (all were started by the test
    just finished); return how many there were.  Zombies only get reaped."""
    n = 0
    for _ in range(5):
        pids = []
        for p in my_descendants():
            try:
                with open("/proc/%d/stat" % p) as f:
                    data = f.read()
                if data[data.rindex(")") + 2:].split()[0] in ("Z", "X"):
                    continue
            except OSError:
                continue
            pids.append(p)
        if not pids:
            break
        n += len(pids)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            reap_zombies()
            if not any(os.path.exists("/proc/%d" % p) for p in pids):
                break
            time.sleep(0.02)
    reap_zombies()
    return n


# ------------------------------------------------------------------ reporting

class Totals:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def line(self):
        s = "%d passed, %d failed" % (self.passed, self.failed)
        if self.skipped:
            s += ", %d skipped" % self.skipped
        return s


def say(s=""):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def indent(text, prefix="    "):
    return "".join(prefix + l + "\n" for l in text.rstrip("\n").splitlines())


def tail_file(path, n):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as e:
        return None, str(e)
    return lines[-n:], len(lines)


# ------------------------------------------------------------------ unit tests

def run_unit(build, sel, verbose, totals):
    bins = sorted(glob_exec(os.path.join(build, "tests")))
    for path in bins:
        name = "unit/" + os.path.basename(path)
        if sel and sel not in name:
            continue
        t0 = time.monotonic()
        reason = None
        # Output goes to a file, not a pipe: a stray grandchild holding the
        # pipe open must not hang the runner.
        with tempfile.TemporaryFile() as outf:
            p = subprocess.Popen([path], cwd=REPO, stdin=subprocess.DEVNULL, stdout=outf,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = p.wait(timeout=UNIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                rc = None
                reason = "timed out after %ds" % UNIT_TIMEOUT
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                p.wait()
            kill_leftovers()
            outf.seek(0)
            out = outf.read().decode("utf-8", "replace")
        lines = [l for l in out.splitlines() if l.strip()]
        m = COUNT_RE.match(lines[-1]) if lines else None
        dt = time.monotonic() - t0
        if reason is None and m is None:
            reason = ("killed by signal %d" % -rc if rc is not None and rc < 0
                      else "no final 'N passed, N failed' line (exit %s)" % rc)
        if reason is not None:
            totals.failed += 1
            say("FAIL %s: %s" % (name, reason))
            sys.stdout.write(indent("\n".join(lines[-(200 if verbose else 30):])))
            continue
        np, nf = int(m.group(1)), int(m.group(2))
        if nf == 0 and rc != 0:
            # Claims success but exits non-zero (e.g. a sanitizer report at exit).
            nf = 1
            reason = "exit status %s with '%s'" % (rc, lines[-1].strip())
        totals.passed += np
        totals.failed += nf
        if nf:
            say("FAIL %s: %s" % (name, reason or "%d passed, %d failed" % (np, nf)))
            sys.stdout.write(indent("\n".join(lines[-(200 if verbose else 40):])))
        else:
            say("PASS %s (%d cases, %.1fs)" % (name, np, dt))
            if verbose:
                sys.stdout.write(indent("\n".join(lines[:-1][-50:])) if len(lines) > 1 else "")


def glob_exec(d):
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        p = os.path.join(d, n)
        if n.startswith("test_") and os.path.isfile(p) and os.access(p, os.X_OK) \
                and not n.endswith((".c", ".o", ".d")):
            out.append(p)
    return out


# ------------------------------------------------------------------ integration

def discover(sel):
    """[(module, function, timeout)] in file and definition order."""
    if INTEG not in sys.path:
        sys.path.insert(0, INTEG)
    found = []
    errors = []
    for fn in sorted(os.listdir(INTEG)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        modname = fn[:-3]
        try:
            mod = importlib.import_module(modname)
        except Exception:
            errors.append((modname, traceback.format_exc()))
            continue
        funcs = [(getattr(f, "__code__").co_firstlineno, n, f)
                 for n, f in vars(mod).items()
                 if n.startswith("test_") and inspect.isfunction(f) and f.__module__ == modname]
        for _, n, f in sorted(funcs):
            name = "%s.%s" % (modname, n)
            if sel and sel not in name:
                continue
            found.append((modname, n, int(getattr(f, "timeout", DEFAULT_TIMEOUT))))
    return found, errors


def print_instance_logs(tmp, verbose):
    n = LOG_TAIL_VERBOSE if verbose else LOG_TAIL
    try:
        insts = sorted(d for d in os.listdir(tmp) if os.path.isdir(os.path.join(tmp, d)))
    except OSError:
        return
    for inst in insts:
        ld = os.path.join(tmp, inst, "log")
        for comp in COMPONENTS if os.path.isdir(ld) else ():
            lines, total = tail_file(os.path.join(ld, comp + ".log"), n)
            if lines is None:
                say("    --- %s/%s.log: (none)" % (inst, comp))
                continue
            say("    --- %s/%s.log (last %d of %d lines)" % (inst, comp, len(lines), total))
            sys.stdout.write(indent("\n".join(lines), "      "))
        # The foreground master copies its log lines to stderr: show only
        # what is not in master.log (e.g. a startup error or a crash report).
        mlog, _ = tail_file(os.path.join(ld, "master.log"), 1000000)
        seen = set(mlog or [])
        lines, total = tail_file(os.path.join(tmp, inst, "postern.stderr"), 1000000)
        lines = [l for l in (lines or []) if l not in seen][-n:]
        if lines:
            say("    --- %s/postern.stderr (last %d lines not in master.log)" % (inst, len(lines)))
            sys.stdout.write(indent("\n".join(lines), "      "))


def run_integration(build, sel, verbose, totals, timeout_override, keep):
    tests, errors = discover(sel)
    for modname, tb in errors:
        totals.failed += 1
        say("FAIL %s: import error" % modname)
        sys.stdout.write(indent(tb))
    for modname, fname, tmo in tests:
        if timeout_override:
            tmo = timeout_override
        tmo = int(tmo * float(os.environ.get("POSTERN_TIME_SCALE") or "1"))
        run_one(build, modname, fname, tmo, verbose, totals, keep)


def run_one(build, modname, fname, tmo, verbose, totals, keep):
    tmp = tempfile.mkdtemp(prefix="postern-test-", dir="/tmp")
    try:
        _run_one(tmp, build, modname, fname, tmo, verbose, totals, keep)
    finally:
        if keep:
            say("    (kept %s)" % tmp)
        else:
            kill_leftovers()
            shutil.rmtree(tmp, ignore_errors=True)


def _run_one(tmp, build, modname, fname, tmo, verbose, totals, keep):
    name = "%s.%s" % (modname, fname)
    os.chmod(tmp, 0o755)
    result_file = os.path.join(tmp, "result.json")
    out_file = os.path.join(tmp, "worker.out")
    env = dict(os.environ)
    env.update({
        "POSTERN_BUILD": os.path.abspath(build),
        "POSTERN_TEST_TMP": tmp,
        "POSTERN_TEST_RESULT": result_file,
        "POSTERN_TEST_TIMEOUT": str(tmo),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    t0 = time.monotonic()
    with open(out_file, "wb") as out:
        p = subprocess.Popen([PYTHON, os.path.abspath(__file__), "--worker", modname, fname],
                             cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    status = None
    hard_deadline = t0 + tmo + KILL_GRACE
    killed = False
    # Reap every child (the worker and orphans reparented to us) so that
    # tests see dead daemons as gone, not as zombies.
    while status is None:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, st = 0, 0
        if pid == p.pid:
            status = st
            break
        if pid != 0:
            continue
        if time.monotonic() > hard_deadline and not killed:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            killed = True
            hard_deadline = time.monotonic() + 10
        elif killed and time.monotonic() > hard_deadline:
            status = -1
            break
        time.sleep(0.02)
    p.returncode = 0  # we reaped it ourselves; keep Popen from waiting again
    dt = time.monotonic() - t0
    leftovers = kill_leftovers()

    res = None
    try:
        with open(result_file) as f:
            res = json.load(f)
    except (OSError, ValueError):
        pass
    if res is None:
        if killed:
            res = {"status": "fail", "reason": "timed out after %ds (worker killed)" % tmo}
        else:
            desc = ("killed by signal %d" % os.WTERMSIG(status) if status > 0 and os.WIFSIGNALED(status)
                    else "exit status %d" % (os.WEXITSTATUS(status) if status >= 0 else -1))
            res = {"status": "fail", "reason": "worker died without a result (%s)" % desc}

    st = res.get("status")
    if st == "pass":
        totals.passed += 1
        say("PASS %s (%.1fs)" % (name, dt))
    elif st == "skip":
        totals.skipped += 1
        say("SKIP %s: %s" % (name, res.get("reason", "")))
    else:
        totals.failed += 1
        say("FAIL %s: %s" % (name, one_line(res.get("reason", "failed"))))
        if res.get("traceback"):
            tb = res["traceback"].rstrip("\n").splitlines()
            sys.stdout.write(indent("\n".join(tb if verbose else tb[-25:])))
        try:
            with open(out_file, "rb") as f:
                wout = f.read().decode("utf-8", "replace").strip()
        except OSError:
            wout = ""
        if wout:
            lines = wout.splitlines()
            say("    --- test output (last %d lines)" % min(len(lines), 200 if verbose else 20))
            sys.stdout.write(indent("\n".join(lines[-(200 if verbose else 20):]), "      "))
        if leftovers:
            say("    --- killed %d leftover process(es) after the test" % leftovers)
        print_instance_logs(tmp, verbose)
    if st in ("pass", "skip") and verbose and leftovers:
        say("    (killed %d leftover process(es) after the test)" % leftovers)


def one_line(s):
    s = " ".join(str(s).split())
    return s if len(s) <= 400 else s[:397] + "..."


# ------------------------------------------------------------------ worker

class TestTimeout(Exception):
    pass


def worker(modname, fname):
    """Run one test function; write {"status", "reason", "traceback"}."""
    result_file = os.environ["POSTERN_TEST_RESULT"]
    tmo = int(os.environ.get("POSTERN_TEST_TIMEOUT", DEFAULT_TIMEOUT))
    sys.path.insert(0, INTEG)
    res = {"status": "fail", "reason": "did not run"}

    def on_alarm(signum, frame):
        raise TestTimeout("timed out after %ds" % tmo)
    def on_term(signum, frame):
        raise TestTimeout("terminated by signal %d" % signum)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    try:
        signal.alarm(tmo)
        try:
            mod = importlib.import_module(modname)
            getattr(mod, fname)()
            res = {"status": "pass"}
        finally:
            signal.alarm(0)
    except BaseException as e:  # noqa: BLE001 - report everything
        postern = sys.modules.get("postern")
        import unittest
        skip_types = (unittest.SkipTest,) + ((postern.Skip,) if postern else ())
        if isinstance(e, skip_types):
            res = {"status": "skip", "reason": str(e)}
        else:
            reason = "%s: %s" % (type(e).__name__, e) if str(e) else type(e).__name__
            if isinstance(e, TestTimeout):
                reason = str(e)
            res = {"status": "fail", "reason": reason, "traceback": traceback.format_exc()}
    with open(result_file, "w") as f:
        json.dump(res, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description="Run postern's unit and integration tests.")
    ap.add_argument("--build", default="build", help="build directory (default: build)")
    ap.add_argument("-k", dest="sel", default=None, help="run only tests whose name contains SUBSTR")
    ap.add_argument("-v", dest="verbose", action="store_true",
                    help="more output on failure (full traceback, daemon logs)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--unit-only", action="store_true")
    g.add_argument("--integration-only", action="store_true")
    ap.add_argument("--timeout", type=int, default=0,
                    help="override every integration test's time bound (seconds)")
    ap.add_argument("--keep", action="store_true", help="keep each test's temp directory")
    ap.add_argument("--worker", nargs=2, metavar=("MODULE", "FUNC"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        worker(*args.worker)
        return 0

    build = args.build if os.path.isabs(args.build) else os.path.join(REPO, args.build)
    # Sanitizer builds are slower: stretch every bound unless told otherwise.
    if not os.environ.get("POSTERN_TIME_SCALE") and "asan" in os.path.basename(build.rstrip("/")):
        os.environ["POSTERN_TIME_SCALE"] = "3"
    set_subreaper()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    totals = Totals()
    t0 = time.monotonic()
    try:
        if not args.integration_only:
            run_unit(build, args.sel, args.verbose, totals)
        if not args.unit_only:
            run_integration(build, args.sel, args.verbose, totals, args.timeout, args.keep)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        n = kill_leftovers()
        say("interrupted (killed %d process(es))" % n)
        totals.failed += 1
    if args.verbose:
        say("(%.1fs)" % (time.monotonic() - t0))
    say(totals.line())
    return 0 if totals.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
