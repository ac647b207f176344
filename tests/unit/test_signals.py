"""Load-signal parsers on samples of each server's own output."""

import json

import pytest

from gateway.scheduling.signals import (
    LoadReport,
    SignalError,
    llamacpp_cache_tokens,
    llamacpp_metrics,
    llamacpp_slots,
    llamacpp_total_slots,
    ollama_ps,
    vllm_metrics,
)

# llama.cpp tools/server/server.cpp (handle_metrics), as `llama-server --metrics` prints it.
LLAMACPP_METRICS = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 2345
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 23.1
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 120
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 130
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 3
"""

# vLLM v1 (vllm/v1/metrics/loggers.py): gauges labelled by engine and model_name.
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.62
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.2e+06
"""

# Before v0.10 the KV gauge was gpu_cache_usage_perc; two engines sum.
VLLM_OLD_METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.1
"""

# Ollama docs/api.md, "List Running Models" (GET /api/ps).
OLLAMA_PS = """{"models": [{"name": "mistral:latest", "model": "mistral:latest", "size": 5137025024,
  "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
  "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
  "parameter_size": "7.2B", "quantization_level": "Q4_0"},
  "expires_at": "2024-06-04T14:38:31.83753-07:00", "size_vram": 5137025024}]}"""

# llama.cpp /slots (with --slots): one object per slot.
LLAMACPP_SLOTS = '[{"id": 0, "n_ctx": 4096, "is_processing": true}, {"id": 1, "n_ctx": 4096, "is_processing": false}]'


def test_llamacpp_metrics_give_running_and_waiting():
    assert llamacpp_metrics(LLAMACPP_METRICS) == LoadReport(running=2, waiting=3)


def test_vllm_metrics_give_running_waiting_and_kv_usage():
    assert vllm_metrics(VLLM_METRICS) == LoadReport(running=4, waiting=7, kv_usage=0.62)


def test_vllm_metrics_before_v0_10_name_the_kv_gauge_differently():
    assert vllm_metrics(VLLM_OLD_METRICS) == LoadReport(running=1, waiting=0, kv_usage=0.1)


def test_one_servers_metrics_are_not_taken_for_the_others():
    with pytest.raises(SignalError):
        vllm_metrics(LLAMACPP_METRICS)
    with pytest.raises(SignalError):
        llamacpp_metrics(VLLM_METRICS)


def test_text_that_is_not_prometheus_is_a_signal_error():
    with pytest.raises(SignalError):
        llamacpp_metrics("<html>404 page not found</html>\n{")


def test_ollama_ps_lists_loaded_models_and_nothing_about_queues():
    report = ollama_ps(json.loads(OLLAMA_PS))
    assert report.loaded_models == frozenset({"mistral:latest"})
    assert report.busy is None


def test_an_idle_ollama_has_no_models_loaded():
    assert ollama_ps({"models": []}).loaded_models == frozenset()


def test_llamacpp_slots_count_the_busy_ones():
    assert llamacpp_slots(json.loads(LLAMACPP_SLOTS)) == LoadReport(running=1)


def test_llamacpp_props_give_the_total_slots():
    assert llamacpp_total_slots({"total_slots": 4, "model_path": "m.gguf"}) == 4
    assert llamacpp_total_slots({"model_path": "m.gguf"}) is None
    assert llamacpp_total_slots({"total_slots": True}) is None


@pytest.mark.parametrize("data", [{"models": "x"}, [1], "text"])
def test_malformed_json_answers_are_signal_errors(data):
    with pytest.raises(SignalError):
        ollama_ps(data) if isinstance(data, dict) or data == "text" else llamacpp_slots(data)


def test_busy_is_unknown_only_when_nothing_was_reported():
    assert LoadReport().busy is None
    assert LoadReport(running=2).busy == 2
    assert LoadReport(running=1, waiting=4).busy == 5


def test_a_count_that_is_not_finite_is_a_signal_error():
    with pytest.raises(SignalError):
        llamacpp_metrics(LLAMACPP_METRICS.replace("llamacpp:requests_deferred 3", "llamacpp:requests_deferred +Inf"))


def test_llamacpp_props_give_the_prompt_cache_size_of_all_slots():
    props = {"total_slots": 2, "default_generation_settings": {"n_ctx": 4096}}
    assert llamacpp_cache_tokens(props) == 8192
    assert llamacpp_cache_tokens({"total_slots": 2}) is None


def test_vllm_cache_config_info_gives_the_kv_cache_size():
    info = ('# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
            '# TYPE vllm:cache_config_info gauge\n'
            'vllm:cache_config_info{block_size="16",cache_dtype="auto",gpu_memory_utilization="0.9",'
            'num_gpu_blocks="27000",num_cpu_blocks="2048"} 1.0\n')
    assert vllm_metrics(VLLM_METRICS + info).cache_tokens == 432_000
    assert vllm_metrics(VLLM_METRICS).cache_tokens is None
