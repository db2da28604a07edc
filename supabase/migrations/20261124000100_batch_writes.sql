-- The journal's batches in one call each, as they are one statement each on a direct Postgres
-- connection: claims kept on a bot's host first land in the inbox (each inserted, or found there
-- before and said how far it got), answers are stored with their turns and done marks, and the
-- done marks of messages sent close together are written together.

create or replace function pennybot_land_claims(p_claims jsonb, p_token text, p_lease_until timestamptz)
returns jsonb
language sql volatile
as $$
    -- The insert takes the keys in order, so two batches landing the same messages at once wait on
    -- each other rather than deadlock. The select reads the inbox as it was before the statement (a
    -- CTE's insert is not visible to it): inserted now, or there with this token (a retried call),
    -- is mine; another claimant's is answered once its replies are stored or sent; else, or not
    -- seen at all (inserted by a statement committed after this one began), pending.
    with claims as (
        select e.c->>'channel' as channel, e.c->>'message_id' as message_id, e.c->>'user_key' as user_key,
               e.c->'payload' as payload, (e.c->>'received_at')::timestamptz as received_at, e.n
        from jsonb_array_elements(p_claims) with ordinality as e(c, n)
    ), landed as (
        insert into inbox (channel, message_id, user_key, payload, received_at, lease_until)
        select channel, message_id, user_key, payload, received_at, p_lease_until from claims
        order by channel, message_id
        on conflict do nothing
        returning channel, message_id
    )
    select coalesce(
        jsonb_agg(
            case when l.channel is not null then 'mine'
                 when i.status = 'done' or i.reply is not null then 'answered'
                 when i.payload->>'by' = p_token then 'mine'
                 else 'pending' end
            order by c.n),
        '[]'::jsonb)
    from claims c
    left join landed l on l.channel = c.channel and l.message_id = c.message_id
    left join inbox i on i.channel = c.channel and i.message_id = c.message_id
$$;
comment on function pennybot_land_claims(jsonb, text, timestamptz) is
    'Insert claims (a jsonb array of {channel, message_id, user_key, payload, received_at}) leased until '
    'p_lease_until; for each, in order: mine (inserted now, or there with p_token in its payload''s "by"), '
    'answered (another claimant''s, with replies stored or done) or pending.';

create or replace function pennybot_store_answers(p_answers jsonb)
returns jsonb
language sql volatile
as $$
    -- Each answer's replies (and its done mark, if sent) go to its message if the caller still
    -- holds the lease epoch and it is pending; a message answered before (a retried call) only
    -- takes the done mark. Turns are appended only for the answers stored now, in order. Mine: stored
    -- now, or there at that epoch and no longer pending (the reads see the inbox as it was before).
    with m as (
        select a->>'channel' as channel, a->>'message_id' as message_id, a->'reply' as reply,
               (a->>'epoch')::integer as epoch, (a->>'done_at')::timestamptz as done_at,
               a->>'user_key' as user_key, (a->>'at')::timestamptz as at,
               coalesce(a->'turns', '[]'::jsonb) as turns, e.n
        from jsonb_array_elements(p_answers) with ordinality as e(a, n)
    ), answered as (
        update inbox i set reply = m.reply, done_at = m.done_at,
               status = case when m.done_at is null then 'answered' else 'done' end
        from m
        where i.channel = m.channel and i.message_id = m.message_id and i.lease_epoch = m.epoch
          and i.status = 'pending'
        returning m.n
    ), finished as (
        update inbox i set status = 'done', done_at = m.done_at
        from m
        where i.channel = m.channel and i.message_id = m.message_id and i.lease_epoch = m.epoch
          and i.status = 'answered' and m.done_at is not null
        returning m.n
    ), added as (
        insert into messages (user_key, role, content, tokens, size, created_at)
        select m.user_key, t.turn->>'role', t.turn->>'content', (t.turn->>'tokens')::integer,
               (t.turn->>'size')::integer, m.at
        from m cross join lateral jsonb_array_elements(m.turns) with ordinality as t(turn, o)
        where m.n in (select n from answered)
        order by m.n, t.o
        returning 1
    )
    select coalesce(
        jsonb_agg(
            exists (select from answered a where a.n = m.n)
            or exists (select from inbox i where i.channel = m.channel and i.message_id = m.message_id
                       and i.lease_epoch = m.epoch and i.status <> 'pending')
            order by m.n),
        '[]'::jsonb)
    from m
$$;
comment on function pennybot_store_answers(jsonb) is
    'Store answers (a jsonb array of {channel, message_id, reply, epoch, done_at, user_key, at, turns}) '
    'for the lease epoch each names, with their turns and done marks; for each, in order, whether it is '
    'stored (now, or before by the same epoch) rather than taken over.';

create or replace function pennybot_finish_inbox(p_sent jsonb)
returns void
language sql volatile
as $$
    update inbox i set status = 'done', done_at = (m.s->>'at')::timestamptz
    from jsonb_array_elements(p_sent) as m(s)
    where i.channel = m.s->>'channel' and i.message_id = m.s->>'message_id'
$$;
comment on function pennybot_finish_inbox(jsonb) is
    'Mark messages done (a jsonb array of {channel, message_id, at}): their replies were sent.';

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261124000100::bigint $$;

do $$
declare
    fn text;
begin
    foreach fn in array array[
        'pennybot_schema_version()',
        'pennybot_land_claims(jsonb, text, timestamptz)',
        'pennybot_store_answers(jsonb)',
        'pennybot_finish_inbox(jsonb)'
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
