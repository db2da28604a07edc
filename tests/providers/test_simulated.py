from budget.tokens import TokenCounter
from providers.base import ChatMessage, CompletionRequest
from providers.simulated import MARK, SUMMARY_MARKER, SimulatedProvider


def provider(counter: TokenCounter) -> SimulatedProvider:
    return SimulatedProvider(
        count_prompt=lambda msgs, model: counter.prompt_tokens([counter.count(m) for m in msgs], model),
        count_text=counter.count_text,
    )


async def test_replies_are_deterministic_marked_and_counted(counter: TokenCounter) -> None:
    p = provider(counter)
    msgs = [ChatMessage("system", "Be brief."), ChatMessage("user", "How do tides work?")]
    a = await p.complete(CompletionRequest("gpt-4o-mini", msgs, 1024))
    b = await p.complete(CompletionRequest("gpt-4o-mini", msgs, 1024))
    assert a == b and a.simulated and a.text.startswith(MARK)
    assert a.usage.input_tokens == counter.prompt_tokens([counter.count(m) for m in msgs], "gpt-4o-mini")
    assert a.usage.output_tokens == counter.count_text(a.text)


async def test_output_never_passes_max_tokens(counter: TokenCounter) -> None:
    p = provider(counter)
    for cap in (1, 5, 17, 40):
        r = await p.complete(CompletionRequest("gpt-4o-mini", [ChatMessage("user", "Explain everything " * 30)], cap))
        assert r.usage.output_tokens <= max(cap, counter.count_text(r.text.split(" ")[0]))


async def test_summary_requests_get_an_extractive_summary(counter: TokenCounter) -> None:
    p = provider(counter)
    transcript = "User: I live in Oslo. It is cold.\nAssistant: Oslo is lovely! Yes."
    r = await p.complete(
        CompletionRequest(
            "gpt-4o-mini", [ChatMessage("system", SUMMARY_MARKER + "."), ChatMessage("user", transcript)], 300
        )
    )
    assert r.text == "User: I live in Oslo.\nAssistant: Oslo is lovely!"
