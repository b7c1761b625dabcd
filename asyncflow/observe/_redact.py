"""Secrets out of log lines: URLs are written without credentials, query strings or fragments."""

from __future__ import annotations

import re

__all__ = ["redact_urls"]

# scheme://[userinfo@]host[:port][/path][?query][#fragment], ended by whitespace or a quote.
_URL = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<userinfo>[^\s/?#@'\"<>]*@)?"
    r"(?P<rest>[^\s?#'\"<>]*)"
    r"(?P<query>\?[^\s#'\"<>]*)?"
    r"(?P<fragment>#[^\s'\"<>]*)?"
)


def _strip(match: re.Match[str]) -> str:
    return match["scheme"] + match["rest"]


def redact_urls(text: str) -> str:
    """``text`` with every URL in it cut down to scheme, host, port and path.

    Credentials (``user:pass@``), query strings and fragments are dropped, since that is where
    API keys and tokens travel. Text that holds no URL comes back unchanged.

    Example::

        >>> redact_urls("503 for url 'https://user:pw@api.example.com/v1/x?key=sk-1'")
        "503 for url 'https://api.example.com/v1/x'"
    """
    if "://" not in text:
        return text
    return _URL.sub(_strip, text)
