//! stele-init: PID 1. Thin entry point over the library: verify, switch root, supervise.

fn main() {
    stele_init::run()
}
