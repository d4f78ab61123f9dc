//! Waits on DigitalOcean state: a droplet becoming active, an action completing. Each names
//! its object and states, polls 1 s growing to 5 s, and stops at the caller's timeout.

use std::future::Future;
use std::time::{Duration, Instant};

use super::types::{Action, Droplet, LoadBalancer, Snapshot};
use super::{Client, Error};

/// What one poll saw.
enum Poll<T> {
    Done(T),
    /// Not there yet; the state named in a timeout message.
    Pending(String),
}

impl Client {
    /// Polls `check` until it is done, fails, or `timeout` passes.
    async fn poll_until<T, F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<Poll<T>, Error>>,
    {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut interval = self.timings().poll_start;
        let mut state = String::from("unknown");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A request retrying on 5xx must not carry the wait past its deadline.
            let polled = tokio::time::timeout(
                remaining.max(Duration::from_millis(1)),
                check(started.elapsed()),
            )
            .await;
            match polled {
                Ok(Ok(Poll::Done(v))) => return Ok(v),
                Ok(Ok(Poll::Pending(s))) => state = s,
                // These already say what was awaited; the rest needs saying.
                Ok(Err(e @ (Error::UnexpectedState { .. } | Error::ActionErrored { .. }))) => {
                    return Err(e)
                }
                Ok(Err(e)) => {
                    return Err(Error::Context {
                        what: what.to_owned(),
                        source: Box::new(e),
                    })
                }
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    state,
                    elapsed: now - started,
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 3 / 2).min(self.timings().poll_max);
        }
    }

    /// Waits for the droplet's status to become `active`. A 404 is tolerated for the first
    /// `not_found_grace` (DigitalOcean may not list a droplet it just accepted); later, or
    /// for a droplet that turned `off` or `archive`, the wait fails.
    pub async fn wait_for_droplet_active(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<Droplet, Error> {
        self.wait_for_new_droplet(id, None, timeout).await
    }

    /// As [`Client::wait_for_droplet_active`], watching the droplet's `create` action too: a
    /// boot that errors leaves the droplet `new` and only its action says so, so without the
    /// action the wait would last until its timeout.
    pub async fn wait_for_new_droplet(
        &self,
        id: u64,
        create_action: Option<u64>,
        timeout: Duration,
    ) -> Result<Droplet, Error> {
        let what = format!("waiting for droplet ({id}) to become active");
        let grace = self.timings().not_found_grace;
        let what = &what;
        self.poll_until(what, timeout, |elapsed| async move {
            let pending = match self.get_droplet(id).await? {
                None if elapsed < grace => "not found".to_owned(),
                None => {
                    return Err(Error::UnexpectedState {
                        what: what.clone(),
                        state: "not found".into(),
                        target: "active".into(),
                    })
                }
                Some(d) if d.status == "active" => return Ok(Poll::Done(d)),
                Some(d) if d.status == "new" || d.status.is_empty() => d.status,
                Some(d) => {
                    return Err(Error::UnexpectedState {
                        what: what.clone(),
                        state: d.status,
                        target: "active".into(),
                    })
                }
            };
            let Some(action_id) = create_action else {
                return Ok(Poll::Pending(pending));
            };
            match self.get_action(action_id).await {
                // Its state, not the action's: a completed action whose droplet still reads
                // `new` is a droplet about to turn active.
                Ok(a) => action_poll(what, a).map(|_| Poll::Pending(pending)),
                // The droplet's own state still ends the wait; an unreadable action only
                // delays noticing an errored boot.
                Err(e) => {
                    tracing::debug!(droplet = id, action = action_id, error = %e, "reading the create action");
                    Ok(Poll::Pending(pending))
                }
            }
        })
        .await
    }

    /// Waits for an action to leave `in-progress`: `completed` is success, `errored` an error.
    pub async fn wait_for_action(
        &self,
        action_id: u64,
        timeout: Duration,
    ) -> Result<Action, Error> {
        let what = &format!("waiting for action ({action_id}) to complete");
        self.poll_until(what, timeout, |_| async move {
            action_poll(what, self.get_action(action_id).await?)
        })
        .await
    }

    /// As [`Client::wait_for_action`], through the volume's own actions path.
    pub async fn wait_for_volume_action(
        &self,
        volume_id: &str,
        action_id: u64,
        timeout: Duration,
    ) -> Result<Action, Error> {
        let what = &format!("waiting for action ({action_id}) on volume ({volume_id}) to complete");
        self.poll_until(what, timeout, |_| async move {
            action_poll(what, self.get_volume_action(volume_id, action_id).await?)
        })
        .await
    }
}

impl Client {
    /// Waits until the snapshot can be read: DigitalOcean answers its create before every
    /// list and read shows it.
    pub async fn wait_for_snapshot(&self, id: &str, timeout: Duration) -> Result<Snapshot, Error> {
        let what = &format!("waiting for snapshot ({id}) to be listed");
        self.poll_until(what, timeout, |_| async move {
            Ok(match self.get_snapshot(id).await? {
                Some(s) => Poll::Done(s),
                None => Poll::Pending("not found".into()),
            })
        })
        .await
    }

    /// Waits until the balancer is `active` and has its address (DigitalOcean shows it `new`
    /// with no address while it provisions); `errored` fails the wait.
    pub async fn wait_for_load_balancer(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<LoadBalancer, Error> {
        let what = &format!("waiting for load balancer ({id}) to become active");
        self.poll_until(what, timeout, |_| async move {
            match self.get_load_balancer(id).await? {
                Some(lb) if lb.status == "active" && !lb.ip.is_empty() => Ok(Poll::Done(lb)),
                Some(lb) if lb.status == "errored" => Err(Error::UnexpectedState {
                    what: what.clone(),
                    state: lb.status,
                    target: "active".into(),
                }),
                Some(lb) => Ok(Poll::Pending(lb.status)),
                None => Ok(Poll::Pending("not found".into())),
            }
        })
        .await
    }
}

fn action_poll(what: &str, action: Action) -> Result<Poll<Action>, Error> {
    match action.status.as_str() {
        "completed" => Ok(Poll::Done(action)),
        "errored" => Err(Error::ActionErrored {
            what: what.to_owned(),
            action_id: action.id,
            kind: action.kind,
        }),
        other => Ok(Poll::Pending(other.to_owned())),
    }
}
