"""Token counting: OpenAI's billing rules, the upper-bound estimate, and the offline BPE files."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from budget.tokens import (
    ESTIMATE_PER_MESSAGE,
    ESTIMATE_PER_PROMPT,
    Counted,
    TokenCounter,
    cache_file_name,
    prepare_offline_encodings,
)
from providers.base import ChatMessage

ROOT = Path(__file__).resolve().parents[2]

# The OpenAI cookbook's example for num_tokens_from_messages ("How to count tokens with tiktoken").
JARGON = [
    ChatMessage(
        "system",
        "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    ),
    ChatMessage("system", "New synergies will help drive top-line growth.", "example_user"),
    ChatMessage(
        "system", "Things working well together will increase revenue.", "example_assistant"
    ),
    ChatMessage(
        "system",
        "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
        "example_user",
    ),
    ChatMessage(
        "system",
        "Let's talk later when we're less busy about how to do better.",
        "example_assistant",
    ),
    ChatMessage(
        "user",
        "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]

SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
FILE_NAMES = {
    "cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",
}


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenCounter]:
    with pytest.MonkeyPatch.context() as mp:
        # prepare_offline_encodings sets TIKTOKEN_CACHE_DIR; keep the change inside this module.
        mp.setenv("TIKTOKEN_CACHE_DIR", "")
        yield TokenCounter(tmp_path_factory.mktemp("tiktoken"))


def counted(counter: TokenCounter, messages: list[ChatMessage]) -> list[Counted]:
    return [counter.count(m) for m in messages]


# -- OpenAI: exactly as billed ------------------------------------------------------------------


def test_cookbook_example_on_cl100k(counter: TokenCounter) -> None:
    assert counter.prompt_tokens(counted(counter, JARGON), "gpt-4-0613") == 129


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "gpt-5-mini", "o3"])
def test_cookbook_example_on_o200k(counter: TokenCounter, model: str) -> None:
    assert counter.prompt_tokens(counted(counter, JARGON), model) == 124


def test_count_holds_o200k_tokens_and_utf8_bytes(counter: TokenCounter) -> None:
    c = counter.count(ChatMessage("user", "Grüße, 世界! 👋"))
    o200k = tiktoken.get_encoding("o200k_base")
    assert c.tokens == len(o200k.encode_ordinary("Grüße, 世界! 👋"))
    assert c.size == len("Grüße, 世界! 👋".encode())
    assert counter.count_text("Grüße, 世界! 👋") == c.tokens


def test_special_token_text_is_plain_text(counter: TokenCounter) -> None:
    text = "<|endoftext|> and <|endofprompt|>"
    c = counter.count(ChatMessage("user", text))
    assert c.tokens > 2  # spelled out, not two special tokens
    assert counter.prompt_tokens([c], "gpt-4-0613") > 0


def test_o200k_models_use_the_stored_count(counter: TokenCounter) -> None:
    # A stored count that disagrees with the text shows the text isn't encoded again.
    fake = Counted(ChatMessage("user", "hi"), tokens=1000, size=2)
    assert counter.prompt_tokens([fake], "gpt-4o-mini") == 3 + 1 + 1000 + 3  # "user" is 1 token


def test_cl100k_models_encode_the_content_again(counter: TokenCounter) -> None:
    fake = Counted(ChatMessage("user", "hi"), tokens=1000, size=2)
    assert counter.prompt_tokens([fake], "gpt-3.5-turbo") == 3 + 1 + 1 + 3


# -- Claude and unknown models: an upper bound --------------------------------------------------


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "claude-sonnet-4-5", "llama-3.3-70b"])
def test_estimate_is_bytes_plus_overheads(counter: TokenCounter, model: str) -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Ça va ?", "ann")]
    expected = (
        ESTIMATE_PER_PROMPT
        + (ESTIMATE_PER_MESSAGE + len("system") + len(b"Be brief."))
        + (ESTIMATE_PER_MESSAGE + len("user") + len("Ça va ?".encode()) + len("ann"))
    )
    assert counter.prompt_tokens(counted(counter, messages), model) == expected


messages_strategy = st.lists(
    st.builds(
        ChatMessage,
        role=st.sampled_from(["system", "user", "assistant"]),
        content=st.text()
        | st.sampled_from(["", "<|endoftext|>", "a" * 500, "🙂" * 50, "  \n\t", "1234567890"]),
        name=st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True),
    ),
    max_size=8,
)


@settings(deadline=None)  # the first example may load cl100k_base (a few hundred ms)
@given(messages=messages_strategy)
def test_estimate_is_never_below_a_real_count(
    counter: TokenCounter, messages: list[ChatMessage]
) -> None:
    items = counted(counter, messages)
    estimate = counter.prompt_tokens(items, "claude-haiku-4-5")
    assert estimate >= counter.prompt_tokens(items, "gpt-4o")
    assert estimate >= counter.prompt_tokens(items, "gpt-4")
    assert estimate >= sum(c.size for c in items)


@given(text=st.text())
def test_a_byte_level_bpe_never_has_more_tokens_than_bytes(
    counter: TokenCounter, text: str
) -> None:
    # The premise of the estimate, checked on the byte-level BPE we do have.
    assert counter.count_text(text) <= len(text.encode())


# -- Offline BPE files --------------------------------------------------------------------------


def test_cache_file_names_are_tiktokens() -> None:
    for name, file_name in FILE_NAMES.items():
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        assert cache_file_name(name) == file_name == hashlib.sha1(url.encode()).hexdigest()


def test_prepare_writes_the_files_tiktoken_expects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # restored after the test
    cache = tmp_path / "fresh" / "tiktoken"
    prepare_offline_encodings(cache)

    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILE_NAMES.values())
    for name, file_name in FILE_NAMES.items():
        assert hashlib.sha256((cache / file_name).read_bytes()).hexdigest() == SHA256[name]


def test_prepare_keeps_good_files_and_repairs_damaged_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    prepare_offline_encodings(tmp_path)
    good = tmp_path / FILE_NAMES["cl100k_base"]
    damaged = tmp_path / FILE_NAMES["o200k_base"]
    inode = good.stat().st_ino
    damaged.write_bytes(b"not a BPE file")

    prepare_offline_encodings(tmp_path)

    assert good.stat().st_ino == inode  # left alone
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == SHA256["o200k_base"]
    assert not list(tmp_path.glob("*.tmp"))


def test_tiktoken_still_refuses_a_tampered_file(tmp_path: Path) -> None:
    # In a child process: a refused encoding must not touch this process's tiktoken. The child
    # blocks its own sockets, so the re-download tiktoken tries fails even with a network.
    script = textwrap.dedent(
        """
        import socket, sys
        from pathlib import Path
        from budget.tokens import cache_file_name, prepare_offline_encodings

        cache = Path(sys.argv[1])
        prepare_offline_encodings(cache)
        target = cache / cache_file_name("o200k_base")
        target.write_bytes(b"dGFtcGVyZWQ= 0\\n")  # a valid-looking but wrong BPE file

        def blocked(*args, **kwargs):
            raise OSError("network blocked by the test")

        socket.socket.connect = blocked
        import tiktoken
        try:
            tiktoken.get_encoding("o200k_base")
        except Exception as exc:
            print("refused", type(exc).__name__, target.exists())
        else:
            print("loaded")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # tiktoken found the hash wrong, deleted the file, tried to fetch it again and failed.
    assert done.stdout.split() == ["refused", "ConnectionError", "False"]
