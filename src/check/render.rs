//! The connection test for people: one line per step, and under a failed step its cause, the
//! fix and the policy to paste.

use std::fmt::Write as _;

use super::{CheckReport, StepStatus};

/// The report as text, one block per destination.
pub fn render_human(report: &CheckReport) -> String {
    let mut out = String::new();
    for d in &report.destinations {
        let _ = writeln!(out, "destination {:?} ({})", d.destination, d.url);
        for s in &d.steps {
            let mark = match s.status {
                StepStatus::Ok => "ok  ",
                StepStatus::Warning => "WARN",
                StepStatus::Failed => "FAIL",
                StepStatus::Skipped => "skip",
            };
            let _ = writeln!(out, "  {mark} {:<17} {}", s.step, s.detail);
            if let Some(diag) = &s.diagnosis {
                let cause = serde_json::to_value(diag.cause)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = writeln!(out, "       cause: {cause}: {}", diag.message);
                let _ = writeln!(out, "       fix:   {}", diag.fix);
                if let Some(policy) = &diag.policy {
                    let text = serde_json::to_string_pretty(policy).unwrap_or_default();
                    for line in text.lines() {
                        let _ = writeln!(out, "         {line}");
                    }
                }
            }
        }
        let verdict = match (d.ok, d.writable) {
            (true, _) => "PASSED: pail can deliver here",
            (false, true) => "FAILED: writable, but a step failed (see above)",
            (false, false) => "FAILED: pail cannot deliver here until this is fixed",
        };
        let _ = writeln!(out, "  {verdict}");
    }
    out
}
