//! `replicas`: droplets behind a load balancer, the record on its address; `replicas` changed
//! in place (more, fewer, back to one), a droplet deleted by hand made again, a resize that
//! takes each droplet out of the balancer while it is off, and destroy.

use super::*;

fn with_replicas(n: i64) -> RegistryState {
    let mut c = config("reg");
    c.replicas = Value::Value(n);
    c.storage = Value::Value(StorageState {
        backend: s("spaces"),
        bucket: s("reg-images"),
        ..Default::default()
    });
    c
}

/// A world whose Spaces is a scripted bucket (the server runs until aborted).
async fn spaces_world() -> (World, tokio::task::JoinHandle<()>) {
    let bucket: scripted::Shared = Default::default();
    let (addr, server) = scripted::serve(bucket).await;
    let keys = Arc::new(RecordingSpaces::default());
    let w = World::start_with(keys, Some(&format!("http://{addr}"))).await;
    (w, server)
}

fn ids(st: &RegistryState) -> Vec<u64> {
    super::super::fleet::members(st)
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

impl World {
    async fn balancer(&self, st: &RegistryState) -> Option<do_api::LoadBalancer> {
        let id = st.load_balancer_id.as_ref_option()?;
        self.client()
            .get_load_balancer(id)
            .await
            .expect("GET load balancer")
    }

    /// The balancer's droplets, sorted.
    async fn balanced(&self, st: &RegistryState) -> Vec<u64> {
        let mut d = self.balancer(st).await.expect("a balancer").droplet_ids;
        d.sort_unstable();
        d
    }
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn replicas_change_in_place_come_back_when_deleted_by_hand_and_return_to_one() {
    let (w, server) = spaces_world().await;

    // Two droplets, the balancer holding both, the record on its address.
    let st = w.created(with_replicas(2)).await;
    let two = ids(&st);
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[0], droplet_id(&st), "droplet_id is the first");
    let lb = w.balancer(&st).await.expect("a balancer");
    assert_eq!(text(&st.load_balancer_ip), lb.ip);
    assert_eq!(w.balanced(&st).await, sorted(two.clone()));
    assert_eq!(w.record_data(&st).await.as_deref(), Some(lb.ip.as_str()));
    assert_eq!(
        w.firewall(text(&st.firewall_id))
            .await
            .unwrap()
            .droplet_ids
            .len(),
        2,
        "both droplets behind the firewall"
    );
    assert_eq!(
        lb.health_check.as_ref().map(|h| h.path.as_str()),
        Some("/healthz")
    );
    // One certificate for every droplet: it names the balancer's address, no droplet's.
    let leaf = crate::tls::leaf_info(text(&st.certificate_pem)).unwrap();
    let named: Vec<String> = leaf.ip_addresses.iter().map(|i| i.to_string()).collect();
    assert_eq!(named, [lb.ip.as_str()]);
    // Both droplets were converged: the balancer's health check is answered on each.
    for (_, ip) in super::super::fleet::members(&st) {
        let conf = std::fs::read_to_string(
            w.machines
                .machine(&ip)
                .path("/etc/nginx/conf.d/docker-registry.conf"),
        )
        .unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert!(conf.contains("location = /healthz {"), "{ip}: {conf}");
    }

    // A droplet an interrupted apply left (still tagged as being created, in no state).
    let leftover = w
        .api
        .add_droplet_tagged(&crate::resource::droplet::creating_tag(FQDN))
        .await;
    // Three: one more, the first two kept.
    let (planned, d) = w.plan_update(&st, |c| c.replicas = Value::Value(3)).await;
    let (planned, _) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(planned.droplet_ids.is_unknown() && planned.droplet_id == st.droplet_id);
    assert_eq!(
        planned.load_balancer_id, st.load_balancer_id,
        "the same balancer"
    );
    let st3 = w.updated(&st, |c| c.replicas = Value::Value(3)).await;
    assert!(
        w.client().get_droplet(leftover).await.unwrap().is_none(),
        "the leftover droplet outlived the next apply"
    );
    let three = ids(&st3);
    assert_eq!(&three[..2], &two[..], "{three:?}");
    assert_eq!(w.balanced(&st3).await, sorted(three.clone()));
    assert_eq!(
        st3.certificate_pem, st.certificate_pem,
        "the same certificate"
    );

    // A droplet deleted by hand: read drops it (and says so), apply makes another.
    w.client().delete_droplet(three[2]).await.unwrap();
    let (read, d) = w.read(&st3).await;
    let read = read.expect("still in state");
    assert_eq!(ids(&read), &three[..2]);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.summary.contains("A droplet of the registry is gone")),
        "{d:?}"
    );
    let (planned, _) = w.plan_update(&read, |_| {}).await;
    assert!(
        planned.unwrap().0.droplet_ids.is_unknown(),
        "the plan adds one"
    );
    let healed = w.updated(&read, |_| {}).await;
    assert_eq!(ids(&healed).len(), 3);
    assert_eq!(w.balanced(&healed).await, sorted(ids(&healed)));

    // A resize: each droplet out of the balancer while it is off, all back in at the end.
    let resized = w.updated(&healed, |c| c.size = s("s-2vcpu-2gb")).await;
    let calls = w.api.hv.calls();
    for id in ids(&healed) {
        assert!(
            calls.iter().any(|c| c.starts_with(&format!("resize {id}"))),
            "droplet {id} not resized: {calls:?}"
        );
    }
    assert_eq!(w.balanced(&resized).await, sorted(ids(&healed)));

    // Back to one: the first droplet stays, the record returns to it, the balancer goes.
    let (planned, _) = w
        .plan_update(&resized, |c| c.replicas = Value::Value(1))
        .await;
    let (planned, _) = planned.unwrap();
    assert!(planned.load_balancer_id.is_null() && planned.load_balancer_ip.is_null());
    let one = w.updated(&resized, |c| c.replicas = Value::Value(1)).await;
    assert_eq!(ids(&one), [three[0]]);
    assert!(one.load_balancer_id.is_null());
    assert_eq!(
        w.record_data(&one).await.as_deref(),
        Some(text(&one.ipv4_address))
    );
    assert!(
        w.client()
            .get_load_balancer(text(&st.load_balancer_id))
            .await
            .unwrap()
            .is_none(),
        "the balancer outlived replicas = 1"
    );
    for gone in &ids(&resized)[1..] {
        assert!(w.client().get_droplet(*gone).await.unwrap().is_none());
    }

    // Two again, then destroy: no droplet, no balancer.
    let again = w.updated(&one, |c| c.replicas = Value::Value(2)).await;
    assert_eq!(ids(&again)[0], three[0]);
    let d = w.destroy(&again).await;
    assert!(d.errors.is_empty(), "{d:?}");
    for id in ids(&again) {
        assert!(w.client().get_droplet(id).await.unwrap().is_none());
    }
    assert!(w.balancer(&again).await.is_none());
    server.abort();
}

#[tokio::test]
async fn a_new_image_replaces_the_droplets_one_at_a_time_behind_the_same_balancer() {
    let (w, server) = spaces_world().await;
    let st = w.created(with_replicas(2)).await;
    let old = ids(&st);
    let (planned, d) = w
        .plan_update(&st, |c| c.droplet_generation = Value::Value(1))
        .await;
    let (planned, replace) = planned.unwrap_or_else(|| panic!("{d:?}"));
    assert!(replace.is_empty());
    assert!(
        d.warnings
            .iter()
            .any(|w| w.summary == "The droplets will be replaced one at a time"),
        "{d:?}"
    );
    assert_eq!(
        planned.certificate_pem, st.certificate_pem,
        "kept: it names the balancer"
    );
    let new = w
        .updated(&st, |c| c.droplet_generation = Value::Value(1))
        .await;
    let now = ids(&new);
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|id| !old.contains(id)), "{old:?} -> {now:?}");
    assert_eq!(new.load_balancer_id, st.load_balancer_id);
    assert_eq!(w.balanced(&new).await, sorted(now.clone()));
    for id in old {
        assert!(w.client().get_droplet(id).await.unwrap().is_none());
    }
    // One at a time: the second new droplet was made after the first old one was removed.
    let calls = w.api.hv.calls();
    let at = |what: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(what))
            .unwrap_or_else(|| panic!("no {what}: {calls:?}"))
    };
    assert!(at(&format!("delete {}", ids(&st)[0])) < at(&format!("create {}", now[1])));
    server.abort();
}

#[tokio::test]
async fn a_hand_edit_on_any_droplet_shows_in_the_plan_and_apply_puts_it_back() {
    let (w, server) = spaces_world().await;
    let prior = w.created(with_replicas(2)).await;
    let (read, d) = w.read(&prior).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    assert_eq!(
        read.unwrap().files_digest,
        prior.files_digest,
        "no drift: the same files"
    );
    // The second droplet's htpasswd file edited by hand; the first is as written.
    let second = super::super::fleet::members(&prior)[1].1.clone();
    let machine = w.machines.machine(&second);
    std::fs::write(machine.path(paths::HTPASSWD), "mallory:$2y$05$x\n").unwrap();
    let (read, d) = w.read(&prior).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    let read = read.unwrap();
    let digest =
        |st: &RegistryState| st.files_digest.as_ref_option().unwrap()[paths::HTPASSWD].clone();
    assert!(
        text(&digest(&read)).starts_with("differs between droplets"),
        "{:?}",
        digest(&read)
    );
    let (planned, _) = w.plan_update(&read, |_| {}).await;
    let (st, _) = planned.unwrap();
    assert_eq!(digest(&st), digest(&prior), "the plan wants it back");
    let fixed = w.updated(&read, |_| {}).await;
    assert_eq!(digest(&fixed), digest(&prior));
    let htpasswd = std::fs::read_to_string(machine.path(paths::HTPASSWD)).unwrap();
    assert!(!htpasswd.contains("mallory") && htpasswd.contains("admin:"));
    server.abort();
}

#[tokio::test]
async fn a_collection_holds_writes_on_every_droplet_and_restarts_the_others_registry() {
    use crate::render::gc::gc_paths as gp;
    let (w, server) = spaces_world().await;
    let prior = w.created(with_gc(with_replicas(2), None, Some(0))).await;
    let members = super::super::fleet::members(&prior);
    let (first, second) = (
        w.machines.machine(&members[0].1),
        w.machines.machine(&members[1].1),
    );
    // The first droplet collects: its collector's status, as it would write it.
    let status = first.path(gp::STATUS);
    std::fs::create_dir_all(status.parent().unwrap()).unwrap();
    std::fs::write(
        &status,
        r#"{"result":"ok","finished_at":"2099-01-01T03:00:09Z","finished_unix":4070919609,"freed_bytes":null,"blobs_deleted":3}"#,
    )
    .unwrap();
    // When the first starts collecting (its first command reads the clock), the second must
    // hold writes already.
    first.shim(
        "date",
        &format!(
            "[ -e {:?} ] && echo 'second holds writes' >> \"$SHIM_LOG\"\nexec /bin/date \"$@\"",
            second.path(gp::RUNNING)
        ),
    );
    first.clear_log();
    second.clear_log();
    let st = w
        .updated(&prior, |c| *c = with_gc(c.clone(), None, Some(1)))
        .await;
    assert_eq!(
        text(&st.garbage_collection_last_run),
        "2099-01-01T03:00:09Z"
    );
    assert!(first.log().contains("systemctl start registry-gc.service"));
    let log = second.log();
    assert!(
        !log.contains("registry-gc.service"),
        "the second droplet collected too: {log}"
    );
    assert!(
        first.log().contains("second holds writes"),
        "the first collected while the second took writes: {}",
        first.log()
    );
    assert!(
        log.contains("systemctl restart docker-registry"),
        "the second droplet's registry kept its cache: {log}"
    );
    assert!(
        !second.path(gp::RUNNING).exists(),
        "writes still held on the second droplet"
    );
    assert_eq!(
        w.balanced(&st).await,
        sorted(ids(&st)),
        "both back in the balancer"
    );
    // Scheduled collections are refused: one droplet would collect while the other takes pushes.
    let (planned, d) = w
        .plan_update(&st, |c| *c = with_gc(c.clone(), Some("daily"), Some(1)))
        .await;
    assert!(planned.is_none());
    assert_eq!(
        summaries(&d.errors),
        ["`garbage_collection.schedule` with `replicas`"]
    );
    server.abort();
}
