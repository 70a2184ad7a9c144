//! stele-init: PID 1 (verify, switch root, supervise), and on the running system also the
//! device's `stele` command (multi-call: `stele update ...`, see stele_device::cli).

fn main() {
    // The kernel turns every `key=value` word of its command line it does not know into
    // PID 1's environment (RUST_MIN_STACK=... changes how this binary spawns threads):
    // cleared before anything else.
    if std::process::id() == 1 {
        stele_init::sys::clear_environment();
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let role = stele_init::pid1::detect();
    if stele_device::cli::is_update_call(role.is_boot(), &argv) {
        std::process::exit(i32::from(stele_device::cli::main(&argv).code()));
    }
    stele_init::run(role)
}
