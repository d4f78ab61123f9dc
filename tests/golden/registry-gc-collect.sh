#!/bin/bash
# Managed by terraform-provider-docker: one garbage collection of the registry, pulls served
# throughout. Usage: collect.sh [--delete-untagged]
set -euo pipefail
umask 022
CONFIG=/etc/docker/registry/provider.yml
REGISTRY=/usr/bin/docker-registry
FLAG=/etc/nginx/registry/gc-running
STATUS=/var/lib/registry-gc/status.json
STORAGE_ROOT=/var/lib/docker-registry
UPLOAD_WAIT=300
STANDBY_ADDR=127.0.0.1:5001
untagged=false
args=()
if [ "${1:-}" = --delete-untagged ]; then
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
status() {
  local tmp
  tmp=$(mktemp "$(dirname "$STATUS")/.status.XXXXXX")
  printf '{"result":"%s","started_at":"%s","finished_at":"%s","finished_unix":%s,"seconds":%s,"freed_bytes":%s,"blobs_deleted":%s,"tags_checked":%s,"tags_broken":%s,"delete_untagged":%s,"message":"%s"}\n' \
    "$1" "$started" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(date +%s)" "$(( $(date +%s) - t0 ))" "$2" "$3" "$tags_checked" "$tags_broken" "$untagged" \
    "$(printf '%s' "$4" | tr -d '"\\' | tr '\000-\037' ' ' | cut -c1-300)" > "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$STATUS"
}

stop_standby() {
  if [ -n "$standby" ]; then
    # SIGTERM: the standby drains what it serves (http.draintimeout) before it exits.
    kill -TERM "$standby" 2>/dev/null || true
    wait "$standby" 2>/dev/null || true
    standby=""
  fi
}

finish() {
  local rc=$?
  stop_standby
  rm -f "$FLAG"
  if [ "$rc" != 0 ]; then
    status failed null null "$(tail -n 3 "$log" 2>/dev/null | tr '\n' ' ')"
  fi
  rm -f "$log"
}
trap finish EXIT

fail() { printf '%s\n' "$*" >> "$log"; printf 'registry-gc: %s\n' "$*" >&2; exit 1; }

# Bytes the registry stores (disk storage only; the S3 driver's bucket is not measured here).
used() {
  if [ -n "$STORAGE_ROOT" ] && [ -d "$STORAGE_ROOT" ]; then
    du -sb "$STORAGE_ROOT" | cut -f1
  else
    echo null
  fi
}

# 1. Writes refused from now on (nginx tests the file on every request).
touch "$FLAG"

# 2. Requests nginx passed on before the flag: let them land. An upload in flight writes its
# _uploads data as it streams; wait until none has been written for 6 s.
sleep 2
if [ -n "$STORAGE_ROOT" ]; then
  repos="$STORAGE_ROOT/docker/registry/v2/repositories"
  while [ -d "$repos" ] && [ -n "$(find "$repos" -path '*/_uploads/*' -type f -mmin -0.1 -print -quit 2>/dev/null)" ]; do
    if [ $(( $(date +%s) - t0 )) -ge "$UPLOAD_WAIT" ]; then
      fail "uploads were still running after ${UPLOAD_WAIT}s: nothing collected, try again later"
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
    env -u AWS_CA_BUNDLE "$REGISTRY" garbage-collect "${args[@]}" "$CONFIG" > "$log" 2>&1; then
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
import json, os, sys
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
__TAGS__
  ) || true
  if [ -z "${tags_broken:-}" ]; then
    # The check itself failed (no python3?): say nothing rather than something wrong.
    tags_checked=null
    tags_broken=null
  elif [ "$tags_broken" != 0 ]; then
    status broken "$freed" "${deleted:-0}" "$tags_broken of $tags_checked tags lost a blob, first $first_broken"
    exit 0
  fi
fi
status ok "$freed" "${deleted:-0}" ""
