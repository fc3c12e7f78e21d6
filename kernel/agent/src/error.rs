use std::path::PathBuf;

/// Why the agent could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("cannot use {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the agent's HTTP server failed")]
    Http(#[source] std::io::Error),
    #[error("agent internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
