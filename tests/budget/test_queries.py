"""Query normalization (exact cases and properties) and the self-contained judgement."""

from __future__ import annotations

import json
import string
import timeit
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budget.queries import is_self_contained, normalize_query

DATA = Path(__file__).resolve().parents[1] / "data" / "followups.jsonl"

# -- normalize_query -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  What is  the CAPITAL of France?? ", "what is the capital of france"),
        ("what is the capital of france", "what is the capital of france"),
        ("Ｗｈａｔ ｉｓ ２＋２？", "what is 2+2"),  # fullwidth letters, digits, "+", "？", space
        ("What is 2+2?", "what is 2+2"),
        ("Really?!?!", "really"),
        ("wait…", "wait"),
        ("hmm...", "hmm"),
        ("東京はどこ。", "東京はどこ"),
        ("東京はどこ？", "東京はどこ"),
        ("¿Cuál es la capital de Alemania?", "cuál es la capital de alemania"),
        ("¡Hola!", "hola"),
        ('"What is love?"', "what is love"),
        ("“What is love?”", "what is love"),
        ("'hello'", "hello"),
        ("« bonjour »", "bonjour"),
        ("Tabs\tand\nnewlines\r\n  here", "tabs and newlines here"),
        ("non\u00a0breaking\u3000spaces", "non breaking spaces"),
        ("Straße", "strasse"),
        ("ﬁle", "file"),  # ligature
        ("e.g. what is 3.14", "e.g. what is 3.14"),  # inner punctuation is meaning
        ("what's new?", "what's new"),
        ("C++?", "c++"),
        ("", ""),
        ("   ", ""),
        ("???", ""),
        ('"', '"'),
    ],
)
def test_normalize_cases(text: str, expected: str) -> None:
    assert normalize_query(text) == expected


def test_normalize_same_question_same_key() -> None:
    assert normalize_query("  What is  the CAPITAL of France?? ") == normalize_query("what is the capital of france")
    assert normalize_query("Ｗｈａｔ ｉｓ ２＋２？") == normalize_query("what is 2+2")


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_query(text)
    assert normalize_query(once) == once


# Letters whose case maps round-trip through casefold (Latin-1 plus a few others).
_CASE_SAFE = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + " +-'éÉüÜßñÑçÇ,;:()/"),
    max_size=40,
)


@given(_CASE_SAFE)
def test_trailing_question_mark_does_not_matter(text: str) -> None:
    assert normalize_query(text + "?") == normalize_query(text)
    assert normalize_query(text + " ??!") == normalize_query(text)


@given(_CASE_SAFE)
def test_case_does_not_matter(text: str) -> None:
    key = normalize_query(text)
    assert normalize_query(text.upper()) == key
    assert normalize_query(text.lower()) == key
    assert normalize_query(text.swapcase()) == key


@given(_CASE_SAFE, st.sampled_from([" ", "  ", "\t", " \n ", "\u00a0", "\u3000"]))
def test_extra_whitespace_does_not_matter(text: str, gap: str) -> None:
    spread = gap + gap.join(text.split(" ")) + gap
    assert normalize_query(spread) == normalize_query(text)


# -- is_self_contained: the labelled set -----------------------------------------------------


def load() -> list[tuple[str, bool]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line]
    return [(row["text"], row["self_contained"]) for row in rows]


def test_labelled_set_is_large_and_balanced() -> None:
    rows = load()
    standalone = sum(label for _, label in rows)
    assert len(rows) >= 60
    assert len({text for text, _ in rows}) == len(rows), "duplicate messages"
    assert 0.35 <= standalone / len(rows) <= 0.65


def test_labelled_set() -> None:
    rows = load()
    followups = [text for text, label in rows if not label]
    standalone = [text for text, label in rows if label]
    leaked = [text for text in followups if is_self_contained(text)]
    passed = [text for text in standalone if is_self_contained(text)]
    correct = len(followups) - len(leaked) + len(passed)
    print(
        f"\nself-contained: accuracy {correct / len(rows):.3f} ({correct}/{len(rows)}); "
        f"follow-ups judged self-contained {len(leaked)}/{len(followups)}; "
        f"self-contained recognised {len(passed)}/{len(standalone)} "
        f"({len(passed) / len(standalone):.1%})"
    )
    for text in standalone:
        if text not in passed:
            print(f"  missed (costs a model call): {text!r}")
    assert leaked == []  # a wrong cache hit is a wrong answer: none allowed
    assert len(passed) / len(standalone) >= 0.85


@pytest.mark.parametrize(
    "text",
    [
        "what about Germany?",
        "and in 2020?",
        "why?",
        "tell me more",
        "can you explain that again",
        "what did I just say",
        "the second one",
        "same for Python",
        "how about the other option",
        "is it?",
        "translate it to French",
        "make it shorter",
    ],
)
def test_follow_ups_from_the_brief(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "What is the capital of France?",
        "How do I reverse a list in Python?",
        "Explain photosynthesis",
        "What's the boiling point of water in Fahrenheit?",
        "Translate 'good morning' to Spanish",
    ],
)
def test_self_contained_from_the_brief(text: str) -> None:
    assert is_self_contained(text) is True


# -- is_self_contained: one rule at a time ---------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "👍", "?", "Germany?", "continue", "thanks!", "ok"])
def test_rule_1_fragments(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "And what is the capital of Spain?",
        "but how do I install Python?",
        "Also, who wrote Emma?",
        "So what's the best laptop?",
        "ok thanks! and the population of Spain?",
        "In 2020 who won the election?",
        "not quite, what is a prime number?",
        "y la capital de Francia?",
        "mais où est Paris ?",
        "und warum ist der Himmel blau?",
    ],
)
def test_rule_2_continuations(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "why not?",
        "How much in euros?",
        "what about the price of gold?",
        "what else?",
        "explain in simpler terms",
        "Translate into Spanish",
        "explain like I'm five",
    ],
)
def test_rule_3_ellipsis(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "What did you mean by recursion?",
        "you said Paris has 2 million people, why?",
        "what did we discuss about taxes",
        "Explain recursion again",
        "Is the answer above right?",
        "Do the same for Python",
        "Give me another example",
        "I like the third option",
        "Is option 2 cheaper?",
        "Which is older?",
        "Can I do this in Java too?",
        "Write a version for kids",
        "Add a section about costs",
    ],
)
def test_rule_4_references_to_the_conversation(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "Is this true?",
        "what does that mean",
        "those look expensive",
        "who is he?",
        "Where was she born?",
        "Can you summarize it?",
        "What's the population there?",
        "make a table of them",
        "what do people think about it",
        "How long is that bridge?",
    ],
)
def test_rule_5_pronouns_without_antecedent(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "Who was Napoleon and when did he die?",
        "How do I reverse a list in Python and print it?",
        "Is it safe to eat raw eggs?",
        "How long does it take to boil an egg?",
        "What time is it in Tokyo?",
        "Is it true that goldfish have short memories?",
        "What is a word that means happy?",
        "What does this error mean: KeyError: 'id'",
        "Is this year a leap year?",
        "Is there a cure for the common cold?",
        "Translate 'it is raining' into German",
    ],
)
def test_rule_5_resolved_or_dummy_pronouns_pass(text: str) -> None:
    assert is_self_contained(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "Fix the bug",
        "What does this code do?",
        "Why does my code crash?",
        "What's the answer?",
        "Send the full code",
        "Make the intro punchier",
    ],
)
def test_rule_6_artifacts_not_shown(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "What is the answer to life, the universe and everything?",
        "Fix the bug in this code:\nprint(1/0)",
        "What is the formula for the area of a circle?",
    ],
)
def test_rule_6_artifacts_with_their_subject_pass(text: str) -> None:
    assert is_self_contained(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "which one is cheaper?",
        "Can you give me an example?",
        "Are you sure?",
        "what's the capital?",
        "Any risks?",
        "Give an example in Java",
        "compare the two",
    ],
)
def test_rule_7_no_topic(text: str) -> None:
    assert is_self_contained(text) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Explain photosynthesis", True),
        ("Define entropy", True),
        ("What's photosynthesis?", True),
        ("Shorter please", False),
        ("Cheaper ones", False),
        ("Paris tomorrow", False),
    ],
)
def test_rule_8_two_words(text: str, expected: bool) -> None:
    assert is_self_contained(text) is expected


def test_ten_thousand_characters() -> None:
    text = "What is the capital of France? " * 330
    assert len(text) > 9_900
    assert is_self_contained(text) is True
    assert is_self_contained("it " * 3_400) is False


@given(st.text(max_size=300))
def test_never_raises_and_is_deterministic(text: str) -> None:
    assert is_self_contained(text) is is_self_contained(text)


def test_typical_message_is_fast() -> None:
    text = "How do I reverse a linked list in Python without using extra memory? Thanks a lot!!"
    n = 2000
    for name, func in (("is_self_contained", is_self_contained), ("normalize_query", normalize_query)):
        per_call = min(timeit.repeat(lambda f=func: f(text), number=n, repeat=3)) / n
        print(f"\n{name}: {per_call * 1e6:.1f} µs per call")
        assert per_call < 200e-6  # the target is 50 µs; the slack keeps slow CI machines green
