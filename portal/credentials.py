"""SMTP credentials, one per application. The secret is shown once, on the
page that answers the request that created or rotated it."""

from datetime import timedelta

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.access import member_required
from portal.forms import CredentialForm, RotationForm
from portal.scoping import get_credential_for_member_or_404, require_editor
from tenants import audit
from tenants.credentials import issue_credential, rotate_secret


@member_required
def credential_list(request, membership):
    return render(request, "portal/credential_list.html", {
        "membership": membership,
        "credentials": membership.tenant.credentials.order_by("name"),
    })


def show_secret(request, credential, secret, what):
    return render(request, "portal/credential_secret.html",
                  {"credential": credential, "secret": secret, "what": what})


@member_required
@require_http_methods(["GET", "POST"])
def new_credential(request, membership):
    require_editor(membership)
    form = CredentialForm(request.POST or None, tenant=membership.tenant)
    if request.method == "POST" and form.is_valid():
        options = {k: v for k, v in form.cleaned_data.items() if k != "name"}
        credential, secret = issue_credential(
            membership.tenant, form.cleaned_data["name"], **options
        )
        audit.record("credential_created", membership.tenant, request.user,
                     subject=credential.username)
        return show_secret(request, credential, secret, "created")
    return render(request, "portal/credential_form.html", {"form": form})


@member_required
@require_http_methods(["GET", "POST"])
def credential_detail(request, membership, pk):
    credential = get_credential_for_member_or_404(request.user, pk)
    form = CredentialForm(request.POST or None, instance=credential,
                          tenant=membership.tenant)
    if request.method == "POST":
        require_editor(membership)
        if form.is_valid():
            form.save()
            audit.record("credential_changed", membership.tenant, request.user,
                         subject=credential.username)
            messages.success(request, "Saved.")
            return redirect("credential_detail", credential.pk)
    return render(request, "portal/credential_detail.html", {
        "membership": membership,
        "credential": credential,
        "form": form,
        "rotation_form": RotationForm(),
    })


@member_required
@require_POST
def rotate(request, membership, pk):
    credential = get_credential_for_member_or_404(request.user, pk)
    require_editor(membership)
    form = RotationForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the overlap in hours, from 0 to 720.")
        return redirect("credential_detail", credential.pk)
    overlap = timedelta(hours=form.cleaned_data["overlap_hours"])
    secret = rotate_secret(credential, overlap)
    audit.record("credential_rotated", membership.tenant, request.user,
                 subject=credential.username,
                 reason=f"old secret valid for {overlap}")
    return show_secret(request, credential, secret, "rotated")


@member_required
@require_POST
def set_enabled(request, membership, pk):
    credential = get_credential_for_member_or_404(request.user, pk)
    require_editor(membership)
    credential.enabled = request.POST.get("enabled") == "1"
    credential.save(update_fields=["enabled"])
    action = "credential_enabled" if credential.enabled else "credential_disabled"
    audit.record(action, membership.tenant, request.user, subject=credential.username)
    messages.success(request, f"{credential.name} is now "
                     f"{'enabled' if credential.enabled else 'disabled'}.")
    return redirect("credential_detail", credential.pk)


@member_required
@require_POST
def delete_credential(request, membership, pk):
    credential = get_credential_for_member_or_404(request.user, pk)
    require_editor(membership)
    credential.delete()
    audit.record("credential_deleted", membership.tenant, request.user,
                 subject=credential.username)
    messages.success(
        request, f"{credential.name} was deleted; it can no longer log in."
    )
    return redirect("credential_list")
