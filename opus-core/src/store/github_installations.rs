//! Which GitHub App installation each project belongs to: opusd calls GitHub (statuses,
//! deployments) and clones with that installation's token.
//!
//! The mapping comes from `opus github import` (stored with the project, in one transaction) and
//! from webhook deliveries, whose `installation.id` names it; it goes with the project.
//!
//! Tree `github_installations`: project name -> installation id (be).

use super::{MetaStore, T, be_u64};
use crate::error::StoreError;
use crate::model::{Project, ProjectName};

impl MetaStore {
    /// Adds `project` as one of `installation`'s repositories: the project, its event and the
    /// mapping in one transaction; `AlreadyExists` when the name is taken.
    pub fn create_github_project(
        &self,
        project: &Project,
        installation: u64,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            tx.insert_project(project)?;
            tx.tree(T::GithubInstallations).insert(
                project.name.as_str().as_bytes(),
                &installation.to_be_bytes(),
            )?;
            Ok(())
        })
    }

    /// Records that `project`'s repository is in `installation` (a webhook delivery said so);
    /// nothing is written when that is already known, or when the project does not exist.
    pub fn set_github_installation(
        &self,
        project: &ProjectName,
        installation: u64,
    ) -> Result<(), StoreError> {
        if self.github_installation(project)? == Some(installation) {
            return Ok(());
        }
        self.transact(|tx| {
            tx.project(project.as_str())?;
            tx.tree(T::GithubInstallations)
                .insert(project.as_str().as_bytes(), &installation.to_be_bytes())?;
            Ok(())
        })
    }

    /// The installation `project` belongs to, when one is known.
    pub fn github_installation(&self, project: &ProjectName) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree(T::GithubInstallations)?
            .get(project.as_str().as_bytes())?
            .map(|v| be_u64(&v)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::model::Source;

    fn project(name: &str) -> Project {
        Project {
            name: ProjectName::new(name).expect("name"),
            source: Source::Git("https://github.com/acme/web.git".into()),
            branch: "main".into(),
            created_at: SystemTime::now(),
            keep_versions: 0,
        }
    }

    #[test]
    fn a_project_keeps_its_installation_until_it_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MetaStore::open(dir.path()).expect("open");
        let web = project("web");
        store.create_github_project(&web, 7).expect("create");
        assert_eq!(store.github_installation(&web.name).expect("get"), Some(7));
        assert!(matches!(
            store.create_github_project(&web, 8),
            Err(StoreError::ProjectExists(_))
        ));
        assert_eq!(store.github_installation(&web.name).expect("get"), Some(7));
        store.set_github_installation(&web.name, 9).expect("set");
        assert_eq!(store.github_installation(&web.name).expect("get"), Some(9));
        store.delete_project(&web.name).expect("delete");
        assert_eq!(store.github_installation(&web.name).expect("get"), None);
        // A delivery for a project that is gone records nothing.
        assert!(store.set_github_installation(&web.name, 9).is_err());
        assert_eq!(store.github_installation(&web.name).expect("get"), None);
    }
}
