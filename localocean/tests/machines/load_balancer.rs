//! A load balancer on real machines: HAProxy in a namespace of its own at the balancer's
//! address, in front of two droplets that each serve their own name over HTTP. Requests
//! reach both; one stopped, the health check marks it down and every request still
//! succeeds; a reload keeps what the checks found; a removed droplet gets no new requests;
//! delete and `purge` leave no process, namespace or file behind.

use std::io::{Read, Write};
use std::net::TcpStream;

use localocean::balancer::{Backend, BalancerSpec, ForwardingRule, HealthCheck};
use localocean::machines::balancer;

use super::*;

/// `GET /` over plain HTTP: the body of a 200, or what went wrong.
fn get(ip: Ipv4Addr, port: u16) -> Result<String, String> {
    let addr = std::net::SocketAddr::from((ip, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: lb.test\r\n\r\n")
        .map_err(|e| format!("send {addr}: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read {addr}: {e}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.trim().to_string())
    } else {
        Err(format!("{addr} answered: {head}"))
    }
}

/// Sends a line on an echo connection; returns the name of the droplet that echoed it.
fn echo_line(c: &mut TcpStream, line: &str) -> String {
    c.write_all(format!("{line}\n").as_bytes()).expect("send");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        c.read_exact(&mut byte).expect("echo answer");
        got.push(byte[0]);
    }
    let got = String::from_utf8_lossy(&got).trim().to_string();
    let (who, echoed) = got.split_once(' ').expect("name and line");
    assert_eq!(echoed, line);
    who.to_string()
}

/// `n` requests through the balancer: the names that answered, or the first failure.
fn names(ip: Ipv4Addr, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| get(ip, 80).unwrap_or_else(|e| panic!("request {i} of {n} failed: {e}")))
        .collect()
}

async fn wait_status(lab: &Lab, id: &str, server: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = balancer::server_status(&lab.state, id)
            .await
            .expect("haproxy stats");
        let seen: Vec<&(String, String, String)> =
            states.iter().filter(|(_, s, _)| s == server).collect();
        if !seen.is_empty() && seen.iter().all(|(_, _, st)| st.starts_with(want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server} never became {want}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn rule(entry: &str, port: u16, target_port: u16) -> ForwardingRule {
    ForwardingRule {
        entry_protocol: entry.into(),
        entry_port: port,
        target_protocol: entry.into(),
        target_port,
        certificate_id: String::new(),
        tls_passthrough: false,
    }
}

fn haproxy_pid(lab: &Lab, id: &str) -> i32 {
    process::read_pid_file(&lab.state.balancers().join(id).join("haproxy.pid"))
        .expect("haproxy pid file")
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancer_spreads_checks_drains_and_goes_away() {
    let mut lab = Lab::new().await;
    let (key, public) = keygen(lab.dir.path());
    let base = 4_500_000 + u64::from(rand::random::<u16>()) * 2;
    let (a, b) = (base, base + 1);
    let (ia, ib) = tokio::join!(
        lab.hv.create(spec(a, &public, None)),
        lab.hv.create(spec(b, &public, None))
    );
    let (ia, ib) = (ia.expect("create a").ipv4, ib.expect("create b").ipv4);
    let (name_a, name_b) = (format!("tf-acc-test-{a}"), format!("tf-acc-test-{b}"));
    // A small web server per droplet that answers with the droplet's name.
    let serve = "mkdir -p /srv/www && hostname > /srv/www/index.html && \
                 systemd-run --unit=web python3 -m http.server 8080 --directory /srv/www";
    ssh_ok(&key, ia, serve);
    ssh_ok(&key, ib, serve);
    // And a line echo server on 7000 that says who answers: connections that stay open.
    let echo = "cat > /srv/echo.py <<'EOF'\n\
                import socket, socketserver\n\
                class H(socketserver.StreamRequestHandler):\n\
                \x20   def handle(self):\n\
                \x20       for line in self.rfile:\n\
                \x20           self.wfile.write(socket.gethostname().encode() + b' ' + line)\n\
                socketserver.ThreadingTCPServer.allow_reuse_address = True\n\
                socketserver.ThreadingTCPServer(('', 7000), H).serve_forever()\n\
                EOF\n\
                systemd-run --unit=echo python3 /srv/echo.py";
    ssh_ok(&key, ia, echo);
    ssh_ok(&key, ib, echo);
    for (ip, name) in [(ia, &name_a), (ib, &name_b)] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(ip, 8080).as_ref() != Ok(name) {
            assert!(
                Instant::now() < deadline,
                "{name}'s web server never answered"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let lb_ip = lab.hv.load_balancer_pool()[0];
    assert!(![ia, ib].contains(&lb_ip) && !lab.hv.reserved_ip_pool().contains(&lb_ip));
    assert!(
        get(lb_ip, 80).is_err(),
        "{lb_ip} answered before the balancer ran"
    );
    let id = format!("lb-test-{base}");
    let mut spec = BalancerSpec {
        id: id.clone(),
        ip: lb_ip,
        forwarding_rules: vec![rule("http", 80, 8080)],
        health_check: HealthCheck {
            protocol: "http".into(),
            port: 8080,
            path: "/".into(),
            check_interval_seconds: 3,
            response_timeout_seconds: 3,
            unhealthy_threshold: 2,
            healthy_threshold: 2,
        },
        sticky_sessions: Default::default(),
        redirect_http_to_https: false,
        enable_proxy_protocol: false,
        enable_backend_keepalive: false,
        http_idle_timeout_seconds: 60,
        firewall: Default::default(),
        backends: vec![
            Backend {
                droplet_id: a,
                ip: ia,
            },
            Backend {
                droplet_id: b,
                ip: ib,
            },
        ],
    };
    lab.hv.apply_load_balancer(&spec).await.expect("apply");
    let master = haproxy_pid(&lab, &id);
    let ns = lab.subnet.balancer_netns_name(lb_ip);
    assert!(net::netns_exists(&ns).await);

    // Round robin: both droplets answer, nothing fails.
    let seen = names(lb_ip, 20);
    assert!(seen.contains(&name_a) && seen.contains(&name_b), "{seen:?}");

    // b's server stops: once its health check marks it down, every request goes to a.
    ssh_ok(&key, ib, "systemctl stop web");
    let server_b = format!("d{b}");
    wait_status(&lab, &id, &server_b, "DOWN").await;
    let seen = names(lb_ip, 30);
    assert!(seen.iter().all(|n| *n == name_a), "{seen:?}");

    // A reload (a TCP rule to the droplets' sshd added) keeps b down: the new process
    // starts from the health the old one found, and not one request reaches b.
    spec.forwarding_rules.push(rule("tcp", 2222, 22));
    spec.forwarding_rules.push(rule("tcp", 7000, 7000));
    lab.hv.apply_load_balancer(&spec).await.expect("reload");
    assert_eq!(haproxy_pid(&lab, &id), master, "a reload, not a restart");
    let seen = names(lb_ip, 20);
    assert!(seen.iter().all(|n| *n == name_a), "{seen:?}");
    assert_eq!(banner(lb_ip, 2222), "SSH-");

    // Back up: after the healthy threshold, b gets requests again.
    ssh_ok(&key, ib, "systemctl start web 2>/dev/null || systemd-run --unit=web python3 -m http.server 8080 --directory /srv/www");
    wait_status(&lab, &id, &server_b, "UP").await;
    let seen = names(lb_ip, 20);
    assert!(seen.contains(&name_b), "{seen:?}");

    // Connections open through the balancer, to both droplets.
    let mut open: Vec<(TcpStream, String)> = (0..4)
        .map(|i| {
            let mut c = TcpStream::connect((lb_ip, 7000)).expect("connect 7000");
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let who = echo_line(&mut c, &format!("hello {i}"));
            (c, who)
        })
        .collect();
    let owners: Vec<&str> = open.iter().map(|(_, w)| w.as_str()).collect();
    assert!(
        owners.contains(&name_a.as_str()) && owners.contains(&name_b.as_str()),
        "{owners:?}"
    );

    // b leaves the balancer: it gets no new request, although it is healthy, and the
    // connections it has finish (drained, not cut).
    spec.backends.retain(|x| x.droplet_id == a);
    lab.hv.apply_load_balancer(&spec).await.expect("drain b");
    for (i, (c, who)) in open.iter_mut().enumerate() {
        assert_eq!(echo_line(c, &format!("still {i}")), *who, "connection {i}");
    }
    drop(open);
    let seen = names(lb_ip, 20);
    assert!(seen.iter().all(|n| *n == name_a), "{seen:?}");
    assert_eq!(get(ib, 8080).as_ref(), Ok(&name_b), "b itself still serves");

    // Applying the same spec again changes nothing and keeps serving.
    lab.hv.apply_load_balancer(&spec).await.expect("again");
    assert_eq!(haproxy_pid(&lab, &id), master);

    // Deleted: no process, no namespace, no files, nobody on the address.
    lab.hv.delete_load_balancer(&id).await.expect("delete");
    assert!(process::wait_exit_blocking(master, Duration::from_secs(10)));
    assert!(!net::netns_exists(&ns).await, "{ns} left behind");
    assert!(!net::link_exists(&lab.subnet.balancer_veth_name(lb_ip)).await);
    assert!(!lab.state.balancers().join(&id).exists());
    assert!(get(lb_ip, 80).is_err(), "{lb_ip} answered after the delete");
    lab.hv
        .delete_load_balancer(&id)
        .await
        .expect("deleting twice is fine");

    // One left running is removed by `purge` (what `localocean down` runs), by its records.
    lab.hv
        .apply_load_balancer(&spec)
        .await
        .expect("apply again");
    let again = haproxy_pid(&lab, &id);
    assert_eq!(get(lb_ip, 80).as_ref(), Ok(&name_a));
    lab.hv.delete(a).await.expect("delete a");
    lab.hv.delete(b).await.expect("delete b");
    lab.teardown().await;
    assert!(process::wait_exit_blocking(again, Duration::from_secs(10)));
    assert!(!net::netns_exists(&ns).await, "{ns} left after purge");
}
