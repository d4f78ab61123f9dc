//! The web page (`ui = true`) in a real browser: headless Chromium against one registry made by
//! `tofu apply`, images pushed by skopeo; sign-in, tags and digests, copy, delete, anonymous
//! browsing, and the page gone again with `ui = false`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use terraform_provider_docker::render::ui as page;

use super::PROVIDER_BLOCK;
use crate::support::browser::Browser;
use crate::support::docker::token_for;
use crate::support::localocean::{unique_label, LocalOcean, Ocean};
use crate::support::registry_client::{text, Skopeo};
use crate::support::tofu::Tofu;

const ADMIN_PW: &str = "admin-password-0001";
const READER_PW: &str = "reader-password-0002";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn main_tf(lo: &LocalOcean, name: &str, fqdn: &str, anonymous_pull: bool, ui: bool) -> String {
    format!(
        r#"{PROVIDER_BLOCK}
provider "docker" {{
  token        = "{token}"
  api_endpoint = "{api}"
}}

resource "docker_registry" "r" {{
  name   = "{name}"
  region = "nyc3"
  fqdn   = "{fqdn}"
  users  = {{
    admin  = {{ password = "{ADMIN_PW}" }}
    reader = {{ password = "{READER_PW}", access = "pull" }}
  }}
  tls {{
    source = "self_signed"
  }}
  anonymous_pull = {anonymous_pull}
  ui             = {ui}
}}
"#,
        token = lo.token,
        api = lo.api_url,
    )
}

fn apply(tf: &Tofu, lo: &LocalOcean, what: &str) {
    let started = Instant::now();
    let (ok, out) = tf.run_text(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(
        ok,
        "tofu apply ({what}) failed:\n{out}\n--- localocean log tail:\n{}",
        lo.log_tail()
    );
    eprintln!(
        "{what}: applied in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = sha(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
    d
}

/// A gzip layer of `size` random bytes, and the digest of its tar (the config's diff id).
fn layer(work: &Path, size: usize) -> (Vec<u8>, String) {
    use rand::RngCore;
    let src = work.join("rootfs");
    std::fs::create_dir_all(&src).unwrap();
    let mut data = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut data);
    std::fs::write(src.join("payload.bin"), &data).unwrap();
    let tar = work.join("layer.tar");
    let st = Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("payload.bin")
        .status()
        .unwrap();
    assert!(st.success());
    let diff_id = sha(&std::fs::read(&tar).unwrap());
    let gz = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(gz.status.success());
    std::fs::remove_dir_all(&src).unwrap();
    std::fs::remove_file(&tar).unwrap();
    (gz.stdout, diff_id)
}

/// One platform's image as pushed: what the page must show for it.
struct Built {
    platform: String,
    /// Config plus layer, as stored: the size the page adds up.
    size: u64,
}

/// An OCI layout at `dir` whose index.json names `tag`: one image per platform (`os/arch` or
/// `os/arch/variant`), under an image index when there are several.
fn oci_layout(dir: &Path, tag: &str, platforms: &[&str], created: &str, size: usize) -> Vec<Built> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut built = Vec::new();
    let mut descriptors = Vec::new();
    for p in platforms {
        let parts: Vec<&str> = p.split('/').collect();
        let (gz, diff_id) = layer(dir, size);
        let layer_digest = put_blob(dir, &gz);
        let mut config = json!({
            "architecture": parts[1], "os": parts[0], "created": created,
            "rootfs": { "type": "layers", "diff_ids": [diff_id] }, "config": {}
        });
        if let Some(v) = parts.get(2) {
            config["variant"] = json!(v);
        }
        let config = config.to_string();
        let config_digest = put_blob(dir, config.as_bytes());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": gz.len() }]
        })
        .to_string();
        let manifest_digest = put_blob(dir, manifest.as_bytes());
        let mut platform = json!({ "os": parts[0], "architecture": parts[1] });
        if let Some(v) = parts.get(2) {
            platform["variant"] = json!(v);
        }
        descriptors.push(json!({
            "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(), "platform": platform
        }));
        built.push(Built {
            platform: p.to_string(),
            size: (config.len() + gz.len()) as u64,
        });
    }
    let top = if descriptors.len() == 1 {
        descriptors.pop().unwrap()
    } else {
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors })
            .to_string();
        json!({ "mediaType": OCI_INDEX, "digest": put_blob(dir, index.as_bytes()), "size": index.len() })
    };
    let mut top = top;
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    std::fs::write(
        dir.join("index.json"),
        json!({ "schemaVersion": 2, "manifests": [top] }).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    built
}

/// skopeo copies every platform of `layout:tag` to `dest` as admin; the pushed digest.
fn push(skopeo: &Skopeo, layout: &Path, tag: &str, dest: &str) -> String {
    let digestfile = layout.with_extension("digest");
    let out = skopeo.run(&[
        "copy",
        "--all",
        "--retry-times=0",
        &format!("--dest-cert-dir={}", skopeo.cert_dir.display()),
        &format!("--digestfile={}", digestfile.display()),
        &format!("--dest-creds=admin:{ADMIN_PW}"),
        &format!("oci:{}:{tag}", layout.display()),
        &format!("docker://{dest}"),
    ]);
    assert!(
        out.status.success(),
        "skopeo copy to {dest}: {}",
        text(&out)
    );
    std::fs::read_to_string(digestfile)
        .unwrap()
        .trim()
        .to_owned()
}

/// The page's size format (ui/src/format.ts): binary units, one decimal below ten.
fn human(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = "B";
    for u in ["KiB", "MiB", "GiB", "TiB"] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v < 10.0 {
        format!("{v:.1} {unit}")
    } else {
        format!("{} {unit}", v.round())
    }
}

fn header_values(resp: &reqwest::blocking::Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The screenshots land in the test's target dir; with UPDATE_DOCS=1 also in docs/ (the
/// README's picture), like the generated reference.
fn screenshot(b: &mut Browser, page_name: &str, file: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    b.call(
        "screenshot",
        json!({"page": page_name, "path": path.display().to_string()}),
    );
    if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
        std::fs::copy(
            &path,
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs")
                .join(file),
        )
        .unwrap();
    }
    path
}

#[test]
fn web_page_in_a_real_browser() {
    let started = Instant::now();
    let lo = Ocean::shared();
    let name = unique_label();
    let domain = format!("{name}.test");
    lo.create_domain(&domain);
    let fqdn = format!("registry.{domain}");
    let tf = Tofu::new("").with_image(lo.baked_image());
    tf.write("main.tf", &main_tf(&lo, &name, &fqdn, false, true));
    apply(&tf, &lo, "create with ui = true");
    let v = tf.resource_values();
    let ip = v["ipv4_address"].as_str().unwrap().to_owned();
    let ca = v["ca_certificate_pem"].as_str().unwrap().to_owned();
    let url = format!("https://{fqdn}/");
    let http = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .resolve(&fqdn, format!("{ip}:443").parse().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // nginx serves the provider's bundle, with the policy, at / and nowhere else.
    for f in page::FILES {
        let resp = http
            .get(format!("https://{fqdn}{}", f.location))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{}", f.location);
        assert_eq!(header_values(&resp, "content-type"), [f.content_type]);
        assert_eq!(
            header_values(&resp, "content-security-policy"),
            [page::CONTENT_SECURITY_POLICY]
        );
        assert_eq!(header_values(&resp, "x-content-type-options"), ["nosniff"]);
        assert_eq!(header_values(&resp, "cache-control"), ["no-cache"]);
        assert_eq!(header_values(&resp, "referrer-policy"), ["no-referrer"]);
        assert_eq!(header_values(&resp, "strict-transport-security").len(), 1);
        assert_eq!(resp.text().unwrap(), f.contents, "{}", f.location);
    }
    let v2 = http.get(format!("https://{fqdn}/v2/")).send().unwrap();
    assert_eq!(v2.status().as_u16(), 401);
    // The registry sets nosniff itself; nginx must not add a second one.
    assert_eq!(header_values(&v2, "x-content-type-options"), ["nosniff"]);
    let other = http
        .get(format!("https://{fqdn}/index.html"))
        .send()
        .unwrap();
    assert_eq!(other.status().as_u16(), 404);

    // Images: one tag alone, two tags on one image, a two-platform index.
    let work = tempfile::tempdir().unwrap();
    let skopeo = Skopeo::new(lo.bridge_ip(), Some(&ca));
    let pushing = Instant::now();
    let old = oci_layout(
        &work.path().join("old"),
        "1.0.0",
        &["linux/amd64"],
        "2026-01-10T09:30:00Z",
        40 * 1024,
    );
    let old_digest = push(
        &skopeo,
        &work.path().join("old"),
        "1.0.0",
        &format!("{fqdn}/team/api:1.0.0"),
    );
    let new = oci_layout(
        &work.path().join("new"),
        "1.1.0",
        &["linux/amd64"],
        "2026-02-14T16:45:00Z",
        60 * 1024,
    );
    let new_digest = push(
        &skopeo,
        &work.path().join("new"),
        "1.1.0",
        &format!("{fqdn}/team/api:1.1.0"),
    );
    assert_eq!(
        push(
            &skopeo,
            &work.path().join("new"),
            "1.1.0",
            &format!("{fqdn}/team/api:latest")
        ),
        new_digest
    );
    let multi = oci_layout(
        &work.path().join("multi"),
        "3.20",
        &["linux/amd64", "linux/arm64/v8"],
        "2026-03-01T08:00:00Z",
        20 * 1024,
    );
    let multi_digest = push(
        &skopeo,
        &work.path().join("multi"),
        "3.20",
        &format!("{fqdn}/tools/base:3.20"),
    );
    push(
        &skopeo,
        &work.path().join("old"),
        "1.0.0",
        &format!("{fqdn}/web/frontend:2.3.1"),
    );
    eprintln!("pushed 5 tags in {:.1} s", pushing.elapsed().as_secs_f64());

    let browsing = Instant::now();
    let mut b = Browser::start(&fqdn, &ip, &ca);
    b.call(
        "grant_clipboard",
        json!({"origin": format!("https://{fqdn}")}),
    );
    let admin = "admin";
    b.call("open", json!({"page": admin, "url": url}));
    b.call(
        "wait_role",
        json!({"page": admin, "role": "heading", "name": "Sign in"}),
    );

    // Keyboard only: the user name field has the focus, Tab reaches the password, Enter sends.
    let focused = b.call("focused", json!({"page": admin}));
    assert_eq!(focused["id"], "user", "{focused}");
    b.call("type", json!({"page": admin, "text": "admin"}));
    b.call("press", json!({"page": admin, "key": "Tab"}));
    assert_eq!(b.call("focused", json!({"page": admin}))["id"], "password");
    b.call("type", json!({"page": admin, "text": "not-the-password"}));
    b.call("press", json!({"page": admin, "key": "Enter"}));
    b.call(
        "wait_text",
        json!({"page": admin, "text": "Wrong user name or password."}),
    );
    let alert = b.call("text", json!({"page": admin, "selector": "[role=alert]"}));
    assert_eq!(alert, "Wrong user name or password.");
    // The password is selected for another try; typing replaces it.
    assert_eq!(b.call("focused", json!({"page": admin}))["id"], "password");
    b.call("type", json!({"page": admin, "text": ADMIN_PW}));
    b.call("press", json!({"page": admin, "key": "Enter"}));
    b.call(
        "wait_role",
        json!({"page": admin, "role": "heading", "name": "Repositories"}),
    );
    for repo in ["team/api", "tools/base", "web/frontend"] {
        b.call(
            "wait_role",
            json!({"page": admin, "role": "link", "name": repo}),
        );
    }
    b.call(
        "wait_text",
        json!({"page": admin, "text": "Signed in as admin"}),
    );

    // A repository: every tag with its digest, platform, size, creation time, pull command.
    b.call(
        "click",
        json!({"page": admin, "role": "link", "name": "team/api"}),
    );
    b.call(
        "wait_role",
        json!({"page": admin, "role": "heading", "name": "team/api"}),
    );
    for (tag, digest, built, created) in [
        ("1.0.0", &old_digest, &old[0], "2026-01-10 09:30 UTC"),
        ("1.1.0", &new_digest, &new[0], "2026-02-14 16:45 UTC"),
        ("latest", &new_digest, &new[0], "2026-02-14 16:45 UTC"),
    ] {
        let row = b.call("row", json!({"page": admin, "tag": tag}));
        let t = row["text"].as_str().unwrap();
        assert_eq!(row["digest"].as_str(), Some(digest.as_str()), "{tag}: {t}");
        for shown in [
            digest.as_str(),
            "linux/amd64",
            &human(built.size),
            created,
            &format!("docker pull {fqdn}/team/api:{tag}"),
        ] {
            assert!(t.contains(shown), "{tag}: {shown:?} not in {t:?}");
        }
    }
    b.call("wait_text", json!({"page": admin, "text": "3 tags"}));

    // Copy: the clipboard holds the command, exactly.
    b.call(
        "click",
        json!({"page": admin, "role": "button", "name": "Copy pull command for team/api:1.1.0"}),
    );
    b.call("wait_text", json!({"page": admin, "text": "Copied"}));
    assert_eq!(
        b.call("clipboard", json!({"page": admin})),
        json!(format!("docker pull {fqdn}/team/api:1.1.0"))
    );
    screenshot(&mut b, admin, "ui.png");

    // A phone: the table becomes cards, and nothing scrolls sideways.
    b.call(
        "open",
        json!({"page": "phone", "url": url, "width": 390, "height": 844}),
    );
    b.call(
        "fill",
        json!({"page": "phone", "label": "User name", "value": "admin"}),
    );
    b.call(
        "fill",
        json!({"page": "phone", "label": "Password", "value": ADMIN_PW}),
    );
    b.call(
        "click",
        json!({"page": "phone", "role": "button", "name": "Sign in"}),
    );
    b.call(
        "click",
        json!({"page": "phone", "role": "link", "name": "tools/base"}),
    );
    // The index: each platform with its size, the total, the newest creation time.
    let row = b.call("row", json!({"page": "phone", "tag": "3.20"}));
    let t = row["text"].as_str().unwrap();
    assert_eq!(row["digest"].as_str(), Some(multi_digest.as_str()), "{t}");
    assert!(t.contains("Index of 2 platforms"), "{t}");
    for built in &multi {
        assert!(t.contains(&built.platform), "{} not in {t}", built.platform);
        assert!(
            t.contains(&human(built.size)),
            "{} not in {t}",
            human(built.size)
        );
    }
    assert!(
        t.contains(&human(multi.iter().map(|m| m.size).sum())),
        "{t}"
    );
    assert!(t.contains("2026-03-01 08:00 UTC"), "{t}");
    assert_eq!(b.call("overflow", json!({"page": "phone"})), json!(0));
    screenshot(&mut b, "phone", "ui-phone.png");

    // A pull user sees the tags and no delete control.
    let reader = "reader";
    b.call(
        "open",
        json!({"page": reader, "url": format!("{url}#/r/team/api")}),
    );
    b.call(
        "fill",
        json!({"page": reader, "label": "User name", "value": "reader"}),
    );
    b.call(
        "fill",
        json!({"page": reader, "label": "Password", "value": READER_PW}),
    );
    b.call(
        "click",
        json!({"page": reader, "role": "button", "name": "Sign in"}),
    );
    let row = b.call("row", json!({"page": reader, "tag": "1.0.0"}));
    assert_eq!(row["digest"].as_str(), Some(old_digest.as_str()));
    assert_eq!(
        b.call(
            "count_css",
            json!({"page": reader, "selector": "button.danger"})
        ),
        json!(0)
    );
    assert_eq!(
        b.call(
            "count",
            json!({"page": reader, "role": "button", "name": "Delete tag 1.0.0"})
        ),
        json!(0)
    );

    // A push user deletes a tag, by keyboard, after a confirmation that Cancel (the focused
    // choice) and Escape leave without effect.
    let api_tags = |http: &reqwest::blocking::Client| -> Vec<String> {
        let token = token_for(http, &fqdn, "admin", ADMIN_PW, "repository:team/api:pull");
        let resp = http
            .get(format!("https://{fqdn}/v2/team/api/tags/list"))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().unwrap();
        let mut tags: Vec<String> = body["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        tags.sort();
        tags
    };
    b.call(
        "focus",
        json!({"page": admin, "role": "button", "name": "Delete tag 1.1.0"}),
    );
    b.call("press", json!({"page": admin, "key": "Enter"}));
    assert_eq!(b.call("dialog_open", json!({"page": admin})), json!(true));
    // The other tag on the same manifest is named: it goes too.
    let said = b.call("text", json!({"page": admin, "selector": "#confirm-text"}));
    assert!(said.as_str().unwrap().contains("latest"), "{said}");
    b.call("press", json!({"page": admin, "key": "Escape"}));
    assert_eq!(b.call("dialog_open", json!({"page": admin})), json!(false));
    b.call(
        "focus",
        json!({"page": admin, "role": "button", "name": "Delete tag 1.0.0"}),
    );
    b.call("press", json!({"page": admin, "key": "Enter"}));
    let focused = b.call("focused", json!({"page": admin}));
    assert_eq!(focused["text"], "Cancel", "{focused}");
    b.call("press", json!({"page": admin, "key": "Enter"}));
    assert_eq!(b.call("dialog_open", json!({"page": admin})), json!(false));
    assert_eq!(api_tags(&http), ["1.0.0", "1.1.0", "latest"]);
    // Cancel and open again within one task of the page: the reopened dialog answers for
    // itself (the first opening's `close` event is queued and arrives while it is open).
    b.call(
        "focus",
        json!({"page": admin, "role": "button", "name": "Delete tag 1.0.0"}),
    );
    b.call("press", json!({"page": admin, "key": "Enter"}));
    b.call(
        "click_at_once",
        json!({"page": admin, "names": ["Cancel", "Delete tag 1.0.0"]}),
    );
    assert_eq!(b.call("dialog_open", json!({"page": admin})), json!(true));
    b.call(
        "focus",
        json!({"page": admin, "role": "button", "name": "Cancel"}),
    );
    b.call("press", json!({"page": admin, "key": "Tab"}));
    assert_eq!(
        b.call("focused", json!({"page": admin}))["text"],
        "Delete 1.0.0"
    );
    b.call("press", json!({"page": admin, "key": "Enter"}));
    b.call("wait_text", json!({"page": admin, "text": "2 tags"}));
    b.call("row", json!({"page": admin, "tag": "1.1.0"}));
    assert_eq!(
        b.call(
            "count_css",
            json!({"page": admin, "selector": "tr[data-tag=\"1.0.0\"]"})
        ),
        json!(0)
    );
    // Gone from the registry's API: the tag and its manifest; the other tags stay.
    assert_eq!(api_tags(&http), ["1.1.0", "latest"]);
    let token = token_for(&http, &fqdn, "admin", ADMIN_PW, "repository:team/api:pull");
    for (reference, status) in [(old_digest.as_str(), 404), (new_digest.as_str(), 200)] {
        let resp = http
            .get(format!("https://{fqdn}/v2/team/api/manifests/{reference}"))
            .header("Accept", OCI_MANIFEST)
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{reference}");
    }
    // web/frontend held the same manifest under its own repository: untouched.
    let token = token_for(
        &http,
        &fqdn,
        "admin",
        ADMIN_PW,
        "repository:web/frontend:pull",
    );
    let resp = http
        .get(format!("https://{fqdn}/v2/web/frontend/manifests/2.3.1"))
        .header("Accept", OCI_MANIFEST)
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Every page: requests to the registry only, no error in the console (a CSP refusal
    // would be one), and never a challenge the browser would have answered with its prompt.
    let check_reports = |b: &mut Browser, names: &[&str]| {
        for name in names {
            let r = b.call("report", json!({"page": name}));
            if r["network_changed"] != json!(0) {
                eprintln!(
                    "{name}: {} requests aborted by host network changes (retried by the page)",
                    r["network_changed"]
                );
            }
            let prompts = r["auth_prompts"].as_array().unwrap();
            assert!(
                prompts.is_empty(),
                "{name}: the browser's own authentication ran: {prompts:?}"
            );
            let errors = r["errors"].as_array().unwrap();
            assert!(errors.is_empty(), "{name}: {errors:#?}");
            let requests = r["requests"].as_array().unwrap();
            assert!(requests.len() > 5, "{name}: {requests:?}");
            for req in requests {
                let u = req.as_str().unwrap();
                assert!(u.starts_with(&url), "{name} requested {u}");
            }
        }
    };
    check_reports(&mut b, &[admin, "phone", reader]);
    eprintln!(
        "browser checks in {:.1} s",
        browsing.elapsed().as_secs_f64()
    );

    // Anonymous pull: a repository opens by name without signing in; no delete control.
    tf.write("main.tf", &main_tf(&lo, &name, &fqdn, true, true));
    apply(&tf, &lo, "anonymous_pull = true");
    let anon = "anonymous";
    b.call("open", json!({"page": anon, "url": url}));
    b.call(
        "wait_role",
        json!({"page": anon, "role": "heading", "name": "Or browse without signing in"}),
    );
    b.call(
        "fill",
        json!({"page": anon, "label": "Repository", "value": "team/api"}),
    );
    b.call(
        "click",
        json!({"page": anon, "role": "button", "name": "Open"}),
    );
    let row = b.call("row", json!({"page": anon, "tag": "latest"}));
    assert_eq!(row["digest"].as_str(), Some(new_digest.as_str()));
    assert!(row["text"]
        .as_str()
        .unwrap()
        .contains("2026-02-14 16:45 UTC"));
    assert_eq!(
        b.call(
            "count_css",
            json!({"page": anon, "selector": "button.danger"})
        ),
        json!(0)
    );
    b.call(
        "wait_role",
        json!({"page": anon, "role": "link", "name": "Sign in"}),
    );
    check_reports(&mut b, &[anon]);
    drop(b);

    // ui = false: the page and its files are gone; the registry is as before.
    tf.write("main.tf", &main_tf(&lo, &name, &fqdn, true, false));
    apply(&tf, &lo, "ui = false");
    let resp = http.get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(header_values(&resp, "content-security-policy").is_empty());
    let digests = tf.resource_values()["files_digest"].clone();
    assert!(
        digests
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("registry-ui")),
        "{digests}"
    );
    let (ok, out) = tf.run_text(&["plan", "-detailed-exitcode", "-no-color", "-input=false"]);
    assert!(ok, "a plan after ui = false shows changes:\n{out}");

    let (ok, out) = tf.run_text(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
    assert!(ok, "tofu destroy failed:\n{out}");
    assert!(
        lo.droplets_of(&name).is_empty(),
        "{:?}",
        lo.droplets_of(&name)
    );
    eprintln!(
        "web page test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
