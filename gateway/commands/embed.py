"""`turnout embed`: one vector per text, printed by gateway/cli_controls.py."""

from __future__ import annotations

import argparse

from gateway import cli_controls
from gateway.commands.client import add_command, channel, metadata


async def embed(args: argparse.Namespace) -> int:
    async with channel(args) as ch:
        return await cli_controls.embed(args, ch, metadata(args))


def add(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "embed", embed, "embed texts and print each vector's dimensions and first values")
    cli_controls.add_embed_flags(p)
