/** `conflicts resolve --set`: parsing, the checks of planSetWrite, and the statements it runs. */
import { describe, expect, test } from 'vitest';
import type { ApplyTable } from '../../src/apply/render-apply.ts';
import type { ColumnFacts } from '../../src/catalog/facts.ts';
import { parseAssignments, planSetWrite, renderSetWrite } from '../../src/conflicts/resolve-set.ts';
import { SyncctlError } from '../../src/errors.ts';

const docs: ApplyTable = {
  id: 'resolve_set',
  target: { schema: 'public', name: 'docs' },
  key: ['id'],
  columns: [
    { target: 'id', expression: 'id', reads: ['id'] },
    { target: 'status', expression: 'upper(status)', reads: ['status'] },
    { target: 'body', expression: 'body', reads: ['body'] },
    { target: 'headline', expression: "status || ': ' || left(body, 10)", reads: ['status', 'body'] },
  ],
  staged: [{ name: 'id', stagingType: 'integer' }, { name: 'status', stagingType: 'text' }, { name: 'body', stagingType: 'text' }],
  tracked: true,
  keyTypes: ['integer'],
};
const column = (name: string, type: string, generated = false): ColumnFacts => ({
  name, attnum: 0, type, typeOid: 0, typeSchema: 'pg_catalog', typeName: type, notNull: false, hasDefault: false, generated, identity: false,
});
const columns = [column('id', 'integer'), column('status', 'text'), column('body', 'text'), column('headline', 'text'),
  column('note', 'character varying(20)'), column('slug', 'text', true)];
const at = { id: '7', sync: 's', table: 'docs' };
const problem = (run: () => unknown) => {
  try {
    run();
  } catch (error) {
    if (error instanceof SyncctlError) return { message: error.message, details: error.details };
    throw error;
  }
  throw new Error('no error');
};

describe('parseAssignments', () => {
  test('col=value, the value as given (it may hold = and be empty)', () => {
    expect([...parseAssignments(['status=a=b', 'note=', 'body= x '])]).toEqual([['status', 'a=b'], ['note', ''], ['body', ' x ']]);
  });
  test('refuses an item without a column, and a column given twice', () => {
    expect(problem(() => parseAssignments(['=x'])).message).toBe('--set =x: expected column=value');
    expect(problem(() => parseAssignments(['a=1', 'a=2'])).message).toBe('--set a: given twice');
    expect(problem(() => parseAssignments(['a=1'], ['a'])).message).toBe('--set a: given twice');
    expect(problem(() => parseAssignments([], [])).message).toBe('--set needs at least one column=value (or --set-null column)');
  });
  test('--set-null: the column set to NULL, after the --set ones; alone too', () => {
    expect([...parseAssignments(['status=a'], ['note'])]).toEqual([['status', 'a'], ['note', null]]);
    expect([...parseAssignments([], ['note'])]).toEqual([['note', null]]);
  });
});

describe('planSetWrite', () => {
  test('the incoming row where not set; a column read only from unchanged TOAST values is kept', () => {
    expect(planSetWrite(at, docs, columns, new Map([['note', 'hi'], ['headline', 'h']]), ['body'])).toEqual({
      incoming: ['status'], kept: ['body'],
      set: [{ column: 'note', value: 'hi', type: 'character varying(20)' }, { column: 'headline', value: 'h', type: 'text' }],
    });
  });
  test('refuses, naming the conflict, the table and the column', () => {
    expect(problem(() => planSetWrite(at, docs, columns, new Map([['nope', '1']]), []))).toEqual({
      message: 'conflict 7 (s.docs): --set nope: public.docs has no column "nope" (its columns: id, status, body, headline, note, slug)',
      details: { conflict: 7, sync: 's', table: 'docs', column: 'nope' },
    });
    expect(problem(() => planSetWrite(at, docs, columns, new Map([['id', '1']]), [])).message)
      .toBe('conflict 7 (s.docs): --set id: "id" is a key column of public.docs: the key follows the source (another key is another row)');
    expect(problem(() => planSetWrite(at, docs, columns, new Map([['slug', 'x']]), [])).message)
      .toBe('conflict 7 (s.docs): --set slug: "slug" is a generated column of public.docs: Postgres computes it');
    // headline reads body (unchanged) and status (changed): its incoming value is not known.
    expect(problem(() => planSetWrite(at, docs, columns, new Map([['status', 'x']]), ['body'])).message).toBe('conflict 7 (s.docs): --set headline: ' +
      'its incoming value is not known: its mapping reads TOAST column(s) body that the change left unchanged (the stream does not carry them) ' +
      'together with changed ones; set it too (--set headline=…)');
  });
});

test('renderSetWrite: the mapped incoming row, the values as untyped parameters, over the row with the conflict\'s key or inserted', () => {
  const write = planSetWrite(at, { ...docs, workerFilter: "status <> 'hidden'" }, columns, new Map([['note', 'hi'], ['headline', 'h']]), ['body']);
  expect(renderSetWrite({ ...docs, workerFilter: "status <> 'hidden'" }, write)).toEqual({
    filter: `SELECT coalesce((status <> 'hidden'), false) AS keep FROM pg_temp."syncctl_stage_resolve_set" WHERE "syncctl$op" IN ('W', 'I')`,
    update: `UPDATE "public"."docs" AS t SET "id" = i."id", "status" = i."status", "note" = $2, "headline" = $3 ` +
      `FROM (SELECT (id) AS "id", (upper(status)) AS "status", (body) AS "body", (status || ': ' || left(body, 10)) AS "headline" ` +
      `FROM pg_temp."syncctl_stage_resolve_set" WHERE "syncctl$op" IN ('W', 'I')) AS i, jsonb_populate_record(NULL::"public"."docs", $1::jsonb) AS k ` +
      `WHERE t."id" = k."id" RETURNING to_jsonb(t) AS row`,
    insert: `INSERT INTO "public"."docs" AS t ("id", "status", "note", "headline") SELECT i."id", i."status", $1, $2 ` +
      `FROM (SELECT (id) AS "id", (upper(status)) AS "status", (body) AS "body", (status || ': ' || left(body, 10)) AS "headline" ` +
      `FROM pg_temp."syncctl_stage_resolve_set" WHERE "syncctl$op" IN ('W', 'I')) AS i ` +
      `ON CONFLICT ("id") DO UPDATE SET "status" = excluded."status", "note" = excluded."note", "headline" = excluded."headline" RETURNING to_jsonb(t) AS row`,
  });
});
