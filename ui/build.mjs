// Builds the registry's page with esbuild: `node build.mjs OUTDIR` writes index.html, app.js
// and app.css (what build.rs embeds in the provider); `node build.mjs --test` runs the tests.
//
// The output must be the same bytes on every machine for the same sources and lockfile: the
// provider compares file digests on the droplet, so a different build would show as drift.

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));

// Browsers from 2023 on: native dialog, optional chaining, :focus-visible.
const TARGETS = ['chrome114', 'firefox115', 'safari16.4', 'edge114'];

async function build(outdir) {
  mkdirSync(outdir, { recursive: true });
  await esbuild.build({
    entryPoints: { app: join(here, 'src/main.ts') },
    outdir,
    bundle: true,
    format: 'iife',
    target: TARGETS,
    minify: true,
    legalComments: 'none',
    charset: 'utf8',
    logLevel: 'warning',
  });
  await esbuild.build({
    entryPoints: { app: join(here, 'src/app.css') },
    outdir,
    bundle: true,
    target: TARGETS,
    minify: true,
    legalComments: 'none',
    charset: 'utf8',
    logLevel: 'warning',
  });
  copyFileSync(join(here, 'index.html'), join(outdir, 'index.html'));
}

// Node 20 runs JavaScript only: each test file is bundled (with what it imports) and run by
// node's own test runner.
async function test() {
  const out = mkdtempSync(join(tmpdir(), 'registry-ui-test-'));
  try {
    const files = readdirSync(join(here, 'test')).filter((f) => f.endsWith('.test.ts'));
    await esbuild.build({
      entryPoints: files.map((f) => join(here, 'test', f)),
      outdir: out,
      outExtension: { '.js': '.mjs' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      logLevel: 'warning',
    });
    const run = spawnSync(process.execPath, ['--test', ...files.map((f) => join(out, f.replace(/\.ts$/, '.mjs')))], {
      stdio: 'inherit',
      cwd: here,
    });
    return run.status ?? 1;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const arg = process.argv[2];
if (arg === '--test') {
  process.exit(await test());
} else if (arg) {
  await build(resolve(arg));
} else {
  console.error('usage: node build.mjs OUTDIR | --test');
  process.exit(2);
}
