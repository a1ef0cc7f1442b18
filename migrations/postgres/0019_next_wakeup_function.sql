-- When the next work is due (`NEXT_WAKEUP`), which the daemon asks after each claim that
-- leaves slots free. As a statement, PostgreSQL planned it at every call, since its plan for
-- the given time looked cheaper than the generic one: 2 ms of planning (four minimum
-- subqueries over partial indexes) for 0.2 ms of execution, 1,300-2,000 times a run of the
-- scale bench. In a function whose plan is generic, it is planned once a connection: the
-- plan reads each index from `$1` on, whatever `$1` is. The body is `NEXT_WAKEUP`'s text
-- (store/sql.rs checks it); SQLite runs the statement.
CREATE FUNCTION next_wakeup(BIGINT) RETURNS BIGINT LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan AS $fn$
BEGIN
    RETURN (
SELECT MIN(t) FROM (
    SELECT MIN(next_due_at) AS t FROM credentials WHERE removed_at IS NULL AND next_due_at > $1
    UNION ALL
    SELECT MIN(paused_until) AS t FROM credentials WHERE paused_until > $1
    UNION ALL
    SELECT MIN(not_before) AS t FROM runs
    WHERE lease_owner IS NULL AND rest = 0 AND not_before > $1
    UNION ALL
    SELECT MIN(lease_until) AS t FROM runs
    WHERE lease_owner IS NOT NULL AND rest = 0 AND lease_until > $1) wake);
END
$fn$;
