//! The HTTP API: the subset of DigitalOcean's API v2 the provider uses, with DO's paths,
//! JSON shapes, errors, pagination, Bearer auth and rate limits; plus `/_localocean` admin.

mod backups;
pub mod catalog;
mod domains;
mod droplets;
mod error;
mod firewalls;
mod images;
mod keys;
mod load_balancers;
pub mod metadata;
mod reserved_ips;
mod snapshots;
mod spaces_keys;
mod tags;
mod uptime;
mod volumes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub use error::{ApiError, DoJson};

use crate::clock::{now_rfc3339, unix_now};
use crate::faults::{FaultSpec, Faults, SshFaults};
use crate::hypervisor::{Hypervisor, MachineInfo, MachineSpec, VolumeSpec};
use crate::model::ZoneSource;
use crate::spaces::SpacesBackend;
use crate::store::{Action, State as StoreState, Store};

pub struct ApiConfig {
    /// The store persists here as `api.json`.
    pub state_dir: PathBuf,
    /// Accepted Bearer tokens.
    pub tokens: Vec<String>,
    /// Requests per token per minute; DigitalOcean's default is 250.
    pub rate_limit_per_minute: u32,
    /// How many droplets the account may hold (`droplet_limit` in `/v2/account`).
    pub droplet_limit: u32,
}

/// A new account's droplet limit on DigitalOcean.
pub const DEFAULT_DROPLET_LIMIT: u32 = 25;

impl ApiConfig {
    pub fn new(state_dir: PathBuf, tokens: Vec<String>) -> ApiConfig {
        ApiConfig {
            state_dir,
            tokens,
            rate_limit_per_minute: 250,
            droplet_limit: DEFAULT_DROPLET_LIMIT,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    // Tokens are secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("state_dir", &self.state_dir)
            .field("tokens", &format_args!("[{} x ***]", self.tokens.len()))
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("droplet_limit", &self.droplet_limit)
            .finish()
    }
}

pub struct App {
    pub(crate) config: ApiConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) hv: Arc<dyn Hypervisor>,
    pub(crate) spaces: Arc<dyn SpacesBackend>,
    ssh_faults: RwLock<Option<Arc<dyn SshFaults>>>,
    /// Per token: (minute since the epoch, requests in that minute).
    rate: Mutex<HashMap<String, (u64, u32)>>,
    /// Tokens made through `POST /_localocean/tokens`, as a person makes a second personal
    /// access token in DigitalOcean's control panel: the same account, a rate limit of its
    /// own. In memory only (a restart forgets them).
    minted: RwLock<Vec<String>>,
    /// Keeps the machines' load balancers in line with the store.
    pub(crate) lb_sync: Arc<load_balancers::LbSync>,
    /// Droplets whose backup is being copied: never two at once for one droplet, and
    /// other actions wait (DigitalOcean's "pending event").
    backups_running: Mutex<std::collections::HashSet<u64>>,
}

impl App {
    /// Loads the persisted state from `config.state_dir`. Actions that were in progress
    /// when localocean stopped can never finish, so they are marked errored.
    pub fn load(
        config: ApiConfig,
        hv: Arc<dyn Hypervisor>,
        spaces: Arc<dyn SpacesBackend>,
    ) -> anyhow::Result<Arc<App>> {
        let store = Store::load(&config.state_dir)?;
        store.mutate::<_, crate::store::StoreError>(|s| {
            let now = now_rfc3339();
            for a in s.actions.values_mut().filter(|a| a.status == "in-progress") {
                a.status = "errored".into();
                a.completed_at = Some(now.clone());
            }
            Ok(())
        })?;
        let app = Arc::new(App {
            config,
            store: Arc::new(store),
            faults: Arc::new(Faults::new()),
            hv,
            spaces,
            ssh_faults: RwLock::new(None),
            rate: Mutex::new(HashMap::new()),
            minted: RwLock::new(Vec::new()),
            lb_sync: Default::default(),
            backups_running: Default::default(),
        });
        load_balancers::spawn_sync(&app);
        backups::spawn_scheduler(&app);
        Ok(app)
    }

    /// Whether a backup of droplet `id` is being copied now.
    pub(crate) fn backing_up(&self, id: u64) -> bool {
        self.backups_running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// Runs the backup scheduler once as if the time were `now`: deletes the backups whose
    /// retention ended, then backs up every droplet whose window has started since its
    /// last backup (or since backups were enabled) and has not ended. The background
    /// scheduler calls it every minute with the real time; tests call it with a chosen one
    /// instead of waiting for a window. Returns the ids of the backups taken.
    pub async fn run_backups(self: &Arc<Self>, now: time::OffsetDateTime) -> Vec<u64> {
        backups::run(self, now).await
    }

    /// Registers what the `ssh_refused` fault calls.
    pub fn set_ssh_faults(&self, ssh: Arc<dyn SshFaults>) {
        *self.ssh_faults.write().unwrap_or_else(|e| e.into_inner()) = Some(ssh);
    }

    /// Every load balancer the API holds.
    pub fn load_balancer_ids(&self) -> Vec<String> {
        self.store
            .read(|s| s.load_balancers.iter().map(|l| l.id.clone()).collect())
    }

    /// Every droplet the API holds, whatever its status.
    pub fn droplet_ids(&self) -> Vec<u64> {
        self.store.read(|s| s.droplets.keys().copied().collect())
    }

    /// The machine spec of each droplet persisted as `active`: what the lifecycle code
    /// boots again after a restart.
    pub fn active_machines(&self) -> Vec<MachineSpec> {
        self.store.read(|s| {
            s.droplets
                .values()
                .filter(|d| d.status == "active")
                .map(|d| droplets::machine_spec(s, d))
                .collect()
        })
    }

    /// The machine spec of one droplet (any status).
    pub fn machine_spec(&self, droplet_id: u64) -> Option<MachineSpec> {
        self.store.read(|s| {
            s.droplets
                .get(&droplet_id)
                .map(|d| droplets::machine_spec(s, d))
        })
    }

    /// The volumes the API holds, for the lifecycle code.
    pub fn volumes(&self) -> Vec<VolumeSpec> {
        self.store
            .read(|s| s.volumes.iter().map(volumes::volume_spec).collect())
    }

    /// Records the address a machine came up with when the lifecycle code boots it again
    /// after a restart (it may differ from the persisted one).
    pub fn record_machine(&self, droplet_id: u64, machine: &MachineInfo) -> anyhow::Result<()> {
        self.store.mutate::<_, anyhow::Error>(|s| {
            let d = s
                .droplets
                .get_mut(&droplet_id)
                .ok_or_else(|| anyhow::anyhow!("droplet {droplet_id} does not exist"))?;
            d.networks_v4 = vec![crate::store::NetworkV4 {
                ip_address: machine.ipv4.to_string(),
                netmask: machine.netmask.to_string(),
                gateway: machine.gateway.to_string(),
            }];
            Ok(())
        })
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The faults, for what answers outside the API (Spaces' forwarders).
    pub fn shared_faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }
}

/// The zones held by the API, for the DNS server; reads the live store on every call.
pub fn zones(app: &Arc<App>) -> Arc<dyn ZoneSource> {
    app.store.clone()
}

pub fn router(app: Arc<App>) -> Router {
    let v2 = Router::new()
        .route("/v2/account", get(account))
        .route("/v2/regions", get(regions))
        .route("/v2/sizes", get(sizes))
        .route("/v2/images", get(images::list))
        .route("/v2/images/{id}", get(images::get).delete(images::delete))
        .route("/v2/actions", get(actions_list))
        .route("/v2/actions/{id}", get(action_get))
        .route("/v2/account/keys", get(keys::list).post(keys::create))
        .route(
            "/v2/account/keys/{key}",
            get(keys::get).put(keys::update).delete(keys::delete),
        )
        .route(
            "/v2/droplets",
            get(droplets::list)
                .post(droplets::create)
                .delete(droplets::delete_by_tag),
        )
        .route(
            "/v2/droplets/{id}",
            get(droplets::get).delete(droplets::delete),
        )
        .route("/v2/droplets/{id}/backups", get(backups::list))
        .route("/v2/droplets/{id}/snapshots", get(images::list_for_droplet))
        .route("/v2/droplets/{id}/backups/policy", get(backups::policy))
        .route("/v2/droplets/backups/policies", get(backups::policies))
        .route(
            "/v2/droplets/backups/supported_policies",
            get(backups::supported),
        )
        .route(
            "/v2/droplets/{id}/actions",
            get(droplets::actions_list).post(droplets::action_post),
        )
        .route(
            "/v2/droplets/{id}/actions/{action_id}",
            get(droplets::action_get),
        )
        .route("/v2/domains", get(domains::list).post(domains::create))
        .route(
            "/v2/domains/{name}",
            get(domains::get).delete(domains::delete),
        )
        .route(
            "/v2/domains/{name}/records",
            get(domains::records_list).post(domains::record_create),
        )
        .route(
            "/v2/domains/{name}/records/{id}",
            get(domains::record_get)
                .put(domains::record_update)
                .patch(domains::record_update)
                .delete(domains::record_delete),
        )
        .route("/v2/volumes", get(volumes::list).post(volumes::create))
        .route("/v2/volumes/actions", post(volumes::action_by_name))
        .route(
            "/v2/volumes/snapshots/{snapshot_id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route(
            "/v2/volumes/{id}/snapshots",
            get(snapshots::list_for_volume).post(snapshots::create),
        )
        .route("/v2/snapshots", get(snapshots::list))
        .route(
            "/v2/snapshots/{snapshot_id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route(
            "/v2/volumes/{id}",
            get(volumes::get).delete(volumes::delete),
        )
        .route(
            "/v2/volumes/{id}/actions",
            get(volumes::actions_list).post(volumes::action_post),
        )
        .route(
            "/v2/volumes/{id}/actions/{action_id}",
            get(volumes::action_get),
        )
        .route(
            "/v2/firewalls",
            get(firewalls::list).post(firewalls::create),
        )
        .route(
            "/v2/firewalls/{id}",
            get(firewalls::get)
                .put(firewalls::update)
                .delete(firewalls::delete),
        )
        .route(
            "/v2/firewalls/{id}/droplets",
            post(firewalls::add_droplets).delete(firewalls::remove_droplets),
        )
        .route(
            "/v2/reserved_ips",
            get(reserved_ips::list).post(reserved_ips::create),
        )
        .route(
            "/v2/reserved_ips/{ip}",
            get(reserved_ips::get).delete(reserved_ips::delete),
        )
        .route(
            "/v2/reserved_ips/{ip}/actions",
            get(reserved_ips::actions_list).post(reserved_ips::action_post),
        )
        .route(
            "/v2/reserved_ips/{ip}/actions/{action_id}",
            get(reserved_ips::action_get),
        )
        .route(
            "/v2/load_balancers",
            get(load_balancers::list).post(load_balancers::create),
        )
        .route(
            "/v2/load_balancers/{lb_id}",
            get(load_balancers::get)
                .put(load_balancers::update)
                .delete(load_balancers::delete),
        )
        .route(
            "/v2/load_balancers/{lb_id}/droplets",
            post(load_balancers::add_droplets).delete(load_balancers::remove_droplets),
        )
        .route(
            "/v2/load_balancers/{lb_id}/forwarding_rules",
            post(load_balancers::add_rules).delete(load_balancers::remove_rules),
        )
        .route("/v2/tags", post(tags::create))
        .route(
            "/v2/tags/{tag}/resources",
            post(tags::assign).delete(tags::unassign),
        )
        .route(
            "/v2/spaces/keys",
            get(spaces_keys::list).post(spaces_keys::create),
        )
        .route(
            "/v2/spaces/keys/{access_key}",
            get(spaces_keys::get)
                .put(spaces_keys::update)
                .patch(spaces_keys::update)
                .delete(spaces_keys::delete),
        )
        .route("/v2/uptime/checks", get(uptime::list).post(uptime::create))
        .route(
            "/v2/uptime/checks/{check_id}",
            get(uptime::get).put(uptime::update).delete(uptime::delete),
        )
        .route(
            "/v2/uptime/checks/{check_id}/alerts",
            get(uptime::list_alerts).post(uptime::create_alert),
        )
        .route(
            "/v2/uptime/checks/{check_id}/alerts/{alert_id}",
            get(uptime::get_alert)
                .put(uptime::update_alert)
                .delete(uptime::delete_alert),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Layers run bottom-up on the way in: faults first (they stand for the edge in
        // front of DO), then rate limiting (counted even for bad tokens, as DO does), auth.
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(middleware::from_fn_with_state(app.clone(), rate_limit))
        .layer(middleware::from_fn_with_state(app.clone(), http_faults))
        .with_state(app.clone());

    let admin = Router::new()
        .route("/_localocean/health", get(|| async { "ok\n" }))
        .route("/_localocean/tokens", post(tokens_mint))
        .route(
            "/_localocean/faults",
            get(faults_list).post(faults_arm).delete(faults_clear),
        )
        .route("/_localocean/faults/{id}", delete(fault_disarm))
        .with_state(app);

    admin.merge(v2)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "The method is not allowed for this resource.",
    )
}

fn rate_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: u64) {
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
}

async fn http_faults(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(fault) = app
        .faults
        .take_http(req.method().as_str(), req.uri().path())
    else {
        return next.run(req).await;
    };
    tracing::info!(status = fault.status, path = %req.uri().path(), "http fault fired");
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut resp = if status == StatusCode::TOO_MANY_REQUESTS {
        let mut r =
            ApiError::new(status, "too_many_requests", "API rate limit exceeded.").into_response();
        let limit = app.config.rate_limit_per_minute;
        rate_headers(r.headers_mut(), limit, 0, (unix_now() / 60 + 1) * 60);
        r
    } else {
        // What DO's load balancers answer: an HTML page, not the API's JSON.
        let reason = status.canonical_reason().unwrap_or("Error");
        let html = format!(
            "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
            code = status.as_u16()
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
            html,
        )
            .into_response()
    };
    if let Some(secs) = fault.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

async fn rate_limit(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let limit = app.config.rate_limit_per_minute;
    let now = unix_now();
    let minute = now / 60;
    let reset = (minute + 1) * 60;
    let count = {
        let mut rate = app.rate.lock().unwrap_or_else(|e| e.into_inner());
        rate.retain(|_, (m, _)| *m == minute);
        let entry = rate.entry(key).or_insert((minute, 0));
        entry.1 = entry.1.saturating_add(1);
        entry.1
    };
    if count > limit {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "API rate limit exceeded.",
        )
        .into_response();
        rate_headers(r.headers_mut(), limit, 0, reset);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(reset - now));
        return r;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut resp = as_do_error(next.run(req).await).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "api request");
    rate_headers(resp.headers_mut(), limit, limit - count, reset);
    resp
}

/// Turns any error answer that is not already DO's JSON (axum's own plain-text rejections,
/// e.g. a body over the size limit) into DO's error body, so clients always get one shape.
async fn as_do_error(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let id = error::id_for(status);
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, id, message).into_response()
}

async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| {
            let t = t.trim();
            app.config.tokens.iter().any(|known| known == t)
                || app
                    .minted
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .any(|known| known == t)
        });
    if ok {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Query string, path and host of a request: what listings need for filters and links.
pub struct ReqInfo {
    pub query: Vec<(String, String)>,
    pub path: String,
    pub host: String,
}

impl ReqInfo {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ReqInfo {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        Ok(ReqInfo {
            query,
            path: parts.uri.path().to_string(),
            host,
        })
    }
}

/// One page of a listing as DO shapes it: `{key: [...], links: {pages: {...}}, meta: {total}}`.
/// `page` and `per_page` (max 200, default 20) follow DO; links keep the other query params.
pub fn page_response(key: &str, items: Vec<Value>, info: &ReqInfo) -> Json<Value> {
    let total = items.len();
    let per_page = info
        .param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(20)
        .min(200);
    let page = info
        .param("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let last = total.div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let link = |p: usize| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in info
            .query
            .iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
        {
            ser.append_pair(k, v);
        }
        ser.append_pair("page", &p.to_string());
        ser.append_pair("per_page", &per_page.to_string());
        format!("http://{}{}?{}", info.host, info.path, ser.finish())
    };
    let mut pages = serde_json::Map::new();
    if page > 1 {
        pages.insert("first".into(), json!(link(1)));
        pages.insert("prev".into(), json!(link((page - 1).min(last))));
    }
    if page < last {
        pages.insert("next".into(), json!(link(page + 1)));
        pages.insert("last".into(), json!(link(last)));
    }
    let links = if pages.is_empty() {
        json!({})
    } else {
        json!({ "pages": pages })
    };
    Json(json!({ key: slice, "links": links, "meta": {"total": total} }))
}

/// Starts an action in progress and returns it; the caller finishes it with `finish_action`.
pub(crate) fn new_action(
    s: &mut StoreState,
    action_type: &str,
    resource_id: Option<u64>,
    resource_type: &str,
    region: &str,
) -> Action {
    let action = Action {
        id: s.new_id(),
        status: "in-progress".into(),
        action_type: action_type.into(),
        started_at: now_rfc3339(),
        completed_at: None,
        resource_id,
        resource_type: resource_type.into(),
        region_slug: Some(region.to_string()),
        volume_id: None,
    };
    s.actions.insert(action.id, action.clone());
    action
}

pub(crate) fn complete_action(s: &mut StoreState, action_id: u64, ok: bool) {
    if let Some(a) = s.actions.get_mut(&action_id) {
        a.status = if ok { "completed" } else { "errored" }.into();
        a.completed_at = Some(now_rfc3339());
    }
}

pub(crate) fn action_json(a: &Action) -> Value {
    let mut v = json!({
        "id": a.id,
        "status": a.status,
        "type": a.action_type,
        "started_at": a.started_at,
        "completed_at": a.completed_at,
        "resource_id": a.resource_id,
        "resource_type": a.resource_type,
        "region_slug": a.region_slug,
    });
    if let Some(r) = &a.region_slug {
        v["region"] = catalog::region_json(r);
    }
    v
}

/// Parses a numeric path id; anything else names nothing, so it is a 404 as on DO.
pub(crate) fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// DO's tag names: letters, digits, `_`, `-`, `:`, at most 255 characters.
pub(crate) fn validate_tags(tags: &[String]) -> Result<(), ApiError> {
    for t in tags {
        let ok = !t.is_empty()
            && t.len() <= 255
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'));
        if !ok {
            return Err(ApiError::unprocessable(format!(
                "tag {t:?} is invalid: tags may contain letters, numbers, colons, dashes, and underscores"
            )));
        }
    }
    Ok(())
}

async fn account(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "account": catalog::account_json(app.config.droplet_limit) }))
}

async fn regions(info: ReqInfo) -> Json<Value> {
    let items = catalog::REGIONS
        .iter()
        .map(|r| catalog::region_json(r.slug))
        .collect();
    page_response("regions", items, &info)
}

async fn sizes(info: ReqInfo) -> Json<Value> {
    let items = catalog::SIZES.iter().map(catalog::size_json).collect();
    page_response("sizes", items, &info)
}

async fn actions_list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app
        .store
        .read(|s| s.actions.values().rev().map(action_json).collect());
    page_response("actions", items, &info)
}

async fn action_get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    app.store
        .read(|s| s.actions.get(&id).map(action_json))
        .map(|a| Json(json!({ "action": a })))
        .ok_or_else(ApiError::not_found)
}

async fn faults_list(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "faults": app.faults.list() }))
}

/// A new token for the same account. DigitalOcean limits requests per token (250 a minute),
/// so tests that share one instance each take their own, as separate users would.
async fn tokens_mint(State(app): State<Arc<App>>) -> (StatusCode, Json<Value>) {
    let token = format!("dop_v1_{}", hex::encode(rand::random::<[u8; 32]>()));
    app.minted
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(token.clone());
    (StatusCode::CREATED, Json(json!({ "token": token })))
}

async fn faults_arm(
    State(app): State<Arc<App>>,
    DoJson(spec): DoJson<FaultSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ssh = app
        .ssh_faults
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if matches!(spec, FaultSpec::SshRefused { .. }) && ssh.is_none() {
        return Err(ApiError::unprocessable(
            "ssh_refused needs the machines backend, which is not running",
        ));
    }
    let armed = app
        .faults
        .arm(spec.clone())
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    if let (
        FaultSpec::SshRefused {
            droplet_id: Some(droplet_id),
            seconds,
        },
        Some(ssh),
    ) = (&spec, ssh)
    {
        ssh.refuse_ssh(*droplet_id, *seconds).await.map_err(|e| {
            ApiError::server_error(format!("refusing ssh on droplet {droplet_id}: {e:#}"))
        })?;
        app.faults.mark_fired(armed.id, false);
    }
    let listed = app
        .faults
        .list()
        .into_iter()
        .find(|f| f.id == armed.id)
        .unwrap_or(armed);
    Ok((StatusCode::CREATED, Json(json!({ "fault": listed }))))
}

/// Ends one fault (it stays listed, with its history): how a test on a shared instance stops
/// the fault it armed without touching the others'.
async fn fault_disarm(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    if app.faults.disarm(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

async fn faults_clear(State(app): State<Arc<App>>) -> StatusCode {
    app.faults.clear();
    StatusCode::NO_CONTENT
}
