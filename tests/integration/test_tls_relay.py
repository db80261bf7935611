"""deliverd's smarthost client with TLS and AUTH against a real upstream
(aiosmtpd with tls_context/require_starttls, implicit ssl_context and an
authenticator): each relay.tls mode, wrong password (deferred, logged
"relay rejected credentials"), expired and wrong-host certificates
(deferred with verify = true, delivered with verify = false), a password
file others may read (deliverd refuses to start), and rewrite_sender."""

import os
import shutil
import threading

import postern
from postern import Instance, free_port, make_message
from test_tls_smtpd import make_pki

USER, PASSWORD = "relayuser", "relay secret 42"


class TLSUpstream:
    """aiosmtpd on 127.0.0.1 with mode "starttls" (required), "implicit",
    or "plain"; AUTH (any mechanism aiosmtpd offers) when auth=True."""

    def __init__(self, pki, mode="starttls", cert="server", auth=True):
        self.pki, self.mode, self.cert, self.auth = pki, mode, cert, auth
        self.port = free_port()
        self.messages = []
        self.cond = threading.Condition()
        self.controller = None

    def start(self):
        import ssl
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult
        up = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with up.cond:
                    up.messages.append({"mail_from": envelope.mail_from,
                                        "rcpt_tos": list(envelope.rcpt_tos),
                                        "tls": session.ssl is not None,
                                        "auth": session.authenticated})
                    up.cond.notify_all()
                return "250 2.0.0 Ok"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode())
            return AuthResult(success=ok, handled=False)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*self.pki[self.cert])
        kw = {"hostname": "127.0.0.1", "port": self.port, "ready_timeout": postern.scaled(10)}
        if self.auth:
            kw.update(authenticator=authenticator, auth_require_tls=True, auth_required=True)
        if self.mode == "starttls":
            kw.update(tls_context=ctx, require_starttls=True)
        elif self.mode == "implicit":
            # aiosmtpd's auth_require_tls only knows STARTTLS
            kw.update(ssl_context=ctx, auth_require_tls=False)
            # the controller's readiness probe cannot speak TLS
            self.controller = _ImplicitController(Handler(), **kw)
            self.controller.start()
            return self
        self.controller = Controller(Handler(), **kw)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait(self, n=1, timeout=20):
        return postern.wait_for(lambda: len(self.messages) >= n and list(self.messages), timeout,
                                what="%d message(s) at the upstream" % n)


def _ImplicitController(handler, **kw):
    from aiosmtpd.controller import Controller

    class C(Controller):
        def _trigger_server(self):
            import socket
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection((self.hostname, self.port), timeout=5) as s:
                with ctx.wrap_socket(s) as t:
                    t.recv(1024)
    return C(handler, **kw)


class setup:
    """PKI + upstream + an Instance relaying to it."""

    def __init__(self, mode="starttls", cert="server", auth=True, relay=None, settings=None,
                 start=True, pw_mode=0o600):
        self.mode, self.cert, self.auth = mode, cert, auth
        self.relay, self.settings, self.start, self.pw_mode = relay or {}, settings, start, pw_mode

    def __enter__(self):
        self.dir, _ = postern.make_tmpdir("postern-pki-")
        self.pki = make_pki(self.dir)
        self.up = TLSUpstream(self.pki, self.mode, self.cert, self.auth).start()
        pw = os.path.join(self.dir, "relay.pass")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pw, self.pw_mode)
        relay = {"host": "127.0.0.1", "port": self.up.port,
                 "tls": {"starttls": "required", "implicit": "implicit", "plain": "opportunistic"}[self.mode],
                 "ca_file": self.pki["ca"], "verify": True}
        if self.auth:
            relay.update(username=USER, password_file=pw)
        relay.update(self.relay)
        self.inst = Instance(relay=relay, settings=self.settings, name="postern-relaytls")
        self.inst.up = self.up
        self.inst.pki = self.pki
        try:
            if self.start:
                self.inst.start()
        except BaseException:
            self.__exit__()
            raise
        return self.inst

    def __exit__(self, *exc):
        try:
            self.inst.cleanup()
        finally:
            self.up.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


def send(inst, sender="app@example.org"):
    return inst.send_ok(sender, ["dest@example.net"], make_message())


def wait_deferred(inst, qid, text):
    lines = inst.wait_log("deliverd", r"event=deferred qid=%s .*" % qid, timeout=20)
    assert any(text in l for l in lines), "deferral does not say %r: %r" % (text, lines)
    return lines


def test_tls_relay_required_with_auth():
    with setup() as inst:
        send(inst)
        m = inst.up.wait()[0]
        assert m["tls"] and m["auth"], m
        inst.wait_log("deliverd", r"event=tls relay=\S+ protocol=TLSv1\.[23] cipher=\S+ verify=yes")
        inst.wait_log("deliverd", r"event=relay_auth relay=\S+ user=")
        for comp, lines in inst.grep(PASSWORD).items():
            assert not lines, "password in %s.log" % comp


def test_tls_relay_implicit():
    with setup(mode="implicit") as inst:
        send(inst)
        m = inst.up.wait()[0]
        assert m["auth"], m   # aiosmtpd leaves session.ssl unset for implicit TLS
        inst.wait_log("deliverd", r"event=tls relay=\S+ protocol=TLSv1\.[23] cipher=")


def test_tls_relay_opportunistic_plain_upstream():
    with setup(mode="plain", auth=False) as inst:
        send(inst)
        m = inst.up.wait()[0]
        assert not m["tls"]


def test_tls_relay_required_but_not_offered_defers():
    with setup(mode="plain", auth=False, relay={"tls": "required"}) as inst:
        qid = send(inst)
        wait_deferred(inst, qid, "does not offer STARTTLS")
        assert not inst.up.messages


def test_tls_relay_password_never_in_plaintext():
    with setup(mode="plain", auth=False, relay={"username": USER, "password_file": None}) as inst:
        qid = send(inst)
        wait_deferred(inst, qid, "not sending the password in plain text")


def test_tls_relay_wrong_password_deferred():
    with setup() as inst:
        with open(inst.settings["relay"]["password_file"], "w") as f:
            f.write("wrong\n")
        mark = inst.log_mark()
        inst.cli("restart", "deliverd", check=True)
        # Both deliverd of the pool (its minimum) restart with the new password.
        inst.wait_log("deliverd", r"event=ready", since=mark, count=2)
        qid = send(inst)
        wait_deferred(inst, qid, "relay rejected credentials")
        inst.wait_log("deliverd", r'event=relay_auth_failed .*error="relay rejected credentials"')
        assert not inst.up.messages


def test_tls_relay_expired_cert():
    with setup(cert="expired") as inst:
        qid = send(inst)
        wait_deferred(inst, qid, "certificate has expired")
    with setup(cert="expired", relay={"verify": False}) as inst:
        send(inst)
        inst.up.wait()


def test_tls_relay_wrong_host_cert():
    with setup(cert="wronghost") as inst:
        qid = send(inst)
        lines = inst.wait_log("deliverd", r"event=deferred qid=%s " % qid, timeout=20)
        assert any("mismatch" in l.lower() for l in lines), lines
    with setup(cert="wronghost", relay={"verify": False}) as inst:
        send(inst)
        inst.up.wait()


def test_tls_relay_unknown_ca():
    with setup(relay={"ca_file": "/etc/ssl/certs/ca-certificates.crt"}) as inst:
        if not os.path.exists("/etc/ssl/certs/ca-certificates.crt"):
            raise postern.Skip("no system CA bundle")
        qid = send(inst)
        wait_deferred(inst, qid, "unable to get local issuer certificate")


def test_tls_relay_rewrite_sender():
    with setup(relay={"rewrite_sender": "relayuser@provider.example"}) as inst:
        send(inst, sender="legacy-app@lan.example")
        m = inst.up.wait()[0]
        assert m["mail_from"] == "relayuser@provider.example", m


def test_tls_relay_password_file_readable_by_others():
    with setup(pw_mode=0o644, start=False) as inst:
        inst.start(wait=False)
        inst.wait_log("deliverd", r"event=fatal error=.*readable by others", timeout=20)


for _t in (test_tls_relay_expired_cert, test_tls_relay_wrong_host_cert):
    _t.timeout = 120
