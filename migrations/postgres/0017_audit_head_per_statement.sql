-- The audit head followed each inserted row: a group's one INSERT of 20 rows updated the head
-- 20 times, each a new row version and WAL record, all but the last dead at once. It now
-- follows each statement, to the statement's last row (`seq` is the chain's order).
CREATE FUNCTION audit_head_follows_appended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_head SET hash = last.hash
    FROM (SELECT hash FROM appended ORDER BY seq DESC LIMIT 1) last
    WHERE audit_head.id = 1;
    RETURN NULL;
END
$$;
DROP TRIGGER audit_head_follows ON audit;
DROP FUNCTION audit_head_follows();
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit
    REFERENCING NEW TABLE AS appended
    FOR EACH STATEMENT EXECUTE FUNCTION audit_head_follows_appended();

