/**
 * CopyBoth on a stand-in socket: frames come out whole and in order however the bytes are cut
 * into chunks; the messages that end the copy, and everything after them, go back to pg's own
 * reader; writes wait for CopyBothResponse.
 */
import { Duplex } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import type pg from 'pg';
import { describe, expect, test } from 'vitest';
import { CopyBoth } from '../../src/stream/copy-both.ts';

function message(code: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head[0] = code.charCodeAt(0);
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}

/** A socket whose incoming bytes the test pushes, with pg's reader on it, and a copy submitted. */
function setup() {
  const written: Buffer[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      written.push(chunk);
      callback();
    },
  });
  const toPg: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => toPg.push(chunk));
  const queries: string[] = [];
  const copy = new CopyBoth('START_REPLICATION SLOT "s" LOGICAL 0/0');
  copy.submit({ stream: socket, query: (text: string) => queries.push(text) } as unknown as pg.Connection);
  return { socket, copy, written, toPg, queries };
}

/** Pushes `bytes` in chunks of the given sizes (cycled), taking every frame as it becomes complete. */
async function feed(env: ReturnType<typeof setup>, bytes: Buffer, sizes: readonly number[]): Promise<Buffer[]> {
  const frames: Buffer[] = [];
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const size = sizes[i % sizes.length]!;
    env.socket.push(bytes.subarray(at, at + size));
    at += size;
    await tick();
    while (env.copy.next()) frames.push(Buffer.from(env.copy.frame.subarray(env.copy.start, env.copy.end)));
  }
  await tick();
  while (env.copy.next()) frames.push(Buffer.from(env.copy.frame.subarray(env.copy.start, env.copy.end)));
  return frames;
}

const payloads = [
  Buffer.from('w-first'), Buffer.alloc(0), Buffer.alloc(3000, 0x61), Buffer.from('k'),
  Buffer.alloc(70_000, 0x62), Buffer.from('after the big one'),
];
const tail = Buffer.concat([message('c'), message('C', Buffer.from('COPY 0\0')), message('Z', Buffer.from('I'))]);
const stream = Buffer.concat([
  message('W', Buffer.from([0, 0, 0])),
  message('d', payloads[0]), message('N', Buffer.from('Snotice\0\0')), message('d', payloads[1]), message('d', payloads[2]),
  message('S', Buffer.from('a\0b\0')), message('d', payloads[3]), message('d', payloads[4]), message('d', payloads[5]),
  tail,
]);

describe('CopyBoth', () => {
  test('sends the query and takes the socket from pg', () => {
    const env = setup();
    expect(env.queries).toEqual(['START_REPLICATION SLOT "s" LOGICAL 0/0']);
    expect(env.socket.listenerCount('data')).toBe(0);
  });

  for (const sizes of [[1], [2], [3], [5], [7, 1, 4096], [65_536], [stream.length], [13, 100, 1, 70_001]]) {
    test(`frames whole and in order, the end handed back to pg, with chunks of ${sizes.join(', ')} bytes`, async () => {
      const env = setup();
      const frames = await feed(env, stream, sizes);
      expect(frames.map((f) => f.toString('hex'))).toEqual(payloads.map((p) => p.toString('hex')));
      // From CopyDone on, pg's reader gets every byte, once, in order.
      await tick();
      expect(Buffer.concat(env.toPg).toString('hex')).toBe(tail.toString('hex'));
      expect(env.socket.listenerCount('data')).toBe(1);
      expect(env.copy.next()).toBe(false);
    });
  }

  test('an ErrorResponse goes to pg, with what follows it', async () => {
    const env = setup();
    const error = Buffer.concat([message('E', Buffer.from('SFATAL\0Mterminating\0\0')), message('Z', Buffer.from('I'))]);
    const frames = await feed(env, Buffer.concat([message('W', Buffer.from([0, 0, 0])), message('d', Buffer.from('one')), error]), [4]);
    expect(frames.map(String)).toEqual(['one']);
    await tick();
    expect(Buffer.concat(env.toPg).toString('hex')).toBe(error.toString('hex'));
    env.copy.handleError(new Error('terminating'));
    expect(env.copy.finished).toBe(true);
    expect(env.copy.failure?.message).toBe('terminating');
  });

  test('writes wait for CopyBothResponse, then go out as CopyData frames', async () => {
    const env = setup();
    env.copy.write(Buffer.from('early'));
    expect(env.written).toEqual([]);
    await feed(env, message('W', Buffer.from([0, 0, 0])), [64]);
    env.copy.write(Buffer.from('late'));
    expect(env.written.map((b) => b.toString('hex'))).toEqual([message('d', Buffer.from('early')).toString('hex'), message('d', Buffer.from('late')).toString('hex')]);
  });

  test('buffered() says whether a whole frame, or unread socket data, is waiting', async () => {
    const env = setup();
    await feed(env, message('W', Buffer.from([0, 0, 0])), [64]);
    expect(env.copy.buffered()).toBe(false);
    const two = Buffer.concat([message('d', Buffer.from('a')), message('d', Buffer.from('b'))]);
    env.socket.push(two.subarray(0, 8));
    await tick();
    expect(env.copy.buffered()).toBe(true);
    expect(env.copy.next()).toBe(true);
    expect(env.copy.buffered()).toBe(false);
    expect(env.copy.next()).toBe(false);
    env.socket.push(two.subarray(8));
    await tick();
    expect(env.copy.buffered()).toBe(true);
    expect(env.copy.next()).toBe(true);
    expect(env.copy.frame.subarray(env.copy.start, env.copy.end).toString()).toBe('b');
  });

  test('waitForData() resolves when bytes arrive, and on stopWaiting()', async () => {
    const env = setup();
    const waiting = env.copy.waitForData();
    env.socket.push(message('W', Buffer.from([0, 0, 0])));
    await waiting;
    const again = env.copy.waitForData();
    env.copy.stopWaiting();
    await again;
  });

  test('stop(): CopyDone goes out, what the server still sends is dropped, and it returns once pg has the connection back', async () => {
    const env = setup();
    await feed(env, message('W', Buffer.from([0, 0, 0])), [64]);
    const stopping = env.copy.stop(5_000);
    expect(env.written.map((b) => b.toString('hex'))).toEqual([message('c').toString('hex')]);
    env.copy.write(Buffer.from('too late'));
    expect(env.written.length).toBe(1);
    env.socket.push(Buffer.concat([message('d', Buffer.from('dropped')), tail]));
    await tick();
    await tick();
    expect(Buffer.concat(env.toPg).toString('hex')).toBe(tail.toString('hex'));
    env.copy.handleReadyForQuery();
    await stopping;
    expect(env.copy.finished).toBe(true);
    expect(env.copy.failure).toBeUndefined();
  });

  test('stop() gives up after its timeout when the server does not answer', async () => {
    const env = setup();
    await feed(env, message('W', Buffer.from([0, 0, 0])), [64]);
    const started = Date.now();
    await env.copy.stop(50);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(env.copy.finished).toBe(false);
  });
});
