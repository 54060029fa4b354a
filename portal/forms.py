"""Forms of the tenant and staff pages. Each error names the field and the one
thing wrong with it."""

import re

from django import forms
from django.contrib.auth import get_user_model, password_validation

from tenants.credentials import parse_networks
from tenants.dkim_keys import SELECTOR
from tenants.models import Credential, DkimKey, Membership, Tenant
from tenants.onboarding import DECISION_LABELS

APPLICATION_FIELDS = [
    "name", "website", "country", "registration_number", "contact_name",
    "contact_email", "contact_phone", "applications", "expected_monthly_volume",
]


class ApplicationForm(forms.ModelForm):
    website = forms.URLField(max_length=200, assume_scheme="https")
    # Longer than a code, so that "Germany" gets the helpful error below
    # rather than a bare length complaint.
    country = forms.CharField(max_length=60, label="Country (two-letter code, e.g. DE)")

    class Meta:
        model = Tenant
        fields = APPLICATION_FIELDS
        labels = {
            "name": "Legal name of the business",
            "country": "Country (two-letter code, e.g. DE)",
            "registration_number": "Company registration number",
            "applications": "Applications that will send mail",
            "expected_monthly_volume": "Expected messages per month",
        }
        help_texts = {"applications": "One per line, e.g. CRM, HR system, billing."}
        widgets = {"applications": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("name", "website", "country", "registration_number",
                     "contact_name", "contact_email", "applications",
                     "expected_monthly_volume"):
            self.fields[name].required = True

    def clean_country(self):
        country = self.cleaned_data["country"].strip().upper()
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise forms.ValidationError("Enter the two-letter ISO 3166 code, e.g. DE.")
        return country


class SignUpForm(ApplicationForm):
    username = forms.CharField(max_length=150, label="Your username")
    password = forms.CharField(widget=forms.PasswordInput, label="Password")
    password_again = forms.CharField(widget=forms.PasswordInput, label="Password again")

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        if get_user_model().objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("This username is taken.")
        return username

    def clean(self):
        cleaned = super().clean()
        password = cleaned.get("password")
        if password and password != cleaned.get("password_again"):
            self.add_error("password_again", "The two passwords differ.")
        elif password:
            try:
                password_validation.validate_password(password)
            except forms.ValidationError as error:
                self.add_error("password", error)
        return cleaned

    def business(self):
        return {name: self.cleaned_data[name] for name in APPLICATION_FIELDS}


class NewAccountForm(forms.Form):
    """For someone accepting an invitation without an account yet."""

    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput)

    clean_username = SignUpForm.clean_username

    def clean_password(self):
        password = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class InvitationForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Membership.ROLES, initial=Membership.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.ROLES)


class DomainForm(forms.Form):
    name = forms.CharField(max_length=253, label="Domain")


class DkimKeyForm(forms.Form):
    selector = forms.CharField(max_length=63)
    algorithm = forms.ChoiceField(choices=DkimKey.ALGORITHMS, initial=DkimKey.RSA)

    def __init__(self, *args, domain, **kwargs):
        super().__init__(*args, **kwargs)
        self.domain = domain

    def clean_selector(self):
        selector = self.cleaned_data["selector"].strip().lower()
        if not SELECTOR.match(selector):
            raise forms.ValidationError(
                "Use letters, digits and hyphens, like pst202612 (RFC 6376 3.1)."
            )
        if self.domain.dkim_keys.filter(selector=selector).exists():
            raise forms.ValidationError("This domain already has a key with it.")
        return selector


# A local part of letters, digits and the usual punctuation, where * stands
# for any run of characters.
IDENTITY = re.compile(r"^[A-Za-z0-9.!#$%&'+/=?^_`{|}~*-]+@([a-z0-9.-]+)$")


class CredentialForm(forms.ModelForm):
    class Meta:
        model = Credential
        fields = [
            "name", "allowed_identities", "allowed_networks", "max_message_size",
            "max_recipients", "messages_per_minute", "messages_per_hour",
            "messages_per_day", "bytes_per_hour", "bytes_per_day", "expires_at",
            "development_mode", "tags", "notes", "owner_contact",
        ]
        labels = {
            "name": "Application name",
            "allowed_identities": "Sender identities it may use",
            "allowed_networks": "Source addresses it may connect from",
            "max_message_size": "Largest message, bytes",
            "expires_at": "Expires at (UTC)",
            "development_mode": "Development mode: hold mail for viewing, deliver none",
        }
        help_texts = {
            "allowed_identities": "One per line, e.g. billing@shop.example.com or "
            "*@shop.example.com. Subdomains must be listed on their own. Empty: any "
            "address at your verified domains. Applies to the envelope sender, "
            "From, Sender and Reply-To.",
            "allowed_networks": "One IP address or CIDR per line, e.g. 192.0.2.0/24. "
            "Empty: any address.",
            "tags": "Comma-separated.",
        }
        widgets = {
            "allowed_identities": forms.Textarea(attrs={"rows": 3}),
            "allowed_networks": forms.Textarea(attrs={"rows": 3}),
            "notes": forms.Textarea(attrs={"rows": 2}),
            "expires_at": forms.DateTimeInput(
                attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
            ),
        }

    def __init__(self, *args, tenant, **kwargs):
        super().__init__(*args, **kwargs)
        self.tenant = tenant

    def clean_allowed_identities(self):
        domains = set(self.tenant.domains.values_list("name", flat=True))
        lines = []
        for line in self.cleaned_data["allowed_identities"].splitlines():
            line = line.strip()
            if not line:
                continue
            match = IDENTITY.match(line.lower())
            if not match:
                raise forms.ValidationError(
                    f"{line!r} is not an address pattern like *@example.com."
                )
            if match.group(1) not in domains:
                raise forms.ValidationError(
                    f"{match.group(1)} in {line!r} is not one of your domains; "
                    "add it under Domains first."
                )
            lines.append(line.lower())
        return "\n".join(lines)

    def clean_allowed_networks(self):
        text = self.cleaned_data["allowed_networks"]
        try:
            networks = parse_networks(text)
        except ValueError as error:
            raise forms.ValidationError(str(error))
        return "\n".join(str(n) for n in networks)


class RotationForm(forms.Form):
    overlap_hours = forms.IntegerField(
        min_value=0, max_value=720, initial=24,
        label="Hours the old secret keeps working",
    )


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=list(DECISION_LABELS.items()))
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


class BlockForm(forms.Form):
    name = forms.CharField(max_length=253, label="Domain")
    reason = forms.CharField(max_length=1000)


class ConsentForm(forms.Form):
    reason = forms.CharField(max_length=1000, label="Why the claim is consented")
