from django.apps import AppConfig


class SmtpGatewayConfig(AppConfig):
    name = "smtp_gateway"
    verbose_name = "SMTP gateway"
