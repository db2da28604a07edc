-- Fencing for the inbox's leases. A message whose lease ran out (its owner was cut off from the
-- database, or stalled, for longer than the lease) is taken over by another process; the old owner
-- may still be working on it. Each taking moves lease_epoch on by one, and the owner's writes name
-- the epoch it holds, so the old owner can neither renew the lease nor store its replies and turns,
-- and does not send them: one reply and one exchange per message.

alter table inbox add column if not exists lease_epoch integer not null default 0;
comment on column inbox.lease_epoch is
    'How many times the message was taken over after its lease ran out; its owner''s writes name it.';

create or replace function pennybot_lease_open(p_now timestamptz, p_lease_until timestamptz, p_limit integer)
returns jsonb
language sql volatile
as $$
    -- skip locked: several processes sweeping at once each take different messages.
    with taken as (
        update inbox i set lease_until = p_lease_until, lease_epoch = i.lease_epoch + 1
        from (
            select channel, message_id from inbox
            where status <> 'done' and (lease_until is null or lease_until < p_now)
            order by received_at limit p_limit
            for update skip locked
        ) o
        where i.channel = o.channel and i.message_id = o.message_id
        returning i.channel, i.message_id, i.payload, i.reply, i.received_at, i.lease_epoch
    )
    select coalesce(
        jsonb_agg(jsonb_build_object('channel', channel, 'message_id', message_id, 'payload', payload, 'reply', reply,
                                     'lease_epoch', lease_epoch)
                  order by received_at),
        '[]'::jsonb)
    from taken
$$;

create or replace function pennybot_answer_inbox(
    p_channel text, p_message_id text, p_epoch integer, p_reply jsonb, p_user_key text, p_turns jsonb,
    p_now timestamptz
) returns boolean
language plpgsql volatile
as $$
declare
    held record;
begin
    select status, lease_epoch into held from inbox
    where channel = p_channel and message_id = p_message_id for update;
    if not found or held.lease_epoch <> p_epoch then
        return false;  -- taken over: the caller stores nothing and sends nothing
    end if;
    if held.status = 'pending' then  -- else stored before, by this owner: a retry stores nothing twice
        update inbox set status = 'answered', reply = p_reply
        where channel = p_channel and message_id = p_message_id;
        if p_turns is not null then
            perform pennybot_add_turns(p_user_key, p_turns, p_now);
        end if;
    end if;
    return true;
end
$$;
comment on function pennybot_answer_inbox(text, text, integer, jsonb, text, jsonb, timestamptz) is
    'Store a message''s replies and its exchange''s turns together, if the caller still holds p_epoch; '
    'true once stored (a retry stores nothing twice), false if the message was taken over.';

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261124000000::bigint $$;

do $$
declare
    fn text;
begin
    foreach fn in array array[
        'pennybot_schema_version()',
        'pennybot_lease_open(timestamptz, timestamptz, integer)',
        'pennybot_answer_inbox(text, text, integer, jsonb, text, jsonb, timestamptz)'
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
