//! ferroftp auth-file (being written).
