//! Defaults that come back: every defaulted argument set to another value, then removed from
//! the configuration, is planned at its default (issue #11, item 0), with OpenTofu's own
//! proposal for a removed optional-computed argument (its prior value) as the input.

use serde_json::{json, Value as Json};
use tf_provider::schema::{AttributeConstraint, Block, NestedBlock};

use super::*;
use crate::resource::plan::{self, DEFAULTED};
use crate::resource::schema::schema;

/// What OpenTofu proposes for a change (its `objchange.ProposedNew`): the configuration, and
/// the prior value of each computed attribute the configuration leaves null, per the schema.
fn proposed_new(prior: &RegistryState, config: &RegistryState) -> RegistryState {
    fn block(schema: &Block, prior: &Json, config: &Json) -> Json {
        let mut out = config.clone();
        for (name, a) in &schema.attributes {
            let computed = matches!(
                a.constraint,
                AttributeConstraint::Computed | AttributeConstraint::OptionalComputed
            );
            if computed && config[name].is_null() {
                out[name] = prior[name].clone();
            }
        }
        for (name, nb) in &schema.blocks {
            let (NestedBlock::List(b) | NestedBlock::Optional(b)) = nb else {
                panic!("block {name}: a nesting this test does not know");
            };
            if let Some(items) = config[name].as_array() {
                out[name] = Json::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, c)| block(b, &prior[name][i], c))
                        .collect(),
                );
            }
        }
        out
    }
    let s = schema();
    let p = serde_json::to_value(prior).unwrap();
    let c = serde_json::to_value(config).unwrap();
    serde_json::from_value(block(&s.block, &p, &c)).unwrap()
}

/// The optional-computed arguments of the schema, spelled `size`, `tls.source`, ...
fn optional_computed_in_schema() -> Vec<String> {
    fn walk(prefix: &str, b: &Block, out: &mut Vec<String>) {
        for (name, a) in &b.attributes {
            if matches!(a.constraint, AttributeConstraint::OptionalComputed) {
                out.push(format!("{prefix}{name}"));
            }
        }
        for (name, nb) in &b.blocks {
            if let NestedBlock::List(inner) | NestedBlock::Optional(inner) = nb {
                walk(&format!("{name}."), inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk("", &schema().block, &mut out);
    out.sort();
    out
}

/// (argument, a value other than the default, the default), for every defaulted argument.
fn cases() -> Vec<(&'static str, Json, Json)> {
    vec![
        ("size", json!("s-2vcpu-2gb"), json!("s-1vcpu-1gb")),
        (
            "image",
            json!("debian-12-x64-custom"),
            json!("debian-12-x64"),
        ),
        (
            "ssh_allowed_cidrs",
            json!(["198.51.100.0/24"]),
            json!(["0.0.0.0/0", "::/0"]),
        ),
        ("anonymous_pull", json!(true), json!(false)),
        ("ui", json!(true), json!(false)),
        ("reserved_ip", json!(true), json!(false)),
        ("tls.source", json!("self_signed"), json!("acme")),
        ("tls.challenge", json!("http-01"), json!("dns-01")),
        ("tls.key_type", json!("rsa-2048"), json!("ecdsa-p256")),
        ("tls.renew_before_days", json!(10), json!(30)),
        ("tls.revoke_on_destroy", json!(true), json!(false)),
        ("tls.caa", json!(true), json!(false)),
        ("tls.renew", json!("plan"), json!("droplet")),
        ("tls.renew_interval", json!("1h"), json!("12h")),
        ("storage.backend", json!("volume"), json!("droplet")),
        ("storage.force_destroy", json!(true), json!(false)),
        ("storage.spaces_redirect", json!(true), json!(false)),
    ]
}

fn pointer(path: &str) -> String {
    match path.split_once('.') {
        Some((block, attr)) => format!("/{block}/0/{attr}"),
        None => format!("/{path}"),
    }
}

fn get(st: &RegistryState, path: &str) -> Json {
    serde_json::to_value(st)
        .unwrap()
        .pointer(&pointer(path))
        .cloned()
        .unwrap_or(Json::Null)
}

fn with(st: &RegistryState, path: &str, v: Json) -> RegistryState {
    let mut j = serde_json::to_value(st).unwrap();
    *j.pointer_mut(&pointer(path))
        .unwrap_or_else(|| panic!("{path} not in state")) = v;
    serde_json::from_value(j).unwrap()
}

#[test]
fn the_defaulted_arguments_are_the_schemas_optional_computed_ones() {
    let mut listed: Vec<String> = DEFAULTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    // `http_secret` is optional-computed with no fixed default: a generated value that is
    // kept, planned by `plan::plan_http_secret` (tested in `tests/seed.rs`).
    let mut in_schema = optional_computed_in_schema();
    in_schema.retain(|n| n != "http_secret");
    assert_eq!(listed, in_schema);
    let mut tested: Vec<String> = cases().iter().map(|c| c.0.to_owned()).collect();
    // Its own test below: 2 or more exclude `reserved_ip` and need Spaces, which the cases
    // here set away from their defaults.
    tested.push("replicas".to_owned());
    tested.sort();
    assert_eq!(tested, listed, "a defaulted argument has no case here");
}

#[test]
fn replicas_removed_from_the_configuration_is_planned_at_one_and_several_renew_by_plan() {
    let tls = |renew: Value<String>| {
        Value::Value(crate::resource::state::TlsState {
            renew,
            ..Default::default()
        })
    };
    // Removed: OpenTofu proposes the prior 3; the plan says 1 (and the droplet renews).
    let mut st = RegistryState {
        replicas: Value::Value(3),
        tls: tls(Value::Value("plan".into())),
        ..Default::default()
    };
    let config = RegistryState {
        tls: tls(Value::Null),
        ..Default::default()
    };
    plan::unset_what_config_leaves_unset(&mut st, &config);
    plan::apply_defaults(&mut st);
    assert_eq!(st.replicas, Value::Value(1));
    assert_eq!(get(&st, "tls.renew"), json!("droplet"));
    // Several droplets cannot each renew alone: unset, the plan renews.
    let mut st = RegistryState {
        replicas: Value::Value(2),
        tls: tls(Value::Null),
        ..Default::default()
    };
    plan::apply_defaults(&mut st);
    assert_eq!(get(&st, "tls.renew"), json!("plan"));
}

#[tokio::test]
async fn every_defaulted_argument_removed_from_the_configuration_is_planned_at_its_default() {
    let w = World::start().await;
    // A registry with every defaulted argument away from its default (the prior state: as
    // apply left it, whatever the test machines made of the values).
    let mut config_all = with_volume(config("reg"), 5, true);
    for (path, other, _) in cases() {
        config_all = with(&config_all, path, other);
    }
    let mut prior = w.created(with_volume(config("reg"), 5, true)).await;
    for (path, other, _) in cases() {
        prior = with(&prior, path, other);
    }
    // As apply leaves `reserved_ip = true` and `self_signed`: an address, named by the
    // certificate (else the plan issues a new one, see `self_signed_addresses_changed`).
    let reserved = "198.19.255.200";
    prior.reserved_ip_address = Value::Value(reserved.to_owned());
    let ips = [
        reserved.parse().unwrap(),
        text(&prior.ipv4_address).parse().unwrap(),
    ];
    prior.certificate_pem = Value::Value(
        crate::tls::self_signed(text(&prior.fqdn), &ips, None)
            .unwrap()
            .cert_chain_pem,
    );
    let (planned, d) = w.plan_update(&prior, |_| {}).await;
    assert!(d.errors.is_empty(), "{d:?}");
    let (planned, _) = planned.unwrap();
    for (path, other, _) in cases() {
        assert_eq!(get(&planned, path), other, "{path}: kept while configured");
    }

    for (path, other, default) in cases() {
        // The configuration without `path`; OpenTofu proposes the prior value for it.
        let mut config = with(&config_all, path, Json::Null);
        if path == "storage.backend" {
            // A size is only for a volume.
            config = with(&config, "storage.size_gib", Json::Null);
        }
        let proposed = proposed_new(&prior, &config);
        assert_eq!(get(&proposed, path), other, "{path}: OpenTofu's proposal");
        let mut d = Diagnostics::default();
        let (planned, _, replace) =
            plan::plan_update(&mut d, &prior, &Value::Null, proposed, &config)
                .unwrap_or_else(|| panic!("{path}: plan failed: {d:?}"));
        assert!(d.errors.is_empty(), "{path}: {d:?}");
        assert_eq!(
            get(&planned, path),
            default,
            "{path}: not back to its default"
        );
        // Nothing else moves.
        for (other_path, other_value, _) in cases() {
            if other_path != path {
                assert_eq!(
                    get(&planned, other_path),
                    other_value,
                    "{path} moved {other_path}"
                );
            }
        }
        match path {
            "storage.backend" => assert_eq!(paths_of_replace(&replace), ["storage[0].backend"]),
            _ => assert!(replace.is_empty(), "{path}: replaces {replace:?}"),
        }
        // Who renews, and how often the droplet looks, need no new certificate.
        if matches!(path, "tls.renew" | "tls.renew_interval") {
            assert!(
                !planned.certificate_pem.is_unknown(),
                "{path}: certificate replaced"
            );
        } else if path.starts_with("tls.") {
            assert!(
                planned.certificate_pem.is_unknown(),
                "{path}: certificate kept"
            );
        }
    }
}

fn paths_of_replace(replace: &[AttributePath]) -> Vec<String> {
    replace.iter().map(|p| p.to_string()).collect()
}

#[tokio::test]
async fn removed_blocks_and_user_access_return_to_their_defaults_too() {
    let w = World::start().await;
    let mut config_all = config("reg");
    config_all.timeouts = Value::Value(TimeoutsState {
        create: s("30m"),
        update: s("30m"),
        delete: s("15m"),
    });
    let prior = w.created(config_all.clone()).await;
    assert_eq!(text(&by_user(&prior.user_access, "reader")), "pull");

    // `reader` loses `access = "pull"`; the timeouts block goes.
    let mut config = config_all.clone();
    config.timeouts = Value::Null;
    if let Value::Value(users) = &mut config.users {
        if let Value::Value(u) = users.get_mut("reader").unwrap() {
            u.access = Value::Null;
        }
    }
    let proposed = proposed_new(&prior, &config);
    let mut d = Diagnostics::default();
    let (planned, _, _) =
        plan::plan_update(&mut d, &prior, &Value::Null, proposed, &config).unwrap();
    assert_eq!(text(&by_user(&planned.user_access, "reader")), "push");
    assert!(planned.timeouts.is_null());
    let m = super::super::model::Model::of(&planned);
    assert_eq!(
        m.timeouts.create,
        super::super::model::DEFAULT_CREATE_TIMEOUT
    );
    // The hash stays: only the access changed.
    assert_eq!(
        by_user(&planned.bcrypt_hashes, "reader"),
        by_user(&prior.bcrypt_hashes, "reader")
    );

    // The `tls` block goes: the plan is an ACME certificate, the documented default.
    let mut config = config_all.clone();
    config.tls = Value::Null;
    let proposed = proposed_new(&prior, &config);
    let mut d = Diagnostics::default();
    let (planned, _, _) =
        plan::plan_update(&mut d, &prior, &Value::Null, proposed, &config).unwrap();
    let m = super::super::model::Model::of(&planned);
    assert_eq!(m.tls.source, super::super::model::TlsSource::Acme);
    assert!(planned.certificate_pem.is_unknown());
}

#[tokio::test]
async fn removing_anonymous_pull_cidrs_and_access_takes_effect_on_the_registry() {
    let w = World::start().await;
    let mut config_all = config("reg");
    config_all.anonymous_pull = Value::Value(true);
    config_all.ssh_allowed_cidrs = Value::Value(vec![s("198.51.100.0/24")]);
    // The test machine's token endpoint answers as the site would: a token without
    // credentials while anyone may pull (`/v2/` answers 401 either way).
    let machine = w.machines.machine(FIRST_IP);
    machine.set_token_status(200);
    let prior = w.created(config_all.clone()).await;
    let site = || std::fs::read_to_string(machine.path(paths::NGINX_SITE)).unwrap();
    let anonymous_site = site();
    let mut config = config_all.clone();
    config.anonymous_pull = Value::Null;
    config.ssh_allowed_cidrs = Value::Null;
    if let Value::Value(users) = &mut config.users {
        if let Value::Value(u) = users.get_mut("reader").unwrap() {
            u.access = Value::Null;
        }
    }
    let proposed = proposed_new(&prior, &config);
    let mut d = Diagnostics::default();
    let (planned, _, replace) =
        plan::plan_update(&mut d, &prior, &Value::Null, proposed, &config).unwrap();
    assert!(replace.is_empty());
    machine.set_token_status(401);
    let mut d = Diagnostics::default();
    let (st, _) = w
        .resource
        .update(
            &mut d,
            prior.clone(),
            planned.clone(),
            config,
            Value::Null,
            no_meta(),
        )
        .await
        .expect("update returns a state");
    assert!(d.errors.is_empty(), "{d:?}");
    assert_eq!(st.anonymous_pull, Value::Value(false));
    assert_ne!(site(), anonymous_site, "the site still lets anyone pull");
    assert!(!w.outside.checks().last().unwrap().anonymous_pull);
    let fw = w.firewall(text(&st.firewall_id)).await.unwrap();
    let mut cidrs = ssh_cidrs(&fw);
    cidrs.sort();
    assert_eq!(cidrs, ["0.0.0.0/0", "::/0"]);
    let push = std::fs::read_to_string(machine.path(paths::HTPASSWD_PUSH)).unwrap();
    assert!(push.contains("reader:"), "reader may not push: {push}");
}

#[tokio::test]
async fn an_acme_switch_plans_its_account_and_a_caa_record_exists_only_while_asked_for() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    assert!(prior.acme_account_key.is_null());
    let set_tls = |st: &mut RegistryState, source: Option<&str>, caa: Option<bool>| {
        if let Value::Value(t) = &mut st.tls {
            t.source = source.map(str::to_owned).into();
            t.caa = caa.into();
        }
    };
    // self_signed -> acme: the account is made by this apply.
    let mut config = prior.clone();
    set_tls(&mut config, None, None);
    let proposed = proposed_new(&prior, &config);
    let mut d = Diagnostics::default();
    let (planned, _, _) =
        plan::plan_update(&mut d, &prior, &Value::Null, proposed, &config).unwrap();
    assert!(planned.acme_account_key.is_unknown());
    assert!(planned.caa_record_id.is_null());
    // ... with `caa = true`: the record too.
    set_tls(&mut config, None, Some(true));
    let proposed = proposed_new(&prior, &config);
    let (planned, _, _) =
        plan::plan_update(&mut d, &prior, &Value::Null, proposed, &config).unwrap();
    assert!(planned.caa_record_id.is_unknown());

    // A CAA record in state that is no longer asked for is planned away and deleted.
    let rec = w
        .client()
        .create_record(
            DOMAIN,
            &do_api::DomainRecordRequest {
                kind: "CAA".into(),
                name: "registry".into(),
                data: "0 issue \"letsencrypt.org\"".into(),
                priority: None,
                port: None,
                ttl: Some(1800),
                weight: None,
                flags: Some(0),
                tag: Some("issue".into()),
            },
        )
        .await
        .unwrap();
    let mut with_caa = prior.clone();
    with_caa.caa_record_id = Value::Value(rec.id as i64);
    set_tls(&mut with_caa, Some("self_signed"), Some(true));
    let mut config = with_caa.clone();
    set_tls(&mut config, Some("self_signed"), None);
    let proposed = proposed_new(&with_caa, &config);
    let (planned, _, _) =
        plan::plan_update(&mut d, &with_caa, &Value::Null, proposed, &config).unwrap();
    assert!(
        planned.caa_record_id.is_null(),
        "{:?}",
        planned.caa_record_id
    );
    assert!(d.errors.is_empty(), "{d:?}");
    let mut d = Diagnostics::default();
    let (st, _) = w
        .resource
        .update(
            &mut d,
            with_caa.clone(),
            planned,
            config,
            Value::Null,
            no_meta(),
        )
        .await
        .unwrap();
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(st.caa_record_id.is_null());
    assert!(
        w.client()
            .get_record(DOMAIN, rec.id)
            .await
            .unwrap()
            .is_none(),
        "the CAA record is still there"
    );
}
