//! Talking to API servers, for the daemon and the commands alike: kubeconfigs and clients,
//! the checks that explain a refusal in one line, a cluster's identity, ServiceAccount tokens, the watch driver (`driver`) every
//! watch runs through, applying manifests (`manifest`), setting a hub up (`hub`), and the DNS feed (watches → DNS index → zone) of `mcsd run` and `mcsd dns`.

pub mod dns_feed;
pub mod driver;
pub mod hub;
pub mod identity;
pub mod kubeconfig;
pub mod manifest;
pub mod preflight;
pub mod token;
