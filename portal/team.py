"""Users of a tenant, their roles, and invitations."""

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from portal.access import member_required
from portal.forms import InvitationForm, NewAccountForm, RoleForm
from portal.scoping import (
    get_invitation_for_member_or_404,
    get_teammate_for_member_or_404,
    require_editor,
    require_owner,
)
from tenants import audit
from tenants.models import Membership
from tenants.onboarding import accept_invitation, invite, open_invitation


@member_required
@require_http_methods(["GET", "POST"])
def team(request, membership):
    tenant = membership.tenant
    form = InvitationForm(request.POST or None)
    link = None
    if request.method == "POST":
        require_editor(membership)
        if form.is_valid():
            role = form.cleaned_data["role"]
            if role == Membership.OWNER and membership.role != Membership.OWNER:
                form.add_error("role", "Only an owner may invite another owner.")
            else:
                _, token = invite(tenant, form.cleaned_data["email"], role,
                                  request.user)
                link = request.build_absolute_uri(
                    reverse("accept_invitation", args=[token])
                )
                form = InvitationForm()
    return render(request, "portal/team.html", {
        "membership": membership,
        "members": Membership.objects.filter(tenant=tenant).select_related("user")
        .order_by("user__username"),
        "invitations": tenant.invitations.filter(accepted_at__isnull=True)
        .order_by("-created_at"),
        "form": form,
        "link": link,
        "roles": Membership.ROLES,
    })


def owners_left_without(teammate):
    return (
        Membership.objects.filter(tenant=teammate.tenant, role=Membership.OWNER)
        .exclude(pk=teammate.pk)
        .count()
    )


@member_required
@require_POST
def change_role(request, membership, pk):
    teammate = get_teammate_for_member_or_404(request.user, pk)
    require_owner(membership)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose owner, admin or viewer.")
    elif teammate.role == Membership.OWNER and not owners_left_without(teammate):
        messages.error(request, "A tenant needs at least one owner.")
    else:
        teammate.role = form.cleaned_data["role"]
        teammate.save(update_fields=["role"])
        audit.record("role_changed", membership.tenant, request.user,
                     subject=f"{teammate.user.username} to {teammate.role}")
        messages.success(request, f"{teammate.user.username} is now {teammate.role}.")
    return redirect("team")


@member_required
@require_POST
def remove_member(request, membership, pk):
    teammate = get_teammate_for_member_or_404(request.user, pk)
    require_owner(membership)
    if teammate.role == Membership.OWNER and not owners_left_without(teammate):
        messages.error(request, "A tenant needs at least one owner.")
        return redirect("team")
    teammate.delete()
    audit.record("member_removed", membership.tenant, request.user,
                 subject=teammate.user.username)
    messages.success(request, f"{teammate.user.username} was removed.")
    return redirect("team")


@member_required
@require_POST
def revoke_invitation(request, membership, pk):
    invitation = get_invitation_for_member_or_404(request.user, pk)
    require_editor(membership)
    invitation.delete()
    audit.record("invitation_revoked", membership.tenant, request.user,
                 subject=invitation.email)
    messages.success(request, f"The invitation for {invitation.email} was revoked.")
    return redirect("team")


@require_http_methods(["GET", "POST"])
def accept(request, token):
    invitation = open_invitation(token)
    if invitation is None:
        raise Http404("This invitation link is not valid, was used, or has expired.")
    form = NewAccountForm(request.POST or None)
    if request.method == "POST":
        user = request.user if request.user.is_authenticated else None
        if user is None and form.is_valid():
            user = get_user_model().objects.create_user(
                form.cleaned_data["username"], invitation.email,
                form.cleaned_data["password"],
            )
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        if user is not None:
            if accept_invitation(invitation, user) is None:
                raise Http404("This invitation link was used a moment ago.")
            messages.success(request, f"You joined {invitation.tenant.name}.")
            return redirect("account")
    return render(request, "portal/accept_invitation.html",
                  {"invitation": invitation, "form": form})
