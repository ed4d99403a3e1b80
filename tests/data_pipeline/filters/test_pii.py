"""The PII formatter: what it replaces, what it must leave alone, its switches and placeholders,
and its counts in the curation report."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from data_pipeline.curate.cli import run_curation
from data_pipeline.document import Document
from data_pipeline.filters.pii import PiiConfig, PiiFormatter
from data_pipeline.io.writers import iter_shard


def redact(text: str, **settings) -> tuple[str, PiiFormatter]:
    formatter = PiiFormatter(PiiConfig(**settings))
    document = Document("test", text, {}, "test.jsonl", 1)
    assert formatter(document) is None  # a formatter never removes a document
    return document.text, formatter


def test_emails_and_ip_addresses_become_placeholders():
    text = (
        "Write to jane.doe+news@mail.example.co.uk or bob@example.org. Server 192.168.1.20 and "
        "10.0.0.255, IPv6 2001:db8::8a2e:370:7334, fe80::1ff:fe23:4567:890a and ::ffff:192.0.2.1 here."
    )
    redacted, formatter = redact(text)
    assert redacted == (
        "Write to <EMAIL> or <EMAIL>. Server <IP_ADDRESS> and "
        "<IP_ADDRESS>, IPv6 <IP_ADDRESS>, <IP_ADDRESS> and <IP_ADDRESS> here."
    )
    assert formatter.stats()["replaced"] == {"email": 2, "ip_address": 5}
    assert formatter.stats()["documents_changed"] == 1


@pytest.mark.parametrize(
    "text",
    [
        "Octets over 255: 999.1.1.1 and 256.0.0.1.",  # v4 octets are validated
        "Version 1.2.3.4.5 of the tool.",  # part of a longer dotted number
        # v6 candidates ipaddress rejects
        "At 12:30:45 the C++ scope std::vector and cb::add, a MAC 00:1a:2b:3c:4d:5e.",
        "Call 555-123-4567 tomorrow.",  # phones are off by default
        "An @handle and user@localhost are no addresses.",
        "Loopback ::1 and the prefix fe80:: (one group: kept, and not personal).",
    ],
)
def test_lookalikes_stay(text):
    redacted, formatter = redact(text)
    assert redacted == text and formatter.changed == 0


def test_every_ipv4_and_ipv6_address_the_ipaddress_module_accepts_is_found():
    """Against an independent reference: the ipaddress module's own spellings of many addresses."""
    for value in range(0, 2**32, 2**32 // 997):
        address = str(ipaddress.IPv4Address(value))
        assert redact(f"from {address}.")[0] == "from <IP_ADDRESS>.", address
    for value in range(2**128 // 998, 2**128, 2**128 // 499):  # all with 8 groups, written out or compressed
        for spelling in (ipaddress.IPv6Address(value).compressed, ipaddress.IPv6Address(value).exploded):
            assert redact(f"host {spelling} up")[0] == "host <IP_ADDRESS> up", spelling


def test_phone_option_and_placeholders():
    text = "Call +1 (555) 123-4567 or 020 7946 0958, mail a@b.io, host 8.8.8.8; dated 2020-01-15."
    redacted, formatter = redact(
        text, phone=True, email_placeholder="[mail]", ip_placeholder="[ip]", phone_placeholder="[tel]"
    )
    assert redacted == "Call [tel] or [tel], mail [mail], host [ip]; dated 2020-01-15."
    assert formatter.replaced == {"phone": 2, "email": 1, "ip_address": 1}
    assert redact(text, email=False, ip=False)[0] == text


def test_curation_redacts_counts_and_can_switch_pii_off(tmp_path, prose, files, curate_config):
    text = prose(1) + "\nContact admin@example.com from 203.0.113.7 for more."
    corpus = files.jsonl(tmp_path / "pii" / "pii.jsonl", [{"text": text, "meta": {"id": "pii-0"}}])
    config = curate_config(str(corpus), dedup__exact=False, dedup__near=False)
    report = run_curation(config)
    (kept,) = [record for path in Path(config.output_dir).glob("part-*.jsonl.zst") for record in iter_shard(path)]
    assert kept["text"].endswith("Contact <EMAIL> from <IP_ADDRESS> for more.")
    assert report["pii_replacements"] == {"email": 1, "ip_address": 1}

    config = curate_config(
        str(corpus), output="off", dedup__exact=False, dedup__near=False, filters__pii__enabled=False
    )
    report = run_curation(config)
    (kept,) = [record for path in Path(config.output_dir).glob("part-*.jsonl.zst") for record in iter_shard(path)]
    assert kept["text"] == text and report["pii_replacements"] == {}
    assert "pii" not in [stage["stage"] for stage in report["stages"]]
