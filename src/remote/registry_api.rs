//! The registry's own API, as the provider uses it for retention: the catalog, each
//! repository's tags with their manifests' digests and creation dates, and deletes by digest.
//! Over HTTPS to the droplet, pinned to the certificate the provider installed, with tokens
//! the provider signs itself (its management credential: no user's password is needed).

use std::net::IpAddr;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::outside::{management_token, pinned_client_no_redirect};
use super::RemoteError;
use crate::error_chain::display_chain;
use crate::secret::Secret;

/// Which registry, and how to sign for it.
#[derive(Clone, Debug)]
pub struct RegistryTarget {
    pub fqdn: String,
    pub ip: IpAddr,
    /// The leaf certificate the provider installed (DER): the only one accepted, with its
    /// renewals by `renewed_by` (the issuer's DER) when the droplet renews its own.
    pub certificate_der: Vec<u8>,
    pub renewed_by: Option<Vec<u8>>,
    /// PKCS#8 PEM of the token signing key (`render::token_key`).
    pub token_key_pem: Secret,
    pub kid: String,
}

/// One tag: the manifest it points at and, for an index, the manifests the index names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRef {
    pub tag: String,
    pub digest: String,
    pub children: Vec<String>,
    /// The digest of the image config whose `created` dates the tag (an index: its first
    /// image's), when the manifest names one.
    pub config: Option<ConfigRef>,
}

/// Where a tag's config blob is: the repository and manifest it is reached through.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigRef {
    Blob(String),
    /// An index: the config of this child manifest.
    Child(String),
}

#[async_trait]
pub trait RegistryApi: Send + Sync {
    /// Every repository, in the registry's order.
    async fn catalog(&self, t: &RegistryTarget) -> Result<Vec<String>, RemoteError>;
    /// Every tag of `repository` with its manifest's digest, as the registry serves it now.
    async fn tags(&self, t: &RegistryTarget, repository: &str) -> Result<Vec<TagRef>, RemoteError>;
    /// The `created` date of the image `config` dates, None when it has none.
    async fn created(
        &self,
        t: &RegistryTarget,
        repository: &str,
        config: &ConfigRef,
    ) -> Result<Option<OffsetDateTime>, RemoteError>;
    /// Deletes the manifest `digest` (and with it every tag pointing at it).
    async fn delete_manifest(
        &self,
        t: &RegistryTarget,
        repository: &str,
        digest: &str,
    ) -> Result<(), RemoteError>;
}

/// Every manifest type a registry may hold; an index is read for its children.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// HTTPS to the droplet.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpsRegistry;

fn fail(t: &RegistryTarget, what: String) -> impl Fn(String) -> RemoteError + '_ {
    move |detail| RemoteError::Outside {
        url: format!("https://{}/v2/ ({what})", t.fqdn),
        ip: t.ip,
        detail,
    }
}

impl HttpsRegistry {
    fn client(t: &RegistryTarget) -> Result<reqwest::Client, RemoteError> {
        pinned_client_no_redirect(
            &t.fqdn,
            t.ip,
            t.certificate_der.clone(),
            t.renewed_by.clone(),
        )
        .map_err(|e| fail(t, "connecting".into())(display_chain(&e)))
    }

    /// A token for `access` (the token endpoint's claims shape), valid two minutes.
    fn token(t: &RegistryTarget, access: serde_json::Value) -> Result<Secret, RemoteError> {
        management_token(&t.fqdn, &t.token_key_pem, &t.kid, access)
            .map_err(|e| fail(t, "signing a token".into())(e))
    }

    fn repo_token(
        t: &RegistryTarget,
        repository: &str,
        actions: &[&str],
    ) -> Result<Secret, RemoteError> {
        Self::token(
            t,
            serde_json::json!([{ "type": "repository", "name": repository, "actions": actions }]),
        )
    }

    /// GET `url` with `token`, following the registry's `Link: <...>; rel="next"` pages.
    async fn paged(
        http: &reqwest::Client,
        t: &RegistryTarget,
        first: String,
        token: &Secret,
        field: &str,
    ) -> Result<Vec<String>, RemoteError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next.take() {
            let f = fail(t, format!("GET {url}"));
            let resp = http
                .get(&url)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| f(display_chain(&e.without_url())))?;
            let status = resp.status();
            if status.as_u16() == 404 && field == "tags" {
                // A repository whose every tag was deleted lists as unknown.
                return Ok(out);
            }
            if !status.is_success() {
                let body: String = resp
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                return Err(f(format!("answered {status}: {}", body.trim())));
            }
            next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|l| l.to_str().ok())
                .and_then(next_link)
                .map(|path| format!("https://{}{path}", t.fqdn));
            let body: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| f(format!("not JSON: {}", display_chain(&e))))?;
            out.extend(
                body[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            );
        }
        Ok(out)
    }

    async fn manifest(
        http: &reqwest::Client,
        t: &RegistryTarget,
        repository: &str,
        reference: &str,
        token: &Secret,
    ) -> Result<(String, serde_json::Value), RemoteError> {
        let url = format!("https://{}/v2/{repository}/manifests/{reference}", t.fqdn);
        let f = fail(t, format!("GET {url}"));
        let resp = http
            .get(&url)
            .bearer_auth(token.expose())
            .header(reqwest::header::ACCEPT, ACCEPT)
            .send()
            .await
            .map_err(|e| f(display_chain(&e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(f(format!("answered {status}")));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| f(display_chain(&e.without_url())))?;
        // The digest of the bytes served is the manifest's digest, whatever a header says.
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let body = serde_json::from_slice(&bytes).map_err(|e| f(format!("not JSON: {e}")))?;
        Ok((digest, body))
    }
}

/// The path of a `Link: </v2/...>; rel="next"` header.
fn next_link(link: &str) -> Option<String> {
    let (target, params) = link.split_once(';')?;
    if !params.contains("rel=\"next\"") {
        return None;
    }
    let path = target.trim().strip_prefix('<')?.strip_suffix('>')?;
    path.starts_with("/v2/").then(|| path.to_owned())
}

/// A manifest's children (an index) and the config that dates it.
pub fn parse_manifest(body: &serde_json::Value) -> (Vec<String>, Option<ConfigRef>) {
    let digest = |v: &serde_json::Value| v["digest"].as_str().map(str::to_owned);
    if let Some(config) = body.get("config").and_then(digest) {
        return (Vec::new(), Some(ConfigRef::Blob(config)));
    }
    let children: Vec<&serde_json::Value> =
        body["manifests"].as_array().into_iter().flatten().collect();
    // The first image that is not an attestation (buildx's `unknown/unknown` entries).
    let first = children
        .iter()
        .find(|m| m["platform"]["os"].as_str() != Some("unknown"))
        .and_then(|m| digest(m));
    (
        children.iter().filter_map(|m| digest(m)).collect(),
        first.map(ConfigRef::Child),
    )
}

/// The config's `created`, when it has a valid RFC 3339 one.
pub fn created_of(config: &serde_json::Value) -> Option<OffsetDateTime> {
    let s = config["created"].as_str()?;
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[async_trait]
impl RegistryApi for HttpsRegistry {
    async fn catalog(&self, t: &RegistryTarget) -> Result<Vec<String>, RemoteError> {
        let http = Self::client(t)?;
        let token = Self::token(
            t,
            serde_json::json!([{ "type": "registry", "name": "catalog", "actions": ["*"] }]),
        )?;
        let first = format!("https://{}/v2/_catalog?n=1000", t.fqdn);
        Self::paged(&http, t, first, &token, "repositories").await
    }

    async fn tags(&self, t: &RegistryTarget, repository: &str) -> Result<Vec<TagRef>, RemoteError> {
        let http = Self::client(t)?;
        let token = Self::repo_token(t, repository, &["pull"])?;
        let first = format!("https://{}/v2/{repository}/tags/list?n=1000", t.fqdn);
        let names = Self::paged(&http, t, first, &token, "tags").await?;
        let mut out = Vec::with_capacity(names.len());
        for tag in names {
            // A token lives two minutes: a fresh one per manifest costs a signature only.
            let token = Self::repo_token(t, repository, &["pull"])?;
            let (digest, body) = Self::manifest(&http, t, repository, &tag, &token).await?;
            let (children, config) = parse_manifest(&body);
            out.push(TagRef {
                tag,
                digest,
                children,
                config,
            });
        }
        Ok(out)
    }

    async fn created(
        &self,
        t: &RegistryTarget,
        repository: &str,
        config: &ConfigRef,
    ) -> Result<Option<OffsetDateTime>, RemoteError> {
        let http = Self::client(t)?;
        let token = Self::repo_token(t, repository, &["pull"])?;
        let blob = match config {
            ConfigRef::Blob(d) => d.clone(),
            ConfigRef::Child(child) => {
                let (_, body) = Self::manifest(&http, t, repository, child, &token).await?;
                match parse_manifest(&body).1 {
                    Some(ConfigRef::Blob(d)) => d,
                    // An index of indexes: not dated.
                    _ => return Ok(None),
                }
            }
        };
        let url = format!("https://{}/v2/{repository}/blobs/{blob}", t.fqdn);
        let f = fail(t, format!("GET {url}"));
        let mut resp = http
            .get(&url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| f(display_chain(&e.without_url())))?;
        if resp.status().is_redirection() {
            // `spaces_redirect`: the blob is served by Spaces, under its own certificate.
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            resp = reqwest::Client::new().get(&to).send().await.map_err(|e| {
                f(format!(
                    "following the redirect: {}",
                    display_chain(&e.without_url())
                ))
            })?;
        }
        let status = resp.status();
        if !status.is_success() {
            return Err(f(format!("answered {status}")));
        }
        let config: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| f(format!("the config is not JSON: {}", display_chain(&e))))?;
        Ok(created_of(&config))
    }

    async fn delete_manifest(
        &self,
        t: &RegistryTarget,
        repository: &str,
        digest: &str,
    ) -> Result<(), RemoteError> {
        let http = Self::client(t)?;
        let token = Self::repo_token(t, repository, &["pull", "delete"])?;
        let url = format!("https://{}/v2/{repository}/manifests/{digest}", t.fqdn);
        let f = fail(t, format!("DELETE {url}"));
        let resp = http
            .delete(&url)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|e| f(display_chain(&e.without_url())))?;
        let status = resp.status();
        // 404: gone already, which is what was asked.
        if status.is_success() || status.as_u16() == 404 {
            return Ok(());
        }
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        Err(f(format!("answered {status}: {}", body.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_next_link() {
        assert_eq!(
            next_link("</v2/_catalog?last=b&n=2>; rel=\"next\"").as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(next_link("<https://elsewhere/v2/x>; rel=\"next\""), None);
        assert_eq!(next_link("</v2/x>; rel=\"prev\""), None);
    }

    #[test]
    fn manifests_name_their_config_or_children() {
        let image = serde_json::json!({"config": {"digest": "sha256:c"}, "layers": []});
        assert_eq!(
            parse_manifest(&image),
            (Vec::new(), Some(ConfigRef::Blob("sha256:c".into())))
        );
        let index = serde_json::json!({"manifests": [
            {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
            {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        ]});
        assert_eq!(
            parse_manifest(&index),
            (
                vec!["sha256:att".to_owned(), "sha256:amd".to_owned()],
                Some(ConfigRef::Child("sha256:amd".into()))
            )
        );
        assert_eq!(
            created_of(&serde_json::json!({"created": "2026-11-01T10:00:00.123456789Z"})),
            Some(time::macros::datetime!(2026-11-01 10:00:00.123456789 UTC))
        );
        assert_eq!(
            created_of(&serde_json::json!({"created": "yesterday"})),
            None
        );
        assert_eq!(created_of(&serde_json::json!({})), None);
    }
}
