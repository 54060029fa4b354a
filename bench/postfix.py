"""Postfix (and OpenDKIM) configured by the benchmark on loopback ports in a
temporary directory: the reference the figures are compared with.

Debian's packages start no daemon here; this module writes a configuration
of its own and runs Postfix's master in the foreground, so that nothing under
/etc is used or changed.
"""

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MASTER = "/usr/lib/postfix/sbin/master"

# Only what relaying from loopback to one next hop needs; chroot off (the
# column after "unpriv"), since the temporary queue has no chroot tree.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
local     unix - n n - - local
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def terminate(process, timeout=20):
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def installed():
    return Path(MASTER).exists() and shutil.which("postconf") is not None


class Postfix:
    def __init__(self, listen_port, sink_port, tls_cert, tls_key, dkim=None,
                 hostname="reference.example.test"):
        self.listen_port, self.sink_port = listen_port, sink_port
        self.dir = Path(tempfile.mkdtemp(prefix="postern-bench-postfix-"))
        self.conf = self.dir / "conf"
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.dkim = dkim
        self.hostname = hostname
        self.process = None

    def main_cf(self):
        settings = {
            "compatibility_level": "3.6",
            "myhostname": self.hostname,
            "mydestination": "",
            "queue_directory": self.dir / "queue",
            "data_directory": self.dir / "data",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_tls_cert_file": self.tls_cert,
            "smtpd_tls_key_file": self.tls_key,
            "smtpd_tls_security_level": "may",
            "smtp_tls_security_level": "may",
            "maillog_file": self.dir / "postfix.log",
            "maillog_file_prefixes": self.dir,
            "message_size_limit": 64 * 1024 * 1024,
            "default_process_limit": 200,
            "smtpd_client_connection_count_limit": 0,
            "smtpd_client_connection_rate_limit": 0,
            "smtpd_client_message_rate_limit": 0,
            "anvil_rate_time_unit": "60s",
            "biff": "no",
            "smtputf8_enable": "no",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
        }
        if self.dkim is not None:
            settings["smtpd_milters"] = f"inet:127.0.0.1:{self.dkim.port}"
            settings["milter_default_action"] = "tempfail"
        return "".join(f"{key} = {value}\n" for key, value in settings.items())

    def start(self):
        # Postfix's daemons run as the postfix user and must reach the queue.
        self.dir.chmod(0o755)
        for sub in (self.conf, self.dir / "data", self.dir / "queue"):
            sub.mkdir()
        shutil.chown(self.dir / "data", "postfix")
        (self.conf / "main.cf").write_text(self.main_cf())
        listen = f"127.0.0.1:{self.listen_port}"
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=listen))
        # "check" creates the queue tree and fixes its owners and modes.
        self._postfix("check")
        self.process = subprocess.Popen(
            [MASTER, "-c", str(self.conf), "-d"], stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "master.err", "ab"), start_new_session=True,
        )
        return self

    def _postfix(self, *args):
        done = subprocess.run(["postfix", "-c", str(self.conf), *args],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {done.stderr[-2000:]}")

    def stop(self):
        terminate(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class OpenDKIM:
    """An OpenDKIM milter signing with an RSA-2048 key, on a loopback port."""

    def __init__(self, port, domain, selector="bench"):
        self.port, self.domain, self.selector = port, domain, selector
        self.dir = Path(tempfile.mkdtemp(prefix="postern-bench-opendkim-"))
        self.process = None

    def start(self):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file = self.dir / "key.pem"
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ))
        key_file.chmod(0o600)
        conf = self.dir / "opendkim.conf"
        conf.write_text(
            f"Domain {self.domain}\nSelector {self.selector}\nKeyFile {key_file}\n"
            f"Socket inet:{self.port}@127.0.0.1\nMode s\n"
            "Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\n"
            "Syslog no\nRequireSafeKeys no\nUMask 007\n"
            f"PidFile {self.dir / 'opendkim.pid'}\n"
        )
        self.process = subprocess.Popen(
            ["opendkim", "-f", "-x", str(conf)], stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "opendkim.err", "ab"), start_new_session=True,
        )
        return self

    def stop(self):
        terminate(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)
