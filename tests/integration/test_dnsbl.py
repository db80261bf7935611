"""smtpd.dnsbl against a real DNS server (dnsmasq, zones of test_dns.py):
bl.test lists 127.0.0.2 with a TXT reason.  Clients connect from chosen
127.0.0.x source addresses; mynetworks is only 127.0.0.1, so .2 and .3 are
checked and 127.0.0.1 is not."""

import socket
import time

from postern import Instance, Skip, scaled
from test_dns import with_dns


def dnsbl_instance(dns_port, timeout=2):
    return Instance(settings={
        "smtpd": {"mynetworks": ["127.0.0.1/32"], "dnsbl": ["bl.test", "other.test"]},
        "dns": {"servers": ["127.0.0.1:%d" % dns_port], "timeout": timeout, "ip_version": "ipv4"}})


def greeting(port, source, timeout=20):
    """Connect from source (bound before connect); the first reply line and
    whether the server closed the connection after it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.bind((source, 0))
        except OSError as e:
            raise Skip("cannot bind %s: %s" % (source, e))
        s.connect(("127.0.0.1", port))
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n")[0].decode()
        closed = False
        if line.startswith("554"):
            try:
                closed = s.recv(4096) == b""
            except OSError:
                closed = True
        else:
            s.sendall(b"QUIT\r\n")
        return line, closed
    finally:
        s.close()


def test_listed_client_gets_554():
    def body(dm):
        with dnsbl_instance(dm.port) as inst:
            inst.start()
            line, closed = greeting(inst.port, "127.0.0.2")
            assert line == ("554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test: "
                            "listed for testing"), line
            assert closed, "connection not closed after the 554"
            inst.wait_log("smtpd", r"\bevent=dnsbl_listed\b.*\bclient=127\.0\.0\.2\b.*zone=\"?bl\.test")

            line, _ = greeting(inst.port, "127.0.0.3")
            assert line.startswith("220 "), line

            # mynetworks: not checked at all
            mark = inst.log_mark()
            line, _ = greeting(inst.port, "127.0.0.1")
            assert line.startswith("220 "), line
            assert not inst.find_log("smtpd", r"\bevent=dnsbl_", since=mark)
    with_dns(body)


def test_dead_dnsbl_lets_client_through():
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))                 # bound, never read
    try:
        with dnsbl_instance(dead.getsockname()[1], timeout=1) as inst:
            inst.start()
            t0 = time.monotonic()
            line, _ = greeting(inst.port, "127.0.0.2")
            took = time.monotonic() - t0
            assert line.startswith("220 "), line
            assert took < 1 + scaled(2), took
            inst.wait_log("smtpd", r"\bevent=dnsbl_timeout\b.*\bclient=127\.0\.0\.2\b")
    finally:
        dead.close()


def test_pipelined_client_and_early_disconnect():
    """A client that talks before the banner is answered after it; one that
    hangs up during the lookups leaves no stray callback (smtpd lives on)."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    try:
        with dnsbl_instance(dead.getsockname()[1], timeout=1) as inst:
            inst.start()
            for _ in range(5):
                s = socket.create_connection(("127.0.0.1", inst.port))
                s.close()
            s = socket.socket()
            s.bind(("127.0.0.3", 0))
            s.connect(("127.0.0.1", inst.port))
            s.close()
            time.sleep(1.5)
            line, _ = greeting(inst.port, "127.0.0.3")
            assert line.startswith("220 "), line
            pids = inst.pids()
            assert pids, pids
    finally:
        dead.close()
