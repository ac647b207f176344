"""OLLAMA_HOST means what it means to `ollama`: every case of Ollama's own
TestHost (envconfig/config_test.go), plus the dialable form turnout uses."""

import pytest

from gateway import config
from gateway.config.ollama_host import ollama_base_url, ollama_host

OLLAMA_TEST_HOST = {
    "empty": ("", "http://127.0.0.1:11434"),
    "only address": ("1.2.3.4", "http://1.2.3.4:11434"),
    "only port": (":1234", "http://:1234"),
    "address and port": ("1.2.3.4:1234", "http://1.2.3.4:1234"),
    "hostname": ("example.com", "http://example.com:11434"),
    "hostname and port": ("example.com:1234", "http://example.com:1234"),
    "zero port": (":0", "http://:0"),
    "too large port": (":66000", "http://:11434"),
    "too small port": (":-1", "http://:11434"),
    "ipv6 localhost": ("[::1]", "http://[::1]:11434"),
    "ipv6 world open": ("[::]", "http://[::]:11434"),
    "ipv6 no brackets": ("::1", "http://[::1]:11434"),
    "ipv6 + port": ("[::1]:1337", "http://[::1]:1337"),
    "extra space": (" 1.2.3.4 ", "http://1.2.3.4:11434"),
    "extra quotes": ('"1.2.3.4"', "http://1.2.3.4:11434"),
    "extra space+quotes": (' " 1.2.3.4 " ', "http://1.2.3.4:11434"),
    "extra single quotes": ("'1.2.3.4'", "http://1.2.3.4:11434"),
    "http": ("http://1.2.3.4", "http://1.2.3.4:80"),
    "http port": ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
    "https": ("https://1.2.3.4", "https://1.2.3.4:443"),
    "https port": ("https://1.2.3.4:4321", "https://1.2.3.4:4321"),
    "proxy path": ("https://example.com/ollama", "https://example.com:443/ollama"),
    "ollama.com": ("ollama.com", "https://ollama.com:443"),
    "all interfaces": ("0.0.0.0", "http://0.0.0.0:11434"),
    "trailing slash": ("http://h:8080/", "http://h:8080"),
}


@pytest.mark.parametrize("value, expected", OLLAMA_TEST_HOST.values(), ids=OLLAMA_TEST_HOST.keys())
def test_ollama_host_matches_ollamas_own_table(value, expected):
    assert ollama_host(value) == expected


def test_an_empty_host_is_dialled_on_the_local_system():
    assert ollama_base_url(":11434") == "http://127.0.0.1:11434"
    assert ollama_base_url("0.0.0.0") == "http://0.0.0.0:11434"
    assert ollama_base_url("https://example.com/ollama") == "https://example.com:443/ollama"


def test_the_embedded_default_reads_ollama_host_as_ollama_does():
    # Before: OLLAMA_HOST=0.0.0.0 became http://0.0.0.0, port 80.
    assert config.embedded_default({"OLLAMA_HOST": "0.0.0.0"}).backends[0].url == "http://0.0.0.0:11434"
    assert config.embedded_default({"OLLAMA_HOST": ":11500"}).backends[0].url == "http://127.0.0.1:11500"
