//! Tests of the whole check over replay directories.
