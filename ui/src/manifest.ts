// What a manifest says about an image, for the tag table: one image (size, config) or an
// index of platforms (OCI index, docker manifest list). Pure: JSON in, summary out.

export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

/** Every type the page understands; without the index types in Accept the registry would
 *  answer a multi-arch tag with an error instead of its index. */
export const MANIFEST_ACCEPT = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(', ');

const IMAGE_CONFIGS = new Set([
  'application/vnd.oci.image.config.v1+json',
  'application/vnd.docker.container.image.v1+json',
]);

/** A config blob bigger than this is not an image config: never fetched. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** One entry of an index. */
export interface Child {
  readonly digest: string;
  readonly size: number;
  readonly platform: string;
  /** buildx's provenance and SBOM manifests: listed, but not as a platform. */
  readonly attestation: boolean;
}

export type Summary =
  | {
      readonly kind: 'image';
      readonly mediaType: string;
      /** The config and every layer, as stored (compressed): what a pull downloads at most. */
      readonly size: number;
      readonly layers: number;
      /** Set when the config is an image config the page may read (architecture, created). */
      readonly config: { readonly digest: string; readonly size: number } | null;
      /** An OCI artifact (a Helm chart, a signature): its type, shown instead of a platform. */
      readonly artifactType: string | null;
    }
  | { readonly kind: 'index'; readonly mediaType: string; readonly children: readonly Child[] }
  | { readonly kind: 'other'; readonly mediaType: string };

/** What an image config says; each field null when absent or malformed. */
export interface ConfigFacts {
  readonly platform: string | null;
  readonly created: string | null;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v.length > 0 ? v : null;
}

function size(v: unknown): number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : 0;
}

const DIGEST = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export function isDigest(v: unknown): v is string {
  return typeof v === 'string' && DIGEST.test(v);
}

/** `linux/arm64/v8`, as docker spells a platform. */
export function platformLabel(p: unknown): string {
  if (!isObject(p)) {
    return 'unknown';
  }
  const parts = [str(p['os']) ?? 'unknown', str(p['architecture']) ?? 'unknown'];
  const variant = str(p['variant']);
  if (variant !== null) {
    parts.push(variant);
  }
  return parts.join('/');
}

/** Summarizes a manifest; `contentType` is the response's, used when the JSON has none. */
export function summarize(json: unknown, contentType: string | null): Summary {
  const declared = isObject(json) ? str(json['mediaType']) : null;
  const mediaType = declared ?? (contentType ?? '').split(';')[0]!.trim();
  if (!isObject(json)) {
    return { kind: 'other', mediaType };
  }
  if (Array.isArray(json['manifests']) && (mediaType === OCI_INDEX || mediaType === DOCKER_LIST)) {
    const children: Child[] = [];
    for (const m of json['manifests']) {
      if (!isObject(m) || !isDigest(m['digest'])) {
        continue;
      }
      const annotations = isObject(m['annotations']) ? m['annotations'] : {};
      children.push({
        digest: m['digest'],
        size: size(m['size']),
        platform: platformLabel(m['platform']),
        attestation: annotations['vnd.docker.reference.type'] === 'attestation-manifest',
      });
    }
    return { kind: 'index', mediaType, children };
  }
  if (isObject(json['config']) && (mediaType === OCI_MANIFEST || mediaType === DOCKER_MANIFEST)) {
    const config = json['config'];
    const layers = Array.isArray(json['layers']) ? json['layers'] : [];
    const total = layers.reduce<number>((sum, l) => sum + (isObject(l) ? size(l['size']) : 0), size(config['size']));
    const configType = str(config['mediaType']) ?? '';
    const readable = IMAGE_CONFIGS.has(configType) && isDigest(config['digest']) && size(config['size']) <= MAX_CONFIG_BYTES;
    const artifactType = str(json['artifactType']) ?? (IMAGE_CONFIGS.has(configType) ? null : configType || null);
    return {
      kind: 'image',
      mediaType,
      size: total,
      layers: layers.length,
      config: readable ? { digest: config['digest'] as string, size: size(config['size']) } : null,
      artifactType,
    };
  }
  return { kind: 'other', mediaType };
}

/** The platform and creation time of an image config. */
export function configFacts(json: unknown): ConfigFacts {
  if (!isObject(json)) {
    return { platform: null, created: null };
  }
  const created = str(json['created']);
  const valid = created !== null && !Number.isNaN(Date.parse(created));
  return {
    platform: str(json['architecture']) !== null ? platformLabel(json) : null,
    created: valid ? created : null,
  };
}
