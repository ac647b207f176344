"""`turnout chat`: one prompt (from the arguments or piped stdin) streamed to
the terminal; with no prompt on a terminal, an interactive multi-turn
conversation like `ollama run`: `>>> ` prompts, history kept server-side in a
session (`--session ID` resumes one), `/bye` or Ctrl-D leaves, Ctrl-C stops
the answer being written and returns to the prompt."""

from __future__ import annotations

import argparse
import asyncio
import sys

import grpc

from gateway import cli_controls
from gateway.commands.client import add_command, channel, metadata
from turnout.v1 import common_pb2, generate_pb2, generate_pb2_grpc, session_pb2, session_pb2_grpc

PROMPT = ">>> "
HELP = "Use Ctrl + d or /bye to exit."


class Output:
    """stdout that knows whether the cursor is at the start of a line, so an
    error after part of an answer starts on a line of its own."""

    def __init__(self) -> None:
        self.at_line_start = True

    def write(self, text: str) -> None:
        if text:
            print(text, end="", flush=True)
            self.at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        if not self.at_line_start:
            self.write("\n")


def _request(args: argparse.Namespace, prompt: str, session_id: str = "") -> generate_pb2.GenerateRequest:
    messages = []
    if args.system and not session_id:
        messages.append(generate_pb2.Message(role=common_pb2.ROLE_SYSTEM, content=args.system))
    messages.append(generate_pb2.Message(role=common_pb2.ROLE_USER, content=prompt))
    return generate_pb2.GenerateRequest(model=args.model, messages=messages, task=args.task, session_id=session_id,
                                        **cli_controls.generation_fields(args))


async def _stream(args: argparse.Namespace, ch: grpc.aio.Channel, request: generate_pb2.GenerateRequest,
                  out: Output) -> None:
    stub = generate_pb2_grpc.GenerateServiceStub(ch)
    async for response in stub.Generate(request, timeout=args.timeout, metadata=metadata(args)):
        event = response.WhichOneof("event")
        if event == "started" and args.verbose:
            s = response.started
            print(f"[{s.route} -> {s.backend}/{s.model}, attempt {s.attempt}]", file=sys.stderr)
        elif event == "delta":
            if response.delta.reasoning and args.verbose:
                print(response.delta.reasoning, end="", file=sys.stderr, flush=True)
            for call in response.delta.tool_calls:
                out.write(f"\n[tool call {call.name}({call.arguments})]\n")
            out.write(response.delta.content)
        elif event == "completed":
            out.end_line()
            if args.verbose:
                _print_summary(response.completed)


def _print_summary(c: generate_pb2.Completed) -> None:
    usage = c.usage
    prompt = usage.prompt_tokens if usage.HasField("prompt_tokens") else "?"
    completion = usage.completion_tokens if usage.HasField("completion_tokens") else "?"
    print(f"[{generate_pb2.FinishReason.Name(c.finish_reason)}, ttft {c.time_to_first_token.ToMilliseconds()} ms, "
          f"total {c.total_time.ToMilliseconds()} ms, tokens {prompt}+{completion}]", file=sys.stderr)


async def _one_prompt(args: argparse.Namespace) -> int:
    prompt = " ".join(args.prompt) if args.prompt else sys.stdin.read()
    out = Output()
    async with channel(args) as ch:
        try:
            await _stream(args, ch, _request(args, prompt, args.session), out)
        except grpc.aio.AioRpcError:
            out.end_line()
            raise
    return 0


async def _open_session(args: argparse.Namespace, ch: grpc.aio.Channel) -> str:
    """--session, else a new session (with --system as its system prompt)."""
    if args.session:
        return args.session
    response = await session_pb2_grpc.SessionServiceStub(ch).CreateSession(
        session_pb2.CreateSessionRequest(system_prompt=args.system), timeout=10, metadata=metadata(args))
    return response.session.id


def _read_prompt() -> str | None:
    """The next prompt; None to leave (Ctrl-D or /bye). Ctrl-C at the prompt only says how to leave."""
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            print()
            return None
        except KeyboardInterrupt:
            print(f"\n{HELP}")
            continue
        if line.strip() == "/bye":
            return None
        if line.strip() in ("/?", "/help"):
            print(f"/bye to leave; Ctrl-C stops an answer. {HELP}")
            continue
        if line.strip():
            return line


def interactive(args: argparse.Namespace) -> int:
    """The prompt loop. Each answer runs in the same event loop; Ctrl-C while
    it streams cancels that call only (the session keeps nothing of it)."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    with asyncio.Runner() as runner:
        ch = channel(args)
        try:
            session_id = runner.run(_open_session(args, ch))
            print(f"session {session_id} (resume with --session {session_id}). {HELP}", file=sys.stderr)
            while (prompt := _read_prompt()) is not None:
                out = Output()
                try:
                    runner.run(_stream(args, ch, _request(args, prompt, session_id), out))
                except KeyboardInterrupt:
                    out.end_line()
                except grpc.aio.AioRpcError as exc:
                    out.end_line()
                    print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
                print()
        finally:
            runner.run(ch.close())
    return 0


def _chat(args: argparse.Namespace) -> int:
    if not args.prompt and sys.stdin.isatty():
        return interactive(args)
    return asyncio.run(_one_prompt(args))


def add(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "chat", _one_prompt,
                    "stream an answer; with no prompt on a terminal, an interactive multi-turn chat")
    p.set_defaults(run=_chat)
    p.add_argument("prompt", nargs="*", help="the prompt (default: standard input, or interactive on a terminal)")
    p.add_argument("--model", "-m", default="", help="route or model name (default: the gateway's default)")
    p.add_argument("--system", "-s", default="", help="system prompt (for a new session)")
    p.add_argument("--session", default="", help="session id: continue that conversation (history kept server-side)")
    p.add_argument("--task", default="", help="task label for routing rules")
    p.add_argument("--timeout", type=float, default=300.0, help="deadline in seconds")
    p.add_argument("--verbose", "-v", action="store_true", help="show route, backend, reasoning and timings on stderr")
    cli_controls.add_generation_flags(p)
