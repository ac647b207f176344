"""Config parsing: typed values, interpolation, errors that name key and line."""

import pytest

from gateway import config
from gateway.domain import BackendKind

SKETCH = """\
listen: 127.0.0.1:50051
sessions: {store: sqlite, path: ./.turnout/sessions.db, ttl: 24h, max_turns: 50}
backends:
  - {name: gpu-a, kind: ollama, url: http://10.0.0.5:11434, weight: 3}
  - {name: cloud, kind: openai, url: https://api.example.com/v1, api_key: "${CLOUD_KEY}", priority: 1}
routes:
  - name: chat
    strategy: weighted_round_robin
    targets: [{backend: gpu-a, model: llama3:8b}, {backend: cloud, model: gpt-4o-mini}]
rules:
  - {when: {task: coding}, route: chat}
"""


def test_the_spec_sketch_loads_into_typed_values():
    c = config.parse(SKETCH, {"CLOUD_KEY": "sk-1"})
    assert c.sessions.ttl == 86400 and c.sessions.max_turns == 50
    gpu, cloud = c.backends
    assert (gpu.kind, gpu.weight, cloud.kind, cloud.priority, cloud.api_key) == (
        BackendKind.OLLAMA, 3, BackendKind.OPENAI, 1, "sk-1")
    assert [(t.backend, t.weight, t.priority) for t in c.routes[0].targets] == [("gpu-a", 3, 0), ("cloud", 1, 1)]


def test_the_api_key_never_appears_in_repr():
    c = config.parse(SKETCH, {"CLOUD_KEY": "sk-planted"})
    assert "sk-planted" not in repr(c)


def test_empty_file_gives_defaults():
    assert config.parse("", {}) == config.Config()


@pytest.mark.parametrize("text, message", [
    ("listen: [1]", "listen (line 1): must be str"),
    ("shutdown_grace: soon", "shutdown_grace (line 1): must be a duration"),
    ("backends:\n  - {name: a, kind: vllm, url: http://x}", "backends[0].kind (line 2): must be one of ollama, openai"),
    ("backends:\n  - {name: a, kind: ollama}", "backends[0].url (line 2): is required"),
    ("backends:\n  - {name: a, kind: openai, url: http://x, max_tokens_field: n}", "backends[0].max_tokens_field (line 2): must be one of"),
    ("backends:\n  - {name: a, kind: ollama, url: http://x, max_tokens_field: max_tokens}", "applies only to kind: openai"),
    ("backends:\n  - {name: a, kind: ollama, url: http://x, send_reasoning: true}", "backends[0].send_reasoning (line 2): applies only"),
    ("backends:\n  - {name: a, kind: openai, url: http://x, send_reasoning: yes please}", "backends[0].send_reasoning (line 2): must be bool"),
    ("backends:\n  - {name: a, kind: ollama, url: ftp://x}", "backends[0].url (line 2): must be an http"),
    ("backends:\n  - {name: a, kind: ollama, url: http://x, weight: 0}", "backends[0].weight (line 2): must be greater than 0"),
    ("health_check: {unhealthy_interval: 0s}", "health_check.unhealthy_interval (line 1): must be greater than 0"),
    ("backends:\n  - {name: a, kind: openai, url: http://x, api_key: sk-literal}", "backends[0].api_key (line 2): must be an environment reference"),
    ("backends:\n  - {name: a, kind: openai, url: http://x, api_key: '${MISSING}'}", "environment variable MISSING is not set"),
    ("backends:\n  - {name: a, kind: ollama, url: http://x}\n  - {name: a, kind: ollama, url: http://y}", "backends[1].name (line 3): duplicate name 'a'"),
    ("routes:\n  - {name: r, strategy: random, targets: []}", "routes[0].strategy (line 2): must be one of weighted_round_robin"),
    ("routes:\n  - {name: r, targets: []}", "routes[0].targets (line 2): a route needs at least one target"),
    ("rules:\n  - {when: {match: '('}, route: r}", "rules[0].when.match (line 2): is not a valid regular expression"),
    ("default_route: nope", "default_route (line 1): names no route"),
    ("sessions: {store: postgres}", "sessions.store (line 1): must be one of memory, sqlite, redis"),
    ("sessions: {store: redis, redis_url: 'redis://host:port'}", "sessions.redis_url (line 1): is not a Redis URL"),
    ("scheduler:\n  store: redis\n  redis_url: http://x", "scheduler.redis_url (line 3): is not a Redis URL"),
    ("a: 1\na: 2", "a (line 2): duplicate key"),
    ("colour: blue", "colour (line 1): unknown key"),
])
def test_errors_name_the_key_and_line(text, message):
    with pytest.raises(config.ConfigError) as error:
        config.parse(text, {})
    assert message in str(error.value)


def test_interpolation_with_default_and_api_key_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("sk-from-file\n")
    c = config.parse(
        f"listen: '${{HOST:-127.0.0.1}}:7000'\n"
        f"backends:\n  - {{name: c, kind: openai, url: http://x/v1, api_key_file: '{key}'}}\n",
        {},
    )
    assert c.listen == "127.0.0.1:7000" and c.backends[0].api_key == "sk-from-file"


def test_embedded_default_is_ollama_then_openai_fallback():
    alone = config.embedded_default({})
    assert [(b.name, b.url) for b in alone.backends] == [("ollama", "http://127.0.0.1:11434")]
    both = config.embedded_default({"OLLAMA_HOST": "10.1.1.1:11434", "OPENAI_API_KEY": "k"})
    assert [(b.name, b.url, b.priority) for b in both.backends] == [
        ("ollama", "http://10.1.1.1:11434", 0), ("openai", "https://api.openai.com/v1", 1)]


def test_redact_url_hides_user_and_password():
    assert config.redact_url("https://u:p@h.example:8443/v1") == "https://***@h.example:8443/v1"
    assert config.redact_url("http://h:1/v1") == "http://h:1/v1"


def test_route_and_target_options_are_json_mappings():
    text = SKETCH.replace("strategy: weighted_round_robin", "strategy: weighted_round_robin\n    options: {num_ctx: 8192}")
    text = text.replace("{backend: gpu-a, model: llama3:8b}", "{backend: gpu-a, model: llama3:8b, options: {top_k: 20}}")
    route = config.parse(text, {"CLOUD_KEY": "k"}).routes[0]
    assert route.options == {"num_ctx": 8192} and route.targets[0].options == {"top_k": 20}
    with pytest.raises(config.ConfigError, match=r"routes\[0\]\.options \(line \d+\): must be a mapping"):
        config.parse(SKETCH.replace("strategy: weighted_round_robin", "options: [1]"), {"CLOUD_KEY": "k"})
    with pytest.raises(config.ConfigError, match=r"routes\[0\]\.options \(line \d+\): must hold JSON values"):
        config.parse(SKETCH.replace("strategy: weighted_round_robin", "options: {day: 2024-01-01}"), {"CLOUD_KEY": "k"})
