-- A statement that fails the transaction it runs in with a message rotor recognises: a save
-- sent to SQLite as one batch of statements (one hand-over to its worker thread instead of
-- one per statement) inserts into `fence` right after its compare-and-swap, selecting a row
-- only when the swap changed nothing, and the batch stops there.
CREATE VIEW fence AS SELECT '' AS reason;
CREATE TRIGGER fence_raise INSTEAD OF INSERT ON fence
BEGIN
    SELECT RAISE(ABORT, 'rotor fence: the compare-and-swap changed nothing');
END;
