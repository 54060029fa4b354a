"""The tenant's suppression list: addresses and domains its mail is not sent
to, with why and since when. Viewers see it; owners and admins change it."""

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from portal.access import member_required
from portal.scoping import require_editor
from relay import suppression
from relay.models import Suppression

MAX_IMPORT_LINES = 10000


class SuppressionForm(forms.Form):
    entry = forms.CharField(
        max_length=320,
        label="Address or domain",
        help_text="alice@example.net, or example.net for every address there",
    )
    detail = forms.CharField(max_length=500, required=False, label="Note")

    def clean_entry(self):
        try:
            return suppression.normalise_entry(self.cleaned_data["entry"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc))


class ImportForm(forms.Form):
    entries = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}),
        label="Addresses or domains",
        help_text="One per line; lines starting with # are skipped.",
    )

    def clean_entries(self):
        lines = self.cleaned_data["entries"].splitlines()
        if len(lines) > MAX_IMPORT_LINES:
            raise forms.ValidationError(
                f"At most {MAX_IMPORT_LINES} lines at a time; split the list."
            )
        return lines


def _page(request, membership, add_form=None, import_form=None, status=200):
    entries = Suppression.objects.filter(tenant=membership.tenant)
    query = request.GET.get("q", "").strip().lower()
    if query:
        entries = entries.filter(entry__contains=query)
    return render(
        request,
        "portal/suppression_list.html",
        {
            "membership": membership,
            "page": Paginator(entries, 100).get_page(request.GET.get("page")),
            "query": query,
            "add_form": add_form or SuppressionForm(),
            "import_form": import_form or ImportForm(),
        },
        status=status,
    )


@member_required
def suppression_list(request, membership):
    return _page(request, membership)


@member_required
@require_POST
def add_suppression(request, membership):
    require_editor(membership)
    form = SuppressionForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, add_form=form, status=400)
    _, created = suppression.suppress(
        membership.tenant.pk,
        form.cleaned_data["entry"],
        Suppression.MANUAL,
        form.cleaned_data["detail"],
    )
    entry = form.cleaned_data["entry"]
    if created:
        messages.success(request, f"{entry} is now suppressed.")
    else:
        messages.info(request, f"{entry} was already on the list.")
    return redirect("suppression_list")


@member_required
@require_POST
def import_suppressions(request, membership):
    require_editor(membership)
    form = ImportForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, import_form=form, status=400)
    added, existing, problems = suppression.import_entries(
        membership.tenant.pk, form.cleaned_data["entries"]
    )
    messages.success(request, f"Imported {added} new, {existing} already listed.")
    for number, text, problem in problems[:20]:
        messages.error(request, f"Line {number} ({text}): {problem}")
    if len(problems) > 20:
        messages.error(request, f"{len(problems) - 20} more lines were not valid.")
    return redirect("suppression_list")


@member_required
@require_POST
def remove_suppression(request, membership, pk):
    require_editor(membership)
    entry = Suppression.objects.filter(tenant=membership.tenant, pk=pk).first()
    if entry is None:
        raise Http404("No such entry")
    entry.delete()
    messages.success(request, f"{entry.entry} may be sent to again.")
    return redirect("suppression_list")
