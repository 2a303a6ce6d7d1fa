//! Live terminal UI for `mphang attach` (issue 5; not yet built).
