#!/usr/bin/python3
# Managed by terraform-provider-docker: the droplet's certificate renewal driver.
# Run by registry-renew.timer: asks the CA's ACME Renewal Information (RFC 9773) when it
# offers it, else renews `renew_before_days` before expiry (the rule the provider's plan
# applies too), then runs Debian's certbot with this script as its hooks. No DigitalOcean
# credential is used or needed: HTTP-01 answers through nginx, DNS-01 through the droplet's
# own DNS server, to which the provider delegated _acme-challenge.<fqdn>.
#
#   renew.py run                 the timer's job (writes the status file)
#   renew.py auth|cleanup        certbot's manual hooks (CERTBOT_* in the environment)
#   renew.py deploy              certbot's deploy hook: install for nginx, reload it
#   renew.py due CERT [START END] [DAYS] [NOW]   print when CERT is due (tests)
#   renew.py crash-cause OUTPUT LOG   the cause of a crashed certbot run (tests)

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import ssl

CONFIG = "/etc/registry-renew/config.json"
ACCOUNT = "/etc/registry-renew/account.json"
STATE_DIR = "/var/lib/registry-renew"
STATUS = STATE_DIR + "/status.json"
# certbot (--quiet) keeps a failed manual hook's output to its log: the auth hook writes
# its reason here for the run to report.
HOOK_ERROR = STATE_DIR + "/auth-hook-error"
LE_DIR = "/etc/letsencrypt"
# Held while the certificate and its key are swapped: the provider reads both, and the
# digests of the droplet's files, under it (renewal_paths::INSTALL_LOCK).
INSTALL_LOCK = "/run/registry-renew.install.lock"
UTC = datetime.timezone.utc
# A short, secret-free cause is all the provider shows; certbot's full log stays on the droplet.
MAX_MESSAGE = 300


def now():
    return datetime.datetime.now(UTC).replace(microsecond=0)


def rfc3339(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s):
    # Python 3.11 reads "Z" and fractions; ARI windows may carry either.
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def load_cert(pem_bytes):
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem_bytes)


def not_after(cert):
    t = getattr(cert, "not_valid_after_utc", None)
    return t if t is not None else cert.not_valid_after.replace(tzinfo=UTC)


def not_before(cert):
    t = getattr(cert, "not_valid_before_utc", None)
    return t if t is not None else cert.not_valid_before.replace(tzinfo=UTC)


def cert_id(cert):
    """RFC 9773 4.1: base64url(AKI keyIdentifier) "." base64url(serial, DER content bytes)."""
    from cryptography import x509

    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    serial = cert.serial_number
    der = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return b64url(aki.value.key_identifier) + "." + b64url(der)


def point_in_window(start, end, issued, expires, cid):
    """The moment to renew inside the CA's window: the window clamped to the certificate's
    life, then a point in it chosen by the certificate id (spread like a random choice, yet
    the same here and in the provider's plan). Whole seconds, integer arithmetic."""
    s = max(int(start.timestamp()), int(issued.timestamp()))
    e = min(int(end.timestamp()), int(expires.timestamp()))
    if e <= s:
        return datetime.datetime.fromtimestamp(min(e, int(start.timestamp())), UTC)
    frac = int.from_bytes(hashlib.sha256(cid.encode()).digest()[:4], "big")
    return datetime.datetime.fromtimestamp(s + (e - s) * frac // 2**32, UTC)


def due_by_days(cert, days):
    return not_after(cert) - datetime.timedelta(days=days)


def https_context(cfg):
    ctx = ssl.create_default_context()
    if cfg.get("ca_bundle"):
        ctx.load_verify_locations(cfg["ca_bundle"])
    return ctx


def get_json(url, ctx):
    req = urllib.request.Request(url, headers={"User-Agent": "registry-renew"})
    with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
        return json.load(r)


def renew_at(cfg, cert):
    """(when, rule): ARI when the directory offers renewalInfo and answers, else the days."""
    ctx = https_context(cfg)
    try:
        directory = get_json(cfg["directory"], ctx)
        base = directory.get("renewalInfo")
        if base:
            cid = cert_id(cert)
            info = get_json(base.rstrip("/") + "/" + cid, ctx)
            w = info["suggestedWindow"]
            at = point_in_window(
                parse_time(w["start"]), parse_time(w["end"]), not_before(cert), not_after(cert), cid
            )
            return at, "ari"
    except Exception as e:  # noqa: BLE001 - any failure falls back to the days, as the plan does
        log("renewal information unavailable (%s); using renew_before_days" % short(e))
    return due_by_days(cert, cfg["renew_before_days"]), "renew_before_days"


def short(e):
    text = " ".join(str(e).split())
    return text[:MAX_MESSAGE]


def log(msg):
    print(msg, flush=True)


def read_status():
    try:
        with open(STATUS) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_atomic(path, data, mode):
    d = os.path.dirname(path)
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".registry-renew.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_status(**fields):
    status = {"checked_at": rfc3339(now())}
    status.update(fields)
    write_atomic(STATUS, (json.dumps(status, sort_keys=True) + "\n").encode(), 0o644)


def install_account(cfg):
    """The registry's own ACME account (from the provider's state) in certbot's layout, so
    the droplet renews with it and no other."""
    from cryptography.hazmat.primitives import serialization
    import josepy

    with open(ACCOUNT) as f:
        creds = json.load(f)
    der = base64.urlsafe_b64decode(creds["key_pkcs8"] + "=" * (-len(creds["key_pkcs8"]) % 4))
    key = serialization.load_der_private_key(der, password=None)
    jwk = josepy.JWK.load(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    account_id = hashlib.md5(pub_pem).hexdigest()
    from urllib.parse import urlparse

    u = urlparse(cfg["directory"])
    accounts = os.path.join(LE_DIR, "accounts", u.netloc + u.path)
    target = os.path.join(accounts, account_id)
    files = {
        "private_key.json": (json.dumps(jwk.to_json()), 0o400),
        "regr.json": (json.dumps({"body": {}, "uri": creds["id"]}), 0o644),
        "meta.json": (json.dumps({"creation_dt": "2020-01-01T00:00:00Z",
                                  "creation_host": "terraform-provider-docker"}), 0o644),
    }
    os.makedirs(target, mode=0o700, exist_ok=True)
    # Only this account: certbot picks the one it finds.
    if os.path.isdir(accounts):
        for other in os.listdir(accounts):
            if other != account_id:
                shutil.rmtree(os.path.join(accounts, other), ignore_errors=True)
    for name, (text, mode) in files.items():
        write_atomic(os.path.join(target, name), text.encode(), mode)


def ca_bundle_env(cfg):
    """certbot's requests: the system's roots plus the provider's extra ones, if any."""
    env = dict(os.environ)
    if cfg.get("ca_bundle"):
        bundle = os.path.join(STATE_DIR, "ca-bundle.pem")
        parts = []
        for p in ("/etc/ssl/certs/ca-certificates.crt", cfg["ca_bundle"]):
            try:
                with open(p, "rb") as f:
                    parts.append(f.read())
            except OSError:
                pass
        write_atomic(bundle, b"\n".join(parts), 0o644)
        env["REQUESTS_CA_BUNDLE"] = bundle
    return env


def failure_cause(output):
    """The lines of certbot's output that say why, without its advice boilerplate."""
    keep = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith(("Saving debug log", "Hint:", "Ask for help", "See the logfile",
                                        "Some challenges have failed", "Certbot failed to authenticate")):
            continue
        if re.search(r"(Type|Detail|Error|error|failed|Failed|refused|timeout|Timeout)", line):
            keep.append(line)
    text = " ".join(keep) or " ".join(output.split()[-40:])
    return short(text)


CERTBOT_LOG = "/var/log/letsencrypt/letsencrypt.log"
ACME_PROBLEM = re.compile(r"\{[^{}]*urn:ietf:params:acme:error:[^{}]*\}")


def acme_problem(log_text):
    """The last ACME problem document (RFC 8555 section 6.7) in certbot's debug log, as
    (type, detail), or None. Debian 12's certbot on Python 3.11 reports every ACME error
    response as "AttributeError: can't set attribute" (certbot#9539); its log still holds the
    server's answer, which is the cause worth showing."""
    found = None
    for m in ACME_PROBLEM.finditer(log_text):
        try:
            doc = json.loads(m.group(0))
        except ValueError:
            continue
        kind = str(doc.get("type", "")).rsplit(":", 1)[-1]
        if kind:
            found = (kind, str(doc.get("detail", "")))
    return found


def certbot_crash_cause(output, log_path=CERTBOT_LOG):
    """For a certbot run that crashed on an ACME error: (type, "the CA answered TYPE: DETAIL")
    from its log (each run writes a new one); None otherwise."""
    if "can't set attribute" not in output and "An unexpected error occurred" not in output:
        return None
    try:
        with open(log_path, errors="replace") as f:
            problem = acme_problem(f.read())
    except OSError:
        return None
    if problem is None:
        return None
    kind, detail = problem
    return kind, short("the CA answered %s: %s" % (kind, detail))


def certbot(cfg):
    me = os.path.realpath(__file__)
    hook = lambda what: "/usr/bin/python3 %s %s" % (me, what)  # noqa: E731
    challenge = "dns" if cfg["challenge"] == "dns-01" else "http"
    args = [
        "certbot", "certonly", "--non-interactive", "--agree-tos", "--quiet",
        "--server", cfg["directory"], "--cert-name", cfg["fqdn"], "-d", cfg["fqdn"],
        "--manual", "--preferred-challenges", challenge,
        "--manual-auth-hook", hook("auth"), "--manual-cleanup-hook", hook("cleanup"),
        "--deploy-hook", hook("deploy"), "--force-renewal",
        "--config-dir", LE_DIR, "--work-dir", "/var/lib/letsencrypt",
        "--logs-dir", "/var/log/letsencrypt",
    ]
    kt = cfg["key_type"]
    if kt == "ecdsa-p256":
        args += ["--key-type", "ecdsa", "--elliptic-curve", "secp256r1"]
    else:
        args += ["--key-type", "rsa", "--rsa-key-size", kt.split("-")[1]]
    return subprocess.run(args, env=ca_bundle_env(cfg), capture_output=True, text=True, timeout=600)


def run():
    with open(CONFIG) as f:
        cfg = json.load(f)
    previous = read_status()
    try:
        with open(cfg["cert"], "rb") as f:
            cert = load_cert(f.read())
        at, rule = renew_at(cfg, cert)
        serial = "%x" % cert.serial_number
    except Exception as e:  # noqa: BLE001 - an unreadable certificate is renewed
        at, rule, serial = now(), "unreadable certificate (%s)" % short(e), ""
    if now() < at:
        log("not due: renew at %s (%s)" % (rfc3339(at), rule))
        write_status(result="waiting", renew_at=rfc3339(at), rule=rule, serial=serial)
        return 0
    log("due since %s (%s): renewing" % (rfc3339(at), rule))
    try:
        os.unlink(HOOK_ERROR)
    except FileNotFoundError:
        pass
    crash = None
    try:
        install_account(cfg)
        # A nonce the CA rejects (badNonce) is transient by definition (RFC 8555 section
        # 6.5): certbot retries it once itself, crashes on a second one; one more run here.
        for attempt in (1, 2):
            done = certbot(cfg)
            ok, out = done.returncode == 0, (done.stdout or "") + "\n" + (done.stderr or "")
            crash = None if ok else certbot_crash_cause(out)
            if ok or crash is None or crash[0] != "badNonce" or attempt == 2:
                break
            log("the CA rejected a nonce (%s): running certbot again" % crash[1])
    except Exception as e:  # noqa: BLE001 - reported, retried at the next run
        ok, out = False, "%s: %s" % (type(e).__name__, e)
    if ok:
        with open(cfg["cert"], "rb") as f:
            new = load_cert(f.read())
        log("renewed: serial %x, expires %s" % (new.serial_number, rfc3339(not_after(new))))
        new_at, new_rule = renew_at(cfg, new)
        write_status(result="renewed", renew_at=rfc3339(new_at), rule=new_rule,
                     serial="%x" % new.serial_number, renewed_at=rfc3339(now()))
        return 0
    cause = crash[1] if crash else failure_cause(out)
    try:
        with open(HOOK_ERROR) as f:
            cause = short(f.read().strip() + "; " + cause)
    except FileNotFoundError:
        pass
    log("renewal failed: %s" % cause)
    since = previous.get("failing_since") if previous.get("result") == "failed" else None
    write_status(result="failed", renew_at=rfc3339(at), rule=rule, serial=serial,
                 message=cause, failing_since=since or rfc3339(now()))
    # The status file and the journal say it failed; the timer tries again at its next run.
    return 0


def challenge_name(cfg):
    return "_acme-challenge.%s." % cfg["fqdn"]


def nsupdate(commands):
    done = subprocess.run(["nsupdate", "-l"], input=commands, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit("nsupdate failed: " + short(done.stderr or done.stdout))


def auth(cleanup=False):
    with open(CONFIG) as f:
        cfg = json.load(f)
    validation = os.environ.get("CERTBOT_VALIDATION", "")
    if cfg["challenge"] == "dns-01":
        op = "delete" if cleanup else "add"
        ttl = "" if cleanup else " 30"
        nsupdate('update %s %s%s TXT "%s"\nsend\n' % (op, challenge_name(cfg), ttl, validation))
        return 0
    token = os.environ.get("CERTBOT_TOKEN", "")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise SystemExit("certbot passed a token that is not base64url")
    path = os.path.join(cfg["webroot"], token)
    if cleanup:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        write_atomic(path, validation.encode(), 0o644)
    return 0


def deploy():
    """Installs the new certificate where nginx reads it, atomically, and reloads nginx: the
    old workers finish their requests with the old certificate."""
    with open(CONFIG) as f:
        cfg = json.load(f)
    lineage = os.environ["RENEWED_LINEAGE"]
    with open(os.path.join(lineage, "fullchain.pem"), "rb") as f:
        chain = f.read()
    with open(os.path.join(lineage, "privkey.pem"), "rb") as f:
        key = f.read()
    write_atomic(cfg["key"] + ".new", key, 0o600)
    write_atomic(cfg["cert"] + ".new", chain, 0o644)
    import fcntl
    with open(INSTALL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.rename(cfg["key"] + ".new", cfg["key"])
        os.rename(cfg["cert"] + ".new", cfg["cert"])
    test = subprocess.run(["nginx", "-t"], capture_output=True, text=True)
    if test.returncode != 0:
        raise SystemExit("nginx -t rejected the new certificate: " + short(test.stderr))
    subprocess.run(["systemctl", "reload", "nginx"], check=True)
    return 0


def due_command(args):
    with open(args[0], "rb") as f:
        cert = load_cert(f.read())
    if len(args) >= 3 and args[1] != "-":
        at = point_in_window(parse_time(args[1]), parse_time(args[2]), not_before(cert),
                             not_after(cert), cert_id(cert))
    else:
        at = due_by_days(cert, int(args[3]) if len(args) > 3 else 30)
    print(json.dumps({"id": cert_id(cert), "renew_at": rfc3339(at)}))
    return 0


def main(argv):
    cmd = argv[1] if len(argv) > 1 else "run"
    if cmd == "run":
        return run()
    if cmd == "auth":
        try:
            return auth()
        except SystemExit as e:
            write_atomic(HOOK_ERROR, str(e.code).encode(), 0o644)
            raise
    if cmd == "cleanup":
        return auth(cleanup=True)
    if cmd == "deploy":
        return deploy()
    if cmd == "due":
        return due_command(argv[2:])
    if cmd == "crash-cause":
        with open(argv[2]) as f:
            print(json.dumps(certbot_crash_cause(f.read(), argv[3])))
        return 0
    print("usage: renew.py run|auth|cleanup|deploy|due|crash-cause", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
