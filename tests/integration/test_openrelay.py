"""Open relay: who may relay through smtpd, checked from outside.

nmap's smtp-open-relay NSE script against a port whose mynetworks
excludes the scanner, and raw-socket clients bound to a source address
outside mynetworks (127.0.0.2 with mynetworks = ["127.0.0.1/32"]): foreign
domains and every routing-syntax trick are refused with 5xx, relay_domains
and local.domains are accepted, and inside mynetworks a foreign domain
relays.  Every test also checks the upstream got nothing it should not
have, and that no daemon restarted.
"""

import re
import shutil
import subprocess

import postern
from postern import make_message, relay_instance, scaled, wait_for
from test_hostile import SENDER, Health, connect, require_source, spool_idle

OUTSIDE = "127.0.0.2"
INSIDE = "127.0.0.1"

# Routing syntax that asks the next hop to relay to example.net, aimed at a
# domain we do accept (localhost, a relay domain) or at an address literal.
ROUTING = [
    "<user%example.net@localhost>",
    "<example.net!user@localhost>",
    '<"user@example.net"@localhost>',
    "<@localhost:user@example.net>",
    "<user@[127.0.0.1]>",
    # More of the same, as nmap and old relay checkers try them.
    "<USER%EXAMPLE.NET@LOCALHOST>",
    '<"user%example.net"@localhost>',
    "<user%example.net@relay.example>",
    "<example.net!user@relay.example>",
    '<"user@example.net"@relay.example>',
    "<@relay.example:user@example.net>",
    "<@localhost,@relay.example:user@example.net>",
    "<user%example.net@[127.0.0.1]>",
    '<"user@example.net"@[127.0.0.1]>',
    "<@[127.0.0.1]:user@example.net>",
    "<example.net!user@[127.0.0.1]>",
    "<user@[IPv6:::1]>",
    "<user@example.net@localhost>",
    "<postmaster@example.net>",
]


def _nmap(port):
    nmap = shutil.which("nmap")
    if not nmap:
        raise postern.Skip("nmap not installed (apt-get install nmap)")
    # -sT: a connect() scan, which needs no raw sockets (works as non-root);
    # -vv: list every relay combination that worked, should one work.
    cmd = [nmap, "-Pn", "-n", "-sT", "-vv", "-p", str(port), "--script", "+smtp-open-relay",
           "--script-timeout", "60s", "127.0.0.1"]
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=scaled(90))
    except subprocess.TimeoutExpired:
        raise AssertionError("nmap did not finish within %ss" % scaled(90))
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, "nmap exited %d:\n%s" % (p.returncode, out)
    assert "smtp-open-relay" in out, "nmap did not run the script:\n%s" % out
    return out


def test_nmap_finds_no_open_relay():
    """nmap's 16 relay tests from 127.0.0.1, outside mynetworks: none
    relays, and the upstream (the relay for foreign domains) gets nothing.

    The script needs 16 rejected RCPTs in one session; smtpd's default
    max_errors = 10 ends it after 10 (so nmap reports a closed connection,
    not a verdict).  Postfix's hard error limit, 20, lets it finish."""
    settings = {"smtpd": {"mynetworks": [OUTSIDE + "/32"], "max_errors": 20}}
    with relay_instance(settings=settings) as (inst, up):
        health = Health(inst)
        out = _nmap(inst.port)
        assert "Server doesn't seem to be an open relay, all tests failed" in out, \
            "nmap smtp-open-relay verdict missing:\n%s" % out
        assert not re.search(r"(?i)is an open relay", out), "nmap found an open relay:\n%s" % out
        rejected = inst.find_log("smtpd", r"\bevent=rejected\b.*client=127\.0\.0\.1\b.*5\.7\.1")
        assert len(rejected) >= 8, "expected nmap's RCPTs refused with 5.7.1, got %r" % rejected
        assert not inst.find_log("smtpd", r"\bevent=accepted\b"), "smtpd accepted a message"
        health.check()
        assert up.messages == [], "the upstream got mail: %r" % [
            (m["mail_from"], m["rcpt_tos"]) for m in up.messages]

    # The defaults: the scan is cut short by the error limit, and still
    # nothing is relayed.
    with relay_instance(settings={"smtpd": {"mynetworks": [OUTSIDE + "/32"]}}) as (inst, up):
        out = _nmap(inst.port)
        assert not re.search(r"(?i)is an open relay", out), "nmap found an open relay:\n%s" % out
        inst.wait_log("smtpd", r"\bevent=too_many_errors\b.*client=127\.0\.0\.1\b")
        assert not inst.find_log("smtpd", r"\bevent=accepted\b")
        assert up.messages == []


def _relay_settings():
    return {"smtpd": {"mynetworks": [INSIDE + "/32"], "relay_domains": ["relay.example"],
                      # this test counts refusals, not errors: keep the session
                      "max_errors": 1000}}


def test_outside_mynetworks_refuses_foreign_and_routing_syntax():
    require_source(OUTSIDE)
    with relay_instance(settings=_relay_settings()) as (inst, up):
        health = Health(inst)
        with connect(inst.port, OUTSIDE) as c:
            c.do("MAIL FROM:<%s>" % SENDER, 250)
            c.do("RCPT TO:<user@example.net>", 554, "5.7.1")
            c.do("RCPT TO:<user@sub.relay.example>", 554, "5.7.1")
            c.do("RCPT TO:<user@relay.example.net>", 554, "5.7.1")
            refused = []
            for rcpt in ROUTING:
                code, lines = c.cmd("RCPT TO:" + rcpt)
                if code // 100 != 5:
                    refused.append("%s -> %d %s" % (rcpt, code, " / ".join(lines)))
            assert not refused, "routing syntax accepted from outside mynetworks:\n  " + \
                "\n  ".join(refused)
            # Nothing was accepted, so there is no transaction to send.
            code, lines = c.cmd("DATA")
            assert code // 100 == 5, "DATA without an accepted recipient: %d %r" % (code, lines)
            c.do("QUIT", 221)
        # The refusals were made for the right client, and logged.
        rej = inst.find_log("smtpd", r"\bevent=rejected\b")
        assert len(rej) >= 3 + len(ROUTING) - 2, "few event=rejected lines: %r" % rej
        assert all("client=%s" % OUTSIDE in l for l in rej), rej
        health.check()
        wait_for(lambda: spool_idle(inst), 10, what="an idle spool")
        assert up.messages == [], "the upstream got mail: %r" % [
            (m["mail_from"], m["rcpt_tos"]) for m in up.messages]


def test_outside_mynetworks_accepts_relay_and_local_domains():
    require_source(OUTSIDE)
    with relay_instance(settings=_relay_settings()) as (inst, up):
        health = Health(inst)
        with connect(inst.port, OUTSIDE) as c:
            c.do("MAIL FROM:<%s>" % SENDER, 250)
            c.do("RCPT TO:<user@relay.example>", 250, "2.1.5")
            c.do("RCPT TO:<Other@RELAY.Example>", 250, "2.1.5")
            c.do("RCPT TO:<user@localhost>", 250, "2.1.5")
            c.do("RCPT TO:<user@example.net>", 554, "5.7.1")     # mixed in: still refused
            c.do("DATA", 354)
            c.send_raw(make_message(subject="from outside", to="user@relay.example") + b"\r\n.\r\n")
            _, lines = c.reply(250, "2.0.0")
            qid = lines[0].split()[-1]
            c.do("QUIT", 221)
        kv = postern.parse_kv(inst.wait_log("smtpd", r"\bevent=accepted\b.*\bqid=%s\b" % qid)[0])
        assert kv.get("client") == OUTSIDE and kv.get("nrcpt") == "3", kv
        msgs = up.wait_messages(1)
        inst.wait_maildir("user", 1)
        inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid)
        msgs = list(up.messages)
        assert len(msgs) == 1, "upstream got %d messages" % len(msgs)
        assert sorted(r.lower() for r in msgs[0]["rcpt_tos"]) == \
            ["other@relay.example", "user@relay.example"], msgs[0]["rcpt_tos"]
        health.check(source=OUTSIDE)


def test_inside_mynetworks_relays_foreign_domain():
    """The same instance: 127.0.0.1 is inside mynetworks and relays to
    example.net; 127.0.0.2, at the same moment, may not."""
    require_source(OUTSIDE)
    with relay_instance(settings=_relay_settings()) as (inst, up):
        health = Health(inst)
        with connect(inst.port, INSIDE) as inside, connect(inst.port, OUTSIDE) as outside:
            inside.do("MAIL FROM:<%s>" % SENDER, 250)
            outside.do("MAIL FROM:<%s>" % SENDER, 250)
            inside.do("RCPT TO:<user@example.net>", 250, "2.1.5")
            outside.do("RCPT TO:<user@example.net>", 554, "5.7.1")
            inside.do("DATA", 354)
            inside.send_raw(make_message(subject="from inside") + b"\r\n.\r\n")
            inside.reply(250, "2.0.0")
            inside.do("QUIT", 221)
            outside.do("QUIT", 221)
        msgs = up.wait_messages(1)
        wait_for(lambda: spool_idle(inst), 15, what="the spool to drain")
        assert len(up.messages) == 1 and msgs[0]["rcpt_tos"] == ["user@example.net"], \
            [(m["mail_from"], m["rcpt_tos"]) for m in up.messages]
        health.check()


def test_empty_mynetworks_trusts_nobody():
    """mynetworks = []: not even 127.0.0.1 may relay; local mail still works."""
    with relay_instance(settings={"smtpd": {"mynetworks": [], "max_errors": 1000}}) as (inst, up):
        health = Health(inst)
        with connect(inst.port, INSIDE) as c:
            c.do("MAIL FROM:<%s>" % SENDER, 250)
            c.do("RCPT TO:<user@example.net>", 554, "5.7.1")
            for rcpt in ROUTING[:5]:
                code, lines = c.cmd("RCPT TO:" + rcpt)
                assert code // 100 == 5, "%s accepted with mynetworks = []: %d %r" % (
                    rcpt, code, lines)
            c.do("RCPT TO:<user@localhost>", 250)
            c.do("DATA", 354)
            c.send_raw(make_message(subject="local only", to="user@localhost") + b"\r\n.\r\n")
            c.reply(250, "2.0.0")
            c.do("QUIT", 221)
        inst.wait_maildir("user", 1)
        health.check()
        wait_for(lambda: spool_idle(inst), 10, what="an idle spool")
        assert up.messages == [], [(m["mail_from"], m["rcpt_tos"]) for m in up.messages]
