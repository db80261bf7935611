"""`postern reload` swaps smtpd's certificate even when the key is
readable only by root: the master reads the files and hands them over.
A key that does not match keeps the old certificate in service."""

import os
import shutil
import ssl
import smtplib

import postern
from test_tls_smtpd import tls_instance, client_ctx


def _served_cert(inst):
    s = smtplib.SMTP("127.0.0.1", inst.port, local_hostname="client.test",
                     timeout=postern.scaled(20))
    try:
        s.ehlo()
        s.starttls(context=client_ctx(inst.pki))
        return s.sock.getpeercert(binary_form=True)
    finally:
        s.close()


def _der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_reload_swaps_a_root_only_certificate():
    with tls_instance() as inst:
        cert, key = inst.pki["server"]
        assert _served_cert(inst) == _der(cert)
        # Rotate to another certificate from the same CA, at the same paths,
        # with the key root-only (smtpd runs unprivileged by now when root).
        new_cert, new_key = inst.pki["expired"]
        live_cert = inst.settings["tls"]["cert"] = cert + ".live"
        live_key = inst.settings["tls"]["key"] = key + ".live"
        shutil.copy(cert, live_cert)
        shutil.copy(key, live_key)
        os.chmod(live_key, 0o600)
        inst.update()
        inst.cli("reload", check=True)
        mark = inst.log_mark()
        shutil.copy(new_cert, live_cert)
        shutil.copy(new_key, live_key)
        os.chmod(live_key, 0o600)
        inst.cli("reload", check=True)
        inst.wait_log("smtpd", r"\bevent=tls_loaded\b", since=mark)
        # the "expired" leaf fails client verification: check the bytes served
        ctx = ssl.create_default_context(cafile=inst.pki["ca"])
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = smtplib.SMTP("127.0.0.1", inst.port, local_hostname="client.test",
                         timeout=postern.scaled(20))
        try:
            s.ehlo()
            s.starttls(context=ctx)
            served = s.sock.getpeercert(binary_form=True)
        finally:
            s.close()
        assert served == _der(new_cert), "reload did not swap the certificate"
        # A key that does not match the certificate: the old pair stays.
        mark = inst.log_mark()
        shutil.copy(inst.pki["wronghost"][1], live_key)
        inst.cli("reload", check=True)
        inst.wait_log("smtpd", r"\bevent=tls_reload_failed\b", since=mark)
        s = smtplib.SMTP("127.0.0.1", inst.port, local_hostname="client.test",
                         timeout=postern.scaled(20))
        try:
            s.ehlo()
            s.starttls(context=ctx)
            assert s.sock.getpeercert(binary_form=True) == _der(new_cert)
        finally:
            s.close()
