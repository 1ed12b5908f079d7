/** The set-based apply statements for one table: snapshot tests of the SQL a batch runs. */
import { describe, expect, test } from 'vitest';
import { renderApply, type ApplyTable } from '../../src/apply/render-apply.ts';

const users: ApplyTable = {
  id: '16400_1',
  target: { schema: 'organizations', name: 'user' },
  key: ['email'],
  columns: [
    { target: 'email', expression: 'email', reads: ['email'] },
    { target: 'name', expression: "concat(first_name, ' ', last_name)", reads: ['first_name', 'last_name'] },
    { target: 'bio', expression: 'bio', reads: ['bio'] },
  ],
  workerFilter: 'is_active AND email IS NOT NULL',
  staged: [
    { name: 'id', stagingType: 'bigint' }, { name: 'email', stagingType: 'text' }, { name: 'first_name', stagingType: 'text' },
    { name: 'last_name', stagingType: 'text' }, { name: 'bio', stagingType: 'text' }, { name: 'is_active', stagingType: 'boolean' },
  ],
  tracked: true,
  keyTypes: ['text'],
  keySources: ['email'],
};

describe('renderApply', () => {
  test('statements for a mapped table with a worker filter', () => {
    expect(renderApply(users)).toMatchSnapshot();
  });

  test('a column whose mapping reads only unchanged TOAST columns keeps the target value', () => {
    const s = renderApply(users);
    // bio reads staged column 5 only.
    expect(s.updateToasted).toContain(`"bio" = CASE WHEN l."syncctl$unchanged" @> '{5}'::int2[] THEN t."bio" ELSE l."bio" END`);
    expect(s.updateToasted).toContain(`'{3,4}'::int2[]`);
  });

  test('exact keys: the direct path can update the existing rows first, then insert only the missing ones', () => {
    expect(renderApply(users).direct?.updateFirst).toBeUndefined();
    const accounts = renderApply({
      ...users, target: { schema: 'public', name: 'accounts' }, key: ['id'], keySources: ['id'], exactKeys: true,
      columns: [{ target: 'id', expression: 'id', reads: ['id'] }, { target: 'name', expression: 'upper(first_name)', reads: ['first_name'] }],
    });
    expect(accounts.direct?.updateFirst).toEqual({
      updateRows: `UPDATE "public"."accounts" AS t SET "name" = s."name" FROM (SELECT (id) AS "id", (upper(first_name)) AS "name" ` +
        `FROM pg_temp."syncctl_stage_16400_1" WHERE "syncctl$op" IN ('W', 'I') AND coalesce((is_active AND email IS NOT NULL), false)) AS s WHERE t."id" = s."id"`,
      insertMissing: `INSERT INTO "public"."accounts" AS t ("id", "name") SELECT s."id", s."name" FROM (SELECT (id) AS "id", (upper(first_name)) AS "name" ` +
        `FROM pg_temp."syncctl_stage_16400_1" WHERE "syncctl$op" IN ('W', 'I') AND coalesce((is_active AND email IS NOT NULL), false)) AS s ` +
        `WHERE NOT EXISTS (SELECT 1 FROM "public"."accounts" AS t WHERE t."id" = s."id") ON CONFLICT ("id") DO UPDATE SET "name" = excluded."name"`,
    });
    // Only key columns: nothing to update.
    expect(renderApply({ ...users, key: ['email'], columns: [users.columns[0]!], exactKeys: true }).direct?.updateFirst).toBeUndefined();
  });

  test('a table whose columns are all key columns upserts with DO NOTHING', () => {
    const s = renderApply({ ...users, key: ['email'], columns: [users.columns[0]!], tracked: false });
    expect(s.upsertRows).toMatch(/ON CONFLICT \("email"\) DO NOTHING$/);
    expect(s.checkLocalChanges).toBeUndefined();
    expect(s.updateToasted).toBe('SELECT 1 WHERE false');
  });

  test('identifiers with quotes and unicode are quoted everywhere', () => {
    const s = renderApply({
      ...users, target: { schema: 'Weird "S"', name: 'Ünï T' }, key: ['k"1'],
      columns: [{ target: 'k"1', expression: '"Mixed Case"', reads: ['Mixed Case'] }], staged: [{ name: 'Mixed Case', stagingType: 'text' }],
    });
    expect(s.upsertRows).toContain('INSERT INTO "Weird ""S"""."Ünï T" AS t ("k""1")');
    expect(s.createStage).toContain('"Mixed Case" text');
  });
});
