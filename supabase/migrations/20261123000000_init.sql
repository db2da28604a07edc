-- pennybot schema: the one source of truth (budget/stores/sqlite_schema.sql mirrors it for the
-- embedded default; tests/budget/test_schema.py proves the two agree).
-- Money is NUMERIC(20,9): exact dollars to the nano-dollar.

create table if not exists users (
    user_key     text primary key,
    channel      text not null,
    platform_id  text not null,
    role         text not null default 'user' check (role in ('user', 'admin')),
    active       boolean not null default true,
    created_at   timestamptz not null default now(),
    last_seen_at timestamptz not null default now()
);
comment on table users is 'People who talk to the bot, keyed channel:platform_id (telegram:123).';
comment on column users.active is 'False once the platform said the user blocked the bot.';
comment on column users.user_key is 'channel:platform_id, the key every budget and row uses.';
comment on column users.channel is 'telegram, whatsapp or console.';
comment on column users.platform_id is 'The id the platform gives the user (Telegram user id, WhatsApp number).';
comment on column users.role is 'user or admin.';
comment on column users.created_at is 'First message.';
comment on column users.last_seen_at is 'When a bot process last started talking with the user (written once per process).';

create table if not exists messages (
    id         bigint generated always as identity primary key,
    user_key   text not null,
    role       text not null check (role in ('user', 'assistant', 'summary')),
    content    text not null,
    tokens     integer not null,
    size       integer not null,
    folded     boolean not null default false,
    created_at timestamptz not null default now()
);
comment on table messages is 'Conversation history; role summary holds the fold of older turns.';
comment on column messages.tokens is 'o200k_base tokens of content, counted once when stored.';
comment on column messages.user_key is 'Whose conversation.';
comment on column messages.role is 'user, assistant, or summary (the fold of older turns).';
comment on column messages.content is 'The text as sent or answered.';
comment on column messages.created_at is 'When the turn was stored.';
comment on column messages.size is 'UTF-8 bytes of content (the bound behind Anthropic estimates).';
comment on column messages.folded is 'True once the turn was folded into a summary.';
create index if not exists messages_user_unfolded on messages (user_key, id) where not folded;

create table if not exists inbox (
    channel     text not null,
    message_id  text not null,
    user_key    text not null,
    payload     jsonb not null,
    status      text not null default 'pending' check (status in ('pending', 'answered', 'done')),
    reply       jsonb,
    lease_until timestamptz,
    received_at timestamptz not null default now(),
    done_at     timestamptz,
    primary key (channel, message_id)
);
comment on table inbox is 'Inbound platform messages, stored before the webhook is acknowledged.';
comment on column inbox.lease_until is 'Until when one process owns the message; after it, another may finish it.';
comment on column inbox.channel is 'Platform the message came from.';
comment on column inbox.message_id is 'The platform id (Telegram update_id, Twilio MessageSid): a redelivery has the same.';
comment on column inbox.user_key is 'Who sent it.';
comment on column inbox.payload is 'What is needed to run the message again after a crash.';
comment on column inbox.status is 'pending, answered (replies computed) or done (replies sent).';
comment on column inbox.received_at is 'When the webhook stored it.';
comment on column inbox.done_at is 'When its replies were sent.';
comment on column inbox.reply is 'The reply parts, kept once computed so a restart re-sends them without paying again.';
create index if not exists inbox_open on inbox (received_at) where status <> 'done';

create table if not exists ai_requests (
    id                 bigint generated always as identity primary key,
    request_id         text not null unique,
    created_at         timestamptz not null default now(),
    user_key           text not null,
    channel            text not null,
    message_id         text,
    kind               text not null check (kind in ('answer', 'summary')),
    provider           text not null,
    model              text not null,
    tier               text,
    complexity         text,
    status             text not null check (status in ('ok', 'cached', 'error')),
    prompt_tokens      integer not null default 0,
    completion_tokens  integer not null default 0,
    cached_tokens      integer not null default 0,
    cache_write_tokens integer not null default 0,
    reasoning_tokens   integer not null default 0,
    cost_usd           numeric(20, 9) not null default 0,
    saved_usd          numeric(20, 9) not null default 0,
    latency_ms         integer not null default 0,
    error              text,
    reason             text
);
comment on table ai_requests is 'One row per AI call attempt: answers, cache hits, failures, summaries.';
comment on column ai_requests.request_id is 'Unique per attempt, so a retried write never doubles a row.';
comment on column ai_requests.created_at is 'When the message was handled; decides the budget period.';
comment on column ai_requests.user_key is 'Who the call was for (and charged to).';
comment on column ai_requests.channel is 'telegram, whatsapp or console.';
comment on column ai_requests.message_id is 'The platform message it served.';
comment on column ai_requests.kind is 'answer, or summary (folding older turns).';
comment on column ai_requests.provider is 'openai, anthropic or simulated.';
comment on column ai_requests.model is 'The model called (or whose cached answer was served).';
comment on column ai_requests.tier is 'cheap, standard or premium.';
comment on column ai_requests.complexity is 'simple, medium or complex, as classified.';
comment on column ai_requests.status is 'ok, cached (a cache hit, cost 0) or error (a failed attempt).';
comment on column ai_requests.prompt_tokens is 'All input tokens, cached ones included.';
comment on column ai_requests.completion_tokens is 'All output tokens, reasoning included.';
comment on column ai_requests.cached_tokens is 'Input tokens read from the provider''s prompt cache.';
comment on column ai_requests.cache_write_tokens is 'Input tokens written to the provider''s prompt cache.';
comment on column ai_requests.reasoning_tokens is 'Output tokens spent on reasoning.';
comment on column ai_requests.latency_ms is 'How long the call took.';
comment on column ai_requests.error is 'Why an attempt failed (no secrets).';
comment on column ai_requests.reason is 'Why this model was chosen.';
comment on column ai_requests.cost_usd is 'What the provider billed, exact to the nano-dollar.';
comment on column ai_requests.saved_usd is 'For a cache hit, the cost of the answer it re-used.';
create index if not exists ai_requests_user_time on ai_requests (user_key, created_at);
create index if not exists ai_requests_time on ai_requests (created_at);

create table if not exists channel_fees (
    id         bigint generated always as identity primary key,
    created_at timestamptz not null default now(),
    channel    text not null,
    user_key   text not null,
    direction  text not null check (direction in ('in', 'out')),
    message_id text not null,
    fee_usd    numeric(20, 9) not null,
    unique (channel, direction, message_id)
);
comment on table channel_fees is 'What the messaging platform charges per message (Twilio WhatsApp), for the whole bill.';
create index if not exists channel_fees_time on channel_fees (created_at);
comment on column channel_fees.direction is 'in (received) or out (sent).';
comment on column channel_fees.message_id is 'The platform message id (MessageSid).';
comment on column channel_fees.fee_usd is 'What the platform charges for the message.';

create table if not exists quotas (
    user_key       text primary key,
    daily_usd      numeric(20, 9),
    monthly_usd    numeric(20, 9),
    daily_tokens   bigint,
    monthly_tokens bigint,
    updated_at     timestamptz not null default now(),
    updated_by     text not null
);
comment on table quotas is 'Per-user overrides of the configured limits; null keeps the default.';
comment on column quotas.daily_usd is 'Daily USD limit for the user; null keeps the configured one.';
comment on column quotas.monthly_usd is 'Monthly USD limit for the user; null keeps the configured one.';
comment on column quotas.daily_tokens is 'Daily token limit; null keeps the configured one.';
comment on column quotas.monthly_tokens is 'Monthly token limit; null keeps the configured one.';
comment on column quotas.updated_by is 'The admin who set it.';

create table if not exists alerts (
    id         bigint generated always as identity primary key,
    created_at timestamptz not null default now(),
    rule       text not null,
    subject    text not null,
    period_key text not null,
    level      text not null,
    message    text not null,
    unique (rule, subject, period_key, level)
);
comment on table alerts is 'Fired alerts, once per rule, subject, period and level.';
comment on column alerts.rule is 'Which rule fired.';
comment on column alerts.subject is 'A user key, or global.';
comment on column alerts.period_key is 'The period it fired for (fires once per rule, subject, period and level).';
comment on column alerts.level is 'warning or critical.';

create table if not exists audit_log (
    id         bigint generated always as identity primary key,
    created_at timestamptz not null default now(),
    actor      text not null,
    action     text not null,
    target     text,
    details    jsonb not null default '{}'::jsonb
);
comment on table audit_log is 'Every quota change and every refused admin command.';
comment on column audit_log.actor is 'Who did it (user key or api).';
comment on column audit_log.action is 'What was done or refused.';
comment on column audit_log.details is 'Before and after values, arguments.';
create index if not exists audit_log_time on audit_log (created_at);

comment on column messages.id is 'Order of the conversation.';
comment on column ai_requests.id is 'Insertion order.';
comment on column channel_fees.id is 'Insertion order.';
comment on column channel_fees.created_at is 'When the message went in or out.';
comment on column channel_fees.channel is 'The platform that charges.';
comment on column channel_fees.user_key is 'Whose message.';
comment on column quotas.user_key is 'The user the overrides apply to.';
comment on column quotas.updated_at is 'When they were last changed.';
comment on column alerts.id is 'Insertion order.';
comment on column alerts.created_at is 'When it fired.';
comment on column alerts.message is 'What it says, as sent to admins.';
comment on column audit_log.id is 'Insertion order.';
comment on column audit_log.created_at is 'When it happened.';
comment on column audit_log.target is 'Whom it concerned (a user key), if anyone.';

-- Row level security on every table with no policy: the anon and authenticated roles see nothing;
-- the bot connects as the table owner or service_role, which bypass RLS.
alter table users enable row level security;
alter table messages enable row level security;
alter table inbox enable row level security;
alter table ai_requests enable row level security;
alter table quotas enable row level security;
alter table channel_fees enable row level security;
alter table alerts enable row level security;
alter table audit_log enable row level security;

-- Supabase's roles exist only on Supabase; a plain Postgres has none, so guard the revokes.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on users, messages, inbox, ai_requests, channel_fees, quotas, alerts, audit_log from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on users, messages, inbox, ai_requests, channel_fees, quotas, alerts, audit_log
            from authenticated;
    end if;
end
$$;
