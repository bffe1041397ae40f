"""Untrusted text made safe to show or keep: one owner for escaping, credentials and CSV cells.

Why one place: a string from a file, a DICOM header, a PACS answer or a URL someone typed reaches
a terminal, a log, a CSV opened in a spreadsheet or a database. Each of those has its own hazard —
escape sequences that clear or rewrite a radiologist's terminal, a password inside a URL, a cell
that a spreadsheet runs as a formula — and each caller once had its own partial answer. Every
caller uses these three functions instead. Pure Python, no TensorFlow.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_LIMIT = 200
ELLIPSIS = "…"
# OWASP "CSV injection": a cell starting with one of these is run as a formula by spreadsheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def printable(value: Any, limit: int | None = DEFAULT_LIMIT) -> str:
    """``value`` as text with every control or format character escaped, cut to ``limit``.

    ``ESC[2J`` becomes the visible ``\\x1b[2J``: a terminal, a log viewer or a Streamlit label
    shows it and never acts on it. Line breaks and tabs are escaped too, so one value stays on one
    line (a forged log line cannot be injected). Letters of every script are kept.
    """
    text = value if isinstance(value, str) else str(value)
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):  # Cc, Cf, Cs, Co, Cn; line separators
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    escaped = "".join(out)
    if limit is not None and len(escaped) > limit:
        return escaped[: max(limit - 1, 0)] + ELLIPSIS
    return escaped


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s]*@)")


def safe_url(url: Any) -> str:
    """``url`` without the user and password it may carry, escaped for display and storage.

    ``http://svc:pw@host:8501/v1`` becomes ``http://host:8501/v1``; anything that does not parse
    as a URL still loses an ``user:password@`` part wherever it appears.
    """
    text = "" if url is None else str(url)
    try:
        parts = urlsplit(text)
        if parts.netloc and "@" in parts.netloc:
            host = parts.netloc.rsplit("@", 1)[1]
            text = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    except ValueError:  # an invalid port or IPv6 literal: fall back to the pattern below
        pass
    return printable(_USERINFO.sub(r"\g<scheme>", text), limit=None)


def without_credentials(text: str, url: str | None) -> str:
    """``text`` (an error message) with ``url``'s credentials and any other userinfo removed."""
    cleaned = str(text)
    if url:
        parts = urlsplit(str(url))
        for secret in (parts.password, parts.username):
            if secret:
                cleaned = cleaned.replace(secret, "***")
    return _USERINFO.sub(r"\g<scheme>", cleaned)


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell that a spreadsheet shows as text and never evaluates.

    OWASP's rule: a text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    is prefixed with a single quote; control characters are escaped (:func:`printable`, no length
    limit). Numbers, booleans and ``None`` pass unchanged (a negative number is not a formula).
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    text = printable(value, limit=None)
    if text.startswith(FORMULA_STARTS) or str(value).startswith(FORMULA_STARTS):
        return "'" + text
    return text
