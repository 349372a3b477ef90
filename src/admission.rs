//! Admission validation.
