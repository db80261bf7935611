"""smtpd as scripted SMTP dialogues: lines sent, reply classes expected."""

import re

import postern
from postern import Instance, SMTPClient


def _client(inst):
    c = SMTPClient(inst.port)
    c.expect("220")
    return c


def test_banner_and_ehlo_extensions():
    with Instance() as inst:
        inst.start()
        with SMTPClient(inst.port) as c:
            code, lines = c.expect("220")
            assert "postern.test" in lines[0], "banner does not name the hostname: %r" % lines
            code, lines = c.cmd("EHLO client.test", "250")
            kw = {l.split()[0].upper() for l in lines[1:] if l.strip()}
            for ext in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"):
                assert ext in kw, "EHLO does not announce %s: %r" % (ext, lines)
            assert "STARTTLS" not in kw, "STARTTLS announced without tls.cert/key: %r" % lines
            assert not any(k.startswith("AUTH") for k in kw), \
                "AUTH announced on a plain-text connection: %r" % lines
            c.cmd("QUIT", "221")
            assert c.closed_by_peer(), "connection not closed after QUIT"


def test_command_sequence_errors():
    with Instance() as inst:
        inst.start()
        with _client(inst) as c:
            c.cmd("MAIL FROM:<a@example.org>", "503")      # before EHLO
            c.cmd("EHLO client.test", "250")
            c.cmd("RCPT TO:<user@localhost>", "503")       # before MAIL
            c.cmd("DATA", "5")                             # before MAIL/RCPT (503 or 554)
            c.cmd("MAIL FROM:<a@example.org>", "250")
            c.cmd("MAIL FROM:<a@example.org>", "503")      # nested MAIL
            c.cmd("DATA", "5")                             # no recipient yet
            c.cmd("RCPT TO:<user@localhost>", "250")
            c.cmd("RSET", "250")
            c.cmd("DATA", "5")                             # RSET cleared the transaction
            c.cmd("FROBNICATE", "5")                       # unknown verb
            c.cmd("MAIL FROM:<unbalanced@example.org", "5")
            c.cmd("NOOP", "250")
            c.cmd("QUIT", "221")


def test_pipelined_transaction():
    with Instance() as inst:
        inst.start()
        with _client(inst) as c:
            c.cmd("EHLO client.test", "250")
            c.send_raw(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<user@localhost>\r\n"
                       b"RCPT TO:<other@localhost>\r\nDATA\r\n")
            c.expect("250")
            c.expect("250")
            c.expect("250")
            c.expect("354")
            c.send_raw(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            code, lines = c.expect("250")
            assert re.match(r"2\.0\.0 Ok: queued as %s" % postern.QID_RE, lines[0]), lines
            c.expect("221")
        inst.wait_maildir("user", 1)
        inst.wait_maildir("other", 1)


def test_bare_lf_in_data_is_rejected():
    with Instance() as inst:
        inst.start()
        with _client(inst) as c:
            c.cmd("EHLO client.test", "250")
            c.cmd("MAIL FROM:<a@example.org>", "250")
            c.cmd("RCPT TO:<user@localhost>", "250")
            c.cmd("DATA", "354")
            # An SMTP-smuggling attempt: "\n.\n" must not end the data, and
            # a bare LF must not be accepted.
            c.send_raw(b"Subject: smuggle\r\n\r\nline\n.\nMAIL FROM:<evil@example.org>\r\n"
                       b"more\r\n.\r\n")
            try:
                code, lines = c.read_reply()
            except ConnectionError:
                code, lines = None, ["(connection closed)"]
            assert code is None or code >= 500, \
                "data with a bare LF answered %s %r" % (code, lines)
        assert not inst.find_log("smtpd", r"\bevent=accepted\b"), \
            "smtpd accepted a message with a bare LF: %r" % inst.find_log("smtpd", r"accepted")
        assert not inst.maildir_files("user")


def test_relay_denied_outside_mynetworks():
    with Instance(relay=postern.free_port(),
                  settings={"smtpd": {"mynetworks": ["192.0.2.0/24"]}}) as inst:
        inst.start()
        with _client(inst) as c:
            c.cmd("EHLO client.test", "250")
            c.cmd("MAIL FROM:<a@example.org>", "250")
            c.cmd("RCPT TO:<someone@example.net>", "5")     # relaying denied
            c.cmd("RCPT TO:<user@localhost>", "250")         # local domain: fine
            c.cmd("DATA", "354")
            c.send_raw(b"Subject: local only\r\n\r\nhi\r\n.\r\n")
            c.expect("250")
            c.cmd("QUIT", "221")
        inst.wait_maildir("user", 1)


def test_max_recipients():
    with Instance(settings={"smtpd": {"max_recipients": 2}}) as inst:
        inst.start()
        with _client(inst) as c:
            c.cmd("EHLO client.test", "250")
            c.cmd("MAIL FROM:<a@example.org>", "250")
            c.cmd("RCPT TO:<u1@localhost>", "250")
            c.cmd("RCPT TO:<u2@localhost>", "250")
            code, lines = c.cmd("RCPT TO:<u3@localhost>")
            assert code == 452 or code // 100 == 5, "third RCPT with max_recipients=2: %d %r" % (
                code, lines)
            c.cmd("QUIT", "221")


def test_message_size_limit():
    with Instance(settings={"smtpd": {"max_message_size": 4096}}) as inst:
        inst.start()
        with _client(inst) as c:
            code, lines = c.cmd("EHLO client.test", "250")
            size = [l for l in lines if l.upper().startswith("SIZE")]
            assert size and size[0].split()[1:] == ["4096"], "EHLO SIZE line: %r" % size
            c.cmd("MAIL FROM:<a@example.org> SIZE=100000", "552")
            c.cmd("MAIL FROM:<a@example.org> SIZE=100", "250")
            c.cmd("RCPT TO:<user@localhost>", "250")
            c.cmd("DATA", "354")
            c.send_raw(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100 + b".\r\n")
            c.expect("552")
            c.cmd("QUIT", "221")
        assert not inst.find_log("smtpd", r"\bevent=accepted\b")


def test_long_command_line():
    with Instance() as inst:
        inst.start()
        with _client(inst) as c:
            c.cmd("EHLO client.test", "250")
            code, lines = c.cmd("NOOP " + "x" * 5000)
            assert code // 100 == 5, "an over-long command line answered %d %r" % (code, lines)
            # The session survives (or is closed cleanly); smtpd did not crash.
        assert postern.port_open(inst.port)
        assert not inst.find_log("master", r"\bevent=exited\b.*\bcomponent=smtpd\b")
