FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml ./
COPY relay relay
COPY tenants tenants
COPY policies policies
COPY portal portal
COPY smtp_gateway smtp_gateway
COPY templates templates
COPY manage.py ./
RUN pip install --no-cache-dir . gunicorn==23.0.0
RUN useradd --system postern && mkdir -p /app/var && chown postern /app/var
USER postern
