"""Workload readers on real-shaped exports, and the generator's shape and determinism."""

import gzip
import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.workload_gen import Shape, generate
from bot.workloads import Workload, WorkloadError, WorkloadMessage, month_bounds, write_jsonl

DATA = Path(__file__).parent.parent / "data" / "workloads"
SHIPPED = Path(__file__).parents[2] / "workloads" / "month-1k.jsonl.gz"
CET = timezone(timedelta(hours=1))  # where the Telegram fixtures were "exported"


def read(path: Path, **kw: str) -> list[WorkloadMessage]:
    return list(Workload(path, **kw))


# -- pennybot's JSONL ----------------------------------------------------------------------------


def test_jsonl_reads_plain_and_gzipped(tmp_path: Path) -> None:
    lines = [
        '{"ts": "2026-11-01T08:00:00Z", "user": "7", "channel": "telegram", "text": "hi"}',
        "",
        '{"ts": "2026-11-01T09:00:00+01:00", "user": "+1555", "channel": "whatsapp", "text": "", "kind": "photo"}',
        '{"ts": "2026-11-01T08:30:00", "user": "7", "channel": "telegram", "text": "What is GDP?"}',
    ]
    plain = tmp_path / "w.jsonl"
    plain.write_text("\n".join(lines) + "\n")
    packed = tmp_path / "w.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        got = read(path, tz="Europe/Berlin")
        assert got == [
            WorkloadMessage(datetime(2026, 11, 1, 8, tzinfo=UTC), "7", "telegram", "hi"),
            WorkloadMessage(datetime(2026, 11, 1, 8, tzinfo=UTC), "+1555", "whatsapp", "", "photo"),
            # no offset: read in --tz
            WorkloadMessage(datetime(2026, 11, 1, 7, 30, tzinfo=UTC), "7", "telegram", "What is GDP?"),
        ]
        assert Workload(path).count() == 3


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "w.jsonl:2: not valid JSON"),
        ('["ts"]', "w.jsonl:2: expected an object with ts, user, channel, text"),
        ('{"ts": "2026-11-01T08:00:00Z", "user": "7", "channel": "telegram"}', "w.jsonl:2: 'text' is missing"),
        ('{"ts": "yesterday", "user": "7", "channel": "telegram", "text": "x"}', "w.jsonl:2: 'ts' is not an ISO 8601"),
        ('{"ts": "2026-11-01T08:00:00Z", "user": "", "channel": "telegram", "text": "x"}', "w.jsonl:2: 'user' and"),
    ],
)
def test_jsonl_errors_name_the_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text('{"ts": "2026-11-01T08:00:00Z", "user": "7", "channel": "telegram", "text": "hi"}\n' + line + "\n")
    with pytest.raises(WorkloadError) as error:
        read(path)
    assert str(error.value).startswith(str(tmp_path / problem))


def test_unknown_names_and_missing_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("x")
    with pytest.raises(WorkloadError, match=r"w\.csv: unknown workload format"):
        Workload(tmp_path / "w.csv")
    with pytest.raises(WorkloadError, match=r"nope\.jsonl: no such file"):
        Workload(tmp_path / "nope.jsonl")


# -- Telegram Desktop export -------------------------------------------------------------------


def test_telegram_one_chat_skips_the_bot_and_service_messages() -> None:
    source = Workload(DATA / "telegram_one_chat.json", bot_name="PennyBot")
    got = list(source)
    at = [datetime(2026, 11, 2, 10, 14, 3, tzinfo=CET), datetime(2026, 11, 2, 10, 15, 30, tzinfo=CET),
          datetime(2026, 11, 2, 10, 17, 12, tzinfo=CET), datetime(2026, 11, 2, 10, 18, 40, tzinfo=CET),
          datetime(2026, 11, 3, 8, 1, tzinfo=CET)]  # fmt: skip
    assert got == [
        WorkloadMessage(at[0], "111111", "telegram", "/start"),
        WorkloadMessage(at[1], "111111", "telegram", "How do I boil an egg?"),  # formatted text re-joined
        WorkloadMessage(at[2], "111111", "telegram", "", "photo"),
        WorkloadMessage(at[3], "111111", "telegram", "", "voice_message"),
        WorkloadMessage(at[4], "111111", "telegram", "thanks!"),
    ]
    assert source.skipped_bot == 2
    # By id as well as by name; without it the bot counts as a user.
    assert len(read(DATA / "telegram_one_chat.json", bot_name="user5000000001")) == 5
    assert {m.user for m in read(DATA / "telegram_one_chat.json")} == {"111111", "5000000001"}


def test_telegram_all_chats_are_merged_in_time_order() -> None:
    got = read(DATA / "telegram_all_chats.json", bot_name="PennyBot")
    assert [(m.user, m.text) for m in got[:4]] == [
        ("111111", "/start"),
        ("222222", "anyone tried the bot?"),  # a chat the exporter left is read too
        ("222222", "What is the capital of Peru?"),
        ("111111", "How do I boil an egg?"),
    ]
    assert [m.ts for m in got] == sorted(m.ts for m in got)
    assert Counter(m.user for m in got) == {"111111": 5, "222222": 3}


def test_telegram_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "result.json"
    broken.write_text('{\n "name": "x",\n "messages": [\n  {"id": 1,,}\n ]\n}')
    with pytest.raises(WorkloadError, match=r"result\.json:4: not valid JSON"):
        read(broken)
    broken.write_text('{"about": "an export of contacts only"}')
    with pytest.raises(WorkloadError, match=r'result\.json: not a Telegram Desktop export: no "messages" or "chats"'):
        read(broken)
    broken.write_text('{"name": "Chat", "messages": [{"id": 9, "type": "message", "from": "A", "text": "x"}]}')
    with pytest.raises(WorkloadError, match=r"result\.json: chat 'Chat', message 9: no readable date"):
        read(broken)


# -- WhatsApp "export chat" --------------------------------------------------------------------


def test_whatsapp_android_day_first_24_hours() -> None:
    source = Workload(DATA / "whatsapp_android.txt", bot_name="PennyBot", tz="Europe/London")
    got = list(source)
    assert got == [
        WorkloadMessage(datetime(2026, 11, 2, 10, 14, tzinfo=UTC), "Alice", "whatsapp", "hi"),
        WorkloadMessage(
            datetime(2026, 11, 2, 10, 16, tzinfo=UTC), "Alice", "whatsapp", "How do I boil an egg?\nIt's for breakfast."
        ),
        WorkloadMessage(datetime(2026, 11, 2, 10, 20, tzinfo=UTC), "Alice", "whatsapp", "", "media"),
        WorkloadMessage(
            datetime(2026, 11, 13, 18, 2, tzinfo=UTC), "+44 7700 900123", "whatsapp", "What is the capital of Peru?"
        ),
    ]
    assert source.skipped_bot == 1  # the encryption notice and the deleted message are no one's


def test_whatsapp_ios_month_first_am_pm() -> None:
    got = read(DATA / "whatsapp_ios.txt", bot_name="PennyBot")
    assert [(m.ts, m.user, m.text, m.kind) for m in got] == [
        (datetime(2026, 11, 2, 10, 14, 5, tzinfo=UTC), "Alice", "hi", "text"),
        (datetime(2026, 11, 2, 10, 16, tzinfo=UTC), "Alice", "How do I boil an egg?\nIt's for breakfast.", "text"),
        (datetime(2026, 11, 2, 13, 5, tzinfo=UTC), "Alice", "", "photo"),
        (datetime(2026, 11, 13, 18, 2, tzinfo=UTC), "+44 7700 900123", "What is the capital of Peru?", "text"),
    ]


def test_whatsapp_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "chat.txt"
    bad.write_text("\nWhatsApp Chat with Alice\n02/11/2026, 10:14 - Alice: hi\n")
    with pytest.raises(WorkloadError, match=r"chat\.txt:2: not a WhatsApp export line: 'WhatsApp Chat with Alice'"):
        read(bad)
    bad.write_text("02/11/2026, 10:14 - Alice: hi\n13/11/2026, 10:15 - Alice: and?\n")
    with pytest.raises(WorkloadError, match=r"chat\.txt:2: bad date or time \(month must be in 1\.\.12\)"):
        read(bad, date_order="mdy")


# -- the generator -----------------------------------------------------------------------------


def test_generator_is_deterministic_per_seed(tmp_path: Path) -> None:
    shape = Shape(users=40, messages=900, month="2026-02")
    digests = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        path = tmp_path / f"{name}.jsonl.gz"
        write_jsonl(generate(shape, seed), path)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_generator_shape() -> None:
    shape = Shape(users=200, messages=6000, month="2026-02")
    got = generate(shape, 11)
    start, end = month_bounds("2026-02")
    per_user = Counter(m.user for m in got)
    assert len(got) == 6000 and len(per_user) == 200
    assert all(start <= m.ts < end for m in got) and [m.ts for m in got] == sorted(m.ts for m in got)
    # The heavy users (1 %) send 15 % of the messages; a user's conversations never overlap.
    top = per_user.most_common(2)
    assert sum(n for _, n in top) >= 0.15 * 6000 * 0.9
    assert {m.channel for m in got} == {"telegram", "whatsapp"}
    first = {}
    for m in got:
        first.setdefault(m.user, m)
    assert all(m.text == "/start" for m in first.values() if m.channel == "telegram")


def test_shipped_workload_is_the_documented_generation(tmp_path: Path) -> None:
    """workloads/month-1k.jsonl.gz is `pennybot workload generate --seed 1` (workloads/README.md)."""
    again = tmp_path / "again.jsonl"
    write_jsonl(generate(Shape(), 1), again)
    # The text, not the gzip bytes: another zlib may pack the same text differently.
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(gzip.decompress(SHIPPED.read_bytes())).digest()
    got = list(Workload(SHIPPED))
    start, end = month_bounds("2026-11")
    assert len(got) == 50_000 and len({m.user for m in got}) == 1000
    assert start <= got[0].ts and got[-1].ts < end and got[-1].ts - got[0].ts > timedelta(days=29)
