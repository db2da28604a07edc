-- What a settle left out of a counter that did not exist (budget/stores/pg_hot.py, as Redis's
-- '<counter>~left' hash): the call's ledger row may still wait in its process's outbox, out of the
-- next seed's sum, so the seed asks the ledger for these rows and adds the amounts it lacks.

create table if not exists hot_left_out (
    key        text not null,
    row_id     text not null,
    amount     bigint not null,
    expires_at timestamptz not null,
    primary key (key, row_id)
);
comment on table hot_left_out is
    'Amounts settles left out of a missing counter, by ai_request row, until the counter''s next seed.';
comment on column hot_left_out.key is 'The counter (hot_counters.key) that did not exist when the call settled.';
comment on column hot_left_out.row_id is 'The call''s ai_requests.request_id.';
comment on column hot_left_out.amount is 'What the settle would have added: nano-dollars or tokens.';
comment on column hot_left_out.expires_at is 'Server time after which the row is ignored and purged (two days).';
create index if not exists hot_left_out_expiry on hot_left_out (expires_at);

-- Row level security with no policy, as on every table: anon and authenticated see nothing.
alter table hot_left_out enable row level security;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on hot_left_out from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on hot_left_out from authenticated;
    end if;
end
$$;
