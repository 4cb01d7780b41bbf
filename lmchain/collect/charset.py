"""Bytes to text: the declared charset when it decodes cleanly, else the page's own, else a guess.

Servers often lie: a header that says UTF-8 over Latin-1 bytes, no charset at all, or a name
Python does not know. A strict decode catches most lies, so we try in order: byte-order mark,
the HTTP header, the HTML ``<meta>`` declaration, charset-normalizer's detection, and finally
UTF-8 with replacement characters (text is never lost, a few characters may be).
"""

from __future__ import annotations

import codecs
import re

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.-]+)""", re.I)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def header_charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def meta_charset(body: bytes) -> str | None:
    match = _META_CHARSET.search(body[:4096])  # the spec wants it in the first 1024 bytes; be lenient
    return match.group(1).decode("ascii") if match else None


def _try(body: bytes, charset: str | None) -> str | None:
    if not charset:
        return None
    try:
        return body.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return None


def decode(body: bytes, content_type: str = "") -> tuple[str, str]:
    """(text, how) where ``how`` names the charset used and where it came from."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body.decode(name, errors="replace"), f"{name} (bom)"
    for where, charset in (("header", header_charset(content_type)), ("meta", meta_charset(body))):
        text = _try(body, charset)
        if text is not None and charset is not None:  # a text means a charset was given
            return text, f"{charset.lower()} ({where})"
    text = _try(body, "utf-8")  # most of the web; cheap to try before detection
    if text is not None:
        return text, "utf-8 (default)"
    from charset_normalizer import from_bytes

    results = list(from_bytes(body[:200_000]))
    if results:
        # charset-normalizer ranks by "chaos" (mess in the decoded text). Single-byte Latin
        # charsets often tie on it (cp1257 vs cp1252 for French); the one whose text reads as a
        # language (coherence) is the better guess then, and on a full tie (short texts) the web's
        # commonest legacy charset, windows-1252 (what browsers assume for unlabelled pages).
        least = min(r.chaos for r in results)
        best = max(
            (r for r in results if r.chaos <= least + 0.01),
            key=lambda r: (round(r.coherence, 3), r.encoding == "cp1252"),
        )
        if (text := _try(body, best.encoding)) is not None:
            return text, f"{best.encoding} (detected)"
    return body.decode("utf-8", errors="replace"), "utf-8 (replaced)"
