//! Droplet backups on a real machine: the scheduler, run at a time inside the policy's
//! window, copies the live disk as an image of type `backup` that a droplet boots from; the
//! droplet deleted, its backups go.

use std::sync::Arc;

use localocean::testkit::{ApiServer, NoSpaces};
use serde_json::{json, Value};

use super::*;

async fn get(http: &reqwest::Client, api: &ApiServer, path: &str) -> (u16, Value) {
    let r = http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_backup_boots_another_droplet_and_goes_with_its_droplet() {
    let mut lab = Lab::new().await;
    let hv = Arc::new(Nspawn::new(NspawnConfig::new(
        lab.state.clone(),
        lab.subnet,
    )));
    let api = ApiServer::start(&lab.dir.path().join("api"), "t", hv, Arc::new(NoSpaces))
        .await
        .expect("api");
    let ready = json!({"api_url": api.base, "token": api.token});
    let (id, ip, key) = make_droplet(&ready, lab.dir.path()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v2/droplets/{id}/actions", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"type": "enable_backups", "backup_policy": {"plan": "daily", "hour": 4}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    ssh_ok(&key, ip, "echo before the backup > /root/kept.txt && sync");

    let (_, d) = get(&http, &api, &format!("/v2/droplets/{id}")).await;
    let start = time::OffsetDateTime::parse(
        d["droplet"]["next_backup_window"]["start"]
            .as_str()
            .unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let taken = api
        .app
        .run_backups(start + time::Duration::minutes(5))
        .await;
    assert_eq!(taken.len(), 1, "one backup in the window");
    let backup = taken[0];
    let (_, list) = get(&http, &api, &format!("/v2/droplets/{id}/backups")).await;
    assert_eq!(list["backups"][0]["id"], backup, "{list}");
    assert!(list["backups"][0]["size_gigabytes"].as_f64().unwrap() > 0.0);
    let (_, d) = get(&http, &api, &format!("/v2/droplets/{id}")).await;
    assert_eq!(d["droplet"]["backup_ids"], json!([backup]));
    let (_, image) = get(&http, &api, &format!("/v2/images/{backup}")).await;
    assert_eq!(image["image"]["type"], "backup");

    // A droplet from the backup has the file written before it.
    let d: Value = http
        .post(format!("{}/v2/droplets", api.base))
        .bearer_auth(&api.token)
        .json(&json!({"name": "tf-acc-test-restored", "region": "nyc3",
                      "size": "s-1vcpu-1gb", "image": backup}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let restored = d["droplet"]["id"].as_u64().expect("restored droplet id");
    let deadline = Instant::now() + Duration::from_secs(180);
    let ip2 = loop {
        let (_, d) = get(&http, &api, &format!("/v2/droplets/{restored}")).await;
        if d["droplet"]["status"] == "active" {
            break d["droplet"]["networks"]["v4"][0]["ip_address"]
                .as_str()
                .unwrap()
                .parse::<Ipv4Addr>()
                .unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "restored droplet never active: {d}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        ssh_ok(&key, ip2, "cat /root/kept.txt").trim(),
        "before the backup"
    );

    // The droplet deleted: its backup goes (the copy stays while the restored one runs).
    let copy = lab.state.root.join("images").join(backup.to_string());
    for droplet in [id, restored] {
        let r = http
            .delete(format!("{}/v2/droplets/{droplet}", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        if droplet == id {
            let (status, _) = get(&http, &api, &format!("/v2/images/{backup}")).await;
            assert_eq!(status, 404, "the backup outlived its droplet");
            assert!(copy.exists(), "the copy went while a droplet stands on it");
        }
    }
    assert!(
        !copy.exists(),
        "the backup's copy outlived its last droplet"
    );
    drop(api);
    lab.teardown().await;
}
