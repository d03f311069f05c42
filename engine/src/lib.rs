//! The upload engine of ngx-upload: everything about an upload that needs no nginx.
//!
//! Header parsers ([`content_range`], [`disposition`], [`session_id`]), the set of received
//! ranges ([`range_set`]), the on-disk session ([`session`], [`state`], [`store`]) and the
//! hand-off body ([`form`]). The nginx module calls into this crate; nothing here calls nginx.

pub mod content_range;
pub mod disposition;
pub mod form;
pub mod range_set;
pub mod session;
pub mod session_id;
pub mod state;
pub mod store;
