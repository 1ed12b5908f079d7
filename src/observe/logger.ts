/**
 * Structured JSON logs on stderr (pretty on a TTY). Every line passes through redaction: a
 * connection string or password that slips into a message or a field leaves as `***`.
 */
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
import { redactConnectionStrings } from './redact.ts';

export type { Logger };

const REDACT_PATHS = ['password', '*.password', 'connectionString', '*.connectionString', 'sourceUrl', 'targetUrl', '*.sourceUrl', '*.targetUrl'];

export function createLogger(options: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = options.level ?? process.env['SYNCCTL_LOG_LEVEL'] ?? 'info';
  const destination = options.destination ?? process.stderr;
  const wantPretty = options.pretty ?? (process.stderr.isTTY === true && process.env['SYNCCTL_LOG_FORMAT'] !== 'json');
  const scrubbed = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      destination.write(redactConnectionStrings(chunk.toString()));
      callback();
    },
  });
  const config = {
    level,
    base: { name: 'syncctl' },
    redact: { paths: REDACT_PATHS, censor: '***' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return pino(config, wantPretty ? pretty()({ destination: scrubbed, sync: true, ignore: 'pid,hostname,name' }) : scrubbed);
}

/** pino-pretty, loaded only for a terminal: a worker under a supervisor logs JSON and starts without it. */
function pretty(): (options: PrettyOptions) => NodeJS.WritableStream {
  return createRequire(import.meta.url)('pino-pretty') as (options: PrettyOptions) => NodeJS.WritableStream;
}
