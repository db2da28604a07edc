-- The SQLite mirror of supabase/migrations (tests/budget/test_schema.py proves they agree).
-- SQLite has no exact decimal: money columns are integer nano-dollars, named *_nano where
-- Postgres has *_usd. Timestamps are UTC ISO 8601 text.

create table if not exists users (
    user_key     text primary key,
    channel      text not null,
    platform_id  text not null,
    role         text not null default 'user',
    active       integer not null default 1,
    created_at   text not null,
    last_seen_at text not null
);

create table if not exists messages (
    id         integer primary key autoincrement,
    user_key   text not null,
    role       text not null,
    content    text not null,
    tokens     integer not null,
    size       integer not null,
    folded     integer not null default 0,
    created_at text not null
);
create index if not exists messages_user_unfolded on messages (user_key, id) where not folded;

create table if not exists inbox (
    channel     text not null,
    message_id  text not null,
    user_key    text not null,
    payload     text not null,
    status      text not null default 'pending',
    reply       text,
    lease_until text,
    lease_epoch integer not null default 0,
    lease_owner text,
    received_at text not null,
    done_at     text,
    primary key (channel, message_id)
);
create index if not exists inbox_open on inbox (received_at) where status <> 'done';

create table if not exists ai_requests (
    id                 integer primary key autoincrement,
    request_id         text not null unique,
    created_at         text not null,
    user_key           text not null,
    channel            text not null,
    message_id         text,
    kind               text not null,
    provider           text not null,
    model              text not null,
    tier               text,
    complexity         text,
    status             text not null,
    prompt_tokens      integer not null default 0,
    completion_tokens  integer not null default 0,
    cached_tokens      integer not null default 0,
    cache_write_tokens integer not null default 0,
    reasoning_tokens   integer not null default 0,
    cost_nano          integer not null default 0,
    saved_nano         integer not null default 0,
    latency_ms         integer not null default 0,
    error              text,
    reason             text
);
create index if not exists ai_requests_user_time on ai_requests (user_key, created_at);
create index if not exists ai_requests_time on ai_requests (created_at);

create table if not exists channel_fees (
    id         integer primary key autoincrement,
    created_at text not null,
    channel    text not null,
    user_key   text not null,
    direction  text not null,
    message_id text not null,
    fee_nano   integer not null,
    unique (channel, direction, message_id)
);
create index if not exists channel_fees_time on channel_fees (created_at);

create table if not exists resource_usage (
    id                  integer primary key autoincrement,
    created_at          text not null,
    started_at          text not null,
    process             text not null,
    cpu_us              integer not null check (cpu_us >= 0),
    memory_byte_seconds integer not null check (memory_byte_seconds >= 0),
    unique (process, started_at)
);
create index if not exists resource_usage_time on resource_usage (created_at);

create table if not exists quotas (
    user_key        text primary key,
    daily_nano      integer,
    monthly_nano    integer,
    daily_tokens    integer,
    monthly_tokens  integer,
    updated_at      text not null,
    updated_by      text not null
);

create table if not exists alerts (
    id         integer primary key autoincrement,
    created_at text not null,
    rule       text not null,
    subject    text not null,
    period_key text not null,
    level      text not null,
    message    text not null,
    unique (rule, subject, period_key, level)
);

create table if not exists audit_log (
    id         integer primary key autoincrement,
    created_at text not null,
    actor      text not null,
    action     text not null,
    target     text,
    details    text not null default '{}'
);
create index if not exists audit_log_time on audit_log (created_at);
