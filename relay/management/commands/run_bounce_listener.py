import asyncio

from django.core.management.base import BaseCommand

from relay.bounce_listener import serve


class Command(BaseCommand):
    help = "Take asynchronous bounces and complaints for the return-path domain."

    def handle(self, *args, **options):
        asyncio.run(serve())
