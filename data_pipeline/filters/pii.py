"""PII formatter: e-mail addresses and IP addresses (v4 and v6), and optionally phone numbers,
become fixed placeholders. It never removes a document; it counts the replacements per kind
for the curation report. Like datatrove's PIIFormatter and Dolma's PII tagger, it matches
patterns and validates the candidates (IPv4 octets <= 255, IPv6 through the ipaddress module),
so version strings, times and C++ scopes stay as they are."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from data_pipeline.document import Document
from data_pipeline.filters.base import Filter


@dataclass
class PiiConfig:
    enabled: bool = True  # false: no replacement at all
    email: bool = True
    ip: bool = True  # IPv4 and IPv6
    phone: bool = False  # phone numbers look like many other numbers: off by default
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP_ADDRESS>"
    phone_placeholder: str = "<PHONE>"


EMAIL_RE = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][\w.%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
# a dotted quad not inside a longer dotted number (version strings such as 1.2.3.4.5)
IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)")
# a run of hex groups with two or more colons (or ending in a dotted quad); ipaddress decides
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])")
# What every match holds, found by a fast search for its leading literal: the full patterns
# (which start with a character class or a lookbehind, and make the regex engine try every
# position) then run only on the lines holding one. No pattern matches across a line break.
EMAIL_ANCHOR_RE = re.compile("@")
IPV4_ANCHOR_RE = re.compile(r"\.\d")
IPV6_ANCHOR_RE = re.compile(r":[0-9A-Fa-f:]")
# +CC (AAA) BBB-CCCC and its spellings: groups of 2-4, 3-4 and 3-4 digits joined by space, dot or dash
PHONE_RE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]\d{3,4}(?![\w-])")


def is_ipv4(candidate: str) -> bool:
    return all(int(octet) <= 255 for octet in candidate.split("."))


def is_ipv6(candidate: str) -> bool:
    # A decimal digit and two groups keep C++ and Perl scopes ("cb::add", "Step1::") out;
    # the few real addresses with one group ("::1", "fe80::") are not personal.
    if not any(char.isdigit() for char in candidate) or len([group for group in candidate.split(":") if group]) < 2:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def lines_holding(text: str, anchor: re.Pattern[str] | None) -> list[tuple[int, int]]:
    """(start, end) of each line holding a match of ``anchor``, in order (no anchor: the text)."""
    if anchor is None:
        return [(0, len(text))]
    spans: list[tuple[int, int]] = []
    for match in anchor.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue  # on the line already taken
        end = text.find("\n", match.start())
        spans.append((text.rfind("\n", 0, match.start()) + 1, len(text) if end < 0 else end))
    return spans


class PiiFormatter(Filter):
    name = "pii"

    def __init__(self, config: PiiConfig) -> None:
        super().__init__()
        # (kind in the report, pattern, validation, placeholder), in the order they run: e-mail
        # first (its domain may hold a dotted quad), phone last (an IP address is no phone)
        rules: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None, str, re.Pattern[str] | None]] = []
        if config.email:
            rules.append(("email", EMAIL_RE, None, config.email_placeholder, EMAIL_ANCHOR_RE))
        if config.ip:
            # v6 first: an IPv4-mapped address (::ffff:1.2.3.4) goes whole
            rules.append(("ip_address", IPV6_RE, is_ipv6, config.ip_placeholder, IPV6_ANCHOR_RE))
            rules.append(("ip_address", IPV4_RE, is_ipv4, config.ip_placeholder, IPV4_ANCHOR_RE))
        if config.phone:
            rules.append(("phone", PHONE_RE, None, config.phone_placeholder, None))  # no literal: the whole text
        self.rules = rules
        self.replaced: Counter[str] = Counter()  # replacements per kind
        self.changed = 0  # documents with at least one

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "replaced": dict(self.replaced), "documents_changed": self.changed}

    def check(self, doc: Document) -> str | None:
        text = doc.text
        total = 0
        for kind, pattern, valid, placeholder, anchor in self.rules:
            count = 0

            # this rule's validator and placeholder bound as defaults, not looked up when the closure runs
            def replace(
                match: re.Match[str], valid: Callable[[str], bool] | None = valid, placeholder: str = placeholder
            ) -> str:
                nonlocal count
                if valid is not None and not valid(match.group()):
                    return match.group()
                count += 1
                return placeholder

            pieces, done = [], 0
            for start, end in lines_holding(text, anchor):
                pieces += [text[done:start], pattern.sub(replace, text[start:end])]
                done = end
            if pieces:
                text = "".join(pieces) + text[done:]
            self.replaced[kind] += count
            total += count
        if total:
            self.changed += 1
            doc.text = text
        return None
