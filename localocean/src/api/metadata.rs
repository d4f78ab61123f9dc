//! DigitalOcean's metadata service as droplets reach it (`http://169.254.169.254/metadata/v1/`):
//! each droplet, known by the address it asks from, gets its own id, name, user data, keys,
//! region and interfaces, as https://docs.digitalocean.com/reference/api/metadata/ lists them.
//!
//! Served on the instance's bridge address, port 80; `net::ensure_bridge` sends the droplets'
//! 169.254.169.254:80 there. Plain text for single values and indexes (one entry a line, `/`
//! after an entry that is an index itself), JSON at `/metadata/v1.json`, 404 for the rest. An
//! index answers with or without its trailing slash, as DigitalOcean's own examples show.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::App;
use crate::store::{Droplet, State as StoreState};

/// The metadata service's router; serve it with `into_make_service_with_connect_info`.
pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(serve).with_state(app)
}

async fn serve(
    State(app): State<Arc<App>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    uri: Uri,
) -> Response {
    let answer = app.store.read(|s| answer(s, from.ip(), uri.path()));
    let content_type = if answer.json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (
        answer.status,
        [(header::CONTENT_TYPE, content_type)],
        answer.body,
    )
        .into_response()
}

/// What the service answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub json: bool,
    pub body: String,
}

fn text(body: impl Into<String>) -> Answer {
    Answer {
        status: StatusCode::OK,
        json: false,
        body: body.into(),
    }
}

fn not_found() -> Answer {
    Answer {
        status: StatusCode::NOT_FOUND,
        json: false,
        body: "404 page not found\n".into(),
    }
}

/// The answer to `GET path` from `from`: only a droplet's own address gets anything.
pub fn answer(state: &StoreState, from: IpAddr, path: &str) -> Answer {
    let from = from.to_string();
    let Some(d) = state
        .droplets
        .values()
        .find(|d| d.networks_v4.iter().any(|n| n.ip_address == from))
    else {
        return not_found();
    };
    // The reserved IP assigned to it, if any (DigitalOcean still names it `floating_ip` too).
    let reserved = state
        .reserved_ips
        .iter()
        .find(|r| r.droplet_id == Some(d.id))
        .map(|r| r.ip.clone());
    if path == "/metadata/v1.json" {
        return Answer {
            status: StatusCode::OK,
            json: true,
            body: all(d, reserved.as_deref()).to_string(),
        };
    }
    let Some(rest) = path.strip_prefix("/metadata/v1") else {
        return not_found();
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return not_found();
    }
    let rest = rest.trim_start_matches('/');
    let key = rest.trim_end_matches('/');
    let net = d.networks_v4.first();
    let lines = |items: &[&str]| text(items.join("\n"));
    match key {
        "" => lines(&[
            "id",
            "hostname",
            "user-data",
            "vendor-data",
            "public-keys",
            "region",
            "interfaces/",
            "dns/",
            "floating_ip/",
            "reserved_ip/",
            "tags/",
            "features/",
        ]),
        "id" => text(d.id.to_string()),
        "hostname" => text(d.name.clone()),
        "user-data" => text(d.user_data.clone().unwrap_or_default()),
        "vendor-data" => text(""),
        "public-keys" => text(d.ssh_public_keys.join("\n")),
        "region" => text(d.region.clone()),
        "tags" => text(d.tags.join("\n")),
        "interfaces" => lines(&["public/"]),
        "interfaces/public" => lines(&["0/"]),
        "interfaces/public/0" => lines(&["type", "ipv4/"]),
        "interfaces/public/0/type" => text("public"),
        "interfaces/public/0/ipv4" => lines(&["address", "netmask", "gateway"]),
        "interfaces/public/0/ipv4/address" => net.map_or_else(not_found, |n| text(&n.ip_address)),
        "interfaces/public/0/ipv4/netmask" => net.map_or_else(not_found, |n| text(&n.netmask)),
        "interfaces/public/0/ipv4/gateway" => net.map_or_else(not_found, |n| text(&n.gateway)),
        "dns" => lines(&["nameservers"]),
        "dns/nameservers" => net.map_or_else(not_found, |n| text(&n.gateway)),
        "floating_ip" | "reserved_ip" => lines(&["ipv4/"]),
        "floating_ip/ipv4" | "reserved_ip/ipv4" if reserved.is_some() => {
            lines(&["active", "ip_address"])
        }
        "floating_ip/ipv4" | "reserved_ip/ipv4" => lines(&["active"]),
        "floating_ip/ipv4/active" | "reserved_ip/ipv4/active" => {
            text(reserved.is_some().to_string())
        }
        "floating_ip/ipv4/ip_address" | "reserved_ip/ipv4/ip_address" => {
            reserved.map_or_else(not_found, text)
        }
        "features" => lines(&["dhcp_enabled"]),
        "features/dhcp_enabled" => text("false"),
        _ => not_found(),
    }
}

/// `/metadata/v1.json`: everything at once.
fn all(d: &Droplet, reserved: Option<&str>) -> Value {
    let interfaces: Vec<Value> = d
        .networks_v4
        .iter()
        .take(1)
        .map(|n| {
            json!({
                "ipv4": {"ip_address": n.ip_address, "netmask": n.netmask, "gateway": n.gateway},
                "type": "public",
            })
        })
        .collect();
    let nameservers: Vec<&str> = d
        .networks_v4
        .iter()
        .map(|n| n.gateway.as_str())
        .take(1)
        .collect();
    json!({
        "droplet_id": d.id,
        "hostname": d.name,
        "user_data": d.user_data.clone().unwrap_or_default(),
        "vendor_data": "",
        "public_keys": d.ssh_public_keys,
        "region": d.region,
        "interfaces": {"public": interfaces, "private": []},
        "floating_ip": reserved_json(reserved),
        "reserved_ip": reserved_json(reserved),
        "dns": {"nameservers": nameservers},
        "tags": d.tags,
        "features": {"dhcp_enabled": false},
    })
}

fn reserved_json(reserved: Option<&str>) -> Value {
    match reserved {
        Some(ip) => json!({"ipv4": {"active": true, "ip_address": ip}}),
        None => json!({"ipv4": {"active": false}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NetworkV4;

    fn state() -> StoreState {
        let mut s = StoreState::default();
        for (id, ip, user_data) in [
            (3000001, "198.18.0.2", Some("#cloud-config\n{\"a\": 1}\n")),
            (3000002, "198.18.0.3", None),
        ] {
            s.droplets.insert(
                id,
                Droplet {
                    id,
                    name: format!("web-{id}"),
                    region: "nyc3".into(),
                    size: "s-1vcpu-1gb".into(),
                    image: "debian-12-x64".into(),
                    status: "active".into(),
                    created_at: String::new(),
                    tags: vec!["a".into(), "b".into()],
                    volume_ids: vec![],
                    automount_volume_ids: vec![],
                    backup_policy: None,
                    backups_since: None,
                    networks_v4: vec![NetworkV4 {
                        ip_address: ip.into(),
                        netmask: "255.255.255.0".into(),
                        gateway: "198.18.0.1".into(),
                    }],
                    ipv6: false,
                    monitoring: false,
                    vpc_uuid: String::new(),
                    user_data: user_data.map(str::to_owned),
                    ssh_public_keys: vec![
                        "ssh-ed25519 AAAA one".into(),
                        "ssh-ed25519 BBBB two".into(),
                    ],
                    locked: false,
                    disk: 25,
                },
            );
        }
        s
    }

    fn get(from: &str, path: &str) -> Answer {
        answer(&state(), from.parse().unwrap(), path)
    }

    #[test]
    fn each_droplet_gets_its_own_metadata() {
        let a = "198.18.0.2";
        assert_eq!(get(a, "/metadata/v1/id").body, "3000001");
        assert_eq!(get("198.18.0.3", "/metadata/v1/id").body, "3000002");
        assert_eq!(get(a, "/metadata/v1/hostname").body, "web-3000001");
        assert_eq!(
            get(a, "/metadata/v1/user-data").body,
            "#cloud-config\n{\"a\": 1}\n"
        );
        assert_eq!(get("198.18.0.3", "/metadata/v1/user-data").body, "");
        assert_eq!(get(a, "/metadata/v1/region").body, "nyc3");
        assert_eq!(
            get(a, "/metadata/v1/public-keys").body,
            "ssh-ed25519 AAAA one\nssh-ed25519 BBBB two"
        );
        assert_eq!(
            get(a, "/metadata/v1/interfaces/public/0/ipv4/address").body,
            a
        );
        assert_eq!(
            get(a, "/metadata/v1/interfaces/public/0/ipv4/gateway").body,
            "198.18.0.1"
        );
        assert_eq!(get(a, "/metadata/v1/dns/nameservers").body, "198.18.0.1");
        assert_eq!(get(a, "/metadata/v1/tags/").body, "a\nb");
        // Indexes, with or without their slash.
        let index = get(a, "/metadata/v1/").body;
        assert!(index.starts_with("id\nhostname\nuser-data\n"), "{index}");
        assert_eq!(get(a, "/metadata/v1").body, index);
        assert_eq!(
            get(a, "/metadata/v1/interfaces/public/0/").body,
            "type\nipv4/"
        );
        let json: Value = serde_json::from_str(&get(a, "/metadata/v1.json").body).unwrap();
        assert_eq!(json["droplet_id"], 3000001);
        assert_eq!(json["interfaces"]["public"][0]["ipv4"]["ip_address"], a);
        assert_eq!(json["user_data"], "#cloud-config\n{\"a\": 1}\n");
        assert!(get(a, "/metadata/v1.json").json);
    }

    #[test]
    fn a_droplet_sees_its_reserved_ip() {
        let mut s = state();
        s.reserved_ips.push(crate::store::ReservedIp {
            ip: "198.18.0.200".into(),
            region: "nyc3".into(),
            droplet_id: Some(3000002),
            locked: false,
            project_id: String::new(),
        });
        let get = |from: &str, path: &str| answer(&s, from.parse().unwrap(), path).body;
        let (a, b) = ("198.18.0.2", "198.18.0.3");
        assert_eq!(get(a, "/metadata/v1/reserved_ip/ipv4/active"), "false");
        assert_eq!(get(a, "/metadata/v1/reserved_ip/ipv4/"), "active");
        assert_eq!(get(b, "/metadata/v1/reserved_ip/ipv4/active"), "true");
        assert_eq!(
            get(b, "/metadata/v1/reserved_ip/ipv4/"),
            "active\nip_address"
        );
        assert_eq!(
            get(b, "/metadata/v1/floating_ip/ipv4/ip_address"),
            "198.18.0.200"
        );
        let json: Value = serde_json::from_str(&get(b, "/metadata/v1.json")).unwrap();
        assert_eq!(json["reserved_ip"]["ipv4"]["ip_address"], "198.18.0.200");
        assert_eq!(json["reserved_ip"]["ipv4"]["active"], true);
        let json: Value = serde_json::from_str(&get(a, "/metadata/v1.json")).unwrap();
        assert_eq!(json["reserved_ip"]["ipv4"]["active"], false);
        assert_eq!(
            answer(
                &s,
                a.parse().unwrap(),
                "/metadata/v1/reserved_ip/ipv4/ip_address"
            )
            .status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn strangers_and_unknown_paths_get_404() {
        assert_eq!(
            get("198.18.0.9", "/metadata/v1/user-data").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("127.0.0.1", "/metadata/v1.json").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("198.18.0.2", "/metadata/v2/id").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get("198.18.0.2", "/metadata/v1/nope").status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(get("198.18.0.2", "/").status, StatusCode::NOT_FOUND);
        assert_eq!(
            get("198.18.0.2", "/metadata/v1id").status,
            StatusCode::NOT_FOUND
        );
    }
}
