-- The hot store on Postgres (budget/stores/pg_hot.py): counters, reservations, the rate limiter's
-- log and the answer cache, for when Redis cannot be reached (budget/stores/failover.py) or for a
-- deployment with Postgres and no Redis. Postgres only: an SQLite deployment is one process and
-- keeps these in memory (budget/stores/memory.py).
-- Amounts are whole numbers (nano-dollars, tokens), as in Redis. Two clocks, as in Redis:
-- hot_counters.expires_at is the server's (a counter's ttl, like Redis EXPIRE); the other
-- expires_at and at columns are the callers' clock, epoch seconds as double precision, so they
-- compare exactly as the in-process and Redis stores compare them.

create table if not exists hot_counters (
    key        text primary key,
    value      bigint not null,
    expires_at timestamptz
);
comment on table hot_counters is
    'Budget counters (seeded from ai_requests), cache hit and miss counts, and warn-once flags.';
comment on column hot_counters.key is
    'The Redis key it stands in for (pb:{user}:usd:month:2026-11); behind the failover, with #<outage epoch>.';
comment on column hot_counters.value is 'Nano-dollars or tokens: settled spend plus what open reservations hold.';
comment on column hot_counters.expires_at is
    'Server time after which the row counts as absent (null: never); the period''s end plus a day.';
create index if not exists hot_counters_expiry on hot_counters (expires_at) where expires_at is not null;

create table if not exists hot_reservations (
    id         text not null,
    key        text not null,
    amount     bigint not null,
    expires_at double precision not null,
    primary key (id, key)
);
comment on table hot_reservations is 'What each open reservation holds on each counter, until it is settled.';
comment on column hot_reservations.id is 'The reservation id (Budget makes one per call).';
comment on column hot_reservations.key is 'The counter it holds on (hot_counters.key).';
comment on column hot_reservations.amount is 'What it holds there until settled: the call''s worst case.';
comment on column hot_reservations.expires_at is
    'Epoch seconds (callers'' clock) after which a lost reservation gives its amount back.';
create index if not exists hot_reservations_expiry on hot_reservations (expires_at);
create index if not exists hot_reservations_key on hot_reservations (key);

create table if not exists hot_events (
    id  bigint generated always as identity primary key,
    key text not null,
    at  double precision not null
);
comment on table hot_events is 'The rate limiter''s exact log: one row per event still inside its sliding window.';
comment on column hot_events.id is 'Makes two events at one instant two rows.';
comment on column hot_events.key is 'The limited subject''s log (pb:{user}:rl).';
comment on column hot_events.at is 'When it happened: epoch seconds (callers'' clock).';
create index if not exists hot_events_key_at on hot_events (key, at);

create table if not exists hot_cache (
    key        text primary key,
    value      text not null,
    expires_at double precision not null,
    last_used  bigint not null
);
comment on table hot_cache is 'The answer cache: a time to live and least-recently-used eviction at a maximum size.';
comment on column hot_cache.key is 'The answer cache key (normalized question, persona, tier).';
comment on column hot_cache.value is 'The cached answer as JSON (budget/cache.py).';
comment on column hot_cache.expires_at is 'Epoch seconds (callers'' clock) from which it is a miss.';
comment on column hot_cache.last_used is 'A number from hot_cache_use at each use: orders uses within one clock tick.';
create index if not exists hot_cache_last_used on hot_cache (last_used);
create index if not exists hot_cache_expiry on hot_cache (expires_at);

create sequence if not exists hot_cache_use;

-- Row level security with no policy, as on every table: anon and authenticated see nothing.
alter table hot_counters enable row level security;
alter table hot_reservations enable row level security;
alter table hot_events enable row level security;
alter table hot_cache enable row level security;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on hot_counters, hot_reservations, hot_events, hot_cache from anon;
        revoke all on sequence hot_cache_use from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on hot_counters, hot_reservations, hot_events, hot_cache from authenticated;
        revoke all on sequence hot_cache_use from authenticated;
    end if;
end
$$;
