"""DNS diagnostics against a real DNS server: dnsmasq in the foreground on
a free loopback port serving test zones (MX with two preferences whose
first host refuses connections, implicit MX, NXDOMAIN, null MX, CNAME
chains, a DNSBL zone listing 127.0.0.2 with a TXT reason), an SMTP server
on 127.0.0.3 at dns.mx_port, and a "DNS server" that never answers (a UDP
socket bound and never read)."""

import os
import shutil
import socket
import subprocess
import time

from postern import Instance, Skip, Upstream, free_port, scaled, wait_for

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dnsmasq:
    def __init__(self, tmpdir):
        self.port = free_port()
        log = os.path.join(tmpdir, "dnsmasq.log")
        args = [DNSMASQ, "--no-daemon", "--no-resolv", "--no-hosts", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=" + log,
                "--pid-file=",
                "--mx-host=two.test,mx1.two.test,10", "--mx-host=two.test,mx2.two.test,20",
                "--host-record=mx1.two.test,127.0.0.2", "--host-record=mx2.two.test,127.0.0.3",
                "--host-record=implicit.test,127.0.0.3",
                "--mx-host=nullmx.test,.,0", "--host-record=nullmx.test,127.0.0.3",
                "--cname=alias.test,alias2.test", "--cname=alias2.test,implicit.test",
                "--host-record=2.0.0.127.bl.test,127.0.0.2",
                "--txt-record=2.0.0.127.bl.test,listed for testing",
                # authoritative for test., so unknown names are NXDOMAIN
                "--auth-zone=test", "--auth-server=ns.test,127.0.0.1",
                "--host-record=ns.test,127.0.0.1"]
        if os.getuid() == 0:
            args.append("--user=nobody")     # dnsmasq drops root; no "dnsmasq" user needed
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

        def up():
            if self.proc.poll() is not None:
                raise Skip("dnsmasq cannot run: %s" % self.proc.stderr.read().decode(errors="replace").strip())
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.2)
            try:
                # a query for implicit.test A
                q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x08implicit\x04test\x00\x00\x01\x00\x01"
                s.sendto(q, ("127.0.0.1", self.port))
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False
            finally:
                s.close()
        wait_for(up, scaled(10), what="dnsmasq answering")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()


def need_dnsmasq():
    if not os.path.exists(DNSMASQ):
        raise Skip("dnsmasq not installed (apt-get install dnsmasq-base)")


class BoundUpstream(Upstream):
    """Upstream on a given loopback address."""

    def __init__(self, host, port):
        super().__init__(port=port)
        self.host = host

    def start(self):
        from aiosmtpd.controller import Controller
        from postern import _Recorder
        self.controller = Controller(_Recorder(self), hostname=self.host, port=self.port,
                                     ready_timeout=scaled(10))
        self.controller.start()
        return self


def instance(dns_port, mx_port, timeout=2):
    return Instance(settings={
        "smtpd": {"dnsbl": ["bl.test", "other.test"]},
        "dns": {"servers": ["127.0.0.1:%d" % dns_port], "timeout": timeout,
                "mx_port": mx_port, "ip_version": "ipv4"}})


def with_dns(fn):
    """Run fn(dnsmasq) against the test zones, then stop dnsmasq
    (also used by test_mx_delivery.py and test_dnsbl.py)."""
    need_dnsmasq()
    with Instance() as tmp:
        dm = Dnsmasq(tmp.dir)
        try:
            fn(dm)
        finally:
            dm.stop()


def test_check_mx_second_preference_delivers():
    def body(dm):
        mx_port = free_port()
        try:
            up = BoundUpstream("127.0.0.3", mx_port).start()
        except Exception as e:
            raise Skip("cannot bind 127.0.0.3: %s" % e)
        try:
            with instance(dm.port, mx_port) as inst:
                cp = inst.cli("check", "mx", "two.test")
                out = cp.stdout
                assert cp.returncode == 0, (cp.returncode, out, cp.stderr)
                assert "10 mx1.two.test  ttl" in out, out
                assert "20 mx2.two.test  ttl" in out, out
                assert out.index("mx1.two.test (preference 10)") < out.index("mx2.two.test (preference 20)")
                assert "127.0.0.2:%d  connect: Connection refused" % mx_port in out, out
                assert "127.0.0.3:%d  banner: 220" % mx_port in out, out
                assert "STARTTLS not offered" in out, out
                last = out.strip().splitlines()[-1]
                assert last == ("deliverable: mail to two.test can be delivered now via mx2.two.test "
                                "[127.0.0.3]:%d" % mx_port), last
        finally:
            up.stop()
    with_dns(body)


def test_check_mx_answers():
    def body(dm):
        with instance(dm.port, free_port()) as inst:
            cp = inst.cli("check", "mx", "implicit.test")
            assert "no MX record for implicit.test: implicit MX" in cp.stdout, cp.stdout
            assert "A      127.0.0.3" in cp.stdout, cp.stdout
            assert cp.returncode == 75, cp.stdout        # nothing listens: temporary
            assert "not deliverable now" in cp.stdout.splitlines()[-1]

            cp = inst.cli("check", "mx", "nx.test")
            assert cp.returncode == 1, cp.stdout
            assert cp.stdout.strip().splitlines()[-1] == \
                "not deliverable: NXDOMAIN for nx.test (mail bounces: 5.1.2)", cp.stdout

            cp = inst.cli("check", "mx", "nullmx.test")
            assert cp.returncode == 1, cp.stdout
            assert "null MX (RFC 7505) for nullmx.test" in cp.stdout, cp.stdout
            assert "5.1.10" in cp.stdout

            # alias.test -> alias2.test -> implicit.test (A 127.0.0.3)
            cp = inst.cli("check", "mx", "alias.test")
            assert "implicit MX" in cp.stdout, cp.stdout
            assert "A      127.0.0.3" in cp.stdout, cp.stdout

            cp = inst.cli("check", "mx", "b\u00fccher..test")
            assert cp.returncode == 1 and "not a valid domain" in cp.stdout, cp.stdout
    with_dns(body)


def test_check_mx_dead_server_is_temporary():
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))                 # bound, never read
    try:
        with instance(dead.getsockname()[1], free_port(), timeout=1) as inst:
            t0 = time.monotonic()
            cp = inst.cli("check", "mx", "two.test")
            took = time.monotonic() - t0
            assert cp.returncode == 75, (cp.returncode, cp.stdout, cp.stderr)
            last = cp.stdout.strip().splitlines()[-1]
            assert last.startswith("not deliverable now: MX lookup for two.test: timeout after 1s "
                                   "(127.0.0.1:%d)" % dead.getsockname()[1]), last
            assert "temporary" in last
            assert took < scaled(10), took
    finally:
        dead.close()


def test_check_dnsbl():
    def body(dm):
        with instance(dm.port, free_port()) as inst:
            cp = inst.cli("check", "dnsbl", "127.0.0.2")
            assert cp.returncode == 1, (cp.stdout, cp.stderr)
            assert "bl.test: LISTED (2.0.0.127.bl.test -> 127.0.0.2): listed for testing" in cp.stdout, cp.stdout
            assert "other.test: not listed" in cp.stdout
            cp = inst.cli("check", "dnsbl", "127.0.0.9")
            assert cp.returncode == 0, cp.stdout
            assert "127.0.0.9 is not listed" in cp.stdout
            cp = inst.cli("check", "dnsbl", "not-an-ip")
            assert cp.returncode != 0 and "not an IP address" in cp.stderr
            # no argument: this host's address, or a clear word that there is none
            cp = inst.cli("check", "dnsbl")
            assert ("checking " in cp.stdout) or ("only loopback" in cp.stderr), (cp.stdout, cp.stderr)
    with_dns(body)
