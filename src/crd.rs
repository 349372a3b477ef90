//! DropletAction CRD.
