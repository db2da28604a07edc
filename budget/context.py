"""The context window: which turns go into the prompt and which are folded into the summary.

Rules (DESIGN invariant 9: every turn is either in the prompt or in the summary):
- the prompt is the system prompt, the summary (if any), every unfolded turn and the new message;
- when the unfolded turns reach ``fold_at`` (20), the oldest ``fold_count`` (10) are folded, so at
  least the last 10 turns stay verbatim;
- if the prompt would still pass ``token_cap`` (8,000), the oldest unfolded turns are folded early,
  one at a time, until it fits. The cap wins over the 10-turn floor: a few very long turns would
  otherwise make every message cost as much as the cap allows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    keep_min: int = 10
    fold_at: int = 20
    fold_count: int = 10
    token_cap: int = 8000
    summary_tokens: int = 300  # the summary's budget, counted in the prompt once anything folds


def turns_to_fold(turn_tokens: Sequence[int], fixed_tokens: int, summary_tokens: int, policy: ContextPolicy) -> int:
    """How many of the oldest unfolded turns to fold now.

    ``turn_tokens`` are the unfolded turns' prompt costs (per-message overhead included), oldest
    first; ``fixed_tokens`` is the rest of the prompt (system, new message, reply priming) and
    ``summary_tokens`` the current summary's cost.
    """
    n = policy.fold_count if len(turn_tokens) >= policy.fold_at else 0
    total = sum(turn_tokens[n:])
    summary = max(summary_tokens, policy.summary_tokens) if n else summary_tokens
    while n < len(turn_tokens) and fixed_tokens + summary + total > policy.token_cap:
        total -= turn_tokens[n]
        n += 1
        summary = max(summary_tokens, policy.summary_tokens)
    return n


_SENTENCE = re.compile(r"(.+?[.!?。！？])(\s|$)", re.S)


def first_sentence(text: str, limit: int = 160) -> str:
    match = _SENTENCE.match(text.strip())
    sentence = (match.group(1) if match else text.strip()).replace("\n", " ")
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def extractive_summary(previous: str | None, turns: Sequence[tuple[str, str]], max_chars: int = 1200) -> str:
    """A summary with no model: the previous summary, then the first sentence of each turn.

    Used offline (the simulated provider) and whenever a model summary cannot be paid for, so
    folding never waits on money and never drops a turn without a trace.
    """
    lines = [previous] if previous else []
    lines += [f"{'User' if role == 'user' else 'Assistant'}: {first_sentence(content)}" for role, content in turns]
    text = "\n".join(lines)
    # Keep the newest facts when it grows too long: the oldest lines go first.
    while len(text) > max_chars and "\n" in text:
        text = text.split("\n", 1)[1]
    return text[-max_chars:]
