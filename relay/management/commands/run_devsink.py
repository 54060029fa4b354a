import asyncio

from django.core.management.base import BaseCommand

from relay import devsink
from relay.env import parse_hostport


class Command(BaseCommand):
    help = "Run the development sink, an SMTP server that keeps all mail it gets."

    def add_arguments(self, parser):
        parser.add_argument("--listen", default="127.0.0.1:2525")

    def handle(self, *args, listen, **options):
        host, port = parse_hostport("--listen", listen, 25)
        asyncio.run(devsink.serve(host, port))
