"""bot/split.py: parts fit the limit, cut where a reader expects, and re-join to the original."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.split import TELEGRAM_LIMIT, WHATSAPP_LIMIT, Units, split_message, split_spans, utf16_len


def sentence(k: int, n: int = 100) -> str:
    """A sentence of exactly ``n`` characters ending in a full stop, with spaces between words."""
    body = (f"This is sentence {k} " + "with filler words " * 10)[: n - 1]
    return (body[:-1] + "x" if body.endswith(" ") else body) + "."


CJK_SENTENCE_END = re.compile(r"[。！？][\"'”’」』）)]*$")


def width(text: str, units: Units) -> int:
    return utf16_len(text) if units == "utf16" else len(text)


def check_rule(text: str, limit: int, units: Units = "chars") -> list[str]:
    """Asserts the documented rule and returns the parts."""
    spans = split_spans(text, limit, units=units)
    parts = split_message(text, limit, units=units)
    assert parts == [text[a:b] for a, b in spans]
    previous_end = 0
    for (start, end), part in zip(spans, parts, strict=True):
        assert part.strip() == part != ""
        assert width(part, units) <= limit
        assert text[previous_end:start].strip() == ""  # only whitespace at a cut point
        if start == previous_end and start > 0 and not CJK_SENTENCE_END.search(text, 0, start):
            # any other cut with no whitespace is a hard cut inside a whitespace-free run longer than the limit
            run_start = start
            while run_start > 0 and not text[run_start - 1].isspace():
                run_start -= 1
            run_end = start
            while run_end < len(text) and not text[run_end].isspace():
                run_end += 1
            assert width(text[run_start:run_end], units) > limit
        previous_end = end
    assert text[previous_end:].strip() == ""
    assert (parts == []) == (text.strip() == "")
    return parts


# A 10,000-character reply: a paragraph of 10 sentences, a list of 20 lines, a paragraph of 60
# sentences and a last paragraph of 17 sentences (the last one shorter).
P1 = " ".join(sentence(k) for k in range(10))  # 1009
P2 = "\n".join(f"- item {k:02d}: " + "y" * 49 for k in range(20))  # 1219
P3_SENTENCES = [sentence(k) for k in range(100, 160)]
P3 = " ".join(P3_SENTENCES)  # 6059
P4 = " ".join([*(sentence(k) for k in range(200, 216)), sentence(216, 91)])  # 1707
REPLY = "\n\n".join([P1, P2, P3, P4])


def test_the_long_reply_is_what_the_tests_assume() -> None:
    assert (len(P1), len(P2), len(P3), len(P4), len(REPLY)) == (1009, 1219, 6059, 1707, 10_000)


def test_long_reply_at_telegram_limit() -> None:
    parts = check_rule(REPLY, TELEGRAM_LIMIT)
    # The paragraph break after the list fills the first part past half; then sentence ends.
    assert parts == [
        P1 + "\n\n" + P2,
        " ".join(P3_SENTENCES[:40]),
        " ".join(P3_SENTENCES[40:]) + "\n\n" + P4,
    ]
    assert [len(p) for p in parts] == [2230, 4039, 3728]


def test_long_reply_at_whatsapp_limit() -> None:
    parts = check_rule(REPLY, WHATSAPP_LIMIT)
    assert parts == [
        P1,
        P2,
        *(" ".join(P3_SENTENCES[i : i + 15]) for i in range(0, 60, 15)),
        P4[:1514],
        P4[1515:],
    ]
    assert [len(p) for p in parts] == [1009, 1219, 1514, 1514, 1514, 1514, 1514, 192]


def test_short_text_is_one_part_trimmed() -> None:
    assert split_message("  hello there \n", 4096) == ["hello there"]
    assert split_message("", 10) == []
    assert split_message(" \n\t ", 10) == []


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        # paragraph beats line beats sentence beats space, when it fills half the part
        ("aaaa bbbb.\n\ncc dd. ee\nff gg", 20, ["aaaa bbbb.", "cc dd. ee\nff gg"]),
        ("aaaa bbbb. cc\ndd. ee ff gg", 20, ["aaaa bbbb. cc", "dd. ee ff gg"]),
        ("aaaa bbbb. cc dd ee ff gg", 20, ["aaaa bbbb.", "cc dd ee ff gg"]),
        ("aaaa bbbb cc dd ee ff gg", 20, ["aaaa bbbb cc dd ee", "ff gg"]),
        # a paragraph break in the first half loses to a sentence end further on
        ("aa\n\nbbbb cccc. dddd eeee ffff", 20, ["aa\n\nbbbb cccc.", "dddd eeee ffff"]),
        # CJK sentence ends need no space after them
        ("今日は晴れです。明日は雨です。", 10, ["今日は晴れです。", "明日は雨です。"]),
        # sentence ends may be followed by closing quotes or brackets
        ('He said "stop!" and left', 16, ['He said "stop!"', "and left"]),
    ],
)
def test_preferred_cut_points(text: str, limit: int, expected: list[str]) -> None:
    assert check_rule(text, limit) == expected


def test_one_long_word_is_hard_cut() -> None:
    word = "".join(chr(ord("a") + i % 26) for i in range(5000))
    parts = check_rule(word, TELEGRAM_LIMIT)
    assert parts == [word[:4096], word[4096:]]
    assert "".join(parts) == word
    assert check_rule(f"see {word} ok", 1600) == [
        "see",
        word[:1600],
        word[1600:3200],
        word[3200:4800],
        word[4800:] + " ok",
    ]


def test_emoji_count_as_two_in_utf16() -> None:
    text = "😀" * 5000
    assert [len(p) for p in check_rule(text, TELEGRAM_LIMIT)] == [4096, 904]
    utf16_parts = check_rule(text, TELEGRAM_LIMIT, "utf16")
    assert [len(p) for p in utf16_parts] == [2048, 2048, 904]
    assert [utf16_len(p) for p in utf16_parts] == [4096, 4096, 1808]
    # an odd limit cannot hold half a surrogate pair
    assert [utf16_len(p) for p in check_rule("a" + "😀" * 6, 5, "utf16")] == [5, 4, 4]
    for part in utf16_parts:
        part.encode("utf-16-le").decode("utf-16-le")  # every part is whole in UTF-16


def test_hard_cut_keeps_emoji_sequences_flags_and_accents_whole() -> None:
    family = "👨\u200d👩\u200d👧\u200d👦"  # 7 code points
    assert check_rule(family * 3, 10) == [family] * 3
    flag = "🇫🇷"
    assert check_rule(flag * 4, 5) == [flag * 2, flag * 2]
    thumbs = "👍🏽"
    assert check_rule(thumbs * 5, 3) == [thumbs] * 5
    accented = "e\u0301" * 4
    assert check_rule(accented, 3) == ["e\u0301"] * 4
    # a sequence longer than the limit is still cut (between code points) rather than dropped
    assert "".join(check_rule(family, 3)) == family


def test_limit_must_hold_a_character() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("abc", 0)
    with pytest.raises(ValueError, match="limit"):
        split_message("abc", 1, units="utf16")
    assert split_message("abc", 1) == ["a", "b", "c"]


def test_fast_on_a_megabyte() -> None:
    text = ("word " * 200 + "\n\n") * 1000
    started = time.perf_counter()
    parts = split_message(text, WHATSAPP_LIMIT)
    assert time.perf_counter() - started < 1.0
    assert len(parts) == 1000
    assert split_message(text, WHATSAPP_LIMIT) == parts  # deterministic


# Single characters plus multi-character pieces: paragraph breaks, emoji sequences, combining marks.
PIECES = [*'abcdefghij .!?\t\n\u00a0é中。")😀', "\n\n", ". ", "e\u0301", "🇫🇷", "👍🏽", "👨\u200d👩\u200d👧"]
ALPHABET = st.sampled_from(PIECES)
TEXTS = st.lists(ALPHABET, max_size=300).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=TEXTS, limit=st.integers(1, 60))
def test_property_parts_fit_and_rejoin(text: str, limit: int) -> None:
    check_rule(text, limit)


@settings(max_examples=400, deadline=None)
@given(text=TEXTS, limit=st.integers(2, 60))
def test_property_parts_fit_and_rejoin_utf16(text: str, limit: int) -> None:
    check_rule(text, limit, "utf16")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), limit=st.integers(2, 80))
def test_property_any_unicode(text: str, limit: int) -> None:
    check_rule(text, limit, "utf16")
    check_rule(text, limit)
