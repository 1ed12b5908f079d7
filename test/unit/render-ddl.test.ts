/** The DDL syncctl prints and runs, rendered by small pure functions. */
import { describe, expect, test } from 'vitest';
import {
  renderAddPublicationTable, renderCreatePublication, renderCreateSubscription, renderReplicaIdentity, renderTrackingTrigger,
} from '../../src/plan/render-ddl.ts';
import { displayStatement } from '../../src/plan/render-plan.ts';

describe('render DDL', () => {
  test('publication and its tables with column lists and row filters', () => {
    expect(renderCreatePublication('syncctl_shop').sql).toMatchSnapshot();
    expect(renderAddPublicationTable('syncctl_shop', {
      table: { schema: 'public', name: 'Order Lines' }, columns: ['id', 'qty "x"'], rowFilter: 'qty > 0',
    }).sql).toMatchSnapshot();
  });

  test('replica identity', () => {
    expect(renderReplicaIdentity({ schema: 'public', name: 'users' }, { kind: 'full' }).sql).toBe('ALTER TABLE "public"."users" REPLICA IDENTITY FULL');
    expect(renderReplicaIdentity({ schema: 'public', name: 'users' }, { kind: 'index', index: 'users_email_key' }).sql)
      .toBe('ALTER TABLE "public"."users" REPLICA IDENTITY USING INDEX "users_email_key"');
  });

  test('tracking trigger skips the worker\'s own writes', () => {
    expect(renderTrackingTrigger('shop', { schema: 'crm', name: "o'brien" }, ['a', 'b']).sql).toMatchSnapshot();
  });

  test('subscription shows no password but runs with it', () => {
    const s = renderCreateSubscription('syncctl_shop_native', 'postgres://u:s3cr3t-pw@db:5432/shop', 'syncctl_shop_native');
    expect(s.sql).toContain('s3cr3t-pw');
    expect(displayStatement(s)).not.toContain('s3cr3t-pw');
    expect(displayStatement(s)).toContain('postgres://u:***@db:5432/shop');
  });

  test('parameters are shown inline as literals', () => {
    expect(displayStatement({ sql: 'INSERT INTO t VALUES ($1, $2, $10)', params: ["it's", null, 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'ten'] }))
      .toBe(`INSERT INTO t VALUES ('it''s', NULL, 'ten')`);
  });
});
