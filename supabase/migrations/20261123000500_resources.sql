-- The whole bill's CPU and memory: each serving process writes what it used, window by window, and
-- the report prices it with CPU_CORE_HOUR_PRICE and MEMORY_GB_HOUR_PRICE (usage is kept, not money,
-- so a changed price applies to the past as well).

create table if not exists resource_usage (
    id                  bigint generated always as identity primary key,
    created_at          timestamptz not null,
    started_at          timestamptz not null,
    process             text not null,
    cpu_us              bigint not null check (cpu_us >= 0),
    memory_byte_seconds bigint not null check (memory_byte_seconds >= 0),
    unique (process, started_at)
);
comment on table resource_usage is 'CPU and memory one bot process used in a window, for the whole bill.';
comment on column resource_usage.id is 'Insertion order.';
comment on column resource_usage.created_at is 'The end of the window (the time the usage is billed at).';
comment on column resource_usage.started_at is 'The start of the window; with process, a retried write is stored once.';
comment on column resource_usage.process is 'host:pid of the process that used it.';
comment on column resource_usage.cpu_us is 'CPU time used in the window, user and system, in microseconds.';
comment on column resource_usage.memory_byte_seconds is 'Resident memory (RSS) in bytes times the window''s seconds.';
create index if not exists resource_usage_time on resource_usage (created_at);
alter table resource_usage enable row level security;

create or replace function pennybot_resources(p_start timestamptz, p_end timestamptz) returns jsonb
language sql stable
as $$
    select jsonb_build_object('cpu_us', coalesce(sum(cpu_us), 0)::text,
                              'memory_byte_seconds', coalesce(sum(memory_byte_seconds), 0)::text)
    from resource_usage where created_at >= p_start and created_at < p_end
$$;
comment on function pennybot_resources(timestamptz, timestamptz) is
    'CPU microseconds and memory byte-seconds used in [p_start, p_end), as exact integers in text.';

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261123000500::bigint $$;

do $$
declare
    fn text;
begin
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on resource_usage from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on resource_usage from authenticated;
    end if;
    foreach fn in array array[
        'pennybot_schema_version()',
        'pennybot_resources(timestamptz, timestamptz)'
    ] loop
        execute format('alter function %s set search_path = %I, pg_temp', fn, current_schema());
        execute format('revoke all on function %s from public', fn);
        if exists (select 1 from pg_roles where rolname = 'anon') then
            execute format('revoke all on function %s from anon', fn);
        end if;
        if exists (select 1 from pg_roles where rolname = 'authenticated') then
            execute format('revoke all on function %s from authenticated', fn);
        end if;
        if exists (select 1 from pg_roles where rolname = 'service_role') then
            execute format('grant execute on function %s to service_role', fn);
        end if;
    end loop;
end
$$;

notify pgrst, 'reload schema';
