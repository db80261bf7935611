"""`postern check relay` against real upstreams (aiosmtpd with STARTTLS or
implicit TLS and an authenticator, certificates from a test CA made with
the openssl CLI): a good smarthost passes every step and exits 0; each
kind of bad one (connection refused, no STARTTLS with tls = "required",
expired certificate, wrong host name, wrong password) exits 1 and says
exactly which step failed and why.  No mail is ever sent."""

import os
import re
import shutil

import postern
from postern import Instance, free_port
from test_tls_relay import PASSWORD, USER, TLSUpstream
from test_tls_smtpd import make_pki


class relay_check:
    """PKI, an upstream (unless mode is None) and a config for it; .run()
    runs `postern check relay` and returns (exit status, stdout)."""

    def __init__(self, mode="starttls", cert="server", auth=True, relay=None, password=PASSWORD):
        self.mode, self.cert, self.auth, self.relay, self.password = mode, cert, auth, relay or {}, password

    def __enter__(self):
        self.dir, _ = postern.make_tmpdir("postern-pki-")
        self.pki = make_pki(self.dir)
        self.up = None
        port = free_port()
        if self.mode is not None:
            self.up = TLSUpstream(self.pki, self.mode, self.cert, self.auth).start()
            port = self.up.port
        pw = os.path.join(self.dir, "relay.pass")
        with open(pw, "w") as f:
            f.write(self.password + "\n")
        os.chmod(pw, 0o600)
        relay = {"host": "127.0.0.1", "port": port,
                 "tls": {"starttls": "required", "implicit": "implicit", "plain": "required",
                         None: "required"}[self.mode],
                 "ca_file": self.pki["ca"], "verify": True, "username": USER, "password_file": pw}
        relay.update(self.relay)
        self.inst = Instance(relay=relay, settings={"queue": {"connect_timeout": 5, "reply_timeout": 10}},
                             name="postern-checkrelay")
        self.port = port
        return self

    def run(self):
        p = self.inst.cli("check", "relay", timeout=60)
        return p.returncode, p.stdout + p.stderr

    def __exit__(self, *exc):
        try:
            self.inst.cleanup()
        finally:
            if self.up is not None:
                self.up.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def step(out, name, status="ok"):
    """The line of step `name`; assert it says `status` ("ok" or "FAILED")."""
    rx = re.compile(r"^  %s\s+(ok|FAILED)\b(.*)$" % re.escape(name), re.M)
    m = [x for x in rx.finditer(out)]
    assert m, "no %r step in:\n%s" % (name, out)
    assert m[-1].group(1) == status, "step %r is %r, want %r:\n%s" % (name, m[-1].group(1), status, out)
    return m[-1].group(0)


def test_check_relay_good_starttls_smarthost():
    with relay_check() as t:
        rc, out = t.run()
        assert rc == 0, out
        step(out, "connect")
        assert "220 " in step(out, "banner")
        assert "STARTTLS" in step(out, "EHLO")
        step(out, "STARTTLS")
        assert re.search(r"TLSv1\.[23] \S+", step(out, "TLS")), out
        assert re.search(r"^  certificate\s+subject CN ?= ?localhost; issuer CN ?= ?postern test CA; "
                         r"expires \d{4}-\d\d-\d\d", out, re.M), out
        assert t.pki["ca"] in step(out, "verify")
        assert "AUTH" in step(out, "EHLO (TLS)")
        assert "PLAIN as %s: 235" % USER in step(out, "AUTH")
        assert "221" in step(out, "QUIT")
        assert "1 of 1 smarthost passed" in out, out
        assert PASSWORD not in out
        assert not t.up.messages


def test_check_relay_good_implicit_smarthost():
    with relay_check(mode="implicit") as t:
        rc, out = t.run()
        assert rc == 0, out
        step(out, "TLS")
        step(out, "verify")
        assert "STARTTLS" not in out.split("EHLO", 1)[0]
        step(out, "AUTH")


def test_check_relay_connection_refused():
    with relay_check(mode=None) as t:
        rc, out = t.run()
        assert rc == 1, out
        assert "127.0.0.1 port %d: Connection refused" % t.port in step(out, "connect", "FAILED")
        assert "0 of 1 smarthost passed" in out


def test_check_relay_no_starttls_when_required():
    with relay_check(mode="plain", auth=False) as t:
        rc, out = t.run()
        assert rc == 1, out
        step(out, "banner")
        assert "not offered" in step(out, "STARTTLS", "FAILED")
        assert "AUTH" not in out.split("STARTTLS", 2)[-1], "went on after the failed step:\n" + out


def test_check_relay_expired_certificate():
    with relay_check(cert="expired") as t:
        rc, out = t.run()
        assert rc == 1, out
        step(out, "TLS")
        assert "certificate has expired" in step(out, "verify", "FAILED")
        assert re.search(r"^  certificate\s+.*expires 2020-02-01", out, re.M), out
        assert not re.search(r"^  AUTH", out, re.M), "AUTH after a failed verification:\n" + out
    with relay_check(cert="expired", relay={"verify": False}) as t:
        rc, out = t.run()
        assert rc == 0, out
        assert "it would fail: certificate has expired" in step(out, "verify")


def test_check_relay_wrong_host_name():
    with relay_check(cert="wronghost") as t:
        rc, out = t.run()
        assert rc == 1, out
        assert "IP address mismatch" in step(out, "verify", "FAILED")
        assert "subject CN" in out and "other.test" in out, out


def test_check_relay_wrong_password():
    with relay_check(password="not the password") as t:
        rc, out = t.run()
        assert rc == 1, out
        step(out, "verify")
        line = step(out, "AUTH", "FAILED")
        assert "535" in line and "rejected the credentials" in line, line
        step(out, "QUIT")
        assert "not the password" not in out


def test_check_relay_each_fallback_checked():
    with relay_check(relay={"fallback": ["127.0.0.1:%d" % free_port()]}) as t:
        rc, out = t.run()
        assert rc == 1, out
        assert "1 of 2 smarthosts passed" in out, out
        assert re.search(r"^127\.0\.0\.1 port %d: ok$" % t.port, out, re.M), out
        assert "Connection refused" in step(out, "connect", "FAILED")


for _t in (test_check_relay_expired_certificate, test_check_relay_wrong_host_name):
    _t.timeout = 120
