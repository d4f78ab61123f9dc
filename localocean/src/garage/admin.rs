//! Garage's admin API v2 as localocean uses it: a small typed client whose errors name the
//! endpoint and never carry the admin token, and the response shapes localocean reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::grants::Perms;

/// Errors from Garage's admin API, named by endpoint; never carry the admin token.
#[derive(Debug, thiserror::Error)]
pub enum GarageError {
    #[error("garage not found at {0}: run scripts/setup")]
    NotFound(PathBuf),
    #[error("garage admin API {endpoint}: {source}")]
    Http {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("garage admin API {endpoint} answered {status}: {message}")]
    Api {
        endpoint: String,
        status: reqwest::StatusCode,
        message: String,
    },
    #[error("garage admin API {endpoint}: unexpected response: {source}")]
    Payload {
        endpoint: String,
        #[source]
        source: serde_json::Error,
    },
}

impl GarageError {
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, GarageError::Api { status, .. } if *status == reqwest::StatusCode::NOT_FOUND)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyInfo {
    pub(super) access_key_id: String,
    #[serde(default)]
    pub(super) secret_access_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BucketInfo {
    pub(super) id: String,
    pub(super) global_aliases: Vec<String>,
    pub(super) keys: Vec<BucketKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BucketKey {
    pub(super) access_key_id: String,
    pub(super) permissions: Perms,
    #[serde(default)]
    pub(super) bucket_local_aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClusterStatus {
    pub(super) layout_version: u64,
    pub(super) nodes: Vec<NodeStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NodeStatus {
    pub(super) id: String,
    #[serde(default)]
    pub(super) role: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ClusterHealth {
    pub(super) status: String,
}

/// Garage's admin API v2: `POST /v2/<Endpoint>` with a JSON body, or `GET` with a query.
pub(super) struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    pub(super) fn new(addr: SocketAddr, token: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            // Idle keep-alive connections would hold Garage's shutdown for its 10 s deadline.
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(AdminClient {
            http,
            base: format!("http://{addr}/v2"),
            token,
        })
    }

    pub(super) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
    ) -> Result<T, GarageError> {
        let req = self
            .http
            .get(format!("{}/{endpoint}", self.base))
            .query(query);
        self.send(endpoint, req).await
    }

    pub(super) async fn post<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<T, GarageError> {
        let req = self
            .http
            .post(format!("{}/{endpoint}", self.base))
            .query(query)
            .json(body);
        self.send(endpoint, req).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, GarageError> {
        let http_err = |source: reqwest::Error| GarageError::Http {
            endpoint: endpoint.to_string(),
            source: source.without_url(),
        };
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(http_err)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http_err)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(GarageError::Api {
                endpoint: endpoint.to_string(),
                status,
                message,
            });
        }
        // DeleteKey and friends answer with an empty body.
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|source| GarageError::Payload {
            endpoint: endpoint.to_string(),
            source,
        })
    }

    pub(super) async fn key_info(&self, access_key: &str) -> Result<KeyInfo, GarageError> {
        self.get("GetKeyInfo", &[("id", access_key)]).await
    }
}
