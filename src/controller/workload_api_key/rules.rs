//! What each Trend API accepts of a WorkloadApiKey, decided before any vendor call, and the terms a key is created
//! on there: how `expiresAfter` maps to the months a Vision One key lives, and the digest of what an unmodifiable
//! (Cloud One, Vision One) key is made with. Pure; each refusal names the field and the API.

use std::time::Duration;

use k8s_openapi::jiff::{Span, Timestamp, tz::TimeZone};

use super::plan;
use crate::{
    api::{RotationStrategy, WorkloadApiKeySpec, parse_duration},
    clients::trend::{ExpiryMonths, TrendApiKind},
    controller::{context::digest, vendor_key},
};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Refuses the fields of `spec` that `api` has no use for or cannot honour, each with what to do instead.
pub fn check_fields(api: TrendApiKind, spec: &WorkloadApiKeySpec) -> Result<(), String> {
    let account = api != TrendApiKind::DeepSecurity;
    let mut problems = Vec::new();
    // The API server refuses these since the rule exists; a resource stored before it is refused here.
    for (field, text) in
        [("spec.keyName", &spec.key_name), ("spec.description", &spec.description), ("spec.role.name", &spec.role.name)]
    {
        if let Err(e) = vendor_key::check_free_text(field, text.as_deref()) {
            problems.push(e);
        }
    }
    if account && spec.role.id.is_some() {
        problems.push(format!("spec.role.id is not accepted by Trend {api}: use role.name"));
    }
    if account && plan::strategy(spec) == RotationStrategy::RegenerateSecret {
        problems.push(format!(
            "spec.rotation.strategy RegenerateSecret is not accepted by Trend {api}: rotate by Replace: {api} cannot \
             regenerate a key's secret"
        ));
    }
    if api == TrendApiKind::VisionOne {
        if spec.locale.is_some() {
            problems.push(format!("spec.locale is not accepted by Trend {api}: its keys have no language"));
        }
        if spec.time_zone.is_some() {
            problems.push(format!("spec.timeZone is not accepted by Trend {api}: its keys have no time zone"));
        }
    }
    if api == TrendApiKind::CloudOne && spec.expires_after.is_some() {
        problems.push(format!(
            "spec.expiresAfter is not accepted by Trend {api}: its keys have no documented expiry; use rotation.every"
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// The longest a key of `months` can live: 31, 92, 184 or 366 days.
pub fn longest(months: ExpiryMonths) -> Duration {
    DAY * match months {
        ExpiryMonths::One => 31,
        ExpiryMonths::Three => 92,
        ExpiryMonths::Six => 184,
        ExpiryMonths::Twelve => 366,
    }
}

/// The shortest a key of `months` can live: 28, 89, 181 or 365 days.
pub fn shortest(months: ExpiryMonths) -> Duration {
    DAY * match months {
        ExpiryMonths::One => 28,
        ExpiryMonths::Three => 89,
        ExpiryMonths::Six => 181,
        ExpiryMonths::Twelve => 365,
    }
}

/// The Vision One lifetime for `expiresAfter`: the most months whose longest possible calendar length is within it,
/// so the vendor never grants more than asked. Without `expiresAfter`, none: the key does not expire.
pub fn vision_one_expiry(expires_after: Option<&str>) -> Result<Option<ExpiryMonths>, String> {
    let Some(text) = expires_after else { return Ok(None) };
    let asked = parse_duration(text)?;
    match ExpiryMonths::ALL.into_iter().rev().find(|m| longest(*m) <= asked) {
        Some(months) => Ok(Some(months)),
        None => Err(format!(
            "Vision One keys live 1, 3, 6 or 12 months; expiresAfter {text} is shorter than one month (744h): ask for \
             at least 744h, or leave expiresAfter out for a key that does not expire"
        )),
    }
}

/// When a Vision One key of `months` created at `created` expires, if the vendor does not say.
pub fn months_after(created: Timestamp, months: ExpiryMonths) -> Timestamp {
    created
        .to_zoned(TimeZone::UTC)
        .checked_add(Span::new().months(i64::from(months.months())))
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

/// What a key is created with through `api`, beyond its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    /// Vision One: how many months the key lives (`None`: it does not expire).
    pub months: Option<ExpiryMonths>,
    /// Cloud One and Vision One, whose keys cannot be modified: [`key_attributes`]. `None` for Deep Security.
    pub attributes: Option<String>,
}

/// The terms of a key for `spec` (its effective lifetime already applied) through `api`, whose keys are named
/// `base` (then `<base>-r<n>`). A `renewBefore` not shorter than the shortest length of the Vision One months is
/// refused.
pub fn terms(api: TrendApiKind, spec: &WorkloadApiKeySpec, base: &str) -> Result<Terms, String> {
    let months = match api {
        TrendApiKind::DeepSecurity => return Ok(Terms { months: None, attributes: None }),
        TrendApiKind::CloudOne => None,
        TrendApiKind::VisionOne => vision_one_expiry(spec.expires_after.as_deref())?,
    };
    if let (Some(months), Some(text)) = (months, spec.rotation.as_ref().and_then(|r| r.renew_before.as_deref())) {
        let shortest = shortest(months);
        if parse_duration(text)? >= shortest {
            return Err(format!(
                "rotation.renewBefore {text} must be shorter than the key's lifetime: Vision One gives it {} month(s), \
                 which can be as short as {}h",
                months.months(),
                shortest.as_secs() / 3600
            ));
        }
    }
    Ok(Terms { months, attributes: Some(key_attributes(spec, base, months)) })
}

/// Digest of what a key is created with and cannot change afterwards: role, name, description, language, time
/// zone, lifetime. Not secret.
pub fn key_attributes(spec: &WorkloadApiKeySpec, base: &str, months: Option<ExpiryMonths>) -> String {
    let text = |v: Option<&str>| v.map(str::trim).unwrap_or_default().to_owned();
    let mut d = digest(&[
        b"key-attributes/v1",
        text(spec.role.name.as_deref()).as_bytes(),
        base.as_bytes(),
        text(spec.description.as_deref()).as_bytes(),
        spec.locale.map(|l| l.as_str()).unwrap_or_default().as_bytes(),
        text(spec.time_zone.as_deref()).as_bytes(),
        &[months.map_or(0, ExpiryMonths::months)],
    ]);
    d.truncate(16);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Locale, RoleRef, Rotation};

    const V1: TrendApiKind = TrendApiKind::VisionOne;
    const C1: TrendApiKind = TrendApiKind::CloudOne;
    const DS: TrendApiKind = TrendApiKind::DeepSecurity;

    fn spec() -> WorkloadApiKeySpec {
        serde_json::from_value(serde_json::json!({
            "providerRef": {"kind": "KeyProvider", "name": "trend"},
            "role": {"name": "Auditor"},
        }))
        .unwrap()
    }

    fn refused(api: TrendApiKind, spec: &WorkloadApiKeySpec) -> String {
        check_fields(api, spec).unwrap_err()
    }

    #[test]
    fn a_plain_spec_is_accepted_everywhere() {
        for api in [DS, C1, V1] {
            assert_eq!(check_fields(api, &spec()), Ok(()), "{api}");
        }
    }

    #[test]
    fn free_text_with_an_ownership_marker_is_refused_on_every_api() {
        let marker = "[workloadkeys.io/uid=0b6f5d7e-1111-4c4c-9a9a-123456789abc]";
        let s = WorkloadApiKeySpec {
            key_name: Some(format!("k{marker}")),
            description: Some(format!("payments {marker}")),
            role: RoleRef { name: Some(format!("Auditor{marker}")), id: None },
            ..spec()
        };
        for api in [DS, C1, V1] {
            let e = refused(api, &s);
            for field in ["spec.keyName", "spec.description", "spec.role.name"] {
                assert!(e.contains(&format!("{field} must not contain 'workloadkeys.io/'")), "{api}: {e}");
            }
        }
    }

    #[test]
    fn role_id_is_deep_security_only() {
        let s = WorkloadApiKeySpec { role: RoleRef { name: None, id: Some(2) }, ..spec() };
        assert!(check_fields(DS, &s).is_ok());
        for api in [C1, V1] {
            let e = refused(api, &s);
            assert!(e.contains("spec.role.id") && e.contains(api.as_str()) && e.contains("use role.name"), "{e}");
        }
    }

    #[test]
    fn regenerate_secret_is_deep_security_only() {
        let s = WorkloadApiKeySpec {
            rotation: Some(Box::new(Rotation {
                strategy: Some(RotationStrategy::RegenerateSecret),
                ..Default::default()
            })),
            ..spec()
        };
        assert!(check_fields(DS, &s).is_ok());
        let e = refused(C1, &s);
        assert!(
            e.contains("spec.rotation.strategy")
                && e.contains("rotate by Replace: CloudOne cannot regenerate a key's secret"),
            "{e}"
        );
        assert!(refused(V1, &s).contains("VisionOne cannot regenerate"));
    }

    #[test]
    fn locale_is_refused_by_vision_one_only() {
        let s = WorkloadApiKeySpec { locale: Some(Locale::JaJp), ..spec() };
        assert!(check_fields(DS, &s).is_ok());
        assert!(check_fields(C1, &s).is_ok(), "Cloud One keys have a language");
        let e = refused(V1, &s);
        assert!(e.contains("spec.locale") && e.contains("VisionOne"), "{e}");
    }

    #[test]
    fn time_zone_is_refused_by_vision_one_only() {
        let s = WorkloadApiKeySpec { time_zone: Some("Asia/Tokyo".into()), ..spec() };
        assert!(check_fields(DS, &s).is_ok());
        assert!(check_fields(C1, &s).is_ok(), "Cloud One keys have a time zone");
        let e = refused(V1, &s);
        assert!(e.contains("spec.timeZone") && e.contains("VisionOne"), "{e}");
    }

    #[test]
    fn expires_after_is_refused_by_cloud_one() {
        let s = WorkloadApiKeySpec { expires_after: Some("744h".into()), ..spec() };
        assert!(check_fields(DS, &s).is_ok());
        assert!(check_fields(V1, &s).is_ok());
        let e = refused(C1, &s);
        assert!(e.contains("spec.expiresAfter") && e.contains("CloudOne") && e.contains("use rotation.every"), "{e}");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let s = WorkloadApiKeySpec {
            role: RoleRef { name: None, id: Some(2) },
            locale: Some(Locale::EnUs),
            time_zone: Some("UTC".into()),
            ..spec()
        };
        let e = refused(V1, &s);
        assert_eq!(e.matches("is not accepted by Trend VisionOne").count(), 3, "{e}");
    }

    #[test]
    fn vision_one_months_never_exceed_expires_after() {
        let months = |t: &str| vision_one_expiry(Some(t)).map(|m| m.map(ExpiryMonths::months));
        assert_eq!(months("744h"), Ok(Some(1)), "31 days fit");
        assert_eq!(months("2207h"), Ok(Some(1)), "one hour short of 92 days");
        assert_eq!(months("2208h"), Ok(Some(3)), "92 days");
        assert_eq!(months("4416h"), Ok(Some(6)), "184 days");
        assert_eq!(months("8783h"), Ok(Some(6)));
        assert_eq!(months("8784h"), Ok(Some(12)), "366 days");
        assert_eq!(months("100000h"), Ok(Some(12)), "twelve at most");
        assert_eq!(vision_one_expiry(None), Ok(None), "no expiresAfter: the key does not expire");
        let e = vision_one_expiry(Some("743h")).unwrap_err();
        assert!(e.contains("1, 3, 6 or 12 months") && e.contains("743h") && e.contains("744h"), "{e}");
        for m in ExpiryMonths::ALL {
            assert!(shortest(m) < longest(m));
        }
    }

    #[test]
    fn vision_one_expiry_is_calendar_months() {
        let jan31 = Timestamp::from_second(1_706_659_200).unwrap(); // 2024-01-31T00:00:00Z
        assert_eq!(months_after(jan31, ExpiryMonths::One).to_string(), "2024-02-29T00:00:00Z");
        assert_eq!(months_after(jan31, ExpiryMonths::Twelve).to_string(), "2025-01-31T00:00:00Z");
    }

    #[test]
    fn vision_one_renew_before_must_fit_the_shortest_month() {
        let mut s = WorkloadApiKeySpec {
            expires_after: Some("800h".into()),
            rotation: Some(Box::new(Rotation { renew_before: Some("672h".into()), ..Default::default() })),
            ..spec()
        };
        let e = terms(V1, &s, "k").unwrap_err();
        assert!(e.contains("rotation.renewBefore 672h") && e.contains("672h"), "{e}");
        s.rotation = Some(Box::new(Rotation { renew_before: Some("671h".into()), ..Default::default() }));
        assert_eq!(terms(V1, &s, "k").unwrap().months, Some(ExpiryMonths::One));
        s.expires_after = Some("10h".into());
        assert!(terms(V1, &s, "k").unwrap_err().contains("shorter than one month"));
    }

    #[test]
    fn attributes_follow_what_the_key_is_made_with_only() {
        let base = terms(C1, &spec(), "k").unwrap();
        assert_eq!(terms(DS, &spec(), "k").unwrap().attributes, None, "Deep Security modifies in place");
        let same = WorkloadApiKeySpec {
            rotation: Some(Box::new(Rotation {
                every: Some("24h".into()),
                grace_period: Some("1m".into()),
                ..Default::default()
            })),
            ..spec()
        };
        assert_eq!(terms(C1, &same, "k").unwrap(), base, "rotation timings are not attributes");
        let changed = [
            WorkloadApiKeySpec { role: RoleRef { name: Some("Full Access".into()), id: None }, ..spec() },
            WorkloadApiKeySpec { description: Some("other".into()), ..spec() },
            WorkloadApiKeySpec { time_zone: Some("UTC".into()), ..spec() },
        ];
        for s in changed {
            assert_ne!(terms(C1, &s, "k").unwrap().attributes, base.attributes, "{s:?}");
        }
        assert_ne!(terms(C1, &spec(), "other").unwrap().attributes, base.attributes, "key name");
        let longer = WorkloadApiKeySpec { expires_after: Some("2208h".into()), ..spec() };
        let shorter = WorkloadApiKeySpec { expires_after: Some("744h".into()), ..spec() };
        assert_ne!(terms(V1, &longer, "k").unwrap().attributes, terms(V1, &shorter, "k").unwrap().attributes);
    }
}
