"""Direct MX delivery (no relay configured) against a real DNS server:
dnsmasq on a free loopback port with the zones of test_dns.py, upstream
SMTP servers bound to 127.0.0.x on dns.mx_port.  Second preference after a
refused first MX, implicit MX, CNAME chains, NXDOMAIN and null MX bounces,
and a dead DNS server that defers with the reason in `postern queue`."""

import re
import socket

from postern import Instance, Skip, free_port, make_message, scaled
from test_dns import BoundUpstream, with_dns

SENDER = "user@localhost"


def mx_instance(dns_port, mx_port, timeout=2):
    return Instance(settings={
        "dns": {"servers": ["127.0.0.1:%d" % dns_port], "timeout": timeout,
                "mx_port": mx_port, "ip_version": "ipv4"}})


def upstream_on(host, port):
    try:
        return BoundUpstream(host, port).start()
    except Exception as e:
        raise Skip("cannot bind %s: %s" % (host, e))


def _delivered(domain, expect_host_re):
    def body(dm):
        mx_port = free_port()
        up = upstream_on("127.0.0.3", mx_port)
        try:
            with mx_instance(dm.port, mx_port) as inst:
                inst.start()
                rcpt = "someone@" + domain
                qid = inst.send_ok(SENDER, [rcpt], make_message(sender=SENDER, to=rcpt, subject="mx " + domain))
                msgs = up.wait_messages(1, timeout=scaled(20))
                assert msgs[0]["rcpt_tos"] == [rcpt], msgs[0]
                inst.wait_log("deliverd", r"\bevent=delivered\b.*\bqid=%s\b" % qid)
                line = inst.find_log("deliverd", r"\bevent=delivered\b.*\bqid=%s\b" % qid)[0]
                assert re.search(expect_host_re, line), line
        finally:
            up.stop()
    with_dns(body)


def test_second_preference_after_refused_first():
    # two.test: MX 10 mx1 (127.0.0.2, nothing listens), MX 20 mx2 (127.0.0.3)
    _delivered("two.test", r"mx2\.two\.test\[127\.0\.0\.3\]")


def test_implicit_mx_a_record():
    _delivered("implicit.test", r"implicit\.test\[127\.0\.0\.3\]")


def test_cname_chain():
    # alias.test -> alias2.test -> implicit.test (A 127.0.0.3), no MX
    _delivered("alias.test", r"alias\.test\[127\.0\.0\.3\]")


def _bounced(domain, code, why):
    def body(dm):
        with mx_instance(dm.port, free_port()) as inst:
            inst.start()
            rcpt = "someone@" + domain
            qid = inst.send_ok(SENDER, [rcpt], make_message(sender=SENDER, to=rcpt, subject="bounce " + domain))
            inst.wait_log("deliverd", r"\bevent=bounced\b.*\bqid=%s\b" % qid, timeout=scaled(20))
            line = inst.find_log("deliverd", r"\bevent=bounced\b.*\bqid=%s\b" % qid)[0]
            assert code in line and why in line, line
            files = inst.wait_maildir("user", 1, timeout=scaled(20))
            with open(files[0], "rb") as f:
                data = f.read()
            assert data.startswith(b"Return-Path: <>"), data[:200]
            assert rcpt.encode() in data, data[:2000]
            assert code.encode() in data and why.encode() in data, data[:3000]
    with_dns(body)


def test_nxdomain_bounces():
    _bounced("nx.test", "5.1.2", "NXDOMAIN for nx.test")


def test_null_mx_bounces():
    _bounced("nullmx.test", "5.1.10", "null MX (RFC 7505)")


def test_dead_dns_server_defers():
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))                 # bound, never read
    dport = dead.getsockname()[1]
    try:
        with mx_instance(dport, free_port(), timeout=1) as inst:
            inst.start()
            rcpt = "someone@two.test"
            qid = inst.send_ok(SENDER, [rcpt], make_message(sender=SENDER, to=rcpt))
            inst.wait_log("deliverd", r"\bevent=deferred\b.*\bqid=%s\b" % qid, timeout=scaled(20))
            line = inst.find_log("deliverd", r"\bevent=deferred\b.*\bqid=%s\b" % qid)[0]
            assert "4.4.3" in line and "timeout after 1s (127.0.0.1:%d)" % dport in line, line
            assert not inst.find_log("deliverd", r"\bevent=bounced\b")
            cp = inst.cli("queue")
            assert qid in cp.stdout, (cp.stdout, cp.stderr)
            assert "4.4.3" in cp.stdout and "timeout after 1s" in cp.stdout, cp.stdout
            assert inst.maildir_files("user") == []
    finally:
        dead.close()
