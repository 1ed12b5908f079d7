/** The initial copy's conflict statements (copy-conflicts.ts): what they mark, forget and set aside. */
import { expect, test } from 'vitest';
import type { ApplyTable } from '../../src/apply/render-apply.ts';
import { forgetSameRows, markPresentRows, setAsideConflicting } from '../../src/snapshot/copy-conflicts.ts';

const members: ApplyTable = {
  id: 'copy_3',
  target: { schema: 'crm', name: 'Members' },
  key: ['id'],
  columns: [
    { target: 'id', expression: 'member_id', reads: ['member_id'] },
    { target: 'email', expression: 'lower(email)', reads: ['email'] },
    { target: 'status', expression: 'status', reads: ['status'] },
  ],
  workerFilter: `status <> 'gone'`,
  staged: [{ name: 'member_id', stagingType: 'integer' }, { name: 'email', stagingType: 'text' }, { name: 'status', stagingType: 'text' }],
  tracked: true,
  keyTypes: ['bigint'],
  targetOwned: ['status'],
};

test('every row the target holds is marked as a local insert, its key as the tracking trigger writes it; a change recorded already stays', () => {
  expect(markPresentRows(members)).toBe(`INSERT INTO syncctl.local_changes (target_table, key, operation, changed_by) ` +
    `SELECT 'crm.Members', jsonb_build_object('id', t."id"), 'INSERT', 'syncctl: present before the first copy' FROM "crm"."Members" AS t ` +
    `ON CONFLICT (target_table, key) DO NOTHING`);
});

test('a present row that holds what the copy writes (the columns an incoming write sets, as text in the target\'s types) is no conflict', () => {
  expect(forgetSameRows(members, new Map([['id', 'bigint'], ['email', 'text'], ['status', 'text']]))).toBe(
    `DELETE FROM syncctl.local_changes AS c USING (SELECT CAST((member_id) AS bigint) AS "id", CAST((lower(email)) AS text) AS "email", ` +
    `CAST((status) AS text) AS "status" FROM pg_temp."syncctl_stage_copy_3" WHERE coalesce((status <> 'gone'), false)) AS s ` +
    `JOIN "crm"."Members" AS t ON t."id" = s."id" WHERE c.target_table = 'crm.Members' AND c.changed_by = 'syncctl: present before the first copy' ` +
    // status is the target's own (fields): it does not make a difference.
    `AND c.key = jsonb_build_object('id', t."id") AND ROW(t."email")::text = ROW(s."email")::text`);
});

test('rows whose key has a local change are set aside, keyed as the target types them', () => {
  expect(setAsideConflicting(members, 'pg_temp.aside')).toBe(`WITH moved AS (DELETE FROM pg_temp."syncctl_stage_copy_3" AS s USING ` +
    `(SELECT r.ctid AS "syncctl$row", jsonb_build_object('id', (member_id)::bigint) AS "syncctl$key" FROM pg_temp."syncctl_stage_copy_3" AS r) AS k, ` +
    `syncctl.local_changes AS c WHERE s.ctid = k."syncctl$row" AND c.target_table = 'crm.Members' AND c.key = k."syncctl$key" ` +
    `RETURNING s.*) INSERT INTO pg_temp.aside SELECT * FROM moved`);
});
