//! The one error type of `docker_registry`'s operations: the inner layers' typed errors, the
//! resource's own failures, what was being done to which object, and the attribute concerned.
//!
//! Messages name the object and its id ("converging droplet halfway (1234): ..."), as
//! `do_api`'s do; `diag` is the only place that turns an `Error` into text for the user.

use std::fmt;

use tf_provider::AttributePath;

use crate::remote::RemoteError;
use crate::{acme, do_api, render, storage, tls};

/// The inner errors are boxed: they are large, and most results never carry one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(Box<do_api::Error>),
    #[error(transparent)]
    Remote(Box<RemoteError>),
    #[error(transparent)]
    Storage(Box<storage::Error>),
    #[error(transparent)]
    Acme(Box<acme::AcmeError>),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Render(#[from] render::RenderError),

    /// Something apply needs is not in state (lost, or never made by a failed create).
    #[error("no {0} in state")]
    MissingState(&'static str),

    #[error("no domain of this DigitalOcean account holds {fqdn}")]
    NoDomain { fqdn: String },

    /// `tofu import`'s id does not lead to a registry.
    #[error("cannot import {fqdn}: {why}")]
    NotImportable { fqdn: String, why: String },

    #[error("droplet {name} ({id}) is active but has no public IPv4 address")]
    NoIpv4 { name: String, id: u64 },

    #[error("the address {0:?} in state is not an IP address")]
    BadAddress(String),

    #[error("no volume snapshot {0} in this DigitalOcean account")]
    NoSnapshot(String),

    #[error("snapshot {id} needs a volume of at least {min} GiB (its `min_disk_size`), but `storage.size_gib` is {size}")]
    SnapshotTooLarge { id: String, min: u64, size: u64 },

    #[error("no SSH key with fingerprint {0} in the account")]
    UnknownSshKey(String),

    /// A value the operation renders from is not known yet.
    #[error("the registry's inputs are not all known")]
    InputsUnknown,

    /// The replacement is done but the old droplet remains (listed in state for the next try).
    #[error("the registry now runs on droplet ({new}), but deleting the old droplet ({old}) failed: {source}; it stays in `retired_droplet_ids`, and the next apply or destroy deletes it")]
    OldDropletLeft {
        new: u64,
        old: u64,
        #[source]
        source: Box<do_api::Error>,
    },

    /// `source` is what failed; cleaning up after it failed too.
    #[error("{source}; {cleanup}")]
    WithCleanup {
        #[source]
        source: Box<Error>,
        cleanup: Box<Error>,
    },

    /// What was being done to which object: "creating volume (reg-data): ...".
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },

    /// The attribute the error concerns, for the diagnostic; the message is the source's.
    #[error("{source}")]
    At {
        path: AttributePath,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

macro_rules! boxed_from {
    ($($variant:ident($ty:ty)),*) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Error {
                Error::$variant(Box::new(e))
            }
        })*
    };
}

boxed_from!(
    Api(do_api::Error),
    Remote(RemoteError),
    Storage(storage::Error),
    Acme(acme::AcmeError)
);

/// `storage[0].<attr>`
pub fn storage_attr(attr: &'static str) -> AttributePath {
    AttributePath::new("storage").index(0).attribute(attr)
}

/// `tls[0].<attr>`
pub fn tls_attr(attr: &'static str) -> AttributePath {
    AttributePath::new("tls").index(0).attribute(attr)
}

impl Error {
    /// "creating volume (reg-data): ...", as `do_api::Error::context`.
    pub fn context(self, doing: &str, object: impl fmt::Display) -> Error {
        Error::Context {
            what: format!("{doing} ({object})"),
            source: Box::new(self),
        }
    }

    /// Like [`Error::context`], for a message that names several objects.
    pub fn during(self, what: impl Into<String>) -> Error {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The error concerns `path`.
    pub fn at(self, path: AttributePath) -> Error {
        Error::At {
            path,
            source: Box::new(self),
        }
    }

    /// `self`, then `cleanup` failed too.
    pub fn with_cleanup(self, cleanup: Error) -> Error {
        Error::WithCleanup {
            source: Box::new(self),
            cleanup: Box::new(cleanup),
        }
    }

    /// The attribute this error is about: the one given with [`Error::at`], else the one the
    /// inner error's kind names (the destroy guard concerns `storage.force_destroy`, a CAA
    /// refusal `tls.caa`, ...), else none (a failure of the machine or the API).
    pub fn attribute(&self) -> Option<AttributePath> {
        match self {
            Error::At { path, .. } => Some(path.clone()),
            Error::Context { source, .. } | Error::WithCleanup { source, .. } => source.attribute(),
            Error::Storage(e) => storage_attribute(e),
            Error::Acme(e) => acme_attribute(e),
            Error::NoDomain { .. } => Some(AttributePath::new("fqdn")),
            Error::UnknownSshKey(_) => Some(AttributePath::new("ssh_key_fingerprints")),
            _ => None,
        }
    }

    /// True when the error is the destroy guard's: stored images kept, nothing deleted.
    pub fn is_holds_data(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_holds_data(),
            Error::At { source, .. } | Error::Context { source, .. } => source.is_holds_data(),
            _ => false,
        }
    }
}

fn storage_attribute(e: &storage::Error) -> Option<AttributePath> {
    use storage::Error as S;
    Some(match e {
        S::HoldsData { .. } => storage_attr("force_destroy"),
        S::VolumeShrink { .. }
        | S::ResizeShrinks { .. }
        | S::VolumeSize { .. }
        | S::GrowFilesystem { .. } => storage_attr("size_gib"),
        S::NoSpacesInRegion { .. } => AttributePath::new("region"),
        S::BucketTaken { .. } => storage_attr("bucket"),
        S::NoSpacesCredentials => storage_attr("backend"),
        _ => return None,
    })
}

fn acme_attribute(e: &acme::AcmeError) -> Option<AttributePath> {
    use acme::AcmeError as A;
    Some(match e {
        A::Caa { .. } => tls_attr("caa"),
        A::CreateRecord { .. }
        | A::Propagation { .. }
        | A::Dns { .. }
        | A::Dns01Failed { .. }
        | A::Http01Failed { .. }
        | A::Upload { .. } => tls_attr("challenge"),
        A::Key(_) => tls_attr("key_type"),
        A::WithCleanup(inner, _) => return acme_attribute(inner),
        _ => return None,
    })
}

/// `.context(...)` and `.at(...)` on any result whose error becomes an [`Error`].
pub trait ResultExt<T> {
    fn context(self, doing: &str, object: impl fmt::Display) -> Result<T>;
    fn at(self, path: AttributePath) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, doing: &str, object: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(doing, object))
    }

    fn at(self, path: AttributePath) -> Result<T> {
        self.map_err(|e| e.into().at(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_the_object_and_keeps_the_attribute() {
        let e = Error::from(storage::Error::VolumeShrink {
            name: "reg-data".into(),
            id: "v-1".into(),
            current: 20,
            desired: 10,
        })
        .context("growing volume", "v-1");
        assert!(e
            .to_string()
            .starts_with("growing volume (v-1): volume reg-data (v-1)"));
        assert_eq!(e.attribute(), Some(storage_attr("size_gib")));
        let e = Error::MissingState("droplet id").at(AttributePath::new("name"));
        assert_eq!(e.to_string(), "no droplet id in state");
        assert_eq!(e.attribute(), Some(AttributePath::new("name")));
        assert_eq!(Error::MissingState("x").attribute(), None);
    }

    #[test]
    fn cleanup_failures_follow_the_cause() {
        let e = Error::InputsUnknown
            .with_cleanup(Error::MissingState("droplet id").context("deleting the new droplet", 7));
        assert_eq!(
            e.to_string(),
            "the registry's inputs are not all known; deleting the new droplet (7): no droplet id in state"
        );
    }
}
