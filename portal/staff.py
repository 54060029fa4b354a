"""Staff pages: the vetting queue, decisions, blocked domains, domain claims."""

from django.contrib import messages
from django.db.models import Case, Count, IntegerField, Q, Value, When
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.access import staff_required
from portal.forms import BlockForm, ConsentForm, DecisionForm
from tenants.domains import (
    DomainRefused,
    block_domain,
    consent_to_claim,
    normalize_domain_name,
    unblock_domain,
)
from tenants.models import AuditEntry, BlockedDomain, Domain, Membership, Tenant
from tenants.onboarding import DecisionRefused, decide, decisions_for

WAITING = (Tenant.PENDING, Tenant.NEEDS_INFO)


@staff_required
def tenant_list(request):
    tenants = Tenant.objects.annotate(
        waiting=Case(When(status__in=WAITING, then=Value(0)), default=Value(1),
                     output_field=IntegerField()),
        domain_count=Count("domains", distinct=True),
        verified_count=Count("domains", filter=Q(domains__verified_at__isnull=False),
                             distinct=True),
    ).order_by("waiting", "created_at")
    status = request.GET.get("status", "")
    if status in dict(Tenant.STATUSES):
        tenants = tenants.filter(status=status)
    return render(request, "portal/staff_tenant_list.html", {
        "tenants": tenants, "status": status, "statuses": Tenant.STATUSES,
    })


@staff_required
@require_http_methods(["GET", "POST"])
def tenant_detail(request, pk):
    tenant = get_object_or_404(Tenant, pk=pk)
    form = DecisionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            decide(tenant.pk, form.cleaned_data["decision"], request.user,
                   form.cleaned_data["reason"])
        except DecisionRefused as refusal:
            form.add_error("reason" if "reason" in str(refusal) else "decision",
                           str(refusal))
        else:
            messages.success(request, "Decision recorded.")
            return redirect("staff_tenant", tenant.pk)
    return render(request, "portal/staff_tenant_detail.html", {
        "tenant": tenant,
        "form": form,
        "decisions": decisions_for(tenant),
        "domains": tenant.domains.order_by("name"),
        "members": Membership.objects.filter(tenant=tenant).select_related("user"),
        "entries": AuditEntry.objects.filter(tenant=tenant).select_related("actor"),
    })


@staff_required
@require_http_methods(["GET", "POST"])
def domain_controls(request):
    form = BlockForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            name = normalize_domain_name(form.cleaned_data["name"])
        except DomainRefused as refusal:
            form.add_error("name", str(refusal))
        else:
            block_domain(name, request.user, form.cleaned_data["reason"])
            messages.success(request, f"{name} and its subdomains are blocked.")
            return redirect("staff_domains")
    verified_names = Domain.objects.filter(verified_at__isnull=False).values("name")
    claims = Domain.objects.filter(
        verified_at__isnull=True,
        claim_approved_at__isnull=True,
        name__in=verified_names,
    ).select_related("tenant")
    return render(request, "portal/staff_domains.html", {
        "form": form,
        "blocks": BlockedDomain.objects.order_by("name"),
        "claims": claims,
        "consent_form": ConsentForm(),
        "entries": AuditEntry.objects.filter(action__startswith="domain_")
        .select_related("actor", "tenant")[:50],
    })


@staff_required
@require_POST
def unblock(request, pk):
    block = get_object_or_404(BlockedDomain, pk=pk)
    unblock_domain(block, request.user)
    messages.success(request, f"{block.name} is no longer blocked.")
    return redirect("staff_domains")


@staff_required
@require_POST
def consent(request, pk):
    domain = get_object_or_404(Domain, pk=pk)
    form = ConsentForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the reason for consenting.")
    else:
        consent_to_claim(domain, request.user, form.cleaned_data["reason"])
        messages.success(request, f"{domain.tenant.name} may now verify {domain.name}.")
    return redirect("staff_domains")
