"""The `tracing:` section and the standard OTEL_* variables it falls back to."""

import pytest

from gateway import config
from gateway.config import TracingConfig


def test_off_by_default():
    assert config.parse("", {}).tracing == TracingConfig(enabled=False)


def test_the_section_with_headers_from_the_environment():
    text = """\
tracing:
  endpoint: http://collector:4318
  protocol: grpc
  sampler_ratio: 0.25
  headers: {X-Api-Key: "${OTLP_TOKEN}"}
  service_name: edge-gateway
  metadata: [tenant]
"""
    t = config.parse(text, {"OTLP_TOKEN": "tok-planted"}).tracing
    assert (t.enabled, t.endpoint, t.protocol, t.sampler_ratio) == (True, "http://collector:4318", "grpc", 0.25)
    assert (t.headers, t.service_name, t.metadata) == ((("x-api-key", "tok-planted"),), "edge-gateway", ("tenant",))
    assert "tok-planted" not in repr(config.parse(text, {"OTLP_TOKEN": "tok-planted"}))


def test_the_standard_variables_turn_it_on_and_fill_what_the_file_leaves_out():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_SERVICE_NAME": "gw-eu"}
    t = config.parse("", env).tracing
    assert (t.enabled, t.endpoint, t.protocol, t.sampler_ratio, t.service_name) == (True, "", "grpc", None, "gw-eu")
    assert config.parse("", {**env, "OTEL_SDK_DISABLED": "true"}).tracing.enabled is False
    assert config.parse("", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}).tracing.enabled


@pytest.mark.parametrize("text, message", [
    ("tracing: {endpoint: 'http://c:4318', headers: {authorization: 'Bearer abc'}}",
     "tracing.headers.authorization (line 1): must be an environment reference"),
    ("tracing: {endpoint: 'http://c:4318', protocol: http/json}", "tracing.protocol (line 1): must be one of"),
    ("tracing: {endpoint: 'collector:4318'}", "tracing.endpoint (line 1): must be an http:// or https:// URL"),
    ("tracing: {endpoint: 'http://c:4318', sampler_ratio: 2}", "tracing.sampler_ratio (line 1): must be between"),
    ("tracing: {endpoint: 'http://c:4318', sample: 1}", "tracing.sample (line 1): unknown key"),
])
def test_errors_name_the_key_and_line(text, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.parse(text, {})
