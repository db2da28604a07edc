from hypothesis import given
from hypothesis import strategies as st

from budget.context import ContextPolicy, extractive_summary, first_sentence, turns_to_fold

P = ContextPolicy()


def test_nothing_folds_below_twenty_turns() -> None:
    assert turns_to_fold([50] * 19, 200, 0, P) == 0


def test_twenty_turns_fold_the_oldest_ten() -> None:
    assert turns_to_fold([50] * 20, 200, 0, P) == 10


def test_token_cap_folds_early_until_it_fits() -> None:
    # 8 turns of 1,000 tokens plus 500 fixed: 8,500 > 8,000, so the oldest folds; with the
    # 300-token summary budget, 7,000 + 500 + 300 = 7,800 fits.
    assert turns_to_fold([1000] * 8, 500, 0, P) == 1


def test_token_cap_counts_the_summary() -> None:
    # 7 turns * 1,000 + 500 fixed + 600 summary = 8,100: one more turn must go.
    assert turns_to_fold([1000] * 7, 500, 600, P) == 1
    assert turns_to_fold([1000] * 7, 500, 400, P) == 0


def test_cap_wins_over_the_ten_turn_floor_but_never_folds_what_is_not_there() -> None:
    assert turns_to_fold([5000] * 3, 100, 0, P) == 2
    assert turns_to_fold([9000], 100, 0, P) == 1


@given(st.lists(st.integers(1, 3000), max_size=40), st.integers(0, 3000), st.integers(0, 600))
def test_folding_is_the_least_that_fits(turns: list[int], fixed: int, summary: int) -> None:
    n = turns_to_fold(turns, fixed, summary, P)
    by_count = P.fold_count if len(turns) >= P.fold_at else 0
    assert by_count <= n <= len(turns)

    def fits(k: int) -> bool:
        return fixed + (max(summary, P.summary_tokens) if k else summary) + sum(turns[k:]) <= P.token_cap

    assert fits(n) or n == len(turns)  # it fits, or every turn is folded already
    if n > by_count:
        assert not fits(n - 1)  # no turn is folded early without need


def test_extractive_summary_keeps_every_turn_and_the_previous_summary() -> None:
    s = extractive_summary(
        "User: asked about Paris.", [("user", "I live in Oslo. It is cold."), ("assistant", "Oslo is lovely! Yes.")]
    )
    assert s == "User: asked about Paris.\nUser: I live in Oslo.\nAssistant: Oslo is lovely!"


def test_extractive_summary_drops_oldest_lines_past_its_size() -> None:
    turns = [("user", f"Fact number {i} is here.") for i in range(200)]
    s = extractive_summary(None, turns, max_chars=200)
    assert len(s) <= 200
    assert s.endswith("Fact number 199 is here.")


def test_first_sentence_is_cut_to_its_limit() -> None:
    assert first_sentence("no punctuation at all") == "no punctuation at all"
    assert first_sentence("x" * 500, limit=10) == "x" * 9 + "…"
