//! What the shared frame knows of a resource kind ([`Managed`]) and of its status ([`ManagedStatus`]): the one
//! place both kinds describe themselves to `reconcile`, `secret::io` and `rollout`, which import it from here rather
//! than from each other.

use std::{fmt::Debug, time::Duration};

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{Resource, ResourceExt, core::object::HasStatus};
use serde::{Serialize, de::DeserializeOwned};

use super::{error::Error, secret::WrittenSecret};
use crate::api::{RolloutTarget, SecretRollout, SecretTemplate, SecureWorkloadCredentialStatus, WorkloadApiKeyStatus};

/// The parts of a status the frame maintains.
pub trait ManagedStatus: Clone + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn failed_attempts(&self) -> Option<i32>;
    fn failed_attempts_mut(&mut self) -> &mut Option<i32>;
    fn observed_generation_mut(&mut self) -> &mut Option<i64>;
    /// The target Secret last written, and the keyed hash of its data.
    fn written_secret(&self) -> (Option<&str>, Option<&str>);
    /// The target Secret's version when its data last matched the recorded hash.
    fn secret_version_mut(&mut self) -> &mut Option<String>;
    fn secret_version(&self) -> Option<&str>;
    /// Records the target Secret just written: its hash, the version and the template digest that go with it, always
    /// together.
    fn record_written(&mut self, written: WrittenSecret);
    /// The restarts and rollouts for the Secret data written.
    fn rollout(&self) -> Option<&SecretRollout>;
    fn rollout_mut(&mut self) -> &mut Option<SecretRollout>;
    /// How many replaced keys wait to be revoked.
    fn retiring(&self) -> usize;
    /// When the current key stops working by itself (its expiry), if it does.
    fn current_key_expires_at(&self) -> Option<k8s_openapi::jiff::Timestamp>;
    /// The random part of the ownership marker its vendor keys carry ([`super::vendor_key::Owner`]).
    fn owner_nonce_mut(&mut self) -> &mut Option<String>;
}

/// Both statuses name these fields alike.
macro_rules! conventional_status {
    ($($status:ty: $retiring:ident, $expires:expr),*) => {$(
        impl ManagedStatus for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn failed_attempts(&self) -> Option<i32> {
                self.failed_attempts
            }
            fn failed_attempts_mut(&mut self) -> &mut Option<i32> {
                &mut self.failed_attempts
            }
            fn observed_generation_mut(&mut self) -> &mut Option<i64> {
                &mut self.observed_generation
            }
            fn written_secret(&self) -> (Option<&str>, Option<&str>) {
                (self.secret_name.as_deref(), self.secret_hash.as_deref())
            }
            fn secret_version_mut(&mut self) -> &mut Option<String> {
                &mut self.secret_resource_version
            }
            fn secret_version(&self) -> Option<&str> {
                self.secret_resource_version.as_deref()
            }
            fn record_written(&mut self, written: WrittenSecret) {
                self.secret_hash = Some(written.hash);
                self.secret_resource_version = written.version;
                self.secret_template_digest = written.template;
            }
            fn rollout(&self) -> Option<&SecretRollout> {
                self.rollout.as_ref()
            }
            fn rollout_mut(&mut self) -> &mut Option<SecretRollout> {
                &mut self.rollout
            }
            fn retiring(&self) -> usize {
                self.$retiring.len()
            }
            fn current_key_expires_at(&self) -> Option<k8s_openapi::jiff::Timestamp> {
                let expires: fn(&$status) -> Option<k8s_openapi::jiff::Timestamp> = $expires;
                expires(self)
            }
            fn owner_nonce_mut(&mut self) -> &mut Option<String> {
                &mut self.owner_nonce
            }
        }
    )*};
}

conventional_status!(
    WorkloadApiKeyStatus: retiring_keys, |s| s.expires_at.as_ref().map(|t| t.0),
    // A Secure Workload key pair has no expiry.
    SecureWorkloadCredentialStatus: retiring_credentials, |_| None
);

/// The resources keep their status boxed (see `api`): the frame sees through the box.
impl<S: ManagedStatus> ManagedStatus for Box<S> {
    fn conditions(&self) -> &[Condition] {
        S::conditions(self)
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        S::conditions_mut(self)
    }
    fn failed_attempts(&self) -> Option<i32> {
        S::failed_attempts(self)
    }
    fn failed_attempts_mut(&mut self) -> &mut Option<i32> {
        S::failed_attempts_mut(self)
    }
    fn observed_generation_mut(&mut self) -> &mut Option<i64> {
        S::observed_generation_mut(self)
    }
    fn written_secret(&self) -> (Option<&str>, Option<&str>) {
        S::written_secret(self)
    }
    fn secret_version_mut(&mut self) -> &mut Option<String> {
        S::secret_version_mut(self)
    }
    fn secret_version(&self) -> Option<&str> {
        S::secret_version(self)
    }
    fn record_written(&mut self, written: WrittenSecret) {
        S::record_written(self, written)
    }
    fn rollout(&self) -> Option<&SecretRollout> {
        S::rollout(self)
    }
    fn rollout_mut(&mut self) -> &mut Option<SecretRollout> {
        S::rollout_mut(self)
    }
    fn retiring(&self) -> usize {
        S::retiring(self)
    }
    fn current_key_expires_at(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        S::current_key_expires_at(self)
    }
    fn owner_nonce_mut(&mut self) -> &mut Option<String> {
        S::owner_nonce_mut(self)
    }
}

/// A custom resource reconciled by this frame: namespaced, with a [`ManagedStatus`] and a target Secret.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: ManagedStatus>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// Name of the Secret the operator writes for the resource.
    fn target_secret(&self) -> String;
    /// Other Secrets of its namespace whose change concerns it (an imported key pair).
    fn referenced_secrets(&self) -> Vec<&str>;
    /// The provider it issues through.
    fn provider_ref(&self) -> &crate::api::ProviderRef;
    /// The user's labels, annotations and data template for the target Secret.
    fn secret_template(&self) -> Option<&SecretTemplate>;
    fn secret_template_mut(&mut self) -> Option<&mut SecretTemplate>;
    /// `rotation.rolloutTimeout`: how long replaced keys wait for the rollouts of the restarted workloads.
    fn rollout_timeout(&self) -> Result<Duration, String>;
    /// The status its first vendor create records before it (the intent, without its nonce), if its first
    /// reconcile goes on to one; `None` for a resource that never makes anything at the vendor. See
    /// [`super::intent`].
    fn first_intent(&self) -> Option<Self::Status> {
        None
    }
    /// The workloads restarted when the target Secret's data changes.
    fn rollout_targets(&self) -> &[RolloutTarget] {
        self.secret_template().map(|t| t.rollout_restart_targets.as_slice()).unwrap_or_default()
    }
}

/// The status of a resource, or an empty one.
pub fn status_of<K: Managed>(obj: &K) -> K::Status {
    obj.status().cloned().unwrap_or_default()
}

pub fn uid<K: Managed>(obj: &K) -> Result<String, Error> {
    obj.uid().ok_or(Error::MissingObjectKey(".metadata.uid"))
}
