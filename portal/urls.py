from django.contrib.auth import views as auth_views
from django.urls import path

from portal import account, credentials, domains, staff, team, views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.message_list, name="message_list"),
    path("messages/<str:queue_id>/", views.message_detail, name="message_detail"),
    path("dev/sink/", views.dev_sink, name="dev_sink"),
    # Onboarding: the tenant's side.
    path("signup/", account.signup, name="signup"),
    path("account/", account.account, name="account"),
    path("team/", team.team, name="team"),
    path("team/<int:pk>/role/", team.change_role, name="change_role"),
    path("team/<int:pk>/remove/", team.remove_member, name="remove_member"),
    path("team/invitations/<int:pk>/revoke/", team.revoke_invitation,
         name="revoke_invitation"),
    path("invitations/<str:token>/", team.accept, name="accept_invitation"),
    path("domains/", domains.domain_list, name="domain_list"),
    path("domains/<int:pk>/", domains.domain_detail, name="domain_detail"),
    path("domains/<int:pk>/check/", domains.check_now, name="domain_check"),
    path("domains/<int:pk>/delete/", domains.delete_domain, name="domain_delete"),
    path("domains/<int:pk>/guidance/", domains.guidance, name="domain_guidance"),
    path("domains/<int:pk>/keys/", domains.new_key, name="dkim_key_new"),
    path("domains/<int:pk>/keys/<int:key_pk>/check/", domains.check_key,
         name="dkim_key_check"),
    path("domains/<int:pk>/keys/<int:key_pk>/activate/", domains.activate,
         name="dkim_key_activate"),
    path("domains/<int:pk>/keys/<int:key_pk>/delete/", domains.delete_key,
         name="dkim_key_delete"),
    path("credentials/", credentials.credential_list, name="credential_list"),
    path("credentials/new/", credentials.new_credential, name="credential_new"),
    path("credentials/<int:pk>/", credentials.credential_detail,
         name="credential_detail"),
    path("credentials/<int:pk>/rotate/", credentials.rotate, name="credential_rotate"),
    path("credentials/<int:pk>/enabled/", credentials.set_enabled,
         name="credential_enabled"),
    path("credentials/<int:pk>/delete/", credentials.delete_credential,
         name="credential_delete"),
    # Onboarding: the staff side.
    path("staff/tenants/", staff.tenant_list, name="staff_tenants"),
    path("staff/tenants/<int:pk>/", staff.tenant_detail, name="staff_tenant"),
    path("staff/domains/", staff.domain_controls, name="staff_domains"),
    path("staff/domains/blocks/<int:pk>/remove/", staff.unblock, name="staff_unblock"),
    path("staff/domains/<int:pk>/consent/", staff.consent, name="staff_consent"),
]
