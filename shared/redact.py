"""Secrets never printed: URLs with their password replaced by ``***``, in CLI errors and logs.

A connection URL (``postgresql://user:pw@host/db``, ``amqp://user:pw@host/``,
``redis://:pw@host/0``) is shown as ``postgresql://user:***@host/db``. Driver errors can quote the
connection string they were given, so any text is redacted too: every ``scheme://user:password@``
in it, and the passwords of the URLs jobtrail is configured with (``JOBTRAIL_POSTGRES_URL``,
``JOBTRAIL_AMQP_URL``, ``JOBTRAIL_REDIS_URL``) wherever they appear.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import traceback
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MASK = "***"
URL_VARIABLES = ("JOBTRAIL_POSTGRES_URL", "JOBTRAIL_AMQP_URL", "JOBTRAIL_REDIS_URL")
_MIN_SECRET = 3  # shorter "passwords" would mask ordinary words; the URL pattern still applies
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (unchanged when it has none)."""
    return _USERINFO.sub(rf"\g<head>:{MASK}@", url)


def _configured_secrets() -> tuple[str, ...]:
    return _secrets_of(tuple(os.environ.get(name, "") for name in URL_VARIABLES))


@functools.lru_cache(maxsize=8)
def _secrets_of(urls: tuple[str, ...]) -> tuple[str, ...]:
    """The passwords of ``urls`` as written and decoded, longest first (cached: every log
    record of a service is redacted)."""
    secrets = set()
    for url in urls:
        try:
            password = urlsplit(url).password
        except ValueError:  # a malformed URL: the pattern above still masks it
            continue
        if password:
            secrets |= {password, unquote(password), quote(unquote(password), safe="")}
    return tuple(sorted((s for s in secrets if len(s) >= _MIN_SECRET), key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every URL password and every configured password replaced by ``***``."""
    text = redact_url(text)
    for secret in _configured_secrets():
        text = text.replace(secret, MASK)
    return text


def install_log_redaction() -> None:
    """Redacts every log record of this process as it is created (message and traceback), so
    no handler writes a password: the root's, and those of libraries with their own
    (FastStream's, uvicorn's). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacts", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when the record is handled
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)  # formatters use exc_text when it is set
        return record

    factory.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
