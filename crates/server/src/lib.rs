//! ferroftp server (being written).
