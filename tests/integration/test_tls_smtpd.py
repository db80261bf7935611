"""smtpd with TLS and AUTH: STARTTLS (RFC 3207) and implicit TLS (RFC
8314), the CVE-2011-0411 injection case, AUTH PLAIN/LOGIN (RFC 4954) only
under TLS, relay only after AUTH, AUTH required on submission ports,
brute-force delay and lockout, and the Received header (RFC 3848).

Certificates are made at test time with the openssl CLI (make_pki()); the
helpers are shared with test_tls_relay.py and test_tls_check.py."""

import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import time

import postern
from postern import Instance, SMTPClient, Skip, free_port, make_message, wait_for

PASSWORD = "correct horse battery"


# ---------------------------------------------------------------- certificates

def _run(args, cwd):
    p = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    if p.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(args), p.stdout.decode(errors="replace")))


def make_pki(d):
    """A test CA and leaf certificates in d, made with the openssl CLI:
    ca.pem; server (localhost, 127.0.0.1), expired, wronghost (other.test).
    Returns {name: (cert, key)} plus "ca"."""
    if shutil.which("openssl") is None:
        raise Skip("openssl CLI not installed")
    os.makedirs(d, exist_ok=True)
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
          "-subj", "/CN=postern test CA"], d)
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca = t\n[t]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\n"
                "serial = serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n"
                "unique_subject = no\n[p]\ncommonName = supplied\n")
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    out = {"ca": os.path.join(d, "ca.pem")}
    leaves = {
        "server": ("localhost", "DNS:localhost,IP:127.0.0.1", None),
        "wronghost": ("other.test", "DNS:other.test", None),
        "expired": ("localhost", "DNS:localhost,IP:127.0.0.1", ("20200101000000Z", "20200201000000Z")),
    }
    for name, (cn, san, dates) in leaves.items():
        _run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn,
              "-addext", "subjectAltName=" + san], d)
        args = ["openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
                "ca.key", "-in", name + ".csr", "-out", name + ".pem", "-notext"]
        args += ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", "30"]
        _run(args, d)
        for ext in (".key",):
            os.chmod(os.path.join(d, name + ext), 0o600)
        out[name] = (os.path.join(d, name + ".pem"), os.path.join(d, name + ".key"))
    return out


def make_users(path, users):
    """A users file of name:$6$ lines made by `openssl passwd -6`, mode 0600."""
    lines = []
    for name, pw in users.items():
        h = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=pw.encode(),
                           stdout=subprocess.PIPE, check=True).stdout.decode().strip()
        lines.append("%s:%s\n" % (name, h))
    with open(path, "w") as f:
        f.write("".join(lines))
    os.chmod(path, 0o600)
    return path


def try_auth(s, mech, user, password, initial=True):
    """AUTH with smtplib; the reply code (535 instead of an exception)."""
    s.user, s.password = user, password
    fn = s.auth_plain if mech == "PLAIN" else s.auth_login
    try:
        code, _ = s.auth(mech, fn, initial_response_ok=initial)
    except smtplib.SMTPAuthenticationError as e:
        code = e.smtp_code
    return code


def client_ctx(pki):
    ctx = ssl.create_default_context(cafile=pki["ca"])
    return ctx


class tls_instance:
    """An Instance with a certificate and users file, listening on smtp
    (self.port), submission (.sub_port) and submissions (.subs_port)."""

    def __init__(self, settings=None, users=None, start=True, cert="server"):
        self.settings = settings or {}
        self.users = users if users is not None else {"alice": PASSWORD}
        self.start = start
        self.cert = cert

    def __enter__(self):
        d, _ = postern.make_tmpdir("postern-pki-")
        self.pki = make_pki(d)
        users = make_users(os.path.join(d, "users"), self.users)
        inst = Instance(name="postern-tls")
        inst.pki = self.pki
        inst.sub_port = free_port()
        inst.subs_port = free_port()
        cert, key = self.pki[self.cert]
        base = {
            "listen": [{"address": "127.0.0.1", "port": inst.port, "mode": "smtp"},
                       {"address": "127.0.0.1", "port": inst.sub_port, "mode": "submission"},
                       {"address": "127.0.0.1", "port": inst.subs_port, "mode": "submissions"}],
            "tls": {"cert": cert, "key": key},
            "smtpd": {"auth_users": users},
        }
        inst.update(postern.merge(base, self.settings))
        self.inst = inst
        self.dir = d
        try:
            if self.start:
                inst.start()
        except BaseException:
            inst.cleanup()
            raise
        return inst

    def __exit__(self, *exc):
        self.inst.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


def starttls_client(inst, port=None):
    s = smtplib.SMTP("127.0.0.1", port or inst.port, local_hostname="client.test",
                     timeout=postern.scaled(20))
    s.ehlo()
    assert s.has_extn("starttls"), "STARTTLS not advertised: %r" % s.esmtp_features
    assert not s.has_extn("auth"), "AUTH advertised before TLS"
    code, _ = s.starttls(context=client_ctx(inst.pki))
    assert code == 220
    s.ehlo()
    return s


# ---------------------------------------------------------------- tests

def test_tls_starttls_and_received_header():
    with tls_instance() as inst:
        s = starttls_client(inst)
        try:
            assert not s.has_extn("starttls"), "STARTTLS offered again inside TLS"
            assert s.has_extn("auth") and "PLAIN" in s.esmtp_features["auth"].upper()
            ver = s.sock.version()
            assert ver in ("TLSv1.2", "TLSv1.3"), ver
            s.sendmail("a@example.org", ["user@localhost"], make_message())
        finally:
            s.quit()
        f = inst.wait_maildir("user")[0]
        data = open(f, "rb").read().decode()
        assert "with ESMTPS id" in data, data[:600]
        assert "(using %s with cipher " % ver in data, data[:600]
        inst.wait_log("smtpd", r"event=tls client=127\.0\.0\.1 protocol=TLSv1\.[23] cipher=")


def test_tls_implicit_submissions_and_auth_plain():
    with tls_instance() as inst:
        s = smtplib.SMTP_SSL("127.0.0.1", inst.subs_port, local_hostname="client.test",
                             context=client_ctx(inst.pki), timeout=postern.scaled(20))
        try:
            s.ehlo()
            assert not s.has_extn("starttls")
            code, _ = s.mail("a@example.org")
            assert code == 530, "MAIL before AUTH on submissions answered %d" % code
            s.rset()
            assert try_auth(s, "PLAIN", "alice", PASSWORD) == 235
            s.sendmail("alice@example.org", ["user@localhost"], make_message())
        finally:
            s.quit()
        data = open(inst.wait_maildir("user")[0], "rb").read().decode()
        assert "with ESMTPSA id" in data, data[:600]
        inst.wait_log("smtpd", r"event=auth client=127\.0\.0\.1 user=\"?alice\"? mech=PLAIN")
        for comp, lines in inst.grep(PASSWORD).items():
            assert not lines, "password in %s.log: %r" % (comp, lines)


def test_tls_auth_login_right_and_wrong_with_delay():
    with tls_instance() as inst:
        s = starttls_client(inst)
        try:
            t0 = time.monotonic()
            assert try_auth(s, "LOGIN", "alice", "wrong password", initial=False) == 535
            assert time.monotonic() - t0 >= 0.9, "failed login answered without delay"
            assert try_auth(s, "LOGIN", "alice", PASSWORD, initial=False) == 235
        finally:
            s.quit()
        s = starttls_client(inst)
        try:
            assert try_auth(s, "PLAIN", "alice", "nope") == 535
            assert try_auth(s, "PLAIN", "mallory", PASSWORD) == 535
        finally:
            s.quit()
        lines = inst.wait_log("smtpd", r"event=auth_failed client=127\.0\.0\.1 user=\S+ mech=", count=3)
        assert any("mech=LOGIN" in l for l in lines) and any("mallory" in l for l in lines)
        for comp, found in inst.grep("nope").items():
            assert not found, "password in %s.log" % comp


def test_tls_auth_refused_before_starttls():
    with tls_instance() as inst:
        with SMTPClient(inst.port) as c:
            c.expect(220)
            _, lines = c.cmd("EHLO client.test", 250)
            assert not any(l.upper().startswith("AUTH") for l in lines), lines
            assert "STARTTLS" in lines
            code, _ = c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
            assert code in (538, 530), code
        with SMTPClient(inst.sub_port) as c:
            c.expect(220)
            c.cmd("EHLO client.test", 250)
            c.cmd("MAIL FROM:<a@example.org>", 530)


def test_tls_relay_only_after_auth():
    with tls_instance(settings={"smtpd": {"mynetworks": []}}) as inst:
        s = starttls_client(inst)
        try:
            s.mail("alice@example.org")
            code, _ = s.rcpt("someone@example.net")
            assert code == 554, "relay without AUTH answered %d" % code
            s.rset()
            s.login("alice", PASSWORD)
            s.mail("alice@example.org")
            code, _ = s.rcpt("someone@example.net")
            assert code == 250, "relay after AUTH answered %d" % code
        finally:
            s.quit()


def test_tls_starttls_injection_discarded():
    """CVE-2011-0411: "STARTTLS\\r\\nRSET\\r\\n" in one write; the RSET must
    not be answered inside TLS."""
    with tls_instance() as inst:
        raw = socket.create_connection(("127.0.0.1", inst.port), timeout=postern.scaled(10))
        try:
            f = raw.makefile("rb")
            assert f.readline().startswith(b"220")
            raw.sendall(b"EHLO client.test\r\n")
            while True:
                l = f.readline()
                if l[3:4] == b" ":
                    break
            raw.sendall(b"STARTTLS\r\nRSET\r\n")
            assert f.readline().startswith(b"220 2.0.0")
            tls = client_ctx(inst.pki).wrap_socket(raw, server_hostname="localhost")
            tls.settimeout(postern.scaled(1.5))
            try:
                got = tls.recv(4096)
            except (socket.timeout, TimeoutError):
                got = b""
            assert got == b"", "server answered the injected command inside TLS: %r" % got
            tls.settimeout(postern.scaled(10))
            tls.sendall(b"NOOP\r\n")
            assert tls.recv(4096).startswith(b"250"), "session not usable after STARTTLS"
            tls.sendall(b"MAIL FROM:<a@example.org>\r\n")
            assert tls.recv(4096).startswith(b"503"), "EHLO not required again after STARTTLS"
            tls.close()
        finally:
            raw.close()
        inst.wait_log("smtpd", r"event=starttls_discarded client=127\.0\.0\.1 bytes=6")


def test_tls_bruteforce_lockout():
    with tls_instance() as inst:
        codes = []
        s = starttls_client(inst)
        try:
            for i in range(postern_auth_fail_max()):
                code = try_auth(s, "PLAIN", "alice", "guess%d" % i)
                codes.append(code)
                if code == 421:
                    break
        except smtplib.SMTPServerDisconnected:
            codes.append("closed")
        finally:
            s.close()
        assert codes[:4] == [535] * 4, codes
        assert codes[4] in (421, "closed"), codes
        inst.wait_log("smtpd", r"event=auth_locked client=127\.0\.0\.1 failures=5")
        # a new connection, even with the right password, is refused
        s = starttls_client(inst)
        try:
            try:
                code = try_auth(s, "PLAIN", "alice", PASSWORD)
            except smtplib.SMTPServerDisconnected:
                code = "closed"
            assert code in (421, "closed"), code
        finally:
            s.close()
        inst.wait_log("smtpd", r"event=auth_refused client=127\.0\.0\.1")


test_tls_bruteforce_lockout.timeout = 90


def postern_auth_fail_max():
    return 5


def test_tls_swaks_starttls_and_tls_on_connect():
    if shutil.which("swaks") is None:
        raise Skip("swaks not installed")
    with tls_instance() as inst:
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % inst.port, "-tls",
                            "--to", "user@localhost", "--from", "a@example.org",
                            "-a", "PLAIN", "-au", "alice", "-ap", PASSWORD],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, out
        assert "TLS started" in out and "235 2.7.0" in out, out
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % inst.subs_port, "--tls-on-connect",
                            "--to", "user@localhost", "--from", "a@example.org",
                            "-a", "LOGIN", "-au", "alice", "-ap", PASSWORD],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, out
        assert "250 2.0.0 Ok: queued as" in out, out
        inst.wait_maildir("user", n=2)


def test_tls_old_protocols_refused():
    with tls_instance() as inst:
        for ver in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                ctx.minimum_version = ver
                ctx.maximum_version = ver
                ctx.set_ciphers("ALL:@SECLEVEL=0")
            except (ValueError, ssl.SSLError):
                continue
            try:
                with socket.create_connection(("127.0.0.1", inst.subs_port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                        raise AssertionError("%s handshake succeeded (%s)" % (ver, t.version()))
            except (ssl.SSLError, ConnectionError, OSError) as e:
                if isinstance(e, AssertionError):
                    raise
        inst.wait_log("smtpd", r"event=tls_failed client=127\.0\.0\.1")


def test_tls_submissions_without_cert_refused():
    inst = Instance(name="postern-tls")
    try:
        port = free_port()
        inst.update({"listen": [{"address": "127.0.0.1", "port": inst.port, "mode": "smtp"},
                                {"address": "127.0.0.1", "port": port, "mode": "submissions"}]})
        inst.start(wait=False)
        inst.wait_log("smtpd", r"submissions listener \(implicit TLS\) needs tls\.cert")
    finally:
        inst.cleanup()
