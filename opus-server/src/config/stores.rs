//! Where opusd keeps things: the data directory and the artifact stores.

use std::path::{Path, PathBuf};

use opus_core::model::{DEFAULT_STORE, StoreName};

use super::{ConfigArgs, ConfigError, FileConfig};

/// The data directory, made absolute against the current directory [default: ./opus-data].
pub(super) fn data_dir(args: &ConfigArgs, file: &FileConfig) -> Result<PathBuf, ConfigError> {
    let cwd = std::env::current_dir().map_err(|e| ConfigError::Invalid {
        key: "data_dir",
        message: format!("cannot read the current directory: {e}"),
    })?;
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from("opus-data"));
    Ok(if data_dir.is_absolute() {
        data_dir
    } else {
        cwd.join(data_dir)
    })
}

/// The default artifact store's URL [default: `file://<data-dir>/artifacts`].
pub(super) fn store(args: &ConfigArgs, file: &FileConfig, data_dir: &Path) -> String {
    args.store
        .clone()
        .or_else(|| file.store.clone())
        .unwrap_or_else(|| format!("file://{}", data_dir.join("artifacts").display()))
}

/// The extra stores, `(name, url)`: the flags' NAME=URL items when any, else the file's table;
/// each name checked.
pub(super) fn extra_stores(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<Vec<(StoreName, String)>, ConfigError> {
    let extra_stores = if args.extra_store.is_empty() {
        file.extra_stores
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect()
    } else {
        extra_store_flags(&args.extra_store)?
    };
    extra_stores
        .into_iter()
        .map(|(name, url)| Ok((check_extra_store(&name, &url)?, url)))
        .collect()
}

/// Splits each `--extra-store` item at its `=`.
fn extra_store_flags(items: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((name, url)) => Ok((name.trim().to_owned(), url.trim().to_owned())),
            None => Err(ConfigError::Invalid {
                key: "extra_store",
                message: format!("{item:?} is not NAME=URL (for example backup=s3://bucket/opus)"),
            }),
        })
        .collect()
}

/// Refuses a store name that is not a label or is the default store's, and an empty URL;
/// answers the checked name.
fn check_extra_store(name: &str, url: &str) -> Result<StoreName, ConfigError> {
    let checked = match StoreName::new(name) {
        Ok(n) if !n.is_default() => n,
        _ => {
            return Err(ConfigError::Invalid {
                key: "extra_store",
                message: format!(
                    "store name {name:?} must be lowercase letters, digits and '-', and not {DEFAULT_STORE:?}"
                ),
            });
        }
    };
    if url.is_empty() {
        return Err(ConfigError::Invalid {
            key: "extra_store",
            message: format!("store {name:?} has no URL"),
        });
    }
    Ok(checked)
}
