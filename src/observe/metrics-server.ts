/**
 * `syncctl run --metrics-address host:port`: /metrics (Prometheus text), /healthz (the process
 * answers) and /readyz (this process leads every sync it serves and streams them).
 */
import { createServer, type Server } from 'node:http';
import { SyncctlError } from '../errors.ts';
import type { SyncMetrics } from './metrics.ts';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** `host:port`, `[v6]:port` or `:port` (all interfaces). */
export function parseListenAddress(text: string): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65_535) {
    throw new SyncctlError('SPEC_INVALID', `--metrics-address ${JSON.stringify(text)} is not host:port (for example 127.0.0.1:9187 or :9187)`);
  }
  return { host: match[1] ?? (match[2] === '' ? '0.0.0.0' : match[2]!), port };
}

export async function serveMetrics(metrics: SyncMetrics, address: ListenAddress): Promise<Server> {
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path === '/metrics') {
      metrics.registry.metrics().then((text) => {
        response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text);
      }, (error: unknown) => {
        response.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(error as Error).message}\n`);
      });
    } else if (path === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const state = metrics.ready();
      response.writeHead(state.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(state)}\n`);
    } else {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: /metrics, /healthz, /readyz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => reject(new SyncctlError('APPLY_FAILED',
      `cannot serve metrics on ${address.host}:${address.port}: ${error.code === 'EADDRINUSE' ? 'the address is in use' : error.message}`)));
    server.listen(address.port, address.host, () => resolve());
  });
  return server;
}
