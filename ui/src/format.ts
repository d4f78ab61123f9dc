// How values read on the page: sizes, times, digests, the pull command. Pure and
// locale-free, so the page reads the same everywhere and the tests can say what it shows.

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB'];

/** `1.5 MiB`; bytes below 1 KiB as `512 B`. Binary units, as the registry's README uses. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 1024) {
    return `${Math.max(0, Math.floor(Number.isFinite(n) ? n : 0))} B`;
  }
  let value = n;
  let unit = 'B';
  for (const u of UNITS) {
    if (value < 1024) {
      break;
    }
    value /= 1024;
    unit = u;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value).toString()} ${unit}`;
}

function pad(n: number): string {
  return n.toString().padStart(2, '0');
}

/** `2026-11-30 14:05 UTC`: unambiguous for a team spread over time zones. */
export function formatTime(iso: string): string {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) {
    return iso;
  }
  return `${t.getUTCFullYear()}-${pad(t.getUTCMonth() + 1)}-${pad(t.getUTCDate())} ${pad(t.getUTCHours())}:${pad(t.getUTCMinutes())} UTC`;
}

/** `sha256:0123456789ab`: enough to tell digests apart on screen. */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return colon < 0 ? digest.slice(0, 12) : digest.slice(0, colon + 13);
}

/** What a user types to pull `repository:tag` from the registry at `host`. */
export function pullCommand(host: string, repository: string, tag: string): string {
  return `docker pull ${host}/${repository}:${tag}`;
}
