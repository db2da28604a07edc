"""The pipeline's stages, one job each, in the order bot.pipeline lists them.

A stage ends the chain by returning without calling ``next`` (duplicate, rate-limited, over budget,
cache hit) and does follow-up work after ``await next(turn)`` (cache store, conversation store).
"""

from __future__ import annotations

from bot import commands, metrics
from bot.calls import Outcome, call_chain, exempt, record_attempt, release_held
from bot.conversations import changed
from bot.jobs import rate_limited_key_at
from bot.turn import Deps, Inbound, Next, Once, Turn
from budget.cache import CachedAnswer
from budget.complexity import Complexity, classify
from budget.context import extractive_summary, turns_to_fold
from budget.ledger import Admission, BudgetUnavailable, quota_keys
from budget.money import ZERO
from budget.queries import is_self_contained, normalize_query
from budget.records import Conversation, Exchange, Kind, Status
from budget.rules import Level, Meter, Scope, Step, degradation, gate
from budget.tokens import Counted
from providers.base import ChatMessage, Usage
from providers.catalog import Tier
from providers.simulated import SUMMARY_MARKER

SHORT_CONTEXT_TURNS = 4
OVERHEAD = 4  # a prompt message's tokens besides its content: 3 framing tokens and the role
WARNED_TTL_S = 40 * 86_400  # a warning flag outlives its period (a month at most)
TIER_FOR = {Complexity.SIMPLE: Tier.CHEAP, Complexity.MEDIUM: Tier.STANDARD, Complexity.COMPLEX: Tier.PREMIUM}
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
SUMMARY_SYSTEM = (
    SUMMARY_MARKER + " below in a few short lines. Keep names, numbers, decisions and open "
    "questions; drop small talk. Write only the summary."
)


def reset_time(turn: Turn, meter: Meter) -> str:
    return meter.window.end.strftime("%Y-%m-%d %H:%M ") + turn.deps.settings.budget_timezone


async def dedupe(turn: Turn, next: Next) -> Turn:
    """A platform message seen before is dropped: no reply, no charge (invariant 4). One claimed on
    this host only (``turn.once``) is checked against every process's claims in the rate limit's
    round trip, or here if it gets a reply without one."""
    ib = turn.inbound
    if not turn.claimed and not await turn.deps.db.claim_inbox(
        ib.channel, ib.message_id, turn.user, inbox_payload(ib), turn.now
    ):
        return _duplicate(turn)
    if turn.once is not None and not asks_ai(ib) and await _repeated(turn):
        return _duplicate(turn)
    await _register(turn)
    return await next(turn)


def asks_ai(ib: Inbound) -> bool:
    """Whether a message goes on to the rate limit: text, not empty, not a command (``only_text``
    and ``command`` answer the others)."""
    return ib.kind == "text" and bool(ib.text.strip()) and not ib.text.startswith("/")


def _duplicate(turn: Turn) -> Turn:
    turn.repeated = True
    turn.outcome("dedupe", "duplicate")
    return turn


async def _repeated(turn: Turn, *, hot_down: bool = False) -> bool:
    """Whether another claim of the message came first, in any process: the once-key set on its own
    (a message with no rate-limit round trip to ride in), or, if the hot store is out of reach or
    cannot tell every process's keys (``HotStore.once``), the database's word (``Once.mine``)."""
    assert turn.once is not None
    once, turn.once = turn.once, None
    if not hot_down:
        try:
            first = await turn.deps.hot.once(once.key, once.ttl_s)
        except Exception as error:
            turn.deps.log.warning("redelivery unchecked by the hot store (%s): the database says", type(error).__name__)
        else:
            if first is not None:
                return not (first and await _won(turn, once))
    return not await once.mine()


async def _won(turn: Turn, once: Once) -> bool:
    """The message's once-key was set by this run: whether the message is its own. A process that
    could not see the key goes by the database's claim, so where the claim's write has answered
    that another's came first, the row decides now, before any model is paid; else the dispatcher
    asks before the answer is kept or sent (``turn.once_won``)."""
    decided = await once.decided()
    turn.once_won = decided is None
    return decided is not False


async def _register(turn: Turn) -> None:
    """The user's row (channel, platform id, active), written once per process, not per message."""
    d, ib = turn.deps, turn.inbound
    if turn.user in d.seen_users:
        return
    try:
        await d.db.upsert_user(turn.user, ib.channel, ib.user_id, turn.now)
        d.seen_users.add(turn.user)
    except Exception as error:
        d.log.warning("user not registered (%s)", type(error).__name__)


def inbox_payload(ib: Inbound) -> dict[str, str]:
    """What the inbox keeps of a message: enough to run it again after a crash."""
    return {"chat_id": ib.chat_id, "user_id": ib.user_id, "text": ib.text, "kind": ib.kind}


async def only_text(turn: Turn, next: Next) -> Turn:
    """Photos, voice notes, stickers and the like get one short reply; empty text too."""
    texts = turn.deps.texts
    if turn.inbound.kind != "text":
        turn.replies.append(texts.only_text)
        turn.outcome("kind", turn.inbound.kind)
        return turn
    if not turn.inbound.text.strip():
        turn.replies.append(texts.empty)
        turn.outcome("kind", "empty")
        return turn
    return await next(turn)


async def command(turn: Turn, next: Next) -> Turn:
    """Slash commands answer directly and never reach an AI model."""
    if not turn.inbound.text.startswith("/"):
        return await next(turn)
    turn.replies.append(await commands.run(turn))
    turn.outcome("command", turn.inbound.text.split()[0])
    return turn


async def rate_limit(turn: Turn, next: Next) -> Turn:
    """Before any budget work, so a flood costs one round trip at most. The budget's
    counters, the cache entries the message may be answered from and, for a message the budget
    lets through as it is, the answer's reservation come in the same round trip (one for all).
    A user this process saw refused is refused again, until the store would let them through,
    without that round trip or any of its planning (``RateLimiter.refused``)."""
    wait = turn.deps.limiter.refused(turn.user, turn.now.timestamp())
    if wait and turn.once is not None and await _repeated(turn):
        return _duplicate(turn)
    wait = wait or await _hit_and_read(turn)
    if turn.repeated:
        if turn.held is not None:  # reserved in the round trip that set the once-key
            await release_held(turn)
        return _duplicate(turn)
    if wait:
        turn.deps.refusals.add(rate_limited_key_at(turn.now, turn.deps.calendar.tz))  # the rate_limited alert's
        metrics.rate_limited(turn.inbound.channel)
        turn.replies.append(turn.deps.texts.rate_limited.format(seconds=wait))
        turn.outcome("rate_limit", f"wait {wait}s")
        return turn
    try:
        return await next(turn)
    finally:
        if turn.held is not None:  # the answer did not use it (a plan that changed, a stage that ended early)
            await release_held(turn)


async def _hit_and_read(turn: Turn) -> int:
    """The rate limit's round trip: its wait (0: counted, go on), with the reads it carries."""
    d = turn.deps
    try:
        counters = d.budget.counter_keys(turn.user, turn.now)
        keys = counters + quota_keys(turn.user)
        flags = [warned_key(turn.user, k) for k in counters]
        version = [turn.known_at[0]] if turn.known_at is not None else []
        peeks = _cache_candidates(turn)
        planned = _planned(turn, peeks)
        once = (turn.once.key, turn.once.ttl_s) if turn.once is not None else None
        read = await d.limiter.wait_time_and_read(
            turn.user, turn.now.timestamp(), keys + flags + version, list(peeks.values()), planned and planned[1].admit,
            once,
        )  # fmt: skip
    except Exception as error:
        # Fail open: the budget gate after this stage still guards the money.
        d.log.warning("rate limiter unreachable (%s); message let through", type(error).__name__)
        _known_at(turn, None)
        turn.repeated = turn.once is not None and await _repeated(turn, hot_down=True)
        return 0
    if read.repeated:
        turn.once, turn.repeated = None, True
        return 0
    turn.counters = read.values[: len(keys)]
    turn.warned = frozenset(k for k, v in zip(flags, read.values[len(keys) : len(keys) + len(flags)], strict=True) if v)
    if version:
        _known_at(turn, read.values[-1])
    turn.peeked = {tier: (key, raw) for (tier, key), raw in zip(peeks.items(), read.peeked, strict=True)}
    turn.held = planned if read.reserved else None
    if read.unchecked:  # the hot store in use cannot tell every process's once-keys
        turn.repeated = await _repeated(turn, hot_down=True)
    elif turn.once is not None:
        set_here, turn.once = turn.once, None
        turn.repeated = not await _won(turn, set_here)
    return 0 if turn.repeated else int(read.wait)


def _known_at(turn: Turn, version: int | None) -> None:
    """Check the process's copy of the conversation against the version read (None: missing, or
    not read): another version, and the conversation is read again (the cache stage reads it)."""
    if turn.known_at is None:
        return
    turn.version = version
    if version is None or version != turn.known_at[1]:
        turn.stale = True
        turn.conversation = None


def _cache_candidates(turn: Turn) -> dict[Tier, str]:
    """The cache keys this message may look up, by tier, read in the rate limit's round trip:
    the tier of its complexity and the cheap one (a budget warning or the ladder moves it there),
    for a question the cache may serve (the cache stage decides, with the conversation)."""
    conv, text, d = turn.conversation, turn.inbound.text, turn.deps
    turn.complexity = classify(text)
    if conv is not None and (conv.turns or conv.summary is not None) and not self_contained(turn):
        return {}
    normalized = normalize_query(text)
    return {tier: d.cache.key(normalized, d.persona, tier.value) for tier in (TIER_FOR[turn.complexity], Tier.CHEAP)}


def _planned(turn: Turn, peeks: dict[Tier, str]) -> tuple[str, Admission] | None:
    try:
        return _admission(turn, peeks)
    except Exception as error:  # the answer plans it again, and says what is wrong there
        turn.deps.log.warning("reservation not planned with the rate limit (%s)", type(error).__name__)
        return None


def _admission(turn: Turn, peeks: dict[Tier, str]) -> tuple[str, Admission] | None:
    """The answer's reservation (its model, and what it holds), planned before the gate for a
    message that needs no change to pass it: its complexity's tier, the whole reply, no fold. It
    is made with the rate limit's read only if the budget would let the message through as it is
    and no cached answer serves it (``Budget.admission``), and used only if the answer's own plan
    is the same (``bot.calls``); else released."""
    d, conv = turn.deps, turn.conversation
    if conv is None or turn.complexity is None:
        return None
    message = counted_message(turn)
    if message.tokens > d.policy.token_cap // 2 or folds(turn, conv, message)[0]:
        return None
    tier = TIER_FOR[turn.complexity]
    chain = d.router.chain(tier, turn.now.timestamp())
    if not chain:
        return None
    model, wanted = chain[0].model, d.settings.max_reply_tokens
    prompt = prompt_of(d, conv, message)
    turn.planned_prompt = conv, prompt
    input_tokens = d.counter.prompt_tokens(prompt, model)
    admission = d.budget.admission(
        turn.user, turn.now, exempt=exempt(turn), cost=d.prices.worst_case(model, input_tokens, wanted),
        tokens=input_tokens + wanted, thresholds=d.thresholds, ladder=d.ladder, unless=peeks.get(tier),
    )  # fmt: skip
    return None if admission is None else (model, admission)


def self_contained(turn: Turn) -> bool:
    """``is_self_contained`` of the message, worked out once."""
    if turn.self_contained is None:
        turn.self_contained = is_self_contained(turn.inbound.text)
    return turn.self_contained


async def budget_gate(turn: Turn, next: Next) -> Turn:
    """The user's budgets: below the warning threshold go on; from it warn once a period and move
    to the cheap tier; from the critical threshold answer with the block text and when it resets.
    The bot's own budget moves the degradation ladder instead (cheaper, shorter, cache only)."""
    d = turn.deps
    try:
        turn.meters = await d.budget.meters(turn.user, turn.now, exempt=exempt(turn), read=turn.counters)
    except BudgetUnavailable as error:
        # Never spend unchecked: without the budget's word there is no AI call.
        d.log.error("%s; AI replies paused", error)
        turn.replies.append(d.texts.paused)
        turn.outcome("budget", "unavailable")
        return turn
    metrics.budget_meters(turn.meters)
    decision = gate([m for m in turn.meters if m.scope is Scope.USER], d.thresholds)
    turn.level, meter = decision.level, decision.meter
    turn.outcome("budget", "ok")
    if meter is not None and meter.limit is not None and decision.level is not Level.OK:
        words = {"period": period_word(meter), "reset": reset_time(turn, meter)}
        if decision.level is Level.BLOCK:
            turn.replies.append(d.texts.blocked_user.format(**words))
            turn.outcome("budget", f"blocked user {meter.period.value}")
            metrics.budget_event("block", meter.scope, meter.period)
            return turn
        if await _first_warning(turn, meter):
            metrics.budget_event("warning", meter.scope, meter.period)
            turn.notices.append(d.texts.warn_user.format(percent=int(100 * meter.used / meter.limit), **words))
        turn.outcome("budget", f"warn user {meter.period.value}")
    turn.step, bot_meter = degradation(turn.meters, d.ladder)
    if bot_meter is not None and bot_meter.limit and turn.step >= Step.CHEAPER:
        turn.outcome("ladder", turn.step.name.lower())
        if await _first_warning(turn, bot_meter):
            metrics.budget_event("warning", bot_meter.scope, bot_meter.period)
            words = {"period": period_word(bot_meter), "reset": reset_time(turn, bot_meter)}
            percent = int(100 * bot_meter.used / bot_meter.limit)
            turn.notices.append(d.texts.warn_global.format(percent=percent, **words))
    return await next(turn)


def warned_key(user: str, meter_key: str) -> str:
    return f"pb:{{{user}}}:warned:{meter_key}"


async def _first_warning(turn: Turn, meter: Meter) -> bool:
    """True once a period per user and meter. The flags read with the rate limit spare the
    round trip once the user was warned; set_once decides when they say not yet."""
    key = warned_key(turn.user, meter.key)
    return key not in turn.warned and await turn.deps.hot.set_once(key, ttl_s=WARNED_TTL_S)


def period_word(meter: Meter) -> str:
    return "daily" if meter.period.value == "day" else "monthly"


async def classify_message(turn: Turn, next: Next) -> Turn:
    """Complexity picks the tier; a budget warning or the ladder's first step moves every message
    to the cheap tier."""
    turn.complexity = turn.complexity or classify(turn.inbound.text)  # classified with the rate limit
    cheap = turn.level is Level.WARN or turn.step >= Step.CHEAPER
    turn.tier = Tier.CHEAP if cheap else TIER_FOR[turn.complexity]
    return await next(turn)


async def cache(turn: Turn, next: Next) -> Turn:
    """Serve a self-contained question answered before; store answers made with no history. On
    the ladder's last step the cache is all there is: a miss gets the cache-only text."""
    d = turn.deps
    turn.conversation = conv = turn.conversation or await d.db.conversation(turn.user)
    starts = not conv.turns and conv.summary is None
    hit, key = None, None
    if starts or self_contained(turn):
        assert turn.tier is not None
        if turn.tier in turn.peeked:  # read with the rate limit: no round trip here
            key, raw = turn.peeked[turn.tier]
            hit = d.cache.peeked(key, raw, turn.now.timestamp())
        else:
            key = d.cache.key(normalize_query(turn.inbound.text), d.persona, turn.tier.value)
            try:
                hit = await d.cache.get(key, turn.now.timestamp())
            except Exception as error:
                d.log.warning("cache unreachable (%s): a miss", type(error).__name__)
        metrics.cache_lookup(turn.inbound.channel, hit is not None)
    if hit is not None:
        await _record_hit(turn, hit)
        turn.answer = hit.text
        turn.replies.extend([*turn.notices, hit.text])
        turn.outcome("cache", "hit")
        await _remember(turn)
        return turn
    turn.outcome("cache", "miss" if key else "not self-contained")
    if turn.step >= Step.CACHE_ONLY:
        meter = next_bot_meter(turn)
        turn.replies.append(d.texts.cache_only.format(period=period_word(meter), reset=reset_time(turn, meter)))
        turn.outcome("answer", "cache only")
        metrics.budget_event("block", meter.scope, meter.period)
        return turn
    turn = await next(turn)
    if key and turn.answer is not None and turn.answered_by is not None and not turn.history_in_prompt:
        answer = CachedAnswer(turn.answer, turn.cost, turn.answered_by.provider, turn.answered_by.model)
        # On the ladder's shorter step answers live four times longer: each hit is money kept.
        ttl = d.cache.ttl_s * (4 if turn.step >= Step.SHORTER else 1)
        try:
            await d.cache.put(key, answer, turn.now.timestamp(), ttl)
        except Exception as error:
            d.log.warning("cache unreachable (%s): answer not stored", type(error).__name__)
    return turn


def next_bot_meter(turn: Turn) -> Meter:
    """The bot's fullest dollar meter (the one that set the ladder's step)."""
    _, meter = degradation(turn.meters, turn.deps.ladder)
    assert meter is not None
    return meter


async def _record_hit(turn: Turn, hit: CachedAnswer) -> None:
    await record_attempt(
        turn, kind=Kind.ANSWER, provider=hit.provider, model=hit.model, status=Status.CACHED, usage=Usage(),
        saved=hit.cost, tier=turn.tier.value if turn.tier else None, reason="cache hit",
    )  # fmt: skip


async def context(turn: Turn, next: Next) -> Turn:
    """Build the prompt (system, summary, unfolded turns, new message), folding old turns into
    the summary when there are too many or they pass the token cap; store the exchange after."""
    d = turn.deps
    message = counted_message(turn)
    limit = d.policy.token_cap // 2
    if message.tokens > limit:
        turn.replies.append(d.texts.too_long.format(tokens=message.tokens, limit=limit))
        turn.outcome("context", "too long")
        return turn
    conv = turn.conversation or await d.db.conversation(turn.user)
    n, turn.fold_later = folds(turn, conv, message)
    seen = f"{len(conv.turns)} turns{', summary' if conv.summary else ''}"
    if n:
        conv = await _fold(turn, conv, n, free=turn.step >= Step.SHORTER)
    turn.conversation = conv
    planned = turn.planned_prompt
    turn.prompt = planned[1] if planned is not None and planned[0] is conv else prompt_of(d, conv, message)
    turn.history_in_prompt = bool(conv.turns or conv.summary)
    later = f", {turn.fold_later} to fold after the reply" if turn.fold_later else ""
    turn.outcome("context", seen + (f", folded {n}" if n else "") + later)
    turn = await next(turn)
    await _remember(turn)
    return turn


def counted_message(turn: Turn) -> Counted:
    """The message, counted once."""
    if turn.message is None:
        turn.message = turn.deps.counter.count(ChatMessage("user", turn.inbound.text))
    return turn.message


def to_fold(turn: Turn, conv: Conversation, message: Counted) -> int:
    """How many of the oldest turns to fold before ``message`` goes out: too many, or past the
    token cap, or on the ladder's shorter step all but the last 4."""
    n = turns_to_fold(
        [t.tokens + OVERHEAD for t in conv.turns],
        _fixed(turn.deps, message),
        conv.summary.tokens + OVERHEAD if conv.summary else 0,
        turn.deps.policy,
    )
    if turn.step >= Step.SHORTER:
        n = max(n, len(conv.turns) - SHORT_CONTEXT_TURNS)
    return n


def folds(turn: Turn, conv: Conversation, message: Counted) -> tuple[int, int]:
    """How many of the oldest turns to fold before ``message`` goes out, and how many after its
    reply is sent. A webhook's message (claimed) whose prompt fits the token cap unfolded folds by
    count after its reply, off its path (``bot.dispatch``); a fold the cap or the ladder's shorter
    step needs happens first."""
    n = to_fold(turn, conv, message)
    if n and turn.claimed and turn.step < Step.SHORTER and not _over_cap(turn, conv, message):
        return 0, n
    return n, 0


def _over_cap(turn: Turn, conv: Conversation, message: Counted) -> bool:
    """Whether the prompt, with every unfolded turn in it, passes the token cap."""
    history = [t.tokens + OVERHEAD for t in ([conv.summary] if conv.summary else []) + conv.turns]
    return _fixed(turn.deps, message) + sum(history) > turn.deps.policy.token_cap


def _fixed(d: Deps, message: Counted) -> int:
    """The prompt's tokens besides the history: system, the new message, the reply's priming."""
    return d.system.tokens + message.tokens + 2 * OVERHEAD + 3


async def fold_after_reply(turn: Turn) -> None:
    """The fold ``folds`` put off, once the message's reply is sent."""
    assert turn.conversation is not None
    await _fold(turn, turn.conversation, turn.fold_later)


def prompt_of(d: Deps, conv: Conversation, message: Counted) -> list[Counted]:
    """System, summary, the unfolded turns, the new message."""
    history = ([conv.summary] if conv.summary else []) + conv.turns
    return (
        [d.system]
        + [
            Counted(ChatMessage("system" if t.role == "summary" else t.role, t.content), t.tokens, t.size)
            for t in history
        ]
        + [message]
    )


async def _remember(turn: Turn) -> None:
    """Store the exchange, counted once, so later turns never re-encode it. A claimed message's
    exchange is left on the turn: the dispatcher stores it with the replies, in one write."""
    if turn.answer is None:
        return
    d = turn.deps
    message = counted_message(turn)
    reply = d.counter.count(ChatMessage("assistant", turn.answer))
    turn.exchange = exchange = Exchange(
        turn.user,
        (
            ("user", message.message.content, message.tokens, message.size),
            ("assistant", reply.message.content, reply.tokens, reply.size),
        ),
        turn.now,
    )
    if turn.claimed:
        return
    try:
        await d.db.add_turns(exchange.user_key, exchange.turns, exchange.at)
        await changed(d.hot, d.conversations, exchange.user_key)
    except Exception as error:
        # The answer is paid for and goes out; failing the message here would answer it twice.
        # Only this exchange is missing from the conversation's memory (the database is down).
        d.log.error("conversation not stored (%s): the exchange is left out of the history", type(error).__name__)


async def _fold(turn: Turn, conv: Conversation, n: int, *, free: bool = False) -> Conversation:
    """Fold the oldest n turns into the summary, by the cheapest model; if none can be paid
    for or none answers (or ``free``: the bot's budget is low), by an extractive summary, so no
    turn is ever dropped (invariant 9)."""
    d = turn.deps
    if any(not t.id for t in conv.turns[:n]):  # this process's copy, with turns not read back yet
        conv, n = await _with_ids(turn, conv, n)
        if not n:
            return conv
    old = conv.turns[:n]
    previous = conv.summary.content.removeprefix(SUMMARY_PREFIX) if conv.summary else None
    transcript = "\n".join(f"{'User' if t.role == 'user' else 'Assistant'}: {t.content}" for t in old)
    source = (f"Earlier summary:\n{previous}\n\n" if previous else "") + transcript
    prompt = [d.counter.count(ChatMessage("system", SUMMARY_SYSTEM)), d.counter.count(ChatMessage("user", source))]
    chain = [] if free else d.router.chain(Tier.CHEAP, turn.now.timestamp())
    try:
        outcome = await call_chain(turn, chain, prompt, Kind.SUMMARY, d.policy.summary_tokens)
    except BudgetUnavailable:
        outcome = Outcome(None, None, ZERO, over_budget=True)  # fold for free, below
    text = outcome.result.text if outcome.result else extractive_summary(previous, [(t.role, t.content) for t in old])
    turn.cost += outcome.cost
    summary = d.counter.count(ChatMessage("system", SUMMARY_PREFIX + text))
    stored = await d.db.fold(
        turn.user, [t.id for t in old], (summary.message.content, summary.tokens, summary.size), turn.now
    )
    turn.folded = True
    if not turn.claimed:
        await changed(d.hot, d.conversations, turn.user)
    elif d.conversations is not None:  # the dispatcher sets the new version, with its other writes
        d.conversations.folded(turn.user, old, stored)
    return Conversation(stored, conv.turns[n:])


async def _with_ids(turn: Turn, conv: Conversation, n: int) -> tuple[Conversation, int]:
    """The database's ids for the turns of a process's copy (those it stored itself have none), by
    their place: the copy is the database's turns, then any still on their way there. ``n`` is cut
    to the turns found (a fold waits for the rest)."""
    stored = (await turn.deps.db.conversation(turn.user)).turns
    turns = list(conv.turns)
    for i, t in enumerate(turns[: len(stored)]):
        if not t.id and (stored[i].role, stored[i].content) == (t.role, t.content):
            turns[i] = stored[i]
    known = next((i for i, t in enumerate(turns) if not t.id), len(turns))
    return Conversation(conv.summary, turns), min(n, known)


async def choose(turn: Turn, next: Next) -> Turn:
    """The fallback chain for the tier, healthy providers first, cheapest first; logged with why."""
    d = turn.deps
    assert turn.tier is not None
    turn.chain = d.router.chain(turn.tier, turn.now.timestamp())
    first = turn.chain[0]
    reason = (
        f"complexity={turn.complexity} budget={turn.level.name.lower()} tier={turn.tier} "
        f"-> {first.name} ({'healthy' if d.router.healthy(first.provider, turn.now.timestamp()) else 'all in cooldown'}"
        f", cheapest of its tier)"
    )
    turn.outcome("choose", reason)
    d.log.debug("choice: %s", reason)  # the message's own line has it too (outcomes.choose)
    return await next(turn)


async def answer(turn: Turn, next: Next) -> Turn:
    """Call the chain; the reply is the answer, or the over-budget or unavailable text."""
    d = turn.deps
    try:
        outcome = await call_chain(turn, turn.chain, turn.prompt, Kind.ANSWER, d.settings.max_reply_tokens)
    except BudgetUnavailable as error:
        d.log.error("%s; AI replies paused", error)
        turn.replies.append(d.texts.paused)
        turn.outcome("answer", "budget unavailable")
        return turn
    if outcome.result is None:
        if outcome.over_budget:
            month = user_month_meter(turn)
            turn.replies.append(d.texts.over_budget.format(reset=reset_time(turn, month)))
            turn.outcome("answer", "over budget")
        else:
            turn.replies.append(d.texts.providers_down)
            turn.outcome("answer", "providers failed")
        return turn
    turn.answer = outcome.result.text
    turn.answered_by = outcome.spec
    turn.usage = outcome.result.usage
    turn.cost += outcome.cost
    turn.replies.extend([*turn.notices, outcome.result.text])
    turn.outcome("answer", f"{outcome.spec.name if outcome.spec else '?'} ${outcome.cost}")
    return await next(turn)


def user_month_meter(turn: Turn) -> Meter:
    return next(m for m in turn.meters if m.scope is Scope.USER and m.period.value == "month")
