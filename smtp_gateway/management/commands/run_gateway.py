import asyncio

from django.core.management.base import BaseCommand

from smtp_gateway.server import serve


class Command(BaseCommand):
    help = "Run the SMTP submission gateway until SIGTERM."

    def handle(self, *args, **options):
        asyncio.run(serve())
