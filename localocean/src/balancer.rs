//! A load balancer as the API holds it (DigitalOcean's `forwarding_rule`, `health_check`,
//! `sticky_sessions`, `lb_firewall`) and as HAProxy runs it: the config is rendered here, purely.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// One forwarding rule, as the spec shapes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingRule {
    pub entry_protocol: String,
    pub entry_port: u16,
    pub target_protocol: String,
    pub target_port: u16,
    #[serde(default)]
    pub certificate_id: String,
    #[serde(default)]
    pub tls_passthrough: bool,
}

impl ForwardingRule {
    /// Whether HAProxy carries it as TCP (bytes as they are) or as HTTP (requests, with
    /// `X-Forwarded-For`, cookies and redirects).
    pub fn is_http(&self) -> bool {
        self.entry_protocol == "http"
    }

    /// The rule a DELETE names: DigitalOcean matches on the protocols and ports.
    pub fn same_as(&self, other: &ForwardingRule) -> bool {
        self.entry_protocol == other.entry_protocol
            && self.entry_port == other.entry_port
            && self.target_protocol == other.target_protocol
            && self.target_port == other.target_port
    }
}

/// The health check, with the spec's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub protocol: String,
    pub port: u16,
    pub path: String,
    pub check_interval_seconds: u32,
    pub response_timeout_seconds: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            protocol: "http".into(),
            port: 80,
            path: "/".into(),
            check_interval_seconds: 10,
            response_timeout_seconds: 5,
            unhealthy_threshold: 5,
            healthy_threshold: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StickySessions {
    /// `none` or `cookies`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_ttl_seconds: Option<u32>,
}

impl Default for StickySessions {
    fn default() -> Self {
        StickySessions {
            kind: "none".into(),
            cookie_name: None,
            cookie_ttl_seconds: None,
        }
    }
}

/// `ip:1.2.3.4` and `cidr:1.2.0.0/16` rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbFirewall {
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub allow: Vec<String>,
}

/// A droplet behind the load balancer, by its address on the instance's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub droplet_id: u64,
    pub ip: Ipv4Addr,
}

/// Everything the machines need to run one load balancer; applying the same spec twice
/// changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalancerSpec {
    pub id: String,
    pub ip: Ipv4Addr,
    pub forwarding_rules: Vec<ForwardingRule>,
    pub health_check: HealthCheck,
    pub sticky_sessions: StickySessions,
    pub redirect_http_to_https: bool,
    pub enable_proxy_protocol: bool,
    pub enable_backend_keepalive: bool,
    pub http_idle_timeout_seconds: u32,
    pub firewall: LbFirewall,
    pub backends: Vec<Backend>,
}

/// Where the running HAProxy keeps what outlives one config: its admin socket (reloads
/// hand the listening sockets over through it) and the servers' health, saved before a
/// reload so that a droplet marked down stays down in the new process.
pub struct RuntimePaths {
    pub socket: String,
    pub server_state: String,
}

/// The address of a firewall rule (`ip:1.2.3.4`, `cidr:1.2.0.0/16`), or None if malformed.
pub fn firewall_source(rule: &str) -> Option<String> {
    if let Some(ip) = rule.strip_prefix("ip:") {
        return ip.parse::<Ipv4Addr>().ok().map(|a| a.to_string());
    }
    let cidr = rule.strip_prefix("cidr:")?;
    let (addr, len) = cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some(format!("{addr}/{len}"))
}

/// The HAProxy config for `spec`: a frontend per forwarding rule on the balancer's address,
/// a backend per rule with one server per droplet, each health-checked as `health_check`
/// says (HTTP and HTTPS checks pass on 200–399, TCP on a completed handshake, as
/// DigitalOcean documents).
pub fn render_haproxy(spec: &BalancerSpec, rt: &RuntimePaths) -> String {
    let hc = &spec.health_check;
    let mut c = String::new();
    let push = |c: &mut String, line: &str| {
        c.push_str(line);
        c.push('\n');
    };
    push(
        &mut c,
        &format!("# load balancer {} ({})", spec.id, spec.ip),
    );
    push(&mut c, "global");
    push(
        &mut c,
        &format!(
            "    stats socket {} mode 600 level admin expose-fd listeners",
            rt.socket
        ),
    );
    push(
        &mut c,
        &format!("    server-state-file {}", rt.server_state),
    );
    // Connections a reload leaves on the old process (removed droplets: drained, no new
    // ones) end by themselves or after this.
    push(&mut c, "    hard-stop-after 120s");
    push(&mut c, "    maxconn 4096");
    push(&mut c, "defaults");
    push(&mut c, "    load-server-state-from-file global");
    push(&mut c, "    timeout connect 5s");
    let idle = spec.http_idle_timeout_seconds;
    push(&mut c, &format!("    timeout client {idle}s"));
    push(&mut c, &format!("    timeout server {idle}s"));
    push(
        &mut c,
        &format!("    timeout check {}s", hc.response_timeout_seconds),
    );
    push(
        &mut c,
        &format!(
            "    default-server inter {}s fall {} rise {}",
            hc.check_interval_seconds, hc.unhealthy_threshold, hc.healthy_threshold
        ),
    );
    let allow: Vec<String> = spec
        .firewall
        .allow
        .iter()
        .filter_map(|r| firewall_source(r))
        .collect();
    let deny: Vec<String> = spec
        .firewall
        .deny
        .iter()
        .filter_map(|r| firewall_source(r))
        .collect();
    // The first rule's servers hold the checks; the others' track them.
    let checked_by = spec.forwarding_rules.first().map(|r| r.entry_port);
    for rule in &spec.forwarding_rules {
        let mode = if rule.is_http() { "http" } else { "tcp" };
        let port = rule.entry_port;
        push(&mut c, "");
        push(&mut c, &format!("frontend in{port}"));
        push(&mut c, &format!("    mode {mode}"));
        push(&mut c, &format!("    bind {}:{port}", spec.ip));
        if !allow.is_empty() {
            push(&mut c, &format!("    acl fw_allow src {}", allow.join(" ")));
            push(&mut c, "    tcp-request connection reject if !fw_allow");
        }
        if !deny.is_empty() {
            push(&mut c, &format!("    acl fw_deny src {}", deny.join(" ")));
            push(&mut c, "    tcp-request connection reject if fw_deny");
        }
        if rule.is_http() {
            push(&mut c, "    option forwardfor");
            if spec.redirect_http_to_https && port == 80 {
                push(&mut c, "    http-request redirect scheme https code 301");
            }
        }
        push(&mut c, &format!("    default_backend to{port}"));
        push(&mut c, &format!("backend to{port}"));
        push(&mut c, &format!("    mode {mode}"));
        push(&mut c, "    balance roundrobin");
        if hc.protocol == "http" || hc.protocol == "https" {
            push(&mut c, "    option httpchk");
            push(
                &mut c,
                &format!(
                    "    http-check send meth GET uri {} ver HTTP/1.1 hdr Host {}",
                    hc.path, spec.ip
                ),
            );
            push(&mut c, "    http-check expect rstatus ^[23][0-9][0-9]$");
        }
        let sticky = rule.is_http() && spec.sticky_sessions.kind == "cookies";
        if sticky {
            push(
                &mut c,
                &format!(
                    "    cookie {} insert indirect nocache maxlife {}s",
                    spec.sticky_sessions
                        .cookie_name
                        .as_deref()
                        .unwrap_or("DO-LB"),
                    spec.sticky_sessions.cookie_ttl_seconds.unwrap_or(300)
                ),
            );
        }
        if rule.is_http() && !spec.enable_backend_keepalive {
            push(&mut c, "    option http-server-close");
        }
        for b in &spec.backends {
            let mut line = format!(
                "    server d{id} {ip}:{tp}",
                id = b.droplet_id,
                ip = b.ip,
                tp = rule.target_port,
            );
            match checked_by {
                // DigitalOcean checks each droplet once, whatever the rules: one state per
                // droplet, which every rule's server follows. (Checked per rule, a droplet
                // could be up for one port and still down for another for a check or two.)
                Some(first) if first != port => {
                    line.push_str(&format!(" track to{first}/d{}", b.droplet_id));
                }
                _ => {
                    line.push_str(&format!(" check port {}", hc.port));
                    if hc.protocol == "https" {
                        line.push_str(" check-ssl verify none");
                    }
                }
            }
            if spec.enable_proxy_protocol {
                line.push_str(" send-proxy");
            }
            if sticky {
                line.push_str(&format!(" cookie d{}", b.droplet_id));
            }
            push(&mut c, &line);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(entry: &str, port: u16, target: &str, passthrough: bool) -> ForwardingRule {
        ForwardingRule {
            entry_protocol: entry.into(),
            entry_port: port,
            target_protocol: target.into(),
            target_port: port,
            certificate_id: String::new(),
            tls_passthrough: passthrough,
        }
    }

    fn spec() -> BalancerSpec {
        BalancerSpec {
            id: "lb-1".into(),
            ip: Ipv4Addr::new(198, 18, 3, 150),
            forwarding_rules: vec![
                rule("http", 80, "http", false),
                rule("https", 443, "https", true),
            ],
            health_check: HealthCheck {
                protocol: "http".into(),
                port: 80,
                path: "/healthz".into(),
                check_interval_seconds: 3,
                response_timeout_seconds: 3,
                unhealthy_threshold: 2,
                healthy_threshold: 2,
            },
            sticky_sessions: StickySessions::default(),
            redirect_http_to_https: false,
            enable_proxy_protocol: false,
            enable_backend_keepalive: false,
            http_idle_timeout_seconds: 60,
            firewall: LbFirewall::default(),
            backends: vec![
                Backend {
                    droplet_id: 7,
                    ip: Ipv4Addr::new(198, 18, 3, 2),
                },
                Backend {
                    droplet_id: 8,
                    ip: Ipv4Addr::new(198, 18, 3, 3),
                },
            ],
        }
    }

    fn rt() -> RuntimePaths {
        RuntimePaths {
            socket: "/s/haproxy.sock".into(),
            server_state: "/s/servers.state".into(),
        }
    }

    #[test]
    fn passthrough_is_tcp_and_every_droplet_is_checked_as_told() {
        let c = render_haproxy(&spec(), &rt());
        assert!(c.contains("frontend in443\n    mode tcp\n    bind 198.18.3.150:443\n"));
        assert!(c.contains("frontend in80\n    mode http\n    bind 198.18.3.150:80\n"));
        assert!(c.contains("default-server inter 3s fall 2 rise 2"));
        assert!(c.contains("timeout check 3s"));
        assert!(c.contains("uri /healthz ver HTTP/1.1"));
        assert!(c.contains("rstatus ^[23][0-9][0-9]$"));
        // One check per droplet (the first rule's); the other rule's servers follow it.
        assert!(c.contains("    server d7 198.18.3.2:80 check port 80\n"));
        assert!(c.contains("    server d8 198.18.3.3:80 check port 80\n"));
        assert!(c.contains("    server d7 198.18.3.2:443 track to80/d7\n"));
        assert!(c.contains("    server d8 198.18.3.3:443 track to80/d8\n"));
        assert!(c.contains("load-server-state-from-file global"));
        assert!(c.contains("stats socket /s/haproxy.sock mode 600 level admin expose-fd listeners"));
        assert!(!c.contains("cookie"));
    }

    #[test]
    fn tcp_checks_https_checks_cookies_redirect_proxy_protocol_and_firewall() {
        let mut s = spec();
        s.health_check.protocol = "tcp".into();
        let c = render_haproxy(&s, &rt());
        assert!(!c.contains("httpchk"));
        s.health_check.protocol = "https".into();
        s.health_check.port = 443;
        s.sticky_sessions = StickySessions {
            kind: "cookies".into(),
            cookie_name: Some("LB".into()),
            cookie_ttl_seconds: Some(60),
        };
        s.redirect_http_to_https = true;
        s.enable_proxy_protocol = true;
        s.firewall = LbFirewall {
            deny: vec!["ip:1.2.3.4".into()],
            allow: vec!["cidr:198.18.0.0/15".into(), "bogus".into()],
        };
        let c = render_haproxy(&s, &rt());
        assert!(c.contains("check port 443 check-ssl verify none send-proxy"));
        assert!(c.contains("cookie LB insert indirect nocache maxlife 60s"));
        assert!(c.contains(
            "server d7 198.18.3.2:80 check port 443 check-ssl verify none send-proxy cookie d7"
        ));
        // Cookies are HTTP: the passthrough rule's servers carry none.
        assert!(c.contains("server d7 198.18.3.2:443 track to80/d7 send-proxy\n"));
        assert!(c.contains("http-request redirect scheme https code 301"));
        assert!(c.contains("acl fw_allow src 198.18.0.0/15\n"));
        assert!(c.contains("acl fw_deny src 1.2.3.4\n"));
    }

    /// Every option rendered at once is a config HAProxy (Debian's, as localocean runs it)
    /// accepts; `haproxy -c` reads it without binding anything.
    #[test]
    fn haproxy_accepts_every_option() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec();
        s.forwarding_rules.push(rule("tcp", 2222, "tcp", false));
        s.health_check.protocol = "https".into();
        s.sticky_sessions = StickySessions {
            kind: "cookies".into(),
            cookie_name: Some("DO-LB".into()),
            cookie_ttl_seconds: Some(300),
        };
        s.redirect_http_to_https = true;
        s.enable_proxy_protocol = true;
        s.enable_backend_keepalive = true;
        s.firewall = LbFirewall {
            deny: vec!["ip:1.2.3.4".into()],
            allow: vec!["cidr:198.18.0.0/15".into()],
        };
        let rt = RuntimePaths {
            socket: dir.path().join("s.sock").to_string_lossy().into_owned(),
            server_state: dir.path().join("state").to_string_lossy().into_owned(),
        };
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, render_haproxy(&s, &rt)).unwrap();
        let out = std::process::Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("haproxy not found: run scripts/setup");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn firewall_rules_parse() {
        assert_eq!(firewall_source("ip:10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(
            firewall_source("cidr:10.0.0.0/8").as_deref(),
            Some("10.0.0.0/8")
        );
        assert_eq!(firewall_source("cidr:10.0.0.0/33"), None);
        assert_eq!(firewall_source("10.0.0.1"), None);
    }
}
