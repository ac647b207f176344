"""A real llama.cpp server (its own C++ `llama-server`, two slots) with
SmolLM2-135M-Instruct, started once per module by tests/real/llama.py."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.real.llama import LlamaServer, LlamaServerError, llama_server


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Iterator[LlamaServer]:
    try:
        with llama_server(parallel=2, log_dir=tmp_path_factory.mktemp("llama")) as server:
            yield server
    except LlamaServerError as exc:
        pytest.fail(str(exc), pytrace=False)
