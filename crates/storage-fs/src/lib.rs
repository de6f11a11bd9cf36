//! ferroftp storage-fs (being written).
