"""The development sink: an SMTP server that stands in for every recipient's
MX when Postern runs on one machine, and keeps what it receives as files for
the portal to show. Never for production."""

import json
import logging
import re
import time
import uuid
from email.parser import BytesHeaderParser
from email.policy import default as default_policy

from aiosmtpd.smtp import SMTP
from django.conf import settings

from relay.listener import serve_until_stopped

log = logging.getLogger("postern.devsink")


class SinkHandler:
    def __init__(self, directory):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time():.6f}-{uuid.uuid4().hex[:8]}"
        (self.directory / f"{name}.eml").write_bytes(envelope.original_content)
        (self.directory / f"{name}.json").write_text(
            json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos})
        )
        log.info("event=sink_received name=%s rcpts=%d", name, len(envelope.rcpt_tos))
        return "250 2.0.0 Ok: kept by the development sink"


def recent(limit):
    directory = settings.DEV_SINK_DIR
    if not directory.exists():
        return []
    mails = []
    for path in sorted(directory.glob("*.eml"), reverse=True)[:limit]:
        raw = path.read_bytes()
        headers = BytesHeaderParser(policy=default_policy).parsebytes(raw)
        envelope_file = path.with_suffix(".json")
        envelope = (
            json.loads(envelope_file.read_text()) if envelope_file.exists() else {}
        )
        mails.append(
            {
                "name": path.stem,
                "from": headers.get("From", ""),
                "to": ", ".join(envelope.get("rcpt_tos", [])),
                "subject": headers.get("Subject", ""),
                "signed": headers.get("DKIM-Signature") is not None,
                "size": len(raw),
            }
        )
    return mails


def raw_mail(name):
    """The bytes of one kept mail, as text, or None. name comes from a URL,
    so only names the sink itself makes are looked up."""
    if not re.fullmatch(r"[0-9.]+-[0-9a-f]{8}", name):
        return None
    path = settings.DEV_SINK_DIR / f"{name}.eml"
    if not path.is_file():
        return None
    return path.read_bytes().decode("utf-8", "replace")


async def serve(host, port):
    handler = SinkHandler(settings.DEV_SINK_DIR)
    await serve_until_stopped(
        lambda: SMTP(handler, hostname="devsink", decode_data=False), host, port, log
    )
