"""testssl.sh (Debian package testssl.sh, command `testssl` or
`testssl.sh`) against smtpd's STARTTLS port and its implicit-TLS
(submissions) port: no SSLv2, SSLv3, TLS 1.0 or TLS 1.1 offered, TLS 1.2
offered, and no NULL, anonymous, EXPORT, LOW or RC4 ciphers.  Only the protocol (-p),
standard cipher category (-s) and RC4 (-4) checks run, to stay near a
minute per port; the verdicts are read from testssl's flat JSON output."""

import json
import os
import shutil
import subprocess

import postern
from postern import Skip
from test_tls_smtpd import tls_instance

NOT_OFFERED = ("SSLv2", "SSLv3", "TLS1", "TLS1_1")


def testssl_bin():
    for name in ("testssl.sh", "testssl"):
        p = shutil.which(name)
        if p:
            return p
    raise Skip("testssl.sh not installed (apt-get install -y testssl.sh)")


def run_testssl(port, starttls):
    """testssl's findings for 127.0.0.1:port as {id: finding}, and its text."""
    exe = testssl_bin()
    out_json = os.path.join(os.environ.get("POSTERN_TEST_TMP", "/tmp"), "testssl-%d.json" % port)
    args = [exe, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none",
            "-p", "-s", "-4", "--jsonfile", out_json]
    if starttls:
        args += ["-t", "smtp"]
    args.append("127.0.0.1:%d" % port)
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=postern.scaled(150))
    text = p.stdout.decode("utf-8", "replace")
    try:
        with open(out_json) as f:
            found = {e["id"]: e.get("finding", "") for e in json.load(f)}
    except (OSError, ValueError) as e:
        raise AssertionError("testssl wrote no JSON (%s), exit %d:\n%s" % (e, p.returncode, text))
    return found, text


def check_findings(found, text):
    for proto in NOT_OFFERED:
        assert proto in found, "testssl did not test %s:\n%s" % (proto, text)
        assert found[proto].startswith("not offered"), "%s: %s\n%s" % (proto, found[proto], text)
    assert found.get("TLS1_2", "").startswith("offered"), "TLS 1.2: %r\n%s" % (found.get("TLS1_2"), text)
    for cat in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW"):
        assert cat in found, "testssl did not test %s:\n%s" % (cat, text)
        assert found[cat].startswith("not offered"), "%s: %s\n%s" % (cat, found[cat], text)
    assert "RC4" in found, "testssl did not test RC4:\n%s" % text
    assert found["RC4"].startswith("not vulnerable"), "RC4: %s\n%s" % (found["RC4"], text)


def test_testssl_starttls_port():
    testssl_bin()
    with tls_instance() as inst:
        found, text = run_testssl(inst.port, starttls=True)
        check_findings(found, text)


def test_testssl_implicit_port():
    testssl_bin()
    with tls_instance() as inst:
        found, text = run_testssl(inst.subs_port, starttls=False)
        check_findings(found, text)


test_testssl_starttls_port.timeout = 120
test_testssl_implicit_port.timeout = 120
