-- One answer for a message claimed on two hosts that could not both ask Redis. A process claims a
-- webhook's message in its local journal, checks Redis's once-key (a redelivery to another process
-- finds it set) and writes the claim to the inbox in the background. A process cut off from Redis
-- (its budget checks on the Postgres fallback) cannot see that key, so it goes by the inbox
-- instead: the first claim written there. Where the two disagree (one won the once-key, the other's
-- claim was written first) each asks this function, and the one it gives the message to answers.

comment on column inbox.lease_owner is
    'The process whose take-over moved lease_epoch to its value; at epoch 0, the one pennybot_decide_inbox gave the message to (else null).';

create or replace function pennybot_decide_inbox(p_channel text, p_message_id text, p_owner text) returns boolean
language sql volatile
as $$
    -- Only a message claimed from a journal ("by" in its payload), pending at epoch 0: one claimed
    -- straight in the database is its claimant's, a taken-over one its taker's. A retry of a won
    -- call (its reply lost) wins again.
    with decided as (
        update inbox set lease_owner = p_owner
        where channel = p_channel and message_id = p_message_id and lease_epoch = 0 and status = 'pending'
          and payload ? 'by' and (lease_owner is null or lease_owner = p_owner)
        returning 1
    )
    select exists (select 1 from decided)
$$;

create or replace function pennybot_schema_version() returns bigint
language sql immutable
as $$ select 20261124000300::bigint $$;

call pennybot_lock_down(array[
    'pennybot_schema_version()',
    'pennybot_decide_inbox(text, text, text)'
]);
