//! `reserved_ip = true`: the record points at the reserved IP from the start, a replacement
//! moves the address (verified first on the new droplet's own address) with no record change,
//! switching in place moves the record, destroy unassigns and deletes the reserved IP.

use super::*;

/// The null hypervisor's first reserved IP.
const RESERVED: &str = "198.19.255.200";

fn with_reserved_ip(mut c: RegistryState) -> RegistryState {
    c.reserved_ip = Value::Value(true);
    c
}

/// The addresses a certificate chain's leaf names.
fn cert_ips(st: &RegistryState) -> Vec<String> {
    crate::tls::leaf_info(text(&st.certificate_pem))
        .expect("a certificate")
        .ip_addresses
        .iter()
        .map(ToString::to_string)
        .collect()
}

impl World {
    async fn reserved_ip(&self, ip: &str) -> Option<do_api::ReservedIp> {
        self.client()
            .get_reserved_ip(ip)
            .await
            .expect("GET reserved IP")
    }
}

#[tokio::test]
async fn create_points_the_record_at_the_reserved_ip_and_destroy_deletes_it() {
    let w = World::start().await;
    let (planned, d) = w.plan_create(with_reserved_ip(config("reg"))).await;
    let planned = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(planned.reserved_ip_address.is_unknown());
    let (off, _) = w.plan_create(config("other")).await;
    assert!(off.unwrap().reserved_ip_address.is_null(), "off: null");

    let st = w.created(with_reserved_ip(config("reg"))).await;
    let id = droplet_id(&st);
    assert_eq!(text(&st.reserved_ip_address), RESERVED);
    assert_eq!(
        text(&st.ipv4_address),
        FIRST_IP,
        "the droplet's own address"
    );
    assert_eq!(w.record_data(&st).await.as_deref(), Some(RESERVED));
    assert_eq!(cert_ips(&st), [RESERVED, FIRST_IP], "self-signed SANs");
    let rip = w.reserved_ip(RESERVED).await.expect("reserved IP exists");
    assert_eq!(rip.droplet_id(), Some(id));
    assert!(w
        .api
        .hv
        .calls()
        .contains(&format!("set_reserved_ip {id} {RESERVED}")));
    // Proven from outside where the record points.
    assert_eq!(w.outside.checked_ips(), [RESERVED]);

    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(
        w.reserved_ip(RESERVED).await.is_none(),
        "reserved IP deleted"
    );
    assert!(w.record_data(&st).await.is_none());
    let calls = w.api.hv.calls();
    let unassigned = calls
        .iter()
        .position(|c| *c == format!("set_reserved_ip {id} none"))
        .expect("unassigned before the delete");
    let deleted = calls
        .iter()
        .position(|c| *c == format!("delete {id}"))
        .expect("droplet deleted");
    assert!(unassigned < deleted, "{calls:?}");
}

#[tokio::test]
async fn a_create_failing_after_the_reserved_ip_keeps_it_so_destroy_deletes_it() {
    let w = World::start().await;
    w.outside.fail_for(RESERVED);
    let (st, d) = w.create(with_reserved_ip(config("halfway"))).await;
    assert_eq!(summaries(&d.errors), ["Creating the registry failed"]);
    assert_eq!(text(&st.reserved_ip_address), RESERVED);
    let d = w.destroy(&st).await;
    assert!(d.errors.is_empty(), "{d:?}");
    assert!(w.reserved_ip(RESERVED).await.is_none());
    assert!(w.droplet(&st).await.is_none());
}

#[tokio::test]
async fn replacement_moves_the_reserved_ip_after_verifying_and_never_changes_the_record() {
    let w = Arc::new(World::start().await);
    let prior = w.created(with_reserved_ip(config("reg"))).await;
    let old = droplet_id(&prior);
    let (planned, d) = w
        .plan_update(&prior, |st| st.droplet_generation = Value::Value(1))
        .await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(replace.is_empty());
    assert_eq!(
        text(&planned.reserved_ip_address),
        RESERVED,
        "known at plan"
    );
    assert_eq!(summaries(&d.warnings), ["The droplet will be replaced"]);
    let warning = &d.warnings[0].detail;
    assert!(
        warning.contains("the reserved IP moved to it (the DNS record stays as it is)"),
        "{warning}"
    );
    let task = {
        let w = w.clone();
        let prior = prior.clone();
        tokio::spawn(async move {
            let mut d = Diagnostics::default();
            let got = w
                .resource
                .update(
                    &mut d,
                    prior,
                    planned.clone(),
                    planned,
                    crate::resource::state::PrivateState::Null,
                    no_meta(),
                )
                .await;
            (got.map(|(st, _)| st), d)
        })
    };
    // The record holds the reserved IP through the whole replacement.
    while !task.is_finished() {
        assert_eq!(w.record_data(&prior).await.as_deref(), Some(RESERVED));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (st, d) = task.await.unwrap();
    assert!(d.errors.is_empty(), "{d:?}");
    let st = st.unwrap();
    let new = droplet_id(&st);
    assert_ne!(new, old);
    assert_eq!(text(&st.ipv4_address), SECOND_IP);
    assert_eq!(st.reserved_ip_address, prior.reserved_ip_address);
    assert_eq!(st.record_id, prior.record_id);
    assert_eq!(w.record_data(&st).await.as_deref(), Some(RESERVED));
    assert_eq!(
        w.reserved_ip(RESERVED).await.unwrap().droplet_id(),
        Some(new)
    );
    // Verified on its own address first, then where clients go: the reserved IP.
    let ips = w.outside.checked_ips();
    assert_eq!(ips, [RESERVED, SECOND_IP, RESERVED], "{ips:?}");
    // Moved onto the new droplet, then the old droplet deleted.
    let calls = w.api.hv.calls();
    let moved = calls
        .iter()
        .position(|c| *c == format!("set_reserved_ip {new} {RESERVED}"))
        .expect("moved to the new droplet");
    let deleted = calls
        .iter()
        .position(|c| *c == format!("delete {old}"))
        .expect("old droplet deleted");
    assert!(moved < deleted, "{calls:?}");
    assert!(retired(&st).is_empty());
}

#[tokio::test]
async fn replacement_failing_on_the_reserved_ip_puts_it_back_on_the_old_droplet() {
    let w = World::start().await;
    let prior = w.created(with_reserved_ip(config("reg"))).await;
    let old = droplet_id(&prior);
    // The new droplet passes on its own address; the check through the moved address fails.
    w.outside.fail_for(RESERVED);
    let (st, d) = w
        .update(&prior, |st| st.droplet_generation = Value::Value(2))
        .await;
    assert_eq!(summaries(&d.errors), ["Updating the registry failed"]);
    assert_eq!(st.droplet_id, prior.droplet_id);
    assert_eq!(st.reserved_ip_address, prior.reserved_ip_address);
    assert_eq!(
        w.reserved_ip(RESERVED).await.unwrap().droplet_id(),
        Some(old),
        "back on the old droplet"
    );
    let new = second_droplet(&w);
    assert!(w.client().get_droplet(new).await.unwrap().is_none());
    assert!(w.droplet(&prior).await.is_some());
    assert_eq!(w.record_data(&prior).await.as_deref(), Some(RESERVED));
}

#[tokio::test]
async fn turning_reserved_ip_on_and_off_moves_the_record_in_place() {
    let w = World::start().await;
    let prior = w.created(config("reg")).await;
    let id = droplet_id(&prior);
    let (planned, d) = w
        .plan_update(&prior, |st| st.reserved_ip = Value::Value(true))
        .await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(replace.is_empty());
    assert!(planned.reserved_ip_address.is_unknown());
    assert_eq!(planned.droplet_id, prior.droplet_id, "no new droplet");
    assert!(planned.certificate_pem.is_unknown(), "SANs change");
    assert_eq!(
        planned.ca_certificate_pem, prior.ca_certificate_pem,
        "same CA"
    );

    let on = w
        .updated(&prior, |st| st.reserved_ip = Value::Value(true))
        .await;
    assert_eq!(droplet_id(&on), id);
    assert_eq!(text(&on.reserved_ip_address), RESERVED);
    assert_eq!(on.record_id, prior.record_id, "the same record, moved");
    assert_eq!(w.record_data(&on).await.as_deref(), Some(RESERVED));
    assert_eq!(
        w.reserved_ip(RESERVED).await.unwrap().droplet_id(),
        Some(id)
    );
    assert_eq!(
        w.outside.checked_ips().last().map(String::as_str),
        Some(RESERVED)
    );

    assert_eq!(cert_ips(&on), [RESERVED, FIRST_IP]);
    assert_eq!(on.ca_certificate_pem, prior.ca_certificate_pem, "same CA");

    // Read keeps it; a plan with nothing changed changes nothing about it.
    let (read, _) = w.read(&on).await;
    assert_eq!(read.unwrap().reserved_ip_address, on.reserved_ip_address);
    let (same, d) = w.plan_update(&on, |_| {}).await;
    let (same, _) = same.unwrap_or_else(|| panic!("{d:?}"));
    assert_eq!(
        same.certificate_pem, on.certificate_pem,
        "no new certificate"
    );
    // A certificate issued before it named the reserved IP is issued again, by the same CA.
    let mut older = on.clone();
    older.certificate_pem = prior.certificate_pem.clone();
    let (again, d) = w.plan_update(&older, |_| {}).await;
    let (again, _) = again.unwrap_or_else(|| panic!("{d:?}"));
    assert!(again.certificate_pem.is_unknown());
    assert_eq!(again.ca_certificate_pem, on.ca_certificate_pem);

    let off = w
        .updated(&on, |st| st.reserved_ip = Value::Value(false))
        .await;
    assert!(off.reserved_ip_address.is_null());
    assert_eq!(cert_ips(&off), [FIRST_IP]);
    assert_eq!(off.ca_certificate_pem, prior.ca_certificate_pem);
    assert_eq!(w.record_data(&off).await.as_deref(), Some(FIRST_IP));
    assert!(w.reserved_ip(RESERVED).await.is_none(), "deleted");
    assert_eq!(droplet_id(&off), id);
}

#[tokio::test]
async fn a_reserved_ip_deleted_by_hand_is_made_again_by_the_next_apply() {
    let w = World::start().await;
    let prior = w.created(with_reserved_ip(config("reg"))).await;
    w.client().unassign_reserved_ip(RESERVED).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    w.client().delete_reserved_ip(RESERVED).await.unwrap();
    let (read, _) = w.read(&prior).await;
    let read = read.unwrap();
    assert!(read.reserved_ip_address.is_null());
    let st = w.updated(&read, |_| {}).await;
    let ip = text(&st.reserved_ip_address).to_owned();
    assert_eq!(w.record_data(&st).await.as_deref(), Some(ip.as_str()));
    assert_eq!(
        w.reserved_ip(&ip).await.unwrap().droplet_id(),
        Some(droplet_id(&st))
    );
}

#[tokio::test]
async fn a_reserved_ip_moved_by_hand_shows_in_the_plan_and_apply_assigns_it_back() {
    let w = World::start().await;
    let prior = w.created(with_reserved_ip(config("reg"))).await;
    let id = droplet_id(&prior);
    w.client().unassign_reserved_ip(RESERVED).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(w.reserved_ip(RESERVED).await.unwrap().droplet_id(), None);

    let (read, d) = w.read(&prior).await;
    let read = read.unwrap();
    assert_eq!(
        summaries(&d.warnings),
        [format!(
            "Reserved IP ({RESERVED}) is not on the registry's droplet"
        )]
    );
    assert_eq!(read.reserved_ip, Value::Value(false), "as it is");
    assert_eq!(read.reserved_ip_address, prior.reserved_ip_address, "kept");

    // The configuration still says `reserved_ip = true`: the plan turns it on again, with
    // the same address, no new certificate and no replacement.
    let as_configured = |st: &mut RegistryState| st.reserved_ip = Value::Value(true);
    let (planned, d) = w.plan_update(&read, as_configured).await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(replace.is_empty());
    assert_eq!(planned.reserved_ip, Value::Value(true));
    assert_eq!(planned.reserved_ip_address, prior.reserved_ip_address);
    assert_eq!(planned.certificate_pem, prior.certificate_pem);

    let st = w.updated(&read, as_configured).await;
    assert_eq!(st.reserved_ip_address, prior.reserved_ip_address);
    assert_eq!(
        w.reserved_ip(RESERVED).await.unwrap().droplet_id(),
        Some(id)
    );
    assert_eq!(w.record_data(&st).await.as_deref(), Some(RESERVED));
    let (again, d) = w.read(&st).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    assert_eq!(again.unwrap().reserved_ip, Value::Value(true));
}
