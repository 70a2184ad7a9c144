//! The stele command line.
fn main() {}
