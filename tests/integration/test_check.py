"""`postern check` warns (stderr, exit 0) about secret files other users
can read and spool directories with the wrong owner or mode; `postern
start` as root with a nonexistent `user` tells the admin which user to
create, in the foreground and daemonised."""

import os
import pwd

from postern import Instance, Skip, is_root

WARN = "postern: warning: "


def warnings(cp):
    assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    return [l for l in cp.stderr.splitlines() if l.startswith(WARN)]


def secret(inst, name, mode):
    path = os.path.join(inst.dir, name)
    with open(path, "w") as f:
        f.write("alice:$6$x$y\n")
    os.chmod(path, mode)
    return path


def test_check_warns_about_readable_secrets():
    with Instance() as inst:
        users = secret(inst, "users", 0o644)
        key = secret(inst, "key.pem", 0o604)
        pw = secret(inst, "relay.pass", 0o640)
        cert = secret(inst, "cert.pem", 0o644)
        inst.update({"smtpd": {"auth_users": users},
                     "tls": {"cert": cert, "key": key},
                     "relay": {"host": "127.0.0.1", "port": 2525, "tls": "none",
                               "username": "alice", "password_file": pw}})
        w = warnings(inst.cli("check"))
        assert any("smtpd.auth_users" in l and users in l and "readable by every user" in l
                   for l in w), w
        assert any("tls.key" in l and key in l for l in w), w
        assert not any("relay.password_file" in l for l in w), w   # 0640: group only
        assert not any("tls.cert" in l for l in w), w               # a certificate is public
        os.chmod(pw, 0o644)
        w = warnings(inst.cli("check"))
        assert any("relay.password_file" in l and pw in l for l in w), w
        for p in (users, key, pw):
            os.chmod(p, 0o600)
        assert warnings(inst.cli("check")) == [], inst.cli("check").stderr


def test_check_warns_about_spool_permissions():
    with Instance() as inst:
        # No spool yet: nothing to say.
        assert warnings(inst.cli("check")) == []
        inst.start()
        inst.stop()
        assert warnings(inst.cli("check")) == [], inst.cli("check").stderr
        os.chmod(os.path.join(inst.spool, "queue"), 0o755)
        os.chmod(os.path.join(inst.spool, "drop"), 0o777)
        w = warnings(inst.cli("check"))
        assert any("/queue has mode 0755, not 0700" in l for l in w), w
        assert any("/drop has mode 0777, not 1733" in l for l in w), w
        if is_root():
            os.chown(os.path.join(inst.spool, "state"), 0, 0)
            w = warnings(inst.cli("check"))
            assert any("/state is owned by uid 0, not %s" % inst.user in l for l in w), w
        # The master puts it right at the next start.
        inst.start()
        inst.stop()
        assert warnings(inst.cli("check")) == [], inst.cli("check").stderr


MISSING = "postern-nosuchuser"


def missing_user_instance():
    if not is_root():
        raise Skip("needs root: only a root master switches to `user`")
    try:
        pwd.getpwnam(MISSING)
        raise Skip("user %s exists on this host" % MISSING)
    except KeyError:
        pass
    return Instance(settings={"user": MISSING})


def assert_says_create_user(cp):
    assert cp.returncode == 78, (cp.returncode, cp.stdout, cp.stderr)
    assert "user '%s' does not exist" % MISSING in cp.stderr, cp.stderr
    assert "useradd --system" in cp.stderr and MISSING in cp.stderr, cp.stderr


def test_start_as_root_names_missing_user_foreground():
    with missing_user_instance() as inst:
        w = warnings(inst.cli("check"))
        assert any("user '%s' does not exist" % MISSING in l for l in w), w
        assert_says_create_user(inst.cli("start", "--foreground"))


def test_start_as_root_names_missing_user_daemonised():
    with missing_user_instance() as inst:
        assert_says_create_user(inst.cli("start"))
        assert not inst.running()
