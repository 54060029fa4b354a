"""Mail held by development mode: processed and signed like any other, shown
here instead of being delivered."""

from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import render

from portal.access import member_required
from relay.models import Message, Recipient

# Held mail is for looking at, not for archiving: show at most this much.
MAX_SHOWN_BYTES = 256 * 1024


def held_messages(tenant):
    return (
        Message.objects.filter(tenant=tenant, recipients__state=Recipient.HELD)
        .distinct()
        .order_by("-created_at")
    )


@member_required
def held_list(request, membership):
    page = Paginator(held_messages(membership.tenant), 50).get_page(
        request.GET.get("page")
    )
    return render(request, "portal/held_list.html", {"page": page})


@member_required
def held_detail(request, membership, queue_id):
    message = held_messages(membership.tenant).filter(queue_id=queue_id).first()
    if message is None:
        raise Http404("No such held message")
    raw = bytes(message.signed or message.raw)
    return render(
        request,
        "portal/held_detail.html",
        {
            "message": message,
            "recipients": message.recipients.filter(state=Recipient.HELD).order_by(
                "address"
            ),
            "content": raw[:MAX_SHOWN_BYTES].decode("utf-8", "replace"),
            "truncated": len(raw) > MAX_SHOWN_BYTES,
        },
    )
