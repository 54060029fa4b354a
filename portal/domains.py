"""Domains: adding them, proving ownership, DKIM keys and SPF/DMARC advice."""

from django.conf import settings
from django.contrib import messages
from django.db import IntegrityError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.access import member_required
from portal.forms import DkimKeyForm, DomainForm
from portal.scoping import (
    get_dkim_key_for_member_or_404,
    get_domain_for_member_or_404,
    require_editor,
)
from tenants import audit
from tenants.dkim_keys import (
    KeyNotPublished,
    activate_key,
    check_key_published,
    generate_key,
    record_strings,
    suggest_selector,
)
from tenants.domains import DomainRefused, add_domain, needs_claim_consent
from tenants.guidance import dmarc_advice, return_path_advice, spf_advice
from tenants.verification import check_domain


@member_required
@require_http_methods(["GET", "POST"])
def domain_list(request, membership):
    form = DomainForm(request.POST or None)
    if request.method == "POST":
        require_editor(membership)
        if form.is_valid():
            try:
                domain = add_domain(membership.tenant, form.cleaned_data["name"],
                                    request.user)
            except DomainRefused as refusal:
                form.add_error("name", str(refusal))
            else:
                return redirect("domain_detail", domain.pk)
    return render(request, "portal/domain_list.html", {
        "membership": membership,
        "form": form,
        "domains": membership.tenant.domains.order_by("name"),
    })


def describe_key(key):
    if key.active:
        return "Active: signs your mail"
    if key.retired_at:
        return "Retired: keep published until " + key.keep_published_until.strftime(
            "%Y-%m-%d %H:%M UTC"
        )
    if key.published_at:
        return "Published: ready to become active"
    return "Waiting for DNS"


@member_required
def domain_detail(request, membership, pk):
    domain = get_domain_for_member_or_404(request.user, pk)
    keys = list(domain.dkim_keys.order_by("-created_at"))
    for key in keys:
        key.state_text = describe_key(key)
        key.strings = record_strings(key)
    key_form = DkimKeyForm(
        domain=domain,
        initial={"selector": suggest_selector(domain),
                 "algorithm": settings.DKIM_DEFAULT_ALGORITHM},
    )
    return render(request, "portal/domain_detail.html", {
        "membership": membership,
        "domain": domain,
        "keys": keys,
        "key_form": key_form,
        "needs_consent": needs_claim_consent(domain),
    })


@member_required
@require_POST
def check_now(request, membership, pk):
    domain = get_domain_for_member_or_404(request.user, pk)
    require_editor(membership)
    verified, explanation = check_domain(domain)
    (messages.success if verified else messages.error)(request, explanation)
    return redirect("domain_detail", domain.pk)


@member_required
@require_POST
def delete_domain(request, membership, pk):
    domain = get_domain_for_member_or_404(request.user, pk)
    require_editor(membership)
    domain.delete()
    audit.record("domain_deleted", membership.tenant, request.user, domain.name)
    messages.success(request, f"{domain.name} was removed; Postern no longer "
                     "sends for it.")
    return redirect("domain_list")


@member_required
@require_POST
def new_key(request, membership, pk):
    domain = get_domain_for_member_or_404(request.user, pk)
    require_editor(membership)
    form = DkimKeyForm(request.POST, domain=domain)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect("domain_detail", domain.pk)
    try:
        key = generate_key(domain, form.cleaned_data["algorithm"],
                           form.cleaned_data["selector"], activate=False)
    except IntegrityError:
        messages.error(request, "This domain already has a key with that selector.")
        return redirect("domain_detail", domain.pk)
    audit.record("dkim_key_created", membership.tenant, request.user, key.record_name)
    messages.success(request, f"Key {key.selector} created. Publish its record, "
                     "then press Check DNS.")
    return redirect("domain_detail", domain.pk)


@member_required
@require_POST
def check_key(request, membership, pk, key_pk):
    key = get_dkim_key_for_member_or_404(request.user, pk, key_pk)
    require_editor(membership)
    ok, explanation = check_key_published(key)
    (messages.success if ok else messages.error)(request, explanation)
    return redirect("domain_detail", pk)


@member_required
@require_POST
def activate(request, membership, pk, key_pk):
    key = get_dkim_key_for_member_or_404(request.user, pk, key_pk)
    require_editor(membership)
    try:
        activate_key(key, request.user)
    except KeyNotPublished as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, f"Key {key.selector} now signs your mail.")
    return redirect("domain_detail", pk)


@member_required
@require_POST
def delete_key(request, membership, pk, key_pk):
    key = get_dkim_key_for_member_or_404(request.user, pk, key_pk)
    require_editor(membership)
    if key.active:
        messages.error(request, "The active key cannot be deleted; make another "
                       "key active first.")
        return redirect("domain_detail", pk)
    key.delete()
    audit.record("dkim_key_deleted", membership.tenant, request.user, key.record_name)
    messages.success(request, f"Key {key.selector} deleted; you may remove its "
                     "DNS record.")
    return redirect("domain_detail", pk)


@member_required
def guidance(request, membership, pk):
    domain = get_domain_for_member_or_404(request.user, pk)
    return render(request, "portal/domain_guidance.html", {
        "domain": domain,
        "sections": [
            ("SPF", spf_advice(domain.name)),
            ("DMARC", dmarc_advice(domain.name)),
            ("Return path", return_path_advice(domain.name)),
        ],
    })
