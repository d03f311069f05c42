//! The wire protocols of ngx-upload, as pure code: no nginx types, no I/O.
//!
//! Every protocol does two things (see [`Protocol`]):
//! - it turns a request head ([`RequestHead`]) into a [`Plan`]: answer now, report what an upload
//!   holds, or stream the body into an upload (and hand the file off once it is complete);
//! - it turns what carrying out the plan came to ([`Outcome`] or [`Failure`]) into its own
//!   answer ([`Answer`]): status, headers and body in that protocol's format.
//!
//! The nginx glue (the `ngx-upload` crate) reads the head, carries the plan out with the engine
//! (`ngx-upload-engine`) and its one body sink, and sends the answer or hands the file off. A new
//! protocol is a module here (plus its directives and tests); it touches no streaming code.
//!
//! Protocols: [`nginx_upload`] (the seed, nginx-upload-module's), [`tus`] (tus 1.0 with every
//! extension) and [`ietf`] (the IETF resumable-upload draft, interop versions 3, 5, 6 and 8),
//! the last two told apart on one location by [`resumable::Resumable`]. Helpers: [`sf`]
//! (structured fields), [`http_date`], [`base64`], [`metadata`] (tus `Upload-Metadata`),
//! [`checksum`] (tus `Upload-Checksum`), [`cors`].

pub mod answer;
pub mod base64;
pub mod checksum;
pub mod cors;
pub mod failure;
pub mod head;
pub mod http_date;
pub mod ietf;
pub mod metadata;
pub mod nginx_upload;
pub mod plan;
pub mod resumable;
pub mod sf;
#[cfg(test)]
mod test_kit;
pub mod tus;

pub use answer::Answer;
pub use failure::{Failure, Problem};
pub use head::{Method, RequestHead};
pub use plan::{FileFacts, Outcome, Plan, Reply};

/// One wire protocol.
pub trait Protocol {
    /// What to do with a request, decided from its head alone. `Err` refuses it before a byte of
    /// the body is stored.
    fn plan(&self, head: &RequestHead<'_>) -> Result<Plan, Failure>;

    /// The answer to what carrying out a plan came to.
    fn reply(&self, outcome: &Outcome<'_>) -> Reply;

    /// The answer to a refused or failed request, in this protocol's format.
    fn refuse(&self, failure: &Failure) -> Answer;
}
