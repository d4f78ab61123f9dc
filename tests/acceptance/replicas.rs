//! Replicas end to end, in two tests that run side by side (each a registry of two droplets
//! behind a load balancer on a Spaces bucket of its own). The first: both droplets serve
//! what was pushed through the balancer; one droplet's nginx stopped, the balancer's check
//! takes it out and no pull fails; users changed on every droplet; a rolling replacement
//! under a loop of pulls, none failing. The second: 2 -> 3 -> 2 in place and a garbage
//! collection across both droplets, under pulls, none failing. Each ends with a destroy that
//! leaves no droplet, balancer, record, firewall or key.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::registry::{ssh_files, ssh_pinned, PullLoop};
use super::storage::{StorageFixture, ADMIN_PW};
use crate::support::docker::v2_status_with_token;
use crate::support::registry_client::{manifest_digest, text};

const READER_PW: &str = "reader-password-0002";
const PULLER_PW: &str = "puller-password-0003";

/// What a pull asks for: the pushed manifest's own type, whichever skopeo sent.
const MANIFEST_TYPES: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// main.tf for this test's registry: `replicas` droplets on `bucket`, with `users` (the
/// entries of the HCL map) in place of the fixture's admin alone. `force_destroy` from the
/// start: the refusal without it is the storage test's; here the destroy at the end empties
/// the bucket.
fn configure(fx: &StorageFixture, bucket: &str, generation: u32, replicas: u32, users: &str) {
    configure_with(fx, bucket, generation, replicas, users, "");
}

/// [`configure`] with more of the resource's body (`extra`, whole blocks).
fn configure_with(
    fx: &StorageFixture,
    bucket: &str,
    generation: u32,
    replicas: u32,
    users: &str,
    extra: &str,
) {
    let storage =
        format!("    backend = \"spaces\"\n    bucket  = \"{bucket}\"\n    force_destroy = true");
    fx.config_with(
        generation,
        &storage,
        &format!("  replicas = {replicas}\n{extra}"),
    );
    // The fixture writes one users line, admin's; it is replaced as written, and the test
    // fails here rather than apply other users should that line change.
    let path = fx.tf.dir.path().join("main.tf");
    let written = std::fs::read_to_string(&path).unwrap();
    let admin_only = format!("users  = {{ admin = {{ password = \"{ADMIN_PW}\" }} }}");
    assert!(
        written.contains(&admin_only),
        "the fixture's users line is not {admin_only:?}:\n{written}"
    );
    fx.tf.write(
        "main.tf",
        &written.replace(&admin_only, &format!("users = {{\n{users}\n  }}")),
    );
}

/// `droplet_ids` in the state, in its order.
fn droplet_ids(v: &Value) -> Vec<u64> {
    v["droplet_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("droplet_ids is not a list: {}", v["droplet_ids"]))
        .iter()
        .map(|i| i.as_u64().unwrap_or_else(|| panic!("droplet id {i}")))
        .collect()
}

/// `ipv4_addresses` in the state, in its order.
fn addresses(v: &Value) -> Vec<String> {
    v["ipv4_addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("ipv4_addresses is not a list: {}", v["ipv4_addresses"]))
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("address {a}"))
                .to_owned()
        })
        .collect()
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// The droplets localocean has under this registry's name, by id.
fn droplets_in_account(fx: &StorageFixture) -> Vec<u64> {
    sorted(
        fx.droplets()
            .iter()
            .filter_map(|d| d["id"].as_u64())
            .collect(),
    )
}

/// The load balancer as the API shows it.
fn balancer(fx: &StorageFixture, id: &str) -> Value {
    let (status, body) = fx.lo.api("GET", &format!("/v2/load_balancers/{id}"), None);
    assert_eq!(status, 200, "load balancer {id}: {body}");
    body["load_balancer"].clone()
}

/// The droplets the load balancer sends to, by id.
fn balancer_droplets(fx: &StorageFixture, id: &str) -> Vec<u64> {
    let lb = balancer(fx, id);
    sorted(
        lb["droplet_ids"]
            .as_array()
            .unwrap_or_else(|| panic!("no droplet_ids on the load balancer: {lb}"))
            .iter()
            .filter_map(Value::as_u64)
            .collect(),
    )
}

/// The A records of the test's own domain (no other test writes there).
fn a_records(fx: &StorageFixture) -> Vec<Value> {
    let domain = fx.fqdn.split_once('.').unwrap().1;
    fx.lo
        .records(domain)
        .into_iter()
        .filter(|r| r["type"] == "A")
        .collect()
}

/// A client that reaches `fqdn` at `ip` (one droplet by its own address), trusting only the
/// registry's CA: the fqdn is the TLS name, as for a client whose DNS answered `ip`.
fn pinned(ca: &str, fqdn: &str, ip: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(fqdn, format!("{ip}:443").parse().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A token for `scope` from the token endpoint `http` reaches, as `user`; what went wrong.
fn token(
    http: &reqwest::blocking::Client,
    fqdn: &str,
    (user, password): (&str, &str),
    scope: &str,
) -> Result<String, String> {
    let resp = http
        .get(format!("https://{fqdn}/token"))
        .query(&[("service", fqdn), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .map_err(|e| format!("/token: {e}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("/token answered {status}"));
    }
    let body: Value = resp.json().map_err(|e| format!("/token: {e}"))?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no token in {body}"))
}

/// `repository:1` pulled with `token` through `http`: the manifest, then every blob it names,
/// each checked against its digest. The manifest's digest, or what went wrong.
fn pull_with(
    http: &reqwest::blocking::Client,
    fqdn: &str,
    repository: &str,
    token: &str,
) -> Result<String, String> {
    let get = |path: String| -> Result<Vec<u8>, String> {
        let resp = http
            .get(format!("https://{fqdn}{path}"))
            .header("Accept", MANIFEST_TYPES)
            .bearer_auth(token)
            .send()
            .map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().map_err(|e| format!("{path}: {e}"))?;
        if status != 200 {
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(body.to_vec())
    };
    let manifest = get(format!("/v2/{repository}/manifests/1"))?;
    let digest = manifest_digest(&manifest);
    let parsed: Value = serde_json::from_slice(&manifest).map_err(|e| format!("manifest: {e}"))?;
    let blobs: Vec<String> = std::iter::once(&parsed["config"])
        .chain(parsed["layers"].as_array().into_iter().flatten())
        .filter_map(|b| b["digest"].as_str().map(str::to_owned))
        .collect();
    if blobs.len() < 2 {
        return Err(format!("a manifest without its blobs: {parsed}"));
    }
    for blob in blobs {
        let bytes = get(format!("/v2/{repository}/blobs/{blob}"))?;
        let got = manifest_digest(&bytes);
        if got != blob {
            return Err(format!("blob {blob} came back as {got}"));
        }
    }
    Ok(digest)
}

/// `user` pulls `repository:1` from each droplet by its own address and gets `digest`, with a
/// token from that droplet and with one from the next: behind the balancer, a client's token
/// and its pull may be answered by different droplets.
fn every_droplet_serves(
    ca: &str,
    fqdn: &str,
    addresses: &[String],
    repository: &str,
    digest: &str,
    user: (&str, &str),
) {
    let scope = format!("repository:{repository}:pull");
    let clients: Vec<_> = addresses.iter().map(|ip| pinned(ca, fqdn, ip)).collect();
    let tokens: Vec<String> = addresses
        .iter()
        .zip(&clients)
        .map(|(ip, http)| {
            token(http, fqdn, user, &scope)
                .unwrap_or_else(|e| panic!("{} on droplet {ip}: {e}", user.0))
        })
        .collect();
    for (i, ip) in addresses.iter().enumerate() {
        for from in [i, (i + 1) % addresses.len()] {
            let got = pull_with(&clients[i], fqdn, repository, &tokens[from]).unwrap_or_else(|e| {
                panic!(
                    "{} pulling {repository}:1 from droplet {ip} (token from {}): {e}",
                    user.0, addresses[from]
                )
            });
            assert_eq!(
                got, digest,
                "droplet {ip} served {repository}:1 as {got} to {} (token from {}); pushed {digest}",
                user.0, addresses[from]
            );
        }
    }
}

/// Droplet `id`'s health on each forwarding rule of balancer `lb`, as its HAProxy sees it now
/// (`UP`; `UP 1/2` failing; `DOWN`; `DOWN 1/2` recovering). DigitalOcean's API does not show
/// it; localocean's balancer is HAProxy, asked on its admin socket as localocean's own tests
/// ask it.
fn health(
    fx: &StorageFixture,
    rt: &tokio::runtime::Runtime,
    lb: &str,
    id: u64,
) -> Result<Vec<String>, String> {
    let state = localocean::instance::StateDir::new(fx.lo.state.clone());
    let servers = rt
        .block_on(localocean::machines::balancer::server_status(&state, lb))
        .map_err(|e| e.to_string())?;
    let server = format!("d{id}");
    Ok(servers
        .into_iter()
        .filter(|(_, s, _)| *s == server)
        .map(|(_, _, status)| status)
        .collect())
}

/// Waits (at most `limit`) until every rule's health check has droplet `id` `UP` or `DOWN`
/// (`want`); how long that took.
fn wait_health(
    fx: &StorageFixture,
    rt: &tokio::runtime::Runtime,
    lb: &str,
    id: u64,
    want: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let seen = health(fx, rt, lb, id);
        let reached = seen.as_ref().is_ok_and(|states| {
            !states.is_empty()
                && states
                    .iter()
                    .all(|s| s == want || (want == "DOWN" && s.starts_with("DOWN")))
        });
        if reached {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "droplet {id} is not {want} on load balancer {lb} after {limit:?}: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Ends a loop of pulls through the balancer that ran across `what`: none may have failed.
fn no_failed_pull(looper: PullLoop, what: &str) -> usize {
    std::thread::sleep(Duration::from_secs(1));
    let (pulls, failures) = looper.finish();
    assert!(
        failures.is_empty(),
        "{} of {} pulls through the load balancer failed during {what}: {:?}",
        failures.len(),
        pulls + failures.len(),
        failures.first()
    );
    assert!(pulls >= 3, "only {pulls} pulls ran through {what}");
    pulls
}

/// Applies the configuration `configure` wrote, under a loop of pulls of `tag` through the
/// balancer as `user`: the apply succeeds as one change in place and no pull fails (`what`
/// names the change in failures). Returns how many pulls ran.
fn apply_under_pulls(
    fx: &StorageFixture,
    tag: &str,
    user: (&str, &str),
    log: &str,
    what: &str,
    configure: impl FnOnce(),
) -> usize {
    let looper = PullLoop::start(
        fx.skopeo(),
        tag.to_owned(),
        format!("{}:{}", user.0, user.1),
    );
    std::thread::sleep(Duration::from_secs(1));
    configure();
    let (ok, out) = fx.apply_logged(log);
    let pulls = no_failed_pull(looper, what);
    assert!(ok, "{what}: {out}\n{}", fx.lo.log_tail());
    assert!(
        out.contains("0 added, 1 changed, 0 destroyed"),
        "{what} is not one change in place:\n{out}"
    );
    pulls
}

/// What both tests start from: a registry of two droplets behind a balancer, on a bucket of
/// its own, with `admin` and the pull user `reader` (see [`created_pair`]).
struct Pair {
    fx: StorageFixture,
    bucket: String,
    rt: tokio::runtime::Runtime,
    /// The `users` map it was made with.
    users1: String,
    v1: Value,
    ids1: Vec<u64>,
    addrs1: Vec<String>,
    lb_id: String,
    lb_ip: String,
}

impl Pair {
    fn created() -> Pair {
        let fx = StorageFixture::new(true);
        use rand::Rng;
        let bucket = format!("tf-acc-{:08x}", rand::thread_rng().gen::<u32>());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let users1 = format!(
            "    admin  = {{ password = \"{ADMIN_PW}\" }}\n    reader = {{ password = \"{READER_PW}\", access = \"pull\" }}"
        );
        let (v1, ids1, addrs1, lb_id, lb_ip) = created_pair(&fx, &bucket, &rt, &users1);
        Pair {
            fx,
            bucket,
            rt,
            users1,
            v1,
            ids1,
            addrs1,
            lb_id,
            lb_ip,
        }
    }
}

/// The first step of both tests: `replicas = 2` with `users` (the entries of the HCL map) made
/// from scratch: two droplets behind a load balancer, the name on the balancer's address, its
/// rules and check as the provider sets them, both droplets up behind it. Returns the state,
/// the droplets' ids and addresses, the balancer's id and address.
fn created_pair(
    fx: &StorageFixture,
    bucket: &str,
    rt: &tokio::runtime::Runtime,
    users: &str,
) -> (Value, Vec<u64>, Vec<String>, String, String) {
    let step = Instant::now();
    configure(fx, bucket, 1, 2, users);
    let (ok, out) = fx.apply_logged("create.log");
    assert!(ok, "apply: {out}\n{}", fx.lo.log_tail());
    let v1 = fx.values();
    let ids1 = droplet_ids(&v1);
    let addrs1 = addresses(&v1);
    assert_eq!(ids1.len(), 2, "droplet_ids: {ids1:?}");
    assert_eq!(addrs1.len(), 2, "ipv4_addresses: {addrs1:?}");
    assert_ne!(ids1[0], ids1[1], "droplet_ids: {ids1:?}");
    assert_ne!(addrs1[0], addrs1[1], "ipv4_addresses: {addrs1:?}");
    assert_eq!(
        v1["droplet_id"].as_u64(),
        Some(ids1[0]),
        "droplet_id is not the first of {ids1:?}"
    );
    assert_eq!(
        v1["ipv4_address"].as_str(),
        Some(addrs1[0].as_str()),
        "ipv4_address is not the first of {addrs1:?}"
    );
    assert_eq!(
        droplets_in_account(fx),
        sorted(ids1.clone()),
        "the account's droplets of this name"
    );
    let lb_id = v1["load_balancer_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("load_balancer_id: {}", v1["load_balancer_id"]))
        .to_owned();
    let lb_ip = v1["load_balancer_ip"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("load_balancer_ip: {}", v1["load_balancer_ip"]))
        .to_owned();
    assert!(
        !addrs1.contains(&lb_ip),
        "the load balancer's address {lb_ip} is a droplet's: {addrs1:?}"
    );
    let records = a_records(fx);
    assert_eq!(records.len(), 1, "A records: {records:?}");
    assert_eq!(
        records[0]["data"].as_str(),
        Some(lb_ip.as_str()),
        "the A record is not on the load balancer {lb_ip}: {records:?}"
    );
    let lb = balancer(fx, &lb_id);
    assert_eq!(lb["ip"].as_str(), Some(lb_ip.as_str()), "{lb}");
    assert_eq!(
        balancer_droplets(fx, &lb_id),
        sorted(ids1.clone()),
        "the load balancer's droplets"
    );
    // TLS passes through to nginx on each droplet (the registry's own certificate), port 80
    // for HTTP; the health check's timing is what step 3 waits on.
    let rules = lb["forwarding_rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let by_port = |port: u64| {
        rules
            .iter()
            .find(|r| r["entry_port"].as_u64() == Some(port))
    };
    let https = by_port(443).unwrap_or_else(|| panic!("no rule for 443: {rules:?}"));
    assert!(
        https["target_port"].as_u64() == Some(443)
            && https["entry_protocol"] == "https"
            && https["tls_passthrough"] == true,
        "443 is not passed through to 443: {https}"
    );
    let plain = by_port(80).unwrap_or_else(|| panic!("no rule for 80: {rules:?}"));
    assert_eq!(plain["target_port"].as_u64(), Some(80), "{plain}");
    let check = &lb["health_check"];
    assert!(
        check["protocol"] == "http"
            && check["port"].as_u64() == Some(80)
            && check["path"] == "/healthz"
            && check["check_interval_seconds"].as_u64() == Some(3)
            && check["unhealthy_threshold"].as_u64() == Some(2)
            && check["healthy_threshold"].as_u64() == Some(2),
        "health check: {check}"
    );
    // The droplets answer that check: both healthy behind the balancer.
    for id in &ids1 {
        wait_health(fx, rt, &lb_id, *id, "UP", Duration::from_secs(30));
    }
    eprintln!(
        "replicas step 1: created 2 droplets {ids1:?} ({addrs1:?}) behind {lb_ip} in {:.0} s",
        step.elapsed().as_secs_f64()
    );
    (v1, ids1, addrs1, lb_id, lb_ip)
}

/// The last step of both tests: destroy (with `force_destroy`) leaves no droplet (none of
/// `every_id`, every droplet the state ever held), balancer, record, firewall or Spaces key of
/// this registry; `last` is the state before it.
fn destroyed_leaves_nothing(fx: &StorageFixture, last: &Value, lb_id: &str, every_id: &[u64]) {
    let step = Instant::now();
    let key_id = last["spaces_key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("spaces_key_id: {}", last["spaces_key_id"]))
        .to_owned();
    let (ok, out) = fx.destroy();
    assert!(
        ok,
        "destroy with force_destroy: {out}\n{}",
        fx.lo.log_tail()
    );
    let left = droplets_in_account(fx);
    assert!(left.is_empty(), "droplets left: {left:?}");
    for id in every_id {
        let (status, body) = fx.lo.api("GET", &format!("/v2/droplets/{id}"), None);
        assert_eq!(status, 404, "droplet {id} is still there: {body}");
    }
    let (status, body) = fx
        .lo
        .api("GET", &format!("/v2/load_balancers/{lb_id}"), None);
    assert_eq!(status, 404, "load balancer {lb_id} is still there: {body}");
    let (status, all) = fx.lo.api("GET", "/v2/load_balancers?per_page=200", None);
    assert_eq!(status, 200, "{all}");
    // Nor any other balancer of this registry's name (one made and lost by a failed step).
    let prefix = format!("{}-", fx.name);
    let listed: Vec<&Value> = all["load_balancers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            let name = l["name"].as_str().unwrap_or_default();
            l["id"] == lb_id || name == fx.name || name.starts_with(&prefix)
        })
        .collect();
    assert!(
        listed.is_empty(),
        "load balancers of this registry still listed: {listed:?}"
    );
    let records = a_records(fx);
    assert!(records.is_empty(), "A records left: {records:?}");
    // Its firewall is `<name>-registry`; none of the registry's name is left.
    let firewalls = fx.lo.firewalls_of(&fx.name);
    assert!(firewalls.is_empty(), "firewalls left: {firewalls:?}");
    let (status, key) = fx.lo.api("GET", &format!("/v2/spaces/keys/{key_id}"), None);
    assert_eq!(
        status, 404,
        "the registry's Spaces key {key_id} is still there: {key}"
    );
    eprintln!(
        "replicas: destroyed, nothing left ({:.0} s)",
        step.elapsed().as_secs_f64()
    );
}

#[test]
fn replicas_behind_a_load_balancer_serve_the_same_images_and_roll_without_a_failed_pull() {
    let whole = Instant::now();
    let admin = ("admin", ADMIN_PW);
    let reader = ("reader", READER_PW);
    let puller = ("puller", PULLER_PW);
    // 1. Two droplets behind a load balancer, the name on the balancer's address.
    let Pair {
        fx,
        bucket,
        rt,
        users1: _,
        v1,
        ids1,
        addrs1,
        lb_id,
        lb_ip,
    } = Pair::created();
    // Every droplet id the state ever held: none may be left at the end.
    let mut every_id: Vec<u64> = ids1.clone();

    // 2. Pushed through the name (the balancer: a push's requests may land on either droplet,
    // its upload's state in the bucket); each droplet, by its own address, serves it whole.
    let step = Instant::now();
    let ca = v1["ca_certificate_pem"].as_str().unwrap().to_owned();
    let repository = "acc/replicas";
    let (by_digest, tag) = fx.push_as(repository, 256 * 1024);
    let digest = by_digest.rsplit_once('@').unwrap().1.to_owned();
    fx.pull(&by_digest);
    every_droplet_serves(&ca, &fx.fqdn, &addrs1, repository, &digest, reader);
    every_droplet_serves(&ca, &fx.fqdn, &addrs1, repository, &digest, admin);
    eprintln!(
        "replicas step 2: pushed {digest} through the balancer, pulled whole from each droplet in {:.0} s",
        step.elapsed().as_secs_f64()
    );

    // 3. nginx stopped by hand on the second droplet: once the balancer's check has marked it
    // down (2 failed checks 3 s apart: about 6 s), pulls through the balancer all succeed.
    let step = Instant::now();
    // One host key for every droplet of the registry, pinned for each address.
    let ips: Vec<&str> = addrs1.iter().map(String::as_str).collect();
    let (keyfile, known_hosts) = ssh_files(fx.tf.dir.path(), &v1, &ips);
    let (down_id, down_ip) = (ids1[1], addrs1[1].as_str());
    let on_down = |cmd: &str| {
        let out = ssh_pinned(&keyfile, &known_hosts, down_ip, cmd);
        assert!(
            out.status.success(),
            "{cmd} on droplet {down_ip}: {}",
            text(&out)
        );
    };
    on_down("systemctl stop nginx");
    let marked = wait_health(&fx, &rt, &lb_id, down_id, "DOWN", Duration::from_secs(30));
    let other = health(&fx, &rt, &lb_id, ids1[0]);
    assert!(
        other
            .as_ref()
            .is_ok_and(|s| !s.is_empty() && s.iter().all(|s| s == "UP")),
        "the other droplet {} is not up: {other:?}",
        ids1[0]
    );
    let looper = PullLoop::start(
        fx.skopeo(),
        tag.clone(),
        format!("{}:{}", reader.0, reader.1),
    );
    looper.wait_for(25, Duration::from_secs(90));
    let pulls = no_failed_pull(looper, "the stop of one droplet's nginx");
    assert!(pulls >= 25, "only {pulls} pulls with one droplet down");
    on_down("systemctl start nginx");
    let back = wait_health(&fx, &rt, &lb_id, down_id, "UP", Duration::from_secs(30));
    eprintln!(
        "replicas step 3: droplet {down_id} marked down {:.1} s after nginx stopped, {pulls} pulls through the balancer meanwhile, none failed; up again {:.1} s after nginx started ({:.0} s)",
        marked.as_secs_f64(),
        back.as_secs_f64(),
        step.elapsed().as_secs_f64()
    );

    // 4. Users changed in place (puller added, reader removed), under pulls: on every
    // droplet by its own address, the new user pulls and the removed one is refused.
    let step = Instant::now();
    let users2 = format!(
        "    admin  = {{ password = \"{ADMIN_PW}\" }}\n    puller = {{ password = \"{PULLER_PW}\", access = \"pull\" }}"
    );
    let pulls = apply_under_pulls(&fx, &tag, admin, "users.log", "the users update", || {
        configure(&fx, &bucket, 1, 2, &users2)
    });
    let v2 = fx.values();
    assert_eq!(
        droplet_ids(&v2),
        ids1,
        "the droplets changed with the users"
    );
    every_droplet_serves(&ca, &fx.fqdn, &addrs1, repository, &digest, puller);
    for ip in &addrs1 {
        let status = v2_status_with_token(&pinned(&ca, &fx.fqdn, ip), &fx.fqdn, reader.0, reader.1);
        assert_eq!(
            status, 401,
            "droplet {ip} answered the removed user with {status}"
        );
    }
    eprintln!(
        "replicas step 4: users changed on both droplets, {pulls} pulls meanwhile, none failed ({:.0} s)",
        step.elapsed().as_secs_f64()
    );

    // 5. A rolling replacement under pulls through the balancer: each new droplet verified
    // and added before an old one leaves, so no pull fails; the balancer, its address and the
    // record stay, with the new droplets behind it.
    let step = Instant::now();
    let records_before = a_records(&fx);
    let pulls = apply_under_pulls(
        &fx,
        &tag,
        puller,
        "replace.log",
        "the rolling replacement",
        || configure(&fx, &bucket, 2, 2, &users2),
    );
    let v3 = fx.values();
    let ids3 = droplet_ids(&v3);
    let addrs3 = addresses(&v3);
    every_id.extend(&ids3);
    assert_eq!(ids3.len(), 2, "droplet_ids: {ids3:?}");
    assert_eq!(addrs3.len(), 2, "ipv4_addresses: {addrs3:?}");
    assert!(
        ids3.iter().all(|id| !ids1.contains(id)),
        "not every droplet was replaced: {ids1:?} -> {ids3:?}"
    );
    assert_eq!(v3["droplet_id"].as_u64(), Some(ids3[0]), "droplet_id");
    assert_eq!(
        v3["load_balancer_id"].as_str(),
        Some(lb_id.as_str()),
        "load_balancer_id"
    );
    assert_eq!(
        v3["load_balancer_ip"].as_str(),
        Some(lb_ip.as_str()),
        "load_balancer_ip"
    );
    assert_eq!(
        balancer_droplets(&fx, &lb_id),
        sorted(ids3.clone()),
        "the load balancer's droplets after the replacement"
    );
    assert_eq!(
        droplets_in_account(&fx),
        sorted(ids3.clone()),
        "the account's droplets of this name after the replacement"
    );
    for old in &ids1 {
        let (status, body) = fx.lo.api("GET", &format!("/v2/droplets/{old}"), None);
        assert_eq!(status, 404, "old droplet {old} is still there: {body}");
    }
    assert_eq!(a_records(&fx), records_before, "the A record changed");
    every_droplet_serves(&ca, &fx.fqdn, &addrs3, repository, &digest, puller);
    for ip in &addrs3 {
        let status = v2_status_with_token(&pinned(&ca, &fx.fqdn, ip), &fx.fqdn, reader.0, reader.1);
        assert_eq!(
            status, 401,
            "new droplet {ip} answered the removed user with {status}"
        );
    }
    eprintln!(
        "replicas step 5: rolled {ids1:?} -> {ids3:?}, {pulls} pulls through the balancer meanwhile, none failed ({:.0} s)",
        step.elapsed().as_secs_f64()
    );

    // 6. Destroy.
    destroyed_leaves_nothing(&fx, &v3, &lb_id, &every_id);
    eprintln!(
        "replicas: the whole test {:.0} s",
        whole.elapsed().as_secs_f64()
    );
}

#[test]
fn replicas_change_in_place_and_collect_garbage_across_droplets_without_a_failed_pull() {
    let whole = Instant::now();
    let admin = ("admin", ADMIN_PW);
    let reader = ("reader", READER_PW);
    // 1. Two droplets behind a load balancer, the name on the balancer's address.
    let Pair {
        fx,
        bucket,
        rt: _,
        users1,
        v1,
        ids1,
        addrs1,
        lb_id,
        lb_ip,
    } = Pair::created();
    // Every droplet id the state ever held: none may be left at the end.
    let mut every_id: Vec<u64> = ids1.clone();

    // 2. An image pushed through the balancer, for the pulls below.
    let ca = v1["ca_certificate_pem"].as_str().unwrap().to_owned();
    let repository = "acc/replicas";
    let (by_digest, tag) = fx.push_as(repository, 256 * 1024);
    let digest = by_digest.rsplit_once('@').unwrap().1.to_owned();
    fx.pull(&by_digest);
    every_droplet_serves(&ca, &fx.fqdn, &addrs1, repository, &digest, reader);
    let ids3 = ids1.clone();
    eprintln!("replicas in place: created behind {lb_ip}");

    // 3. 2 -> 3 -> 2 in place under pulls: the droplets that stay are the same ones, the
    // balancer sends to exactly the state's droplets each time.
    let step = Instant::now();
    let grow_pulls = apply_under_pulls(
        &fx,
        &tag,
        reader,
        "grow.log",
        "the growth to 3 droplets",
        || configure(&fx, &bucket, 1, 3, &users1),
    );
    let v4 = fx.values();
    let ids4 = droplet_ids(&v4);
    let addrs4 = addresses(&v4);
    every_id.extend(&ids4);
    assert_eq!(ids4.len(), 3, "droplet_ids: {ids4:?}");
    assert_eq!(addrs4.len(), 3, "ipv4_addresses: {addrs4:?}");
    assert!(
        ids3.iter().all(|id| ids4.contains(id)),
        "a droplet was replaced on growing: {ids3:?} -> {ids4:?}"
    );
    assert_eq!(
        v4["droplet_id"].as_u64(),
        Some(ids3[0]),
        "droplet_id changed"
    );
    assert_eq!(
        balancer_droplets(&fx, &lb_id),
        sorted(ids4.clone()),
        "the load balancer's droplets at 3"
    );
    assert_eq!(
        droplets_in_account(&fx),
        sorted(ids4.clone()),
        "the account's droplets of this name at 3"
    );
    every_droplet_serves(&ca, &fx.fqdn, &addrs4, repository, &digest, reader);

    let shrink_pulls = apply_under_pulls(
        &fx,
        &tag,
        reader,
        "shrink.log",
        "the shrink to 2 droplets",
        || configure(&fx, &bucket, 1, 2, &users1),
    );
    let v5 = fx.values();
    let ids5 = droplet_ids(&v5);
    let addrs5 = addresses(&v5);
    assert_eq!(ids5.len(), 2, "droplet_ids: {ids5:?}");
    assert_eq!(addrs5.len(), 2, "ipv4_addresses: {addrs5:?}");
    assert!(
        ids5.iter().all(|id| ids4.contains(id)),
        "a droplet was replaced on shrinking: {ids4:?} -> {ids5:?}"
    );
    assert_eq!(v5["droplet_id"].as_u64(), Some(ids5[0]), "droplet_id");
    assert_eq!(
        balancer_droplets(&fx, &lb_id),
        sorted(ids5.clone()),
        "the load balancer's droplets back at 2"
    );
    assert_eq!(
        droplets_in_account(&fx),
        sorted(ids5.clone()),
        "the account's droplets of this name back at 2"
    );
    for gone in ids4.iter().filter(|id| !ids5.contains(id)) {
        let (status, body) = fx.lo.api("GET", &format!("/v2/droplets/{gone}"), None);
        assert_eq!(status, 404, "removed droplet {gone} is still there: {body}");
    }
    every_droplet_serves(&ca, &fx.fqdn, &addrs5, repository, &digest, reader);
    eprintln!(
        "replicas step 3: {ids3:?} -> {ids4:?} -> {ids5:?}, {grow_pulls} + {shrink_pulls} pulls through the balancer, none failed ({:.0} s)",
        step.elapsed().as_secs_f64()
    );

    // 4. A collection through the plan: writes held on both droplets while the first
    // collects, then the second's registry restarted out of the balancer (it caches blob
    // descriptors); pulls go on throughout. What a deleted image held is gone as both
    // droplets see it, the kept image is served whole by each, and pushes go through again.
    let step = Instant::now();
    let (gone_ref, _) = fx.push_as("acc/gone", 128 * 1024);
    let raw = fx
        .skopeo()
        .inspect_raw(&gone_ref, Some(&format!("admin:{ADMIN_PW}")));
    assert!(raw.status.success(), "{}", text(&raw));
    let gone: Value = serde_json::from_slice(&raw.stdout).unwrap();
    let gone_layer = gone["layers"][0]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no layer: {gone}"))
        .to_owned();
    let blob_status = |ip: &str| {
        let http = pinned(&ca, &fx.fqdn, ip);
        let token = token(&http, &fx.fqdn, admin, "repository:acc/gone:pull")
            .unwrap_or_else(|e| panic!("admin on droplet {ip}: {e}"));
        http.head(format!(
            "https://{}/v2/acc/gone/blobs/{gone_layer}",
            fx.fqdn
        ))
        .bearer_auth(token)
        .send()
        .unwrap_or_else(|e| panic!("HEAD the deleted image's layer on {ip}: {e}"))
        .status()
        .as_u16()
    };
    for ip in &addrs5 {
        // Asked once before, so that each droplet's registry caches its descriptor.
        assert_eq!(
            blob_status(ip),
            200,
            "the layer before the collection on {ip}"
        );
    }
    fx.delete(&gone_ref);
    let collect_pulls =
        apply_under_pulls(&fx, &tag, admin, "collect.log", "the collection", || {
            configure_with(
                &fx,
                &bucket,
                1,
                2,
                &users1,
                "  garbage_collection {\n    run = 1\n  }\n",
            )
        });
    let v6 = fx.values();
    assert!(
        v6["garbage_collection_last_run"].is_string(),
        "no collection recorded: {}",
        v6["garbage_collection_last_run"]
    );
    assert_eq!(droplet_ids(&v6), ids5, "collected in place");
    for ip in &addrs5 {
        assert_eq!(
            blob_status(ip),
            404,
            "droplet {ip} still has the deleted image's layer {gone_layer}"
        );
    }
    every_droplet_serves(&ca, &fx.fqdn, &addrs5, repository, &digest, reader);
    fx.push_as("acc/after", 64 * 1024);
    eprintln!(
        "replicas step 4: collected across both droplets, {collect_pulls} pulls meanwhile, none failed ({:.0} s)",
        step.elapsed().as_secs_f64()
    );

    // 5. Destroy.
    destroyed_leaves_nothing(&fx, &v5, &lb_id, &every_id);
    eprintln!(
        "replicas in place: the whole test {:.0} s",
        whole.elapsed().as_secs_f64()
    );
}
