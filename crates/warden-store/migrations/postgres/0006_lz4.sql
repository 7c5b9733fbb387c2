-- A recorded event is a little over 2 kB (header and payload), so PostgreSQL compresses its
-- long columns on insert; with the default method (pglz) that was a sixth of the server's
-- work per appended event. lz4 compresses several times faster for a similar size. The
-- method is set on the parent, which new monthly partitions copy, and on each partition that
-- exists already (ALTER on a partitioned table does not reach them). Rows already written
-- keep the method they were written with; both read back the same.
--
-- PostgreSQL builds without lz4 refuse the method: those keep pglz, and say so once.
DO $$
DECLARE
    part REGCLASS;
BEGIN
    ALTER TABLE audit_events
        ALTER COLUMN header SET COMPRESSION lz4,
        ALTER COLUMN payload SET COMPRESSION lz4;
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                 WHERE inhparent = 'audit_events'::regclass LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN header SET COMPRESSION lz4, '
                       'ALTER COLUMN payload SET COMPRESSION lz4', part);
    END LOOP;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this PostgreSQL has no lz4: audit events keep pglz compression';
END $$;
