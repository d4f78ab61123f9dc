//! `/v2/domains` and their records, validated as DigitalOcean validates them; the DNS
//! server reads the same records through `ZoneSource`.

use std::net::Ipv6Addr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::droplets::is_ipv4;
use super::{page_response, parse_id, ApiError, App, DoJson, ReqInfo};
use crate::model::DomainRecord;
use crate::store::{Domain, State as StoreState};

const DEFAULT_TTL: u32 = 1800;
const MIN_TTL: u32 = 30;
const NAMESERVERS: [&str; 3] = [
    "ns1.digitalocean.com",
    "ns2.digitalocean.com",
    "ns3.digitalocean.com",
];
const RECORD_TYPES: [&str; 8] = ["A", "AAAA", "CAA", "CNAME", "MX", "NS", "SRV", "TXT"];

fn valid_label(l: &str, allow_underscore: bool) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || (allow_underscore && c == '_'))
}

fn validate_domain_name(name: &str) -> Result<(), ApiError> {
    let labels: Vec<&str> = name.split('.').collect();
    let ok = name.len() <= 253
        && labels.len() >= 2
        && labels
            .iter()
            .all(|l| valid_label(l, false) && !l.starts_with('-') && !l.ends_with('-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!("Name {name:?} is invalid")))
    }
}

/// A host name in record data: `@` (the apex) or a name, optionally fully qualified.
fn valid_hostname(h: &str) -> bool {
    if h == "@" {
        return true;
    }
    let h = h.strip_suffix('.').unwrap_or(h);
    h.len() <= 253 && h.split('.').all(|l| valid_label(l, true))
}

fn zone_file(d: &Domain) -> String {
    let fq = |n: &str| {
        if n == "@" {
            format!("{}.", d.name)
        } else {
            format!("{n}.{}.", d.name)
        }
    };
    let target = |t: &str| {
        if t == "@" {
            format!("{}.", d.name)
        } else if t.ends_with('.') {
            t.to_string()
        } else {
            format!("{t}.")
        }
    };
    let mut out = format!(
        "$ORIGIN {n}.\n$TTL {ttl}\n{n}. IN SOA ns1.digitalocean.com. hostmaster.{n}. 1 10800 3600 604800 {ttl}\n",
        n = d.name,
        ttl = d.ttl
    );
    for r in d.records.iter().filter(|r| r.record_type != "SOA") {
        let data = match r.record_type.as_str() {
            "CNAME" | "NS" => target(&r.data),
            "MX" => format!("{} {}", r.priority.unwrap_or(0), target(&r.data)),
            "SRV" => format!(
                "{} {} {} {}",
                r.priority.unwrap_or(0),
                r.weight.unwrap_or(0),
                r.port.unwrap_or(0),
                target(&r.data)
            ),
            "TXT" => format!("{:?}", r.data),
            "CAA" => format!(
                "{} {} {:?}",
                r.flags.unwrap_or(0),
                r.tag.as_deref().unwrap_or(""),
                r.data
            ),
            _ => r.data.clone(),
        };
        out.push_str(&format!(
            "{} {} IN {} {}\n",
            fq(&r.name),
            r.ttl,
            r.record_type,
            data
        ));
    }
    out
}

fn domain_json(d: &Domain) -> Value {
    json!({ "name": d.name, "ttl": d.ttl, "zone_file": zone_file(d) })
}

fn record_json(r: &DomainRecord) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn record(s: &mut StoreState, record_type: &str, name: &str, data: &str, ttl: u32) -> DomainRecord {
    DomainRecord {
        id: s.new_id(),
        record_type: record_type.into(),
        name: name.into(),
        data: data.into(),
        priority: None,
        port: None,
        ttl,
        weight: None,
        flags: None,
        tag: None,
    }
}

pub async fn list(State(app): State<Arc<App>>, info: ReqInfo) -> Json<Value> {
    let items = app
        .store
        .read(|s| s.domains.values().map(domain_json).collect());
    page_response("domains", items, &info)
}

#[derive(Deserialize)]
pub struct CreateDomain {
    name: String,
    ip_address: Option<String>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    DoJson(req): DoJson<CreateDomain>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = req.name.trim_end_matches('.').to_ascii_lowercase();
    validate_domain_name(&name)?;
    if let Some(ip) = &req.ip_address {
        if !is_ipv4(ip) {
            return Err(ApiError::unprocessable(format!(
                "ip_address {ip:?} is not a valid IPv4 address"
            )));
        }
    }
    let domain = app.store.mutate(|s| {
        if s.domains.contains_key(&name) {
            return Err(ApiError::unprocessable(format!(
                "Name {name} already exists"
            )));
        }
        // What DO puts in a new zone: the SOA (its data is the minimum TTL) and its
        // three name servers, plus the apex A record when an address was given.
        let mut records = vec![record(s, "SOA", "@", "1800", DEFAULT_TTL)];
        for ns in NAMESERVERS {
            records.push(record(s, "NS", "@", ns, DEFAULT_TTL));
        }
        if let Some(ip) = &req.ip_address {
            records.push(record(s, "A", "@", ip, DEFAULT_TTL));
        }
        let d = Domain {
            name: name.clone(),
            ttl: DEFAULT_TTL,
            records,
        };
        s.domains.insert(name.clone(), d.clone());
        Ok(d)
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "domain": domain_json(&domain) })),
    ))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    app.store
        .read(|s| s.domains.get(&name.to_ascii_lowercase()).map(domain_json))
        .map(|d| Json(json!({ "domain": d })))
        .ok_or_else(ApiError::not_found)
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.store.mutate(|s| {
        s.domains
            .remove(&name.to_ascii_lowercase())
            .map(|_| ())
            .ok_or_else(ApiError::not_found)
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn records_list(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    info: ReqInfo,
) -> Result<Json<Value>, ApiError> {
    let name = name.to_ascii_lowercase();
    // DO filters by the record's full name: `www.example.com`, or `example.com` for `@`.
    let want_name = info
        .param("name")
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let want_type = info.param("type").map(str::to_ascii_uppercase);
    let items = app.store.read(|s| {
        s.domains.get(&name).map(|d| {
            d.records
                .iter()
                .filter(|r| {
                    let full = if r.name == "@" {
                        d.name.clone()
                    } else {
                        format!("{}.{}", r.name, d.name).to_ascii_lowercase()
                    };
                    want_name.as_ref().is_none_or(|n| *n == full)
                        && want_type.as_ref().is_none_or(|t| *t == r.record_type)
                })
                .map(record_json)
                .collect::<Vec<_>>()
        })
    });
    let items = items.ok_or_else(ApiError::not_found)?;
    Ok(page_response("domain_records", items, &info))
}

#[derive(Deserialize, Default)]
pub struct RecordReq {
    #[serde(rename = "type")]
    record_type: Option<String>,
    name: Option<String>,
    data: Option<String>,
    priority: Option<u32>,
    port: Option<u32>,
    ttl: Option<u32>,
    weight: Option<u32>,
    flags: Option<u32>,
    tag: Option<String>,
}

/// Brings a record name to DO's relative form: the apex is `@`; a name given fully
/// qualified within the domain is made relative.
fn relative_name(name: &str, domain: &str) -> String {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    if n == "@" || n == domain {
        "@".into()
    } else if let Some(rel) = n.strip_suffix(&format!(".{domain}")) {
        rel.to_string()
    } else {
        n
    }
}

/// Checks a record as DO does and clears the fields its type does not use.
fn validate_record(r: &mut DomainRecord) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::unprocessable(m));
    let t = r.record_type.as_str();
    if !RECORD_TYPES.contains(&t) {
        return bad(format!("Record type {t:?} is not supported"));
    }
    let name_ok = r.name == "@"
        || (r.name.len() <= 253
            && r.name
                .split('.')
                .enumerate()
                .all(|(i, l)| (i == 0 && l == "*") || valid_label(l, true)));
    if !name_ok {
        return bad(format!("Name {:?} is invalid", r.name));
    }
    if r.ttl < MIN_TTL {
        return bad(format!("TTL must be at least {MIN_TTL} seconds"));
    }
    let need_u16 = |v: Option<u32>, what: &str| match v {
        Some(n) if n <= 65535 => Ok(Some(n)),
        Some(_) => Err(ApiError::unprocessable(format!(
            "{what} must be between 0 and 65535"
        ))),
        None => Err(ApiError::unprocessable(format!(
            "{what} is required for {t} records"
        ))),
    };
    match t {
        "A" if !is_ipv4(&r.data) => return bad("Data needs to be an IPv4 address".into()),
        "AAAA" if r.data.parse::<Ipv6Addr>().is_err() => {
            return bad("Data needs to be an IPv6 address".into())
        }
        "CNAME" | "NS" | "MX" | "SRV" if !valid_hostname(&r.data) => {
            return bad(format!("Data {:?} is not a valid hostname", r.data))
        }
        "CNAME" if r.name == "@" => {
            return bad("CNAME records cannot be created at the apex".into())
        }
        "TXT" | "CAA" if r.data.is_empty() => return bad("Data is required".into()),
        _ => {}
    }
    match t {
        "MX" => {
            r.priority = need_u16(r.priority, "Priority")?;
            (r.port, r.weight, r.flags, r.tag) = (None, None, None, None);
        }
        "SRV" => {
            r.priority = need_u16(r.priority, "Priority")?;
            r.port = need_u16(r.port, "Port")?;
            r.weight = need_u16(r.weight, "Weight")?;
            let labels: Vec<&str> = r.name.split('.').collect();
            if labels.len() < 2 || !labels[0].starts_with('_') || !labels[1].starts_with('_') {
                return bad("SRV record names must look like _service._protocol".into());
            }
            (r.flags, r.tag) = (None, None);
        }
        "CAA" => {
            match r.flags {
                Some(f) if f <= 255 => {}
                Some(_) => return bad("Flags must be between 0 and 255".into()),
                None => return bad("Flags is required for CAA records".into()),
            }
            match r.tag.as_deref() {
                Some("issue" | "issuewild" | "iodef") => {}
                Some(other) => {
                    return bad(format!(
                        "Tag {other:?} is invalid: use issue, issuewild or iodef"
                    ))
                }
                None => return bad("Tag is required for CAA records".into()),
            }
            (r.priority, r.port, r.weight) = (None, None, None);
        }
        _ => {
            (r.priority, r.port, r.weight, r.flags, r.tag) = (None, None, None, None, None);
        }
    }
    Ok(())
}

pub async fn record_create(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    DoJson(req): DoJson<RecordReq>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let domain = name.to_ascii_lowercase();
    let record_type = req
        .record_type
        .ok_or_else(|| ApiError::unprocessable("Type is required"))?
        .to_ascii_uppercase();
    let rname = req
        .name
        .ok_or_else(|| ApiError::unprocessable("Name is required"))?;
    let data = req
        .data
        .ok_or_else(|| ApiError::unprocessable("Data is required"))?;
    let rec = app.store.mutate(|s| {
        if !s.domains.contains_key(&domain) {
            return Err(ApiError::not_found());
        }
        let mut r = DomainRecord {
            id: s.new_id(),
            record_type: record_type.clone(),
            name: relative_name(&rname, &domain),
            data: data.clone(),
            priority: req.priority,
            port: req.port,
            ttl: req.ttl.unwrap_or(DEFAULT_TTL),
            weight: req.weight,
            flags: req.flags,
            tag: req.tag.clone(),
        };
        validate_record(&mut r)?;
        let d = s.domains.get_mut(&domain).ok_or_else(ApiError::not_found)?;
        if r.record_type == "CNAME" && d.records.iter().any(|o| o.name == r.name) {
            return Err(ApiError::unprocessable(
                "CNAME records cannot share a name with other records",
            ));
        }
        if d.records
            .iter()
            .any(|o| o.name == r.name && o.record_type == "CNAME")
        {
            return Err(ApiError::unprocessable(
                "a CNAME record already exists with this name",
            ));
        }
        d.records.push(r.clone());
        Ok(r)
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "domain_record": record_json(&rec) })),
    ))
}

pub async fn record_get(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    app.store
        .read(|s| {
            s.domains
                .get(&name.to_ascii_lowercase())
                .and_then(|d| d.records.iter().find(|r| r.id == id))
                .map(record_json)
        })
        .map(|r| Json(json!({ "domain_record": r })))
        .ok_or_else(ApiError::not_found)
}

/// PUT and PATCH: the fields given replace the record's; the type cannot change.
pub async fn record_update(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
    DoJson(req): DoJson<RecordReq>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let domain = name.to_ascii_lowercase();
    let rec = app.store.mutate(|s| {
        let d = s.domains.get_mut(&domain).ok_or_else(ApiError::not_found)?;
        let r = d
            .records
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(ApiError::not_found)?;
        if let Some(t) = &req.record_type {
            if !t.eq_ignore_ascii_case(&r.record_type) {
                return Err(ApiError::unprocessable(
                    "The type of a record cannot be changed",
                ));
            }
        }
        if r.record_type == "SOA" {
            if let Some(ttl) = req.ttl {
                r.ttl = ttl.max(MIN_TTL);
            }
            return Ok(r.clone());
        }
        let mut new = r.clone();
        if let Some(n) = &req.name {
            new.name = relative_name(n, &domain);
        }
        if let Some(v) = &req.data {
            new.data = v.clone();
        }
        new.priority = req.priority.or(new.priority);
        new.port = req.port.or(new.port);
        new.weight = req.weight.or(new.weight);
        new.flags = req.flags.or(new.flags);
        new.tag = req.tag.clone().or(new.tag);
        new.ttl = req.ttl.unwrap_or(new.ttl);
        validate_record(&mut new)?;
        *r = new.clone();
        Ok(new)
    })?;
    Ok(Json(json!({ "domain_record": record_json(&rec) })))
}

pub async fn record_delete(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    app.store.mutate(|s| {
        let d = s
            .domains
            .get_mut(&name.to_ascii_lowercase())
            .ok_or_else(ApiError::not_found)?;
        let before = d.records.len();
        d.records.retain(|r| r.id != id);
        if d.records.len() == before {
            return Err(ApiError::not_found());
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT)
}
