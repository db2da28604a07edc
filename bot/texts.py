"""Every text a user can see, in one place, so an operator can change or translate it.

``TEXTS_FILE`` points to a JSON object whose keys are field names here; what it names replaces
the default. Placeholders are ``str.format`` fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Texts:
    help: str = (
        "I answer questions with an AI model, within a budget.\n"
        "/usage - what you have spent and what is left\n"
        "/reset - start a new conversation\n"
        "/help - this list"
    )
    start: str = "Hi! Ask me anything. /help lists what I can do."
    reset_done: str = "Done: this conversation is cleared."
    unknown_command: str = "I don't know {command}. /help lists the commands."
    not_allowed: str = "Sorry, {command} is for admins only."
    rate_limited: str = "You're sending messages too fast. Please try again in {seconds} s."
    warn_user: str = (
        "Heads-up: you've used {percent}% of your {period} budget. I'll answer with a lighter "
        "model until it resets on {reset}."
    )
    warn_global: str = (
        "Heads-up: the bot has used {percent}% of its {period} budget; answers use a lighter model until {reset}."
    )
    blocked_user: str = (
        "You've reached your {period} budget, so I can't answer with AI right now. It resets on {reset}."
    )
    blocked_global: str = "The bot has reached its {period} budget, so AI replies are paused. They resume on {reset}."
    cache_only: str = (
        "The bot has reached its {period} budget, so I can only answer questions I've answered before. "
        "AI replies resume on {reset}."
    )
    over_budget: str = (
        "That would cost more than what is left of your budget. It resets on {reset}; /usage shows the details."
    )
    paused: str = "AI replies are paused for a moment: I can't check the budget right now. Please try again soon."
    providers_down: str = "Sorry, no AI provider could answer just now. Please try again in a minute."
    too_long: str = "That message is too long for me ({tokens} tokens; the most is {limit}). Please shorten it."
    empty: str = "I didn't catch any text there."
    only_text: str = "Sorry, I only understand text messages."
    usage: str = (
        "Today: {day_spent} spent{day_limit}.\n"
        "This month: {month_spent} spent{month_limit}.\n"
        "Resets: day at {day_reset}, month at {month_reset}."
    )
    usage_limit: str = " of {limit} ({percent}%), {left} left"


def load_texts(path: Path | None) -> Texts:
    """The default texts, with those a JSON file names replaced."""
    if path is None:
        return Texts()
    data = json.loads(path.read_text(encoding="utf-8"))
    known = {f.name for f in fields(Texts)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"TEXTS_FILE names unknown texts: {', '.join(unknown)}")
    return replace(Texts(), **{k: str(v) for k, v in data.items()})
