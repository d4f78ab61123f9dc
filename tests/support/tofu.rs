//! Runs OpenTofu against the freshly built provider through a dev_overrides CLI config,
//! each test in its own temp dir, with nothing inherited that could point elsewhere.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Tofu {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
    /// The `image` every `docker_registry` block of a written config gets when it names none
    /// (see [`Tofu::with_image`]).
    image: Option<String>,
}

/// `tofu` from TOFU_BIN, else the project-local tools folder that scripts/setup fills.
pub fn tofu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TOFU_BIN") {
        return p.into();
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/tofu");
    if local.exists() {
        return local;
    }
    panic!(
        "tofu not found at {}: run scripts/setup (or set TOFU_BIN)",
        local.display()
    );
}

pub fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_terraform-provider-docker"))
        .parent()
        .unwrap()
        .to_path_buf()
}

impl Tofu {
    pub fn new(main_tf: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tf-acc-test-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("main.tf"), main_tf).unwrap();
        let cli_config = dir.path().join("tofu.rc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  dev_overrides {{\n    \"registry.opentofu.org/anchorage/docker\" = \"{}\"\n  }}\n  direct {{}}\n}}\n",
                provider_dir().display()
            ),
        )
        .unwrap();
        Self {
            bin: tofu_bin(),
            dir,
            cli_config,
            env: vec![],
            image: None,
        }
    }

    /// Configs written from now on give each `docker_registry` block that sets no `image`
    /// this one (the shared localocean's baked snapshot: `support::baked`); `None` leaves
    /// them on the stock image.
    pub fn with_image(mut self, image: Option<String>) -> Self {
        self.image = image;
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn write(&self, name: &str, content: &str) {
        let content = match &self.image {
            Some(image) if name.ends_with(".tf") => with_image(content, image),
            _ => content.to_string(),
        };
        std::fs::write(self.dir.path().join(name), content).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()))
    }

    /// The tofu command for `args`, in the work dir, with the test CLI config. It ends (and
    /// takes its provider with it) if the test's thread does, e.g. a killed test binary.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        localocean::process::end_with_parent(&mut cmd);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("DIGITALOCEAN_TOKEN")
            .env_remove("DIGITALOCEAN_ACCESS_TOKEN")
            .env_remove("DIGITALOCEAN_API_URL")
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs and returns (success, stdout + stderr).
    pub fn run_text(&self, args: &[&str]) -> (bool, String) {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `tofu apply` with the provider's log at `level` written to `log` in the work dir.
    pub fn apply_logged(&self, log: &str, level: &str) -> (bool, String) {
        let out = self
            .command(&["apply", "-auto-approve", "-no-color", "-input=false"])
            .env("TF_LOG", level)
            .env("TF_LOG_PATH", self.dir.path().join(log))
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The attributes of the first resource in state (`tofu show -json`), secrets included.
    /// The values of the resource at `address` (`docker_registry.r`), null when absent.
    pub fn values_of(&self, address: &str) -> serde_json::Value {
        let out = self.run(&["show", "-json"]);
        assert!(
            out.status.success(),
            "tofu show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["values"]["root_module"]["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["address"] == address))
            .map(|r| r["values"].clone())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn resource_values(&self) -> serde_json::Value {
        let out = self.run(&["show", "-json"]);
        assert!(
            out.status.success(),
            "tofu show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["values"]["root_module"]["resources"][0]["values"].clone()
    }
}

/// `hcl` with `image = "<image>"` at the top of each `docker_registry` resource block that
/// sets no `image` of its own.
pub fn with_image(hcl: &str, image: &str) -> String {
    let mut out = String::with_capacity(hcl.len());
    let mut rest = hcl;
    while let Some(at) = rest.find("resource \"docker_registry\"") {
        let Some(open) = rest[at..].find('{').map(|o| at + o + 1) else {
            break;
        };
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        if !block_sets_image(rest) {
            out.push_str(&format!("\n  image = \"{image}\""));
        }
    }
    out.push_str(rest);
    out
}

/// Whether the block whose body starts `body` (after its `{`) sets `image` at its top level.
fn block_sets_image(body: &str) -> bool {
    let mut depth = 0usize;
    for line in body.lines() {
        let t = line.trim_start();
        if depth == 0 && (t.starts_with("image ") || t.starts_with("image=")) {
            return true;
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => return false,
                '}' => depth -= 1,
                _ => {}
            }
        }
    }
    false
}
