//! `upload_protocol`: which wire protocol a location speaks, and the protocol object built from
//! the location's settings. A new protocol adds its name here and its directives in a file of
//! its own beside this one.

use ngx::ffi::{ngx_conf_enum_t, ngx_uint_t};
use ngx::ngx_string;
use ngx_upload_protocol::nginx_upload::NginxUpload;
use ngx_upload_protocol::resumable::Resumable;
use ngx_upload_protocol::{Answer, Failure, Outcome, Plan, Protocol, Reply, RequestHead};

use super::UploadConf;

/// `upload_protocol nginx-upload;` (the default): the nginx-upload-module protocol and forms.
pub const NGINX_UPLOAD: ngx_uint_t = 0;
/// `upload_protocol tus;`: tus 1.0 and the IETF resumable-upload draft, told apart per request.
pub const TUS: ngx_uint_t = 1;

/// The names `upload_protocol` takes, for `ngx_conf_set_enum_slot`.
pub static mut PROTOCOL_NAMES: [ngx_conf_enum_t; 3] = [
    ngx_conf_enum_t {
        name: ngx_string!("nginx-upload"),
        value: NGINX_UPLOAD,
    },
    ngx_conf_enum_t {
        name: ngx_string!("tus"),
        value: TUS,
    },
    ngx_conf_enum_t {
        name: ngx::ffi::ngx_str_t {
            len: 0,
            data: core::ptr::null_mut(),
        },
        value: 0,
    },
];

/// The protocol of one request on a location, with the location's settings.
#[derive(Clone, Copy)]
pub enum LocationProtocol {
    NginxUpload(NginxUpload),
    /// tus or the IETF draft, as the request's head says.
    Resumable(Resumable<'static>),
}

impl UploadConf {
    /// The protocol a request with `head` speaks on this location.
    pub fn protocol_for(&'static self, head: &RequestHead<'_>) -> LocationProtocol {
        match &self.tus_settings {
            Some(settings) => LocationProtocol::Resumable(Resumable::for_request(settings, head)),
            None => LocationProtocol::NginxUpload(NginxUpload {
                resumable: self.resumable(),
                max_file_size: u64::try_from(self.max_file_size).ok().filter(|m| *m > 0),
                tame_arrays: self.tame_arrays == 1,
            }),
        }
    }
}

impl LocationProtocol {
    fn inner(&self) -> &dyn Protocol {
        match self {
            Self::NginxUpload(p) => p,
            Self::Resumable(p) => p,
        }
    }

    /// Whether uploads on this location are created and addressed by id (tus, IETF).
    pub fn is_resumable(&self) -> bool {
        matches!(self, Self::Resumable(_))
    }
}

impl Protocol for LocationProtocol {
    fn plan(&self, head: &RequestHead<'_>) -> Result<Plan, Failure> {
        self.inner().plan(head)
    }

    fn reply(&self, outcome: &Outcome<'_>) -> Reply {
        self.inner().reply(outcome)
    }

    fn refuse(&self, failure: &Failure) -> Answer {
        self.inner().refuse(failure)
    }
}
