"""Token counts of prompts: exact for OpenAI models, a safe upper bound for the others.

tiktoken downloads its BPE files on first use, and this machine has no internet. bpe-openai ships
the same files gzipped, so ``prepare_offline_encodings`` puts them where tiktoken looks for its own
download; tiktoken still checks their sha256 before it uses them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tiktoken

from providers.base import ChatMessage

# The sha256 tiktoken expects (tiktoken_ext/openai_public.py) for each file we provide offline.
_ENCODING_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

# The OpenAI cookbook's num_tokens_from_messages: every message is wrapped in 3 tokens
# (<|start|>{role/name}\n{content}<|end|>\n), a name costs 1 more, and the reply is primed with 3.
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_TOKENS_REPLY_PRIMING = 3

# Upper-bound estimate for models without a local tokenizer (Claude, unknown models). A byte-level
# BPE token covers at least one UTF-8 byte, so a text never has more tokens than bytes; role and
# name are counted by their bytes as well. Chat templates add a few tokens around each message
# (OpenAI's: 3, Llama 3's: about 5) and a few per prompt; the overheads sit well above those,
# generous on purpose: budget reservations rest on this number never being below the real one.
ESTIMATE_PER_MESSAGE = 8
ESTIMATE_PER_PROMPT = 16

_Kind = Literal["o200k_base", "cl100k_base", "estimate"]
_SMALL_CACHE_LIMIT = 4096


def default_cache_dir() -> Path:
    """Where the BPE files go by default: private to pennybot, outside the package folder."""
    return Path.home() / ".cache" / "pennybot" / "tiktoken"


def cache_file_name(encoding_name: str) -> str:
    """The file name tiktoken gives its download of an encoding: sha1 of the URL."""
    url = _ENCODING_URL.format(name=encoding_name)
    return hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()


def prepare_offline_encodings(cache_dir: Path | None = None) -> None:
    """Put cl100k_base and o200k_base where tiktoken finds them, and point tiktoken there.

    Call before any encoding is loaded. A missing or damaged file is (re)written from bpe-openai's
    copy; tiktoken checks the sha256 again when it loads it.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, sha256 in _ENCODING_SHA256.items():
        target = cache_dir / cache_file_name(name)
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        data = gzip.decompress((_bpe_openai_data_dir() / f"{name}.tiktoken.gz").read_bytes())
        # Write then rename, so a concurrent start-up or a crash never leaves half a file.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    # tiktoken reads this variable itself; there is no API to pass the directory.
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)


def _bpe_openai_data_dir() -> Path:
    # find_spec locates the package without importing it (and its Rust extension).
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or spec.origin is None:
        raise RuntimeError("bpe-openai is not installed: it ships the BPE files used offline")
    return Path(spec.origin).parent / "data"


@dataclass(frozen=True, slots=True)
class Counted:
    """A message with its counts worked out once: o200k_base tokens and UTF-8 bytes of content."""

    message: ChatMessage
    tokens: int
    size: int


class TokenCounter:
    """Counts tokens; build one at start-up (loading an encoding takes a while)."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        prepare_offline_encodings(cache_dir)
        self._o200k = tiktoken.get_encoding("o200k_base")
        self._cl100k: tiktoken.Encoding | None = None  # rarely needed: loaded on first use
        self._kinds: dict[str, _Kind] = {}
        self._o200k_small: dict[str, int] = {}
        self._cl100k_small: dict[str, int] = {}

    def count(self, message: ChatMessage) -> Counted:
        """Count a message once; keep the result and pass it to ``prompt_tokens``."""
        # encode_ordinary: user text such as "<|endoftext|>" is text, not a special token.
        tokens = len(self._o200k.encode_ordinary(message.content))
        return Counted(message, tokens, len(message.content.encode()))

    def count_text(self, text: str) -> int:
        """o200k_base tokens of a text."""
        return len(self._o200k.encode_ordinary(text))

    def prompt_tokens(self, counted: Sequence[Counted], model: str) -> int:
        """Prompt tokens of ``counted`` for ``model``: as OpenAI bills them, else an upper bound."""
        kind = self._kinds.get(model) or self._kind(model)
        if kind == "o200k_base":
            total = _TOKENS_REPLY_PRIMING
            for c in counted:
                name = c.message.name
                total += _TOKENS_PER_MESSAGE + c.tokens + self._small(c.message.role, "o200k_base")
                if name is not None:
                    total += _TOKENS_PER_NAME + self._small(name, "o200k_base")
            return total
        if kind == "cl100k_base":
            encode = self._cl100k_encoding().encode_ordinary
            total = _TOKENS_REPLY_PRIMING
            for c in counted:
                name = c.message.name
                total += _TOKENS_PER_MESSAGE + len(encode(c.message.content))
                total += self._small(c.message.role, "cl100k_base")
                if name is not None:
                    total += _TOKENS_PER_NAME + self._small(name, "cl100k_base")
            return total
        total = ESTIMATE_PER_PROMPT
        for c in counted:
            name = c.message.name
            total += ESTIMATE_PER_MESSAGE + c.size + len(c.message.role.encode())
            if name is not None:
                total += len(name.encode())
        return total

    def _kind(self, model: str) -> _Kind:
        kind: _Kind = "estimate"
        if not model.startswith("claude"):
            try:
                encoding = tiktoken.encoding_name_for_model(model)
            except KeyError:
                encoding = ""
            # Other encodings (r50k, p50k, o200k_harmony) belong to models this bot doesn't bill
            # through the chat format above, and their files aren't shipped: estimate them.
            if encoding == "o200k_base":
                kind = "o200k_base"
            elif encoding == "cl100k_base":
                kind = "cl100k_base"
        if len(self._kinds) < _SMALL_CACHE_LIMIT:
            self._kinds[model] = kind
        return kind

    def _small(self, text: str, encoding: Literal["o200k_base", "cl100k_base"]) -> int:
        # Roles and names repeat on every message: count each once per encoding.
        cache = self._o200k_small if encoding == "o200k_base" else self._cl100k_small
        n = cache.get(text)
        if n is None:
            enc = self._o200k if encoding == "o200k_base" else self._cl100k_encoding()
            n = len(enc.encode_ordinary(text))
            if len(cache) >= _SMALL_CACHE_LIMIT:
                cache.clear()
            cache[text] = n
        return n

    def _cl100k_encoding(self) -> tiktoken.Encoding:
        if self._cl100k is None:
            self._cl100k = tiktoken.get_encoding("cl100k_base")
        return self._cl100k
