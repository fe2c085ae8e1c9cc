//! Basic auth in front of sites: per environment, or for all previews of a project. Only the
//! password's argon2 PHC string is stored (opusd hashes it before it gets here); the site server
//! learns it through the deployer.

use super::{MetaStore, T, decode, pair_key, prefix};
use crate::error::StoreError;
use crate::model::{EnvName, ProjectName};

/// What a password protects within a project.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProtectionTarget {
    /// One environment (production, staging, a preview).
    Env(EnvName),
    /// Every preview environment, present and future.
    Previews,
}

impl ProtectionTarget {
    fn key(&self, project: &ProjectName) -> Vec<u8> {
        match self {
            ProtectionTarget::Env(env) => {
                pair_key(project.as_str(), format!("env:{env}").as_bytes())
            }
            ProtectionTarget::Previews => pair_key(project.as_str(), b"previews"),
        }
    }

    fn from_key_part(part: &str) -> Option<ProtectionTarget> {
        if part == "previews" {
            return Some(ProtectionTarget::Previews);
        }
        EnvName::new(part.strip_prefix("env:")?)
            .ok()
            .map(ProtectionTarget::Env)
    }
}

/// One stored protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    /// The project.
    pub project: ProjectName,
    /// What it covers.
    pub target: ProtectionTarget,
    /// The password's argon2 PHC string (`$argon2id$v=19$...`).
    pub phc: String,
}

impl MetaStore {
    /// Protects `target` of `project` with the password whose PHC string is `phc` (replacing
    /// any earlier one). `ProjectNotFound` when there is no such project.
    pub fn set_protection(
        &self,
        project: &ProjectName,
        target: &ProtectionTarget,
        phc: &str,
    ) -> Result<(), StoreError> {
        self.get_project(project)?;
        let key = target.key(project);
        self.transact(|tx| tx.put_json(T::SiteProtection, &key, &phc))
    }

    /// Removes the protection of `target`; whether there was one.
    pub fn remove_protection(
        &self,
        project: &ProjectName,
        target: &ProtectionTarget,
    ) -> Result<bool, StoreError> {
        let key = target.key(project);
        self.transact(|tx| Ok(tx.tree(T::SiteProtection).remove(key.as_slice())?.is_some()))
    }

    /// Every protection of every project (the deployer loads them on start).
    pub fn all_protections(&self) -> Result<Vec<Protection>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(T::SiteProtection)?.iter() {
            let (k, v) = item?;
            let phc: String = decode(&k, &v)?;
            let mut parts = k.splitn(2, |b| *b == 0);
            let (Some(project), Some(target)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(project), Ok(target)) =
                (std::str::from_utf8(project), std::str::from_utf8(target))
            else {
                continue;
            };
            let (Ok(project), Some(target)) = (
                ProjectName::new(project),
                ProtectionTarget::from_key_part(target),
            ) else {
                continue;
            };
            out.push(Protection {
                project,
                target,
                phc,
            });
        }
        Ok(out)
    }

    /// Removes every protection of `project` (the project is being removed).
    pub fn remove_project_protections(&self, project: &ProjectName) -> Result<(), StoreError> {
        let tree = self.tree(T::SiteProtection)?;
        for item in tree.scan_prefix(prefix(project.as_str())) {
            let (k, _) = item?;
            tree.remove(k)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::{Project, Source};

    #[test]
    fn protections_are_set_replaced_listed_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(&dir.path().join("meta")).expect("open");
        let web = ProjectName::new("web").expect("name");
        store
            .create_project(&Project {
                name: web.clone(),
                source: Source::Git("https://example.com/web.git".into()),
                branch: "main".into(),
                created_at: SystemTime::now(),
                keep_versions: 0,
            })
            .expect("project");
        let staging = ProtectionTarget::Env(EnvName::new("staging").expect("env"));
        store
            .set_protection(&web, &ProtectionTarget::Previews, "$argon2id$a")
            .expect("set");
        store
            .set_protection(&web, &staging, "$argon2id$b")
            .expect("set");
        store
            .set_protection(&web, &staging, "$argon2id$c")
            .expect("replace");
        let mut all = store.all_protections().expect("all");
        all.sort_by_key(|p| p.phc.clone());
        assert_eq!(
            all.iter()
                .map(|p| (&p.target, p.phc.as_str()))
                .collect::<Vec<_>>(),
            [
                (&ProtectionTarget::Previews, "$argon2id$a"),
                (&staging, "$argon2id$c")
            ]
        );
        assert!(store.remove_protection(&web, &staging).expect("remove"));
        assert!(!store.remove_protection(&web, &staging).expect("again"));
        store.remove_project_protections(&web).expect("project");
        assert!(store.all_protections().expect("all").is_empty());

        let nope = ProjectName::new("nope").expect("name");
        let e = store
            .set_protection(&nope, &ProtectionTarget::Previews, "$argon2id$a")
            .expect_err("no project");
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
