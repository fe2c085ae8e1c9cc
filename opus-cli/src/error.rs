//! What can go wrong in a command, each turned into one line that says what to do next.

use std::fmt;

use tonic::Code;

/// A command's failure.
#[derive(Debug)]
pub enum CliError {
    /// opusd did not answer at the address tried.
    Unreachable {
        /// The address.
        server: String,
        /// What the OS or transport said.
        detail: String,
    },
    /// opusd answered with an error status.
    Api(tonic::Status),
    /// The arguments cannot be used (beyond what clap checks).
    Usage(String),
    /// Local I/O (reading stdin, writing output or files).
    Io(std::io::Error),
    /// Any other failure with its own message.
    Other(String),
    /// A failure already reported on stderr (a build that failed under `--wait`): exit 1, print
    /// nothing more.
    Silent,
}

impl CliError {
    /// Whether stdout was closed by the reader (`opus list | head`): not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Api(s)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Unreachable { server, detail } => write!(
                f,
                "cannot reach opusd at {server} ({detail}); start it with `opusd`, or point --server / OPUS_SERVER at a running one"
            ),
            CliError::Api(status) => {
                let msg = status.message();
                match status.code() {
                    Code::Unauthenticated => write!(f, "{msg}"),
                    Code::Unavailable => write!(f, "opusd is unavailable: {msg}; is it running?"),
                    Code::Unimplemented => write!(f, "{msg} (upgrade opusd)"),
                    Code::DeadlineExceeded => write!(f, "opusd did not answer in time: {msg}"),
                    Code::Internal | Code::Unknown | Code::DataLoss => {
                        write!(f, "opusd failed: {msg} (see opusd's log)")
                    }
                    _ => write!(f, "{msg}"),
                }
            }
            CliError::Usage(msg) | CliError::Other(msg) => write!(f, "{msg}"),
            CliError::Io(e) => write!(f, "{e}"),
            CliError::Silent => Ok(()),
        }
    }
}
