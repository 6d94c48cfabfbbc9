//! (being written: see metafile.rs)
pub mod metafile;
