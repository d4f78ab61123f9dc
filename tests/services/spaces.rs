//! Spaces against Garage (run by localocean's code, in a temp dir): the bucket's lifecycle and
//! the destroy guard with real S3 answers, and the registry's own key limited to its bucket.

use std::sync::Arc;
use std::time::Duration;

use localocean::garage::{Garage, GarageOptions};
use localocean::spaces::IssuedKey;
use localocean::testkit::{ApiServer, NullHypervisor};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use terraform_provider_docker::do_api::{self, Grant};
use terraform_provider_docker::secret::Secret;
use terraform_provider_docker::storage::spaces::{
    delete_registry_key, destroy_bucket, mint_registry_key, BucketDestroyed, Created, Usage,
    DEFAULT_SIGNING_REGION, S3,
};
use terraform_provider_docker::storage::Error;
use url::Url;

use super::{fast, settings, TOKEN};

/// How long a presigned request stays valid: sent at once.
const SIGN_FOR: Duration = Duration::from_secs(300);

async fn start_garage(dir: &std::path::Path) -> Garage {
    Garage::start(dir, &GarageOptions::default())
        .await
        .expect("garage starts (run scripts/setup if it is missing)")
}

fn endpoint(g: &Garage) -> String {
    format!("http://{}", g.s3_endpoint())
}

fn s3_for(g: &Garage, access: &str, secret: &str) -> S3 {
    S3::new(
        &endpoint(g),
        "nyc3",
        DEFAULT_SIGNING_REGION,
        Secret::new(access),
        Secret::new(secret),
    )
    .unwrap()
}

fn admin(g: &Garage, key: &IssuedKey) -> S3 {
    s3_for(g, &key.access_key, &key.secret_key)
}

/// Signs and sends object requests the way any S3 client would (the registry's driver).
struct Objects {
    endpoint: Url,
    access: String,
    secret: String,
    http: reqwest::Client,
}

impl Objects {
    fn for_key(g: &Garage, access: &str, secret: &str) -> Objects {
        Objects {
            endpoint: Url::parse(&endpoint(g)).unwrap(),
            access: access.to_owned(),
            secret: secret.to_owned(),
            http: reqwest::Client::new(),
        }
    }
    fn parts(&self, bucket: &str) -> (Bucket, Credentials) {
        let b = Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            bucket.to_owned(),
            DEFAULT_SIGNING_REGION.to_owned(),
        )
        .unwrap();
        (b, Credentials::new(&self.access, &self.secret))
    }
    async fn put(&self, bucket: &str, key: &str, body: &[u8]) -> u16 {
        let (b, c) = self.parts(bucket);
        let url = b.put_object(Some(&c), key).sign(SIGN_FOR);
        let r = self.http.put(url).body(body.to_vec()).send().await;
        r.unwrap().status().as_u16()
    }
    async fn get(&self, bucket: &str, key: &str) -> (u16, Vec<u8>) {
        let (b, c) = self.parts(bucket);
        let url = b.get_object(Some(&c), key).sign(SIGN_FOR);
        let r = self.http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }
    async fn start_upload(&self, bucket: &str, key: &str) -> String {
        let (b, c) = self.parts(bucket);
        let url = b.create_multipart_upload(Some(&c), key).sign(SIGN_FOR);
        let r = self.http.post(url).send().await.unwrap();
        assert!(
            r.status().is_success(),
            "CreateMultipartUpload: {}",
            r.status()
        );
        let text = r.text().await.unwrap();
        let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&text).unwrap();
        let id = created.upload_id().to_owned();
        let url = b.upload_part(Some(&c), key, 1, &id).sign(SIGN_FOR);
        let r = self.http.put(url).body(vec![1u8; 1024]).send().await;
        assert!(r.unwrap().status().is_success(), "UploadPart");
        id
    }
}

#[tokio::test]
async fn garage_bucket_lifecycle_and_destroy_guard() {
    let dir = tempfile::tempdir().unwrap();
    let g = start_garage(dir.path()).await;
    let key = g.admin_s3_key().await.unwrap();
    let s3 = admin(&g, &key);
    let objects = Objects::for_key(&g, &key.access_key, &key.secret_key);
    let bucket = "tf-acc-registry";

    // Idempotent create.
    assert_eq!(s3.ensure_bucket(bucket).await.unwrap(), Created(true));
    assert_eq!(s3.ensure_bucket(bucket).await.unwrap(), Created(false));
    assert!(s3.head_bucket(bucket).await.unwrap());
    assert!(!s3.head_bucket("tf-acc-absent").await.unwrap());
    assert!(s3.is_empty(bucket).await.unwrap());
    assert_eq!(s3.usage(bucket).await.unwrap(), Usage::default());

    // Objects (one with characters that need escaping) and an unfinished upload.
    let names = ["docker/registry/v2/blobs/a", "b & c <d>.json", "é/x y"];
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            objects.put(bucket, n, &vec![b'x'; 100 * (i + 1)]).await,
            200
        );
    }
    assert_eq!(objects.get(bucket, names[1]).await.0, 200);
    objects
        .start_upload(bucket, "docker/registry/v2/uploads/big")
        .await;
    let u = s3.usage(bucket).await.unwrap();
    assert_eq!(
        u,
        Usage {
            objects: 3,
            bytes: 600,
            uploads: 1
        }
    );
    assert!(!s3.is_empty(bucket).await.unwrap());
    // Garage keeps no versions: what follows covers the ListObjectsV2 fallback (the
    // versioned path is covered against a scripted server below).
    assert!(!s3.keeps_versions(bucket).await.unwrap());

    // Unforced destroy keeps it and says why and what to do.
    let e = destroy_bucket(&s3, bucket, "nyc3", false)
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(matches!(e, Error::HoldsData { .. }), "{m}");
    assert!(
        m.contains(bucket) && m.contains("3 objects (600 bytes)"),
        "{m}"
    );
    assert!(m.contains("1 unfinished uploads") && m.contains("force_destroy = true"));
    assert!(s3.head_bucket(bucket).await.unwrap());

    // An unfinished upload alone is data too.
    s3.empty_bucket(bucket).await.unwrap();
    assert!(s3.is_empty(bucket).await.unwrap());
    assert_eq!(s3.usage(bucket).await.unwrap(), Usage::default());
    objects.start_upload(bucket, "only-an-upload").await;
    assert!(!s3.is_empty(bucket).await.unwrap());

    // Forced destroy empties (objects, uploads) and deletes; again is "already gone".
    for i in 0..5 {
        assert_eq!(objects.put(bucket, &format!("k{i}"), b"v").await, 200);
    }
    let done = destroy_bucket(&s3, bucket, "nyc3", true).await.unwrap();
    assert_eq!(done, BucketDestroyed::Deleted);
    // S3 (Spaces, Garage) makes a bucket's deletion visible eventually, not at once: under
    // the full suite's load Garage still answered HEAD with 200 right after the DELETE.
    let deleted_at = std::time::Instant::now();
    while s3.head_bucket(bucket).await.unwrap() {
        assert!(
            deleted_at.elapsed() < std::time::Duration::from_secs(15),
            "{bucket} still there 15 s after its deletion"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    s3.delete_bucket(bucket).await.unwrap();
    assert_eq!(
        destroy_bucket(&s3, bucket, "nyc3", true).await.unwrap(),
        BucketDestroyed::AlreadyGone
    );

    // An empty bucket goes without force.
    s3.ensure_bucket("tf-acc-empty").await.unwrap();
    assert_eq!(
        destroy_bucket(&s3, "tf-acc-empty", "nyc3", false)
            .await
            .unwrap(),
        BucketDestroyed::Deleted
    );

    // Bad credentials fail with a message that holds neither the secret nor a signature.
    let bad = s3_for(&g, &key.access_key, "wrong-secret-wrong-secret");
    let e = bad.ensure_bucket("tf-acc-other").await.unwrap_err();
    let m = format!("{e} {e:?}");
    assert!(m.contains("tf-acc-other"), "{m}");
    assert!(
        !matches!(e, Error::BucketTaken { .. }),
        "bad credentials are not a taken name: {m}"
    );
    assert!(
        !m.contains("wrong-secret") && !m.contains(&key.secret_key),
        "{m}"
    );
    assert!(!m.contains("X-Amz-Signature"), "{m}");
    g.stop().await;
}

#[tokio::test]
async fn garage_registry_key_is_scoped_to_its_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let g = Arc::new(start_garage(dir.path()).await);
    let dir_api = tempfile::tempdir().unwrap();
    let api = ApiServer::start(
        dir_api.path(),
        TOKEN,
        Arc::new(NullHypervisor::default()),
        g.clone(),
    )
    .await
    .unwrap();
    let client = do_api::Client::with_timings(&settings(&api.base, None), fast()).unwrap();
    let key = g.admin_s3_key().await.unwrap();
    let ep = endpoint(&g);
    let provider = S3::from_settings(
        &settings(&api.base, Some((&ep, &key.access_key, &key.secret_key))),
        "nyc3",
    )
    .unwrap();
    assert_eq!(provider.signing_region(), DEFAULT_SIGNING_REGION);
    provider.ensure_bucket("tf-acc-reg").await.unwrap();
    provider.ensure_bucket("tf-acc-other").await.unwrap();
    let as_provider = Objects::for_key(&g, &key.access_key, &key.secret_key);
    assert_eq!(as_provider.put("tf-acc-other", "secret", b"no").await, 200);

    let minted = mint_registry_key(&client, "registry-tf-acc", "tf-acc-reg")
        .await
        .unwrap();
    assert!(!minted.secret_key.is_empty());
    assert_eq!(format!("{:?}", minted.secret_key), "***");
    let listed = client
        .get_spaces_key(&minted.access_key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        listed.grants,
        vec![Grant {
            bucket: "tf-acc-reg".into(),
            permission: "readwrite".into()
        }]
    );

    let reg = s3_for(&g, &minted.access_key, minted.secret_key.expose());
    let as_registry = Objects::for_key(&g, &minted.access_key, minted.secret_key.expose());
    assert_eq!(as_registry.put("tf-acc-reg", "blob", b"layer").await, 200);
    assert_eq!(
        as_registry.get("tf-acc-reg", "blob").await,
        (200, b"layer".to_vec())
    );
    assert_eq!(reg.usage("tf-acc-reg").await.unwrap().objects, 1);
    // Nothing outside its bucket: no read, no write, no new bucket.
    assert_eq!(as_registry.get("tf-acc-other", "secret").await.0, 403);
    assert_eq!(as_registry.put("tf-acc-other", "x", b"x").await, 403);
    assert!(reg.usage("tf-acc-other").await.is_err());
    let e = reg.ensure_bucket("tf-acc-by-registry").await.unwrap_err();
    assert!(matches!(e, Error::BucketTaken { .. }), "{e}");
    assert!(!provider.head_bucket("tf-acc-by-registry").await.unwrap());

    // Deleted on destroy: the key stops working; deleting again is fine.
    delete_registry_key(&client, &minted.access_key)
        .await
        .unwrap();
    assert!(client
        .get_spaces_key(&minted.access_key)
        .await
        .unwrap()
        .is_none());
    assert_eq!(as_registry.get("tf-acc-reg", "blob").await.0, 403);
    delete_registry_key(&client, &minted.access_key)
        .await
        .unwrap();
    drop(api);
    g.shutdown().await;
}
