"""Scriptable upstream SMTP servers for the integration tests.

postern.Upstream (aiosmtpd) covers the plain smarthost.  The tests of
retries, reuse, fallback and crashes need an upstream that misbehaves on
cue and that shows what happened on the wire, so this module has its own
small SMTP server (Python standard library, one thread per connection):

  ScriptedUpstream(port=None, pipelining=False, ...)
      .connections   Conn per TCP connection, in accept order: serial,
                     commands (verbs as received), transactions, and
                     pipelined (the client sent a command before it had
                     our reply to the previous one: RFC 2920 in use)
      .attempts      every transaction that reached DATA, whatever it got
      .messages      transactions answered 2xx after the data
      .deliveries(rcpt)   how many accepted transactions named rcpt

  Hooks (attributes, may be replaced while the server runs; each gets the
  Conn first and returns None to accept, or the reply to send instead):
      on_connect(conn)            banner; a non-220 reply is sent and the
                                  connection closed (like a busy server)
      mail_reply(conn, sender)
      rcpt_reply(conn, address)
      data_cmd_reply(conn, env)   the reply to the DATA command itself
      data_reply(conn, env)       the reply after the data (env["content"])
      close_after_data(conn)      True: close the connection right after the
                                  reply to the data (no QUIT, like a server
                                  that drops idle clients)
  A reply starting with "421" is sent and then the connection is closed.
  A hook may return DROP instead of a reply: the connection is closed
  without one.  data_cmd_reply returning DROP_MID_DATA answers 354, reads
  the first chunk of the message and closes the connection in mid-data.

Every wait polls a condition with a deadline (postern.scaled); stop()
closes every socket and joins every thread it started.
"""

import socket
import threading
import time

import postern

DROP = object()
DROP_MID_DATA = object()

LINE_MAX = 4096


class Conn:
    """What one client connection did (read it under the upstream's lock)."""

    def __init__(self, serial, peer):
        self.serial = serial
        self.peer = peer
        self.commands = []        # verbs in order: EHLO, MAIL, RCPT, DATA, RSET, QUIT ...
        self.rcpts = []           # (address, reply code) of every RCPT TO
        self.transactions = 0     # DATA commands answered 354
        self.pipelined = False    # a command was waiting before we replied to the previous one
        self.opened = time.time()
        self.closed = None        # time of close
        self.quit = False

    def __repr__(self):
        return "<conn %d %s%s>" % (self.serial, " ".join(self.commands),
                                   " pipelined" if self.pipelined else "")


class _Closed(Exception):
    pass


class ScriptedUpstream:
    def __init__(self, port=None, pipelining=False, extensions=None, hostname="upstream.test",
                 on_connect=None, mail_reply=None, rcpt_reply=None, data_cmd_reply=None,
                 data_reply=None, close_after_data=None, sock_timeout=30):
        self.port = port or postern.free_port()
        self.hostname = hostname
        exts = list(extensions) if extensions is not None else ["8BITMIME", "SIZE 52428800",
                                                                "ENHANCEDSTATUSCODES"]
        if pipelining and "PIPELINING" not in exts:
            exts.append("PIPELINING")
        self.extensions = exts
        self.on_connect = on_connect
        self.mail_reply = mail_reply
        self.rcpt_reply = rcpt_reply
        self.data_cmd_reply = data_cmd_reply
        self.data_reply = data_reply
        self.close_after_data = close_after_data
        self.sock_timeout = sock_timeout
        self.connections = []
        self.attempts = []
        self.messages = []
        self.cond = threading.Condition()
        self._lsock = None
        self._threads = []
        self._socks = set()
        self._stopping = False

    # -- life cycle

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)   # so the accept loop notices stop()
        self._lsock = s
        self._stopping = False
        t = threading.Thread(target=self._accept_loop, name="upstream-%d" % self.port, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        """Close the listener and every connection; join the threads."""
        self._stopping = True
        if self._threads:
            self._threads[0].join(10)      # the accept loop: no new connections now
        with self.cond:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(10)
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None
        self._threads = []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- queries

    def deliveries(self, rcpt):
        with self.cond:
            return sum(m["rcpt_tos"].count(rcpt) for m in self.messages)

    def with_token(self, token):
        """Accepted messages whose content contains token (bytes or str)."""
        if isinstance(token, str):
            token = token.encode()
        with self.cond:
            return [m for m in self.messages if token in m["content"]]

    def wait(self, pred, timeout=15, what="condition"):
        """Wait until pred() (called under the lock) is truthy; return it."""
        deadline = time.monotonic() + postern.scaled(timeout)
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("upstream %d: timed out after %.1fs waiting for %s "
                                         "(messages %d, attempts %d, connections %r)"
                                         % (self.port, postern.scaled(timeout), what,
                                            len(self.messages), len(self.attempts),
                                            self.connections[-10:]))
                self.cond.wait(min(left, 0.2))

    def wait_messages(self, n, timeout=15):
        self.wait(lambda: len(self.messages) >= n, timeout, "%d accepted message(s)" % n)
        with self.cond:
            return list(self.messages)

    def wait_attempts(self, n, timeout=15):
        self.wait(lambda: len(self.attempts) >= n, timeout, "%d transaction(s)" % n)
        with self.cond:
            return list(self.attempts)

    def rcpt_commands(self, address):
        """How many RCPT TO:<address> commands arrived, on any connection."""
        with self.cond:
            return sum(1 for c in self.connections for a, _ in c.rcpts if a == address)

    def snapshot(self):
        with self.cond:
            return list(self.messages)

    # -- server

    def _accept_loop(self):
        serial = 0
        while not self._stopping:
            try:
                s, peer = self._lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            serial += 1
            conn = Conn(serial, peer)
            with self.cond:
                if self._stopping:
                    s.close()
                    return
                self.connections.append(conn)
                self._socks.add(s)
                self.cond.notify_all()
            t = threading.Thread(target=self._serve, args=(s, conn), daemon=True,
                                 name="upstream-%d-conn-%d" % (self.port, serial))
            t.start()
            with self.cond:
                self._threads = self._threads[:1] + [x for x in self._threads[1:] if x.is_alive()] + [t]

    def _serve(self, s, conn):
        s.settimeout(self.sock_timeout)
        io = _LineIO(s)
        try:
            self._session(io, conn)
        except (_Closed, OSError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass
            with self.cond:
                self._socks.discard(s)
                conn.closed = time.time()
                self.cond.notify_all()

    def _reply(self, io, conn, text):
        """Send a reply (a str, or a list of lines for a multi-line reply).
        Note whether the client had already sent more: pipelining."""
        if io.pending():
            with self.cond:
                conn.pipelined = True
        lines = text if isinstance(text, list) else [text]
        out = []
        for i, l in enumerate(lines):
            code, rest = l[:3], l[4:] if len(l) > 3 else ""
            sep = "-" if i < len(lines) - 1 else " "
            out.append(code + sep + rest)
        io.write(("\r\n".join(out) + "\r\n").encode())
        if lines[-1].startswith("421"):
            raise _Closed()

    def _hook(self, name, *args):
        f = getattr(self, name)
        return f(*args) if f else None

    def _session(self, io, conn):
        r = self._hook("on_connect", conn)
        if r is DROP:
            raise _Closed()
        if r is not None and not r.startswith("220"):
            self._reply(io, conn, r)
            raise _Closed()
        self._reply(io, conn, "220 %s ESMTP scripted upstream" % self.hostname)
        helo = None
        env = None
        while True:
            line = io.readline()
            verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
            arg = line[len(verb) + 1:].decode("utf-8", "replace") if len(line) > len(verb) else ""
            with self.cond:
                conn.commands.append(verb)
            if verb == "EHLO":
                helo = arg
                env = None
                self._reply(io, conn, ["250 %s" % self.hostname] + ["250 " + e for e in self.extensions])
            elif verb == "HELO":
                helo = arg
                env = None
                self._reply(io, conn, "250 %s" % self.hostname)
            elif verb == "RSET":
                env = None
                self._reply(io, conn, "250 2.0.0 Ok")
            elif verb == "NOOP":
                self._reply(io, conn, "250 2.0.0 Ok")
            elif verb == "QUIT":
                with self.cond:
                    conn.quit = True
                self._reply(io, conn, "221 2.0.0 Bye")
                raise _Closed()
            elif verb == "MAIL":
                if helo is None:
                    self._reply(io, conn, "503 5.5.1 EHLO first")
                    continue
                if env is not None:
                    self._reply(io, conn, "503 5.5.1 Nested MAIL command")
                    continue
                sender = _path(arg, "FROM:")
                if sender is None:
                    self._reply(io, conn, "501 5.5.4 Syntax: MAIL FROM:<address>")
                    continue
                r = self._hook("mail_reply", conn, sender)
                if r is DROP:
                    raise _Closed()
                if r is not None and not r.startswith("2"):
                    self._reply(io, conn, r)
                    continue
                env = {"mail_from": sender, "rcpt_tos": [], "conn": conn.serial, "helo": helo,
                       "mail_args": arg}
                self._reply(io, conn, r or "250 2.1.0 Ok")
            elif verb == "RCPT":
                if env is None:
                    self._reply(io, conn, "503 5.5.1 MAIL first")
                    continue
                rcpt = _path(arg, "TO:")
                if rcpt is None:
                    self._reply(io, conn, "501 5.5.4 Syntax: RCPT TO:<address>")
                    continue
                r = self._hook("rcpt_reply", conn, rcpt)
                with self.cond:
                    conn.rcpts.append((rcpt, "drop" if r is DROP else (r or "250")[:3]))
                if r is DROP:
                    raise _Closed()
                if r is not None and not r.startswith("2"):
                    self._reply(io, conn, r)
                    continue
                env["rcpt_tos"].append(rcpt)
                self._reply(io, conn, r or "250 2.1.5 Ok")
            elif verb == "DATA":
                if env is None or not env["rcpt_tos"]:
                    self._reply(io, conn, "554 5.5.1 No valid recipients" if env is not None
                                else "503 5.5.1 MAIL first")
                    continue
                r = self._hook("data_cmd_reply", conn, env)
                if r is DROP:
                    raise _Closed()
                if r is DROP_MID_DATA:
                    self._reply(io, conn, "354 End data with <CR><LF>.<CR><LF>")
                    io.read_some()
                    self._record_attempt(env, "dropped mid-data")
                    raise _Closed()
                if r is not None and not r.startswith("3"):
                    self._reply(io, conn, r)
                    continue
                with self.cond:
                    conn.transactions += 1
                self._reply(io, conn, "354 End data with <CR><LF>.<CR><LF>")
                env["content"] = io.read_data()
                env["time"] = time.time()
                r = self._hook("data_reply", conn, env)
                if r is DROP:
                    self._record_attempt(env, "dropped before the reply")
                    raise _Closed()
                reply = r or "250 2.0.0 Ok: scripted upstream accepted"
                self._record_attempt(env, reply)
                if reply.startswith("2"):
                    with self.cond:
                        self.messages.append(env)
                        self.cond.notify_all()
                env = None
                self._reply(io, conn, reply)
                if self._hook("close_after_data", conn):
                    raise _Closed()
            else:
                self._reply(io, conn, "502 5.5.2 Command not recognized")

    def _record_attempt(self, env, outcome):
        with self.cond:
            rec = dict(env)
            rec["outcome"] = outcome
            self.attempts.append(rec)
            self.cond.notify_all()


def _path(arg, prefix):
    """The address of 'FROM:<a@b> PARAMS' (prefix FROM: or TO:), or None."""
    if not arg.upper().startswith(prefix):
        return None
    rest = arg[len(prefix):].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None
    return rest[1:rest.index(">")]


class _LineIO:
    def __init__(self, s):
        self.s = s
        self.buf = b""

    def pending(self):
        return bool(self.buf)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise _Closed()
        self.buf += chunk

    def readline(self):
        while b"\n" not in self.buf:
            if len(self.buf) > LINE_MAX:
                raise _Closed()
            self._fill()
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read_some(self):
        if not self.buf:
            self._fill()
        self.buf = b""

    def read_data(self):
        """Lines up to CRLF.CRLF, dot-unstuffed, CRLF-joined."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                self._fill()
            line, self.buf = self.buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line == b".":
                break
            if line.startswith(b"."):
                line = line[1:]
            lines.append(line + b"\r\n")
        return b"".join(lines)

    def write(self, data):
        self.s.sendall(data)


class relayed:
    """Context manager: start `up` (a ScriptedUpstream or postern.Upstream)
    and an Instance relaying to it; stop both at the end.

        with relayed(ScriptedUpstream(rcpt_reply=f), settings={...}) as inst: ...
    relay= overrides the relay settings (e.g. for fallback hosts)."""

    def __init__(self, up, settings=None, relay=None, start=True):
        self.up = up
        self.settings = settings
        self.relay = relay
        self.start = start
        self.inst = None

    def __enter__(self):
        self.up.start()
        try:
            relay = self.relay if self.relay is not None else postern.relay_settings(self.up.port)
            self.inst = postern.Instance(relay=relay, settings=self.settings)
            if self.start:
                self.inst.start()
        except BaseException:
            if self.inst is not None:
                self.inst.cleanup()
            self.up.stop()
            raise
        return self.inst

    def __exit__(self, *exc):
        try:
            self.inst.cleanup()
        finally:
            self.up.stop()
        return False
