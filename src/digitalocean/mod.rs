//! DigitalOcean API client.
