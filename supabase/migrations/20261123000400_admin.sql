-- The admin API's atomic step over REST: a quota change and its audit entry in one transaction.

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261123000400::bigint $$;

create or replace function pennybot_set_quota(
    p_user_key text, p_daily_usd numeric, p_monthly_usd numeric, p_daily_tokens bigint, p_monthly_tokens bigint,
    p_actor text, p_now timestamptz
) returns jsonb
language plpgsql
as $$
declare
    old quotas%rowtype;
    before jsonb;
begin
    select * into old from quotas where user_key = p_user_key for update;
    before := case when found then jsonb_build_object(
        'daily_usd', old.daily_usd::text, 'monthly_usd', old.monthly_usd::text,
        'daily_tokens', old.daily_tokens::text, 'monthly_tokens', old.monthly_tokens::text) end;
    insert into quotas (user_key, daily_usd, monthly_usd, daily_tokens, monthly_tokens, updated_at, updated_by)
    values (p_user_key, p_daily_usd, p_monthly_usd, p_daily_tokens, p_monthly_tokens, p_now, p_actor)
    on conflict (user_key) do update set daily_usd = excluded.daily_usd, monthly_usd = excluded.monthly_usd,
        daily_tokens = excluded.daily_tokens, monthly_tokens = excluded.monthly_tokens,
        updated_at = excluded.updated_at, updated_by = excluded.updated_by;
    insert into audit_log (created_at, actor, action, target, details)
    values (p_now, p_actor, 'quota.set', p_user_key, jsonb_build_object(
        'before', coalesce(before, jsonb_build_object('daily_usd', null, 'monthly_usd', null,
                                                      'daily_tokens', null, 'monthly_tokens', null)),
        'after', jsonb_build_object('daily_usd', p_daily_usd::text, 'monthly_usd', p_monthly_usd::text,
                                    'daily_tokens', p_daily_tokens::text, 'monthly_tokens', p_monthly_tokens::text)));
    return before;
end
$$;
comment on function pennybot_set_quota(text, numeric, numeric, bigint, bigint, text, timestamptz) is
    'Set a user''s limits and audit the change atomically; returns the old limits as text, or null.';

do $$
declare
    fn text;
begin
    foreach fn in array array[
        'pennybot_schema_version()',
        'pennybot_set_quota(text, numeric, numeric, bigint, bigint, text, timestamptz)'
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
