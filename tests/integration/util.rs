//! Shared test helpers: the built binary, fixture guards, Python discovery.
