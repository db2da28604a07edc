"""The two bots the simulator prices beside pennybot, on the same messages, catalog and price book.

- ``Naive``: the premium model, the whole conversation in every prompt, no cache, no limits.
- ``Plain``: a typical budget bot: the cheap model for simple and medium questions and the premium
  one for complex (pennybot's own classifier decides), the last 10 messages cut to the context
  cap, an exact-match cache on lowercased trimmed text (every answer stored, with pennybot's TTL
  and size), and a monthly cap per user and for the bot with the 80 %/95 % rules (cheap model from
  80 %, no answer from 95 %), checked on what was spent so far, without reservations.

Both are billed as the simulated provider bills (OpenAI's automatic prompt-prefix cache included),
so a prompt layout that keeps its prefix stable shows in their figures as in pennybot's.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from budget.complexity import Complexity
from budget.ledger import Limits
from budget.money import ZERO, to_nano
from budget.periods import Calendar, Period
from budget.pricing import PriceBook
from budget.queries import is_self_contained
from budget.rules import Level, Thresholds, level_of
from budget.tokens import Counted, TokenCounter
from providers.base import Usage
from providers.catalog import ModelSpec, Tier
from providers.simulated import PrefixCache, prefix_key, prefix_keys

PLAIN_WINDOW = 10  # messages of history, user and assistant


@dataclass(frozen=True, slots=True)
class Asked:
    """One user message as every bot sees it, counted once: the question and the reply the
    simulated provider gives it."""

    user: str
    text: str
    question: Counted
    reply: Counted
    complexity: Complexity
    now: datetime


@dataclass(slots=True)
class Calls:
    """A bot's AI calls to one model: how many, their cost and the tokens they were billed for."""

    calls: int = 0
    cost: Decimal = ZERO
    input_tokens: int = 0
    cached_input_tokens: int = 0  # billed at the cached-input price (prompt-prefix cache)
    output_tokens: int = 0

    def add(self, usage: Usage, cost: Decimal) -> None:
        self.calls += 1
        self.cost += cost
        self.input_tokens += usage.input_tokens
        self.cached_input_tokens += usage.cache_read_tokens
        self.output_tokens += usage.output_tokens


@dataclass(slots=True)
class Tally:
    """What one bot did with a workload."""

    cache_hits: int = 0
    follow_up_hits: int = 0  # hits on a message that needs its conversation: an answer out of context
    answered: int = 0  # messages answered by a model or from the cache
    refused: int = 0  # messages given no answer because of a budget
    users_warned: set[str] = field(default_factory=set)
    users_blocked: set[str] = field(default_factory=set)
    by_model: dict[str, Calls] = field(default_factory=dict)  # AI calls (answers and summaries) by model
    month_spend: dict[str, Decimal] = field(default_factory=dict)  # month key -> spend

    def call(self, model: str, usage: Usage, cost: Decimal, month: str) -> None:
        self.by_model.setdefault(model, Calls()).add(usage, cost)
        self.month_spend[month] = self.month_spend.get(month, ZERO) + cost

    @property
    def calls(self) -> int:
        return sum(c.calls for c in self.by_model.values())

    @property
    def cost(self) -> Decimal:
        return sum((c.cost for c in self.by_model.values()), ZERO)

    @property
    def input_tokens(self) -> int:
        return sum(c.input_tokens for c in self.by_model.values())

    @property
    def cached_input_tokens(self) -> int:
        return sum(c.cached_input_tokens for c in self.by_model.values())

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.by_model.values())


class _Billing:
    """Prompt sizes and prices for one model, as the simulated provider bills them."""

    def __init__(self, spec: ModelSpec, prices: PriceBook, counter: TokenCounter, prefix: PrefixCache) -> None:
        self.spec = spec
        self.prices = prices
        self.counter = counter
        self.prefix = prefix
        self.base = counter.prompt_tokens([], spec.model)  # the tokens that prime the reply

    def size(self, c: Counted) -> int:
        return self.counter.prompt_tokens([c], self.spec.model) - self.base

    def bill(self, prefixes: list[tuple[int, int]], reply: Counted, now: datetime) -> tuple[Usage, Decimal]:
        """Usage and cost of a call whose prompt has these message-boundary prefixes."""
        model = self.spec.model
        cached = 0 if model.startswith("claude") else self.prefix.use(model, prefixes, now.timestamp())
        usage = Usage(prefixes[-1][1] + self.base, reply.tokens, cache_read_tokens=cached)
        return usage, self.prices.cost(model, usage)


@dataclass(slots=True)
class _Thread:
    """A user's conversation in the naive bot: the prefix through the last question, and the
    reply that followed it."""

    key: int
    tokens: int
    reply: Counted


class Naive:
    """The premium model with the whole conversation in every prompt; no cache, no limits."""

    def __init__(self, premium: ModelSpec, prices: PriceBook, counter: TokenCounter, system: Counted) -> None:
        self.billing = _Billing(premium, prices, counter, PrefixCache())
        self.tally = Tally()
        self.system = (prefix_key(0, system.message), self.billing.size(system))
        self.threads: dict[str, _Thread] = {}

    def add(self, a: Asked, month: str) -> None:
        b = self.billing
        prefixes = [self.system]
        key, tokens = self.system
        thread = self.threads.get(a.user)
        if thread is not None:
            # The previous prompt ended with the last question; its reply comes next. Only these
            # boundaries can be the longest cached one (all earlier ones were stored with them).
            prefixes.append((thread.key, thread.tokens))
            key, tokens = prefix_key(thread.key, thread.reply.message), thread.tokens + b.size(thread.reply)
            prefixes.append((key, tokens))
        key, tokens = prefix_key(key, a.question.message), tokens + b.size(a.question)
        prefixes.append((key, tokens))
        usage, cost = b.bill(prefixes, a.reply, a.now)
        self.tally.call(b.spec.model, usage, cost, month)
        self.tally.answered += 1
        self.threads[a.user] = _Thread(key, tokens, a.reply)


class Plain:
    """A typical budget bot (see the module's docstring)."""

    def __init__(
        self,
        cheap: ModelSpec,
        premium: ModelSpec,
        prices: PriceBook,
        counter: TokenCounter,
        system: Counted,
        *,
        limits: Limits,
        thresholds: Thresholds,
        calendar: Calendar,
        token_cap: int,
        cache_ttl_s: float,
        cache_size: int,
    ) -> None:
        prefix = PrefixCache()  # one account: both models share it, keyed by model
        self.cheap = _Billing(cheap, prices, counter, prefix)
        self.premium = _Billing(premium, prices, counter, prefix)
        self.system = system
        self.limits = limits
        self.thresholds = thresholds
        self.calendar = calendar
        self.token_cap = token_cap
        self.cache_ttl_s = cache_ttl_s
        self.cache_size = cache_size
        self.cache: OrderedDict[str, tuple[float, Counted]] = OrderedDict()  # key -> (expiry, answer)
        self.windows: dict[str, deque[Counted]] = {}
        self.spent: dict[tuple[str, str], int] = {}  # (user or "", month) -> nano-dollars
        self.tally = Tally()

    def add(self, a: Asked, month: str) -> None:
        t = self.tally
        lim = self.limits
        user_level = level_of(self.spent.get((a.user, month), 0), _nano(lim.user_monthly_usd), self.thresholds)
        bot_level = level_of(self.spent.get(("", month), 0), _nano(lim.global_monthly_usd), self.thresholds)
        if user_level is Level.BLOCK or bot_level is Level.BLOCK:
            t.refused += 1
            if user_level is Level.BLOCK:
                t.users_blocked.add(a.user)
            return
        if user_level is Level.WARN:
            t.users_warned.add(a.user)
        window = self.windows.setdefault(a.user, deque(maxlen=PLAIN_WINDOW))
        key = a.text.strip().lower()
        now = a.now.timestamp()
        hit = self.cache.get(key)
        if hit is not None and hit[0] > now:
            self.cache.move_to_end(key)
            t.cache_hits += 1
            t.follow_up_hits += bool(window) and not is_self_contained(a.text)
            t.answered += 1
            window.extend((a.question, hit[1]))
            return
        cheap = user_level is Level.WARN or bot_level is Level.WARN or a.complexity is not Complexity.COMPLEX
        b = self.cheap if cheap else self.premium
        history = list(window)
        prompt = [self.system, *history, a.question]
        sizes = [b.size(c) for c in prompt]
        while history and sum(sizes) + b.base > self.token_cap:  # cut at the cap, oldest first
            history.pop(0)
            sizes.pop(1)
            prompt.pop(1)
        usage, cost = b.bill(prefix_keys([c.message for c in prompt], sizes), a.reply, a.now)
        t.call(b.spec.model, usage, cost, month)
        t.answered += 1
        nanos = to_nano(cost)
        for who in (a.user, ""):
            self.spent[(who, month)] = self.spent.get((who, month), 0) + nanos
        self.cache[key] = (now + self.cache_ttl_s, a.reply)
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        window.extend((a.question, a.reply))


def _nano(v: Decimal | None) -> int | None:
    return None if v is None else to_nano(v)


def cheapest(catalog: list[ModelSpec], tier: Tier, prices: PriceBook) -> ModelSpec:
    """The tier's cheapest model (by a 1,000-in, 1,000-out call), as the router orders them."""
    specs = [s for s in catalog if s.tier is tier] or catalog
    return min(specs, key=lambda s: (prices.worst_case(s.model, 1000, 1000), s.name))


def month_key(calendar: Calendar, now: datetime) -> str:
    return calendar.window(Period.MONTH, now).key
