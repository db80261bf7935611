"""The Prometheus endpoint (metrics.listen, served by the master): plain
HTTP GET /metrics only, text format parsed line by line, and counters that
move as mail is sent, deferred and bounced, and survive a restart of any
single component."""

import re
import socket
import urllib.error
import urllib.request

import postern
from postern import Instance, Upstream, free_port, make_message, wait_for

LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port):
    """{(name, frozenset(labels)): float} from GET /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port,
                                timeout=postern.scaled(5)) as r:
        assert r.status == 200, r.status
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain"), ctype
        text = r.read().decode("utf-8")
    out = {}
    typed = set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            f = line.split()
            assert f[3] in ("counter", "gauge", "histogram"), line
            typed.add(f[2])
            continue
        if line.startswith("# HELP "):
            continue
        assert not line.startswith("#"), "unexpected comment %r" % line
        m = LINE_RE.match(line)
        assert m, "not a metric line: %r" % line
        name, labels = m.group(1), m.group(3) or ""
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or family in typed, "%s has no # TYPE line" % name
        key = (name, frozenset(LABEL_RE.findall(labels)))
        assert key not in out, "duplicate series %r" % (key,)
        out[key] = float(m.group(4))
    return out


def val(metrics, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in metrics, "no series %s%r" % (name, labels)
    return metrics[key]


def wait_metric(port, name, want, timeout=10, **labels):
    return wait_for(lambda: (lambda v: v if v >= want else None)(val(scrape(port), name, **labels)),
                    timeout, what="%s%r >= %s" % (name, labels, want))


def upstream_policy(addr):
    if addr.startswith("later"):
        return "451 4.7.1 try again later"
    if addr.startswith("nobody"):
        return "550 5.1.1 no such user"
    return None


def test_metrics_counters_move():
    up = Upstream(rcpt_reply=upstream_policy).start()
    mport = free_port()
    try:
        with Instance(relay=up.port, settings={
                "metrics": {"listen": "127.0.0.1:%d" % mport},
                "queue": {"retry_min": 3600, "retry_max": 3600, "concurrency": 5}}) as inst:
            inst.start()
            m0 = scrape(mport)
            assert val(m0, "postern_messages_total", event="received") == 0
            # Processes that run: the deliverd pool at its minimum (2 of the
            # 5 queue.concurrency allows); unstarted ones are not "not_ready".
            for comp, n in (("smtpd", 1), ("queued", 1), ("deliverd", 2)):
                assert val(m0, "postern_component_processes", component=comp, state="ready") == n
                assert val(m0, "postern_component_processes", component=comp,
                           state="not_ready") == 0
            assert val(m0, "postern_smtp_connections") == 0
            assert val(m0, "postern_queue_messages", state="deferred") == 0

            inst.send_ok("user@example.org", ["ok@example.net"], make_message())
            up.wait_messages(1)
            wait_metric(mport, "postern_recipients_total", 1, outcome="delivered")
            wait_metric(mport, "postern_messages_total", 1, event="delivered")
            m = scrape(mport)
            assert val(m, "postern_messages_total", event="received") == 1
            assert val(m, "postern_smtp_messages_accepted_total") == 1
            assert val(m, "postern_smtp_connections_total") >= 1
            assert val(m, "postern_delivery_latency_seconds_count") == 1
            assert val(m, "postern_delivery_latency_seconds_bucket", le="+Inf") == 1
            assert val(m, "postern_delivery_latency_seconds_sum") >= 0

            # 550 upstream: a bounce (the DSN to the remote sender goes upstream too).
            inst.send_ok("user@example.org", ["nobody@example.net"], make_message())
            wait_metric(mport, "postern_recipients_total", 1, outcome="bounced")
            wait_metric(mport, "postern_messages_total", 1, event="bounced")

            # 451 upstream: deferred, and the message stays in the queue.
            inst.send_ok("user@example.org", ["later@example.net"], make_message())
            wait_metric(mport, "postern_recipients_total", 1, outcome="deferred")
            wait_metric(mport, "postern_messages_total", 1, event="deferred")
            wait_metric(mport, "postern_queue_messages", 1, state="deferred")
            m = scrape(mport)
            assert val(m, "postern_queue_oldest_message_age_seconds") >= 0

            # An open session shows in the gauge, and leaves it when closed.
            with postern.SMTPClient(inst.port) as c:
                c.expect("220")
                c.cmd("EHLO x", "250")
                wait_metric(mport, "postern_smtp_connections", 1)
                c.cmd("QUIT", "221")
            wait_for(lambda: val(scrape(mport), "postern_smtp_connections") == 0, 10,
                     what="open sessions back to 0")

            # Counters survive a restart of each child.
            before = scrape(mport)
            for comp in ("smtpd", "queued", "deliverd"):
                mark = inst.log_mark()
                inst.cli("restart", comp, check=True)
                inst.wait_log(comp, r"\bevent=ready\b", since=mark)
            wait_metric(mport, "postern_component_restarts_total", 1, component="queued")
            after = scrape(mport)
            for key, v in before.items():
                if key[0].endswith("_total") and key[0] != "postern_component_restarts_total":
                    assert after[key] >= v, "%r went from %s to %s after restarts" % (key, v, after[key])
            assert val(after, "postern_component_restarts_total", component="smtpd") == 1
            # Both running deliverd were restarted (the pool's minimum).
            assert val(after, "postern_component_restarts_total", component="deliverd") == 2

            # A restarted queued reports the deferred message again.
            wait_metric(mport, "postern_queue_messages", 1, state="deferred")
    finally:
        up.stop()

test_metrics_counters_move.timeout = 90


def raw_http(port, data, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=postern.scaled(timeout))
    try:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def test_metrics_http_hostile():
    mport = free_port()
    with Instance(settings={"metrics": {"listen": "127.0.0.1:%d" % mport}}) as inst:
        inst.start()
        assert raw_http(mport, b"GET /metrics HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 ")
        assert raw_http(mport, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 404 ")
        assert raw_http(mport, b"GET /metricsX HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 404 ")
        r = raw_http(mport, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        assert r.startswith(b"HTTP/1.0 405 "), r[:80]
        head = raw_http(mport, b"HEAD /metrics HTTP/1.0\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 ") and head.endswith(b"\r\n\r\n"), head[-40:]
        assert raw_http(mport, b"garbage\r\n\r\n").startswith(b"HTTP/1.0 400 ")
        assert raw_http(mport, b"GET /metrics\0 HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400 ")
        # Oversized request: answered 431 and closed, never buffered without bound.
        big = b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 100000
        try:
            r = raw_http(mport, big)
            assert r == b"" or r.startswith(b"HTTP/1.0 431 "), r[:80]
        except (ConnectionResetError, BrokenPipeError):
            pass
        # A silent client is dropped after the timeout.
        s = socket.create_connection(("127.0.0.1", mport), timeout=postern.scaled(15))
        try:
            s.sendall(b"GET /metr")
            assert s.recv(100) == b"", "a silent client was not disconnected"
        finally:
            s.close()
        # urllib sees 404 for another path; the master is still serving.
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/" % mport, timeout=5)
            raise AssertionError("GET / did not fail")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        scrape(mport)
        assert inst.running()


def test_metrics_listen_validated():
    with Instance(settings={"metrics": {"listen": "localhost"}}) as inst:
        cp = inst.cli("check")
        assert cp.returncode == 78 and "metrics.listen" in cp.stderr, (cp.returncode, cp.stderr)
