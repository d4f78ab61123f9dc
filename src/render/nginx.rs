//! The nginx site in front of the registry: TLS on :443, Basic auth per method, ACME on :80.
//! Written for Debian 12's nginx 1.22 (`listen 443 ssl http2`, included inside `http {}`).

use std::fmt::Write;

use super::{check_plain, paths, RegistrySpec, RenderError};

/// The Basic realm clients see in `WWW-Authenticate`.
pub const REALM: &str = "Registry";

/// The site file. User changes never require rendering it again: nginx reads both htpasswd
/// files on every request, so only the certificate paths, the fqdn and `anonymous_pull` live
/// here (changing those reloads nginx, which drops no connection).
pub fn nginx_site(spec: &RegistrySpec) -> Result<String, RenderError> {
    check_plain("fqdn", &spec.fqdn)?;
    check_plain("certificate path", &spec.tls.cert_chain)?;
    check_plain("private key path", &spec.tls.private_key)?;
    check_plain("ACME HTTP-01 directory", &spec.acme_http01_dir)?;
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
    // The registry sets Docker-Distribution-Api-Version on its own responses; nginx adds it
    // only where it is missing (its own 401s), as the distribution docs' recipe does, so
    // clients never see the header twice.
    let _ = writeln!(
        w,
        "map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{\n    \
         \"\" \"registry/2.0\";\n}}\n"
    );
    if spec.anonymous_pull {
        // nginx treats an auth_basic realm that evaluates to "off" as "no auth", and reads the
        // variable per request. Anonymous clients send no Authorization header, except skopeo
        // (containers/image), which answers a Basic challenge with empty credentials
        // (`Basic Og==` is base64 of ":"). Credentials that are sent are still checked, so a
        // wrong password fails `docker login` instead of silently passing as anonymous.
        let _ = writeln!(
            w,
            "map $http_authorization $registry_pull_realm {{\n    \
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

    # HTTP-01 answers: files named after their token.
    location ^~ /.well-known/acme-challenge/ {{
        alias {acme_dir}/;
        default_type text/plain;
    }}

    # The fqdn, not $host: a forged Host header must not turn this into an open redirect.
    location / {{
        return 301 https://{fqdn}$request_uri;
    }}
}}
"
    );
    let pull_realm = if spec.anonymous_pull {
        "$registry_pull_realm".to_owned()
    } else {
        format!("\"{REALM}\"")
    };
    let _ = writeln!(
        w,
        "server {{
    listen 443 ssl http2 default_server;
    listen [::]:443 ssl http2 default_server;
    server_name {fqdn};

    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:registry_tls:10m;
    ssl_session_timeout 1h;

    # Layers are gigabytes; the registry, not nginx, decides what is too big.
    client_max_body_size 0;
    # docker push streams layers chunked.
    chunked_transfer_encoding on;

    # As the distribution docs recommend: the registry builds upload Location URLs from
    # these, and logs the real client address. Set at server level so every location below
    # inherits the same proxying.
    proxy_set_header Host $http_host;
    proxy_set_header X-Real-IP $remote_addr;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    # Large layer uploads and slow storage backends (Spaces) can be quiet for minutes.
    proxy_read_timeout 900;
    proxy_send_timeout 900;
    # Stream both ways: buffering a multi-gigabyte layer to nginx's temp dir would fill the
    # droplet's disk and double the transfer time.
    proxy_request_buffering off;
    proxy_buffering off;
",
        cert = spec.tls.cert_chain,
        key = spec.tls.private_key,
    );
    if spec.anonymous_pull {
        // The version ping must answer 200 to anonymous clients: docker fails a pull with
        // \"no basic auth credentials\" when it gets a Basic challenge and has none to give.
        // skopeo (containers/image) reads a challenge from a 200 as well, so it still learns to
        // send the credentials it has when it pushes; docker only learns from a 401. (add_header
        // without `always` never touches the 401 nginx sends with its own challenge.)
        let _ = writeln!(
            w,
            "    location = /v2/ {{
        auth_basic {pull_realm};
        auth_basic_user_file {htpasswd};
        add_header WWW-Authenticate 'Basic realm=\"{REALM}\"';
        add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
        proxy_pass http://127.0.0.1:5000;
    }}
",
            htpasswd = paths::HTPASSWD,
        );
    }
    let _ = write!(
        w,
        "    location /v2/ {{
        # Pull: every user in htpasswd. nginx re-reads the file on each request, so a user
        # change is live without a reload.
        auth_basic {pull_realm};
        auth_basic_user_file {htpasswd};

        # Any other method (push, delete): only users in htpasswd-push. Same per-request read,
        # so moving a user between pull and push needs no reload either.
        limit_except GET HEAD {{
            auth_basic \"{REALM}\";
            auth_basic_user_file {htpasswd_push};
        }}

        # Clients check this header, on 401s too, to know they speak to a v2 registry.
        add_header Docker-Distribution-Api-Version $docker_distribution_api_version always;
        proxy_pass http://127.0.0.1:5000;
    }}

    location / {{
        return 404;
    }}
}}
",
        htpasswd = paths::HTPASSWD,
        htpasswd_push = paths::HTPASSWD_PUSH,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::golden::assert_golden;
    use crate::render::{fixtures, Storage};

    #[test]
    fn private_registry() {
        let spec = fixtures::spec(Storage::Droplet);
        let text = nginx_site(&spec).unwrap();
        assert_golden("nginx-private.conf", &text);
        assert!(text.contains("listen 443 ssl http2 default_server;"));
        assert!(text.contains("auth_basic \"Registry\";"));
        assert!(!text.contains("$registry_pull_realm"));
        assert!(text.contains("limit_except GET HEAD {"));
        assert!(text.contains("auth_basic_user_file /etc/nginx/registry/htpasswd-push;"));
    }

    #[test]
    fn anonymous_pull() {
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.anonymous_pull = true;
        let text = nginx_site(&spec).unwrap();
        assert_golden("nginx-anonymous-pull.conf", &text);
        assert!(text.contains("auth_basic $registry_pull_realm;"));
        // Writes keep their own, unconditional realm.
        let limit = text.split("limit_except GET HEAD {").nth(1).unwrap();
        let limit = &limit[..limit.find('}').unwrap()];
        assert!(limit.contains("auth_basic \"Registry\";"));
    }

    #[test]
    fn users_do_not_appear_in_the_site() {
        let mut spec = fixtures::spec(Storage::Droplet);
        let a = nginx_site(&spec).unwrap();
        spec.users.clear();
        assert_eq!(a, nginx_site(&spec).unwrap());
    }

    #[test]
    fn injection_through_fqdn_is_refused() {
        let mut spec = fixtures::spec(Storage::Droplet);
        spec.fqdn = "a.example.com; } server { listen 8080".into();
        assert!(nginx_site(&spec).is_err());
    }

    /// `nginx -t` on both variants, inside a main config shaped like Debian 12's. Run with
    /// `REAL_NGINX=/usr/sbin/nginx cargo test -p terraform-provider-docker --lib real_nginx -- --ignored`.
    #[test]
    #[ignore = "needs a real nginx binary (REAL_NGINX)"]
    fn real_nginx_accepts_both_variants() {
        let nginx = std::env::var("REAL_NGINX").expect("REAL_NGINX=/path/to/nginx");
        for anonymous_pull in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().display().to_string();
            let mut spec = fixtures::spec(Storage::Droplet);
            spec.anonymous_pull = anonymous_pull;
            spec.tls.cert_chain = format!("{d}/fullchain.pem");
            spec.tls.private_key = format!("{d}/privkey.pem");
            let status = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
                .args(["-subj", "/CN=registry.example.com", "-keyout"])
                .args([&spec.tls.private_key, "-out", &spec.tls.cert_chain])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            let site = nginx_site(&spec).unwrap();
            std::fs::write(format!("{d}/site.conf"), site).unwrap();
            std::fs::write(
                format!("{d}/nginx.conf"),
                format!(
                    "pid {d}/nginx.pid;\nerror_log stderr;\nevents {{ worker_connections 768; }}\n\
                     http {{\n  sendfile on;\n  types_hash_max_size 2048;\n\
                     ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;\n  ssl_prefer_server_ciphers on;\n\
                     access_log off;\n  gzip on;\n  client_body_temp_path {d}/body;\n\
                     proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/f;\n  uwsgi_temp_path {d}/u;\n  scgi_temp_path {d}/s;\n  include {d}/site.conf;\n}}\n"
                ),
            )
            .unwrap();
            let out = std::process::Command::new(&nginx)
                .args(["-t", "-p", &d, "-c", &format!("{d}/nginx.conf")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "anonymous_pull={anonymous_pull}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
