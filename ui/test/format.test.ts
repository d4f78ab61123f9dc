import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatBytes, formatTime, pullCommand, shortDigest } from '../src/format';

test('sizes use binary units with one decimal below ten', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1024), '1.0 KiB');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(300 * 1024 * 1024), '300 MiB');
  assert.equal(formatBytes(5.25 * 1024 ** 3), '5.3 GiB');
  assert.equal(formatBytes(Number.NaN), '0 B');
});

test('times are UTC and locale-free', () => {
  assert.equal(formatTime('2026-11-30T14:05:59.9Z'), '2026-11-30 14:05 UTC');
  assert.equal(formatTime('2026-11-30T23:30:00+02:00'), '2026-11-30 21:30 UTC');
  assert.equal(formatTime('yesterday'), 'yesterday');
});

test('short digests keep the algorithm and twelve hex digits', () => {
  assert.equal(shortDigest(`sha256:${'ab'.repeat(32)}`), 'sha256:abababababab');
});

test('the pull command names host, repository and tag', () => {
  assert.equal(pullCommand('registry.example.com', 'team/api', '1.0'), 'docker pull registry.example.com/team/api:1.0');
});
