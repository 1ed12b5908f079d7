/** `syncctl demo`, the README's first command: finishes cleanly, fast, with every change arrived. */
import { expect, test } from 'vitest';
import { runSyncctl } from '../support/cli.ts';

test('syncctl demo runs scenario 1 end to end and stops cleanly', async () => {
  const started = Date.now();
  const result = await runSyncctl(['demo'], {}, { timeoutMs: 90_000 });
  expect(result.status).toBe(0);
  expect(result.stdout).toContain('Plan: 13 to create, 1 to change, 0 to destroy.');
  expect(result.stdout).toContain('Initial copy done. Target now holds: 20 institutes, 450 users, 500 memberships');
  for (const step of ['insert a user and a membership', 'rename a user', 'deactivate a user', 'suspend a membership', 'delete a membership']) {
    expect(result.stdout).toMatch(new RegExp(`${step}.*: arrived in \\d+ ms`));
  }
  // A local edit on the target meets a source change under the spec's rule, and leaves its conflict row.
  expect(result.stdout).toContain('a local edit on the target (newer) meets a source rename (older): locally_modified under last-write-wins: kept, the target keeps "Grace B. Hopper"');
  // It ends with `syncctl status --counts` read while the worker streams: each table's source rows
  // (after its row filter) equal its target rows.
  expect(result.stdout).toContain('$ syncctl status specs/laas_to_orgs.sync.ts --counts');
  expect(result.stdout).toMatch(/^laas_to_orgs: healthy\n {2}leader .*\n {2}last commit .*, committed .*\n {2}slot +syncctl_laas_to_orgs: active, /m);
  const counted = [...result.stdout.matchAll(/^ {2}(\w+) +streaming +\d+ +(?:-|\S+ \S+) +0 +0 +(\d+) +(\d+) +-$/gm)].map((m) => [m[1], m[2], m[3]]);
  expect(counted.map((c) => c[0])).toEqual(['institutes', 'users', 'memberships']);
  for (const [, source, target] of counted) expect(source).toBe(target);
  expect(result.stdout).toContain('Stopped cleanly');
  // The README promises about 5 s on this machine; leave room for a busy CI machine.
  expect(Date.now() - started).toBeLessThan(60_000);
});
