"""Reading the address fields once and remembering the reading: the results
are those of the email package's header registry, field by field."""

from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY

import pytest

from policies import sender
from policies.sender import (
    check_header_sender,
    header_from_address,
    listed_from_and_subject,
    parse_headers,
)

DOMAINS = frozenset({"shop.example.test"})


def headers(*lines):
    return parse_headers(("\r\n".join(lines) + "\r\n\r\nBody.\r\n").encode())


@pytest.mark.parametrize(
    "lines",
    [
        ("From: Shop <billing@shop.example.test>", "Subject: Invoice 1042"),
        (
            "From: =?utf-8?q?Caf=C3=A9_M=C3=BCller?= <a@shop.example.test>",
            "Subject: =?utf-8?b?UmVjaG51bmcgZsO8ciBEZXplbWJlcg==?=",
        ),
        ("FROM: a@shop.example.test (Billing)", "subject: folded\r\n  over two lines"),
        ('From: "Müller, Anna" <anna@shop.example.test>', "Subject: Grüße"),
        (
            "From: <a@shop.example.test>",
            "From: <b@shop.example.test>",
            "Subject: first",
            "Subject: second",
        ),
        ("To: <x@customer.example.net>",),
        ("From:", "Subject:"),
    ],
)
def test_listed_fields_are_what_the_registry_decodes(lines):
    parsed = headers(*lines)
    assert listed_from_and_subject(parsed) == (
        str(parsed.get("From", "")),
        str(parsed.get("Subject", "")),
    )


def test_a_from_read_again_comes_from_the_cache_unchanged():
    line = "From: Remembered <remembered-17@shop.example.test>"
    first = header_from_address(headers(line))
    hits = sender._parse_short_address_field.cache_info().hits
    again = header_from_address(headers(line))
    assert again == first == "remembered-17@shop.example.test"
    assert sender._parse_short_address_field.cache_info().hits == hits + 1


def test_the_cache_is_keyed_by_field_as_well_as_value():
    value = "<ops@bank.example>"
    assert (
        check_header_sender(
            headers("From: <a@shop.example.test>", f"Reply-To: {value}"), DOMAINS
        ).text
        == "Reply-To domain bank.example is not a verified domain of this account"
    )
    assert (
        check_header_sender(
            headers("From: <a@shop.example.test>", f"Sender: {value}"), DOMAINS
        ).text
        == "Sender domain bank.example is not a verified domain of this account"
    )


def test_values_longer_than_a_line_are_read_but_not_remembered():
    name = "x" * 1200
    before = sender._parse_short_address_field.cache_info().currsize
    for _ in range(2):
        assert (
            header_from_address(headers(f"From: {name} <a@shop.example.test>"))
            == "a@shop.example.test"
        )
        refusal = check_header_sender(
            headers(f"From: {name} <a@bank.example>"), DOMAINS
        )
        assert refusal.text.startswith("From domain bank.example is not")
    assert sender._parse_short_address_field.cache_info().currsize == before


@pytest.mark.parametrize(
    "raw",
    [
        b"From: <a@shop.example.test>\r\nSubject: Hi\r\n\r\nBody\r\n\r\nMore.\r\n",
        b"From: <a@shop.example.test>\r\nX-Folded: one\r\n two\r\n\r\n",
        b"From: <a@shop.example.test>\r\nSubject: no body\r\n",
        b"\r\nSubject: in the body\r\n\r\nText.\r\n",
        b"From: <a@shop.example.test>\n\nSubject: in the body\r\n\r\nText.\r\n",
        b"",
    ],
)
def test_only_the_header_section_is_parsed(raw):
    whole = BytesHeaderParser(policy=SMTP_POLICY).parsebytes(raw)
    parsed = parse_headers(raw)
    assert list(parsed.raw_items()) == list(whole.raw_items())
    _, _, body = raw.partition(b"\r\n\r\n")
    if body:
        assert body.decode() not in parsed.get_payload()
