//! Trend Micro simulators, by API: Deep Security / Workload Security `/api` ([`deep_security`]), Trend Cloud One's
//! account API ([`cloud_one`]) and Trend Vision One's ([`vision_one`]). One TLS listener serves all three
//! (`sim::start`), as the real APIs answer on their own hosts.

pub mod cloud_one;
pub mod deep_security;
pub mod vision_one;

pub use cloud_one::{CloudOneSim, CloudOneSimKey};
pub use deep_security::{DeepSecuritySim, DeepSecuritySimOptions, SimApiKey};
pub use vision_one::{VisionOneSim, VisionOneSimKey};
