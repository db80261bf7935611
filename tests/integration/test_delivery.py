"""Delivery outcomes: permanent failures bounce (RFC 3464 DSN), temporary
failures are retried, expired mail bounces, mixed local/relay routing."""

import re
import threading
import time

import postern
from postern import Instance, Upstream, relay_instance, make_message, free_port

SENDER = "user@example.org"


def _reject_bad(address):
    if address.startswith("bad"):
        return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
    return None


def test_permanent_failure_bounces_to_sender():
    up = Upstream(rcpt_reply=_reject_bad).start()
    try:
        with Instance(relay=up.port) as inst:
            inst.start()
            tag = "bounce-%d" % time.time_ns()
            qid = inst.send_ok(SENDER, ["good@example.net", "bad@example.net"],
                               make_message(subject=tag, to="good@example.net, bad@example.net"))
            inst.wait_log("deliverd", r"\bevent=bounced\b.*\bqid=%s\b" % qid)
            line = inst.find_log("deliverd", r"\bevent=bounced\b.*\bqid=%s\b" % qid)[0]
            assert "bad@example.net" in line, "bounced line does not name the recipient: %r" % line
            msgs = up.wait_messages(2, timeout=20)
            orig = [m for m in msgs if m["mail_from"] == SENDER]
            dsn = [m for m in msgs if m["mail_from"] in ("", "<>")]
            assert len(orig) == 1 and orig[0]["rcpt_tos"] == ["good@example.net"], \
                "original delivered as %r" % [(m["mail_from"], m["rcpt_tos"]) for m in msgs]
            assert len(dsn) == 1, "expected one DSN with MAIL FROM:<>, got %r" % [
                (m["mail_from"], m["rcpt_tos"]) for m in msgs]
            assert dsn[0]["rcpt_tos"] == [SENDER], "DSN sent to %r" % dsn[0]["rcpt_tos"]
            c = dsn[0]["content"]
            assert re.search(rb"(?i)content-type:\s*multipart/report;[^\r\n]*(\r\n[ \t][^\r\n]*)*"
                             rb"report-type=\"?delivery-status", c), \
                "DSN is not multipart/report; report-type=delivery-status:\n%r" % c[:1500]
            assert re.search(rb"(?i)message/delivery-status", c), "no message/delivery-status part"
            assert re.search(rb"(?im)^Final-Recipient:\s*rfc822;\s*<?bad@example\.net>?", c), \
                "no Final-Recipient for bad@example.net"
            assert re.search(rb"(?im)^Action:\s*failed", c), "no Action: failed"
            assert re.search(rb"(?im)^Status:\s*5\.1\.1", c), "no Status: 5.1.1"
            assert tag.encode() in c, "DSN does not include the original headers (Subject)"
            inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid, timeout=15)
    finally:
        up.stop()


def test_temporary_failure_is_retried():
    calls = []

    def first_fails(rec):
        calls.append(rec)
        return "451 4.3.0 Try again later" if len(calls) == 1 else None

    up = Upstream(data_reply=first_fails).start()
    try:
        with Instance(relay=up.port) as inst:
            inst.start()
            qid = inst.send_ok(SENDER, ["later@example.net"], make_message(to="later@example.net"))
            inst.wait_log("deliverd", r"\bevent=deferred\b.*\bqid=%s\b" % qid)
            up.wait_messages(1, timeout=20)
            inst.wait_log("deliverd", r"\bevent=delivered\b.*\bqid=%s\b" % qid)
            inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
            assert len(up.messages) == 1, "delivered %d times" % len(up.messages)
            assert len(up.rejected) == 1
            assert not [m for m in up.messages if m["mail_from"] == ""], "a DSN was sent"
    finally:
        up.stop()


def test_expired_message_bounces_locally():
    port = free_port()   # nobody listens: every attempt is deferred
    with Instance(relay=port, settings={"queue": {"retry_min": 1, "retry_max": 1,
                                                  "lifetime": 3}}) as inst:
        inst.start()
        qid = inst.send_ok("user@localhost", ["far@example.net"],
                           make_message(sender="user@localhost", to="far@example.net",
                                        subject="will expire"))
        inst.wait_log("deliverd", r"\bevent=deferred\b.*\bqid=%s\b" % qid)
        files = inst.wait_maildir("user", 1, timeout=20)
        with open(files[0], "rb") as f:
            data = f.read()
        assert data.startswith(b"Return-Path: <>"), "DSN Return-Path: %r" % data[:100]
        assert b"far@example.net" in data and re.search(rb"(?i)report-type=\"?delivery-status", data), \
            "DSN content:\n%r" % data[:1500]
        assert b"will expire" in data, "DSN lacks the original headers"
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)


def test_mixed_local_and_relay_recipients():
    with relay_instance() as (inst, up):
        qid = inst.send_ok(SENDER, ["user@localhost", "remote@example.net"],
                           make_message(to="user@localhost, remote@example.net", subject="mixed"))
        up.wait_messages(1)
        inst.wait_maildir("user", 1)
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
        assert len(up.messages) == 1 and up.messages[0]["rcpt_tos"] == ["remote@example.net"], \
            "upstream got %r" % [(m["mail_from"], m["rcpt_tos"]) for m in up.messages]
        assert len(inst.maildir_files("user")) == 1


def test_many_messages_concurrently():
    """20 messages from 4 parallel clients: every one arrives exactly once."""
    n_clients, per_client = 4, 5
    with relay_instance() as (inst, up):
        tags, errors = [], []
        lock = threading.Lock()

        def client(i):
            try:
                for j in range(per_client):
                    tag = "burst-%d-%d-%d" % (i, j, time.time_ns())
                    inst.send_ok(SENDER, ["r%d@example.net" % j], make_message(subject=tag))
                    with lock:
                        tags.append(tag)
            except Exception as e:  # reported below
                errors.append("client %d: %r" % (i, e))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(postern.scaled(40))
        assert not errors, errors
        total = n_clients * per_client
        assert len(tags) == total
        up.wait_messages(total, timeout=30)
        postern.wait_for(lambda: len(inst.find_log("queued", r"\bevent=removed\b")) >= total, 15,
                         what="%d event=removed lines" % total)
        for tag in tags:
            copies = [m for m in up.messages if tag.encode() in m["content"]]
            assert len(copies) == 1, "%s arrived %d times" % (tag, len(copies))
        assert len(up.messages) == total, "upstream got %d messages for %d sent" % (
            len(up.messages), total)
