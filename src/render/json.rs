//! JSON report (`mphang/report/v1`).
