"""Who may open which page: members of a tenant, and staff."""

import functools

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render

from portal.scoping import membership_of


def member_required(view):
    """Log in first; then the view gets the user's membership as its second
    argument. Staff without a membership are sent to the staff pages."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        membership = membership_of(request.user)
        if membership is None:
            if request.user.is_staff:
                return redirect("staff_tenants")
            return render(request, "portal/no_tenant.html", status=404)
        return view(request, membership, *args, **kwargs)

    return wrapper


def staff_required(view):
    """Staff pages answer 404 to everyone else, so that they do not even
    confirm that they exist."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            raise Http404("No such page")
        return view(request, *args, **kwargs)

    return wrapper
