//! localocean's API in process for the provider's unit tests: its null hypervisor (machines
//! that boot instantly and record each call), a Spaces backend of the test's choosing, and a
//! client with fast polling. Loopback only.

use std::sync::Arc;
use std::time::Duration;

use localocean::spaces::{IssuedKey, SpacesBackend};
use localocean::testkit::{ApiServer, NullHypervisor};
use url::Url;

use crate::config::Settings;
use crate::do_api::{self, Timings};
use crate::secret::Secret;

pub const TOKEN: &str = "provider-unit-test-token-0123456789";

pub struct Api {
    pub client: do_api::Client,
    pub base: Url,
    pub hv: Arc<NullHypervisor>,
    _server: ApiServer,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start(spaces: Arc<dyn SpacesBackend>) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let hv = Arc::new(NullHypervisor::default());
        let server = ApiServer::start(dir.path(), TOKEN, hv.clone(), spaces)
            .await
            .expect("localocean API starts");
        let base = Url::parse(&server.base).unwrap();
        let client = do_api::Client::with_timings(&settings(&base, None), fast()).unwrap();
        Api {
            client,
            base,
            hv,
            _server: server,
            _dir: dir,
        }
    }

    /// Provider settings for this API, with Spaces credentials if given.
    pub fn settings(&self, spaces: Option<(&str, &IssuedKey)>) -> Settings {
        settings(&self.base, spaces)
    }

    /// A domain of the account, as `POST /v2/domains` makes it.
    pub async fn add_domain(&self, name: &str) {
        let r = reqwest::Client::new()
            .post(format!("{}v2/domains", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }

    /// A droplet made outside the provider, tagged `tag`; its id.
    pub async fn add_droplet_tagged(&self, tag: &str) -> u64 {
        let r = reqwest::Client::new()
            .post(format!("{}v2/droplets", self.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({
                "name": "leftover", "region": "nyc3", "size": "s-1vcpu-1gb",
                "image": "debian-12-x64", "tags": [tag]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "creating a droplet");
        let body: serde_json::Value = r.json().await.unwrap();
        body["droplet"]["id"].as_u64().expect("droplet id")
    }

    /// A Droplet snapshot (its image id) of a new droplet of `size` in `region`, as the
    /// droplet `snapshot` action makes one.
    pub async fn droplet_snapshot(&self, size: &str, region: &str) -> String {
        use serde_json::{json, Value};
        let http = reqwest::Client::new();
        let call = |method: reqwest::Method, path: String, body: Option<Value>| {
            let mut req = http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(TOKEN);
            if let Some(b) = body {
                req = req.json(&b);
            }
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let wait = |id: u64| {
            let call = &call;
            async move {
                for _ in 0..500 {
                    let (_, a) = call(reqwest::Method::GET, format!("v2/actions/{id}"), None).await;
                    if a["action"]["status"] != "in-progress" {
                        assert_eq!(a["action"]["status"], "completed", "{a}");
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("action {id} never ended");
            }
        };
        let (status, d) = call(
            reqwest::Method::POST,
            "v2/droplets".into(),
            Some(
                json!({"name": "baker", "region": region, "size": size, "image": "debian-12-x64"}),
            ),
        )
        .await;
        assert_eq!(status, 202, "{d}");
        wait(d["links"]["actions"][0]["id"].as_u64().unwrap()).await;
        let id = d["droplet"]["id"].as_u64().unwrap();
        let (status, a) = call(
            reqwest::Method::POST,
            format!("v2/droplets/{id}/actions"),
            Some(json!({"type": "snapshot", "name": "baked"})),
        )
        .await;
        assert_eq!(status, 201, "{a}");
        wait(a["action"]["id"].as_u64().unwrap()).await;
        let (_, snaps) = call(
            reqwest::Method::GET,
            format!("v2/droplets/{id}/snapshots"),
            None,
        )
        .await;
        snaps["snapshots"][0]["id"].as_u64().unwrap().to_string()
    }

    /// The API's faults admin, in process (as `/_localocean/faults` arms them).
    pub fn faults(&self) -> &localocean::faults::Faults {
        self._server.app.faults()
    }

    pub fn stop(self) {}
}

/// Backoff and polling in tens of milliseconds.
pub fn fast() -> Timings {
    Timings {
        backoff_start: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        poll_start: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        not_found_grace: Duration::from_secs(5),
        request_timeout: Duration::from_secs(20),
    }
}

/// Provider settings for localocean at `api`, with Spaces credentials if given.
pub fn settings(api: &Url, spaces: Option<(&str, &IssuedKey)>) -> Settings {
    Settings {
        token: Secret::new(TOKEN),
        api_endpoint: api.clone(),
        spaces_access_id: spaces.map(|(_, k)| Secret::new(k.access_key.clone())),
        spaces_secret_key: spaces.map(|(_, k)| Secret::new(k.secret_key.clone())),
        spaces_endpoint: spaces.map(|(e, _)| e.to_owned()).unwrap_or_default(),
        http_retry_max: 2,
        requests_per_second: 0,
        acme_directory_url: Url::parse("https://acme.invalid/directory").unwrap(),
        acme_ca_certificates: None,
        acme_dns_servers: Vec::new(),
        terraform_version: String::new(),
    }
}
