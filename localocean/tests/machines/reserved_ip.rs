//! A reserved IP on real machines: assigned, it is an address of the droplet's machine that
//! the host and the other machines reach; moved, the next connection lands on the new one.

use super::*;

/// Runs `ssh root@ip hostname` from inside a machine's network namespace (the host's ssh
/// client, the machine's network), as another droplet on the bridge would connect.
fn hostname_from(lab: &Lab, from: u64, key: &Path, ip: Ipv4Addr) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.subnet.netns_name(from), "ssh", "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{ip}"))
        .arg("hostname")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

fn hostname_at(key: &Path, ip: Ipv4Addr) -> String {
    ssh_ok(key, ip, "hostname").trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_ip_moves_between_machines_and_goes_with_the_droplet() {
    let mut lab = Lab::new().await;
    let (key, public) = keygen(lab.dir.path());
    let base = 4_300_000 + u64::from(rand::random::<u16>()) * 2;
    let (a, b) = (base, base + 1);
    let (ia, ib) = tokio::join!(
        lab.hv.create(spec(a, &public, None)),
        lab.hv.create(spec(b, &public, None))
    );
    let (ia, ib) = (ia.expect("create a").ipv4, ib.expect("create b").ipv4);
    let (name_a, name_b) = (format!("tf-acc-test-{a}"), format!("tf-acc-test-{b}"));
    assert_eq!(hostname_at(&key, ia), name_a);

    let pool = lab.hv.reserved_ip_pool();
    let rip = pool[0];
    assert!(pool.iter().all(|ip| *ip != ia && *ip != ib));
    assert_eq!(
        rip.octets()[..3],
        ia.octets()[..3],
        "from the instance's /24"
    );
    assert!(
        !machines::ssh_banner(rip).await,
        "{rip} answered before it was assigned"
    );

    lab.hv.set_reserved_ip(a, Some(rip)).await.expect("assign");
    assert_eq!(hostname_at(&key, rip), name_a, "host → reserved IP on a");
    assert_eq!(hostname_from(&lab, b, &key, rip), (true, name_a.clone()));

    // Moved: the host and the machine that reached a before now reach b, with no wait.
    lab.hv
        .set_reserved_ip(b, Some(rip))
        .await
        .expect("assign b");
    lab.hv.set_reserved_ip(a, None).await.expect("off a");
    assert_eq!(hostname_at(&key, rip), name_b, "host → moved reserved IP");
    assert_eq!(hostname_from(&lab, a, &key, rip), (true, name_b.clone()));
    // Each machine keeps its own address.
    assert_eq!(hostname_at(&key, ia), name_a);
    assert_eq!(hostname_at(&key, ib), name_b);

    // A reboot keeps it on b.
    lab.hv.power(b, Power::Reboot).await.expect("reboot b");
    assert_eq!(hostname_at(&key, rip), name_b, "after a reboot");

    // Unassigned: nobody answers on it.
    lab.hv.set_reserved_ip(b, None).await.expect("unassign");
    assert!(
        !machines::ssh_banner(rip).await,
        "{rip} answered unassigned"
    );

    // Deleting the droplet that holds it takes the address away with the machine.
    lab.hv
        .set_reserved_ip(a, Some(rip))
        .await
        .expect("assign a again");
    assert_eq!(hostname_at(&key, rip), name_a);
    let t = traces(&lab, a);
    lab.hv.delete(a).await.expect("delete a");
    assert_gone(&t);
    assert!(
        !machines::ssh_banner(rip).await,
        "{rip} answered after a's delete"
    );
    assert_eq!(hostname_at(&key, ib), name_b);

    lab.hv.delete(b).await.expect("delete b");
    lab.teardown().await;
}
