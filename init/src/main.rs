//! stele-init: PID 1 (verify, switch root, supervise), and on the running system also the
//! device's `stele` command (multi-call: `stele update ...`, see stele_update::device).

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if stele_update::device::is_update_call(std::process::id(), &argv) {
        std::process::exit(i32::from(stele_update::device::main(&argv).code()));
    }
    stele_init::run()
}
