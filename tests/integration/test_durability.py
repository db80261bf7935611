"""Durability: a message answered 250 survives kill -9 and arrives exactly once;
torn spool files go to corrupt/ and crash nothing; tmp/ is purged at start."""

import os
import signal
import threading
import time

import postern
from postern import Instance, Upstream, make_message, free_port, crash, wait_for

SENDER = "user@example.org"
RCPT = "carol@example.net"


def _down_instance():
    """An instance whose relay port has nobody listening (yet)."""
    port = free_port()
    inst = Instance(relay=port, settings={"queue": {"retry_min": 1, "retry_max": 2}})
    return inst, port


def _spool_has(inst, qid):
    return [sub for sub in ("incoming", "queue") if qid in inst.spool_files(sub)]


def _assert_exactly_once(inst, up, qid, tag):
    up.wait_messages(1, timeout=20)
    inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid, timeout=15)
    msgs = [m for m in up.messages if tag.encode() in m["content"]]
    assert len(msgs) == 1, "message %s arrived %d times upstream (all: %d)" % (
        qid, len(msgs), len(up.messages))
    assert msgs[0]["mail_from"] == SENDER and msgs[0]["rcpt_tos"] == [RCPT], \
        "envelope %r %r" % (msgs[0]["mail_from"], msgs[0]["rcpt_tos"])
    for sub in ("incoming", "queue", "state"):
        assert qid not in inst.spool_files(sub), "%s still in spool/%s after removal" % (qid, sub)


def test_kill9_queued_after_deferral_then_restart():
    inst, port = _down_instance()
    up = None
    try:
        inst.start()
        tag = "durable-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, [RCPT], make_message(subject=tag, to=RCPT))
        # queued took it over and deliverd could not deliver it.
        inst.wait_log("queued", r"\bevent=queued\b.*\bqid=%s\b" % qid)
        inst.wait_log("deliverd", r"\bevent=deferred\b.*\bqid=%s\b" % qid)
        listed = inst.cli("queue")
        assert listed.returncode == 0 and qid in listed.stdout, \
            "`postern queue` does not list deferred %s: %r" % (qid, listed.stdout + listed.stderr)
        queued = inst.pids()["queued"]
        os.kill(queued, signal.SIGKILL)
        wait_for(lambda: (lambda q: q and q != queued)(inst.pids().get("queued")), 5,
                 what="queued to be restarted")
        inst.stop()
        assert _spool_has(inst, qid), "%s is in neither spool/incoming nor spool/queue after " \
            "kill -9 and stop: %r" % (qid, {s: inst.spool_files(s) for s in ("incoming", "queue",
                                                                              "corrupt")})
        up = Upstream(port=port).start()
        inst.start()
        _assert_exactly_once(inst, up, qid, tag)
    finally:
        inst.cleanup()
        if up:
            up.stop()


def test_kill9_queued_right_after_accept():
    inst, port = _down_instance()
    up = None
    try:
        inst.start()
        queued = inst.pids()["queued"]
        tag = "durable-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, [RCPT], make_message(subject=tag, to=RCPT))
        os.kill(queued, signal.SIGKILL)
        wait_for(lambda: (lambda q: q and q != queued)(inst.pids().get("queued")), 5,
                 what="queued to be restarted")
        up = Upstream(port=port).start()
        _assert_exactly_once(inst, up, qid, tag)
    finally:
        inst.cleanup()
        if up:
            up.stop()


def test_kill9_everything_after_accept():
    """The processes' view of a power cut: SIGKILL master and children at
    once right after the 250, then start again on the same spool."""
    inst, port = _down_instance()
    up = None
    try:
        inst.start()
        tag = "durable-%d" % time.time_ns()
        qid = inst.send_ok(SENDER, [RCPT], make_message(subject=tag, to=RCPT))
        crash(inst)
        assert _spool_has(inst, qid), "%s not in the spool after kill -9 of everything" % qid
        up = Upstream(port=port).start()
        inst.start()
        _assert_exactly_once(inst, up, qid, tag)
    finally:
        inst.cleanup()
        if up:
            up.stop()


# ------------------------------------------------------------------ torn files

def _header(qid, rcpt="dave@localhost"):
    return ("POSTERN-QUEUE 1\nqid=%s\narrival=%d\norigin=smtp\nclient=127.0.0.1\nhelo=client.test\n"
            "proto=ESMTP\nbody=7bit\nsmtputf8=0\nauth=\nsender=%s\nrcpt=%s\n\n"
            % (qid, int(time.time()), SENDER, rcpt)).encode()


DATA = b"Subject: torn\r\n\r\nthis message was cut short\r\n"

TORN = {
    # cut in the middle of the data: no end marker
    "6751A3C90000012345": lambda q: _header(q) + DATA[:20],
    # cut in the middle of the header
    "6751A3C90000012346": lambda q: _header(q)[:40],
    # end marker present but the length disagrees
    "6751A3C90000012347": lambda q: _header(q) + DATA + b"POSTERN-END 99999\n",
    # an empty file
    "6751A3C90000012348": lambda q: b"",
}


def test_torn_spool_files_go_to_corrupt():
    with Instance() as inst:
        inst.start()
        inst.stop()
        planted = {}
        for qid, make in TORN.items():
            data = make(qid)
            path = os.path.join(inst.spool, "incoming", qid)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o644)
            planted[qid] = data
        mark = inst.log_mark()
        inst.start()
        queued = inst.pids()["queued"]
        for qid in planted:
            lines = inst.wait_log("queued", r"\bevent=corrupt\b.*\bqid=%s\b" % qid, since=mark)
            kv = postern.parse_kv(lines[0])
            assert kv.get("file"), "event=corrupt line lacks file=: %r" % lines[0]
        corrupt = inst.spool_files("corrupt")
        for qid, data in planted.items():
            assert qid in corrupt, "%s not in spool/corrupt: %r" % (qid, corrupt)
            for sub in ("incoming", "queue"):
                assert qid not in inst.spool_files(sub), "%s still in spool/%s" % (qid, sub)
            with open(os.path.join(inst.spool, "corrupt", qid), "rb") as f:
                assert f.read() == data, "spool/corrupt/%s was modified" % qid
        # Nothing of it was delivered, queued did not crash, and mail still flows.
        assert not inst.maildir_files("dave"), "a torn message was delivered"
        qid = inst.send_ok(SENDER, ["user@localhost"], make_message(to="user@localhost"))
        inst.wait_maildir("user", 1)
        assert inst.pids()["queued"] == queued, "queued was restarted"
        assert not inst.find_log("master", r"\bevent=exited\b.*\bcomponent=queued\b", since=mark), \
            "queued exited: %r" % inst.find_log("master", r"\bevent=exited\b", since=mark)
        assert not inst.maildir_files("dave"), "a torn message was delivered"


def test_tmp_purged_at_start():
    with Instance() as inst:
        inst.start()
        inst.stop()
        path = os.path.join(inst.spool, "tmp", "6751A3C90000054321")
        with open(path, "wb") as f:
            f.write(_header("6751A3C90000054321", "erin@localhost") + DATA)
        inst.start()
        assert not os.path.exists(path), "spool/tmp/6751A3C90000054321 survived a start"
        assert not inst.maildir_files("erin"), "an unacknowledged tmp/ file was delivered"


def test_kill9_deliverd_mid_transaction():
    """deliverd dies while the upstream holds the DATA reply: the message
    is not lost, it is delivered again by a new deliverd."""
    entered = threading.Event()
    release = threading.Event()
    held = []

    def hold_first(rec):
        if not held:
            held.append(rec)
            entered.set()
            release.wait(postern.scaled(30))   # blocks the upstream until told
            return "451 4.3.0 the client of this transaction was killed"
        return None

    up = Upstream(data_reply=hold_first).start()
    try:
        with Instance(relay=up.port) as inst:
            inst.start()
            tag = "mid-%d" % time.time_ns()
            qid = inst.send_ok(SENDER, [RCPT], make_message(subject=tag, to=RCPT))
            assert entered.wait(postern.scaled(15)), "no delivery attempt reached the upstream"
            before = inst.pids()["deliverd"]
            for p in before:
                os.kill(p, signal.SIGKILL)
            wait_for(lambda: (lambda d: d and not set(d) & set(before))(inst.pids()["deliverd"]),
                     5, what="new deliverd processes")
            release.set()
            up.wait_messages(1, timeout=20)
            inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % qid, timeout=15)
            got = [m for m in up.messages if tag.encode() in m["content"]]
            assert len(got) == 1, "accepted %d copies after the retry" % len(got)
    finally:
        release.set()
        up.stop()
