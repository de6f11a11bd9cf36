//! ferroftp client (being written).
