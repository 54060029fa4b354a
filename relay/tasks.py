"""Celery tasks: thin wrappers that take ids; the work is in relay.pipeline
and relay.delivery."""

from celery import shared_task

from relay import delivery, pipeline, sweeper, webhooks


@shared_task(name="relay.tasks.process_message")
def process_message(message_id):
    pipeline.process_message(message_id)


@shared_task(name="relay.tasks.deliver")
def deliver(message_id, domain):
    delivery.deliver_to_domain(message_id, domain)


@shared_task(name="relay.tasks.sweep")
def sweep():
    sweeper.sweep()


@shared_task(name="relay.tasks.post_webhook")
def post_webhook(post_id):
    webhooks.post(post_id)
