/** The source-order DO block: snapshot of the SQL, and the properties the batch writer relies on. */
import { describe, expect, test } from 'vitest';
import { renderApply, type ApplyTable } from '../../src/apply/render-apply.ts';
import fc from 'fast-check';
import { marksOf, renderSourceOrder, type TransactionMark } from '../../src/apply/source-order.ts';
import type { ConflictRule } from '../../src/spec/schema.ts';
import { sql } from '../../src/spec/sql-fragment.ts';

const docs: ApplyTable = {
  id: 'docs_1',
  target: { schema: 'public', name: 'docs' },
  key: ['id'],
  columns: [
    { target: 'id', expression: 'id', reads: ['id'] },
    { target: 'status', expression: 'upper(status)', reads: ['status'] },
    { target: 'body', expression: 'body', reads: ['body'] },
    { target: 'headline', expression: "status || ': ' || left(body, 10)", reads: ['status', 'body'] },
  ],
  workerFilter: "status <> 'hidden'",
  filterReads: ['status'],
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'status', stagingType: 'text' }, { name: 'body', stagingType: 'text' }],
  tracked: true,
  keyTypes: ['integer'],
  keySources: ['id'],
};
const table = { apply: docs, tableName: 'docs', strategy: 'last-write-wins', onError: 'park' as const };
const marks = [{ fromSeq: 1, lsn: '0/16B3748', commitTime: '2026-11-30T10:00:00.000Z' }, { fromSeq: 4, lsn: '0/16B3800', commitTime: null }];

describe('renderSourceOrder', () => {
  test('one change at a time, in sequence order across the slice', () => {
    expect(renderSourceOrder('s', [table], marks, false)).toMatchSnapshot();
  });

  test('an applied change supersedes what is pending of its key (checked once per block); a parked one records itself for the writer', () => {
    const sql = renderSourceOrder('s', [table], marks, true);
    expect(sql).toContain(`syncctl$parked0 boolean := EXISTS (SELECT 1 FROM syncctl.sync_conflicts WHERE sync_name = 's' AND table_name = 'docs' AND outcome = 'pending' AND kind = 'apply_error');`);
    expect(sql).toContain(`IF syncctl$ok THEN\nIF syncctl$parked0 THEN\nUPDATE syncctl.sync_conflicts SET outcome = 'resolved'`);
    expect(sql).toContain(`AND key = jsonb_build_object('id', syncctl$n."id");`);
    // The change as staged goes with it (the old row of its pair too), and the error's SQLSTATE.
    expect(sql).toContain(`WHERE r.ctid = syncctl$c.id OR r.ctid = syncctl$pk)), SQLSTATE FROM`);
    expect(sql).toContain(`PERFORM set_config('syncctl.parked_tables', current_setting('syncctl.parked_tables') || 'docs,', true);`);
    expect(sql).not.toContain('retried');
  });

  test('retry mode: a change that applies is retried and supersedes only older pending changes; one that fails stays pending', () => {
    const sql = renderSourceOrder('s', [table], [], true, { by: 'alice' });
    expect(sql).toContain(`"syncctl$conflict" AS conflict FROM pg_temp."syncctl_stage_docs_1"`);
    expect(sql).toContain(`AND key = jsonb_build_object('id', syncctl$n."id") AND id < syncctl$c.conflict;`);
    expect(sql).toContain(`UPDATE syncctl.sync_conflicts SET outcome = 'retried', resolved_by = 'alice', resolved_at = clock_timestamp() WHERE id = syncctl$c.conflict;`);
    expect(sql).toContain(`UPDATE syncctl.sync_conflicts SET reason = SQLERRM, sqlstate = SQLSTATE WHERE id = syncctl$c.conflict;`);
    // Nothing new is parked: a change that fails again only updates its own row.
    expect(sql).not.toContain(`'apply_error', syncctl$key`);
  });

  test('careful: each change in its own subtransaction; only a row fault is parked, anything else re-raised', () => {
    const sql = renderSourceOrder('s', [table, { ...table, apply: { ...docs, id: 'two' }, tableName: 'two', onError: 'stop' }], marks, true);
    expect(sql).toContain(`EXCEPTION WHEN OTHERS THEN\nsyncctl$k := NULL;\nIF SQLSTATE !~ '^(22|23|P0001)' THEN RAISE; END IF;`);
    // The parked change carries its own transaction's position and the table's strategy.
    expect(sql).toContain(`syncctl$lsns[syncctl$tx], syncctl$times[syncctl$tx], 'last-write-wins', 'pending', SQLERRM`);
    // onError: stop raises the row's error again, with its key, instead of parking.
    expect(sql).toContain(`RAISE EXCEPTION USING ERRCODE = SQLSTATE, MESSAGE = SQLERRM, DETAIL = syncctl$key::text, TABLE = 'two';`);
    expect(sql).toContain(`syncctl$lsns pg_lsn[] := '{"0/16B3748","0/16B3800"}'::pg_lsn[]`);
    expect(sql).toContain(`syncctl$times timestamptz[] := '{"2026-11-30T10:00:00.000Z",NULL}'::timestamptz[]`);
  });

  test('a K and the W after it update the row with the old key in place, key columns included', () => {
    const sql = renderSourceOrder('s', [table], marks, false);
    expect(sql).toContain(`IF syncctl$c.op = 'K' THEN\nsyncctl$k := syncctl$c.id;`);
    expect(sql).toContain(`UPDATE "public"."docs" AS t SET "id" = syncctl$n."id", "status" = syncctl$n."status", "body" = syncctl$n."body", ` +
      `"headline" = syncctl$n."headline" WHERE t."id" = syncctl$o."id";`);
  });
});

describe('tables staged as text after a rejection', () => {
  const asText: ApplyTable = { ...docs, staged: [{ name: 'id', stagingType: 'text', castTo: 'integer' }, ...docs.staged.slice(1)] };

  test('every statement reads the stage through the casts', () => {
    const s = renderApply(asText);
    expect(s.reduce).toContain(`FROM (SELECT "syncctl$seq", "syncctl$op", "syncctl$unchanged", "id"::integer AS "id", "status", "body" FROM pg_temp."syncctl_stage_docs_1") AS "syncctl$rows"`);
    expect(s.createStage).toContain('"id" text');
    const sql = renderSourceOrder('s', [{ ...table, apply: asText }], marks, true);
    expect(sql).toContain(`FROM (SELECT "syncctl$seq", "syncctl$op", "syncctl$unchanged", "id"::integer AS "id", "status", "body" FROM pg_temp."syncctl_stage_docs_1" WHERE ctid = syncctl$c.id) AS "syncctl$row"`);
  });
});

describe('merge: a change meeting a row is written column by column', () => {
  const licenses: ApplyTable = {
    id: 'lic', target: { schema: 'public', name: 'licenses' }, key: ['id'],
    columns: [
      { target: 'id', expression: 'id', reads: ['id'] },
      { target: 'email', expression: 'lower(email)', reads: ['email'] },
      { target: 'status', expression: 'status', reads: ['status'] },
      { target: 'updated_at', expression: 'updated_at', reads: ['updated_at'] },
    ],
    staged: [{ name: 'id', stagingType: 'integer' }, { name: 'email', stagingType: 'text' }, { name: 'status', stagingType: 'text' }, { name: 'updated_at', stagingType: 'timestamptz' }],
    tracked: true, keyTypes: ['integer'], keySources: ['id'],
  };
  const activeWins = sql`CASE WHEN 'active' IN (incoming.status, current.status) THEN 'active' ELSE incoming.status END`;
  const render = (conflict: ConflictRule) => renderSourceOrder('s', [{ apply: licenses, tableName: 'licenses', strategy: conflict.strategy, conflict, onError: 'park' }], marks, true);
  /** The statements of the merge branch. */
  const mergeBranch = (sql: string) => sql.slice(sql.indexOf(`ELSIF syncctl$win = 'merge' THEN`), sql.indexOf(`syncctl$outcome := 'merged';`));

  test('the merged row: listed columns from their SQL, the rest from otherwise (last-write-wins), the key from the source', () => {
    const sql = render({ strategy: 'merge', columns: { status: activeWins }, otherwise: { strategy: 'last-write-wins', column: 'updated_at' } });
    expect(sql).toContain(`  syncctl$in0 "public"."licenses"%ROWTYPE;`);
    expect(mergeBranch(sql)).toMatchSnapshot();
    // Only a write meeting a row (that the filter keeps) is merged; otherwise decides the rest.
    expect(sql).toContain(`syncctl$win := CASE WHEN syncctl$has AND syncctl$n."syncctl$keep" THEN 'merge' ELSE CASE WHEN NOT syncctl$has THEN CASE WHEN syncctl$times[syncctl$tx] IS NULL`);
    // A delete is never merged: otherwise decides it (last-write-wins: the commit time against the local change's).
    expect(sql).toContain(`syncctl$win := CASE WHEN syncctl$times[syncctl$tx] IS NULL OR syncctl$times[syncctl$tx] >= syncctl$lct THEN 'incoming' ELSE 'current' END;\nIF syncctl$win = 'incoming' THEN\nDELETE FROM`);
    // Merged but parked on the way: the park is the record, no conflict row besides it.
    expect(sql).toContain(`IF syncctl$outcome NOT IN ('applied', 'merged') OR syncctl$ok THEN\nINSERT INTO syncctl.sync_conflicts`);
  });

  test('otherwise: source-wins by default, target-wins, fields by owner', () => {
    const sets = (sql: string) => /UPDATE "public"."licenses" AS current SET (.*) FROM /.exec(sql)![1];
    expect(sets(render({ strategy: 'merge', columns: { status: activeWins } })))
      .toBe(`"id" = incoming."id", "email" = incoming."email", "status" = (${activeWins.text}), "updated_at" = incoming."updated_at"`);
    expect(render({ strategy: 'merge', columns: { status: activeWins } })).toContain(`syncctl$win := CASE WHEN syncctl$has AND syncctl$n."syncctl$keep" THEN 'merge' ELSE 'incoming' END;`);
    expect(sets(render({ strategy: 'merge', columns: { status: activeWins }, otherwise: { strategy: 'target-wins' } })))
      .toBe(`"id" = incoming."id", "email" = current."email", "status" = (${activeWins.text}), "updated_at" = current."updated_at"`);
    expect(render({ strategy: 'merge', columns: { status: activeWins }, otherwise: { strategy: 'target-wins' } })).toContain(`ELSE 'current' END;`);
    expect(sets(render({ strategy: 'merge', columns: { status: activeWins }, otherwise: { strategy: 'fields', owners: { email: 'target' }, default: 'source' } })))
      .toBe(`"id" = incoming."id", "email" = current."email", "status" = (${activeWins.text}), "updated_at" = incoming."updated_at"`);
    // fields alone takes the same path: each column from its owner's row.
    expect(sets(render({ strategy: 'fields', owners: { email: 'target' }, default: 'source' })))
      .toBe(`"id" = incoming."id", "email" = current."email", "status" = incoming."status", "updated_at" = incoming."updated_at"`);
  });

  test('rules that never merge declare no incoming row', () => {
    expect(render({ strategy: 'last-write-wins', column: 'updated_at' })).not.toContain('syncctl$in0');
    expect(render({ strategy: 'manual' })).not.toContain(`'merge'`);
  });
});

describe('conflict detection under concurrency (careful, tracked)', () => {
  const sql = renderSourceOrder('s', [{ ...table, conflict: { strategy: 'source-wins' } }], marks, true);

  test('the local changes are looked up before the target row is locked (a local insert committing in between is then unseen, not missed)', () => {
    const lookup = sql.indexOf('SELECT max(c.changed_at), array_agg(c.xmin::text) INTO syncctl$lct, syncctl$seenx FROM syncctl.local_changes AS c');
    const lock = sql.indexOf('FOR UPDATE OF t;\nsyncctl$has := FOUND;');
    expect(lookup).toBeGreaterThan(0);
    expect(lock).toBeGreaterThan(lookup);
  });

  test('an entry the write deletes that is not a version the lookup saw fails the batch as a serialization failure', () => {
    expect(sql).toContain(`WITH gone AS (DELETE FROM syncctl.local_changes AS c WHERE c.target_table = 'public.docs' AND c.key IN (jsonb_build_object('id', syncctl$n."id"::integer)) ` +
      `RETURNING c.xmin::text AS "syncctl$x") SELECT bool_or(NOT coalesce(gone."syncctl$x" = ANY (syncctl$seenx), false)) INTO syncctl$raced FROM gone;\n` +
      `IF syncctl$raced THEN RAISE EXCEPTION 'a local write of % raced the worker', 'public.docs' USING ERRCODE = '40001'; END IF;`);
    // What the lookup saw is per change.
    expect(sql).toContain('syncctl$seen := false;\nsyncctl$seenx := NULL;\n');
  });
});

describe('marksOf: the marks of the changes set aside', () => {
  /** The mark source order finds for a change: the last one at or before it, else the first. */
  const markFor = (all: readonly TransactionMark[], seq: number) => all.filter((m) => m.fromSeq <= seq).at(-1) ?? all[0];

  test('each change finds the same mark among the subset as among all marks, and the subset holds nothing else', () => {
    fc.assert(fc.property(
      fc.uniqueArray(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 30 }),
      fc.array(fc.integer({ min: 0, max: 220 }), { maxLength: 40 }),
      (starts, seqs) => {
        const all = [...starts].sort((a, b) => a - b).map((fromSeq) => ({ fromSeq, lsn: `0/${fromSeq.toString(16)}`, commitTime: null }));
        const subset = marksOf(all, seqs);
        for (const seq of seqs) expect(markFor(subset, seq)).toBe(markFor(all, seq));
        expect(new Set(subset)).toEqual(new Set(seqs.map((seq) => markFor(all, seq))));
        expect(subset.map((m) => m.fromSeq)).toEqual([...subset.map((m) => m.fromSeq)].sort((a, b) => a - b));
      },
    ));
  });

  test('no changes, no marks', () => {
    expect(marksOf(marks, [])).toEqual([]);
    expect(marksOf([], [3])).toEqual([]);
  });
});
