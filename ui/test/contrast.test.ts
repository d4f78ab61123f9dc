import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

// The page's colours, light and dark, as app.css declares them; WCAG 2 contrast ratios.
const css = readFileSync(new URL('src/app.css', `file://${process.cwd()}/`), 'utf8');

function palette(block: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const m of block.matchAll(/--([a-z-]+):\s*(#[0-9a-f]{6});/g)) {
    vars.set(m[1]!, m[2]!);
  }
  return vars;
}

function luminance(hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
}

export function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi! + 0.05) / (lo! + 0.05);
}

const light = palette(css.slice(css.indexOf(':root'), css.indexOf('@media (prefers-color-scheme: dark)')));
const darkStart = css.indexOf('@media (prefers-color-scheme: dark)');
const dark = palette(css.slice(darkStart, css.indexOf('}\n}', darkStart)));

// [foreground, background, minimum]: text 4.5:1, borders and the focus ring 3:1.
const PAIRS: [string, string, number][] = [
  ['text', 'bg', 4.5],
  ['text', 'surface', 4.5],
  ['muted', 'bg', 4.5],
  ['muted', 'surface', 4.5],
  ['accent', 'bg', 4.5],
  ['accent', 'surface', 4.5],
  ['on-accent', 'accent', 4.5],
  ['danger', 'surface', 4.5],
  ['danger', 'bg', 4.5],
  ['on-danger', 'danger', 4.5],
  ['text', 'code-bg', 4.5],
  ['border', 'surface', 3],
  ['focus', 'bg', 3],
  ['focus', 'surface', 3],
];

test('contrast meets WCAG AA in the light and the dark scheme', () => {
  for (const [name, vars] of [
    ['light', light],
    ['dark', dark],
  ] as const) {
    assert.ok(vars.size >= 12, `${name}: ${vars.size} colours found`);
    for (const [fg, bg, min] of PAIRS) {
      const a = vars.get(fg);
      const b = vars.get(bg);
      assert.ok(a && b, `${name}: --${fg} or --${bg} missing`);
      const ratio = contrast(a, b);
      assert.ok(ratio >= min, `${name}: --${fg} on --${bg} is ${ratio.toFixed(2)}:1, below ${min}:1`);
    }
  }
});

test('the ratio formula matches known values', () => {
  assert.equal(contrast('#000000', '#ffffff').toFixed(1), '21.0');
  assert.equal(contrast('#767676', '#ffffff').toFixed(2), '4.54');
});
