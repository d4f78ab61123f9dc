//! The host key's move, through the operations: droplets (test machines) that show the key
//! their user data carries until the provider installs the registry's, as sshd would.

use tf_provider::value::Value;

use super::*;
use crate::remote::host_key::{SSH_HOST_KEY, SSH_HOST_KEY_PUB};
use crate::remote::{derived_host_key, fingerprint_sha256};

/// The host key pair in the user data droplet `ip` was created with.
fn user_data_key(w: &World, ip: &str) -> (String, String) {
    let user_data = w.api.hv.user_data_of(ip).expect("user data");
    let json: serde_json::Value =
        serde_json::from_str(user_data.strip_prefix("#cloud-config\n").unwrap()).unwrap();
    let keys = &json["ssh_keys"];
    (
        keys["ed25519_private"].as_str().unwrap().to_owned(),
        keys["ed25519_public"].as_str().unwrap().to_owned(),
    )
}

/// Puts a host key pair on the test machine at `ip`, as someone with root on it could.
fn serve_key(w: &World, ip: &str, private: &str, public: &str) {
    let m = w.machines.machine(ip);
    std::fs::write(m.path(SSH_HOST_KEY), private).unwrap();
    std::fs::write(m.path(SSH_HOST_KEY_PUB), format!("{public}\n")).unwrap();
}

fn served_key(w: &World, ip: &str) -> String {
    let m = w.machines.machine(ip);
    std::fs::read_to_string(m.path(SSH_HOST_KEY_PUB))
        .unwrap()
        .trim()
        .to_owned()
}

/// `st` as a provider before the move wrote it: the host key is the one in user data.
fn as_before_the_move(w: &World, st: &RegistryState) -> RegistryState {
    let (private, public) = user_data_key(w, FIRST_IP);
    let mut old = st.clone();
    old.host_private_key = s(&private);
    old.host_public_key = s(&public);
    old.host_key_fingerprint = s(&fingerprint_sha256(&public).unwrap());
    old.user_data_host_key_fingerprint = Value::Null;
    old
}

#[tokio::test]
async fn create_moves_the_droplet_off_the_key_in_its_user_data() {
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let mgmt = crate::secret::Secret::new(text(&st.management_private_key));
    let registry = derived_host_key(&mgmt).unwrap();
    let (born_private, born_public) = user_data_key(&w, FIRST_IP);
    // State holds the registry's key; user data held another one, now named in state.
    assert_eq!(text(&st.host_public_key), registry.public_openssh);
    assert_eq!(
        text(&st.host_private_key),
        registry.private_openssh.expose()
    );
    assert_eq!(text(&st.host_key_fingerprint), registry.fingerprint_sha256);
    assert_eq!(
        text(&st.user_data_host_key_fingerprint),
        fingerprint_sha256(&born_public).unwrap()
    );
    assert_ne!(born_public, registry.public_openssh);
    let user_data = w.api.hv.user_data_of(FIRST_IP).unwrap();
    // The first body line of every OpenSSH Ed25519 key is the same header; the rest is the key.
    for line in registry.private_openssh.expose().lines().skip(2) {
        if !line.starts_with("-----") {
            assert!(
                !user_data.contains(line),
                "the registry's key is in user data"
            );
        }
    }
    let registry_blob = registry.public_openssh.split_whitespace().nth(1).unwrap();
    assert!(!user_data.contains(registry_blob));
    // The droplet serves the registry's key, and the provider reaches it again.
    assert_eq!(served_key(&w, FIRST_IP), registry.public_openssh);
    let (read, d) = w.read(&st).await;
    assert!(d.errors.is_empty() && d.warnings.is_empty(), "{d:?}");
    assert_eq!(read.unwrap().host_public_key, st.host_public_key);
    assert!(!w.machines.log().iter().any(|l| l.starts_with("refused")));
    drop(born_private);

    // A new droplet of the same registry is born with a key of its own and moved to the same
    // registry key: people's known_hosts stay right.
    let st2 = w
        .updated(&st, |st| st.droplet_generation = Value::Value(2))
        .await;
    let (_, born_again) = user_data_key(&w, SECOND_IP);
    assert_ne!(born_again, born_public);
    assert_eq!(st2.host_private_key, st.host_private_key);
    assert_eq!(served_key(&w, SECOND_IP), registry.public_openssh);
    assert_eq!(
        text(&st2.user_data_host_key_fingerprint),
        fingerprint_sha256(&born_again).unwrap()
    );
}

#[tokio::test]
async fn a_droplet_showing_its_user_data_key_is_refused_by_name_and_sent_nothing() {
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let (private, public) = user_data_key(&w, FIRST_IP);
    serve_key(&w, FIRST_IP, &private, &public);
    let machine = w.machines.machine(FIRST_IP);
    let execs = machine.exec_count();

    let (_, d) = w.read(&st).await;
    let warned = format!("{:?}", d.warnings);
    assert!(warned.contains("user data"), "{warned}");
    let (after, d) = w
        .update(&st, |st| {
            if let Value::Value(users) = &mut st.users {
                users.remove("reader");
            }
        })
        .await;
    assert_eq!(summaries(&d.errors), ["Updating the registry failed"]);
    let detail = format!("{:?}", d.errors);
    assert!(detail.contains("user data"), "{detail}");
    assert!(
        detail.contains(&fingerprint_sha256(&public).unwrap()),
        "{detail}"
    );
    assert_eq!(machine.exec_count(), execs, "something ran on the machine");
    assert!(w
        .machines
        .log()
        .contains(&format!("refused-host-key {FIRST_IP}")));
    // State still names the registry's key and the refused one.
    assert_eq!(after.host_public_key, st.host_public_key);
    assert_eq!(
        after.user_data_host_key_fingerprint,
        st.user_data_host_key_fingerprint
    );
}

#[tokio::test]
async fn a_registry_from_before_the_move_is_moved_on_the_next_apply() {
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let old = as_before_the_move(&w, &st);
    let (private, public) = user_data_key(&w, FIRST_IP);
    serve_key(&w, FIRST_IP, &private, &public);

    // Read reaches it as it is; the plan says the key changes, and to what.
    let (read, d) = w.read(&old).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    let read = read.unwrap();
    let (planned, d) = w.plan_update(&read, |_| {}).await;
    let (planned, _) = planned.unwrap();
    assert_eq!(
        summaries(&d.warnings),
        ["The droplet's SSH host key will be replaced"]
    );
    assert_eq!(planned.host_public_key, st.host_public_key);
    assert_eq!(
        text(&planned.user_data_host_key_fingerprint),
        fingerprint_sha256(&public).unwrap()
    );

    let moved = w.updated(&read, |_| {}).await;
    assert_eq!(moved.host_private_key, st.host_private_key);
    assert_eq!(moved.host_public_key, planned.host_public_key);
    assert_eq!(
        moved.user_data_host_key_fingerprint,
        planned.user_data_host_key_fingerprint
    );
    assert_eq!(served_key(&w, FIRST_IP), text(&st.host_public_key));
    // From now on the old key opens nothing.
    serve_key(&w, FIRST_IP, &private, &public);
    let (_, d) = w.read(&moved).await;
    assert!(format!("{:?}", d.warnings).contains("user data"), "{d:?}");
}

#[tokio::test]
async fn a_move_that_never_reached_state_still_connects_and_is_recorded() {
    // The provider was killed after the droplet got the registry's key and before state
    // recorded it: state still names the key in user data, the droplet shows the new one.
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let old = as_before_the_move(&w, &st);
    assert_eq!(served_key(&w, FIRST_IP), text(&st.host_public_key));

    let (read, d) = w.read(&old).await;
    assert!(d.warnings.is_empty(), "{d:?}");
    let moved = w.updated(&read.unwrap(), |_| {}).await;
    assert_eq!(moved.host_private_key, st.host_private_key);
    assert_eq!(
        moved.user_data_host_key_fingerprint,
        st.user_data_host_key_fingerprint
    );
    assert!(!w.machines.log().iter().any(|l| l.starts_with("refused")));
}

#[tokio::test]
async fn a_machine_with_any_other_key_is_refused_before_the_move_too() {
    let w = World::start().await;
    let st = w.created(config("reg")).await;
    let old = as_before_the_move(&w, &st);
    let stranger = crate::remote::generate_ed25519("stranger").unwrap();
    serve_key(
        &w,
        FIRST_IP,
        stranger.private_openssh.expose(),
        &stranger.public_openssh,
    );
    let (_, d) = w.update(&old, |_| {}).await;
    let detail = format!("{:?}", d.errors);
    assert!(detail.contains("does not match"), "{detail}");
    assert!(detail.contains(&stranger.fingerprint_sha256), "{detail}");
}
