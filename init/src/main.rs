//! stele-init: PID 1 (verify, switch root, supervise), and on the running system also the
//! device's `stele` command (multi-call: `stele update ...`, see init/src/update.rs).

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if stele_init::update::is_update_call(std::process::id(), &argv) {
        std::process::exit(stele_init::update::main(&argv));
    }
    stele_init::run()
}
