"""log.syslog = true sends each component's lines to syslog with ident
postern/COMPONENT, and switching it on with `postern reload` reaches the
children too.  The test needs a /dev/log of its own: as root it starts
the master in a private mount namespace (unshare --mount) whose /dev is a
tmpfs holding /dev/null & co. plus the test's datagram socket as log."""

import os
import shutil
import socket
import subprocess
import threading

from postern import Instance, Skip, bin_path, is_root, make_message, wait_for, scaled

SETUP = r'''
set -e
d="$1"; shift
mount -t tmpfs -o mode=0755 none "$d"
for n in null zero random urandom full tty; do
  [ -e /dev/$n ] || continue
  touch "$d/$n"; mount --bind /dev/$n "$d/$n"
done
touch "$d/log"; mount --bind "$SYSLOG_SOCK" "$d/log"
mount --rbind "$d" /dev
exec "$@"
'''


def test_syslog_lines_and_reload():
    if not is_root():
        raise Skip("needs root to bind a private /dev/log (unshare --mount)")
    if not shutil.which("unshare"):
        raise Skip("unshare (util-linux) is not installed")
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                      capture_output=True).returncode != 0:
        raise Skip("unshare --mount is not permitted here")
    with Instance(settings={"log": {"syslog": False}}) as inst:
        sockpath = os.path.join(inst.dir, "devlog.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sockpath)
        os.chmod(sockpath, 0o666)
        newdev = os.path.join(inst.dir, "dev")
        os.mkdir(newdev)
        got = []
        done = threading.Event()

        # Read all the time: a unix datagram socket queues only ~10
        # messages, and syslog(3) blocks the sender when it is full.
        def reader():
            sock.settimeout(0.05)
            while not done.is_set():
                try:
                    got.append(sock.recv(65536).decode("utf-8", "replace"))
                except socket.timeout:
                    pass
                except OSError:
                    return
        t = threading.Thread(target=reader, daemon=True)
        t.start()

        def drain():
            return list(got)

        env = dict(os.environ, SYSLOG_SOCK=sockpath)
        out = open(os.path.join(inst.dir, "ns.stderr"), "wb")
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP, "sh", newdev,
             bin_path("postern"), "-c", inst.conf, "start", "--foreground"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True)
        inst.proc = proc    # cleanup() stops and kills it like its own
        try:
            inst.wait_ready()
            assert not any("postern/" in m for m in drain()), got
            inst.update({"log": {"syslog": True}})
            mark = inst.log_mark()
            inst.cli("reload", check=True)
            for c in ("master", "smtpd", "queued", "deliverd"):
                inst.wait_log(c, r"event=reloaded", since=mark)
            qid = inst.send_ok("user@example.org", ["a@localhost"], make_message())
            inst.wait_maildir("a", 1)

            def seen(ident, text):
                return any(ident + "[" in m and text in m for m in drain())
            wait_for(lambda: seen("postern/smtpd", "event=accepted qid=%s" % qid), 10,
                     what="smtpd's accepted line in syslog")
            wait_for(lambda: seen("postern/queued", "qid=%s" % qid), 10, what="queued in syslog")
            wait_for(lambda: seen("postern/deliverd", "event=delivered qid=%s" % qid), 10,
                     what="deliverd's delivered line in syslog")
            # <22> = mail.info (LOG_MAIL | LOG_INFO)
            assert any(m.startswith("<22>") and "postern/smtpd" in m for m in got), got[:3]
            inst.stop()
            wait_for(lambda: seen("postern/master", "event=stopped"), 10, what="master stop in syslog")
        finally:
            done.set()
            t.join(5)
            sock.close()
            out.close()
