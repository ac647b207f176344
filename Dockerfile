FROM python:3.11-slim

# A numeric user and group: with `runAsNonRoot: true` the kubelet can only
# check a numeric user, and deploy/k8s/deployment.yaml pins the same ids.
RUN groupadd --system --gid 10001 turnout \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin turnout \
 && mkdir /data && chown 10001:10001 /data

WORKDIR /app
# Dependencies first, from the project metadata alone: this layer is reused
# until pyproject.toml changes, whatever changes in the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > requirements.txt \
 && pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY gateway ./gateway
COPY adapters ./adapters
COPY turnout ./turnout
RUN pip install --no-cache-dir --no-deps .

USER 10001:10001
WORKDIR /data
EXPOSE 50051 9464
# grpc.health.v1, as the kubelet's probes ask it (add --tls-ca when the gateway serves TLS).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["turnout", "health", "--gateway", "127.0.0.1:50051"]
# SIGTERM drains in-flight streams for `shutdown_grace` (default 10s) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["turnout"]
# In a container the gateway and its metrics listen on every interface, so
# `docker run -p` and a Service reach them; a config file's `listen` is overridden by these.
CMD ["serve", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9464"]
