"""A full spool: smtpd answers 452 4.3.1 (at MAIL when free space is
below queue.min_free, at the end of DATA when a write fails with ENOSPC),
never 250; mail stored before the disk filled is delivered once there is
room and the upstream is back.  Needs root (a 2 MB tmpfs as the spool);
skipped otherwise.  Issue #4."""

import errno
import os
import shutil
import subprocess
import time

import postern
from postern import Instance, SMTPClient, make_message, free_port, wait_for, is_root
from upstreams import ScriptedUpstream

SENDER = "user@example.org"
TMPFS_SIZE = 2 * 1024 * 1024
MIN_FREE = 100 * 1024            # queue.min_free: MAIL needs this much
MAX_SIZE = 1024 * 1024           # smtpd.max_message_size: above what the disk can hold


def _free(path):
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def _fill_to(spool, filler, target):
    """Grow or shrink the filler file until about `target` bytes are free."""
    free = _free(spool)
    with open(filler, "ab") as f:
        if free > target:
            need = free - target
            chunk = b"\0" * 65536
            try:
                while need > 0:
                    n = f.write(chunk[:min(need, len(chunk))])
                    need -= n
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
        elif free < target:
            size = os.fstat(f.fileno()).st_size
            f.truncate(max(0, size - (target - free)))
    return _free(spool)


def _mount_tmpfs(d):
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % TMPFS_SIZE, "tmpfs", d],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    if cp.returncode != 0:
        raise postern.Skip("cannot mount a tmpfs on %s: %s" % (d, (cp.stderr or cp.stdout).strip()))


def _umount(d):
    for args in (["umount", d], ["umount", "-l", d]):
        cp = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        if cp.returncode == 0:
            return


def _mail(port):
    """A session up to MAIL FROM: (client, (code, lines))."""
    c = SMTPClient(port)
    c.expect("220")
    c.cmd("EHLO full.test", "250")
    return c, c.cmd("MAIL FROM:<%s>" % SENDER)


def test_full_spool_refuses_with_452_and_keeps_stored_mail():
    if not is_root():
        raise postern.Skip("needs root to mount a 2 MB tmpfs as the spool (run as root, as CI does)")
    port = free_port()          # the smarthost is down until the end
    inst = Instance(relay=port, settings={
        "smtpd": {"max_message_size": MAX_SIZE},
        "queue": {"retry_min": 1, "retry_max": 2, "lifetime": 3600, "min_free": MIN_FREE}})
    os.mkdir(inst.spool)
    _mount_tmpfs(inst.spool)
    up = None
    filler = os.path.join(inst.spool, "filler")
    try:
        inst.start()
        # Stored before the disk fills; deferred, the smarthost is down.
        tag_a = "stored-before-%d" % time.time_ns()
        qid_a = inst.send_ok(SENDER, ["a@example.net"], make_message(subject=tag_a))
        inst.wait_log("deliverd", r"\bevent=deferred\b.*\bqid=%s\b" % qid_a)

        # 1. Room at MAIL time (above min_free) but not for the message:
        #    the write fails with ENOSPC during DATA -> 452 4.3.1, not 250.
        free = _fill_to(inst.spool, filler, 160 * 1024)
        assert MIN_FREE < free < 300 * 1024, "could not leave ~160 KB free (%d)" % free
        big_tag = "too-big-%d" % time.time_ns()
        body = b"".join(b"%07d filler line of a message that does not fit ...................\r\n" % i
                        for i in range(6000))            # ~480 KB
        mark = inst.log_mark()
        c, (code, lines) = _mail(inst.port)
        try:
            assert code == 250, "MAIL with %d bytes free (min_free %d) got %d %s" % (
                free, MIN_FREE, code, lines)
            c.cmd("RCPT TO:<big@example.net>", "250")
            c.cmd("DATA", "354")
            c.send_raw(make_message(subject=big_tag, body=body) + b".\r\n")
            code, lines = c.read_reply()
            reply = "%d %s" % (code, " ".join(lines))
            assert reply.startswith("452 4.3.1"), \
                "a message larger than the free space got %r, expected 452 4.3.1" % reply
            # The session survives and the client may try again later.
            c.cmd("RSET", "250")
            c.cmd("QUIT", "221")
        finally:
            c.close()
        err = inst.wait_log("smtpd", r"\bevent=spool_error\b", since=mark)
        assert "No space left" in err[0], "spool_error line: %r" % err[0]
        # Its partial file is gone again, nothing of it got into the queue.
        wait_for(lambda: not inst.spool_files("tmp"), 5, what="spool/tmp to be cleaned up")
        assert set(inst.spool_files("incoming")) | set(inst.spool_files("queue")) <= {qid_a}, \
            "the refused message reached the queue: %r" % inst.spool_files("queue")

        # 2. Below min_free: refused already at MAIL.
        free = _fill_to(inst.spool, filler, 40 * 1024)
        assert free < MIN_FREE, "could not get below min_free (%d free)" % free
        mark = inst.log_mark()
        c, (code, lines) = _mail(inst.port)
        try:
            reply = "%d %s" % (code, " ".join(lines))
            assert reply.startswith("452 4.3.1"), "MAIL with %d bytes free got %r, expected 452 4.3.1" % (
                free, reply)
            c.cmd("QUIT", "221")
        finally:
            c.close()
        rej = inst.wait_log("smtpd", r"\bevent=rejected\b.*space", since=mark)
        assert rej, "no event=rejected line for the low-space refusal"

        # 3. Room again: new mail is accepted, and once the smarthost is
        #    back everything stored is delivered; the refused message never.
        os.unlink(filler)
        tag_b = "stored-after-%d" % time.time_ns()
        qid_b = inst.send_ok(SENDER, ["b@example.net"], make_message(subject=tag_b))
        up = ScriptedUpstream(port=port).start()
        up.wait(lambda: up.with_token(tag_a) and up.with_token(tag_b), 20,
                "the stored messages to arrive")
        for q in (qid_a, qid_b):
            inst.wait_log("queued", r"\bevent=removed\b.*\bqid=%s\b" % q)
        assert not up.with_token(big_tag), "the message answered 452 was delivered"
        assert len(up.with_token(tag_a)) == 1 and len(up.with_token(tag_b)) == 1
        assert not inst.spool_files("corrupt"), inst.spool_files("corrupt")
    finally:
        try:
            inst.cleanup()
        finally:
            if up is not None:
                up.stop()
            _umount(inst.spool)
            if inst._owned:    # outside the runner: the Instance could not remove a mount point
                shutil.rmtree(inst.dir, ignore_errors=True)
