import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relay.settings")

app = Celery("postern")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
def drop_broken_database_connections(task=None, **kwargs):
    # Workers keep their database connection from task to task (see
    # CELERY_DB_REUSE_MAX); one broken by a database restart is dropped here so
    # that the next query opens a fresh one instead of failing. A task run
    # eagerly shares its caller's connection, and maybe its transaction.
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


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
