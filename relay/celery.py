import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay.settings")

app = Celery("postern")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def schedule_sweeper(sender, **kwargs):
    from django.conf import settings

    sender.add_periodic_task(
        settings.POSTERN_SWEEP_INTERVAL, sender.signature("relay.tasks.sweep")
    )


@app.on_after_finalize.connect
def schedule_domain_reverification(sender, **kwargs):
    from django.conf import settings

    sender.add_periodic_task(
        settings.DOMAIN_REVERIFY_INTERVAL,
        sender.signature("tenants.tasks.reverify_domains"),
    )
