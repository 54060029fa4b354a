"""Business sign-up, the tenant's application and its status."""

from django.contrib import messages
from django.contrib.auth import login
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from portal.access import member_required
from portal.forms import ApplicationForm, SignUpForm
from portal.scoping import require_editor
from tenants.models import Tenant
from tenants.onboarding import resubmit_application, sign_up


@require_http_methods(["GET", "POST"])
def signup(request):
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        _, owner = sign_up(
            form.business(),
            form.cleaned_data["username"],
            form.cleaned_data["contact_email"],
            form.cleaned_data["password"],
        )
        login(request, owner, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Application received. Staff will review it.")
        return redirect("account")
    return render(request, "portal/signup.html", {"form": form})


EDITABLE_STATUSES = (Tenant.PENDING, Tenant.NEEDS_INFO)


@member_required
@require_http_methods(["GET", "POST"])
def account(request, membership):
    tenant = membership.tenant
    editable = tenant.status in EDITABLE_STATUSES and membership.may_edit
    form = ApplicationForm(request.POST or None, instance=tenant)
    if request.method == "POST":
        require_editor(membership)
        if not editable:
            messages.error(request, "The application can no longer be changed.")
            return redirect("account")
        if form.is_valid():
            business = {name: form.cleaned_data[name] for name in form.Meta.fields}
            resubmit_application(Tenant.objects.get(pk=tenant.pk), business,
                                 request.user)
            messages.success(request, "Application updated.")
            return redirect("account")
    return render(request, "portal/account.html", {
        "tenant": tenant, "membership": membership, "form": form,
        "editable": editable,
        "domains": tenant.domains.order_by("name"),
    })
