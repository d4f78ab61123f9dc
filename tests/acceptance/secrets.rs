//! Secrets stay in their one place, on registries made by `tofu apply`: the metadata service
//! (which serves user data) is for root only, also after a reboot; the host key in user data
//! is not the one sshd serves and opens nothing; a registry from before the key move is moved
//! on the next apply, also when the move happened but never reached state; and trace logs of
//! a create, an update and a destroy hold no secret, with the plugin's log file 0600.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::registry::ssh_pinned;
use super::PROVIDER_BLOCK;
use crate::support::localocean::{unique_label, Ocean};
use crate::support::registry_client::text;
use crate::support::tofu::Tofu;
use terraform_provider_docker::remote::fingerprint_sha256;

const ADMIN_PW: &str = "admin-secret-pw-0001";
const NEW_ADMIN_PW: &str = "admin-secret-pw-0002";
const CI_PW: &str = "ci-secret-pw-000003";
const METADATA: &str = "http://169.254.169.254/metadata/v1";

struct Fixture {
    lo: Ocean,
    tf: Tofu,
    name: String,
    fqdn: String,
}

impl Fixture {
    fn new() -> Self {
        let lo = Ocean::shared();
        let name = unique_label();
        let domain = format!("{name}.test");
        lo.create_domain(&domain);
        let tf = Tofu::new("").with_image(lo.baked_image());
        Self {
            lo,
            tf,
            fqdn: format!("registry.{domain}"),
            name,
        }
    }

    /// main.tf: the provider (with `provider_extra` arguments) and the registry with `users`
    /// and `extra` lines.
    fn config(&self, provider_extra: &str, users: &str, extra: &str) {
        let body = format!(
            r#"
provider "docker" {{
  token        = "{token}"
  api_endpoint = "{api}"
{provider_extra}}}

resource "docker_registry" "r" {{
  name   = "{name}"
  region = "nyc3"
  fqdn   = "{fqdn}"
  users  = {{
{users}
  }}
  tls {{ source = "self_signed" }}
{extra}
}}
"#,
            token = self.lo.token,
            api = self.lo.api_url,
            name = self.name,
            fqdn = self.fqdn,
        );
        self.tf
            .write("main.tf", &format!("{PROVIDER_BLOCK}\n{body}"));
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        self.tf.run_text(args)
    }

    fn apply(&self) -> String {
        let (ok, out) = self.run(&["apply", "-auto-approve", "-no-color", "-input=false"]);
        assert!(
            ok,
            "tofu apply failed:\n{out}\n--- localocean log tail:\n{}",
            self.lo.log_tail()
        );
        out
    }

    fn plan_code(&self) -> (i32, String) {
        let out = self
            .tf
            .run(&["plan", "-no-color", "-input=false", "-detailed-exitcode"]);
        (out.status.code().unwrap_or(-1), text(&out))
    }

    fn values(&self) -> Value {
        self.tf.resource_values()
    }

    fn destroy_and_check_nothing_left(&self) {
        let (ok, out) = self.run(&["destroy", "-auto-approve", "-no-color", "-input=false"]);
        assert!(ok, "tofu destroy failed:\n{out}");
        assert!(self.lo.droplets_of(&self.name).is_empty());
        assert!(self.lo.firewalls_of(&self.name).is_empty());
    }

    /// Rewrites the registry's attributes in the state file, as a provider of another version
    /// (or one killed halfway) would have left them.
    fn edit_state(&self, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let path = self.tf.dir.path().join("terraform.tfstate");
        let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let attrs = state["resources"][0]["instances"][0]["attributes"]
            .as_object_mut()
            .expect("the registry's attributes in terraform.tfstate");
        edit(attrs);
        std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    }
}

/// SSH as root to the registry's droplet with the management key, pinning `host_public_key`.
struct Root {
    key: PathBuf,
    known_hosts: PathBuf,
    ip: String,
}

impl Root {
    fn new(dir: &Path, v: &Value) -> Root {
        let key = dir.join("mgmt.key");
        std::fs::write(&key, v["management_private_key"].as_str().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let root = Root {
            key,
            known_hosts: dir.join("known_hosts"),
            ip: v["ipv4_address"].as_str().unwrap().to_owned(),
        };
        root.pin(v["host_public_key"].as_str().unwrap());
        root
    }

    fn pin(&self, host_public_key: &str) {
        std::fs::write(
            &self.known_hosts,
            format!("{} {host_public_key}\n", self.ip),
        )
        .unwrap();
    }

    fn run(&self, cmd: &str) -> (bool, String) {
        let out = ssh_pinned(&self.key, &self.known_hosts, &self.ip, cmd);
        (out.status.success(), text(&out))
    }

    fn ok(&self, cmd: &str) -> String {
        let (ok, out) = self.run(cmd);
        assert!(ok, "`{cmd}` on the droplet: {out}");
        out
    }

    /// The HTTP status `user` gets for the user data (000: refused before any answer).
    fn user_data_status(&self, user: &str) -> String {
        let curl = format!("curl -s -m 5 -o /dev/null -w '%{{http_code}}' {METADATA}/user-data");
        let cmd = if user == "root" {
            curl
        } else {
            format!("runuser -u {user} -- {curl}")
        };
        // curl exits non-zero when refused; the status it printed is what counts.
        self.run(&cmd).1.trim().to_owned()
    }
}

/// The Ed25519 key sshd at `ip` serves, as `ssh-keyscan` sees it: `ssh-ed25519 AAAA...`.
fn served_host_key(ip: &str) -> String {
    // sshd may be reloading (the tests move keys) and the machine busy: a scan that gets no
    // key is tried again for a while, never taken for an answer.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = std::process::Command::new("ssh-keyscan")
            .args(["-t", "ed25519", "-T", "10", ip])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = stdout
            .lines()
            .find(|l| !l.starts_with('#') && !l.is_empty())
        {
            return line
                .split_whitespace()
                .skip(1)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
        }
        assert!(
            Instant::now() < deadline,
            "ssh-keyscan {ip} got no key for 90 s: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `ssh-ed25519 AAAA...` without the comment.
fn key_only(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_metadata_service_is_for_root_and_the_host_key_in_user_data_opens_nothing() {
    let fx = Fixture::new();
    let users = format!("    admin = {{ password = \"{ADMIN_PW}\" }}");
    fx.config("", &users, "");
    fx.apply();
    let v = fx.values();
    let id = v["droplet_id"].as_u64().unwrap();
    let registry_key = v["host_public_key"].as_str().unwrap().to_owned();
    let root = Root::new(fx.tf.dir.path(), &v);

    // Root reads the user data; the services' users and nobody are refused.
    let user_data = root.ok(&format!("curl -sf -m 5 {METADATA}/user-data"));
    let cloud_config: Value = serde_json::from_str(
        user_data
            .strip_prefix("#cloud-config\n")
            .unwrap_or_else(|| panic!("user data: {user_data}")),
    )
    .unwrap();
    let born_private = cloud_config["ssh_keys"]["ed25519_private"]
        .as_str()
        .unwrap()
        .to_owned();
    let born_public = cloud_config["ssh_keys"]["ed25519_public"]
        .as_str()
        .unwrap()
        .to_owned();
    let check_closed = |when: &str| {
        assert_eq!(root.user_data_status("root"), "200", "{when}");
        for user in ["nobody", "www-data", "docker-registry"] {
            assert_eq!(
                root.user_data_status(user),
                "000",
                "{user} reached the metadata service {when}"
            );
        }
        // Root still reaches the rest of it: the droplet's own id.
        assert_eq!(
            root.ok(&format!("curl -sf -m 5 {METADATA}/id")).trim(),
            id.to_string()
        );
    };
    check_closed("after create");

    // The key in user data is not the one sshd serves; state names both.
    let served = served_host_key(&root.ip);
    assert_eq!(served, key_only(&registry_key));
    assert_ne!(served, key_only(&born_public));
    assert_eq!(
        v["user_data_host_key_fingerprint"].as_str().unwrap(),
        fingerprint_sha256(&born_public).unwrap()
    );
    assert_ne!(
        v["host_key_fingerprint"],
        v["user_data_host_key_fingerprint"]
    );

    // A reboot keeps both: the firewall loads at boot, and cloud-init does not put the key
    // from user data back.
    let (status, action) = fx.lo.api(
        "POST",
        &format!("/v2/droplets/{id}/actions"),
        Some(json!({ "type": "reboot" })),
    );
    assert_eq!(status, 201, "{action}");
    let action_id = action["action"]["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (_, a) = fx.lo.api("GET", &format!("/v2/actions/{action_id}"), None);
        if a["action"]["status"] == "completed" && root.run("true").0 {
            break;
        }
        assert!(Instant::now() < deadline, "reboot never finished: {a}");
        std::thread::sleep(Duration::from_millis(500));
    }
    check_closed("after a reboot");
    assert_eq!(served_host_key(&root.ip), key_only(&registry_key));

    // Someone with root puts the key from user data back: the next apply refuses the droplet,
    // says why, and sends nothing (the new user never reaches the droplet).
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    root.ok(&format!(
        "echo {} | base64 -d > /etc/ssh/ssh_host_ed25519_key && \
         echo {} | base64 -d > /etc/ssh/ssh_host_ed25519_key.pub && systemctl reload ssh",
        b64(&born_private),
        b64(&format!("{born_public}\n")),
    ));
    root.pin(&born_public);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_host_key(&root.ip) != key_only(&born_public) {
        assert!(Instant::now() < deadline, "sshd kept the registry's key");
        std::thread::sleep(Duration::from_millis(200));
    }
    let users2 = format!("{users}\n    ci = {{ password = \"{CI_PW}\", access = \"pull\" }}");
    fx.config("", &users2, "");
    let (ok, out) = fx.run(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(!ok, "apply accepted the key from user data:\n{out}");
    let born_fp = fingerprint_sha256(&born_public).unwrap();
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("host key from its user data") && flat.contains(&born_fp),
        "the refusal does not say why:\n{out}"
    );
    assert_eq!(
        root.ok("grep -c '^ci:' /etc/nginx/registry/htpasswd || true")
            .trim(),
        "0",
        "the refused apply reached the droplet"
    );

    // The state of a provider from before the move (host key = the one in user data, which
    // the droplet serves now): the plan says the key will be replaced, apply moves it.
    let as_before = |attrs: &mut serde_json::Map<String, Value>| {
        attrs.insert("host_private_key".into(), json!(born_private));
        attrs.insert("host_public_key".into(), json!(born_public));
        attrs.insert("host_key_fingerprint".into(), json!(born_fp));
        attrs.insert("user_data_host_key_fingerprint".into(), Value::Null);
    };
    fx.edit_state(as_before);
    let (code, plan) = fx.plan_code();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("The droplet's SSH host key will be replaced"),
        "{plan}"
    );
    fx.apply();
    let moved = fx.values();
    assert_eq!(moved["host_public_key"], v["host_public_key"]);
    assert_eq!(moved["user_data_host_key_fingerprint"], json!(born_fp));
    assert_eq!(served_host_key(&root.ip), key_only(&registry_key));
    root.pin(&registry_key);
    assert_eq!(
        root.ok("grep -c '^ci:' /etc/nginx/registry/htpasswd")
            .trim(),
        "1"
    );

    // The move happened but the state never heard of it (the provider killed in between):
    // the droplet serves the registry's key, state names the one in user data. Apply
    // connects, and records it.
    fx.edit_state(as_before);
    fx.apply();
    let recorded = fx.values();
    assert_eq!(recorded["host_public_key"], v["host_public_key"]);
    assert_eq!(recorded["user_data_host_key_fingerprint"], json!(born_fp));
    let (code, plan) = fx.plan_code();
    assert_eq!(
        code, 0,
        "plan after the recorded move is not empty:\n{plan}"
    );

    // Another key altogether at the droplet's address (another machine answering, or a key
    // changed by hand): the apply refuses, names both fingerprints, and sends nothing.
    root.ok("rm -f /root/other-key /root/other-key.pub && \
         ssh-keygen -q -t ed25519 -N '' -C other -f /root/other-key && \
         cp /root/other-key /etc/ssh/ssh_host_ed25519_key && \
         cp /root/other-key.pub /etc/ssh/ssh_host_ed25519_key.pub && systemctl reload ssh");
    let deadline = Instant::now() + Duration::from_secs(30);
    let other = loop {
        let served = served_host_key(&root.ip);
        if served != key_only(&registry_key) {
            break served;
        }
        assert!(Instant::now() < deadline, "sshd kept the registry's key");
        std::thread::sleep(Duration::from_millis(200));
    };
    let other_fp = fingerprint_sha256(&other).unwrap();
    let users3 = format!("{users2}\n    qa = {{ password = \"{CI_PW}\", access = \"pull\" }}");
    fx.config("", &users3, "");
    let (ok, out) = fx.run(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    assert!(!ok, "apply accepted another host key:\n{out}");
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    for said in [
        other_fp.as_str(),
        v["host_key_fingerprint"].as_str().unwrap(),
        "nothing was sent",
    ] {
        assert!(
            flat.contains(said),
            "the refusal does not say {said:?}:\n{out}"
        );
    }
    root.pin(&other);
    assert_eq!(
        root.ok("grep -c '^qa:' /etc/nginx/registry/htpasswd || true")
            .trim(),
        "0",
        "the refused apply reached the droplet"
    );
    // The registry's key put back (state holds it): the same apply goes through.
    root.ok(&format!(
        "echo {} | base64 -d > /etc/ssh/ssh_host_ed25519_key && \
         echo {} | base64 -d > /etc/ssh/ssh_host_ed25519_key.pub && systemctl reload ssh",
        b64(v["host_private_key"].as_str().unwrap()),
        b64(&format!("{registry_key}\n")),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_host_key(&root.ip) != key_only(&registry_key) {
        assert!(Instant::now() < deadline, "sshd kept the other key");
        std::thread::sleep(Duration::from_millis(200));
    }
    root.pin(&registry_key);
    fx.apply();
    assert_eq!(
        root.ok("grep -c '^qa:' /etc/nginx/registry/htpasswd")
            .trim(),
        "1"
    );

    // SSH dropped in the middle of a converge: every converge runs `nginx -t`; a wrapper
    // ahead of it on root's PATH kills the SSH session it runs under, once (and fails, should
    // the session survive the kill). The provider connects again and converges again (the
    // script is idempotent): the apply goes through.
    let wrapper = "#!/bin/sh\n\
        if [ -e /run/tf-acc-drop-ssh ]; then\n\
          rm -f /run/tf-acc-drop-ssh\n\
          p=$PPID\n\
          while [ \"$p\" -gt 1 ] && [ \"$(cat /proc/$p/comm)\" != sshd ]; do p=$(cut -d' ' -f4 /proc/$p/stat); done\n\
          [ \"$p\" -gt 1 ] && kill -9 \"$p\"\n\
          sleep 5\n\
          exit 1\n\
        fi\n\
        exec /usr/sbin/nginx \"$@\"\n";
    root.ok(&format!(
        "echo {} | base64 -d > /usr/local/sbin/nginx && chmod 755 /usr/local/sbin/nginx && \
         touch /run/tf-acc-drop-ssh",
        b64(wrapper)
    ));
    let users4 = format!("{users3}\n    ops = {{ password = \"{CI_PW}\", access = \"pull\" }}");
    fx.config("", &users4, "");
    let (ok, out) = fx.run(&["apply", "-auto-approve", "-no-color", "-input=false"]);
    let dropped = root.ok("test -e /run/tf-acc-drop-ssh && echo armed || echo fired");
    root.ok("rm -f /usr/local/sbin/nginx /run/tf-acc-drop-ssh");
    assert_eq!(dropped.trim(), "fired", "the converge never ran `nginx -t`");
    assert!(
        ok,
        "an SSH session dropped mid-converge failed the apply:\n{out}"
    );
    assert_eq!(
        root.ok("grep -c '^ops:' /etc/nginx/registry/htpasswd")
            .trim(),
        "1"
    );
    check_closed("at the end");

    fx.destroy_and_check_nothing_left();
}

#[test]
fn trace_logs_of_create_update_and_destroy_hold_no_secret_and_the_plugin_log_is_private() {
    let fx = Fixture::new();
    // The provider's own Spaces credentials, so that a Spaces secret is in play as well.
    let (status, body) = fx.lo.api(
        "POST",
        "/v2/spaces/keys",
        Some(json!({ "name": format!("{}-provider", fx.name), "grants": [{ "bucket": "", "permission": "fullaccess" }] })),
    );
    assert_eq!(status, 201, "{body}");
    let spaces_id = body["key"]["access_key"].as_str().unwrap().to_owned();
    let spaces_secret = body["key"]["secret_key"]
        .as_str()
        .or(body["secret_key"].as_str())
        .unwrap()
        .to_owned();
    let port = fx
        .lo
        .s3_url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let provider = format!(
        "  spaces_access_id  = \"{spaces_id}\"\n  spaces_secret_key = \"{spaces_secret}\"\n  spaces_endpoint   = \"http://{}:{port}\"\n",
        fx.lo.bridge_ip()
    );
    let storage = format!(
        "  storage {{\n    backend = \"spaces\"\n    bucket = \"{}-images\"\n    force_destroy = true\n  }}",
        fx.name
    );
    let dir = fx.tf.dir.path().to_owned();
    let plugin_log = dir.join("plugin.log");
    let logged = |args: &[&str], log: &str| -> (bool, String) {
        let out = fx
            .tf
            .command(args)
            .env("TF_LOG", "trace")
            .env("TF_LOG_PATH", dir.join(log))
            .env("PLUGIN_LOG_FILE", &plugin_log)
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };

    fx.config(
        &provider,
        &format!(
            "    admin = {{ password = \"{ADMIN_PW}\" }}\n    ci = {{ password = \"{CI_PW}\", access = \"pull\" }}"
        ),
        &storage,
    );
    let (ok, out) = logged(
        &["apply", "-auto-approve", "-no-color", "-input=false"],
        "create.log",
    );
    assert!(ok, "create failed:\n{out}\n{}", fx.lo.log_tail());
    let created = fx.values();
    let root = Root::new(&dir, &created);
    let user_data = root.ok(&format!("curl -sf -m 5 {METADATA}/user-data"));

    fx.config(
        &provider,
        &format!(
            "    admin = {{ password = \"{NEW_ADMIN_PW}\" }}\n    ci = {{ password = \"{CI_PW}\", access = \"pull\" }}"
        ),
        &storage,
    );
    let (ok, out) = logged(
        &["apply", "-auto-approve", "-no-color", "-input=false"],
        "update.log",
    );
    assert!(ok, "update failed:\n{out}");
    assert!(out.contains("1 changed"), "{out}");
    let updated = fx.values();
    let (ok, out) = logged(
        &["destroy", "-auto-approve", "-no-color", "-input=false"],
        "destroy.log",
    );
    assert!(ok, "destroy failed:\n{out}");
    assert!(fx.lo.droplets_of(&fx.name).is_empty());

    // Every secret of the run, by its actual value; keys by each line of their body.
    let mut secrets: Vec<(String, String)> = vec![
        ("admin password".into(), ADMIN_PW.into()),
        ("new admin password".into(), NEW_ADMIN_PW.into()),
        ("ci password".into(), CI_PW.into()),
        ("API token".into(), fx.lo.token.clone()),
        ("provider's Spaces secret".into(), spaces_secret.clone()),
    ];
    for v in [&created, &updated] {
        for attr in [
            "management_private_key",
            "host_private_key",
            "tls_private_key_pem",
            "ca_private_key_pem",
            "http_secret",
            "spaces_secret_key",
        ] {
            let value = v[attr]
                .as_str()
                .unwrap_or_else(|| panic!("{attr} in state"));
            let parts: Vec<&str> = if value.contains("-----BEGIN") {
                value
                    .lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .collect()
            } else {
                vec![value]
            };
            for p in parts {
                secrets.push((attr.to_owned(), p.to_owned()));
            }
        }
        let docker_config: Value =
            serde_json::from_str(v["docker_config_json"].as_str().unwrap()).unwrap();
        let auth = docker_config["auths"][&fx.fqdn]["auth"].as_str().unwrap();
        secrets.push(("docker config auth".into(), auth.to_owned()));
        for (user, hash) in v["bcrypt_hashes"].as_object().unwrap() {
            let hash = hash.as_str().unwrap();
            secrets.push((format!("{user}'s bcrypt hash"), hash.to_owned()));
        }
    }
    // The key the droplet was born with, as its user data carried it.
    for line in user_data
        .split("\\n")
        .filter(|l| l.len() >= 40 && !l.contains(' '))
    {
        secrets.push(("host key in user data".into(), line.to_owned()));
    }
    assert!(secrets.len() > 20, "{secrets:?}");

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&plugin_log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "PLUGIN_LOG_FILE is {mode:o}");
    let plugin = std::fs::read_to_string(&plugin_log).unwrap();
    for (name, text) in [
        ("plugin.log", plugin.clone()),
        (
            "create.log",
            std::fs::read_to_string(dir.join("create.log")).unwrap(),
        ),
        (
            "update.log",
            std::fs::read_to_string(dir.join("update.log")).unwrap(),
        ),
        (
            "destroy.log",
            std::fs::read_to_string(dir.join("destroy.log")).unwrap(),
        ),
    ] {
        // Trace logs indeed, with the provider's response bodies in them (every run reads
        // the droplet), and request bodies where the run sent some (the create).
        assert!(
            text.contains("DigitalOcean response body"),
            "{name} holds no provider trace"
        );
        if name == "plugin.log" || name == "create.log" {
            assert!(
                text.contains("DigitalOcean request body"),
                "{name} holds no request body"
            );
        }
        for (what, secret) in &secrets {
            assert!(!secret.is_empty());
            assert!(!text.contains(secret.as_str()), "{what} appears in {name}");
        }
    }
    // The plugin log is filtered as stderr is: the gRPC and HTTP plumbing is not in it.
    for noisy in ["h2::", "hyper::", "tonic::", "rustls::"] {
        assert!(!plugin.contains(noisy), "{noisy} lines in plugin.log");
    }
}
