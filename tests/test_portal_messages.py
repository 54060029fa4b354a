"""The message list: search by queue id, recipient, subject and sender, only
ever within the user's own tenant."""

import pytest
from django.test import Client

from tests.support.outbound import make_tenant, queue_message
from tests.support.people import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tenants():
    shop, other = make_tenant("Shop"), make_tenant("Other")
    invoice = queue_message(
        shop, ["alice@customer.example.net"], subject="Invoice 1042"
    )
    reset = queue_message(shop, ["bob@customer.example.net"], subject="Password reset")
    foreign = queue_message(other, ["alice@customer.example.net"], subject="Invoice 77")
    return shop, other, invoice, reset, foreign


def search(user, query):
    client = Client()
    client.force_login(user)
    page = client.get("/", {"q": query})
    assert page.status_code == 200
    return page.content.decode()


@pytest.mark.parametrize(
    "query, found, not_found",
    [
        ("alice@", "invoice", "reset"),
        ("password", "reset", "invoice"),
        ("invoice", "invoice", "reset"),
    ],
)
def test_search_finds_the_tenants_own_messages(two_tenants, query, found, not_found):
    shop, _, invoice, reset, foreign = two_tenants
    messages = {"invoice": invoice, "reset": reset}
    content = search(make_user("owner", shop), query)
    assert f"/messages/{messages[found].queue_id}/" in content
    assert f"/messages/{messages[not_found].queue_id}/" not in content
    assert f"/messages/{foreign.queue_id}/" not in content


def test_search_by_queue_id(two_tenants):
    shop, _, invoice, reset, foreign = two_tenants
    content = search(make_user("owner", shop), invoice.queue_id.lower())
    assert f"/messages/{invoice.queue_id}/" in content
    assert f"/messages/{reset.queue_id}/" not in content
    # Another tenant's queue id finds nothing, not even its existence.
    found = search(make_user("owner2", shop), foreign.queue_id)
    assert f"/messages/{foreign.queue_id}/" not in found
