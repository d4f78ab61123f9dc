//! Every operation the API serves, called and checked against DigitalOcean's spec: status,
//! body schema, rate-limit headers; the test fails if an operation was never exercised.

use super::*;

#[tokio::test]
async fn conformance_every_operation() {
    let h = start().await;

    // Catalogue and account.
    let r = h.call("GET", "/v2/account", "/v2/account", None).await;
    assert_eq!(r.status, 200);
    let r = h.call("GET", "/v2/regions", "/v2/regions", None).await;
    let slugs: Vec<&str> = r.body["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["slug"].as_str().unwrap())
        .collect();
    for want in [
        "ams3", "nyc3", "sfo3", "fra1", "sgp1", "lon1", "tor1", "blr1", "syd1",
    ] {
        assert!(slugs.contains(&want), "region {want} missing");
    }
    let r = h.call("GET", "/v2/sizes", "/v2/sizes", None).await;
    let one_gb = r.body["sizes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slug"] == "s-1vcpu-1gb")
        .cloned()
        .unwrap();
    assert_eq!(one_gb["memory"], 1024);
    assert_eq!(one_gb["price_monthly"], 6.0);
    let r = h
        .call("GET", "/v2/images", "/v2/images?type=distribution", None)
        .await;
    assert!(r.body["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["slug"] == "debian-12-x64" && i["distribution"] == "Debian"));
    h.call(
        "GET",
        "/v2/images/{image_id}",
        "/v2/images/debian-12-x64",
        None,
    )
    .await;

    // SSH keys.
    let r = h
        .call(
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(json!({"name": "ed", "public_key": ED25519})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["ssh_key"]["fingerprint"], ED25519_MD5);
    let ed_id = r.body["ssh_key"]["id"].as_u64().unwrap();
    let r = h
        .call(
            "POST",
            "/v2/account/keys",
            "/v2/account/keys",
            Some(json!({"name": "rsa", "public_key": RSA})),
        )
        .await;
    assert_eq!(r.body["ssh_key"]["fingerprint"], RSA_MD5);
    let k = "/v2/account/keys/{ssh_key_identifier}";
    let r = h
        .call("GET", k, &format!("/v2/account/keys/{ed_id}"), None)
        .await;
    assert_eq!(r.body["ssh_key"]["name"], "ed");
    let r = h
        .call("GET", k, &format!("/v2/account/keys/{RSA_MD5}"), None)
        .await;
    assert_eq!(r.body["ssh_key"]["name"], "rsa");
    let r = h
        .call(
            "PUT",
            k,
            &format!("/v2/account/keys/{ed_id}"),
            Some(json!({"name": "ed2"})),
        )
        .await;
    assert_eq!(r.body["ssh_key"]["name"], "ed2");
    let r = h
        .call("GET", "/v2/account/keys", "/v2/account/keys", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 2);

    // Volumes (one made before the droplet, attached at create).
    let r = h
        .call(
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(json!({"name": "data-1", "size_gigabytes": 10, "region": "nyc3",
                        "filesystem_type": "ext4", "description": "registry data", "tags": ["reg"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let vol1 = r.body["volume"]["id"].as_str().unwrap().to_string();

    // Droplets.
    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(json!({
                "name": "reg-1.example.com", "region": "nyc3", "size": "s-1vcpu-1gb",
                "image": "debian-12-x64", "ssh_keys": [ed_id, RSA_MD5],
                "user_data": "#cloud-config\n", "tags": ["registry", "env:test"],
                "volumes": [vol1], "monitoring": true, "ipv6": true,
                "backups": true, "backup_policy": {"plan": "weekly", "weekday": "SUN", "hour": 4}
            })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["droplet"]["status"], "new");
    let d1 = r.body["droplet"]["id"].as_u64().unwrap();
    let create_action = r.body["links"]["actions"][0]["id"].as_u64().unwrap();
    assert_eq!(r.body["links"]["actions"][0]["rel"], "create");
    let a = h.wait_action(create_action).await;
    assert_eq!(a["status"], "completed");
    assert_eq!(a["type"], "create");
    assert!(h
        .hv
        .calls()
        .contains(&format!("create {d1} reg-1.example.com keys=2 volumes=1")));
    let dp = "/v2/droplets/{droplet_id}";
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_eq!(r.body["droplet"]["status"], "active");
    let v4 = &r.body["droplet"]["networks"]["v4"][0];
    assert!(v4["ip_address"].as_str().unwrap().starts_with("198.18."));
    assert_eq!(v4["type"], "public");
    assert_eq!(r.body["droplet"]["volume_ids"][0], vol1.as_str());

    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(json!({"names": ["multi-1", "multi-2"], "region": "nyc3",
                        "size": "s-1vcpu-512mb-10gb", "image": "debian-12-x64", "tags": ["multi"]})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["droplets"].as_array().unwrap().len(), 2);
    for l in r.body["links"]["actions"].as_array().unwrap() {
        h.wait_action(l["id"].as_u64().unwrap()).await;
    }
    let r = h
        .call("GET", "/v2/droplets", "/v2/droplets?per_page=2", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 3);

    // Droplet actions.
    let da = "/v2/droplets/{droplet_id}/actions";
    let path = format!("/v2/droplets/{d1}/actions");
    for (t, status) in [
        ("reboot", "active"),
        ("shutdown", "off"),
        ("power_on", "active"),
        ("power_off", "off"),
    ] {
        let r = h.call("POST", da, &path, Some(json!({"type": t}))).await;
        assert_eq!(r.status, 201, "{t}: {}", r.text);
        let a = h
            .wait_action(r.body["action"]["id"].as_u64().unwrap())
            .await;
        assert_eq!(a["status"], "completed", "{t}");
        let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
        assert_eq!(r.body["droplet"]["status"], status, "after {t}");
    }
    let r = h
        .call(
            "POST",
            da,
            &path,
            Some(json!({"type": "resize", "size": "s-2vcpu-4gb", "disk": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let resize_action = r.body["action"]["id"].as_u64().unwrap();
    h.wait_action(resize_action).await;
    let r = h
        .call(
            "POST",
            da,
            &path,
            Some(json!({"type": "rename", "name": "reg-1b"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_eq!(r.body["droplet"]["size_slug"], "s-2vcpu-4gb");
    assert_eq!(r.body["droplet"]["memory"], 4096);
    assert_eq!(r.body["droplet"]["disk"], 80);
    assert_eq!(r.body["droplet"]["name"], "reg-1b");
    assert!(h.hv.calls().contains(&format!("resize {d1} 4096 2")));
    let r = h.call("GET", da, &path, None).await;
    assert!(r.body["meta"]["total"].as_u64().unwrap() >= 7);
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}/actions/{action_id}",
            &format!("/v2/droplets/{d1}/actions/{resize_action}"),
            None,
        )
        .await;
    assert_eq!(r.body["action"]["type"], "resize");
    let r = h.call("GET", "/v2/actions", "/v2/actions", None).await;
    assert_eq!(r.status, 200);

    // Backups: the policy given at create, changed, disabled and enabled by actions.
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert!(r.body["droplet"]["features"]
        .as_array()
        .unwrap()
        .contains(&json!("backups")));
    assert_eq!(r.body["droplet"]["backup_ids"], json!([]));
    let window = r.body["droplet"]["next_backup_window"].clone();
    assert!(
        window["start"].as_str().unwrap().ends_with("T04:00:00Z"),
        "{window}"
    );
    assert!(
        window["end"].as_str().unwrap().ends_with("T08:00:00Z"),
        "{window}"
    );
    let bp = "/v2/droplets/{droplet_id}/backups/policy";
    let bpath = format!("/v2/droplets/{d1}/backups/policy");
    let r = h.call("GET", bp, &bpath, None).await;
    assert_eq!(r.body["policy"]["backup_enabled"], true);
    assert_eq!(
        r.body["policy"]["backup_policy"],
        json!({"plan": "weekly", "weekday": "SUN", "hour": 4,
               "window_length_hours": 4, "retention_period_days": 28})
    );
    assert_eq!(r.body["policy"]["next_backup_window"], window);
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}/backups",
            &format!("/v2/droplets/{d1}/backups"),
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 0);
    let r = h
        .call(
            "POST",
            da,
            &path,
            Some(json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily", "hour": 20}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["action"]["type"], "change_backup_policy");
    let r = h.call("GET", bp, &bpath, None).await;
    assert_eq!(r.body["policy"]["backup_policy"]["plan"], "daily");
    assert_eq!(r.body["policy"]["backup_policy"]["hour"], 20);
    assert_eq!(
        r.body["policy"]["backup_policy"]["retention_period_days"],
        7
    );
    for bad in [
        json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily", "hour": 3}}),
        json!({"type": "change_backup_policy", "backup_policy": {"plan": "monthly"}}),
        json!({"type": "change_backup_policy"}),
    ] {
        let r = h
            .raw("POST", &path, Some(&bad.to_string()), Some(TOKEN))
            .await;
        assert_error(&r, 422, "unprocessable_entity");
    }
    let r = h
        .call("POST", da, &path, Some(json!({"type": "disable_backups"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = h.call("GET", bp, &bpath, None).await;
    assert_eq!(r.body["policy"]["backup_enabled"], false);
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_eq!(r.body["droplet"]["next_backup_window"], Value::Null);
    assert!(!r.body["droplet"]["features"]
        .as_array()
        .unwrap()
        .contains(&json!("backups")));
    let r = h
        .raw(
            "POST",
            &path,
            Some(
                &json!({"type": "change_backup_policy", "backup_policy": {"plan": "daily"}})
                    .to_string(),
            ),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    let r = h
        .call("POST", da, &path, Some(json!({"type": "enable_backups"})))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = h.call("GET", bp, &bpath, None).await;
    assert_eq!(r.body["policy"]["backup_policy"]["plan"], "daily");
    let r = h
        .call(
            "GET",
            "/v2/droplets/backups/policies",
            "/v2/droplets/backups/policies",
            None,
        )
        .await;
    assert_eq!(
        r.body["policies"][d1.to_string()]["backup_enabled"],
        true,
        "{}",
        r.text
    );
    let r = h
        .call(
            "GET",
            "/v2/droplets/backups/supported_policies",
            "/v2/droplets/backups/supported_policies",
            None,
        )
        .await;
    assert_eq!(r.body["supported_policies"][0]["name"], "weekly");
    let r = h
        .raw(
            "POST",
            "/v2/droplets",
            Some(
                &json!({"name": "nobackups", "region": "nyc3", "size": "s-1vcpu-1gb",
                        "image": "debian-12-x64", "backup_policy": {"plan": "daily"}})
                .to_string(),
            ),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");

    // Volumes.
    let r = h
        .call(
            "GET",
            "/v2/volumes",
            "/v2/volumes?name=data-1&region=nyc3",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    let vp = "/v2/volumes/{volume_id}";
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.body["volume"]["droplet_ids"][0], d1);
    let r = h
        .call("DELETE", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_error(&r, 409, "conflict");
    let va = "/v2/volumes/{volume_id}/actions";
    let vpath = format!("/v2/volumes/{vol1}/actions");
    let r = h
        .call(
            "POST",
            va,
            &vpath,
            Some(json!({"type": "detach", "droplet_id": d1, "region": "nyc3"})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        h.wait_action(r.body["action"]["id"].as_u64().unwrap())
            .await["status"],
        "completed"
    );
    let r = h
        .call(
            "POST",
            va,
            &vpath,
            Some(json!({"type": "resize", "size_gigabytes": 20, "region": "nyc3"})),
        )
        .await;
    let resize_vol = r.body["action"]["id"].as_u64().unwrap();
    h.wait_action(resize_vol).await;
    let r = h
        .call(
            "POST",
            "/v2/volumes/actions",
            "/v2/volumes/actions",
            Some(json!({"type": "attach", "volume_name": "data-1", "region": "nyc3", "droplet_id": d1})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    h.wait_action(r.body["action"]["id"].as_u64().unwrap())
        .await;
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.body["volume"]["size_gigabytes"], 20);
    assert_eq!(r.body["volume"]["droplet_ids"][0], d1);
    let r = h.call("GET", va, &vpath, None).await;
    assert_eq!(r.body["meta"]["total"], 3);
    let r = h
        .call(
            "GET",
            "/v2/volumes/{volume_id}/actions/{action_id}",
            &format!("/v2/volumes/{vol1}/actions/{resize_vol}"),
            None,
        )
        .await;
    assert_eq!(r.body["action"]["type"], "resize_volume");
    assert!(h
        .hv
        .calls()
        .contains(&"resize_volume data-1 20".to_string()));

    // Volume snapshots, and a volume made from one.
    let vs = "/v2/volumes/{volume_id}/snapshots";
    let vspath = format!("/v2/volumes/{vol1}/snapshots");
    let r = h
        .call(
            "POST",
            vs,
            &vspath,
            Some(json!({"name": "data-1-snap", "tags": ["reg"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let snap = r.body["snapshot"].clone();
    let snap_id = snap["id"].as_str().unwrap().to_string();
    assert_eq!(snap["resource_id"], vol1.as_str());
    assert_eq!(snap["resource_type"], "volume");
    assert_eq!(snap["min_disk_size"], 20);
    assert_eq!(snap["regions"], json!(["nyc3"]));
    assert!(h
        .hv
        .calls()
        .contains(&format!("snapshot_volume data-1 {snap_id}")));
    let r = h
        .raw("POST", &vspath, Some(r#"{"name": ""}"#), Some(TOKEN))
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    let r = h
        .raw(
            "POST",
            "/v2/volumes/no-such-volume/snapshots",
            Some(r#"{"name": "x"}"#),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 404, "not_found");
    let r = h.call("GET", vs, &vspath, None).await;
    assert_eq!(r.body["meta"]["total"], 1);
    assert_eq!(r.body["snapshots"][0], snap);
    let r = h
        .call(
            "GET",
            "/v2/snapshots",
            "/v2/snapshots?resource_type=volume",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    let r = h
        .call(
            "GET",
            "/v2/snapshots",
            "/v2/snapshots?resource_type=droplet",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 0);
    let sp = "/v2/snapshots/{snapshot_id}";
    let r = h
        .call("GET", sp, &format!("/v2/snapshots/{snap_id}"), None)
        .await;
    assert_eq!(r.body["snapshot"], snap);
    let vsp = "/v2/volumes/snapshots/{snapshot_id}";
    let r = h
        .call(
            "GET",
            vsp,
            &format!("/v2/volumes/snapshots/{snap_id}"),
            None,
        )
        .await;
    assert_eq!(r.body["snapshot"], snap);
    for (body, why) in [
        (
            json!({"name": "data-2", "size_gigabytes": 10, "region": "nyc3", "snapshot_id": snap_id}),
            "smaller than min_disk_size",
        ),
        (
            json!({"name": "data-2", "size_gigabytes": 20, "region": "ams3", "snapshot_id": snap_id}),
            "another region",
        ),
        (
            json!({"name": "data-2", "size_gigabytes": 20, "region": "nyc3", "snapshot_id": "nope"}),
            "no such snapshot",
        ),
    ] {
        let r = h
            .raw("POST", "/v2/volumes", Some(&body.to_string()), Some(TOKEN))
            .await;
        assert_eq!(r.status, 422, "{why}: {}", r.text);
    }
    let r = h
        .call(
            "POST",
            "/v2/volumes",
            "/v2/volumes",
            Some(
                json!({"name": "data-2", "size_gigabytes": 25, "region": "nyc3",
                        "snapshot_id": snap_id, "description": "from a snapshot"}),
            ),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let vol2 = r.body["volume"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.body["volume"]["filesystem_type"], "ext4",
        "the snapshot's"
    );
    assert!(h
        .hv
        .calls()
        .contains(&format!("create_volume data-2 25 from {snap_id}")));
    let r = h
        .call("DELETE", vp, &format!("/v2/volumes/{vol2}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("DELETE", sp, &format!("/v2/snapshots/{snap_id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(h.hv.calls().contains(&format!("delete_snapshot {snap_id}")));
    let r = h
        .call("GET", sp, &format!("/v2/snapshots/{snap_id}"), None)
        .await;
    assert_error(&r, 404, "not_found");
    let r = h
        .call("POST", vs, &vspath, Some(json!({"name": "data-1-snap-2"})))
        .await;
    let snap2 = r.body["snapshot"]["id"].as_str().unwrap().to_string();
    let r = h
        .call(
            "DELETE",
            vsp,
            &format!("/v2/volumes/snapshots/{snap2}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call(
            "DELETE",
            vsp,
            &format!("/v2/volumes/snapshots/{snap2}"),
            None,
        )
        .await;
    assert_error(&r, 404, "not_found");

    // Domains and records.
    let r = h
        .call(
            "POST",
            "/v2/domains",
            "/v2/domains",
            Some(json!({"name": "example.com", "ip_address": "198.18.0.10"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    h.call("GET", "/v2/domains", "/v2/domains", None).await;
    let r = h
        .call(
            "GET",
            "/v2/domains/{domain_name}",
            "/v2/domains/example.com",
            None,
        )
        .await;
    assert!(r.body["domain"]["zone_file"]
        .as_str()
        .unwrap()
        .contains("ns1.digitalocean.com."));
    let rl = "/v2/domains/{domain_name}/records";
    let r = h
        .call("GET", rl, "/v2/domains/example.com/records", None)
        .await;
    let types: Vec<&str> = r.body["domain_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SOA", "NS", "NS", "NS", "A"]);
    let mut ids = Vec::new();
    for rec in [
        json!({"type": "A", "name": "registry", "data": "198.18.0.10", "ttl": 60}),
        json!({"type": "AAAA", "name": "registry", "data": "2001:db8::1"}),
        json!({"type": "CNAME", "name": "www", "data": "registry.example.com."}),
        json!({"type": "TXT", "name": "_acme-challenge.registry", "data": "token-value"}),
        json!({"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "tag": "issue"}),
        json!({"type": "NS", "name": "sub", "data": "ns1.example.net."}),
        json!({"type": "MX", "name": "@", "data": "mail.example.com.", "priority": 10}),
        json!({"type": "SRV", "name": "_sip._tcp", "data": "sip.example.com.", "priority": 1, "port": 5060, "weight": 5}),
    ] {
        let r = h
            .call(
                "POST",
                rl,
                "/v2/domains/example.com/records",
                Some(rec.clone()),
            )
            .await;
        assert_eq!(r.status, 201, "{rec}: {}", r.text);
        ids.push(r.body["domain_record"]["id"].as_u64().unwrap());
    }
    let r = h
        .call(
            "GET",
            rl,
            "/v2/domains/example.com/records?name=registry.example.com&type=A",
            None,
        )
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    assert_eq!(r.body["domain_records"][0]["data"], "198.18.0.10");
    let rp = "/v2/domains/{domain_name}/records/{domain_record_id}";
    let one = format!("/v2/domains/example.com/records/{}", ids[0]);
    let r = h.call("GET", rp, &one, None).await;
    assert_eq!(r.body["domain_record"]["ttl"], 60);
    let r = h
        .call(
            "PUT",
            rp,
            &one,
            Some(json!({"type": "A", "name": "registry", "data": "198.18.0.11"})),
        )
        .await;
    assert_eq!(r.body["domain_record"]["data"], "198.18.0.11");
    let r = h.call("PATCH", rp, &one, Some(json!({"ttl": 120}))).await;
    assert_eq!(r.body["domain_record"]["ttl"], 120);
    assert_eq!(r.body["domain_record"]["data"], "198.18.0.11");
    let zones = api::zones(&h.api.app).zones();
    let zone = zones.iter().find(|z| z.name == "example.com").unwrap();
    assert!(zone
        .records
        .iter()
        .any(|r| r.name == "registry" && r.data == "198.18.0.11"));
    assert!(!zone.records.iter().any(|r| r.record_type == "SOA"));
    let r = h.call("DELETE", rp, &one, None).await;
    assert_eq!(r.status, 204);
    let r = h.call("GET", rp, &one, None).await;
    assert_error(&r, 404, "not_found");

    // Firewalls.
    let fw_body = json!({
        "name": "registry-fw",
        "droplet_ids": [d1],
        "tags": ["registry"],
        "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["0.0.0.0/0", "::/0"]}},
            {"protocol": "tcp", "ports": "443", "sources": {"addresses": ["0.0.0.0/0"]}},
            {"protocol": "icmp", "sources": {"addresses": ["0.0.0.0/0"]}}
        ],
        "outbound_rules": [
            {"protocol": "tcp", "ports": "all", "destinations": {"addresses": ["0.0.0.0/0"]}}
        ]
    });
    let r = h
        .call(
            "POST",
            "/v2/firewalls",
            "/v2/firewalls",
            Some(fw_body.clone()),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let fw = r.body["firewall"]["id"].as_str().unwrap().to_string();
    let fp = "/v2/firewalls/{firewall_id}";
    h.call("GET", fp, &format!("/v2/firewalls/{fw}"), None)
        .await;
    h.call("GET", "/v2/firewalls", "/v2/firewalls", None).await;
    let mut upd = fw_body.clone();
    upd["name"] = json!("registry-fw-2");
    upd["droplet_ids"] = json!([]);
    let r = h
        .call("PUT", fp, &format!("/v2/firewalls/{fw}"), Some(upd))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["firewall"]["name"], "registry-fw-2");
    // Tags: create one, put it on a droplet and take it off again.
    let r = h
        .call(
            "POST",
            "/v2/tags",
            "/v2/tags",
            Some(json!({"name": "team:registry"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["tag"]["name"], "team:registry");
    let tr = "/v2/tags/{tag_id}/resources";
    let res = json!({"resources": [{"resource_id": d1.to_string(), "resource_type": "droplet"}]});
    let r = h
        .call(
            "POST",
            tr,
            "/v2/tags/team:registry/resources",
            Some(res.clone()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{d1}"),
            None,
        )
        .await;
    assert!(
        r.body["droplet"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team:registry")),
        "{}",
        r.text
    );
    let r = h
        .call("DELETE", tr, "/v2/tags/team:registry/resources", Some(res))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    // A volume takes tags the same way.
    let vres = json!({"resources": [{"resource_id": vol1, "resource_type": "volume"}]});
    let r = h
        .call(
            "POST",
            tr,
            "/v2/tags/team:registry/resources",
            Some(vres.clone()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert!(
        r.body["volume"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team:registry")),
        "{}",
        r.text
    );
    let r = h
        .call("DELETE", tr, "/v2/tags/team:registry/resources", Some(vres))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert!(
        !r.body["volume"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team:registry")),
        "{}",
        r.text
    );
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{d1}"),
            None,
        )
        .await;
    assert!(
        !r.body["droplet"]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("team:registry")),
        "{}",
        r.text
    );

    let fd = "/v2/firewalls/{firewall_id}/droplets";
    let r = h
        .call(
            "POST",
            fd,
            &format!("/v2/firewalls/{fw}/droplets"),
            Some(json!({"droplet_ids": [d1]})),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("GET", fp, &format!("/v2/firewalls/{fw}"), None)
        .await;
    assert_eq!(r.body["firewall"]["droplet_ids"], json!([d1]));
    let r = h
        .call(
            "DELETE",
            fd,
            &format!("/v2/firewalls/{fw}/droplets"),
            Some(json!({"droplet_ids": [d1]})),
        )
        .await;
    assert_eq!(r.status, 204);

    // Spaces keys.
    let r = h
        .call(
            "POST",
            "/v2/spaces/keys",
            "/v2/spaces/keys",
            Some(json!({"name": "registry", "grants": [{"bucket": "registry-data", "permission": "readwrite"}]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ak = r.body["key"]["access_key"].as_str().unwrap().to_string();
    assert!(r.body["key"]["secret_key"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let sk = "/v2/spaces/keys/{access_key}";
    let r = h
        .call("GET", sk, &format!("/v2/spaces/keys/{ak}"), None)
        .await;
    assert_eq!(r.body["key"]["name"], "registry");
    assert!(
        r.body["key"].get("secret_key").is_none(),
        "secret shown after create"
    );
    let r = h
        .call("GET", "/v2/spaces/keys", "/v2/spaces/keys", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 1);
    let r = h
        .call(
            "PUT",
            sk,
            &format!("/v2/spaces/keys/{ak}"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(r.body["key"]["name"], "renamed");
    let r = h
        .call(
            "PATCH",
            sk,
            &format!("/v2/spaces/keys/{ak}"),
            Some(json!({"grants": [{"bucket": "registry-data", "permission": "read"}]})),
        )
        .await;
    assert_eq!(r.body["key"]["grants"][0]["permission"], "read");
    assert_eq!(h.spaces.keys.lock().unwrap()[0].2[0].permission, "read");
    let r = h
        .call("DELETE", sk, &format!("/v2/spaces/keys/{ak}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(h.spaces.keys.lock().unwrap().is_empty());

    // Uptime: a check, its alert, both updated, listed and deleted.
    let r = h
        .call(
            "POST",
            "/v2/uptime/checks",
            "/v2/uptime/checks",
            Some(json!({"name": "registry", "type": "https", "target": "https://registry.example.com",
                        "regions": ["us_east", "eu_west"], "enabled": true})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let check = r.body["check"]["id"].as_str().unwrap().to_string();
    let cp = "/v2/uptime/checks/{check_id}";
    h.call("GET", cp, &format!("/v2/uptime/checks/{check}"), None)
        .await;
    h.call("GET", "/v2/uptime/checks", "/v2/uptime/checks", None)
        .await;
    let r = h
        .call(
            "PUT",
            cp,
            &format!("/v2/uptime/checks/{check}"),
            Some(json!({"name": "registry-2", "enabled": false})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["check"]["name"], "registry-2");
    assert_eq!(r.body["check"]["target"], "https://registry.example.com");
    let ap = "/v2/uptime/checks/{check_id}/alerts";
    let alert_body = json!({"name": "certificate", "type": "ssl_expiry", "threshold": 14,
        "comparison": "less_than", "period": "2m",
        "notifications": {"email": ["localocean@localhost"], "slack": []}});
    let r = h
        .call(
            "POST",
            ap,
            &format!("/v2/uptime/checks/{check}/alerts"),
            Some(alert_body.clone()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let alert = r.body["alert"]["id"].as_str().unwrap().to_string();
    let aip = "/v2/uptime/checks/{check_id}/alerts/{alert_id}";
    h.call(
        "GET",
        aip,
        &format!("/v2/uptime/checks/{check}/alerts/{alert}"),
        None,
    )
    .await;
    h.call(
        "GET",
        ap,
        &format!("/v2/uptime/checks/{check}/alerts"),
        None,
    )
    .await;
    let mut upd = alert_body.clone();
    upd["threshold"] = json!(7);
    let r = h
        .call(
            "PUT",
            aip,
            &format!("/v2/uptime/checks/{check}/alerts/{alert}"),
            Some(upd),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["alert"]["threshold"], 7);
    let r = h
        .call(
            "DELETE",
            aip,
            &format!("/v2/uptime/checks/{check}/alerts/{alert}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("DELETE", cp, &format!("/v2/uptime/checks/{check}"), None)
        .await;
    assert_eq!(r.status, 204);

    // Reserved IPs: one reserved to a region, one created for a droplet; assign moves an
    // address between droplets (onto the new holder before off the old one).
    let r = h
        .call("GET", "/v2/droplets", "/v2/droplets?tag_name=multi", None)
        .await;
    let multi: Vec<u64> = r.body["droplets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect();
    let rl = "/v2/reserved_ips";
    let r = h
        .call("POST", rl, rl, Some(json!({"region": "nyc3"})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["reserved_ip"]["droplet"], Value::Null);
    assert_eq!(r.body["reserved_ip"]["region"]["slug"], "nyc3");
    assert_eq!(r.body["reserved_ip"]["locked"], false);
    let ip1 = r.body["reserved_ip"]["ip"].as_str().unwrap().to_string();
    assert!(ip1.starts_with("198.19.255."), "{ip1}");
    let r = h
        .call("POST", rl, rl, Some(json!({"droplet_id": d1})))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["reserved_ip"]["locked"], true);
    assert_eq!(r.body["links"]["droplets"][0]["id"], d1);
    assert_eq!(r.body["links"]["actions"][0]["rel"], "assign_ip");
    let ip2 = r.body["reserved_ip"]["ip"].as_str().unwrap().to_string();
    assert_ne!(ip1, ip2);
    let a = h
        .wait_action(r.body["links"]["actions"][0]["id"].as_u64().unwrap())
        .await;
    assert_eq!(a["status"], "completed");
    assert_eq!(a["resource_type"], "reserved_ip");
    let ipp = "/v2/reserved_ips/{reserved_ip}";
    let r = h.call("GET", ipp, &format!("{rl}/{ip2}"), None).await;
    assert_eq!(r.body["reserved_ip"]["droplet"]["id"], d1);
    assert_eq!(r.body["reserved_ip"]["locked"], false);
    assert!(h
        .hv
        .calls()
        .contains(&format!("set_reserved_ip {d1} {ip2}")));
    let r = h.call("GET", rl, "/v2/reserved_ips?per_page=1", None).await;
    assert_eq!(r.body["meta"]["total"], 2);
    assert_eq!(r.body["reserved_ips"].as_array().unwrap().len(), 1);
    assert!(r.body["links"]["pages"]["next"].is_string());
    let r = h
        .raw(
            "POST",
            rl,
            Some(&json!({"region": "nowhere"}).to_string()),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    let r = h
        .raw("GET", "/v2/reserved_ips/198.51.100.7", None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    let ra = "/v2/reserved_ips/{reserved_ip}/actions";
    // One reserved IP per droplet: d1 already holds ip2.
    let r = h
        .raw(
            "POST",
            &format!("{rl}/{ip1}/actions"),
            Some(&json!({"type": "assign", "droplet_id": d1}).to_string()),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    let r = h
        .call(
            "POST",
            ra,
            &format!("{rl}/{ip2}/actions"),
            Some(json!({"type": "assign", "droplet_id": multi[0]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["action"]["type"], "assign_ip");
    let moved = r.body["action"]["id"].as_u64().unwrap();
    assert_eq!(h.wait_action(moved).await["status"], "completed");
    let r = h.call("GET", ipp, &format!("{rl}/{ip2}"), None).await;
    assert_eq!(r.body["reserved_ip"]["droplet"]["id"], multi[0]);
    let calls = h.hv.calls();
    let on = calls
        .iter()
        .position(|c| *c == format!("set_reserved_ip {} {ip2}", multi[0]))
        .expect("assigned to the new droplet");
    let off = calls
        .iter()
        .position(|c| *c == format!("set_reserved_ip {d1} none"))
        .expect("taken off the old droplet");
    assert!(
        on < off,
        "the address left d1 before reaching its new droplet"
    );
    let r = h
        .call("GET", ra, &format!("{rl}/{ip2}/actions"), None)
        .await;
    assert_eq!(r.body["meta"]["total"], 3, "{}", r.text);
    let r = h
        .call(
            "GET",
            "/v2/reserved_ips/{reserved_ip}/actions/{action_id}",
            &format!("{rl}/{ip2}/actions/{moved}"),
            None,
        )
        .await;
    assert_eq!(r.body["action"]["id"], moved);
    let r = h
        .call(
            "POST",
            ra,
            &format!("{rl}/{ip2}/actions"),
            Some(json!({"type": "unassign"})),
        )
        .await;
    assert_eq!(r.body["action"]["type"], "unassign_ip");
    h.wait_action(r.body["action"]["id"].as_u64().unwrap())
        .await;
    let r = h.call("GET", ipp, &format!("{rl}/{ip2}"), None).await;
    assert_eq!(r.body["reserved_ip"]["droplet"], Value::Null);
    let r = h
        .raw(
            "POST",
            &format!("{rl}/{ip2}/actions"),
            Some(&json!({"type": "unassign"}).to_string()),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    // ip1 goes to a droplet that is deleted below: it stays reserved, unassigned.
    let r = h
        .call(
            "POST",
            ra,
            &format!("{rl}/{ip1}/actions"),
            Some(json!({"type": "assign", "droplet_id": multi[1]})),
        )
        .await;
    h.wait_action(r.body["action"]["id"].as_u64().unwrap())
        .await;

    // Load balancers: by droplet id (HTTP on 80, TLS passed through on 443, a health check
    // of our own), then by tag; new until the machines run it, then active at an address of
    // the instance's load balancer range; every change reaches the machines.
    let lbl = "/v2/load_balancers";
    let lbp = "/v2/load_balancers/{lb_id}";
    let rules = json!([
        {"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80},
        {"entry_protocol": "https", "entry_port": 443, "target_protocol": "https",
         "target_port": 443, "tls_passthrough": true}
    ]);
    let r = h
        .call(
            "POST",
            lbl,
            lbl,
            Some(json!({
                "name": "reg-lb", "region": "nyc3", "size_unit": 1, "forwarding_rules": rules,
                "health_check": {"protocol": "http", "port": 80, "path": "/healthz",
                    "check_interval_seconds": 3, "response_timeout_seconds": 3,
                    "unhealthy_threshold": 2, "healthy_threshold": 2},
                "sticky_sessions": {"type": "none"}, "droplet_ids": [d1],
            })),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let lb = &r.body["load_balancer"];
    assert_eq!(lb["status"], "new");
    assert_eq!(lb["ip"], "");
    assert_eq!(lb["droplet_ids"], json!([d1]));
    assert_eq!(lb["tag"], "");
    assert_eq!(lb["forwarding_rules"][0]["certificate_id"], "");
    assert_eq!(lb["forwarding_rules"][1]["tls_passthrough"], true);
    assert_eq!(lb["health_check"]["path"], "/healthz");
    assert_eq!(lb["health_check"]["unhealthy_threshold"], 2);
    assert_eq!(lb["region"]["slug"], "nyc3");
    assert_eq!(lb["size_unit"], 1);
    let lb1 = lb["id"].as_str().unwrap().to_string();
    let lb = h.wait_lb(&lb1).await;
    assert_eq!(lb["status"], "active");
    let lb_ip = lb["ip"].as_str().unwrap().to_string();
    assert_eq!(lb_ip, "198.19.255.150");
    h.wait_call(&format!(
        "apply_load_balancer {lb1} {lb_ip} rules=80,443 droplets={d1}"
    ))
    .await;
    let lbd = "/v2/load_balancers/{lb_id}/droplets";
    let r = h
        .call(
            "POST",
            lbd,
            &format!("{lbl}/{lb1}/droplets"),
            Some(json!({"droplet_ids": [multi[0]]})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    h.wait_call(&format!(
        "apply_load_balancer {lb1} {lb_ip} rules=80,443 droplets={d1},{}",
        multi[0]
    ))
    .await;
    let r = h
        .call(
            "DELETE",
            lbd,
            &format!("{lbl}/{lb1}/droplets"),
            Some(json!({"droplet_ids": [d1]})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    h.wait_call(&format!(
        "apply_load_balancer {lb1} {lb_ip} rules=80,443 droplets={}",
        multi[0]
    ))
    .await;
    let lbr = "/v2/load_balancers/{lb_id}/forwarding_rules";
    let ssh_rule = json!({"forwarding_rules": [{"entry_protocol": "tcp", "entry_port": 2222,
        "target_protocol": "tcp", "target_port": 22}]});
    let r = h
        .call(
            "POST",
            lbr,
            &format!("{lbl}/{lb1}/forwarding_rules"),
            Some(ssh_rule.clone()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h.call("GET", lbp, &format!("{lbl}/{lb1}"), None).await;
    assert_eq!(
        r.body["load_balancer"]["forwarding_rules"][2]["target_port"],
        22
    );
    h.wait_call(&format!(
        "apply_load_balancer {lb1} {lb_ip} rules=80,443,2222 droplets={}",
        multi[0]
    ))
    .await;
    let r = h
        .call(
            "DELETE",
            lbr,
            &format!("{lbl}/{lb1}/forwarding_rules"),
            Some(ssh_rule),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = h.call("GET", lbp, &format!("{lbl}/{lb1}"), None).await;
    assert_eq!(
        r.body["load_balancer"]["forwarding_rules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A PUT is the whole balancer: by tag now, and the health check it leaves out is back
    // to the spec's defaults.
    let r = h
        .call(
            "PUT",
            lbp,
            &format!("{lbl}/{lb1}"),
            Some(
                json!({"name": "reg-lb", "region": "nyc3", "forwarding_rules": rules,
                        "tag": "multi"}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lb = &r.body["load_balancer"];
    assert_eq!(lb["tag"], "multi");
    assert_eq!(lb["ip"], lb_ip.as_str());
    assert_eq!(lb["droplet_ids"], json!(multi));
    assert_eq!(lb["health_check"]["path"], "/");
    assert_eq!(lb["health_check"]["check_interval_seconds"], 10);
    assert_eq!(lb["health_check"]["unhealthy_threshold"], 5);
    assert_eq!(lb["health_check"]["healthy_threshold"], 3);
    h.wait_call(&format!(
        "apply_load_balancer {lb1} {lb_ip} rules=80,443 droplets={},{}",
        multi[0], multi[1]
    ))
    .await;
    let r = h.call("GET", lbl, lbl, None).await;
    assert_eq!(r.body["meta"]["total"], 1);
    assert_eq!(r.body["load_balancers"][0]["id"], lb1.as_str());
    // Refused: droplets by id on a balancer by tag, both at once, checks out of DO's
    // ranges, passthrough on http, TLS termination (no certificates here), UDP, an unknown
    // droplet, and a missing rule list.
    let r = h
        .raw(
            "POST",
            &format!("{lbl}/{lb1}/droplets"),
            Some(&json!({"droplet_ids": [d1]}).to_string()),
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 422, "unprocessable_entity");
    let base = json!({"name": "bad", "region": "nyc3", "forwarding_rules": rules});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b.to_string()
    };
    let http_rule = |extra: Value| {
        let mut r = json!({"entry_protocol": "http", "entry_port": 80,
                           "target_protocol": "http", "target_port": 80});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        json!([r])
    };
    for (what, body) in [
        ("both", {
            let mut b = base.clone();
            b["droplet_ids"] = json!([d1]);
            b["tag"] = json!("multi");
            b.to_string()
        }),
        (
            "interval",
            with("health_check", json!({"check_interval_seconds": 1})),
        ),
        (
            "threshold",
            with("health_check", json!({"unhealthy_threshold": 11})),
        ),
        ("path", with("health_check", json!({"path": "/a b"}))),
        (
            "passthrough on http",
            with(
                "forwarding_rules",
                http_rule(json!({"tls_passthrough": true})),
            ),
        ),
        (
            "termination",
            with(
                "forwarding_rules",
                json!([{"entry_protocol": "https", "entry_port": 443, "target_protocol": "http",
                        "target_port": 80, "certificate_id": "892071a0-bb95-49bc-8021-3afd67a210bf"}]),
            ),
        ),
        (
            "udp",
            with(
                "forwarding_rules",
                json!([{"entry_protocol": "udp", "entry_port": 53, "target_protocol": "udp",
                        "target_port": 53}]),
            ),
        ),
        (
            "port",
            with("forwarding_rules", http_rule(json!({"entry_port": 70000}))),
        ),
        ("droplet", with("droplet_ids", json!([1]))),
        ("no rules", with("forwarding_rules", json!([]))),
        ("firewall", with("firewall", json!({"allow": ["1.2.3.4"]}))),
        ("sticky", with("sticky_sessions", json!({"type": "ip"}))),
    ] {
        let r = h.raw("POST", lbl, Some(&body), Some(TOKEN)).await;
        assert_eq!(r.status, 422, "{what}: {}", r.text);
        assert_error(&r, 422, "unprocessable_entity");
    }
    let r = h
        .raw(
            "GET",
            "/v2/load_balancers/4de7ac8b-495b-4884-9a69-1050c6793cd6",
            None,
            Some(TOKEN),
        )
        .await;
    assert_error(&r, 404, "not_found");
    let r = h.call("GET", lbl, lbl, None).await;
    assert_eq!(
        r.body["meta"]["total"], 1,
        "a refused create left a balancer"
    );

    // Deletes.
    let r = h
        .call("DELETE", fp, &format!("/v2/firewalls/{fw}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call(
            "DELETE",
            "/v2/domains/{domain_name}",
            "/v2/domains/example.com",
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call(
            "DELETE",
            "/v2/droplets",
            "/v2/droplets?tag_name=multi",
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("DELETE", dp, &format!("/v2/droplets/{d1}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(h.hv.calls().contains(&format!("delete {d1}")));
    let r = h.call("GET", dp, &format!("/v2/droplets/{d1}"), None).await;
    assert_error(&r, 404, "not_found");
    // Deleting the droplet detached its volume, which stays.
    let r = h
        .call("GET", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.body["volume"]["droplet_ids"], json!([]));
    let r = h
        .call("DELETE", vp, &format!("/v2/volumes/{vol1}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h.call("GET", "/v2/droplets", "/v2/droplets", None).await;
    assert_eq!(r.body["meta"]["total"], 0);
    let r = h.call("GET", ipp, &format!("{rl}/{ip1}"), None).await;
    assert_eq!(r.body["reserved_ip"]["droplet"], Value::Null, "{}", r.text);
    // The tagged droplets are gone: the balancer is left with none, then deleted.
    let r = h.call("GET", lbp, &format!("{lbl}/{lb1}"), None).await;
    assert_eq!(r.body["load_balancer"]["droplet_ids"], json!([]));
    h.wait_call(&format!(
        "apply_load_balancer {lb1} {lb_ip} rules=80,443 droplets="
    ))
    .await;
    let r = h.call("DELETE", lbp, &format!("{lbl}/{lb1}"), None).await;
    assert_eq!(r.status, 204);
    assert!(h
        .hv
        .calls()
        .contains(&format!("delete_load_balancer {lb1}")));
    let r = h
        .raw("GET", &format!("{lbl}/{lb1}"), None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    for ip in [&ip1, &ip2] {
        let r = h.call("DELETE", ipp, &format!("{rl}/{ip}"), None).await;
        assert_eq!(r.status, 204);
    }
    let r = h.call("GET", rl, rl, None).await;
    assert_eq!(r.body["meta"]["total"], 0);
    let r = h
        .call("DELETE", k, &format!("/v2/account/keys/{RSA_MD5}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h
        .call("DELETE", k, &format!("/v2/account/keys/{ed_id}"), None)
        .await;
    assert_eq!(r.status, 204);

    let ops = h.ops.lock().unwrap().len();
    println!(
        "conformance: checked {ops} operations, {} responses",
        h.responses.load(Ordering::SeqCst)
    );
    assert!(ops >= 88, "only {ops} operations exercised");
    drop(h.api);
}

/// Uptime checks and alerts refuse what DigitalOcean refuses, 404 what is not there, delete a
/// check's alerts with it, and page their lists as every other list.
#[tokio::test]
async fn uptime_checks_validate_page_and_404() {
    let h = start().await;
    let cp = "/v2/uptime/checks/{check_id}";
    let checks = "/v2/uptime/checks";
    let good = json!({"name": "r", "type": "https", "target": "https://r.example.com",
                      "regions": ["us_east"], "enabled": true});
    for (field, value) in [
        ("type", json!("tcp")),
        ("target", json!("http://r.example.com")),
        ("target", json!("not a url")),
        ("regions", json!([])),
        ("regions", json!(["nyc3"])),
        ("name", json!("")),
    ] {
        let mut b = good.clone();
        b[field] = value.clone();
        let r = h.call("POST", checks, checks, Some(b)).await;
        assert_error(&r, 422, "unprocessable_entity");
        assert!(r.text.contains(field), "{field}={value}: {}", r.text);
    }
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("target");
    let r = h.call("POST", checks, checks, Some(b)).await;
    assert_error(&r, 422, "unprocessable_entity");
    let unknown = "5a4981aa-9653-4bd1-bef5-d6bff52042e4";
    for (method, path) in [
        ("GET", format!("/v2/uptime/checks/{unknown}")),
        ("DELETE", format!("/v2/uptime/checks/{unknown}")),
        ("GET", format!("/v2/uptime/checks/{unknown}/alerts")),
    ] {
        let r = h.raw(method, &path, None, Some(TOKEN)).await;
        assert_error(&r, 404, "not_found");
    }
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut b = good.clone();
        b["name"] = json!(format!("r{i}"));
        let r = h.call("POST", checks, checks, Some(b)).await;
        ids.push(r.body["check"]["id"].as_str().unwrap().to_string());
    }
    let r = h
        .call("GET", checks, "/v2/uptime/checks?per_page=2&page=2", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 3);
    assert_eq!(r.body["checks"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["checks"][0]["id"], ids[2].as_str());
    assert!(r.body["links"]["pages"]["prev"].is_string(), "{}", r.text);

    let ap = "/v2/uptime/checks/{check_id}/alerts";
    let alerts = format!("/v2/uptime/checks/{}/alerts", ids[0]);
    let alert = json!({"name": "cert", "type": "ssl_expiry", "threshold": 10, "comparison": "less_than",
        "period": "2m", "notifications": {"email": ["localocean@localhost"], "slack": []}});
    for (field, value, says) in [
        ("type", json!("expiry"), "type"),
        ("period", json!("1m"), "period"),
        ("threshold", json!(null), "threshold"),
        ("comparison", json!("equal"), "comparison"),
        (
            "notifications",
            json!({"email": ["someone@example.com"], "slack": []}),
            "verified",
        ),
        ("notifications", json!({"email": []}), "slack"),
    ] {
        let mut b = alert.clone();
        b[field] = value.clone();
        let r = h.call("POST", ap, &alerts, Some(b)).await;
        assert_error(&r, 422, "unprocessable_entity");
        assert!(r.text.contains(says), "{field}={value}: {}", r.text);
    }
    let mut down = alert.clone();
    down["type"] = json!("down");
    down.as_object_mut().unwrap().remove("threshold");
    let r = h.call("POST", ap, &alerts, Some(down)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = h.call("POST", ap, &alerts, Some(alert.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = h
        .call("GET", ap, &format!("{alerts}?per_page=1"), None)
        .await;
    assert_eq!(r.body["meta"]["total"], 2);
    assert!(r.body["links"]["pages"]["next"].is_string(), "{}", r.text);
    let r = h
        .raw("GET", &format!("{alerts}/{unknown}"), None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    // The check's alerts go with it.
    let r = h
        .call("DELETE", cp, &format!("/v2/uptime/checks/{}", ids[0]), None)
        .await;
    assert_eq!(r.status, 204);
    let r = h.raw("GET", &alerts, None, Some(TOKEN)).await;
    assert_error(&r, 404, "not_found");
}

/// A droplet `snapshot` action makes an image of type `snapshot`: listed as the account's
/// own image, as the droplet's snapshot and among the account's snapshots; droplets are made
/// from it by id (with a disk at least as large, in its region); deleted, it is gone.
#[tokio::test]
async fn droplet_snapshots_are_images_that_droplets_are_made_from() {
    let h = start().await;
    let droplet = h.droplet("bake", &[]).await;
    let actions = format!("/v2/droplets/{droplet}/actions");
    let r = h
        .call(
            "POST",
            "/v2/droplets/{droplet_id}/actions",
            &actions,
            Some(json!({"type": "snapshot", "name": "baked"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["action"]["type"], "snapshot");
    let action = r.body["action"]["id"].as_u64().unwrap();
    assert_eq!(h.wait_action(action).await["status"], "completed");

    let r = h
        .call("GET", "/v2/images", "/v2/images?private=true", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 1, "{}", r.text);
    let image = r.body["images"][0].clone();
    let id = image["id"].as_u64().unwrap();
    assert_eq!(image["type"], "snapshot");
    assert_eq!(image["slug"], Value::Null);
    assert_eq!(image["public"], false);
    assert_eq!(image["name"], "baked");
    assert_eq!(image["min_disk_size"], 25, "the droplet's disk");
    assert!(h
        .hv
        .calls()
        .contains(&format!("snapshot_droplet {droplet} {id}")));
    let ip = "/v2/images/{image_id}";
    let r = h.call("GET", ip, &format!("/v2/images/{id}"), None).await;
    assert_eq!(r.body["image"], image);
    let r = h
        .call("GET", "/v2/images", "/v2/images?type=distribution", None)
        .await;
    assert!(r.body["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["type"] == "base"));
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}",
            &format!("/v2/droplets/{droplet}"),
            None,
        )
        .await;
    assert_eq!(r.body["droplet"]["snapshot_ids"], json!([id]));
    let r = h
        .call(
            "GET",
            "/v2/droplets/{droplet_id}/snapshots",
            &format!("/v2/droplets/{droplet}/snapshots"),
            None,
        )
        .await;
    assert_eq!(r.body["snapshots"][0]["id"], id);
    assert_eq!(r.body["snapshots"][0]["type"], "snapshot");
    let r = h
        .call(
            "GET",
            "/v2/snapshots",
            "/v2/snapshots?resource_type=droplet",
            None,
        )
        .await;
    assert_eq!(r.body["snapshots"][0]["id"], id.to_string());
    assert_eq!(r.body["snapshots"][0]["resource_id"], droplet.to_string());
    let r = h
        .call(
            "GET",
            "/v2/snapshots/{snapshot_id}",
            &format!("/v2/snapshots/{id}"),
            None,
        )
        .await;
    assert_eq!(r.body["snapshot"]["resource_type"], "droplet");

    // Droplets from it: too small a disk, another region, then one that boots from it.
    for (body, why) in [
        (
            json!({"name": "small", "region": "nyc3", "size": "s-1vcpu-512mb-10gb", "image": id}),
            "a disk smaller than the snapshot's",
        ),
        (
            json!({"name": "far", "region": "ams3", "size": "s-1vcpu-1gb", "image": id}),
            "another region",
        ),
    ] {
        let r = h
            .raw("POST", "/v2/droplets", Some(&body.to_string()), Some(TOKEN))
            .await;
        assert_eq!(r.status, 422, "{why}: {}", r.text);
    }
    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(
                json!({"name": "from-baked", "region": "nyc3", "size": "s-1vcpu-1gb", "image": id}),
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["droplet"]["image"]["id"], id);
    let made = r.body["droplet"]["id"].as_u64().unwrap();
    assert_eq!(h.api.app.machine_spec(made).unwrap().image, id.to_string());

    // A public image cannot be deleted; the snapshot can, once.
    let r = h
        .raw("DELETE", "/v2/images/debian-12-x64", None, Some(TOKEN))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = h
        .call("DELETE", ip, &format!("/v2/images/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(h.hv.calls().contains(&format!("delete_image {id}")));
    let r = h
        .raw("GET", &format!("/v2/images/{id}"), None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    let r = h
        .raw("DELETE", &format!("/v2/snapshots/{id}"), None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    drop(h.api);
}

#[tokio::test]
async fn droplet_backups_are_taken_in_their_window_and_go_with_the_droplet() {
    let h = start().await;
    let droplet = h.droplet("kept", &[]).await;
    let da = "/v2/droplets/{droplet_id}/actions";
    let actions = format!("/v2/droplets/{droplet}/actions");
    let r = h
        .call(
            "POST",
            da,
            &actions,
            Some(json!({"type": "enable_backups", "backup_policy": {"plan": "daily", "hour": 8}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let dp = "/v2/droplets/{droplet_id}";
    let dpath = format!("/v2/droplets/{droplet}");
    let r = h.call("GET", dp, &dpath, None).await;
    let start = r.body["droplet"]["next_backup_window"]["start"]
        .as_str()
        .unwrap()
        .to_string();
    let start = time::OffsetDateTime::parse(&start, &time::format_description::well_known::Rfc3339)
        .unwrap();

    // Before the window nothing is taken; inside it, one backup, once.
    assert!(h
        .api
        .app
        .run_backups(start - time::Duration::minutes(1))
        .await
        .is_empty());
    let taken = h
        .api
        .app
        .run_backups(start + time::Duration::minutes(10))
        .await;
    assert_eq!(taken.len(), 1, "one backup in the window");
    let id = taken[0];
    assert!(h
        .hv
        .calls()
        .contains(&format!("snapshot_droplet {droplet} {id}")));
    assert!(h
        .api
        .app
        .run_backups(start + time::Duration::minutes(20))
        .await
        .is_empty());

    let bl = "/v2/droplets/{droplet_id}/backups";
    let blist = format!("/v2/droplets/{droplet}/backups");
    let r = h.call("GET", bl, &blist, None).await;
    assert_eq!(r.body["meta"]["total"], 1, "{}", r.text);
    let backup = r.body["backups"][0].clone();
    assert_eq!(backup["id"], id);
    assert_eq!(backup["type"], "backup");
    assert_eq!(backup["min_disk_size"], 25);
    assert_eq!(backup["regions"], json!(["nyc3"]));
    let r = h.call("GET", dp, &dpath, None).await;
    assert_eq!(r.body["droplet"]["backup_ids"], json!([id]));
    assert_eq!(r.body["droplet"]["snapshot_ids"], json!([]));
    let ip = "/v2/images/{image_id}";
    let r = h.call("GET", ip, &format!("/v2/images/{id}"), None).await;
    assert_eq!(r.body["image"]["type"], "backup");
    for query in [
        "/v2/images?type=backup",
        "/v2/images?private=true",
        "/v2/images",
    ] {
        let r = h.call("GET", "/v2/images", query, None).await;
        assert!(
            r.body["images"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["id"] == id),
            "{query} lacks the backup"
        );
    }
    let r = h
        .call("GET", "/v2/images", "/v2/images?type=snapshot", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 0, "a backup is no snapshot");

    // A droplet is made from the backup as from a snapshot.
    let r = h
        .call(
            "POST",
            "/v2/droplets",
            "/v2/droplets",
            Some(json!({"name": "restored", "region": "nyc3", "size": "s-1vcpu-1gb", "image": id})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["droplet"]["image"]["type"], "backup");
    let made = r.body["droplet"]["id"].as_u64().unwrap();
    assert_eq!(h.api.app.machine_spec(made).unwrap().image, id.to_string());

    // Backups are not deleted by hand; disabling backups keeps them (until retention).
    let r = h
        .raw("DELETE", &format!("/v2/images/{id}"), None, Some(TOKEN))
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = h
        .call(
            "POST",
            da,
            &actions,
            Some(json!({"type": "disable_backups"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = h.call("GET", bl, &blist, None).await;
    assert_eq!(r.body["meta"]["total"], 1, "{}", r.text);

    // The droplet deleted: its backups go with it.
    let r = h.call("DELETE", dp, &dpath, None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(h.hv.calls().contains(&format!("delete_image {id}")));
    let r = h
        .raw("GET", &format!("/v2/images/{id}"), None, Some(TOKEN))
        .await;
    assert_error(&r, 404, "not_found");
    let r = h
        .call("GET", "/v2/images", "/v2/images?type=backup", None)
        .await;
    assert_eq!(r.body["meta"]["total"], 0);
    drop(h.api);
}
