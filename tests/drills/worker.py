"""A bot process for drills: builds the pipeline from the environment (DATABASE_URL, REDIS_URL,
limits...) and sends the messages it is given, all at once, then prints a JSON summary.

    python -m tests.drills.worker USERS MESSAGES_PER_USER TAG
"""

from __future__ import annotations

import asyncio
import json
import sys

from bot.factory import build, close
from bot.pipeline import Pipeline
from bot.settings import load_settings
from bot.turn import Inbound


async def main(users: int, per_user: int, tag: str) -> None:
    built = build(load_settings(None))
    await built.deps.db.migrate()
    pipeline = Pipeline(built.deps)

    async def one(user: int, i: int) -> str:
        inbound = Inbound(
            "console", f"u{user}", f"u{user}", f"{tag}-{user}-{i}", f"Question {i} from {tag}: how do tides work?"
        )
        turn = await pipeline.handle(inbound)
        return "answered" if turn.answer is not None else next(iter(turn.outcomes.values()), "?")

    results = await asyncio.gather(*(one(u, i) for u in range(users) for i in range(per_user)))
    await built.deps.recorder.flush()
    await close(built.deps)
    summary: dict[str, int] = {}
    for r in results:
        key = "answered" if r == "answered" else "refused"
        summary[key] = summary.get(key, 0) + 1
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
