//! Users: what a plan knows of each one (access, generated password, bcrypt hash, docker
//! configs) and what apply fills in, with new passwords hashed on every core at once.
//!
//! Everything derived lives in top-level maps by user name, none inside `users`: OpenTofu's
//! cost per sensitive or computed attribute inside map elements grows with the square of the
//! number of users, while a whole map costs one mark (see `schema`). A hash or a generated
//! password is kept while its user's password stays the same, so an unchanged user never
//! shows in a plan and its line on the droplet never changes.

use base64::Engine;
use tf_provider::value::Value;

use super::error::{Error, Result};
use super::state::{known, ByUser, RegistryState, UserState, S};
use crate::render::{self, RenderError};
use crate::secret::Secret;

/// A generated password: 32 of `A-Za-z0-9`, about 190 bits, nothing a shell or URL mangles.
pub const GENERATED_PASSWORD_LEN: usize = 32;

/// Where a user's plaintext comes from; the value may be unknown in a plan.
#[derive(Clone, Debug, PartialEq)]
enum Plain {
    Given(S),
    Generated(S),
    /// Only `password_bcrypt`: the provider never sees the password.
    HashOnly,
}

impl Plain {
    fn text(&self) -> Option<&S> {
        match self {
            Plain::Given(p) | Plain::Generated(p) => Some(p),
            Plain::HashOnly => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    /// `push` or `pull`; unknown while the configuration's value is.
    access: S,
    plain: Plain,
    hash: S,
}

/// The users' computed attributes, as planned or as filled in at apply.
#[derive(Clone, Debug)]
pub struct UserOutputs {
    fqdn: S,
    /// None: `users` itself is unknown, so is everything derived from it.
    entries: Option<Vec<Entry>>,
    /// In a plan: the prior docker configs. A config that would change is planned unknown,
    /// as a value apply makes, so that dependent resources see it change.
    prior_configs: Option<(ByUser, S)>,
}

/// The plan of the users' computed attributes from `st` and, for a change, `prior`.
pub fn plan(st: &mut RegistryState, prior: Option<&RegistryState>) {
    UserOutputs::plan(st, prior).store(st);
}

/// Apply: the users' computed attributes with nothing unknown left.
pub async fn fill(st: &mut RegistryState, prior: Option<&RegistryState>) -> Result<()> {
    start(st, prior).finish(st).await
}

/// `fill` on this thread: for a state upgrade, where every hash is kept and nothing waits.
pub fn fill_now(st: &mut RegistryState, prior: Option<&RegistryState>) -> Result<()> {
    UserOutputs::plan(st, prior).resolved()?.store(st);
    Ok(())
}

/// Hashing under way on a blocking thread (a create overlaps it with the droplet's boot).
pub struct Pending(tokio::task::JoinHandle<Result<UserOutputs>>);

/// Starts filling in what the plan left unknown: passwords generated, new ones hashed.
pub fn start(st: &RegistryState, prior: Option<&RegistryState>) -> Pending {
    let outputs = UserOutputs::plan(st, prior);
    Pending(tokio::task::spawn_blocking(move || outputs.resolved()))
}

impl Pending {
    /// Waits for the hashes and stores every computed user attribute into `st`.
    pub async fn finish(self, st: &mut RegistryState) -> Result<()> {
        let outputs = self
            .0
            .await
            .map_err(|e| Error::Render(RenderError::Hash(format!("hashing stopped: {e}"))))??;
        outputs.store(st);
        Ok(())
    }
}

/// `access` as it takes effect: unset means `push`.
fn access_of(u: &UserState) -> S {
    match &u.access {
        Value::Null => Value::Value(super::schema::DEFAULT_ACCESS.to_owned()),
        other => other.clone(),
    }
}

/// `map[name]` when known.
fn entry_of(map: &ByUser, name: &str) -> Option<String> {
    map.as_ref_option()?.get(name)?.as_ref_option().cloned()
}

impl UserOutputs {
    fn plan(st: &RegistryState, prior: Option<&RegistryState>) -> UserOutputs {
        let entries = match &st.users {
            Value::Unknown => None,
            Value::Null => Some(Vec::new()),
            Value::Value(users) => Some(
                users
                    .iter()
                    .map(|(name, u)| match u {
                        Value::Value(u) => Entry::plan(name, u, prior),
                        // A user object not known yet: nothing about it is.
                        _ => Entry {
                            name: name.clone(),
                            access: Value::Unknown,
                            plain: Plain::Given(Value::Unknown),
                            hash: Value::Unknown,
                        },
                    })
                    .collect(),
            ),
        };
        UserOutputs {
            fqdn: st.fqdn.clone(),
            entries,
            prior_configs: Some(
                prior
                    .map(|p| (p.docker_config_jsons.clone(), p.docker_config_json.clone()))
                    .unwrap_or((Value::Null, Value::Null)),
            ),
        }
    }

    /// Every unknown filled in: passwords generated, then all new hashes made in parallel.
    fn resolved(mut self) -> Result<UserOutputs> {
        self.prior_configs = None;
        let Some(entries) = &mut self.entries else {
            return Err(Error::InputsUnknown);
        };
        let mut jobs = Vec::new();
        for (i, e) in entries.iter_mut().enumerate() {
            if e.access.is_unknown() || e.hash.is_unknown() && e.plain == Plain::HashOnly {
                return Err(Error::InputsUnknown);
            }
            if let Plain::Generated(p) = &mut e.plain {
                if p.is_unknown() {
                    *p = Value::Value(generate_password());
                }
            }
            if e.hash.is_unknown() {
                let pw = e
                    .plain
                    .text()
                    .and_then(|p| p.as_ref_option())
                    .ok_or(Error::InputsUnknown)?;
                jobs.push((i, Secret::new(pw.clone())));
            }
        }
        for (i, hash) in hash_all(jobs)? {
            entries[i].hash = Value::Value(hash);
        }
        Ok(self)
    }

    /// Writes every computed user attribute into `st`.
    fn store(self, st: &mut RegistryState) {
        let Some(entries) = &self.entries else {
            st.user_access = Value::Unknown;
            st.generated_passwords = Value::Unknown;
            st.bcrypt_hashes = Value::Unknown;
            st.docker_config_jsons = Value::Unknown;
            st.docker_config_json = Value::Unknown;
            return;
        };
        let by_name = |f: &dyn Fn(&Entry) -> Option<S>| -> ByUser {
            Value::Value(
                entries
                    .iter()
                    .filter_map(|e| Some((e.name.clone(), f(e)?)))
                    .collect(),
            )
        };
        let fqdn = &self.fqdn;
        st.user_access = by_name(&|e| Some(e.access.clone()));
        st.generated_passwords = by_name(&|e| match &e.plain {
            Plain::Generated(p) => Some(p.clone()),
            _ => None,
        });
        st.bcrypt_hashes = by_name(&|e| Some(e.hash.clone()));
        let prior = self.prior_configs.as_ref();
        // In a plan, a config that is not the prior one is left for apply to make.
        let planned = |new: S, old: Option<S>| match prior {
            Some(_) if old.as_ref() != Some(&new) => Value::Unknown,
            _ => new,
        };
        st.docker_config_jsons = by_name(&|e| {
            let new = user_config(fqdn, &e.name, e.plain.text()?);
            let old = prior.and_then(|(m, _)| Some(Value::Value(entry_of(m, &e.name)?)));
            Some(planned(new, old))
        });
        st.docker_config_json = planned(
            first_user_config(fqdn, entries),
            prior.map(|(_, one)| one.clone()),
        );
    }
}

impl Entry {
    fn plan(name: &str, u: &UserState, prior: Option<&RegistryState>) -> Entry {
        let was = prior.and_then(|p| {
            p.users
                .as_ref_option()?
                .get(name)?
                .as_ref_option()
                .map(|u| (p, u))
        });
        let kept_hash = || was.and_then(|(p, _)| entry_of(&p.bcrypt_hashes, name));
        let (plain, hash) = if !u.password.is_null() {
            // The hash is kept while the password is the one it was made from.
            let same = was.is_some_and(|(_, w)| u.password.is_value() && w.password == u.password);
            let hash = same.then(kept_hash).flatten();
            (Plain::Given(u.password.clone()), hash.map(Value::Value))
        } else if !u.password_bcrypt.is_null() {
            (Plain::HashOnly, Some(u.password_bcrypt.clone()))
        } else {
            // A generated password stays while the user keeps asking for one.
            let generated = was
                .filter(|(_, w)| w.password.is_null() && w.password_bcrypt.is_null())
                .and_then(|(p, _)| entry_of(&p.generated_passwords, name));
            let hash = generated.as_ref().and(kept_hash());
            (
                Plain::Generated(generated.map(Value::Value).unwrap_or(Value::Unknown)),
                hash.map(Value::Value),
            )
        };
        Entry {
            name: name.to_owned(),
            access: access_of(u),
            plain,
            hash: hash.unwrap_or(Value::Unknown),
        }
    }
}

/// `{"auths": {fqdn: {"auth": base64("user:password")}}}`, as `docker login` writes it: what
/// docker, podman, skopeo and Kubernetes' kubelet all read.
fn user_config(fqdn: &S, name: &str, password: &S) -> S {
    let (Some(fqdn), Some(password)) = (known(fqdn), password.as_ref_option()) else {
        return Value::Unknown;
    };
    Value::Value(auths(fqdn, name, password))
}

fn auths(fqdn: &str, name: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
    serde_json::json!({ "auths": { fqdn: { "auth": auth } } }).to_string()
}

/// `docker_config_json`: `{"auths": {fqdn: {"auth"}}}` for the first push user by name whose
/// password is known, else the first such pull user; `{"auths": {}}` when there is none.
fn first_user_config(fqdn: &S, entries: &[Entry]) -> S {
    let mut candidates: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.plain.text().is_some())
        .collect();
    if candidates.iter().any(|e| e.access.is_unknown()) {
        return Value::Unknown;
    }
    candidates.sort_by_key(|e| {
        (
            e.access.as_ref_option().map(String::as_str) != Some("push"),
            &e.name,
        )
    });
    let Some(first) = candidates.first() else {
        return Value::Value(serde_json::json!({ "auths": {} }).to_string());
    };
    let (Some(fqdn), Some(password)) = (
        known(fqdn),
        first.plain.text().and_then(|p| p.as_ref_option()),
    ) else {
        return Value::Unknown;
    };
    Value::Value(auths(fqdn, &first.name, password))
}

/// 32 characters of `A-Za-z0-9` from the OS's generator.
pub fn generate_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::rngs::OsRng, GENERATED_PASSWORD_LEN)
}

/// bcrypt of each password, spread over the machine's cores: one hash costs the same CPU
/// whatever the order, so 1,000 new users take 1/cores of the time.
fn hash_all(jobs: Vec<(usize, Secret)>) -> Result<Vec<(usize, String)>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len());
    let per_thread = jobs.len().div_ceil(threads);
    let started = std::time::Instant::now();
    let hashed: Vec<std::result::Result<Vec<(usize, String)>, RenderError>> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = jobs
                .chunks(per_thread)
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(i, pw)| Ok((*i, render::hash_password(pw)?)))
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| {
                        Err(RenderError::Hash("a hashing thread panicked".into()))
                    })
                })
                .collect()
        });
    let mut out = Vec::with_capacity(jobs.len());
    for part in hashed {
        out.extend(part?);
    }
    tracing::info!(
        hashed = out.len(),
        threads,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "user passwords hashed"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::render::htpasswd::password_matches;

    const HASH: &str = "$2y$08$abcdefghijklmnopqrstuu5UmCkrG5qkWh4Tlr2ct8ErgEjCJwDpu";

    fn s(v: &str) -> S {
        Value::Value(v.to_owned())
    }

    fn user(password: Option<&str>, hash: Option<&str>, access: Option<&str>) -> Value<UserState> {
        Value::Value(UserState {
            password: password.map(str::to_owned).into(),
            password_bcrypt: hash.map(str::to_owned).into(),
            access: access.map(str::to_owned).into(),
        })
    }

    /// admin (push, given), ci (pull, generated), old (pull, hash only).
    fn config() -> RegistryState {
        let users = BTreeMap::from([
            (
                "admin".to_owned(),
                user(Some("admin-password-01"), None, None),
            ),
            ("ci".to_owned(), user(None, None, Some("pull"))),
            ("old".to_owned(), user(None, Some(HASH), Some("pull"))),
        ]);
        RegistryState {
            fqdn: s("registry.example.test"),
            users: Value::Value(users),
            ..Default::default()
        }
    }

    fn get(map: &ByUser, name: &str) -> S {
        map.as_ref_option()
            .and_then(|m| m.get(name).cloned())
            .unwrap_or(Value::Null)
    }

    fn set_user(st: &mut RegistryState, name: &str, u: Value<UserState>) {
        if let Value::Value(users) = &mut st.users {
            users.insert(name.to_owned(), u);
        }
    }

    async fn applied(mut st: RegistryState, prior: Option<&RegistryState>) -> RegistryState {
        fill(&mut st, prior).await.unwrap();
        st
    }

    #[test]
    fn a_new_registry_plans_access_and_given_hashes_and_leaves_the_rest_to_apply() {
        let mut st = config();
        plan(&mut st, None);
        assert_eq!(get(&st.user_access, "admin"), s("push"));
        assert_eq!(get(&st.user_access, "ci"), s("pull"));
        assert_eq!(get(&st.bcrypt_hashes, "old"), s(HASH));
        for name in ["admin", "ci"] {
            assert!(get(&st.bcrypt_hashes, name).is_unknown(), "{name}");
            assert!(get(&st.docker_config_jsons, name).is_unknown(), "{name}");
        }
        assert!(get(&st.generated_passwords, "ci").is_unknown());
        // No plaintext for a hash-only user: no config, no generated password.
        assert_eq!(get(&st.docker_config_jsons, "old"), Value::Null);
        assert_eq!(get(&st.generated_passwords, "admin"), Value::Null);
        assert!(st.docker_config_json.is_unknown());
    }

    #[tokio::test]
    async fn apply_generates_hashes_and_writes_a_config_per_user() {
        let st = applied(config(), None).await;
        let generated = get(&st.generated_passwords, "ci")
            .as_ref_option()
            .unwrap()
            .clone();
        assert_eq!(generated.len(), GENERATED_PASSWORD_LEN);
        assert!(generated.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(generate_password(), generated, "not random");
        for (name, pw) in [("admin", "admin-password-01"), ("ci", generated.as_str())] {
            let hash = get(&st.bcrypt_hashes, name)
                .as_ref_option()
                .unwrap()
                .clone();
            assert!(hash.starts_with("$2y$"), "{hash}");
            assert!(password_matches(&Secret::new(pw), &hash), "{name}");
            let config = get(&st.docker_config_jsons, name)
                .as_ref_option()
                .unwrap()
                .clone();
            let v: serde_json::Value = serde_json::from_str(&config).unwrap();
            // Only `auth`, as `docker login` writes it.
            let entry = v["auths"]["registry.example.test"].as_object().unwrap();
            assert_eq!(entry.keys().collect::<Vec<_>>(), ["auth"]);
            let auth = base64::engine::general_purpose::STANDARD
                .decode(entry["auth"].as_str().unwrap())
                .unwrap();
            assert_eq!(auth, format!("{name}:{pw}").as_bytes());
        }
        assert_eq!(get(&st.bcrypt_hashes, "old"), s(HASH));
        assert_eq!(get(&st.docker_config_jsons, "old"), Value::Null);
        // The one-user config: the push user first.
        let one: serde_json::Value =
            serde_json::from_str(st.docker_config_json.as_ref_option().unwrap()).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("admin:admin-password-01");
        assert_eq!(
            one,
            serde_json::json!({"auths": {"registry.example.test": {"auth": auth}}})
        );
    }

    #[tokio::test]
    async fn an_unchanged_user_keeps_everything_and_a_changed_one_only_its_own() {
        let prior = applied(config(), None).await;
        // Nothing changed: the plan is the prior state, every value known.
        let mut st = config();
        st.bcrypt_hashes = Value::Unknown;
        plan(&mut st, Some(&prior));
        for attr in [
            (&st.user_access, &prior.user_access),
            (&st.generated_passwords, &prior.generated_passwords),
            (&st.bcrypt_hashes, &prior.bcrypt_hashes),
            (&st.docker_config_jsons, &prior.docker_config_jsons),
        ] {
            assert_eq!(attr.0, attr.1);
        }
        assert_eq!(st.docker_config_json, prior.docker_config_json);

        // admin's password changes: its hash and config only.
        let mut st = config();
        set_user(
            &mut st,
            "admin",
            user(Some("another-password-2"), None, None),
        );
        plan(&mut st, Some(&prior));
        assert!(get(&st.bcrypt_hashes, "admin").is_unknown());
        assert!(get(&st.docker_config_jsons, "admin").is_unknown());
        assert!(st.docker_config_json.is_unknown());
        assert_eq!(
            get(&st.bcrypt_hashes, "ci"),
            get(&prior.bcrypt_hashes, "ci")
        );
        assert_eq!(
            get(&st.generated_passwords, "ci"),
            get(&prior.generated_passwords, "ci")
        );
        assert_eq!(
            get(&st.docker_config_jsons, "ci"),
            get(&prior.docker_config_jsons, "ci")
        );
        let after = applied(st, Some(&prior)).await;
        assert_ne!(
            get(&after.bcrypt_hashes, "admin"),
            get(&prior.bcrypt_hashes, "admin")
        );
        assert_eq!(
            get(&after.bcrypt_hashes, "ci"),
            get(&prior.bcrypt_hashes, "ci")
        );

        // Only access changes: the hash stays, the effective access shows the change.
        let mut st = config();
        set_user(&mut st, "ci", user(None, None, None));
        plan(&mut st, Some(&prior));
        assert_eq!(get(&st.user_access, "ci"), s("push"));
        assert_eq!(
            get(&st.bcrypt_hashes, "ci"),
            get(&prior.bcrypt_hashes, "ci")
        );
        // ... and the one-user config, which picks push users first, may change.
        assert!(st.docker_config_json.is_value());
    }

    #[tokio::test]
    async fn a_generated_password_lasts_until_the_user_sets_one_or_goes() {
        let prior = applied(config(), None).await;
        let generated = get(&prior.generated_passwords, "ci");
        // ci sets a password: the generated one is gone.
        let mut st = config();
        set_user(
            &mut st,
            "ci",
            user(Some("ci-password-0001"), None, Some("pull")),
        );
        let st = applied(st, Some(&prior)).await;
        assert_eq!(get(&st.generated_passwords, "ci"), Value::Null);
        // ... and removes it again: a new one, not the old one back.
        let mut again = config();
        plan(&mut again, Some(&st));
        assert!(get(&again.generated_passwords, "ci").is_unknown());
        let again = applied(config(), Some(&st)).await;
        assert_ne!(get(&again.generated_passwords, "ci"), generated);
        // Removed and added back: new too.
        let mut gone = config();
        if let Value::Value(users) = &mut gone.users {
            users.remove("ci");
        }
        let gone = applied(gone, Some(&prior)).await;
        assert_eq!(get(&gone.bcrypt_hashes, "ci"), Value::Null);
        let back = applied(config(), Some(&gone)).await;
        assert_ne!(get(&back.generated_passwords, "ci"), generated);
    }

    #[test]
    fn unknown_users_leave_everything_unknown_and_no_users_nothing() {
        let mut st = config();
        st.users = Value::Unknown;
        plan(&mut st, None);
        assert!(st.user_access.is_unknown() && st.bcrypt_hashes.is_unknown());
        assert!(st.docker_config_jsons.is_unknown() && st.docker_config_json.is_unknown());
        let mut st = config();
        set_user(&mut st, "admin", Value::Unknown);
        plan(&mut st, None);
        assert!(get(&st.user_access, "admin").is_unknown());
        let mut st = config();
        st.users = Value::Null;
        fill_now(&mut st, None).unwrap();
        assert_eq!(st.bcrypt_hashes, Value::Value(BTreeMap::new()));
        assert_eq!(
            st.docker_config_json,
            s(&serde_json::json!({"auths": {}}).to_string())
        );
    }

    #[test]
    fn hashes_in_parallel_come_back_to_their_users() {
        let jobs: Vec<(usize, Secret)> = (0..6)
            .map(|i| (i * 10, Secret::new(format!("password-number-{i}"))))
            .collect();
        let mut out = hash_all(jobs).unwrap();
        out.sort();
        assert_eq!(out.len(), 6);
        for (k, (i, hash)) in out.iter().enumerate() {
            assert_eq!(*i, k * 10);
            assert!(password_matches(
                &Secret::new(format!("password-number-{k}")),
                hash
            ));
        }
        assert!(hash_all(Vec::new()).unwrap().is_empty());
    }
}
