//! `upload_protocol`: which wire protocol a location speaks, and the protocol object built from
//! the location's settings. A new protocol adds its name here and its directives in a file of
//! its own beside this one.

use ngx::ffi::{ngx_conf_enum_t, ngx_uint_t};
use ngx::ngx_string;
use ngx_upload_protocol::nginx_upload::NginxUpload;
use ngx_upload_protocol::{Answer, Failure, Outcome, Plan, Protocol, Reply, RequestHead};

use super::UploadConf;

/// `upload_protocol nginx-upload;` (the default): the nginx-upload-module protocol and forms.
pub const NGINX_UPLOAD: ngx_uint_t = 0;

/// The names `upload_protocol` takes, for `ngx_conf_set_enum_slot`.
pub static mut PROTOCOL_NAMES: [ngx_conf_enum_t; 2] = [
    ngx_conf_enum_t {
        name: ngx_string!("nginx-upload"),
        value: NGINX_UPLOAD,
    },
    ngx_conf_enum_t {
        name: ngx::ffi::ngx_str_t {
            len: 0,
            data: core::ptr::null_mut(),
        },
        value: 0,
    },
];

/// The protocol of one location, with its settings.
pub enum LocationProtocol {
    NginxUpload(NginxUpload),
}

impl UploadConf {
    /// The protocol this location speaks.
    pub fn protocol(&self) -> LocationProtocol {
        match self.protocol {
            _ => LocationProtocol::NginxUpload(NginxUpload {
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
        }
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
