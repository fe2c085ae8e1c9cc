//! Sets `OPUS_COMMIT`, the git commit this binary is built from (see opus-build-info).

fn main() {
    opus_build_info::emit_commit();
}
