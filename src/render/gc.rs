//! Garbage collection on the droplet: the collector script, its systemd service and timer, and
//! a conservative check of the timer's `OnCalendar` expression (systemd is not there at plan time).

use super::{paths, RenderError};

/// Where the collection's files live on the droplet.
pub mod gc_paths {
    pub const SCRIPT: &str = "/usr/local/lib/registry-gc/collect.sh";
    pub const SERVICE: &str = "/etc/systemd/system/registry-gc.service";
    pub const TIMER: &str = "/etc/systemd/system/registry-gc.timer";
    /// What the last run did (JSON, no secret): read by the provider at refresh and after a
    /// run asked for through the plan.
    pub const STATUS: &str = "/var/lib/registry-gc/status.json";
    /// While it exists nginx answers pushes and deletes 503 with Retry-After; pulls go on.
    pub const RUNNING: &str = "/etc/nginx/registry/gc-running";
    pub const SERVICE_UNIT: &str = "registry-gc.service";
    pub const TIMER_UNIT: &str = "registry-gc.timer";
}

/// The `garbage_collection` block as rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcSpec {
    /// A systemd `OnCalendar` expression; without one, collections run only when asked for
    /// through the plan (`garbage_collection.run`).
    pub schedule: Option<String>,
    /// Also delete manifests no tag points at (`garbage-collect --delete-untagged`).
    pub delete_untagged: bool,
}

/// How long the collector waits for uploads in flight to go quiet before it gives up (and
/// collects nothing: a collection racing an upload could delete that upload's blobs).
pub const UPLOAD_WAIT_SECS: u32 = 300;
/// What a refused push is told to wait, in seconds (a collection of a small registry takes
/// seconds; docker and skopeo report the 503 with the body's message).
pub const RETRY_AFTER_SECS: u32 = 30;
/// A second registry process on this address serves pulls while the main one restarts; nginx
/// lists it as a backup upstream (see `nginx`).
pub const STANDBY_ADDR: &str = "127.0.0.1:5001";

/// What a push gets during a collection: the registry API's error shape. No single quote (it
/// is an nginx string in single quotes).
pub const RUNNING_BODY: &str = r#"{"errors":[{"code":"UNAVAILABLE","message":"garbage collection in progress: pushes and deletes are refused until it ends (see Retry-After); pulls still work","detail":null}]}"#;

/// Prints `<tags checked> <tags broken> <first broken repo:tag or ->` for the filesystem
/// layout under its argument (`<root>/docker/registry/v2`): a tag is whole when its manifest
/// and every blob it names (config, layers, an index's manifests and theirs) are stored.
pub const TAG_CHECK_PY: &str = r#"import json, os, sys
root = sys.argv[1]
def data(digest):
    algo, _, hexd = digest.partition(":")
    return os.path.join(root, "blobs", algo, hexd[:2], hexd, "data")
def whole(digest, depth=0):
    path = data(digest)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            m = json.load(f)
    except ValueError:
        return depth > 0
    if not isinstance(m, dict):
        return True
    named = [m["config"]] if isinstance(m.get("config"), dict) else []
    named += [l for l in m.get("layers", []) if isinstance(l, dict)]
    if any(not os.path.isfile(data(d.get("digest", ""))) for d in named):
        return False
    return all(whole(c.get("digest", ""), depth + 1) for c in m.get("manifests", []) if isinstance(c, dict) and depth < 2)
checked, broken, first = 0, 0, "-"
repos = os.path.join(root, "repositories")
for here, dirs, _ in os.walk(repos):
    dirs[:] = [d for d in dirs if d not in ("_layers", "_uploads")]
    if os.path.basename(here) == "_manifests":
        dirs[:] = [d for d in dirs if d == "tags"]
    if os.path.basename(here) == "tags" and os.path.basename(os.path.dirname(here)) == "_manifests":
        repo = os.path.relpath(os.path.dirname(os.path.dirname(here)), repos)
        for tag in dirs:
            try:
                with open(os.path.join(here, tag, "current", "link")) as f:
                    digest = f.read().strip()
            except OSError:
                continue
            checked += 1
            if not whole(digest):
                broken += 1
                if first == "-":
                    first = repo + ":" + tag
        dirs[:] = []
print(checked, broken, first)
"#;

/// The collector: one collection with no failed pull. Steps, each bounded:
/// 1. the flag file makes nginx refuse writes (503 + Retry-After) while reads go on;
/// 2. uploads already in flight get up to `UPLOAD_WAIT_SECS` to go quiet (no upload file
///    written for 6 s), else the run stops without collecting;
/// 3. `docker-registry garbage-collect` (as the registry's user);
/// 4. a standby registry answers on `STANDBY_ADDR` (nginx's backup upstream) while the main
///    one restarts, which empties its blob descriptor cache (it would otherwise serve deleted
///    blobs, distribution#4569); then the flag goes;
/// 5. on a disk, every tag is checked: its manifest and every blob it names (an index's
///    manifests too) must still be stored. The status file records the run; a tag that lost
///    a blob makes the run `broken`, naming it.
pub fn collect_script(storage_root: Option<&str>) -> Result<String, RenderError> {
    if let Some(root) = storage_root {
        super::check_plain("storage root", root)?;
    }
    Ok(format!(
        r#"#!/bin/bash
# Managed by terraform-provider-docker: one garbage collection of the registry, pulls served
# throughout. Usage: collect.sh [--delete-untagged]
set -euo pipefail
umask 022
CONFIG={config}
REGISTRY={binary}
FLAG={flag}
STATUS={status}
STORAGE_ROOT={root}
UPLOAD_WAIT={upload_wait}
STANDBY_ADDR={standby}
untagged=false
args=()
if [ "${{1:-}}" = --delete-untagged ]; then
  untagged=true
  args=(--delete-untagged)
fi

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
log=$(mktemp)
standby=""
mkdir -p "$(dirname "$STATUS")"

tags_checked=null
tags_broken=null
# status RESULT FREED DELETED MESSAGE: written whole, then renamed over the old one.
status() {{
  local tmp
  tmp=$(mktemp "$(dirname "$STATUS")/.status.XXXXXX")
  printf '{{"result":"%s","started_at":"%s","finished_at":"%s","finished_unix":%s,"seconds":%s,"freed_bytes":%s,"blobs_deleted":%s,"tags_checked":%s,"tags_broken":%s,"delete_untagged":%s,"message":"%s"}}\n' \
    "$1" "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(date +%s)" "$(( $(date +%s) - t0 ))" "$2" "$3" "$tags_checked" "$tags_broken" "$untagged" \
    "$(printf '%s' "$4" | tr -d '"\\' | tr '\000-\037' ' ' | cut -c1-300)" > "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$STATUS"
}}

stop_standby() {{
  if [ -n "$standby" ]; then
    # SIGTERM: the standby drains what it serves (http.draintimeout) before it exits.
    kill -TERM "$standby" 2>/dev/null || true
    wait "$standby" 2>/dev/null || true
    standby=""
  fi
}}

finish() {{
  local rc=$?
  stop_standby
  rm -f "$FLAG"
  if [ "$rc" != 0 ]; then
    status failed null null "$(tail -n 3 "$log" 2>/dev/null | tr '\n' ' ')"
  fi
  rm -f "$log"
}}
trap finish EXIT

fail() {{ printf '%s\n' "$*" >> "$log"; printf 'registry-gc: %s\n' "$*" >&2; exit 1; }}

# Bytes the registry stores (disk storage only; the S3 driver's bucket is not measured here).
used() {{
  if [ -n "$STORAGE_ROOT" ] && [ -d "$STORAGE_ROOT" ]; then
    du -sb "$STORAGE_ROOT" | cut -f1
  else
    echo null
  fi
}}

# 1. Writes refused from now on (nginx tests the file on every request).
touch "$FLAG"

# 2. Requests nginx passed on before the flag: let them land. An upload in flight writes its
# _uploads data as it streams; wait until none has been written for 6 s.
sleep 2
if [ -n "$STORAGE_ROOT" ]; then
  repos="$STORAGE_ROOT/docker/registry/v2/repositories"
  while [ -d "$repos" ] && [ -n "$(find "$repos" -path '*/_uploads/*' -type f -mmin -0.1 -print -quit 2>/dev/null)" ]; do
    if [ $(( $(date +%s) - t0 )) -ge "$UPLOAD_WAIT" ]; then
      fail "uploads were still running after ${{UPLOAD_WAIT}}s: nothing collected, try again later"
    fi
    sleep 1
  done
else
  # No upload directory to watch in a bucket: give in-flight requests the proxy's quiet time.
  sleep 10
fi

# 3. The collection itself, as the registry's user (it owns the files).
before=$(used)
if ! setpriv --reuid=docker-registry --regid=docker-registry --init-groups -- \
    env -u AWS_CA_BUNDLE "$REGISTRY" garbage-collect "${{args[@]}}" "$CONFIG" > "$log" 2>&1; then
  fail "garbage-collect failed: $(grep -v -i secret "$log" | tail -n 3 | tr '\n' ' ')"
fi
deleted=$(grep -c 'eligible for deletion' "$log" || true)
after=$(used)

# 4. A fresh process forgets the deleted blobs. The standby takes what the main registry
# refuses while it restarts (nginx retries a refused connection on the backup).
setpriv --reuid=docker-registry --regid=docker-registry --init-groups -- \
  env -u AWS_CA_BUNDLE REGISTRY_HTTP_ADDR="$STANDBY_ADDR" "$REGISTRY" serve "$CONFIG" >/dev/null 2>&1 &
standby=$!
up=""
for i in $(seq 1 60); do
  if curl -s -o /dev/null --max-time 2 "http://$STANDBY_ADDR/v2/"; then up=1; break; fi
  sleep 0.5
done
[ -n "$up" ] || fail "the standby registry did not answer on $STANDBY_ADDR"
systemctl restart docker-registry
up=""
for i in $(seq 1 120); do
  if curl -s -o /dev/null --max-time 2 http://127.0.0.1:5000/v2/; then up=1; break; fi
  sleep 0.5
done
[ -n "$up" ] || fail "docker-registry did not answer again after its restart"
# Connections nginx opened to the standby meanwhile finish there (it drains on SIGTERM).
stop_standby
rm -f "$FLAG"

freed=null
if [ "$before" != null ] && [ "$after" != null ]; then
  freed=$(( before - after ))
  [ "$freed" -ge 0 ] || freed=0
fi

# 5. Every tag still pulls: its manifest and each blob it names are stored (disk only).
if [ -n "$STORAGE_ROOT" ] && [ -d "$STORAGE_ROOT/docker/registry/v2" ]; then
  read -r tags_checked tags_broken first_broken < <(python3 - "$STORAGE_ROOT/docker/registry/v2" <<'__TAGS__'
{tag_check}__TAGS__
  ) || true
  if [ -z "${{tags_broken:-}}" ]; then
    # The check itself failed (no python3?): say nothing rather than something wrong.
    tags_checked=null
    tags_broken=null
  elif [ "$tags_broken" != 0 ]; then
    status broken "$freed" "${{deleted:-0}}" "$tags_broken of $tags_checked tags lost a blob, first $first_broken"
    exit 0
  fi
fi
status ok "$freed" "${{deleted:-0}}" ""
"#,
        config = paths::REGISTRY_CONFIG,
        binary = paths::REGISTRY_BINARY,
        flag = gc_paths::RUNNING,
        status = gc_paths::STATUS,
        root = storage_root.unwrap_or(""),
        upload_wait = UPLOAD_WAIT_SECS,
        standby = STANDBY_ADDR,
        tag_check = TAG_CHECK_PY,
    ))
}

/// One collection per start; a run asked for by the plan starts it and waits.
pub fn gc_service(spec: &GcSpec) -> String {
    let args = if spec.delete_untagged {
        " --delete-untagged"
    } else {
        ""
    };
    format!(
        "# Managed by terraform-provider-docker.\n\
         [Unit]\n\
         Description=Collect the registry's garbage (pushes get 503 meanwhile, pulls go on)\n\
         After=docker-registry.service nginx.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={}{args}\n\
         # Waiting for uploads, the collection and the restart; the script bounds each.\n\
         TimeoutStartSec=2h\n",
        gc_paths::SCRIPT
    )
}

/// The schedule, when there is one. Not `Persistent`: a droplet that was off does not
/// collect the moment it boots, it waits for the next slot.
pub fn gc_timer(schedule: &str) -> Result<String, RenderError> {
    if let Err(why) = check_on_calendar(schedule) {
        return Err(RenderError::UnsafeValue {
            field: "garbage_collection.schedule",
            value: format!("{schedule} ({why})"),
        });
    }
    Ok(format!(
        "# Managed by terraform-provider-docker.\n\
         [Unit]\n\
         Description=Collect the registry's garbage on its schedule\n\
         \n\
         [Timer]\n\
         OnCalendar={schedule}\n\
         AccuracySec=1s\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    ))
}

const SHORTHANDS: &[&str] = &[
    "minutely",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
];

const WEEKDAYS: &[(&str, &str)] = &[
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// Accepts the common forms of systemd's `OnCalendar` (systemd.time(7)): the shorthands
/// (`daily`, `weekly`, ...), and `[weekdays] [[YYYY-]MM-DD] [HH:MM[:SS]] [UTC]` whose fields
/// are `*`, numbers, lists (`1,15`), ranges (`1..5`) and repetitions (`*/2`, `0/15`).
/// Refuses what it does not know rather than guess: a refused expression may be valid for
/// systemd, but an accepted one is.
pub fn check_on_calendar(expr: &str) -> Result<(), String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("it is empty".into());
    }
    if expr.len() > 200 {
        return Err("it is longer than 200 characters".into());
    }
    if let Some(bad) = expr
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " ,-:*/.".contains(*c)))
    {
        return Err(format!("{bad:?} is not part of an OnCalendar expression"));
    }
    if SHORTHANDS.contains(&expr.to_ascii_lowercase().as_str()) {
        return Ok(());
    }
    let mut words: Vec<&str> = expr.split_whitespace().collect();
    if words.last() == Some(&"UTC") {
        words.pop();
    }
    let mut words = words.into_iter().peekable();
    let mut any = false;
    if let Some(w) = words.peek() {
        if w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            check_weekdays(w)?;
            words.next();
            any = true;
        }
    }
    if let Some(w) = words.peek() {
        if w.contains('-') {
            check_date(w)?;
            words.next();
            any = true;
        }
    }
    if let Some(w) = words.peek() {
        if w.contains(':') {
            check_time(w)?;
            words.next();
            any = true;
        }
    }
    if let Some(w) = words.next() {
        return Err(format!(
            "{w:?} is not a weekday, a date (YYYY-MM-DD) nor a time (HH:MM[:SS]) in that place"
        ));
    }
    if !any {
        return Err("it names no weekday, date nor time".into());
    }
    Ok(())
}

fn weekday(name: &str) -> Option<usize> {
    let n = name.to_ascii_lowercase();
    WEEKDAYS
        .iter()
        .position(|(short, long)| n == *short || n == *long)
}

fn check_weekdays(word: &str) -> Result<(), String> {
    for part in word.split(',') {
        let names: Vec<&str> = part.split("..").collect();
        let ok = match names.as_slice() {
            [one] => weekday(one).is_some(),
            [a, b] => weekday(a).is_some() && weekday(b).is_some(),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{part:?} is not a weekday (Mon..Sun), a list or a range of them"
            ));
        }
    }
    Ok(())
}

fn check_date(word: &str) -> Result<(), String> {
    let fields: Vec<&str> = word.split('-').collect();
    let named: &[(&str, u32, u32)] = match fields.len() {
        2 => &[("month", 1, 12), ("day", 1, 31)],
        3 => &[("year", 1970, 2199), ("month", 1, 12), ("day", 1, 31)],
        _ => return Err(format!("{word:?} is not a date (YYYY-MM-DD or MM-DD)")),
    };
    for (f, (what, lo, hi)) in fields.iter().zip(named) {
        check_field(f, what, *lo, *hi)?;
    }
    Ok(())
}

fn check_time(word: &str) -> Result<(), String> {
    let fields: Vec<&str> = word.split(':').collect();
    let named: &[(&str, u32, u32)] = match fields.len() {
        2 => &[("hour", 0, 23), ("minute", 0, 59)],
        3 => &[("hour", 0, 23), ("minute", 0, 59), ("second", 0, 59)],
        _ => return Err(format!("{word:?} is not a time (HH:MM or HH:MM:SS)")),
    };
    for (f, (what, lo, hi)) in fields.iter().zip(named) {
        check_field(f, what, *lo, *hi)?;
    }
    Ok(())
}

/// `*`, `N`, `A..B`, each optionally `/STEP`, in a comma list.
fn check_field(field: &str, what: &str, lo: u32, hi: u32) -> Result<(), String> {
    let number = |s: &str| -> Result<u32, String> {
        if s.is_empty() || s.len() > 4 || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("{field:?} is not a valid {what}"));
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{field:?} is not a valid {what}"))?;
        if n < lo || n > hi {
            return Err(format!("{what} {n} is outside {lo}..{hi}"));
        }
        Ok(n)
    };
    for part in field.split(',') {
        let (base, step) = match part.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (part, None),
        };
        if let Some(step) = step {
            let ok = !step.is_empty()
                && step.len() <= 4
                && step.chars().all(|c| c.is_ascii_digit())
                && step.parse::<u32>().is_ok_and(|n| n > 0);
            if !ok {
                return Err(format!(
                    "{part:?}: the repetition must be a positive number"
                ));
            }
        }
        if base == "*" {
            continue;
        }
        match base.split_once("..") {
            Some((a, b)) => {
                if number(a)? > number(b)? {
                    return Err(format!("{part:?}: the range runs backwards"));
                }
            }
            None => {
                number(base)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::golden::assert_golden;

    #[test]
    fn common_schedules_pass() {
        for ok in [
            "daily",
            "Weekly",
            "hourly",
            "*-*-* 03:00:00",
            "Sun 03:00",
            "Mon..Fri 22:30",
            "Sat,Sun *-*-* 04:15:00 UTC",
            "*-*-01 02:00:00",
            "2027-01-01 00:00",
            "*:0/15",
            "*-*-* *:*:0/10",
            "12-24 18:00",
            "Mon",
            "03:00",
            "*-*-*",
        ] {
            assert_eq!(check_on_calendar(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("", "empty"),
            ("every day", "weekday"),
            ("Sun 25:00", "hour 25"),
            ("*-13-01 00:00", "month 13"),
            ("*-*-* 03:60", "minute 60"),
            ("Funday 03:00", "weekday"),
            ("*-*-* 03:00; rm -rf /", "';'"),
            ("daily\nOnCalendar=minutely", "'\\n'"),
            ("*:0/0", "repetition"),
            ("*-*-* 05..01:00", "backwards"),
            ("03:00 Sun", "in that place"),
            ("1,15 04:00", "in that place"),
        ] {
            let why = check_on_calendar(bad).expect_err(bad);
            assert!(why.contains(says), "{bad:?}: {why}");
        }
    }

    /// The tag check against a registry layout on disk: a tag whose layer is gone is named.
    #[test]
    fn the_tag_check_finds_a_tag_that_lost_a_blob() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("docker/registry/v2");
        let blob = |content: &str| -> String {
            use sha2::Digest;
            let hex = hex::encode(sha2::Sha256::digest(content.as_bytes()));
            let d = v2.join("blobs/sha256").join(&hex[..2]).join(&hex);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("data"), content).unwrap();
            format!("sha256:{hex}")
        };
        let tag = |repo: &str, tag: &str, digest: &str| {
            let d = v2
                .join("repositories")
                .join(repo)
                .join("_manifests/tags")
                .join(tag)
                .join("current");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("link"), digest).unwrap();
        };
        let (config, layer) = (blob("{}"), blob("layer bytes"));
        let manifest = |layer: &str| {
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"{config}"}},"layers":[{{"digest":"{layer}"}}]}}"#
            )
        };
        tag("team/app", "1", &blob(&manifest(&layer)));
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}"}}]}}"#,
            blob(&manifest(&layer))
        );
        tag("team/multi", "latest", &blob(&index));
        let run = || {
            let out = std::process::Command::new("python3")
                .args(["-c", TAG_CHECK_PY])
                .arg(&v2)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(run(), "2 0 -");
        // A tag whose layer was collected.
        let lost = "sha256:".to_owned() + &"0".repeat(64);
        tag("team/broken", "v2", &blob(&manifest(&lost)));
        assert_eq!(run(), "3 1 team/broken:v2");
    }

    #[test]
    fn timer_and_service() {
        let timer = gc_timer("Sun 03:00").unwrap();
        assert_golden("registry-gc.timer", &timer);
        assert!(timer.contains("OnCalendar=Sun 03:00\n"));
        assert!(!timer.contains("Persistent"));
        assert!(gc_timer("daily\nExecStart=/bin/sh").is_err());
        let spec = GcSpec {
            schedule: None,
            delete_untagged: true,
        };
        let service = gc_service(&spec);
        assert_golden("registry-gc.service", &service);
        assert!(
            service.contains("ExecStart=/usr/local/lib/registry-gc/collect.sh --delete-untagged\n")
        );
        let plain = gc_service(&GcSpec {
            delete_untagged: false,
            ..spec
        });
        assert!(plain.contains("ExecStart=/usr/local/lib/registry-gc/collect.sh\n"));
    }

    #[test]
    fn the_script_stops_writes_collects_and_restarts_under_a_standby() {
        let script = collect_script(Some(paths::DROPLET_STORAGE)).unwrap();
        assert_golden("registry-gc-collect.sh", &script);
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} missing"))
        };
        // In this order: flag, wait for uploads, collect, standby up, restart, flag gone.
        let steps = [
            "touch \"$FLAG\"",
            "_uploads",
            "garbage-collect",
            "REGISTRY_HTTP_ADDR=\"$STANDBY_ADDR\"",
            "systemctl restart docker-registry",
            "stop_standby\nrm -f \"$FLAG\"",
            "status ok",
        ];
        for w in steps.windows(2) {
            assert!(at(w[0]) < at(w[1]), "{} before {}", w[0], w[1]);
        }
        // Every tag is checked after the restart, before the run says ok.
        assert!(at("tags_broken") < at("status ok"));
        // Whatever happens, the flag goes (the trap).
        assert!(script.contains("trap finish EXIT"));
        assert!(script.contains("STORAGE_ROOT=/var/lib/docker-registry\n"));
        assert!(collect_script(Some("/mnt/a b")).is_err());
        let spaces = collect_script(None).unwrap();
        assert!(spaces.contains("STORAGE_ROOT=\n"));
        assert!(!RUNNING_BODY.contains('\''));
        let body: serde_json::Value = serde_json::from_str(RUNNING_BODY).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    }
}
