FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
COPY turnout ./turnout
RUN pip install --no-cache-dir . && useradd --system --no-create-home turnout && mkdir /data && chown turnout /data

USER turnout
WORKDIR /data
EXPOSE 50051 9464
# SIGTERM drains in-flight streams for `shutdown_grace` (default 10s) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["turnout"]
CMD ["serve"]
