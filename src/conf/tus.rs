//! The directives of `upload_protocol tus` (tus 1.0 and the IETF resumable-upload draft on one
//! location): `upload_cors_origin`, and the protocol's settings derived from the location.

use ngx::ffi::{ngx_conf_t, ngx_str_t};
use ngx::http::{HttpModuleLocationConf, NgxHttpCoreModule};
use ngx_upload_protocol::resumable::Settings;

use super::UploadConf;

impl UploadConf {
    /// The settings of a tus/IETF location, once merged: uploads live under the location's
    /// own URI (`location /files/` → `/files/<id>`), `upload_max_file_size` is the largest
    /// upload, `upload_state_expire` their expiry, `upload_cors_origin` the browsers' origin.
    pub(super) fn resumable_settings(&self, cf: *mut ngx_conf_t) -> Settings {
        // SAFETY: while locations are merged, cf's location configurations are this block's.
        let prefix = NgxHttpCoreModule::location_conf(unsafe { &*cf })
            .map(|clcf| clcf.name.as_bytes().to_vec())
            .unwrap_or_else(|| b"/".to_vec());
        let mut settings = Settings::new(prefix);
        settings.max_size = u64::try_from(self.max_file_size).ok().filter(|m| *m > 0);
        settings.expire_after = u64::try_from(self.state_expire).ok().filter(|s| *s > 0);
        settings.cors_origin = Some(self.cors_origin)
            .filter(|o| !o.data.is_null() && o.len > 0)
            .map(|o| o.as_bytes().to_vec());
        settings
    }
}

/// `upload_cors_origin` unset.
pub const UNSET_ORIGIN: ngx_str_t = ngx_str_t {
    len: 0,
    data: core::ptr::null_mut(),
};
