import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configFacts, DOCKER_LIST, DOCKER_MANIFEST, MANIFEST_ACCEPT, OCI_INDEX, OCI_MANIFEST, platformLabel, summarize } from '../src/manifest';

const d = (c: string): string => `sha256:${c.repeat(64)}`;

test('every manifest type the page reads is in Accept, indexes included', () => {
  for (const t of [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST]) {
    assert.ok(MANIFEST_ACCEPT.includes(t), t);
  }
});

test('an image: config plus layers, and its config is readable', () => {
  const s = summarize(
    {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('c'), size: 500 },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('1'), size: 1000 },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('2'), size: 2000 },
      ],
    },
    null,
  );
  assert.deepEqual(s, {
    kind: 'image',
    mediaType: OCI_MANIFEST,
    size: 3500,
    layers: 2,
    config: { digest: d('c'), size: 500 },
    artifactType: null,
  });
});

test('the media type comes from Content-Type when the JSON has none', () => {
  const s = summarize({ schemaVersion: 2, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: d('c'), size: 1 }, layers: [] }, `${DOCKER_MANIFEST}; charset=utf-8`);
  assert.equal(s.kind, 'image');
  assert.equal(s.mediaType, DOCKER_MANIFEST);
});

test('an artifact is shown by its type and its config is never fetched', () => {
  const s = summarize({ mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: d('c'), size: 10 }, layers: [] }, null);
  assert.equal(s.kind, 'image');
  assert.ok(s.kind === 'image' && s.config === null && s.artifactType === 'application/vnd.cncf.helm.config.v1+json');
});

test('an oversized config is not read', () => {
  const s = summarize({ mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: d('c'), size: 50 * 1024 * 1024 }, layers: [] }, null);
  assert.ok(s.kind === 'image' && s.config === null);
});

test('an index lists platforms and marks attestations', () => {
  const s = summarize(
    {
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: d('a'), size: 100, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: OCI_MANIFEST, digest: d('b'), size: 200, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        {
          mediaType: OCI_MANIFEST,
          digest: d('e'),
          size: 300,
          platform: { os: 'unknown', architecture: 'unknown' },
          annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
        },
        { digest: 'not a digest', size: 1 },
      ],
    },
    null,
  );
  assert.equal(s.kind, 'index');
  assert.ok(s.kind === 'index');
  assert.deepEqual(
    s.children.map((c) => [c.platform, c.attestation]),
    [
      ['linux/amd64', false],
      ['linux/arm64/v8', false],
      ['unknown/unknown', true],
    ],
  );
});

test('anything else is other, never a crash', () => {
  assert.equal(summarize(null, 'text/html').kind, 'other');
  assert.equal(summarize({ schemaVersion: 1, fsLayers: [] }, 'application/vnd.docker.distribution.manifest.v1+prettyjws').kind, 'other');
  assert.equal(summarize([1, 2], null).kind, 'other');
});

test('config facts: platform and a valid creation time', () => {
  assert.deepEqual(configFacts({ architecture: 'arm', os: 'linux', variant: 'v7', created: '2026-01-02T03:04:05Z' }), {
    platform: 'linux/arm/v7',
    created: '2026-01-02T03:04:05Z',
  });
  assert.deepEqual(configFacts({ created: 'not a time' }), { platform: null, created: null });
  assert.deepEqual(configFacts('x'), { platform: null, created: null });
  assert.equal(platformLabel(undefined), 'unknown');
});
