//! The one edge between the resource's typed errors and what OpenTofu shows: each
//! `resource::Error` becomes a diagnostic with a summary, a detail and its attribute path.

use std::borrow::Cow;

use tf_provider::Diagnostics;

use crate::resource::Error;

/// An error diagnostic: `summary` says which step failed, the detail is the error with its
/// causes, on the error's attribute when it has one.
pub fn error(diags: &mut Diagnostics, summary: impl Into<Cow<'static, str>>, e: &Error) {
    match e.attribute() {
        Some(path) => diags.error(summary, e.to_string(), path),
        None => diags.root_error(summary, e.to_string()),
    }
}

/// An error diagnostic whose detail ends with what to do next (after a failed apply: what the
/// state holds and how to go on).
pub fn error_then(
    diags: &mut Diagnostics,
    summary: impl Into<Cow<'static, str>>,
    e: &Error,
    next: &str,
) {
    let detail = format!("{e}\n\n{next}");
    match e.attribute() {
        Some(path) => diags.error(summary, detail, path),
        None => diags.root_error(summary, detail),
    }
}

/// The same, as a warning: the operation went on.
pub fn warning(diags: &mut Diagnostics, summary: impl Into<Cow<'static, str>>, e: &Error) {
    match e.attribute() {
        Some(path) => diags.warning(summary, e.to_string(), path),
        None => diags.root_warning(summary, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::error::storage_attr;
    use crate::storage;

    #[test]
    fn the_attribute_and_the_whole_message_reach_the_diagnostic() {
        let mut d = Diagnostics::default();
        let e = Error::from(storage::Error::HoldsData {
            kind: "volume",
            name: "r-registry-data".into(),
            id: "v-1".into(),
            detail: "3 files (4096 bytes)".into(),
        })
        .context("destroying the registry", "r.example.com");
        error(&mut d, "The registry still stores images", &e);
        assert_eq!(d.errors.len(), 1);
        let got = &d.errors[0];
        assert_eq!(got.summary, "The registry still stores images");
        assert_eq!(got.attribute, storage_attr("force_destroy"));
        assert!(got.detail.starts_with("destroying the registry (r.example.com): volume r-registry-data (v-1) still holds 3 files"), "{}", got.detail);
        let mut d = Diagnostics::default();
        warning(&mut d, "Reading droplet (1)", &Error::InputsUnknown);
        assert_eq!(d.warnings[0].attribute, tf_provider::AttributePath::root());
    }
}
