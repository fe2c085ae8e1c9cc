//! A build's steps as its log tells them: each step's command and, once it ended, its duration.
//!
//! opusd writes, under the `opus` stream, `$ <command>` when a step starts and
//! `step N finished in 1.2 s` when it ends; durations are read from those lines rather than stored
//! per build, so `opus builds web#12` and `logs -f`'s status line need nothing more from opusd.

use std::time::{Duration, SystemTime};

use opus_core::proto;

/// One step of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The step as the log names it (`step 2`).
    pub name: String,
    /// The command it runs.
    pub command: String,
    /// When its `$ command` line was written.
    pub started: Option<SystemTime>,
    /// How long it took, once its `finished in` line was written; `None` while it runs (or when
    /// the build ended without one).
    pub took: Option<Duration>,
}

/// What a log line says about steps, if anything.
#[derive(Debug, PartialEq)]
pub enum StepLine<'a> {
    /// A step started running `command`.
    Started {
        /// The command.
        command: &'a str,
    },
    /// A step ended after `took`.
    Finished {
        /// Its duration.
        took: Duration,
    },
}

/// Reads a log line: a step's `$ command` or its `step N finished in X s` line, else `None`.
pub fn parse(line: &proto::LogLine) -> Option<StepLine<'_>> {
    if line.stream != "opus" || !line.step.starts_with("step ") {
        return None;
    }
    if let Some(command) = line.text.strip_prefix("$ ") {
        return Some(StepLine::Started { command });
    }
    let seconds = line
        .text
        .strip_prefix(line.step.as_str())?
        .strip_prefix(" finished in ")?
        .strip_suffix(" s")?;
    let took = Duration::try_from_secs_f64(seconds.parse().ok()?).ok()?;
    Some(StepLine::Finished { took })
}

/// The steps of a log, in order, built line by line.
#[derive(Debug, Default)]
pub struct Steps {
    /// The steps seen so far.
    pub steps: Vec<Step>,
}

impl Steps {
    /// Takes in one more line of the log.
    pub fn observe(&mut self, line: &proto::LogLine) {
        match parse(line) {
            Some(StepLine::Started { command }) => self.steps.push(Step {
                name: line.step.clone(),
                command: command.to_owned(),
                started: line.time.as_ref().map(opus_core::wire::system_time),
                took: None,
            }),
            Some(StepLine::Finished { took }) => {
                if let Some(step) = self.steps.iter_mut().rev().find(|s| s.name == line.step) {
                    step.took = Some(took);
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(step: &str, stream: &str, text: &str) -> proto::LogLine {
        proto::LogLine {
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            step: step.into(),
            text: text.into(),
            stream: stream.into(),
            final_state: 0,
        }
    }

    #[test]
    fn steps_come_from_their_start_and_finish_lines() {
        let mut steps = Steps::default();
        for l in [
            line("setup", "opus", "fetching"),
            line("step 1", "opus", "$ npm ci"),
            line("step 1", "stdout", "$ not a step: stdout"),
            line("step 1", "opus", "step 1 finished in 1.2 s"),
            line("step 2", "opus", "$ sleep 5"),
            line("step 2", "stderr", "step 2 finished in 9.9 s"),
        ] {
            steps.observe(&l);
        }
        let summary: Vec<_> = steps
            .steps
            .iter()
            .map(|s| (s.name.as_str(), s.command.as_str(), s.took))
            .collect();
        assert_eq!(
            summary,
            [
                ("step 1", "npm ci", Some(Duration::from_millis(1200))),
                ("step 2", "sleep 5", None),
            ]
        );
    }

    #[test]
    fn other_opus_lines_are_not_steps() {
        for text in [
            "step 1 finished in soon s",
            "step 2 finished in 1.0 s",
            "step 1 finished in -1 s",
            "step 1 `exit 3` exited with code 3",
        ] {
            assert_eq!(parse(&line("step 1", "opus", text)), None, "{text}");
        }
    }
}
