"""Split a long reply into parts a chat platform accepts.

The rule: every part is a slice of the text with no whitespace at either end, at most ``limit``
long. Between two parts, and before the first and after the last, the text holds only whitespace
(the cut points); nothing else is dropped, added or reordered. So ``"".join(parts)`` is the text
with the whitespace at the cut points (and at both ends) removed, and a hard cut inside a word
drops nothing at all. Blank text gives no parts.

Cut points, best first: a blank line (paragraph), a line break, a sentence end (``.`` ``!`` ``?``
``…`` then whitespace, or ``。！？``), any whitespace. The best kind that still fills the part to at
least half the limit wins, so a short first paragraph does not cost a message of its own; failing
that, the last whitespace or sentence end anywhere in reach; failing that (a run with no
whitespace longer than the limit), a hard cut at the limit, moved back so that it does not fall
inside an emoji sequence, a flag or a letter with combining marks, where one fits.

Length is counted in code points (``units="chars"``, Python's ``len``) or UTF-16 code units
(``units="utf16"``: an emoji outside the BMP counts 2). Telegram's 4096 is documented as
characters "after entities parsing"; reports differ on whether astral characters count once or
twice, and UTF-16 is never less, so ``utf16`` is the safe choice for Telegram and for Twilio's 1600.
A Python ``str`` holds code points, so a part can never end inside a surrogate pair.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from itertools import accumulate
from typing import Literal

__all__ = ["TELEGRAM_LIMIT", "WHATSAPP_LIMIT", "Units", "split_message", "split_spans", "utf16_len"]

TELEGRAM_LIMIT = 4096
WHATSAPP_LIMIT = 1600

Units = Literal["chars", "utf16"]

# A match's cut index is its start (before whitespace) or, for sentence ends, its end.
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_LINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[.!?…][\"'”’»)\]]*(?=\s)|[。！？][\"'”’」』）)]*")
_SPACE = re.compile(r"\s")
_LEVELS = ((_PARAGRAPH, False), (_LINE, False), (_SENTENCE, True), (_SPACE, False))
# How far past the reach a separator may run (a blank line holding spaces); longer ones are missed.
_LOOKAHEAD = 64

_ZWJ = "\u200d"


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units, as Telegram counts entity offsets."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def split_message(text: str, limit: int, *, units: Units = "chars") -> list[str]:
    """Split ``text`` into non-blank parts of at most ``limit`` (see the module docstring for the rule)."""
    return [text[start:end] for start, end in split_spans(text, limit, units=units)]


def split_spans(text: str, limit: int, *, units: Units = "chars") -> list[tuple[int, int]]:
    """The parts of :func:`split_message` as ``(start, end)`` slices of ``text``, in order."""
    if limit < (2 if units == "utf16" else 1):
        raise ValueError(f"limit must leave room for one character, got {limit}")
    # width of text[a:b] is offsets[b] - offsets[a]
    offsets = [0, *accumulate(2 if units == "utf16" and ord(c) > 0xFFFF else 1 for c in text)]
    end = len(text.rstrip())
    pos = _skip_space(text, 0, end)
    spans: list[tuple[int, int]] = []
    while pos < end:
        if offsets[end] - offsets[pos] <= limit:
            spans.append((pos, end))
            break
        reach = bisect_right(offsets, offsets[pos] + limit) - 1  # the furthest index text[pos:reach] fits
        cut = _cut(text, pos, reach, offsets[pos] + limit // 2, offsets)
        part_end = len(text[pos:cut].rstrip()) + pos
        spans.append((pos, part_end))
        pos = _skip_space(text, cut, end)
    return spans


def _skip_space(text: str, i: int, end: int) -> int:
    while i < end and text[i].isspace():
        i += 1
    return i


def _cut(text: str, pos: int, reach: int, half: int, offsets: list[int]) -> int:
    """Where to end the part starting at ``pos``: an index in ``(pos, reach]``."""
    window_end = min(len(text), reach + _LOOKAHEAD)
    best_anywhere = pos
    for pattern, cut_at_end in _LEVELS:
        last = pos
        for match in pattern.finditer(text, pos, window_end):
            cut = match.end() if cut_at_end else match.start()
            if pos < cut <= reach:
                last = cut
        if last > pos and offsets[last] >= half:
            return last
        if pattern is _SENTENCE or pattern is _SPACE:
            best_anywhere = max(best_anywhere, last)
    if best_anywhere > pos:
        return best_anywhere
    cut = reach
    while cut > pos and not _grapheme_boundary(text, cut):
        cut -= 1
    return cut if cut > pos else reach


def _extends(c: str) -> bool:
    """True for characters that attach to the one before (an approximation of Unicode's Extend)."""
    cp = ord(c)
    return (
        unicodedata.category(c) in ("Mn", "Me", "Mc")
        or c == _ZWJ
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors (emoji presentation)
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # tag characters (subdivision flags)
    )


def _regional(c: str) -> bool:
    return 0x1F1E6 <= ord(c) <= 0x1F1FF


def _grapheme_boundary(text: str, i: int) -> bool:
    """False if a cut before ``text[i]`` would fall inside a user-perceived character."""
    if i <= 0 or i >= len(text):
        return True
    if _extends(text[i]) or text[i - 1] == _ZWJ:
        return False
    if _regional(text[i]) and _regional(text[i - 1]):
        run = 0
        j = i - 1
        while j >= 0 and _regional(text[j]):
            run += 1
            j -= 1
        return run % 2 == 0  # flags are pairs of regional indicators
    return True
