/** KeySet: repeated keys are found across growth; parts are separated; null parts count. */
import { expect, test } from 'vitest';
import { KeySet } from '../../src/apply/key-set.ts';

const b = (s: string) => Buffer.from(s);

test('finds a repeated key among 300,000 distinct ones, across growth', () => {
  const keys = new KeySet();
  for (let i = 0; i < 300_000; i++) expect(keys.add([b(String(i))])).toBe(true);
  expect(keys.size).toBe(300_000);
  expect(keys.add([b('123456')])).toBe(false);
  expect(keys.add([b('300000')])).toBe(true);
});

test('composite keys: part boundaries and NULL parts are part of the key', () => {
  const keys = new KeySet();
  expect(keys.add([b('ab'), b('c')])).toBe(true);
  expect(keys.add([b('a'), b('bc')])).toBe(true);
  expect(keys.add([null, b('x')])).toBe(true);
  expect(keys.add([b(''), b('x')])).toBe(true);
  expect(keys.add([null, b('x')])).toBe(false);
  keys.clear();
  expect(keys.add([b('ab'), b('c')])).toBe(true);
});

test('a key taken from positions of a row is the same key as those values on their own', () => {
  const keys = new KeySet();
  expect(keys.add([b('x'), b('7'), b('y'), b('1')], [3, 1])).toBe(true);
  expect(keys.add([b('1'), b('7')])).toBe(false);
  expect(keys.add([b('7'), b('1')])).toBe(true);
  expect(keys.add([b('other'), b('7'), b('z'), b('1')], [3, 1])).toBe(false);
});

test('after clear() every key is new again, at the first size and after growth', () => {
  const keys = new KeySet();
  for (const n of [10, 5_000]) {
    for (let i = 0; i < n; i++) keys.add([b(String(i))]);
    keys.clear();
    expect(keys.size).toBe(0);
    for (let i = 0; i < n; i++) expect(keys.add([b(String(i))]), `${n}: ${i}`).toBe(true);
    keys.clear();
  }
});

test('after a large set is cleared (its table freed), it works again from its first size', () => {
  const keys = new KeySet();
  for (let i = 0; i < 100_000; i++) keys.add([b(String(i))]);
  keys.clear();
  expect(keys.size).toBe(0);
  expect(keys.add([b('5')])).toBe(true);
  expect(keys.add([b('5')])).toBe(false);
  for (let i = 0; i < 5_000; i++) keys.add([b(`k${i}`)]);
  expect(keys.add([b('k4999')])).toBe(false);
});
