-- Take-overs marked with their taker. A sweep that took messages over and lost the reply (the
-- commit ran, the connection dropped before its answer came) does not know the epochs it now holds;
-- a run of one of them still going in that process gets its write refused at the old epoch. With
-- the taker's mark on each row it asks the row whose epoch it is (a select on inbox) and, if its
-- own, writes again there, instead of dropping the message for a later sweep to pay for again.

alter table inbox add column if not exists lease_owner text;
comment on column inbox.lease_owner is
    'The process whose take-over moved lease_epoch to its value (null while it is 0, as claimed).';

drop function if exists pennybot_lease_open(timestamptz, timestamptz, integer);

create or replace function pennybot_lease_open(
    p_now timestamptz, p_lease_until timestamptz, p_limit integer, p_owner text default null
) returns jsonb
language sql volatile
as $$
    -- skip locked: several processes sweeping at once each take different messages.
    with taken as (
        update inbox i set lease_until = p_lease_until, lease_epoch = i.lease_epoch + 1, lease_owner = p_owner
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

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261124000200::bigint $$;

-- What every migration does to the routines it makes, here once, for this one and those after it:
-- a fixed search path (this schema), and only p_callers may call them (never anon or
-- authenticated: the REST API would expose them to anyone with the project's public key).
create or replace procedure pennybot_lock_down(p_routines text[], p_callers text[] default array['service_role'])
language plpgsql
as $$
declare
    fn text;
    caller text;
begin
    foreach fn in array p_routines loop
        execute format('alter routine %s set search_path = %I, pg_temp', fn, current_schema());
        execute format('revoke all on routine %s from public', fn);
        foreach caller in array array['anon', 'authenticated'] || p_callers loop
            if exists (select 1 from pg_roles where rolname = caller) then
                execute format(
                    case when caller = any(p_callers) then 'grant execute on routine %s to %I'
                         else 'revoke all on routine %s from %I' end,
                    fn, caller);
            end if;
        end loop;
    end loop;
end
$$;

call pennybot_lock_down(array['pennybot_lock_down(text[], text[])'], array[]::text[]);  -- for migrations only
call pennybot_lock_down(array[
    'pennybot_schema_version()',
    'pennybot_lease_open(timestamptz, timestamptz, integer, text)'
]);
