//! `opus`: the command line of Opus (in progress).
fn main() {}
