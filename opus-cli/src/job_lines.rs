//! A pipeline's log lines per job: opusd names a job's lines `<job>/<step>` (`unit/step 1`,
//! `unit/job`), so `opus logs web#12 --job unit` prints only those, and without `--job` each job
//! line is marked with its job (`[unit] ...`), since parallel jobs interleave.

use std::collections::BTreeSet;

/// Which lines of a log are printed, and how they are marked.
#[derive(Debug, Default)]
pub struct JobLines {
    /// Only this job's lines (`--job`).
    only: Option<String>,
    /// The jobs seen, for the message when `only` names none of them.
    seen: BTreeSet<String>,
    /// Whether a line of `only` was printed.
    matched: bool,
}

impl JobLines {
    /// Lines of every job, or of `only`.
    pub fn new(only: Option<String>) -> JobLines {
        JobLines {
            only,
            ..JobLines::default()
        }
    }

    /// What to print for a line of step `step` with `text` (`None`: not this job's).
    pub fn show(&mut self, step: &str, text: &str) -> Option<String> {
        let job = step.split_once('/').map(|(job, _)| job);
        if let Some(job) = job {
            self.seen.insert(job.to_owned());
        }
        match (&self.only, job) {
            (None, None) => Some(text.to_owned()),
            (None, Some(job)) => Some(format!("[{job}] {text}")),
            (Some(only), Some(job)) if only == job => {
                self.matched = true;
                Some(text.to_owned())
            }
            (Some(_), _) => None,
        }
    }

    /// Once the log has ended: an error message when `--job` named no job of the build.
    pub fn unmatched(&self) -> Option<String> {
        let only = self.only.as_ref()?;
        if self.matched {
            return None;
        }
        Some(if self.seen.is_empty() {
            format!(
                "the build has no job {only:?}: its opus.yml has no pipeline (`build:` is one job; see `opus logs` without --job)"
            )
        } else {
            let seen: Vec<&str> = self.seen.iter().map(String::as_str).collect();
            format!(
                "the build has no job {only:?}; its jobs: {}",
                seen.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_selected_and_marked_by_job() {
        let mut all = JobLines::new(None);
        assert_eq!(all.show("step 1", "x").as_deref(), Some("x"));
        assert_eq!(all.show("unit/step 1", "ok").as_deref(), Some("[unit] ok"));
        assert_eq!(all.unmatched(), None);

        let mut unit = JobLines::new(Some("unit".into()));
        assert_eq!(unit.show("lint/step 1", "no"), None);
        assert_eq!(unit.show("pipeline", "stage test"), None);
        assert_eq!(unit.show("unit/job", "started").as_deref(), Some("started"));
        assert_eq!(unit.unmatched(), None);
    }

    #[test]
    fn a_job_the_build_does_not_have_is_an_error_naming_its_jobs() {
        let mut other = JobLines::new(Some("e2e".into()));
        other.show("lint/step 1", "a");
        other.show("unit/step 1", "b");
        let msg = other.unmatched().expect("no such job");
        assert!(msg.contains("lint, unit"), "{msg}");
        let none = JobLines::new(Some("e2e".into()));
        assert!(
            none.unmatched()
                .expect("no pipeline")
                .contains("no pipeline")
        );
    }
}
