"""Connection strings fit for a terminal or a log: every password replaced, the rest kept so an
operator can still tell which server is meant. PostgreSQL takes both URL and keyword forms
(`host=db password=...`), and either may carry the password in a query parameter."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
SECRET_KEYS = {"password", "pass", "passwd", "secret", "sslpassword"}
# key=value pairs of a keyword DSN; a value may be single-quoted with backslash escapes
_KEYWORD_PAIR = re.compile(r"(?P<key>\w+)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|\S*)")


def redacted(dsn: str) -> str:
    if "://" in dsn:
        return _redacted_url(dsn)
    return _KEYWORD_PAIR.sub(_hide_pair, dsn)


def _hide_pair(match: re.Match[str]) -> str:
    if match["key"].lower() in SECRET_KEYS:
        return f"{match['key']}={HIDDEN}"
    return match[0]


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{HIDDEN}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, HIDDEN if k.lower() in SECRET_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))
