//! ngx-upload: large and resumable file uploads inside nginx, a drop-in replacement for
//! nginx-upload-module. This file holds only the module's registration with nginx.
//!
//! How a request flows through the modules is in docs/architecture.md:
//! - [`conf`]: directives, the location configuration, and which protocol a location speaks;
//! - [`handler`]: the content handler: the protocol's plan, carried out;
//! - [`body`]: the one body sink, streaming a body into its [`target`] (a [`form`]'s files too);
//! - [`handoff`]: passing the finished file to `upload_pass`;
//! - [`context`] and [`variables`]: the per-request context and the `$upload_*` variables;
//! - [`request`]: safe access to the request; [`offload`]: blocking disk work on nginx's
//!   thread pools; [`expiry`]: the sweep of expired uploads (`upload_state_expire`);
//!   [`worker`]: what each worker process starts;
//! - the wire protocols live in the `ngx-upload-protocol` crate, the upload logic in
//!   `ngx-upload-engine`.

use core::ffi::{c_char, c_void};
use core::ptr::addr_of;

use ngx::ffi::{
    ngx_conf_t, ngx_cycle_t, ngx_http_module_t, ngx_int_t, ngx_module_t, NGX_HTTP_MODULE,
    NGX_LOG_NOTICE, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};

mod body;
mod conf;
mod context;
mod expiry;
mod form;
mod handler;
mod handoff;
mod lane;
mod offload;
mod request;
mod target;
mod uploads;
mod variables;
mod worker;

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only mutated by nginx while loading configuration.
        unsafe { &*addr_of!(ngx_http_upload_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls this with the configuration being parsed.
        unsafe { variables::register(cf) }
    }

    unsafe extern "C" fn postconfiguration(_cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx calls this once per configuration, while filter modules install
        // themselves.
        unsafe { handoff::install_header_filter() };
        NGX_OK as ngx_int_t
    }

    unsafe extern "C" fn merge_loc_conf(
        cf: *mut ngx_conf_t,
        prev: *mut c_void,
        conf: *mut c_void,
    ) -> *mut c_char {
        // SAFETY: nginx calls this with two location configurations of this module.
        let rc = unsafe { conf::merge_loc_conf(cf, prev, conf) };
        // SAFETY: as above; conf is this module's merged location configuration.
        if rc == ngx::core::NGX_CONF_OK
            && unsafe { (*conf.cast::<conf::UploadConf>()).pass.is_some() }
        {
            // An `upload_pass` block gets the upload content handler; while locations are
            // merged, cf's location configurations are this block's.
            // SAFETY: cf is the configuration being merged.
            match NgxHttpCoreModule::location_conf_mut(unsafe { &*cf }) {
                Some(clcf) => clcf.handler = Some(handler::upload_content_handler),
                None => return ngx::core::NGX_CONF_ERROR,
            }
        }
        rc
    }
}

// SAFETY: create_main_conf allocates a MainConf, the type named here.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = conf::MainConf;
}

// SAFETY: create_loc_conf allocates an UploadConf, the type named here.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = conf::UploadConf;
}

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(Module::merge_loc_conf),
};

// The `ngx_modules` table nginx reads from a dynamic module; the name is the C module's, so
// configurations and `nginx -V`-style listings carry over.
ngx::ngx_modules!(ngx_http_upload_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_upload_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CTX) as *mut c_void,
    // The address of the commands table, which nginx only reads.
    commands: &raw mut conf::COMMANDS as *mut _,
    type_: NGX_HTTP_MODULE as ngx_uint,
    init_module: Some(announce_version),
    init_process: Some(worker::init_process),
    exit_process: Some(worker::exit_process),
    ..ngx_module_t::default()
};

/// Says once, when nginx loads a configuration, which module version it runs.
unsafe extern "C" fn announce_version(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    ngx::ngx_log_error!(
        NGX_LOG_NOTICE,
        // SAFETY: nginx calls init_module with the new cycle, whose log is set.
        unsafe { (*cycle).log },
        "ngx-upload {} (nginx-upload-module compatible) loaded",
        env!("CARGO_PKG_VERSION")
    );
    NGX_OK as ngx_int_t
}

#[allow(non_camel_case_types)]
type ngx_uint = ngx::ffi::ngx_uint_t;
