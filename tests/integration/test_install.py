"""`make install DESTDIR=... PREFIX=/usr/local` and the installed tree:
it runs (start, a message delivered, stop) from where it was installed,
the man pages render, the systemd unit passes `systemd-analyze verify`,
an edited config survives a second install, and sendmail/mailq links
appear only with `make install-sendmail-links`."""

import os
import re
import shutil
import subprocess

from postern import (Instance, Skip, BUILD, REPO, make_message, make_tmpdir, wait_for, scaled,
                     pid_alive, descendants, proc_exe, kill_pid, is_root)

PREFIX = "/usr/local"


def make_install(destdir, target="install"):
    cp = subprocess.run(["make", "-s", "-C", REPO, target, "DESTDIR=" + destdir,
                         "PREFIX=" + PREFIX, "BUILD=" + BUILD],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True,
                        timeout=scaled(300))
    assert cp.returncode == 0, "make %s failed: %s%s" % (target, cp.stdout, cp.stderr)
    return destdir + PREFIX


def installed_tree():
    d, _ = make_tmpdir(prefix="postern-install-")
    return d, make_install(d)


def run(root, prog, *args, env=None, timeout=60):
    return subprocess.run([os.path.join(root, "bin", prog)] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=scaled(timeout), env=env)


def test_install_layout_and_config_kept():
    destdir, root = installed_tree()
    for f in ("bin/postern", "bin/postern-sendmail", "libexec/postern/master",
              "libexec/postern/smtpd", "libexec/postern/queued", "libexec/postern/deliverd"):
        assert os.access(os.path.join(root, f), os.X_OK), f
    for f in ("share/man/man8/postern.8", "share/man/man5/postern.conf.5",
              "share/man/man1/postern-sendmail.1", "lib/systemd/system/postern.service",
              "etc/postern/postern.conf"):
        assert os.path.isfile(os.path.join(root, f)), f
    assert os.path.isfile(os.path.join(destdir, "etc/logrotate.d/postern"))
    unit = open(os.path.join(root, "lib/systemd/system/postern.service")).read()
    assert "@PREFIX@" not in unit
    assert "ExecStart=/usr/local/bin/postern start --foreground" in unit
    assert "Type=notify" in unit
    # Not asked for: no sendmail or mailq.
    assert not os.path.lexists(os.path.join(root, "sbin/sendmail"))
    assert not os.path.lexists(os.path.join(root, "bin/mailq"))
    # The installed example is the default config of the installed postern,
    # and it is valid as shipped.
    env = dict(os.environ)
    env.pop("POSTERN_CONFIG", None)
    cp = run(root, "postern", "check", env=env)
    assert cp.returncode == 0, (cp.stdout, cp.stderr)
    assert os.path.join(root, "etc/postern/postern.conf") in cp.stdout, cp.stdout
    # A second install never overwrites an edited config.
    conf = os.path.join(root, "etc/postern/postern.conf")
    with open(conf, "a") as f:
        f.write("# edited by the admin\n")
    make_install(destdir)
    assert open(conf).read().endswith("# edited by the admin\n")
    shutil.rmtree(destdir, ignore_errors=True)


def test_install_sendmail_links():
    destdir, _ = make_tmpdir(prefix="postern-install-")
    root = make_install(destdir, "install-sendmail-links")
    assert os.readlink(os.path.join(root, "sbin/sendmail")) == "../bin/postern-sendmail"
    assert os.path.realpath(os.path.join(root, "bin/mailq")) == \
        os.path.realpath(os.path.join(root, "bin/postern-sendmail"))
    shutil.rmtree(destdir, ignore_errors=True)


def _kill_installed(root, pidfile):
    try:
        pid = int(open(pidfile).read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    for p in [pid] + descendants(pid):
        exe = (proc_exe(p) or "").replace(" (deleted)", "")
        if pid_alive(p) and exe.startswith(root + os.sep):
            kill_pid(p)


def test_installed_tree_runs():
    destdir, root = installed_tree()
    with Instance(name="postern-installed") as inst:
        pidfile = os.path.join(inst.run_dir, "master.pid")
        try:
            cp = run(root, "postern", "-c", inst.conf, "start")
            assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
            inst.wait_ready()
            master = int(open(pidfile).read().split()[0])
            assert os.path.realpath(proc_exe(master)) == \
                os.path.realpath(os.path.join(root, "libexec/postern/master"))
            for p in descendants(master):
                assert (proc_exe(p) or "").startswith(root + os.sep), proc_exe(p)
            qid = inst.send_ok("user@example.org", ["bob@localhost"], make_message())
            inst.wait_maildir("bob", 1)
            inst.wait_log("deliverd", r"event=delivered qid=%s" % qid)
            # postern-sendmail from the installed tree, and mailq (as
            # argv[0]) through a link like install-sendmail-links makes.
            p = subprocess.run([os.path.join(root, "bin/postern-sendmail"), "-C", inst.conf,
                                "carol@localhost"], input=make_message(),
                               capture_output=True, timeout=scaled(30))
            assert p.returncode == 0, (p.stdout, p.stderr)
            inst.wait_maildir("carol", 1)
            mailq = os.path.join(inst.dir, "mailq")
            os.symlink(os.path.join(root, "bin/postern-sendmail"), mailq)
            q = subprocess.run([mailq, "-C", inst.conf], capture_output=True, text=True,
                               timeout=scaled(30))
            assert q.returncode == 0 and "in the queue" in q.stdout, (q.stdout, q.stderr)
            cp = run(root, "postern", "-c", inst.conf, "stop")
            assert cp.returncode == 0, (cp.stdout, cp.stderr)
            wait_for(lambda: not pid_alive(master), 15, what="installed master to exit")
        finally:
            _kill_installed(root, pidfile)
    shutil.rmtree(destdir, ignore_errors=True)


def test_man_pages_render():
    destdir, root = installed_tree()
    man = shutil.which("man")
    groff = shutil.which("groff")
    if not man and not groff:
        raise Skip("neither man nor groff is installed")
    for page, words in (("man8/postern.8", ["start", "--foreground", "queue show", "reload"]),
                        ("man5/postern.conf.5", ["spool_dir", "queue.concurrency", "metrics.listen",
                                                 "log.syslog", "relay.password_file"]),
                        ("man1/postern-sendmail.1", ["-oi", "mailq", "EXIT STATUS"])):
        path = os.path.join(root, "share/man", page)
        if man:
            cmd = [man, "--warnings", "-l", path]
        else:
            cmd = [groff, "-man", "-Tutf8", "-ww", path]
        env = dict(os.environ, MANWIDTH="200", MAN_KEEP_FORMATTING="0", MANPAGER="cat",
                   PAGER="cat")
        cp = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=scaled(30))
        assert cp.returncode == 0, (page, cp.stderr)
        assert cp.stderr.strip() == "", (page, cp.stderr)
        text = cp.stdout.replace("\u2010", "-").replace("\u2212", "-")
        text = re.sub(r".\x08", "", text)               # overstrike bold/underline
        text = re.sub(r"-\n\s+", "-", text)             # words hyphenated at a line end
        assert "NAME" in text and "SEE ALSO" in text, (page, text[:500])
        for w in words:
            assert w in text, (page, w)
    shutil.rmtree(destdir, ignore_errors=True)


def test_systemd_unit_verifies():
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        raise Skip("systemd-analyze is not installed (apt-get install systemd)")
    destdir, root = installed_tree()
    unit = open(os.path.join(root, "lib/systemd/system/postern.service")).read()
    # verify checks that the Exec*= binaries exist: point them at the
    # installed copies under DESTDIR.
    d, _ = make_tmpdir(prefix="postern-unit-")
    path = os.path.join(d, "postern.service")
    with open(path, "w") as f:
        f.write(unit.replace("=/usr/local/", "=" + root + "/"))
    # Documentation=man:... is checked too: find the installed pages.
    env = dict(os.environ, MANPATH=os.path.join(root, "share/man"), SYSTEMD_PAGER="cat")
    cp = subprocess.run([analyze, "verify", path], capture_output=True, text=True, env=env,
                        timeout=scaled(60))
    assert cp.returncode == 0 and cp.stderr.strip() == "", (cp.returncode, cp.stdout, cp.stderr)
    # Every hardening line is explained by a comment right above it.
    lines = unit.splitlines()
    for i, l in enumerate(lines):
        key = l.split("=", 1)[0]
        if key in ("ProtectSystem", "ReadWritePaths", "PrivateTmp", "ProtectHome",
                   "RestrictAddressFamilies", "NoNewPrivileges", "CapabilityBoundingSet",
                   "MemoryDenyWriteExecute", "RestrictNamespaces", "LockPersonality",
                   "SystemCallArchitectures", "RuntimeDirectory"):
            assert lines[i - 1].startswith("#"), "no comment above %s" % l
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(destdir, ignore_errors=True)
