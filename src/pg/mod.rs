pub mod masker;
