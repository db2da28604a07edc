-- pennybot over HTTPS: the SQL functions budget/stores/supabase_rest.py calls through PostgREST
-- (POST /rest/v1/rpc/<name>), for hosts that cannot open a Postgres connection.
--
-- PostgREST runs each request in one transaction, so each function is atomic: what
-- budget/stores/postgres.py does in a transaction of several statements is one call here.
-- Money leaves as text: PostgREST writes NUMERIC as a JSON number and the Python client parses
-- that into a float; text keeps every nano-dollar, and the store reads it with Decimal.
--
-- The functions run with the caller's rights (no security definer): the bot calls them as
-- service_role, which bypasses row level security, and anon or authenticated get nothing more
-- than the tables already give them (nothing). Each one's search_path is pinned, at the end of
-- this file, to the schema the migration is applied in.
--
-- Applying this file twice changes nothing (create or replace; the grants are repeatable).

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261123000200::bigint $$;
comment on function pennybot_schema_version() is
    'The newest migration whose API the functions provide; the REST store refuses an older one.';

create or replace function pennybot_spend(p_user_key text, p_start timestamptz, p_end timestamptz)
returns table (cost_usd text, tokens bigint)
language plpgsql stable
as $$
begin
    -- Two queries rather than "p_user_key is null or ...": each keeps a plan that uses its index.
    if p_user_key is null then
        return query
            select coalesce(sum(r.cost_usd), 0)::text, coalesce(sum(r.prompt_tokens + r.completion_tokens), 0)::bigint
            from ai_requests r where r.created_at >= p_start and r.created_at < p_end;
    else
        return query
            select coalesce(sum(r.cost_usd), 0)::text, coalesce(sum(r.prompt_tokens + r.completion_tokens), 0)::bigint
            from ai_requests r where r.created_at >= p_start and r.created_at < p_end and r.user_key = p_user_key;
    end if;
end
$$;
comment on function pennybot_spend(text, timestamptz, timestamptz) is
    'Cost (exact dollars, as text) and tokens of a user (null: everyone) in [p_start, p_end).';

create or replace function pennybot_fees(p_start timestamptz, p_end timestamptz) returns text
language sql stable
as $$
    select coalesce(sum(fee_usd), 0)::text from channel_fees where created_at >= p_start and created_at < p_end
$$;
comment on function pennybot_fees(timestamptz, timestamptz) is
    'Platform fees in [p_start, p_end), exact dollars as text.';

create or replace function pennybot_add_turns(p_user_key text, p_turns jsonb, p_now timestamptz)
returns bigint[]
language plpgsql volatile
as $$
declare
    turn jsonb;
    new_id bigint;
    ids bigint[] := '{}';
begin
    -- One insert per turn, in order, so the ids come back in the order the turns were given.
    for turn in select value from jsonb_array_elements(p_turns) with ordinality order by ordinality loop
        insert into messages (user_key, role, content, tokens, size, created_at)
        values (p_user_key, turn ->> 'role', turn ->> 'content', (turn ->> 'tokens')::integer,
                (turn ->> 'size')::integer, p_now)
        returning id into new_id;
        ids := ids || new_id;
    end loop;
    return ids;
end
$$;
comment on function pennybot_add_turns(text, jsonb, timestamptz) is
    'Append turns ([{role, content, tokens, size}, ...]) to a conversation; their ids, in order.';

create or replace function pennybot_fold(
    p_user_key text, p_turn_ids bigint[], p_content text, p_tokens integer, p_size integer, p_now timestamptz
) returns bigint
language plpgsql volatile
as $$
declare
    new_id bigint;
begin
    update messages set folded = true
    where user_key = p_user_key and (role = 'summary' or id = any(p_turn_ids)) and not folded;
    insert into messages (user_key, role, content, tokens, size, created_at)
    values (p_user_key, 'summary', p_content, p_tokens, p_size, p_now)
    returning id into new_id;
    return new_id;
end
$$;
comment on function pennybot_fold(text, bigint[], text, integer, integer, timestamptz) is
    'In one transaction: mark the turns and the old summary folded, store the new summary; its id.';

create or replace function pennybot_upsert_user(
    p_user_key text, p_channel text, p_platform_id text, p_now timestamptz
) returns void
language sql volatile
as $$
    insert into users (user_key, channel, platform_id, created_at, last_seen_at)
    values (p_user_key, p_channel, p_platform_id, p_now, p_now)
    on conflict (user_key) do update set last_seen_at = excluded.last_seen_at
$$;
comment on function pennybot_upsert_user(text, text, text, timestamptz) is
    'Add a user, or only move last_seen_at (an upsert through PostgREST would rewrite created_at).';

create or replace function pennybot_claim_inbox(
    p_channel text, p_message_id text, p_user_key text, p_payload jsonb, p_now timestamptz, p_lease_until timestamptz
) returns boolean
language plpgsql volatile
as $$
begin
    insert into inbox (channel, message_id, user_key, payload, received_at, lease_until)
    values (p_channel, p_message_id, p_user_key, p_payload, p_now, p_lease_until)
    on conflict do nothing;
    return found;
end
$$;
comment on function pennybot_claim_inbox(text, text, text, jsonb, timestamptz, timestamptz) is
    'Store an inbound message leased to the caller until p_lease_until; false if it was stored before.';

create or replace function pennybot_lease_open(p_now timestamptz, p_lease_until timestamptz, p_limit integer)
returns jsonb
language sql volatile
as $$
    -- skip locked: several processes sweeping at once each take different messages.
    with taken as (
        update inbox i set lease_until = p_lease_until
        from (
            select channel, message_id from inbox
            where status <> 'done' and (lease_until is null or lease_until < p_now)
            order by received_at limit p_limit
            for update skip locked
        ) o
        where i.channel = o.channel and i.message_id = o.message_id
        returning i.channel, i.message_id, i.payload, i.reply, i.received_at
    )
    select coalesce(
        jsonb_agg(jsonb_build_object('channel', channel, 'message_id', message_id, 'payload', payload, 'reply', reply)
                  order by received_at),
        '[]'::jsonb)
    from taken
$$;
comment on function pennybot_lease_open(timestamptz, timestamptz, integer) is
    'Take the messages not done whose lease ran out, leasing them until p_lease_until; oldest first. One '
    'jsonb array rather than a set: PostgREST cuts a set at its max rows, and the cut ones would stay leased.';

-- Pin each function's search_path to this schema (then pg_temp, so no temporary object can stand
-- in for a table), take EXECUTE from PUBLIC, and give it to service_role alone. Supabase's roles
-- exist only on Supabase, so they are checked first.
do $$
declare
    fn text;
begin
    foreach fn in array array[
        'pennybot_schema_version()',
        'pennybot_spend(text, timestamptz, timestamptz)',
        'pennybot_fees(timestamptz, timestamptz)',
        'pennybot_add_turns(text, jsonb, timestamptz)',
        'pennybot_fold(text, bigint[], text, integer, integer, timestamptz)',
        'pennybot_upsert_user(text, text, text, timestamptz)',
        'pennybot_claim_inbox(text, text, text, jsonb, timestamptz, timestamptz)',
        'pennybot_lease_open(timestamptz, timestamptz, integer)'
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

-- PostgREST caches the functions it can call; ask it to look again (no listener: no effect).
notify pgrst, 'reload schema';
