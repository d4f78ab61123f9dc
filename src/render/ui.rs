//! The registry's web page (`ui = true`): the files build.rs bundles from `ui/`, the nginx
//! locations that serve them, and the headers that keep the page to its own files and host.

use super::paths;

/// One file of the page, as the droplet holds it and nginx serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UiFile {
    /// Where it lives on the droplet.
    pub path: &'static str,
    /// The URL path it answers at (an exact nginx location).
    pub location: &'static str,
    /// Set per location rather than from mime.types, so the page never depends on the
    /// distribution's list (a script served as text/plain would not run under nosniff).
    pub content_type: &'static str,
    pub contents: &'static str,
}

/// The page: a shell, its script and its style (esbuild's bundle of `ui/`, see build.rs).
pub const FILES: [UiFile; 3] = [
    UiFile {
        path: paths::UI_INDEX,
        location: "/",
        content_type: "text/html; charset=utf-8",
        contents: include_str!(concat!(env!("OUT_DIR"), "/ui/index.html")),
    },
    UiFile {
        path: paths::UI_SCRIPT,
        location: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        contents: include_str!(concat!(env!("OUT_DIR"), "/ui/app.js")),
    },
    UiFile {
        path: paths::UI_STYLE,
        location: "/app.css",
        content_type: "text/css; charset=utf-8",
        contents: include_str!(concat!(env!("OUT_DIR"), "/ui/app.css")),
    },
];

/// The page loads its own script and style and nothing else, sends requests to this host
/// only (the token endpoint and /v2/), cannot be framed, and may not turn strings into markup
/// (Trusted Types with no policy: it builds the DOM from text nodes). `data:` images are the
/// empty favicon, which spares a request for /favicon.ico. `form-action 'none'`: a sign-in
/// form the script did not handle is never sent by the browser itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

/// At http level, before the servers: `X-Content-Type-Options` for the responses that lack it.
pub(crate) fn maps() -> String {
    // The registry sets X-Content-Type-Options on its own answers (its config's headers);
    // nginx adds it to the rest (the page, the token endpoint, its own errors), so no
    // response carries it twice.
    "map $upstream_http_x_content_type_options $registry_nosniff {\n    \
     \"\"       nosniff;\n    \
     default  \"\";\n}\n\n"
        .to_owned()
}

/// Inside the https server, beside HSTS: on every response, the API's included.
pub(crate) fn server_headers() -> String {
    format!(
        "\n    # The web page (ui = true) runs its own files only and talks to this host only;\n    \
         # these stay on every response, like the headers above (no location sets its own).\n    \
         add_header Content-Security-Policy \"{CONTENT_SECURITY_POLICY}\" always;\n    \
         add_header X-Content-Type-Options $registry_nosniff always;\n    \
         add_header Referrer-Policy no-referrer always;\n    \
         add_header Cross-Origin-Opener-Policy same-origin always;\n    \
         add_header Cross-Origin-Resource-Policy same-origin always;\n"
    )
}

/// One exact location per file; any other path keeps its 404.
pub(crate) fn locations() -> String {
    let mut out = String::from(
        "    # The web page: static files. It sends a password to the token endpoint only, and\n    \
         # reads /v2/ with tokens. `expires -1` (no-cache): every load revalidates (ETag), so a\n    \
         # new page is served right after the apply that writes it.\n",
    );
    for f in FILES {
        let (dir, name) = f.path.rsplit_once('/').expect("UI paths are absolute");
        out.push_str(&format!(
            "    location = {location} {{\n        \
             root {dir};\n        \
             try_files /{name} =404;\n        \
             types {{ }}\n        \
             default_type \"{content_type}\";\n        \
             expires -1;\n    \
             }}\n\n",
            location = f.location,
            content_type = f.content_type,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_is_embedded_and_loads_nothing_from_elsewhere() {
        let [index, script, style] = FILES;
        assert!(index.contents.starts_with("<!doctype html>"));
        // The shell names its script and style by the locations nginx serves them at.
        assert!(index
            .contents
            .contains("<script src=\"/app.js\" defer></script>"));
        assert!(index
            .contents
            .contains("<link rel=\"stylesheet\" href=\"/app.css\">"));
        // No inline script or style: the CSP allows neither.
        assert_eq!(index.contents.matches("<script").count(), 1);
        assert!(!index.contents.contains("<style"));
        assert!(!index.contents.contains(" style="));
        // esbuild's minified bundle, built from ui/src (not an empty placeholder).
        assert!(
            script.contents.len() > 5_000,
            "{} bytes",
            script.contents.len()
        );
        assert!(script.contents.contains("/v2/_catalog"));
        assert!(style.contents.contains("prefers-color-scheme:dark"));
        // Nothing names another host: no URL, no protocol-relative path, no CSS import.
        for f in FILES {
            for other_host in [
                "http://",
                "https://",
                "src=\"//",
                "href=\"//",
                "url(",
                "@import",
            ] {
                assert!(
                    !f.contents.contains(other_host),
                    "{} holds {other_host}",
                    f.location
                );
            }
        }
    }

    #[test]
    fn the_script_never_writes_markup() {
        let script = FILES[1].contents;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!script.contains(sink), "{sink} in app.js");
        }
    }

    #[test]
    fn the_policy_allows_this_host_only() {
        let csp = CONTENT_SECURITY_POLICY;
        let directives: Vec<&str> = csp.split("; ").collect();
        assert_eq!(directives[0], "default-src 'none'");
        for d in [
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
            "base-uri 'none'",
        ] {
            assert!(directives.contains(&d), "{d} missing from {csp}");
        }
        assert!(!csp.contains("unsafe"));
        assert!(!csp.contains('*'));
        assert!(!csp.contains("https:"));
    }

    #[test]
    fn each_file_has_an_exact_location_and_its_type() {
        let text = locations();
        for f in FILES {
            assert!(text.contains(&format!("location = {} {{", f.location)));
            assert!(text.contains(&format!("default_type \"{}\";", f.content_type)));
        }
        assert!(text.contains("root /var/www/registry-ui;\n        try_files /index.html =404;"));
        assert!(
            !text.contains("add_header"),
            "a location's add_header would drop HSTS"
        );
        assert!(!text.contains("location /"), "only exact locations");
    }
}
