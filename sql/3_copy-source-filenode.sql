-- The source table's file (pg_relation_filenode) when its chunks were planned. Chunks are ctid
-- ranges of that file: after VACUUM FULL, CLUSTER or pg_repack the rows sit elsewhere, and a
-- resumed copy would miss those that moved into chunks already done. A copy that finds another
-- file starts that table over. NULL: planned before this column existed (unknown, so started over).
ALTER TABLE syncctl.snapshot_chunks ADD COLUMN source_filenode oid;
