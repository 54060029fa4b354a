from django.contrib.auth import views as auth_views
from django.urls import path

from portal import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.message_list, name="message_list"),
    path("messages/<str:queue_id>/", views.message_detail, name="message_detail"),
    path("dev/sink/", views.dev_sink, name="dev_sink"),
]
