"""ModelService: listings, and pull/delete on Ollama backends."""

import grpc

from tests.e2e.conftest import backends_yaml, serve
from tests.e2e.helpers import failure
from tests.fakes import FakeOpenAI
from turnout.v1 import model_pb2


async def test_list_models_merges_backends(ollama, openai):
    async with serve(backends_yaml(ollama, openai)) as c:
        response = await c.models.ListModels(model_pb2.ListModelsRequest())
    by_name = {m.name: m for m in response.models}
    assert list(by_name) == ["gpt-4o-mini", "llama3.2:1b"]
    llama = by_name["llama3.2:1b"]
    assert (list(llama.backends), llama.family, llama.healthy) == (["local"], "llama", True)
    assert llama.HasField("size_bytes") and not by_name["gpt-4o-mini"].HasField("size_bytes")


async def test_list_backends_shows_state_and_redacts_credentials(ollama):
    async with FakeOpenAI() as openai:
        url = openai.url.replace("http://", "http://user:hunter2@")
        yaml = backends_yaml(ollama) + f"  - {{name: cloud, kind: openai, url: '{url}', weight: 2, priority: 1}}\n"
        async with serve(yaml) as c:
            response = await c.models.ListBackends(model_pb2.ListBackendsRequest())
    local, cloud = response.backends
    assert (local.name, local.kind, local.state) == ("local", model_pb2.BACKEND_KIND_OLLAMA, model_pb2.BACKEND_STATE_HEALTHY)
    assert list(local.models) == ["llama3.2:1b"]
    assert (cloud.weight, cloud.priority) == (2, 1)
    assert "hunter2" not in cloud.endpoint and cloud.endpoint.startswith("http://***@127.0.0.1:")


async def test_pull_streams_progress_and_the_model_becomes_routable(ollama):
    async with serve(backends_yaml(ollama)) as c:
        progress = [p async for p in c.models.PullModel(model_pb2.PullModelRequest(backend="local", model="qwen3:0.6b"))]
        models = await c.models.ListModels(model_pb2.ListModelsRequest())
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(p.total_bytes and p.completed_bytes for p in progress)
    assert "qwen3:0.6b" in {m.name for m in models.models}


async def test_delete_removes_the_model_and_a_second_delete_is_not_found(ollama):
    async with serve(backends_yaml(ollama)) as c:
        await c.models.DeleteModel(model_pb2.DeleteModelRequest(backend="local", model="llama3.2:1b"))
        models = await c.models.ListModels(model_pb2.ListModelsRequest())
        error = await failure(c.models.DeleteModel(model_pb2.DeleteModelRequest(backend="local", model="llama3.2:1b")))
    assert models.models == []
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_pull_and_delete_are_unimplemented_on_openai(openai):
    async with serve(backends_yaml(openai=openai)) as c:
        pull = await failure(c.models.PullModel(model_pb2.PullModelRequest(backend="cloud", model="x")))
        delete = await failure(c.models.DeleteModel(model_pb2.DeleteModelRequest(backend="cloud", model="x")))
    assert pull.code() == delete.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_pull_on_an_unknown_backend_is_not_found(ollama):
    async with serve(backends_yaml(ollama)) as c:
        error = await failure(c.models.PullModel(model_pb2.PullModelRequest(backend="gpu-z", model="x")))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "local" in error.details()
