//! Protocol tests: the provider binary driven over tfplugin6 gRPC, without OpenTofu.

use std::collections::BTreeMap;

use crate::support::tfplugin::{self, proto};
use serde_json::json;
use terraform_provider_docker::config;

const BIN: &str = env!("CARGO_BIN_EXE_terraform-provider-docker");

fn provider_config(overrides: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "token": null, "api_endpoint": null, "spaces_access_id": null,
        "spaces_secret_key": null, "spaces_endpoint": null, "http_retry_max": null,
        "requests_per_second": null, "acme_directory_url": null, "acme_ca_certificates": null,
        "acme_dns_servers": null,
    });
    for (k, v) in overrides.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// (summary, attribute path rendered as dotted names) of each error diagnostic.
fn errors(diags: &[proto::Diagnostic]) -> Vec<(String, String)> {
    diags
        .iter()
        .filter(|d| d.severity == proto::diagnostic::Severity::Error as i32)
        .map(|d| {
            let path = d
                .attribute
                .as_ref()
                .map(|p| {
                    p.steps
                        .iter()
                        .filter_map(|s| match &s.selector {
                            Some(proto::attribute_path::step::Selector::AttributeName(n)) => {
                                Some(n.clone())
                            }
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .unwrap_or_default();
            (d.summary.clone(), path)
        })
        .collect()
}

#[tokio::test]
async fn handshake_line_is_parsed() {
    let hs = tfplugin::parse_handshake("1|6|tcp|127.0.0.1:1234|grpc|AAEC\n").unwrap();
    assert_eq!(hs.address, "127.0.0.1:1234");
    assert_eq!(hs.server_cert_der, vec![0, 1, 2]);
    assert!(tfplugin::parse_handshake("1|6|tcp").is_err());
}

#[tokio::test]
async fn served_provider_schema_matches_the_code() {
    let mut p = tfplugin::start(BIN, &[]).await;
    let resp = p
        .client
        .get_provider_schema(proto::get_provider_schema::Request {})
        .await
        .expect("GetProviderSchema")
        .into_inner();
    assert!(
        errors(&resp.diagnostics).is_empty(),
        "{:?}",
        resp.diagnostics
    );
    let served = resp
        .provider
        .expect("provider schema")
        .block
        .expect("block");
    let declared = config::schema_block();
    let served_attrs: BTreeMap<_, _> = served
        .attributes
        .iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    assert_eq!(
        served_attrs.keys().cloned().collect::<Vec<_>>(),
        {
            let mut k: Vec<_> = declared.attributes.keys().cloned().collect();
            k.sort();
            k
        },
        "attribute names"
    );
    for (name, attr) in &declared.attributes {
        let s = served_attrs[name];
        assert_eq!(s.sensitive, attr.sensitive, "{name}: sensitive");
        assert!(s.optional && !s.required, "{name}: optional");
        assert_eq!(
            String::from_utf8_lossy(&s.r#type),
            attr.attr_type.to_string(),
            "{name}: type"
        );
        assert!(!s.description.is_empty(), "{name}: description");
    }
    for secret in ["token", "spaces_access_id", "spaces_secret_key"] {
        assert!(served_attrs[secret].sensitive, "{secret} must be sensitive");
    }
    // Every resource the code declares is served, with the `docker_` prefix.
    let declared_resources: Vec<String> = terraform_provider_docker::resources(&Default::default())
        .keys()
        .map(|k| format!("docker_{k}"))
        .collect();
    for r in declared_resources {
        assert!(
            resp.resource_schemas.contains_key(&r),
            "resource {r} not served"
        );
    }
    // docker_registry: every attribute and block the code declares, with its flags.
    let declared = terraform_provider_docker::resource::schema::schema().block;
    let served = resp.resource_schemas["docker_registry"]
        .block
        .clone()
        .unwrap();
    let served_attrs: BTreeMap<_, _> = served
        .attributes
        .iter()
        .map(|a| (a.name.clone(), a))
        .collect();
    let mut names: Vec<_> = declared.attributes.keys().cloned().collect();
    names.sort();
    assert_eq!(served_attrs.keys().cloned().collect::<Vec<_>>(), names);
    for (name, attr) in &declared.attributes {
        let s = served_attrs[name];
        assert_eq!(s.sensitive, attr.sensitive, "{name}: sensitive");
        assert!(!s.description.is_empty(), "{name}: description");
        // Nested attributes travel as nested_type only (see vendor/tf-provider/PATCHED.md).
        assert_eq!(
            s.nested_type.is_some(),
            s.r#type.is_empty(),
            "{name}: type xor nested_type"
        );
    }
    let mut blocks: Vec<_> = served
        .block_types
        .iter()
        .map(|b| b.type_name.clone())
        .collect();
    blocks.sort();
    assert_eq!(
        blocks,
        vec![
            "backups",
            "garbage_collection",
            "monitoring",
            "storage",
            "timeouts",
            "tls"
        ]
    );
    for secret in [
        "management_private_key",
        "host_private_key",
        "tls_private_key_pem",
        "docker_config_json",
        "acme_account_key",
        "spaces_secret_key",
        "http_secret",
    ] {
        assert!(served_attrs[secret].sensitive, "{secret} must be sensitive");
    }
}

#[tokio::test]
async fn bad_provider_config_names_the_attribute() {
    let mut p = tfplugin::start(BIN, &[]).await;
    let cases = [
        (json!({"api_endpoint": "not a url"}), "api_endpoint"),
        (json!({"api_endpoint": "ftp://example.com"}), "api_endpoint"),
        (json!({"http_retry_max": -1}), "http_retry_max"),
        (json!({"requests_per_second": -5}), "requests_per_second"),
        (
            json!({"acme_ca_certificates": "not pem"}),
            "acme_ca_certificates",
        ),
        (json!({"acme_directory_url": "::"}), "acme_directory_url"),
        (
            json!({"acme_dns_servers": ["not-an-ip:53"]}),
            "acme_dns_servers",
        ),
    ];
    for (cfg, attr) in cases {
        let resp = p
            .client
            .validate_provider_config(proto::validate_provider_config::Request {
                config: Some(tfplugin::dynamic_value(&provider_config(cfg.clone()))),
            })
            .await
            .expect("ValidateProviderConfig")
            .into_inner();
        let errs = errors(&resp.diagnostics);
        assert_eq!(errs.len(), 1, "{cfg}: {errs:?}");
        assert_eq!(errs[0].1, attr, "{cfg}: {errs:?}");
    }
    // A good config passes.
    let resp = p
        .client
        .validate_provider_config(proto::validate_provider_config::Request {
            config: Some(tfplugin::dynamic_value(&provider_config(json!({
                "api_endpoint": "http://127.0.0.1:8080", "http_retry_max": 2,
                "spaces_endpoint": "https://{region}.digitaloceanspaces.com"
            })))),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        errors(&resp.diagnostics).is_empty(),
        "{:?}",
        resp.diagnostics
    );
}

#[tokio::test]
async fn configure_without_token_says_which_env_vars_are_read() {
    let mut p = tfplugin::start(BIN, &[]).await;
    // The child inherits our env; the test runner must not have a token set for this check.
    if std::env::var_os("DIGITALOCEAN_TOKEN").is_some()
        || std::env::var_os("DIGITALOCEAN_ACCESS_TOKEN").is_some()
    {
        panic!("unset DIGITALOCEAN_TOKEN / DIGITALOCEAN_ACCESS_TOKEN to run the protocol tests");
    }
    let resp = p
        .client
        .configure_provider(proto::configure_provider::Request {
            terraform_version: "1.6.2".into(),
            config: Some(tfplugin::dynamic_value(&provider_config(json!({})))),
        })
        .await
        .unwrap()
        .into_inner();
    let errs = errors(&resp.diagnostics);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].1, "token");
    let detail = &resp.diagnostics[0].detail;
    assert!(
        detail.contains("DIGITALOCEAN_TOKEN") && detail.contains("DIGITALOCEAN_ACCESS_TOKEN"),
        "{detail}"
    );
}

#[tokio::test]
async fn validate_resource_config_names_the_bad_attribute() {
    let mut p = tfplugin::start(BIN, &[]).await;
    let schema = p
        .client
        .get_provider_schema(proto::get_provider_schema::Request {})
        .await
        .unwrap()
        .into_inner();
    let block = schema.resource_schemas["docker_registry"]
        .block
        .clone()
        .unwrap();
    // Every attribute null, every block empty, then the values under test.
    let mut config = serde_json::Map::new();
    for a in &block.attributes {
        config.insert(a.name.clone(), serde_json::Value::Null);
    }
    for b in &block.block_types {
        config.insert(b.type_name.clone(), json!([]));
    }
    config.insert("name".into(), json!("Bad_Name"));
    config.insert("region".into(), json!("nyc3"));
    config.insert("fqdn".into(), json!("registry.example.com"));
    config.insert(
        "users".into(),
        json!({ "admin": { "password": "short", "password_bcrypt": null, "access": "push" } }),
    );
    let resp = p
        .client
        .validate_resource_config(proto::validate_resource_config::Request {
            type_name: "docker_registry".into(),
            config: Some(tfplugin::dynamic_value(&serde_json::Value::Object(config))),
        })
        .await
        .expect("ValidateResourceConfig")
        .into_inner();
    let errs = errors(&resp.diagnostics);
    let summaries: Vec<&str> = errs.iter().map(|(s, _)| s.as_str()).collect();
    assert!(summaries.contains(&"Invalid `name`"), "{errs:?}");
    assert!(summaries.contains(&"Password too short"), "{errs:?}");
    assert!(errs.iter().any(|(_, p)| p == "name"), "{errs:?}");
}
