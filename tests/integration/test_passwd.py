"""`postern passwd NAME`: a crypt(3) SHA-512 line from a password on stdin,
printed, or written atomically into -f FILE or a writable smtpd.auth_users
(other lines, mode and owner kept); bad names refused; the line logs in
through smtpd AUTH PLAIN over STARTTLS after `postern reload`."""

import os
import re
import smtplib
import subprocess
import warnings

import postern
from postern import bin_path
from test_tls_smtpd import PASSWORD, client_ctx, tls_instance, try_auth

LINE_RE = re.compile(r"^([^:]+):(\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86})$")


def passwd(*args, password="s3cret pass", conf="/nonexistent/postern.conf"):
    return subprocess.run([bin_path("postern"), "-c", conf, "passwd"] + list(args),
                          input=(password + "\n").encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=postern.scaled(20))


def verify(hash_, password):
    """crypt(3) through Python's crypt module; None if it is gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    return crypt.crypt(password, hash_) == hash_


def test_passwd_prints_a_verifiable_sha512_line():
    p = passwd("alice", password="correct horse")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode().strip()
    m = LINE_RE.match(out)
    assert m and m.group(1) == "alice", out
    assert verify(m.group(2), "correct horse") in (True, None)
    assert verify(m.group(2), "wrong horse") in (False, None)
    # a fresh random salt each time
    again = passwd("alice", password="correct horse").stdout.decode().strip()
    assert again != out and LINE_RE.match(again)


def test_passwd_file_add_and_replace_atomically():
    d, _ = postern.make_tmpdir("postern-passwd-")
    path = os.path.join(d, "users")
    with open(path, "w") as f:
        f.write("# users\nbob:$6$abc$def\nalice:$6$old$old\ncarolyn:$6$x$y")
    os.chmod(path, 0o600)
    ino = os.stat(path).st_ino
    p = passwd("-f", path, "alice", password="new one")
    assert p.returncode == 0, p.stderr
    assert b"replaced alice" in p.stderr, p.stderr
    lines = open(path).read().splitlines()
    assert lines[:2] == ["# users", "bob:$6$abc$def"], lines
    assert lines[3] == "carolyn:$6$x$y", lines
    m = LINE_RE.match(lines[2])
    assert m and m.group(1) == "alice", lines
    assert verify(m.group(2), "new one") in (True, None)
    st = os.stat(path)
    assert st.st_mode & 0o7777 == 0o600 and st.st_ino != ino   # renamed into place
    p = passwd("-f", path, "carol", password="third")
    assert p.returncode == 0 and b"added carol" in p.stderr, p.stderr
    lines = open(path).read().splitlines()
    assert len(lines) == 5 and lines[4].startswith("carol:$6$"), lines
    assert os.listdir(d) == ["users"], os.listdir(d)          # no temp file left
    # a new file is created 0600
    new = os.path.join(d, "new-users")
    assert passwd("-f", new, "dave").returncode == 0
    assert os.stat(new).st_mode & 0o7777 == 0o600


def test_passwd_refuses_bad_names_and_empty_passwords():
    d, _ = postern.make_tmpdir("postern-passwd-")
    path = os.path.join(d, "users")
    for name in ("a:b", "tab\there", "nl\nx", "esc\x1b", "#comment", ""):
        p = passwd("-f", path, name)
        assert p.returncode == 64, (name, p.returncode, p.stderr)
        assert b"user name" in p.stderr or b"usage" in p.stderr, p.stderr
        assert not os.path.exists(path)
    p = passwd("-f", path, "alice", password="")
    assert p.returncode == 1 and b"empty password" in p.stderr, p.stderr
    assert not os.path.exists(path)


def test_passwd_configured_file_logs_in_through_smtpd():
    with tls_instance() as inst:
        users = inst.settings["smtpd"]["auth_users"]
        p = passwd("carol", password="carol's pass", conf=inst.conf)
        assert p.returncode == 0, p.stderr
        assert b"added carol in " + users.encode() in p.stderr, p.stderr
        assert open(users).read().splitlines()[-1] == p.stdout.decode().strip()
        assert os.stat(users).st_mode & 0o7777 == 0o600
        mark = inst.log_mark()
        # The file is root-only and was renamed into place: smtpd (no longer
        # root) cannot reopen it, so on reload the master passes it the file.
        inst.cli("reload", check=True)
        inst.wait_log("smtpd", r"event=auth_users_loaded .*users=2", since=mark)
        s = smtplib.SMTP("127.0.0.1", inst.port, local_hostname="client.test",
                         timeout=postern.scaled(20))
        try:
            s.ehlo()
            s.starttls(context=client_ctx(inst.pki))
            s.ehlo()
            assert try_auth(s, "PLAIN", "carol", "carol's pass") == 235
        finally:
            s.close()
        s = smtplib.SMTP("127.0.0.1", inst.port, local_hostname="client.test",
                         timeout=postern.scaled(20))
        try:
            s.ehlo()
            s.starttls(context=client_ctx(inst.pki))
            s.ehlo()
            assert try_auth(s, "PLAIN", "alice", PASSWORD) == 235    # the old line still works
        finally:
            s.close()
