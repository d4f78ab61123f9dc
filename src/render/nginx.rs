//! The nginx site in front of the registry: TLS on :443, the token endpoint, the web page
//! (`ui`), ACME on :80. Written for Debian 12's nginx 1.22 with njs 0.7.9 (`libnginx-mod-http-js`), inside `http {}`.

use std::fmt::Write;

use super::{check_plain, gc, paths, ui, RegistrySpec, RenderError, TokenKey, TOKEN_PATH};

/// The Basic realm of the token endpoint, which clients see when their password is refused.
pub const REALM: &str = "Registry";

/// Token requests carrying credentials, per client address: each costs one bcrypt, so this
/// bounds what a password guesser can take from the droplet's CPU (about 10 checks of ~15 ms a
/// second per address). A docker operation asks for one or two tokens; the burst absorbs a
/// CI job starting many pulls at once.
pub const TOKEN_RATE: &str = "10r/s";
pub const TOKEN_BURST: u32 = 40;

/// Where `GET /v2/_catalog` with a password goes (an internal redirect): nginx checks the
/// password, then the njs handler fetches the registry's listing with a catalog token.
pub const CATALOG_WITH_PASSWORD: &str = "/_registry/catalog-with-password";
/// The handler's subrequest to the registry's `/v2/_catalog`, with that token.
/// Where a load balancer checks each droplet (see [`health_location`]).
pub const HEALTH_PATH: &str = "/healthz";

/// The load balancer's health check, when there is one: the registry itself, straight (not
/// through the upstream, whose backup answers while the registry is down), with no
/// credentials. The registry answers 200 at `/` while it runs and its storage checks pass,
/// 503 when they fail.
fn health_location(spec: &RegistrySpec) -> String {
    if !spec.health_check {
        return String::new();
    }
    format!(
        "    # A load balancer's health check: the registry itself, with no credentials.\n    location = {HEALTH_PATH} {{\n        access_log off;\n        proxy_pass http://127.0.0.1:5000/;\n    }}\n\n"
    )
}

pub const CATALOG_UPSTREAM: &str = "/_registry/catalog-upstream";

/// The site file. User changes never require rendering it again: nginx reads the htpasswd
/// files on every token request, so only the certificate paths, the fqdn, the token key's id,
/// `anonymous_pull` and `ui` live here (changing those reloads nginx, which drops no connection).
pub fn nginx_site(spec: &RegistrySpec, token: &TokenKey) -> Result<String, RenderError> {
    check_plain("fqdn", &spec.fqdn)?;
    check_plain("certificate path", &spec.tls.cert_chain)?;
    check_plain("private key path", &spec.tls.private_key)?;
    check_plain("ACME HTTP-01 directory", &spec.acme_http01_dir)?;
    check_plain("token key id", &token.kid)?;
    let fqdn = &spec.fqdn;
    let acme_dir = spec.acme_http01_dir.trim_end_matches('/');
    let mut out = String::new();
    let w = &mut out;
    // `write!` into a String cannot fail; the results are ignored on purpose below.
    let _ = writeln!(
        w,
        "# Managed by terraform-provider-docker: hand edits are undone by the next apply.\n"
    );
    // A long fqdn overflows the default bucket (64) and nginx refuses to start; Debian's
    // nginx.conf leaves this directive commented out, so setting it here is not a duplicate.
    let _ = writeln!(w, "server_names_hash_bucket_size 128;\n");
    let _ = writeln!(w, "js_import registry_token from {};\n", paths::TOKEN_JS);
    // HTTP/1.1 with keepalive to the registry: chunked uploads (docker's PATCHes) stream
    // through instead of being spooled to disk, and requests skip a TCP handshake each.
    // The backup answers only while a garbage collection restarts the registry (see
    // `gc::STANDBY_ADDR`): nginx tries it when the main one refuses a connection, so pulls
    // never see the restart. `max_fails=0`: the main one is never set aside for the others.
    let _ = writeln!(
        w,
        "upstream docker_registry {{\n    server 127.0.0.1:5000 max_fails=0;\n    server {} backup;\n    keepalive 32;\n}}\n",
        gc::STANDBY_ADDR
    );
    // The registry sets Docker-Distribution-Api-Version on its own responses; nginx adds it
    // only where it is missing (its own errors), as the distribution docs' recipe does, so
    // clients never see the header twice.
    let _ = writeln!(
        w,
        "map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{\n    \
         \"\" \"registry/2.0\";\n}}\n"
    );
    // Anonymous token requests (no credentials, so no bcrypt) are not counted: an empty key
    // is not limited. skopeo sends empty credentials (`Basic Og==`, base64 of ":") when it
    // has none.
    let _ = writeln!(
        w,
        "map $http_authorization $registry_credentials_client {{\n    \
         \"\"            \"\";\n    \
         \"Basic Og==\"  \"\";\n    \
         default       $binary_remote_addr;\n}}\n\n\
         limit_req_zone $registry_credentials_client zone=registry_token:1m rate={TOKEN_RATE};\n"
    );
    // `GET /v2/_catalog` as the old module's README has people browse it: a browser (no
    // credentials yet, then Basic) or `curl -u` gets a Basic challenge and its password
    // checked here. A token (docker, skopeo, the web page) goes to the registry as on every
    // /v2/ path, so nothing changes for them; `GET /v2/`, where docker decides how to
    // authenticate, keeps answering the registry's Bearer challenge.
    let _ = writeln!(
        w,
        "map $http_authorization $registry_catalog_with_password {{\n    \
         default        0;\n    \
         \"\"             1;\n    \
         \"~*^basic\\s\"  1;\n}}\n\n\
         # The catalog token the handler made, for its subrequest only (never logged).\n\
         js_var $registry_catalog_bearer;\n"
    );
    if spec.ui {
        let _ = write!(w, "{}", ui::maps());
    }
    // Pulls read; everything else writes (or deletes).
    let _ = writeln!(
        w,
        "map $request_method $registry_write_method {{\n    \
         GET      0;\n    \
         HEAD     0;\n    \
         OPTIONS  0;\n    \
         default  1;\n}}\n"
    );
    if spec.anonymous_pull {
        // nginx treats an auth_basic realm that evaluates to "off" as "no auth", and reads the
        // variable per request: a token request without credentials gets through (the handler
        // then grants pull only); credentials that are sent are still checked, so a wrong
        // password fails `docker login` instead of passing as anonymous.
        let _ = writeln!(
            w,
            "map $http_authorization $registry_token_realm {{\n    \
             \"\"            off;\n    \
             \"Basic Og==\"  off;\n    \
             default       \"{REALM}\";\n}}\n"
        );
    }
    let _ = writeln!(
        w,
        "server {{
    listen 80 default_server;
    listen [::]:80 default_server;
    server_name {fqdn};
    server_tokens off;

    # HTTP-01 answers: files named after their token.
    location ^~ /.well-known/acme-challenge/ {{
        alias {acme_dir}/;
        default_type text/plain;
    }}

{health}    # The fqdn, not $host: a forged Host header must not turn this into an open redirect.
    location / {{
        return 301 https://{fqdn}$request_uri;
    }}
}}
",
        health = health_location(spec)
    );
    let realm = if spec.anonymous_pull {
        "$registry_token_realm".to_owned()
    } else {
        format!("\"{REALM}\"")
    };
    let _ = writeln!(
        w,
        "server {{
    listen 443 ssl http2 default_server;
    listen [::]:443 ssl http2 default_server;
    server_name {fqdn};
    server_tokens off;

    ssl_certificate {cert};
    ssl_certificate_key {key};
    # TLS 1.2 with forward secrecy and AEAD ciphers only, and TLS 1.3 (whose suites all are).
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    # Our order (ECDSA and AES-GCM first), not the client's: a client offering a weaker
    # suite first still gets a strong one.
    ssl_prefer_server_ciphers on;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_session_cache shared:registry_tls:10m;
    ssl_session_timeout 1h;
    # Ticket keys would live for the whole life of the nginx master, undoing forward secrecy.
    ssl_session_tickets off;

    # Every response, errors included. Set here and in no location (a location's add_header
    # would hide the server's).
    add_header Strict-Transport-Security \"max-age=63072000\" always;
    # Clients check this header, on 401s too, to know they speak to a v2 registry.
    add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
    # Set only on a push refused during a garbage collection (empty: no header).
    set $registry_retry_after \"\";
    add_header Retry-After $registry_retry_after always;
{ui_headers}
    # Layers come compressed already, manifests are small; and compressing responses that
    # carry tokens would open the door to BREACH-style guessing (Debian turns gzip on).
    gzip off;

    # Layers are gigabytes; the registry, not nginx, decides what is too big.
    client_max_body_size 0;
    # docker push streams layers chunked.
    chunked_transfer_encoding on;

    # The token endpoint (the registry's Bearer realm). The password is checked here, once
    # per docker operation, by nginx's own bcrypt (auth_basic reads the file per request, so
    # user changes need no reload); the handler signs a short-lived token with the scopes
    # the user holds. The limit comes before the password check (preaccess phase).
    location = {token_path} {{
        limit_req zone=registry_token burst={TOKEN_BURST} nodelay;
        limit_req_status 429;
        auth_basic {realm};
        auth_basic_user_file {htpasswd};
{token_settings}        js_content registry_token.token;
    }}

    # The registry checks each request's token itself (a signature check, no bcrypt), and
    # answers a request without one with 401 and its Bearer challenge, in every mode.
    location /v2/ {{
        # Destroy stops writes before it measures the stored images, so that nothing lands
        # after it looked: while this file exists, every write answers 503 with the reason.
        # (Checked per request: creating or removing it needs no reload.)
        set $registry_refuse_write \"\";
        if (-f {writes_stopped}) {{
            set $registry_refuse_write $registry_write_method;
        }}
        if ($registry_refuse_write = 1) {{
            return 503 '{writes_stopped_body}';
        }}
        # A garbage collection: pushes and deletes wait (Retry-After); pulls go on.
        set $registry_gc_write \"\";
        if (-f {gc_running}) {{
            set $registry_gc_write $registry_write_method;
        }}
        if ($registry_gc_write = 1) {{
            set $registry_retry_after {retry_after};
            return 503 '{gc_running_body}';
        }}
        # A volume snapshot (docker_registry_snapshot): the same, while it is taken.
        set $registry_snapshot_write \"\";
        if (-f {snapshot_running}) {{
            set $registry_snapshot_write $registry_write_method;
        }}
        if ($registry_snapshot_write = 1) {{
            set $registry_retry_after {snapshot_retry_after};
            return 503 '{snapshot_body}';
        }}
{proxy}        proxy_pass http://docker_registry;
    }}

    # The catalog as the old module's README shows it (see the map above): with a token,
    # the registry's as anywhere under /v2/; with a password or none, the password check.
    location = /v2/_catalog {{
        if ($registry_catalog_with_password) {{
            rewrite ^ {catalog_with_password} last;
        }}
{proxy}        proxy_pass http://docker_registry;
    }}

    # The password is checked as at the token endpoint (same limit, same files); the handler
    # then lists with a token for `registry:catalog:*` only, which every user holds.
    location = {catalog_with_password} {{
        internal;
        limit_req zone=registry_token burst={TOKEN_BURST} nodelay;
        limit_req_status 429;
        auth_basic \"{REALM}\";
        auth_basic_user_file {htpasswd};
{token_settings}        js_content registry_token.catalog;
    }}

    location = {catalog_upstream} {{
        internal;
{proxy}        proxy_set_header Authorization $registry_catalog_bearer;
        # The handler holds the listing in memory (1000 names at most per page).
        subrequest_output_buffer_size 1m;
        proxy_pass http://docker_registry/v2/_catalog;
    }}

{ui_locations}    location / {{
        return 404;
    }}
}}
",
        proxy = PROXY_TO_REGISTRY,
        catalog_with_password = CATALOG_WITH_PASSWORD,
        catalog_upstream = CATALOG_UPSTREAM,
        token_settings = format!(
            "        set $registry_token_issuer \"{issuer}\";
        set $registry_token_service \"{fqdn}\";
        set $registry_token_kid \"{kid}\";
        set $registry_token_anonymous_pull {anonymous};
        set $registry_token_key {token_key};
        set $registry_token_push_users {htpasswd_push};
",
            issuer = token_issuer(fqdn),
            kid = token.kid,
            anonymous = if spec.anonymous_pull { "on" } else { "off" },
            token_key = paths::TOKEN_KEY,
            htpasswd_push = paths::HTPASSWD_PUSH,
        ),
        writes_stopped = paths::WRITES_STOPPED,
        writes_stopped_body = WRITES_STOPPED_BODY,
        gc_running = gc::gc_paths::RUNNING,
        gc_running_body = gc::RUNNING_BODY,
        retry_after = gc::RETRY_AFTER_SECS,
        snapshot_running = super::snapshot::RUNNING,
        snapshot_body = super::snapshot::RUNNING_BODY,
        snapshot_retry_after = super::snapshot::RETRY_AFTER_SECS,
        cert = spec.tls.cert_chain,
        key = spec.tls.private_key,
        token_path = TOKEN_PATH,
        htpasswd = paths::HTPASSWD,
        ui_headers = if spec.ui { ui::server_headers() } else { String::new() },
        ui_locations = if spec.ui { ui::locations() } else { String::new() },
    );
    Ok(out)
}

/// How every location in front of the registry proxies (before its `proxy_pass`).
const PROXY_TO_REGISTRY: &str =
    "        # As the distribution docs recommend: the registry builds upload Location URLs from
        # these, and logs the real client address.
        proxy_set_header Host $http_host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        # Large layer uploads and slow storage backends (Spaces) can be quiet for minutes.
        proxy_read_timeout 900;
        proxy_send_timeout 900;
        # Stream both ways: buffering a multi-gigabyte layer to nginx's temp dir would fill
        # the droplet's disk and double the transfer time.
        proxy_request_buffering off;
        proxy_buffering off;
";

/// What a write gets while writes are stopped: the registry API's error shape, which docker
/// and skopeo print. No single quote (it is an nginx string in single quotes).
pub const WRITES_STOPPED_BODY: &str = r#"{"errors":[{"code":"UNAVAILABLE","message":"pushes and deletes are stopped: terraform-provider-docker is destroying this registry and measures its stored images first; reads still work","detail":null}]}"#;

/// The token endpoint's URL: the registry's Bearer realm, and the tokens' issuer.
pub fn token_realm(fqdn: &str) -> String {
    format!("https://{fqdn}{TOKEN_PATH}")
}

/// The `iss` of every token; the registry accepts no other.
pub fn token_issuer(fqdn: &str) -> String {
    token_realm(fqdn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::golden::assert_golden;
    use crate::render::{fixtures, token_key, Storage, TOKEN_JS};

    fn site(spec: &RegistrySpec) -> String {
        nginx_site(spec, &token_key(&spec.http_secret).unwrap()).unwrap()
    }

    /// The text of the block that starts at `opening` (up to its closing brace).
    fn block<'a>(text: &'a str, opening: &str) -> &'a str {
        let start = text
            .find(opening)
            .unwrap_or_else(|| panic!("{opening} in {text}"));
        let rest = &text[start..];
        &rest[..rest.find("\n    }").unwrap()]
    }

    #[test]
    fn private_registry() {
        let spec = fixtures::spec(Storage::Droplet);
        let text = site(&spec);
        assert_golden("nginx-private.conf", &text);
        assert!(text.contains("listen 443 ssl http2 default_server;"));
        let token = block(&text, "location = /token {");
        assert!(token.contains("auth_basic \"Registry\";"), "{token}");
        assert!(token.contains("auth_basic_user_file /etc/nginx/registry/htpasswd;"));
        assert!(token.contains("set $registry_token_anonymous_pull off;"));
        assert!(token.contains("js_content registry_token.token;"));
        assert!(!text.contains("$registry_token_realm"));
        // The registry authenticates every /v2/ request itself: nginx only proxies there.
        let v2 = block(&text, "location /v2/ {");
        assert!(!v2.contains("auth_basic"), "{v2}");
        assert!(v2.contains("proxy_http_version 1.1;"));
        assert!(v2.contains("proxy_set_header Connection \"\";"));
        assert!(v2.contains("proxy_request_buffering off;"));
    }

    #[test]
    fn anonymous_pull() {
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.anonymous_pull = true;
        let text = site(&spec);
        assert_golden("nginx-anonymous-pull.conf", &text);
        let token = block(&text, "location = /token {");
        assert!(
            token.contains("auth_basic $registry_token_realm;"),
            "{token}"
        );
        assert!(token.contains("set $registry_token_anonymous_pull on;"));
        // Only a request without credentials skips the password check.
        let map = block(&text, "map $http_authorization $registry_token_realm {");
        assert!(map.contains("default       \"Registry\";"), "{map}");
        // /v2/ is the same in both modes: the Bearer challenge comes from the registry.
        let private = site(&fixtures::spec(Storage::Droplet));
        assert_eq!(
            block(&text, "location /v2/ {"),
            block(&private, "location /v2/ {")
        );
    }

    #[test]
    fn the_web_page() {
        let private = site(&fixtures::spec(Storage::Droplet));
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.ui = true;
        let text = site(&spec);
        assert_golden("nginx-ui.conf", &text);
        // Without `ui` nothing of the page is there: `/` answers 404 as before.
        for line in [
            "Content-Security-Policy",
            "/var/www/registry-ui",
            "$registry_nosniff",
        ] {
            assert!(!private.contains(line), "{line}");
            assert!(text.contains(line), "{line}");
        }
        let https = &text[text.find("listen 443").unwrap()..];
        let csp = format!(
            "    add_header Content-Security-Policy \"{}\" always;\n",
            ui::CONTENT_SECURITY_POLICY
        );
        // Server-wide, before any location, like HSTS.
        let first_location = https.find("\n    location ").unwrap();
        assert!(https.find(&csp).unwrap() < first_location);
        for f in ui::FILES {
            let loc = block(https, &format!("location = {} {{", f.location));
            assert!(loc.contains("expires -1;"), "{loc}");
        }
        // The token endpoint and /v2/ are the same as without the page.
        for opening in ["location = /token {", "location /v2/ {", "    location / {"] {
            assert_eq!(block(&text, opening), block(&private, opening), "{opening}");
        }
        let map = block(
            &text,
            "map $upstream_http_x_content_type_options $registry_nosniff {",
        );
        assert!(map.contains("\"\"       nosniff;"), "{map}");
    }

    #[test]
    fn writes_answer_503_while_the_stop_file_exists() {
        let text = site(&fixtures::spec(Storage::Droplet));
        let v2 = block(&text, "location /v2/ {");
        assert!(
            v2.contains(&format!("if (-f {}) {{", paths::WRITES_STOPPED)),
            "{v2}"
        );
        assert!(
            v2.contains(&format!("return 503 '{WRITES_STOPPED_BODY}';")),
            "{v2}"
        );
        // Reads go on; every other method is a write.
        let map = block(&text, "map $request_method $registry_write_method {");
        for read in ["GET      0;", "HEAD     0;", "OPTIONS  0;", "default  1;"] {
            assert!(map.contains(read), "{map}");
        }
        assert!(!WRITES_STOPPED_BODY.contains('\''));
        // A garbage collection refuses writes the same way, saying why and when to retry.
        assert!(
            v2.contains(&format!("if (-f {}) {{", gc::gc_paths::RUNNING)),
            "{v2}"
        );
        assert!(v2.contains("set $registry_retry_after 30;"), "{v2}");
        assert!(v2.contains(&format!("return 503 '{}';", gc::RUNNING_BODY)));
        assert!(text.contains("    add_header Retry-After $registry_retry_after always;\n"));
        // Pulls reach the standby while the registry restarts after a collection.
        let upstream = block(&text, "upstream docker_registry {");
        assert!(
            upstream.contains("server 127.0.0.1:5001 backup;"),
            "{upstream}"
        );
        let body: serde_json::Value = serde_json::from_str(WRITES_STOPPED_BODY).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNAVAILABLE");
    }

    #[test]
    fn careful_tls_and_headers() {
        let text = site(&fixtures::spec(Storage::Droplet));
        assert!(text.contains("ssl_protocols TLSv1.2 TLSv1.3;"));
        assert!(text.contains("ssl_prefer_server_ciphers on;"));
        let ciphers = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("ssl_ciphers "))
            .unwrap()
            .trim_end_matches(';');
        for c in ciphers.split(':') {
            assert!(c.starts_with("ECDHE-"), "{c} lacks forward secrecy");
            assert!(
                c.contains("GCM") || c.contains("CHACHA20-POLY1305"),
                "{c} is not AEAD"
            );
        }
        assert!(text.contains("add_header Strict-Transport-Security \"max-age=63072000\" always;"));
        assert_eq!(text.matches("server_tokens off;").count(), 2);
        assert!(text.contains("    gzip off;\n"));
        // A location with its own add_header would drop the server's HSTS header.
        let https = &text[text.find("listen 443").unwrap()..];
        let locations = &https[https.find("\n    location ").unwrap()..];
        assert!(!locations.contains("add_header"), "{locations}");
    }

    #[test]
    fn token_requests_with_credentials_are_rate_limited() {
        let text = site(&fixtures::spec(Storage::Droplet));
        assert!(text.contains(&format!(
            "limit_req_zone $registry_credentials_client zone=registry_token:1m rate={TOKEN_RATE};"
        )));
        let map = block(
            &text,
            "map $http_authorization $registry_credentials_client {",
        );
        assert!(map.contains("\"\"            \"\";"), "{map}");
        assert!(map.contains("default       $binary_remote_addr;"), "{map}");
        let token = block(&text, "location = /token {");
        assert!(token.contains(&format!(
            "limit_req zone=registry_token burst={TOKEN_BURST} nodelay;"
        )));
    }

    #[test]
    fn token_settings_name_the_registry_and_its_key() {
        let spec = fixtures::spec(Storage::Droplet);
        let key = token_key(&spec.http_secret).unwrap();
        let text = site(&spec);
        let token = block(&text, "location = /token {");
        assert!(token.contains(&format!("set $registry_token_kid \"{}\";", key.kid)));
        assert!(token.contains("set $registry_token_service \"registry.example.com\";"));
        assert!(
            token.contains("set $registry_token_issuer \"https://registry.example.com/token\";")
        );
        assert!(token.contains("set $registry_token_key /etc/nginx/registry/token-key.pem;"));
        assert!(token.contains("set $registry_token_push_users /etc/nginx/registry/htpasswd-push;"));
        // The key itself is never in the site (which is world-readable).
        assert!(!text.contains("PRIVATE KEY"));
    }

    #[test]
    fn the_catalog_answers_a_password_and_tokens_as_before() {
        for anonymous_pull in [false, true] {
            let mut spec = fixtures::spec(Storage::Droplet);
            spec.anonymous_pull = anonymous_pull;
            let text = site(&spec);
            // No credentials or Basic ones (any case): the password route; tokens: the registry.
            let map = block(
                &text,
                "map $http_authorization $registry_catalog_with_password {",
            );
            assert!(map.contains("default        0;"), "{map}");
            assert!(map.contains("\"\"             1;"), "{map}");
            assert!(map.contains("\"~*^basic\\s\"  1;"), "{map}");
            assert!(text.contains("js_var $registry_catalog_bearer;"));
            let catalog = block(&text, "location = /v2/_catalog {");
            assert!(
                catalog.contains(&format!(
                    "if ($registry_catalog_with_password) {{\n            rewrite ^ {CATALOG_WITH_PASSWORD} last;\n        }}"
                )),
                "{catalog}"
            );
            // With a token, proxied exactly as every /v2/ path.
            let v2 = block(&text, "location /v2/ {");
            assert!(catalog.contains(PROXY_TO_REGISTRY) && v2.contains(PROXY_TO_REGISTRY));
            assert!(
                catalog.ends_with("proxy_pass http://docker_registry;"),
                "{catalog}"
            );
            assert!(!v2.contains("auth_basic") && !catalog.contains("auth_basic"));
            // The password: checked by nginx against every user, limited as token requests,
            // whatever anonymous pull says (a browser must be asked, never let through).
            let password = block(&text, &format!("location = {CATALOG_WITH_PASSWORD} {{"));
            for line in [
                "internal;",
                "auth_basic \"Registry\";",
                "auth_basic_user_file /etc/nginx/registry/htpasswd;",
                &format!("limit_req zone=registry_token burst={TOKEN_BURST} nodelay;"),
                "limit_req_status 429;",
                "set $registry_token_service \"registry.example.com\";",
                "js_content registry_token.catalog;",
            ] {
                assert!(password.contains(line), "{line} not in {password}");
            }
            // The token settings are the token endpoint's.
            let token = block(&text, "location = /token {");
            let settings = |b: &str| -> Vec<String> {
                b.lines()
                    .filter(|l| l.trim_start().starts_with("set $registry_token_"))
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(settings(password), settings(token));
            assert_eq!(settings(password).len(), 6);
            let upstream = block(&text, &format!("location = {CATALOG_UPSTREAM} {{"));
            for line in [
                "internal;",
                "proxy_set_header Authorization $registry_catalog_bearer;",
                "subrequest_output_buffer_size 1m;",
                "proxy_pass http://docker_registry/v2/_catalog;",
            ] {
                assert!(upstream.contains(line), "{line} not in {upstream}");
            }
        }
        // The handler asks the location the site defines, and is exported.
        assert!(TOKEN_JS.contains(&format!("r.subrequest('{CATALOG_UPSTREAM}'")));
        assert!(TOKEN_JS.contains("export default { token, catalog };"));
        assert!(TOKEN_JS.contains("grant('registry:catalog:*'"));
    }

    #[test]
    fn users_do_not_appear_in_the_site() {
        let mut spec = fixtures::spec(Storage::Droplet);
        let a = site(&spec);
        spec.users.clear();
        assert_eq!(a, site(&spec));
    }

    #[test]
    fn injection_through_fqdn_is_refused() {
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.fqdn = "a.example.com; } server { listen 8080".into();
        let key = token_key(&spec.http_secret).unwrap();
        assert!(nginx_site(&spec, &key).is_err());
    }
}
