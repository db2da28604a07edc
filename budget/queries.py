"""Cache keys and cache safety for user messages: normalizing a query and judging whether it stands alone.

``normalize_query`` maps spellings of the same question to one cache key. ``is_self_contained``
decides whether a message can be understood without the conversation before it, so that an
answer made with no history may serve it (DESIGN.md, invariant 6).

``is_self_contained`` errs towards False: a wrong cache hit gives a user a wrong answer, a miss
only costs one model call. The text is NFKC-folded and casefolded, quoted strings and code
spans become one content token, leading fillers ("ok", "thanks", "hey", "can you") and "please"
are dropped, and then it answers False at the first rule that fires:

1. Fragment: nothing or one word is left ("why?", "Germany?", "continue").
2. Continuation: it opens with a connective ("and", "but", "also", "so", "or", "then", "now",
   "not", "y", "pero", "et", "mais", "und", "aber", ...) or a preposition ("in 2020?").
3. Ellipsis: a question word followed by nothing, a preposition, "not", "else" or "about"
   ("why not?", "how much in euros?", "what about Germany?"), or a request verb with no object
   ("explain like I'm 5", "translate into Spanish").
4. Reference to the conversation: "you said", "I just asked", "we discussed", "again", "earlier",
   "above", "our conversation", "your answer", "same", "another" (but not "another word for"),
   "the second one", "the other option", "option 2", "which is older?" (no set to choose from),
   "a version for kids", "cite", an opening edit verb ("add", "include", "remove"), or an ending
   "too", "as well", "instead", "then", "now", "next", "one", "first", "last".
5. Unresolved pronoun: a demonstrative ("this", "these", "those", "that city") points outside the
   message, unless "this" points forward to a colon, quote or code, names a time ("this year"),
   or "that" opens a clause ("is it true that ...", "a word that means ..."); a place "there"
   (not "there is"); "it", "he", "she", "they" with no content word between the first word
   (usually the verb) and the word governing the pronoun ("translate it to French" fails, "who
   was Napoleon and when did he die?" passes; "they" wants a plural); a pronoun closing the
   message after a preposition ("what do people think about it"). Dummy "it" ("is it safe to",
   "how long does it take", "what time is it in") is no reference.
6. Unseen artifact: "the/this/your (word) X" or "my X" where X is something shown before (code,
   bug, answer, intro, recipe, joke, math, ...) with no "of/for/about ..." after it and no text,
   quote or code in the message ("fix the bug", "what's the answer?", "send the full code").
7. No topic: every word is a function word, a generic verb ("tell", "make", "add"), a generic or
   relational noun ("example", "option", "capital", "price", "risks": they need an "of ..."),
   an ordinal, a comparative, a number word, or a word that only follows a framing preposition
   ("an example in Java", "now in Spanish").
8. Two words whose first is not a request verb ("explain", "define", ...) or a fused question
   word ("what's"): "explain photosynthesis" passes, "shorter please" does not.

Measured: every follow-up in ``tests/data/followups.jsonl`` (252) is judged False, and 197 of the
198 self-contained messages True. The rules were grown round by round on fresh follow-ups; before
the last round's fixes they caught 34 of 40 follow-ups never seen (85%), so expect about one
follow-up in seven to pass as self-contained; the cache should also prefer messages that start a
conversation.

Beyond English only the leading connectives of a few European languages are known; other
follow-ups in those languages may pass rule 7 as content. Whether an answer goes stale
("weather today", "latest version") is a separate question, left to the cache's expiry.
"""

from __future__ import annotations

import re
import unicodedata

# -- normalize_query ------------------------------------------------------------------------

_TRAILING_PUNCT = "?!.…。？！‽"  # NFKC already maps fullwidth ？！ to ?!, kept for clarity
_LEADING_PUNCT = "¿¡"
_OPEN_QUOTES = "\"'`“‘„«‹「『"
_CLOSE_QUOTES = "\"'`”’“»›」』"


def _normalize_once(text: str) -> str:
    # NFKC folds compatibility forms (fullwidth letters and digits, ligatures, "…" to "...").
    text = unicodedata.normalize("NFKC", text)
    # casefold is a stronger lower(): "ß" -> "ss", so "STRASSE" and "straße" meet.
    text = text.casefold()
    # Any run of Unicode whitespace (tabs, newlines, NBSP after NFKC) becomes one space.
    text = " ".join(text.split())
    # Strip question marks and friends, and quotes wrapping the whole text, from the ends.
    # They change how a question reads, not what it asks.
    while True:
        before = text
        text = text.rstrip(_TRAILING_PUNCT).lstrip(_LEADING_PUNCT).strip()
        if len(text) >= 2 and text[0] in _OPEN_QUOTES and text[-1] in _CLOSE_QUOTES:
            text = text[1:-1].strip()
        if text == before:
            return text


def normalize_query(text: str) -> str:
    """Fold a message to a cache key: NFKC, casefold, one space, no end punctuation or quotes."""
    # casefold can produce text NFKC changes again (and the reverse), and stripping can expose
    # new end punctuation; repeating to a fixed point makes the function idempotent.
    result = _normalize_once(text)
    for _ in range(4):
        again = _normalize_once(result)
        if again == result:
            break
        result = again
    return result


# -- is_self_contained ----------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FILLERS = _words(
    "ok okay k kk hmm hm um uh well great thanks thank thx ty cool nice right alright yes yeah yep "
    "no nope hey hi hello oh ah wow lol haha sorry please pls plz sure perfect awesome good"
)
_CONNECTIVES = _words(
    "and but also so or plus then too now instead anyway besides however otherwise not actually "
    "y e pero también tambien et mais aussi puis alors und aber auch oder dann"
)
_PREPOSITIONS = _words(
    "in on at for with from to by of about than into like without via per during after before "
    "under over between against vs versus en à con para por mit für auf im"
)
_WH = _words("what whats why how who whos when where which whose whom")
_WH_FUSED = _words("what's who's where's when's how's whats whos")
_DEGREE = _words("much many long far old big often tall come exactly")
# "how to ..." is a question of its own; "how much in euros?" borrows its verb.
_ELLIPSIS_AFTER_WH = (_PREPOSITIONS - {"to"}) | _words("not else about then so now exactly")
_POLITE_OPENERS = (("can", "you"), ("could", "you"), ("would", "you"), ("will", "you"), ("can", "u"), ("could", "u"))
# A request verb followed by one of these has lost its object: "explain in simpler terms".
_BARE_REQUEST_NEXT = _PREPOSITIONS | _words("like more again better differently simply briefly")
_REQUEST_VERBS = _words(
    "explain define describe translate summarize summarise list name calculate convert compute "
    "recommend suggest compare solve write draft"
)
_ANAPHORS = _words(
    "it its it's itself that that's this these those they them their theirs they're themselves "
    "he him his he's himself she her hers she's herself"
)
_FORWARD_POINTERS = _words("this these")
_DEMONSTRATIVES = _words("this these those that's")
_PLURAL_ANAPHORS = _words("they them their theirs they're themselves")
# "there" is a place only when it is not the existential "there is/are ...".
_EXISTENTIAL_AFTER_THERE = _words("is are was were be been will would 's any a an no")
# "that" after these words introduces a clause ("is it true that ..."), it points nowhere.
_THAT_HEADS = _words(
    "true false possible say says said think believe know heard read mean means claim claims "
    "fact so such likely given assuming suppose sure"
)
_TIME_NOUNS = _words(
    "year month week weekend morning afternoon evening night season summer winter spring fall "
    "autumn century decade time"
)
# Greetings and thanks stay content inside a message ("how do you say hello in Italian?").
_FUNCTION_WORDS = (
    (_FILLERS - _words("hey hi hello thanks thank thx ty lol haha wow oh ah sorry cool nice great"))
    | _CONNECTIVES
    | _PREPOSITIONS
    | _WH
    | _WH_FUSED
    | _DEGREE
    | _ANAPHORS
    | _REQUEST_VERBS
    | _words(
        # articles, determiners, personal pronouns, auxiliaries
        "a an the some any all each every both either neither no not none another other others "
        "i me my mine myself you your yours yourself u ur we us our ours one ones "
        "is am are was were be been being isn't aren't wasn't weren't 's 're 'm "
        "do does did doing done don't doesn't didn't have has had having haven't hasn't "
        "can could will would shall should may might must can't couldn't won't wouldn't "
        "shouldn't i'm i've i'd you're you've let let's if whether just only very really "
        "again still even more most less least much many few lot lots bit little there here "
        "there's here's yes up down out off over"
        # generic verbs: they carry no topic of their own
        " tell told say said show give gave make made get got go going went put take try keep "
        "mean meant think know want need like see look help continue redo repeat elaborate "
        "expand rewrite rephrase shorten simplify fix change use used work works"
        # generic nouns and ordinals that only make sense with a referent
        " thing things stuff example examples option options part parts point points answer "
        "approach approaches method methods solution solutions "
        "answers question questions way ways version versions difference differences detail "
        "details info information idea ideas case one first second third fourth fifth last "
        "latter former next previous above below same"
        # comparatives and verdicts: "which one is cheaper?", "are you sure?"
        " better best worse worst cheaper bigger smaller shorter longer simpler easier harder "
        "faster slower safer more less different correct right wrong true false good bad "
        "okay fine sure formal casual funnier detailed"
        # edit and format verbs: "add more examples", "use bullet points"
        " add remove include exclude delete drop skip replace swap format bullet bullets markdown "
        "tone style words"
        # number words: "compare the two"
        " two three four five six seven eight nine ten"
        # relational nouns, which need an "of ...": "what's the capital?", "and its population?"
        " capital population price prices cost costs size height weight age name meaning "
        "definition author president ceo owner founder origin history source sources reason "
        "reasons alternative alternatives pros cons benefits downsides advantages disadvantages "
        "conclusion intro introduction summary steps result results release date day year month "
        "location distance temperature weather length plural synonym synonyms opposite antonym "
        "risk risks danger dangers drawback drawbacks limitation limitations requirement "
        "requirements problem problems issue issues recipe recipes ending beginning specific "
        "main key major important top biggest full whole rest"
    )
)
# A topic word right after one of these only sets a frame ("an example in Java", "for dogs?").
_FRAME_PREPOSITIONS = _words("in into with using on at by than from")

_QUOTED = re.compile(
    r"```.*?```|`[^`]*`|\"[^\"]*\"|“[^”]*”|„[^“”]*[“”]|«[^»]*»|「[^」]*」|(?<!\w)'[^']+'(?!\w)|‘[^’]*’",
    re.DOTALL,
)
_QUOTE_MARK = " qquoteq "  # stands for quoted text: content the question is about
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

_ADJ = (
    r"(?:safe|possible|true|ok|okay|normal|bad|good|legal|illegal|healthy|necessary|better|worse|"
    r"worth|hard|easy|difficult|dangerous|rude|common|wrong|right|allowed|cheaper|faster|"
    r"important|likely|usual|best|ever|too late|too early)"
)
# Dummy "it": the subject of weather, time, distance or "it is X to ...", not a reference.
_EXPLETIVE_IT = re.compile(
    r"\b(?:is|was|isn't|wasn't|will|would|does|did|can|could)\s+(it)\s+(?:\w+\s+)?"
    + _ADJ
    + r"\s+(?:to|that|if|when|whether|for)\b"
    + r"|\b(it(?:'s|’s)|it\s+(?:is|was))\s+(?:\w+\s+)?"
    + _ADJ
    + r"\s+(?:to|that|if|when|whether)\b"
    + r"|\b(?:does|did|will|would|should)\s+(it)\s+(?:take|cost|rain|snow|get|hurt|matter)\b"
    + r"|\b(?:time|far|late|early|cold|hot|warm)\s+is\s+(it)\b"
)

# All branches start at a word, behind one \b: the engine then skips to word starts, where a
# branch anchored elsewhere would make it try every branch at every character (10x slower).
_REFERS_BACK = re.compile(
    r"\b(?:"
    r"(?:you|u)\s+(?:just\s+|also\s+)?(?:said|mentioned|wrote|told|suggested|gave|listed"
    r"|recommended|meant|mean|showed)\b"
    r"|(?:you|u)\s+just\s+say\b"
    r"|i\s+(?:just\s+|already\s+)?(?:said|asked|mentioned|told\s+you|wrote)\b"
    r"|i\s+(?:just|already)\s+(?:say|ask)\b"
    r"|we\s+(?:just\s+|already\s+)?(?:discuss(?:ed)?|talk(?:ed)?|cover(?:ed)?|said|say"
    r"|were\s+(?:talking|discussing))\b"
    r"|we\s+(?:just\s+)?(?:decided?|agreed?|picked|pick|chose|choose|settled?)\b"
    r"|remind\s+me\s+what\b"
    r"|(?:again|earlier|previous|previously|above|aforementioned)\b"
    r"|(?:our|this|the|that)\s+(?:conversation|chat|discussion|thread)\b"
    r"|(?:your|that|the|last|previous)\s+(?:answer|response|reply|message|suggestion"
    r"|explanation|list|example)s?\b(?!\s+(?:to|for|of|about)\b)"
    r"|my\s+(?:first|last|previous|second|other)\s+(?:question|message)\b"
    r"|same\b"
    r"|another\b(?!\s+(?:word|name|term|way\s+to\s+say)\b)"
    r"|(?:first|second|third|fourth|fifth|last|latter|former|other|previous|next|1st|2nd|3rd)"
    r"\s+(?:one|ones|option|options|point|points|answer|step|part|example|version|item|choice"
    r"|suggestion|idea|paragraph|sentence|line|bullet)\b"
    r"|the\s+(?:latter|former|others)\b"
    r"|(?:option|number|point|step|item|idea|choice)\s+\d+\b"
    r"|(?:a|an|another|the|that|this)\s+(?:\w+\s+)?version\b(?!\s+of\b)"
    r"|cite\b"
    r"|substitute\b(?!.*\b(?:for|with)\b)"
    r"|as\s+well$"
    r")"
)
# Openings that point back (matched at the start only).
_OPENS_BACK = re.compile(
    r"the\s+(?:one|ones|first|second|third|fourth|fifth|last|latter|former|other|others)\b"
    # "which is older?" names no set to choose from
    r"|which\s+(?:one\s+|ones\s+)?(?:is|are|was|were|should|would|do|does)\b"
    r"(?!.*\b(?:or|between)\b)"
    # editing the last answer: "include a budget", "add comments"
    r"|(?:include|add|remove|drop|exclude|insert|append|keep|replace|swap|shorten|expand)\b"
)
# Last words that point back: "in Java too?", "what's next?", "where can I buy one?".
_ENDS_BACK = _words(
    "too instead either then now next one ones first last "
    "source sources evidence citation citations reference references study studies"
)

# "fix the bug": an artifact that must have been shown earlier.
_ARTIFACT = re.compile(
    # "the full code", but "my python version" is the user's own thing, not an earlier artifact.
    r"\b(?:(?:the|this|that|these|those|your)\s+(?:\w+\s+)?|my\s+)(?:bug|code|error|answer|text|essay"
    r"|email|list|story|poem|function|script|table|file|document|article|paragraph|sentence"
    r"|translation|summary|result|output|problem|question|draft|letter|message|response|version"
    r"|program|query|link|image|picture|photo|video|song|snippet|command|page|chart|plan|tone"
    r"|style|wording|format|approach|solution|method|catch|deal|issue|reason|idea|point|step"
    r"|math|maths|reasoning|calculation|logic|numbers|figures|recommendation|work|source|formula"
    r"|acronym|abbreviation|word|term|phrase|name|title|headline|intro|introduction|conclusion"
    r"|ending|opening|outline|recipe|joke|quote|argument|claim|statement|passage|lyrics|riddle)s?\b"
    r"(?!\s+(?:of|for|about|that|which|who|to|from|between|with|called|named)\b)"
)
_CARRIES_TEXT = re.compile(r"[:\n]|qquoteq")


def _drop_dummy_it(match: re.Match[str]) -> str:
    """Blank the dummy "it" of an ``_EXPLETIVE_IT`` match, keeping the rest of it."""
    group = match.lastindex or 0  # one alternative matched, so its group is the last one set
    start, end = match.start(group) - match.start(), match.end(group) - match.start()
    whole = match.group(0)
    return whole[:start] + " " + whole[end:]


def _strip_openers(tokens: list[str]) -> list[str]:
    """Drop fillers ("ok", "thanks", "please") and "can you" at the front; they change nothing."""
    i = 0
    while i < len(tokens):
        if tokens[i] in _FILLERS:
            i += 1
        elif tuple(tokens[i : i + 2]) in _POLITE_OPENERS:
            i += 2
        elif tokens[i] == "you" and i > 0 and tokens[i - 1] == "thank":
            i += 1
        else:
            break
    return [t for t in tokens[i:] if t not in ("please", "pls", "plz")]


def _is_content(token: str) -> bool:
    return token not in _FUNCTION_WORDS


def _has_topic(tokens: list[str]) -> bool:
    """True when some content word is not just the frame after "in", "to", "for" and so on."""
    return any(
        _is_content(tok) and (i == 0 or tokens[i - 1] not in _FRAME_PREPOSITIONS) for i, tok in enumerate(tokens)
    )


def _unresolved_pronoun(tokens: list[str], forward_ok: bool) -> bool:
    """True when some pronoun has no content word between the first word and the one before it."""
    for i, tok in enumerate(tokens):
        if tok == "there":
            before = tokens[i - 1] if i > 0 else ""
            after = tokens[i + 1] if i + 1 < len(tokens) else ""
            if before not in _EXISTENTIAL_AFTER_THERE and after not in _EXISTENTIAL_AFTER_THERE:
                return True  # "what's the population there?"
            continue
        if tok not in _ANAPHORS:
            continue
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in _FORWARD_POINTERS and (forward_ok or nxt in _TIME_NOUNS):
            continue  # "this error: ...", "this year"
        if tok == "that" and nxt and i > 0 and (tokens[i - 1] in _THAT_HEADS or _is_content(tokens[i - 1])):
            continue  # "is it true that ...", "a word that means ..."
        if tok in _DEMONSTRATIVES or tok == "that":
            return True  # "that city", "a source for this": pointing outside the message

        # tokens[0] is usually the verb and tokens[i-1] the word governing the pronoun; "them"
        # wants a plural ("make a table of them" has none), so only words ending in "s" count.
        if not nxt and i > 0 and tokens[i - 1] in _PREPOSITIONS:
            return True  # "what do people think about it": a pronoun closing the message
        plural = tok in _PLURAL_ANAPHORS
        if not any(_is_content(t) and (not plural or t.endswith("s")) for t in tokens[1 : max(i - 1, 1)]):
            return True
    return False


def is_self_contained(text: str) -> bool:
    """True only when ``text`` can be understood with no earlier turns; errs towards False."""
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    unquoted = _QUOTED.sub(_QUOTE_MARK, folded)
    unquoted = _EXPLETIVE_IT.sub(_drop_dummy_it, unquoted)
    tokens = _strip_openers(_TOKEN.findall(unquoted.replace("’", "'")))
    if len(tokens) <= 1:
        return False  # rule 1
    first = tokens[0]
    if first in _CONNECTIVES or first in _PREPOSITIONS:
        return False  # rules 2 and 3
    if first in _REQUEST_VERBS and tokens[1] in _BARE_REQUEST_NEXT:
        return False  # rule 3: "explain like I'm 5", "explain again", "translate into Spanish"
    if first in _WH:
        after = 1
        while after < len(tokens) and tokens[after] in _DEGREE:
            after += 1
        if after == len(tokens) or tokens[after] in _ELLIPSIS_AFTER_WH:
            return False  # rule 3
    body = " ".join(tokens)
    if tokens[-1] in _ENDS_BACK or _OPENS_BACK.match(body) or _REFERS_BACK.search(body):
        return False  # rule 4
    carries_text = bool(_CARRIES_TEXT.search(unquoted))
    if _unresolved_pronoun(tokens, forward_ok=carries_text):
        return False  # rule 5
    if not carries_text and _ARTIFACT.search(body):
        return False  # rule 6
    if not _has_topic(tokens):
        return False  # rule 7
    # rule 8: two words stand alone only as "explain X", "define X", "what's X"
    return len(tokens) != 2 or first in _REQUEST_VERBS or first in _WH_FUSED
