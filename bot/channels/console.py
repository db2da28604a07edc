"""The console channel: the full pipeline in a terminal, line by line, typed or piped."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

from bot.pipeline import Pipeline
from bot.turn import Inbound


async def chat(pipeline: Pipeline, user: str, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    """Read messages until end of input; print each reply. Returns the number of messages."""
    interactive = stdin.isatty()
    run_id = time.time_ns()
    count = 0
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        count += 1
        inbound = Inbound("console", user, user, f"{run_id}-{count}", text)
        turn = await pipeline.handle(inbound)
        for reply in turn.replies:
            stdout.write(f"bot> {reply}\n")
        stdout.flush()
        await pipeline.done(turn)
    return count
