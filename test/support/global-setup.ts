/**
 * Vitest global setup: one source and one target Postgres server (major PG_MAJOR, default 18)
 * for the whole run, started in parallel and stopped (data dirs removed) at the end.
 */
import type { TestProject } from 'vitest/node';
import { startLocalCluster, type LocalCluster } from '../../src/embedded/local-cluster.ts';
import type { ServerInfo } from './servers.ts';

function info(cluster: LocalCluster): ServerInfo {
  return { host: cluster.host, port: cluster.port, user: cluster.user, password: cluster.password, major: cluster.major };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const results = await Promise.allSettled([startLocalCluster({}), startLocalCluster({})]);
  const clusters = results.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failure = results.find((result) => result.status === 'rejected');
  if (failure) {
    await Promise.allSettled(clusters.map((cluster) => cluster.stop()));
    throw failure.reason;
  }
  const [source, target] = clusters as [LocalCluster, LocalCluster];
  project.provide('pgServers', { source: info(source), target: info(target) });
  console.log(`[global-setup] Postgres ${source.major}: source on port ${source.port}, target on port ${target.port} (started in ${Date.now() - started} ms)`);
  return async () => {
    await Promise.allSettled([source.stop(), target.stop()]);
  };
}
