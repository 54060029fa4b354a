from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import render

from portal.access import staff_required
from portal.scoping import get_message_for_user_or_404, messages_visible_to
from relay import devsink
from relay.models import Recipient


@login_required
def message_list(request):
    messages = (
        messages_visible_to(request.user)
        .select_related("tenant")
        .order_by("-created_at")
    )
    query = request.GET.get("q", "").strip()
    if query:
        messages = messages.filter(
            Q(queue_id__iexact=query)
            | Q(subject__icontains=query)
            | Q(header_from__icontains=query)
            | Q(
                pk__in=Recipient.objects.filter(address__icontains=query).values(
                    "message_id"
                )
            )
        )
    page = Paginator(messages, 50).get_page(request.GET.get("page"))
    return render(request, "portal/message_list.html", {"page": page, "query": query})


@login_required
def message_detail(request, queue_id):
    message = get_message_for_user_or_404(request.user, queue_id)
    recipients = message.recipients.prefetch_related("attempts_made").order_by(
        "address"
    )
    return render(
        request,
        "portal/message_detail.html",
        {"message": message, "recipients": recipients, "events": message.events.all()},
    )


@staff_required
def dev_sink(request):
    if not settings.DEV_SINK_ENABLED:
        raise Http404("The development sink is not enabled")
    return render(request, "portal/dev_sink.html", {"mails": devsink.recent(100)})


@staff_required
def dev_sink_mail(request, name):
    if not settings.DEV_SINK_ENABLED:
        raise Http404("The development sink is not enabled")
    raw = devsink.raw_mail(name)
    if raw is None:
        raise Http404("No such mail in the development sink")
    return render(request, "portal/dev_sink_mail.html", {"name": name, "raw": raw})
