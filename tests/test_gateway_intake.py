"""Intake: the rows one submission becomes, written in one statement on
PostgreSQL and through the ORM elsewhere, and committed before the gateway
answers."""

from dataclasses import asdict

import psycopg
import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext

from relay import intake
from relay.models import Message, MessageEvent, Recipient
from tenants.credentials import issue_credential
from tenants.models import Tenant

RAW = b"From: Shop <billing@shop.example.test>\r\nSubject: Invoice\r\n\r\nHello.\r\n"
# Differ from one row to the next, whichever way they were written.
UNIQUE_FIELDS = {"id", "queue_id", "message_id", "state_changed_at", "created_at"}


@pytest.fixture
def credential():
    tenant = Tenant.objects.create(name="Shop", status=Tenant.APPROVED)
    credential, _ = issue_credential(tenant, "Billing system")
    return credential


def submission(credential, **changes):
    return intake.Submission(
        **{
            "tenant_id": credential.tenant_id,
            "credential_id": credential.id,
            "mail_from": "billing@shop.example.test",
            "envelope_params": {"ENVID": "Inv-1042", "SMTPUTF8": True, "RET": "HDRS"},
            "rcpt_tos": [
                "zoë@kunde.example.net",
                "b@Customer.Example.NET.",
                "c@x.example",
            ],
            "rcpt_params": [
                {"NOTIFY": "FAILURE,DELAY"},
                {},
                {"ORCPT": "rfc822;c@x.example"},
            ],
            "raw": RAW,
            "header_from": "Shop <billing@shop.example.test>",
            "subject": "Rechnung für Dezember",
            "client_address": "2001:db8::25",
            **changes,
        }
    )


def accept(given, **changes):
    """accept_message, as the gateway calls it, with the fields of given."""
    return intake.accept_message(**{**asdict(given), **changes})


def rows(accepted):
    """The message, its recipients in id order and its events, without the
    fields that differ between any two messages."""

    def fields(instance):
        return {
            field.attname: field.value_from_object(instance)
            for field in instance._meta.concrete_fields
            if field.attname not in UNIQUE_FIELDS
        }

    message = Message.objects.get(pk=accepted.id)
    return (
        fields(message),
        [fields(r) for r in Recipient.objects.filter(message=message).order_by("pk")],
        [fields(e) for e in MessageEvent.objects.filter(message=message)],
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"credential_id": None, "client_address": None, "envelope_params": {}},
        {
            "rcpt_tos": ["one@x.example"],
            "rcpt_params": [{}],
            "client_address": "10.0.0.7",
        },
    ],
)
def test_one_statement_writes_what_the_orm_writes(credential, changes):
    """A field added to Message, Recipient or MessageEvent with a default of
    its own fails here until the statement writes it too."""
    given = submission(credential, **changes)
    in_one = intake._insert_in_one_statement(given)
    with_orm = intake._insert_with_orm(given)

    assert rows(in_one) == rows(with_orm)
    message, recipients, events = rows(in_one)
    assert message["raw"] == RAW and message["state"] == Message.RECEIVED
    assert [r["address"] for r in recipients] == given.rcpt_tos
    assert events == [{"kind": "received", "detail": given.received_detail}]
    stored = Message.objects.get(pk=in_one.id)
    assert stored.queue_id == in_one.queue_id
    assert stored.created_at == stored.state_changed_at


@pytest.mark.django_db
def test_accepting_is_one_statement_on_postgresql(credential):
    with CaptureQueriesContext(connection) as queries:
        accepted = accept(submission(credential), header_from="x" * 1200)
    assert len(queries) == 1
    stored = Message.objects.get(pk=accepted.id)
    assert stored.header_from == "x" * 998
    assert stored.recipients.count() == 3


@pytest.mark.django_db
def test_a_recipient_that_cannot_be_stored_leaves_no_message(credential):
    too_long = "a" * 330 + "@x.example"
    with pytest.raises(DataError), transaction.atomic():
        intake._insert_in_one_statement(
            submission(
                credential, rcpt_tos=["ok@x.example", too_long], rcpt_params=[{}, {}]
            )
        )
    assert not Message.objects.exists()
    assert not MessageEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_message_is_committed_when_accepting_returns(credential):
    """The gateway answers 250 right after accept_message returns: another
    connection must already see every row."""
    accepted = accept(submission(credential))
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"],
        user=settings["USER"],
        dbname=settings["NAME"],
        password=settings["PASSWORD"] or None,
    ) as other:
        found = other.execute(
            "SELECT (SELECT count(*) FROM relay_recipient WHERE message_id = %s),"
            " (SELECT count(*) FROM relay_messageevent WHERE message_id = %s)",
            (accepted.id, accepted.id),
        ).fetchone()
    assert found == (3, 1)


def test_recipient_parameters_must_match_the_recipients():
    with pytest.raises(ValueError):
        intake.accept_message(
            tenant_id=1,
            credential_id=None,
            mail_from="a@x.example",
            rcpt_tos=["b@x.example", "c@x.example"],
            rcpt_params=[{}],
            raw=RAW,
            header_from="",
            subject="",
            client_address=None,
        )
