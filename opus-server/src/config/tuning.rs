//! How much opusd does at once and how long it waits: build concurrency, log and cache bounds,
//! the shutdown grace, hook delivery retries, and site connection limits.

use std::time::Duration;

use super::{ConfigArgs, ConfigError, FileConfig, duration};
use crate::hooks::RetryPolicy;
use crate::sites::ConnectionLimits;

/// The default bound of the site cache: 1 GiB.
pub const DEFAULT_SITE_CACHE_SIZE: u64 = 1 << 30;

/// Builds at once [default: the number of CPUs]; zero is refused.
pub(super) fn max_builds(args: &ConfigArgs, file: &FileConfig) -> Result<usize, ConfigError> {
    let max_builds = args.max_builds.or(file.max_builds).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    if max_builds == 0 {
        return Err(ConfigError::Invalid {
            key: "max_builds",
            message: "must be at least 1".into(),
        });
    }
    Ok(max_builds)
}

/// The largest build log, in bytes [default: 16 MiB].
pub(super) fn log_limit(args: &ConfigArgs, file: &FileConfig) -> u64 {
    args.log_limit
        .or(file.log_limit)
        .unwrap_or(16 * 1024 * 1024)
}

/// The time running builds get on shutdown [default: 10 seconds].
pub(super) fn shutdown_grace(args: &ConfigArgs, file: &FileConfig) -> Duration {
    Duration::from_secs(args.shutdown_grace.or(file.shutdown_grace).unwrap_or(10))
}

/// The bound of the site cache, in bytes [default: [`DEFAULT_SITE_CACHE_SIZE`]].
pub(super) fn site_cache_size(args: &ConfigArgs, file: &FileConfig) -> u64 {
    args.site_cache_size
        .or(file.site_cache_size)
        .unwrap_or(DEFAULT_SITE_CACHE_SIZE)
}

/// How hook deliveries are retried: each setting from the flags over the file over
/// [`RetryPolicy::default`].
pub(super) fn hook_retry(args: &ConfigArgs, file: &FileConfig) -> Result<RetryPolicy, ConfigError> {
    let defaults = RetryPolicy::default();
    let millis = |key, flag: Option<u64>, file: Option<u64>, default| {
        Ok::<_, ConfigError>(
            duration(key, flag.or(file), Duration::from_millis)?.unwrap_or(default),
        )
    };
    Ok(RetryPolicy {
        base: millis(
            "hook_retry_base_ms",
            args.hook_retry_base_ms,
            file.hook_retry_base_ms,
            defaults.base,
        )?,
        cap: millis(
            "hook_retry_cap_ms",
            args.hook_retry_cap_ms,
            file.hook_retry_cap_ms,
            defaults.cap,
        )?,
        give_up_after: args
            .hook_give_up_secs
            .or(file.hook_give_up_secs)
            .map_or(defaults.give_up_after, Duration::from_secs),
        timeout: millis(
            "hook_timeout_ms",
            args.hook_timeout_ms,
            file.hook_timeout_ms,
            defaults.timeout,
        )?,
    })
}

/// The site connection limits: flags over the file over [`ConnectionLimits::default`].
pub(super) fn site_connections(
    args: &ConfigArgs,
    file: &FileConfig,
) -> Result<ConnectionLimits, ConfigError> {
    let default = ConnectionLimits::default();
    let seconds =
        |key: &'static str, arg: Option<u64>, file: Option<u64>, default: Duration| match arg
            .or(file)
        {
            None => Ok(default),
            Some(0) => Err(ConfigError::Invalid {
                key,
                message: "must be at least 1 second".into(),
            }),
            Some(s) => Ok(Duration::from_secs(s)),
        };
    let per_ip = args
        .site_connections_per_ip
        .or(file.site_connections_per_ip)
        .unwrap_or(default.per_ip);
    if per_ip == 0 {
        return Err(ConfigError::Invalid {
            key: "site_connections_per_ip",
            message: "must be at least 1".into(),
        });
    }
    Ok(ConnectionLimits {
        header_timeout: seconds(
            "site_header_timeout",
            args.site_header_timeout,
            file.site_header_timeout,
            default.header_timeout,
        )?,
        idle_timeout: seconds(
            "site_idle_timeout",
            args.site_idle_timeout,
            file.site_idle_timeout,
            default.idle_timeout,
        )?,
        keep_alive_timeout: seconds(
            "site_keep_alive_timeout",
            args.site_keep_alive_timeout,
            file.site_keep_alive_timeout,
            default.keep_alive_timeout,
        )?,
        per_ip,
    })
}
