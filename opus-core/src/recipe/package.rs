//! The recipe of a repository without `opus.yml`, read from its `package.json` ("zero config").
//!
//! Which package manager installs the dependencies: the `packageManager` field, run through
//! corepack (`"pnpm@9.1.0"` -> `corepack pnpm ...`; bun is not a corepack manager and runs as
//! `bun`), else the lockfile at the root (`pnpm-lock.yaml`, `yarn.lock`, `bun.lockb`/`bun.lock`,
//! `package-lock.json`/`npm-shrinkwrap.json`), else npm without a lockfile (`npm install`).
//! Whether the site is a single-page app: a client-side router among the dependencies
//! ([`ROUTERS`]); the build then checks that the output has an `index.html` at its root.

use std::collections::BTreeMap;
use std::path::Path;

use super::{BuildSpec, OpusFile, default_output, default_timeout};

/// Client-side routers: a package.json that depends on one of them (dependencies or
/// devDependencies) is a single-page app, whose unknown paths must serve `index.html` for the
/// router to handle them. A Vite or CRA template without a router is one page whose other paths
/// are real 404s, so the template alone does not make an SPA.
pub const ROUTERS: [&str; 9] = [
    "react-router",
    "react-router-dom",
    "@tanstack/react-router",
    "vue-router",
    "svelte-spa-router",
    "@solidjs/router",
    "preact-router",
    "wouter",
    "@reach/router",
];

/// The JavaScript package managers a repository may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    /// npm: `npm ci` with a lockfile, `npm install` without.
    Npm,
    /// pnpm: `pnpm install --frozen-lockfile`.
    Pnpm,
    /// Yarn: classic (`--frozen-lockfile`) or, named as `yarn@2` and later, berry (`--immutable`).
    Yarn {
        /// Yarn 2 or later, which spells the frozen install `--immutable`.
        berry: bool,
    },
    /// Bun: `bun install --frozen-lockfile`.
    Bun,
}

/// How a repository's dependencies are installed and its build script run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installer {
    /// The manager.
    pub manager: PackageManager,
    /// Whether it runs through corepack (package.json's `packageManager` names it).
    pub corepack: bool,
    /// Whether a lockfile of that manager is at the root (installs are then frozen to it).
    pub locked: bool,
}

impl Installer {
    /// Finds the installer of the repository at `dir` whose package.json is `pkg`.
    pub fn detect(dir: &Path, pkg: &serde_json::Value) -> Installer {
        let has = |name: &str| dir.join(name).is_file();
        let npm_locked = has("package-lock.json") || has("npm-shrinkwrap.json");
        let bun_locked = has("bun.lockb") || has("bun.lock");
        let named = pkg["packageManager"].as_str().and_then(|spec| {
            let (name, version) = spec.split_once('@').unwrap_or((spec, ""));
            let major: u32 = version
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(1);
            match name {
                "npm" => Some(PackageManager::Npm),
                "pnpm" => Some(PackageManager::Pnpm),
                "yarn" => Some(PackageManager::Yarn { berry: major >= 2 }),
                "bun" => Some(PackageManager::Bun),
                _ => None,
            }
        });
        let locked_for = |manager| match manager {
            PackageManager::Npm => npm_locked,
            PackageManager::Pnpm => has("pnpm-lock.yaml"),
            PackageManager::Yarn { .. } => has("yarn.lock"),
            PackageManager::Bun => bun_locked,
        };
        if let Some(manager) = named {
            return Installer {
                manager,
                // corepack manages npm, pnpm and yarn; npm is used as installed (as node ships it).
                corepack: matches!(manager, PackageManager::Pnpm | PackageManager::Yarn { .. }),
                locked: locked_for(manager),
            };
        }
        let manager = if has("pnpm-lock.yaml") {
            PackageManager::Pnpm
        } else if has("yarn.lock") {
            PackageManager::Yarn { berry: false }
        } else if bun_locked {
            PackageManager::Bun
        } else {
            PackageManager::Npm
        };
        Installer {
            manager,
            corepack: false,
            locked: locked_for(manager),
        }
    }

    /// The program as a step runs it (`corepack pnpm`, `yarn`, `npm`).
    fn program(&self) -> String {
        let name = match self.manager {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::Yarn { .. } => "yarn",
            PackageManager::Bun => "bun",
        };
        if self.corepack {
            format!("corepack {name}")
        } else {
            name.to_owned()
        }
    }

    /// The install step: frozen to the lockfile when there is one.
    pub fn install_step(&self) -> String {
        let program = self.program();
        match (self.manager, self.locked) {
            (PackageManager::Npm, true) => format!("{program} ci"),
            (PackageManager::Yarn { berry: true }, true) => {
                format!("{program} install --immutable")
            }
            (_, true) => format!("{program} install --frozen-lockfile"),
            (_, false) => format!("{program} install"),
        }
    }

    /// The build step: the package.json's `build` script.
    pub fn build_step(&self) -> String {
        format!("{} run build", self.program())
    }
}

/// The first client-side router ([`ROUTERS`]) among `pkg`'s dependencies and devDependencies.
pub fn router_dependency(pkg: &serde_json::Value) -> Option<&'static str> {
    ROUTERS.into_iter().find(|router| {
        ["dependencies", "devDependencies"]
            .iter()
            .any(|section| pkg[section].get(router).is_some())
    })
}

/// The recipe of a repository at `dir` whose package.json `pkg` has a `build` script: install,
/// then the build script, output `dist` (or `build`, see [`super::resolve_output`]); every branch
/// other than production's gets a preview, and a router dependency makes it a single-page app.
/// Production follows the project's branch, which the repository does not know: that part is
/// the promotion's (`SpecOrigin::PackageJson` there).
pub(super) fn recipe(dir: &Path, pkg: &serde_json::Value) -> OpusFile {
    let installer = Installer::detect(dir, pkg);
    let image = match installer.manager {
        PackageManager::Bun => "oven/bun:1",
        _ => "node:20",
    };
    let build = BuildSpec {
        image: Some(image.into()),
        steps: vec![installer.install_step(), installer.build_step()],
        output: default_output(),
        env: BTreeMap::new(),
        timeout: default_timeout(),
        cache: Vec::new(),
    };
    OpusFile {
        build: Some(build),
        environments: BTreeMap::new(),
        previews: super::PreviewsSpec::on(),
        spa: router_dependency(pkg).is_some(),
        retention: None,
        pipeline: None,
        env: BTreeMap::new(),
        timeout: None,
        cache: None,
        site: super::site::SiteSpec::default(),
        pull_requests: super::PullRequestsSpec::detected(),
        on: super::TriggersSpec::default(),
        checks: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The steps detected for a repository holding `files` and this package.json.
    fn steps(package_json: &str, files: &[&str]) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in files {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        let pkg: serde_json::Value = serde_json::from_str(package_json).expect("json");
        recipe(dir.path(), &pkg).plan().stages[0].jobs[0]
            .steps
            .clone()
    }

    const PLAIN: &str = r#"{"scripts":{"build":"vite build"}}"#;

    #[test]
    fn npm_is_the_default_and_ci_needs_its_lockfile() {
        assert_eq!(steps(PLAIN, &[]), ["npm install", "npm run build"]);
        assert_eq!(
            steps(PLAIN, &["package-lock.json"]),
            ["npm ci", "npm run build"]
        );
        assert_eq!(steps(PLAIN, &["npm-shrinkwrap.json"])[0], "npm ci");
    }

    #[test]
    fn lockfiles_name_the_manager() {
        assert_eq!(
            steps(PLAIN, &["pnpm-lock.yaml"]),
            ["pnpm install --frozen-lockfile", "pnpm run build"]
        );
        assert_eq!(
            steps(PLAIN, &["yarn.lock"]),
            ["yarn install --frozen-lockfile", "yarn run build"]
        );
        for bun in ["bun.lockb", "bun.lock"] {
            assert_eq!(
                steps(PLAIN, &[bun]),
                ["bun install --frozen-lockfile", "bun run build"]
            );
        }
    }

    #[test]
    fn package_manager_runs_through_corepack() {
        let pnpm = r#"{"packageManager":"pnpm@9.1.0","scripts":{"build":"vite build"}}"#;
        assert_eq!(
            steps(pnpm, &["pnpm-lock.yaml"]),
            [
                "corepack pnpm install --frozen-lockfile",
                "corepack pnpm run build"
            ]
        );
        // Named without its lockfile: installed, not frozen; the field wins over another lockfile.
        assert_eq!(
            steps(pnpm, &["package-lock.json"]),
            ["corepack pnpm install", "corepack pnpm run build"]
        );
        let berry = r#"{"packageManager":"yarn@4.5.0+sha512.abc","scripts":{"build":"x"}}"#;
        assert_eq!(
            steps(berry, &["yarn.lock"])[0],
            "corepack yarn install --immutable"
        );
        let classic = r#"{"packageManager":"yarn@1.22.22","scripts":{"build":"x"}}"#;
        assert_eq!(
            steps(classic, &["yarn.lock"])[0],
            "corepack yarn install --frozen-lockfile"
        );
        // bun and npm are not corepack's to run.
        let bun = r#"{"packageManager":"bun@1.1.0","scripts":{"build":"x"}}"#;
        assert_eq!(
            steps(bun, &["bun.lock"])[0],
            "bun install --frozen-lockfile"
        );
        let npm = r#"{"packageManager":"npm@10.8.0","scripts":{"build":"x"}}"#;
        assert_eq!(steps(npm, &["package-lock.json"])[0], "npm ci");
        // An unknown manager falls back to the lockfiles.
        let odd = r#"{"packageManager":"deno@2","scripts":{"build":"x"}}"#;
        assert_eq!(
            steps(odd, &["yarn.lock"])[0],
            "yarn install --frozen-lockfile"
        );
    }

    #[test]
    fn a_router_dependency_makes_a_single_page_app() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spa = |json: &str| {
            let pkg: serde_json::Value = serde_json::from_str(json).expect("json");
            recipe(dir.path(), &pkg).spa
        };
        assert!(!spa(PLAIN));
        assert!(!spa(
            r#"{"scripts":{"build":"vite build"},"devDependencies":{"vite":"^7","@vitejs/plugin-react":"^4"}}"#
        ));
        assert!(spa(
            r#"{"scripts":{"build":"vite build"},"dependencies":{"react-router-dom":"^6"}}"#
        ));
        assert!(spa(
            r#"{"scripts":{"build":"vite build"},"devDependencies":{"vue-router":"^4"}}"#
        ));
        assert!(spa(
            r#"{"scripts":{"build":"x"},"dependencies":{"@tanstack/react-router":"^1"}}"#
        ));
    }

    #[test]
    fn zero_config_has_previews_and_the_bun_image_for_bun() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pkg: serde_json::Value = serde_json::from_str(PLAIN).expect("json");
        let file = recipe(dir.path(), &pkg);
        assert!(file.previews.enabled);
        assert_eq!(
            file.plan().stages[0].jobs[0].image.as_deref(),
            Some("node:20")
        );
        std::fs::write(dir.path().join("bun.lockb"), "").expect("write");
        let file = recipe(dir.path(), &pkg);
        assert_eq!(
            file.plan().stages[0].jobs[0].image.as_deref(),
            Some("oven/bun:1")
        );
    }
}
