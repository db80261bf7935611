"""postern integration-test harness (Python 3 standard library + aiosmtpd).

Used by tests/integration/test_*.py and driven by tests/run.py.  Pieces:

  free_port()      a free TCP port on 127.0.0.1
  Instance         a postern master started from a generated config in a
                   temporary directory (spool/, run/, log/, mail/), with
                   helpers for the CLI, logs, status and maildirs
  Upstream         an in-process SMTP server (aiosmtpd) that records every
                   transaction, used as the relay's smarthost
  send_mail()      submit one message with smtplib, return the DATA reply
  SMTPClient       a raw-socket client for scripted SMTP dialogues

Every wait polls with a deadline; nothing sleeps a fixed time.  Every
process an Instance starts is ended by PID (or its process group) in
cleanup(), which the context manager always runs.

Environment (set by tests/run.py; all optional):
  POSTERN_BUILD     build directory (default: <repo>/build)
  POSTERN_TEST_TMP  directory in which instances create their temp dirs
                    (the runner removes it; otherwise each Instance removes
                    its own directory)
  POSTERN_TIME_SCALE  multiply every timeout (e.g. 3 under ASan)
"""

import os
import resource
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("POSTERN_BUILD") or os.path.join(REPO, "build"))
TIME_SCALE = float(os.environ.get("POSTERN_TIME_SCALE") or "1")

COMPONENTS = ("master", "smtpd", "queued", "deliverd")
CHILDREN = ("smtpd", "queued", "deliverd")

# Queue ids: 14-31 uppercase hex characters (shared/spool.h).
QID_RE = r"[0-9A-F]{14,31}"
QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as (" + QID_RE + r")\b")


class Skip(Exception):
    """Raise to report a test as skipped (the runner prints SKIP name: reason)."""


def scaled(seconds):
    return seconds * TIME_SCALE


def bin_path(name):
    """Path of an installed-layout binary in the build tree."""
    if name in ("postern", "postern-sendmail"):
        return os.path.join(BUILD, "bin", name)
    return os.path.join(BUILD, "libexec", "postern", name)


def is_root():
    return os.geteuid() == 0


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it.  Raise
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (scaled(timeout), what))
        time.sleep(interval)


# ---------------------------------------------------------------- ports

_handed_out = set()
_port_lock = threading.Lock()


def free_port():
    """A TCP port on 127.0.0.1 that is free now (bound and released by the
    kernel's choice); never the same one twice in this process."""
    with _port_lock:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if port not in _handed_out and port >= 1024:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found")


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- processes

def proc_state(pid):
    """Single-letter state from /proc/PID/stat, or None if there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return data[data.rindex(")") + 2:].split()[0]


def pid_alive(pid):
    """True if pid exists and is not a zombie (a dead child nobody reaped yet)."""
    st = proc_state(pid)
    return st is not None and st not in ("Z", "X")


def proc_ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
        return int(data[data.rindex(")") + 2:].split()[1])
    except (OSError, ValueError):
        return None


def proc_exe(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def proc_uids(pid):
    """(real, effective, saved, fs) uids from /proc/PID/status."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return tuple(int(x) for x in line.split()[1:5])
    raise AssertionError("no Uid line for pid %d" % pid)


def all_pids():
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            out.append(int(name))
    return out


def descendants(root):
    """Every live process below pid root (from /proc ppid links)."""
    children = {}
    for pid in all_pids():
        pp = proc_ppid(pid)
        if pp is not None:
            children.setdefault(pp, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_pgrp(pgid, sig=signal.SIGKILL):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------- config rendering

def _q(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_value(v, indent):
    pad = "  " * indent
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _q(v)
    if isinstance(v, dict):
        inner = "".join("%s  %s = %s;\n" % (pad, k, _render_value(x, indent + 1))
                        for k, x in v.items() if x is not None)
        return "{\n" + inner + pad + "}"
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, dict) for x in v) and v:
            items = ",\n".join(pad + "  " + _render_value(x, indent + 1) for x in v)
            return "(\n" + items + "\n" + pad + ")"
        return "[ " + ", ".join(_render_value(x, indent + 1) for x in v) + " ]"
    raise TypeError("cannot render %r" % (v,))


def render_config(settings):
    """libconfig text for a dict of settings (insertion order kept; None
    values are left out)."""
    return "".join("%s = %s;\n" % (k, _render_value(v, 0))
                   for k, v in settings.items() if v is not None)


def merge(base, over):
    """Deep-merge `over` into a copy of `base`; a None value removes a key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def relay_settings(port, host="127.0.0.1", tls="none"):
    return {"host": host, "port": port, "tls": tls}


# ---------------------------------------------------------------- log lines

LOG_LINE_RE = re.compile(r"^(\S+) (\S+) (\S+) (.*)$")
KV_RE = re.compile(r'(\S+?)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_kv(line):
    """key=value pairs of a log line as a dict (quotes removed)."""
    m = LOG_LINE_RE.match(line)
    rest = m.group(4) if m else line
    out = {}
    for k, v in KV_RE.findall(rest):
        if v.startswith('"') and v.endswith('"') and len(v) >= 2:
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        out.setdefault(k, v)
    return out


# ---------------------------------------------------------------- the instance

def _base_tmp():
    base = os.environ.get("POSTERN_TEST_TMP")
    if base and os.path.isdir(base):
        return base, False
    return "/tmp", True


def make_tmpdir(prefix="postern-"):
    """A fresh 0755 directory under POSTERN_TEST_TMP (or /tmp); returns
    (path, owned) where owned says the caller must remove it."""
    base, owned = _base_tmp()
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(d, 0o755)
    return d, owned


class Instance:
    """A postern installation in a temporary directory.

        with Instance(relay=upstream.port) as inst:
            inst.start()
            ...
    The context manager always stops the master and kills leftovers."""

    def __init__(self, relay=None, settings=None, raw="", name="postern-inst"):
        self.dir, self._owned = make_tmpdir(prefix=name + "-")
        self.spool = os.path.join(self.dir, "spool")
        self.run_dir = os.path.join(self.dir, "run")
        self.log_dir = os.path.join(self.dir, "log")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.conf = os.path.join(self.dir, "postern.conf")
        os.mkdir(self.mail_dir)
        os.chmod(self.mail_dir, 0o755)
        self.port = free_port()
        if is_root():
            self.user = "nobody"
            pw = pwd.getpwnam("nobody")
            # deliverd (as nobody) creates mail/USER/Maildir itself.
            os.chown(self.mail_dir, pw.pw_uid, pw.pw_gid)
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
        self.settings = self.default_settings()
        if relay is not None:
            self.settings["relay"] = relay if isinstance(relay, dict) else relay_settings(relay)
        if settings:
            self.settings = merge(self.settings, settings)
        self.raw = raw
        self.proc = None          # Popen of `postern start --foreground`
        self.daemon_pid = None    # master pid when started without --foreground
        self._known_pids = set()  # every daemon pid we have seen, for cleanup
        self._stdout = os.path.join(self.dir, "postern.stdout")
        self._stderr = os.path.join(self.dir, "postern.stderr")
        self.write_config()

    # -- config

    def default_settings(self):
        return {
            "hostname": "postern.test",
            "spool_dir": self.spool,
            "run_dir": self.run_dir,
            "user": self.user,
            "log": {"dir": self.log_dir, "level": "info"},
            "listen": [{"address": "127.0.0.1", "port": self.port, "mode": "smtp"}],
            "smtpd": {"mynetworks": ["127.0.0.0/8"]},
            "queue": {"retry_min": 1, "retry_max": 2, "lifetime": 60, "concurrency": 2},
            "local": {"domains": ["localhost"],
                      "maildir": os.path.join(self.mail_dir, "%u", "Maildir")},
        }

    def config_text(self):
        return render_config(self.settings) + self.raw

    def write_config(self, text=None):
        """Write the config file (the rendered settings, or `text`)."""
        with open(self.conf, "w") as f:
            f.write(self.config_text() if text is None else text)
        os.chmod(self.conf, 0o644)

    def update(self, settings=None, raw=None):
        """Merge settings into the config and rewrite the file."""
        if settings:
            self.settings = merge(self.settings, settings)
        if raw is not None:
            self.raw = raw
        self.write_config()

    # -- CLI

    def cli(self, *args, timeout=20, check=False):
        """Run `postern -c CONF ARGS`; CompletedProcess with text output.
        Output goes through files, not pipes, so a daemon that inherits
        them cannot make this hang."""
        cmd = [bin_path("postern"), "-c", self.conf] + [str(a) for a in args]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                   timeout=scaled(timeout), cwd=self.dir)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                raise AssertionError("`postern %s` did not exit within %ss"
                                     % (" ".join(map(str, args)), scaled(timeout)))
            out.seek(0)
            err.seek(0)
            cp = subprocess.CompletedProcess(cmd, rc, out.read().decode("utf-8", "replace"),
                                             err.read().decode("utf-8", "replace"))
        if check and cp.returncode != 0:
            raise AssertionError("`postern %s` exited %d: %s%s" % (
                " ".join(map(str, args)), cp.returncode, cp.stdout, cp.stderr))
        return cp

    # -- logs

    def log_path(self, component):
        return os.path.join(self.log_dir, component + ".log")

    def log_lines(self, component):
        try:
            with open(self.log_path(component), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return data.decode("utf-8", "replace").splitlines()

    def log_mark(self):
        """Current line count of every component log (for since=)."""
        return {c: len(self.log_lines(c)) for c in COMPONENTS}

    def find_log(self, component, regex, since=None):
        """Lines of a component log matching regex (after mark `since`)."""
        rx = re.compile(regex)
        lines = self.log_lines(component)
        if since is not None:
            lines = lines[since.get(component, 0) if isinstance(since, dict) else since:]
        return [l for l in lines if rx.search(l)]

    def wait_log(self, component, regex, timeout=10, since=None, count=1):
        """Wait until `count` lines of the component log match regex; return them."""
        return wait_for(lambda: (lambda m: m if len(m) >= count else None)(
                            self.find_log(component, regex, since)),
                        timeout, what="%s.log line /%s/" % (component, regex))

    def grep(self, text):
        """Every log line (all components) that contains text: {comp: [lines]}."""
        return {c: [l for l in self.log_lines(c) if text in l] for c in COMPONENTS}

    # -- start / stop

    def _check_not_exited(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("postern start --foreground exited with %s before ready; stderr: %s"
                                 % (self.proc.returncode, self.stderr_text()[-2000:]))

    def stderr_text(self):
        try:
            with open(self._stderr, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, since=None, timeout=15):
        """Wait until every component log has an event=ready line (after
        mark `since`)."""
        def missing():
            return [c for c in COMPONENTS if not self.find_log(c, r"\bevent=ready\b", since)]

        def ready():
            self._check_not_exited()
            return not missing()
        try:
            wait_for(ready, timeout, what="event=ready in every component log")
        except AssertionError as e:
            raise AssertionError("%s (no event=ready from: %s)" % (e, ", ".join(missing())))
        self._remember_pids()

    def start(self, foreground=True, timeout=15, wait=True, nofile=None):
        """Start the master.  foreground: Popen `start --foreground` in its
        own process group; else run `start` (which must daemonize and exit 0).
        nofile: (soft, hard) RLIMIT_NOFILE for the master and so its
        children (foreground only)."""
        assert self.proc is None and self.daemon_pid is None, "already started"
        assert nofile is None or foreground, "nofile needs foreground"
        mark = self.log_mark()
        if foreground:
            limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile)) if nofile else None
            with open(self._stdout, "ab") as out, open(self._stderr, "ab") as err:
                self.proc = subprocess.Popen(
                    [bin_path("postern"), "-c", self.conf, "start", "--foreground"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.dir,
                    start_new_session=True, preexec_fn=limit)
        else:
            cp = self.cli("start", timeout=timeout)
            if cp.returncode != 0:
                raise AssertionError("`postern start` exited %d: %s%s"
                                     % (cp.returncode, cp.stdout, cp.stderr))
            self.daemon_pid = self.master_pid_from_file()
            if self.daemon_pid:
                self._known_pids.add(self.daemon_pid)
        if wait:
            self.wait_ready(since=mark, timeout=timeout)
        return self

    def master_pid_from_file(self):
        try:
            with open(os.path.join(self.run_dir, "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self):
        if self.proc is not None:
            return self.proc.poll() is None
        if self.daemon_pid is not None:
            return pid_alive(self.daemon_pid)
        return False

    def stop(self, timeout=15):
        """`postern stop`, then wait (bounded) for the master to exit.
        Returns the CompletedProcess of the stop command."""
        cp = None
        if self.running():
            cp = self._cli_reaping("stop", timeout=timeout)
        self._wait_master_exit(timeout)
        return cp

    def _cli_reaping(self, *args, timeout=20):
        """Like cli(), but keeps reaping the foreground master meanwhile:
        `postern stop` waits for the master's pid to vanish, and a dead
        child of ours stays a zombie (kill(pid, 0) succeeds) until we reap
        it.  Returns a CompletedProcess, or None if the command hung."""
        cmd = [bin_path("postern"), "-c", self.conf] + [str(a) for a in args]
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 cwd=self.dir)
            deadline = time.monotonic() + scaled(timeout)
            while p.poll() is None:
                if self.proc is not None:
                    self.proc.poll()
                if time.monotonic() > deadline:
                    p.kill()
                    p.wait()
                    return None
                time.sleep(0.02)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(cmd, p.returncode,
                                               out.read().decode("utf-8", "replace"),
                                               err.read().decode("utf-8", "replace"))

    def _wait_master_exit(self, timeout):
        deadline = time.monotonic() + scaled(timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_pgrp(self.proc.pid)
                kill_pid(self.proc.pid)
                self.proc.wait(timeout=10)
                self.proc = None
                raise AssertionError("master did not exit within %ss of `postern stop`"
                                     % scaled(timeout))
            self.proc = None
        if self.daemon_pid is not None:
            pid = self.daemon_pid
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                kill_pid(pid)
                self.daemon_pid = None
                raise AssertionError("daemonized master %d did not exit within %ss"
                                     % (pid, scaled(timeout)))
            self.daemon_pid = None

    def kill_all(self):
        """SIGKILL every process of this instance we know of (by pid)."""
        pids = set(self._known_pids)
        mp = self.master_pid_from_file()
        if mp:
            pids.add(mp)
        for p in list(pids):
            if pid_alive(p) and self._is_ours(p):
                pids.update(descendants(p))
        if self.proc is not None:
            pids.add(self.proc.pid)
            pids.update(descendants(self.proc.pid))
            kill_pgrp(self.proc.pid)
        for p in pids:
            if pid_alive(p) and self._is_ours(p):
                kill_pid(p)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
        self.daemon_pid = None

    def _is_ours(self, pid):
        """Is pid one of postern's programs from this build (guards against
        pid reuse before we SIGKILL it)?"""
        exe = proc_exe(pid)
        if exe is None:
            return True   # cannot tell (no permission): it was recorded by us
        exe = exe.replace(" (deleted)", "")
        return exe.startswith(BUILD + os.sep)

    def cleanup(self):
        try:
            if self.running():
                try:
                    self.stop(timeout=10)
                except Exception:
                    pass
        finally:
            self.kill_all()
            if self._owned:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False

    # -- status

    def status(self, check=True):
        """Parsed `postern status`: list of dicts name, pid, state, uptime, restarts."""
        cp = self.cli("status")
        if check and cp.returncode != 0:
            raise AssertionError("`postern status` exited %d: %s%s"
                                 % (cp.returncode, cp.stdout, cp.stderr))
        rows = []
        for line in cp.stdout.splitlines():
            f = line.split()
            if len(f) >= 2 and f[0] in COMPONENTS and f[1].isdigit():
                rows.append({"name": f[0], "pid": int(f[1]),
                             "state": f[2] if len(f) > 2 else "",
                             "uptime": f[3] if len(f) > 3 else "",
                             "restarts": f[4] if len(f) > 4 else ""})
        for r in rows:
            self._known_pids.add(r["pid"])
        return rows

    def pids(self):
        """{'master': pid, 'smtpd': pid, 'queued': pid, 'deliverd': [pids]}"""
        out = {"deliverd": []}
        for r in self.status():
            if r["name"] == "deliverd":
                out["deliverd"].append(r["pid"])
            else:
                out[r["name"]] = r["pid"]
        out["deliverd"].sort()
        return out

    def _remember_pids(self):
        try:
            self.status(check=False)
        except AssertionError:
            pass

    # -- mail

    def send(self, sender, rcpts, msg, **kw):
        return send_mail(self.port, sender, rcpts, msg, **kw)

    def send_ok(self, sender, rcpts, msg, **kw):
        """Send, assert `250 2.0.0 Ok: queued as QID`, return the QID."""
        code, text = self.send(sender, rcpts, msg, **kw)
        reply = "%d %s" % (code, text)
        m = QUEUED_RE.match(reply)
        assert m, "DATA reply %r does not match '250 2.0.0 Ok: queued as QID'" % reply
        return m.group(1)

    def maildir(self, user):
        return os.path.join(self.mail_dir, user, "Maildir")

    def maildir_files(self, user, sub="new"):
        d = os.path.join(self.maildir(user), sub)
        try:
            return sorted(os.path.join(d, n) for n in os.listdir(d) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def wait_maildir(self, user, n=1, timeout=15):
        return wait_for(lambda: (lambda fs: fs if len(fs) >= n else None)(self.maildir_files(user)),
                        timeout, what="%d message(s) in %s/new" % (n, self.maildir(user)))

    def spool_files(self, sub):
        d = os.path.join(self.spool, sub)
        try:
            return sorted(os.listdir(d))
        except FileNotFoundError:
            return []


# ---------------------------------------------------------------- upstream SMTP server

class _Recorder:
    def __init__(self, up):
        self.up = up

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.up.rcpt_reply(address) if self.up.rcpt_reply else None
        if reply and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        rec = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "content": bytes(envelope.original_content or b""),
            "mail_options": list(envelope.mail_options or []),
            "session": id(session),
            "peer": session.peer,
            "helo": session.host_name,
            "time": time.time(),
        }
        reply = self.up.data_reply(rec) if self.up.data_reply else None
        if reply and not reply.startswith("2"):
            with self.up.cond:
                self.up.rejected.append(rec)
                self.up.cond.notify_all()
            return reply
        with self.up.cond:
            self.up.messages.append(rec)
            self.up.cond.notify_all()
        return "250 2.0.0 Ok: upstream accepted"


class Upstream:
    """An SMTP server on 127.0.0.1 (aiosmtpd in a thread) that records
    every accepted transaction in .messages (dicts: mail_from, rcpt_tos,
    content bytes as received after dot-unstuffing, session, peer, helo).

    rcpt_reply(address) / data_reply(record) may return a reply string to
    answer instead of 250 (e.g. "550 5.1.1 No such user")."""

    def __init__(self, port=None, rcpt_reply=None, data_reply=None):
        self.port = port or free_port()
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.messages = []
        self.rejected = []
        self.cond = threading.Condition()
        self.controller = None

    def start(self):
        from aiosmtpd.controller import Controller
        self.controller = Controller(_Recorder(self), hostname="127.0.0.1", port=self.port,
                                     ready_timeout=scaled(10))
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            try:
                self.controller.stop()
            finally:
                self.controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def wait_messages(self, n, timeout=15):
        """Wait until at least n messages arrived; return a copy of the list."""
        deadline = time.monotonic() + scaled(timeout)
        with self.cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("upstream got %d message(s), expected %d within %ss"
                                         % (len(self.messages), n, scaled(timeout)))
                self.cond.wait(left)
            return list(self.messages)

    def wait_rejected(self, n, timeout=15):
        deadline = time.monotonic() + scaled(timeout)
        with self.cond:
            while len(self.rejected) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("upstream rejected %d DATA, expected %d"
                                         % (len(self.rejected), n))
                self.cond.wait(left)
            return list(self.rejected)


# ---------------------------------------------------------------- SMTP clients

def send_mail(port, sender, rcpts, msg, host="127.0.0.1", timeout=20, ehlo="client.test",
              mail_options=()):
    """Submit msg (bytes or str; smtplib dot-stuffs it and makes CRLF line
    ends) and return the DATA reply as (code, text).  Raises
    AssertionError if MAIL or a RCPT is refused."""
    if isinstance(msg, str):
        msg = msg.encode("utf-8")
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    s = smtplib.SMTP(host, port, local_hostname=ehlo, timeout=scaled(timeout))
    try:
        code, text = s.ehlo()
        assert code == 250, "EHLO answered %d %r" % (code, text)
        opts = list(mail_options)
        if any(b > 127 for b in msg) and s.has_extn("8bitmime") and "BODY=8BITMIME" not in opts:
            opts.append("BODY=8BITMIME")
        code, text = s.mail(sender, opts)
        assert code == 250, "MAIL answered %d %r" % (code, text)
        for r in rcpts:
            code, text = s.rcpt(r)
            assert code in (250, 251), "RCPT TO:<%s> answered %d %r" % (r, code, text)
        code, text = s.data(msg)
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return code, text.decode("utf-8", "replace")
    finally:
        s.close()


class SMTPClient:
    """A raw-socket SMTP client for scripted dialogues:

        c = SMTPClient(port)
        c.expect("220")
        c.cmd("EHLO x", "250")
        c.send_raw(b"...")
    Replies are (code, [lines]); codes are checked by prefix ("2", "25", "250")."""

    def __init__(self, port, host="127.0.0.1", timeout=20):
        self.sock = socket.create_connection((host, port), timeout=scaled(timeout))
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def send(self, line):
        self.send_raw((line.encode("utf-8") if isinstance(line, str) else line) + b"\r\n")

    def _readline(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by server (pending: %r)" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def read_reply(self):
        """One (possibly multi-line) reply: (code:int, [text lines])."""
        lines = []
        while True:
            line = self._readline()
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError("malformed reply line %r" % line)
            lines.append(line)
            if len(line) == 3 or line[3] != "-":
                break
        codes = {l[:3] for l in lines}
        assert len(codes) == 1, "reply lines with different codes: %r" % lines
        return int(lines[0][:3]), [l[4:] for l in lines]

    def expect(self, code):
        c, lines = self.read_reply()
        assert str(c).startswith(str(code)), "expected %s, got %d %s" % (code, c, " / ".join(lines))
        return c, lines

    def cmd(self, line, code=None):
        self.send(line)
        if code is None:
            return self.read_reply()
        return self.expect(code)

    def closed_by_peer(self, timeout=5):
        """True once the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(scaled(timeout))
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True


# ---------------------------------------------------------------- message helpers

def make_message(subject="postern test", sender="user@example.org", to="a@example.net",
                 body=b"hello\r\n", extra_headers=()):
    """An RFC 5322 message as bytes with CRLF line ends."""
    hdrs = [b"From: " + sender.encode(), b"To: " + to.encode(),
            b"Subject: " + subject.encode(),
            b"Message-ID: <" + ("%d.%d@client.test" % (os.getpid(), time.time_ns())).encode() + b">",
            b"Date: Thu, 04 Dec 2026 21:30:01 +0000"]
    hdrs += [h.encode() if isinstance(h, str) else h for h in extra_headers]
    if isinstance(body, str):
        body = body.encode("utf-8")
    return b"\r\n".join(hdrs) + b"\r\n\r\n" + body


def split_first_header(content):
    """(first header field incl. continuation lines, rest) of raw bytes."""
    m = re.match(rb"([^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*)", content)
    if not m:
        return b"", content
    return m.group(1), content[m.end():]


def header_block(content):
    """The header section (up to the first empty line) of raw bytes."""
    m = re.search(rb"\r?\n\r?\n", content)
    return content[:m.start() + 1] if m else content


def count_headers(content, name):
    hb = header_block(content)
    return len(re.findall(rb"(?im)^" + re.escape(name.encode()) + rb":", hb))


# ---------------------------------------------------------------- common set-ups

class relay_instance:
    """Context manager: a started Upstream and a started Instance relaying to it.

        with relay_instance() as (inst, up): ...
    """

    def __init__(self, start=True, **kw):
        self.kw = kw
        self.start = start
        self.up = None
        self.inst = None

    def __enter__(self):
        self.up = Upstream().start()
        try:
            self.inst = Instance(relay=self.up.port, **self.kw)
            if self.start:
                self.inst.start()
        except BaseException:
            if self.inst is not None:
                self.inst.cleanup()
            self.up.stop()
            raise
        return self.inst, self.up

    def __exit__(self, *exc):
        try:
            self.inst.cleanup()
        finally:
            self.up.stop()
        return False


def assert_mail_flows(inst, up, timeout=15):
    """Relay one fresh message through inst to up and see it arrive."""
    n = len(up.messages)
    tag = "flow-%d" % time.time_ns()
    qid = inst.send_ok("user@example.org", ["flow@example.net"], make_message(subject=tag))
    msgs = up.wait_messages(n + 1, timeout)
    assert any(tag.encode() in m["content"] for m in msgs[n:]), \
        "message %s (%s) not among the upstream's new messages" % (qid, tag)
    return qid


def crash(inst):
    """SIGKILL the master and every child at once (a power cut, as far as
    the processes are concerned), then forget the master."""
    pids = inst.pids()
    victims = [pids.get("master"), pids.get("smtpd"), pids.get("queued")] + pids["deliverd"]
    victims = [p for p in victims if p]
    for p in victims:
        kill_pid(p)
    wait_for(lambda: not any(pid_alive(p) for p in victims), 5, what="killed processes to die")
    if inst.proc is not None:
        try:
            inst.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            kill_pgrp(inst.proc.pid)
            inst.proc.wait(timeout=5)
        inst.proc = None
    inst.daemon_pid = None
    return victims
