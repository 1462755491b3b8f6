//! `SearchFilter` semantics of the `/api/…/search` operations: criteria ANDed, `stringWildcards`
//! (default true, `%` any run, `_` one character), numeric/boolean/date/null/ID tests, `maxItems`
//! (default and ceiling 5000). Results come back by ascending ID whether or not `sortByObjectID` is set.
//! Parsed from raw JSON (not the client's types) so that client wire mistakes are caught, not mirrored.

use serde_json::{Map, Value};

const MAX_ITEMS: usize = 5000;

/// How a field of a searchable object can be searched (the SDK's "Searchable as ...").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldType {
    String,
    Numeric,
    Boolean,
    Date,
}

/// A field's value on one object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FieldValue<'a> {
    String(Option<&'a str>),
    Numeric(Option<f64>),
    Boolean(Option<bool>),
    Date(Option<i64>),
}

impl FieldValue<'_> {
    fn is_null(&self) -> bool {
        matches!(
            self,
            FieldValue::String(None) | FieldValue::Numeric(None) | FieldValue::Boolean(None) | FieldValue::Date(None)
        )
    }
}

pub(super) trait Searchable {
    /// The type of a searchable field, `None` when the field does not exist or is not searchable.
    fn field_type(name: &str) -> Option<FieldType>;
    fn object_id(&self) -> i64;
    /// The value of a field for which `field_type` answered.
    fn field(&self, name: &str) -> FieldValue<'_>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    Ne,
}

impl Cmp {
    fn parse(v: Option<&Value>, what: &str) -> Result<Self, String> {
        Ok(match v.map(|v| v.as_str().ok_or(())) {
            None => Cmp::Eq,
            Some(Ok("less-than")) => Cmp::Lt,
            Some(Ok("less-than-or-equal")) => Cmp::Le,
            Some(Ok("equal")) => Cmp::Eq,
            Some(Ok("greater-than-or-equal")) => Cmp::Ge,
            Some(Ok("greater-than")) => Cmp::Gt,
            Some(Ok("not-equal")) => Cmp::Ne,
            _ => return Err(format!("Invalid {what}.")),
        })
    }

    fn holds<T: PartialOrd>(self, left: T, right: T) -> bool {
        match self {
            Cmp::Lt => left < right,
            Cmp::Le => left <= right,
            Cmp::Eq => left == right,
            Cmp::Ge => left >= right,
            Cmp::Gt => left > right,
            Cmp::Ne => left != right,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Id { cmp: Cmp, value: i64 },
    String { field: String, equal: bool, value: String, wildcards: bool },
    Numeric { field: String, cmp: Cmp, value: f64 },
    Boolean { field: String, value: bool },
    Date { field: String, first: Option<(i64, bool)>, last: Option<(i64, bool)> },
    Null { field: String, is_null: bool },
}

/// A parsed, validated search filter.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Filter {
    max_items: usize,
    tests: Vec<Test>,
}

impl Filter {
    /// Parses a request body; an empty body is the empty filter. Errors are the 400 message.
    pub(super) fn parse<T: Searchable>(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self { max_items: MAX_ITEMS, tests: Vec::new() });
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|_| "Invalid search filter: malformed JSON.".to_owned())?;
        let obj = value.as_object().ok_or("Invalid search filter: expected an object.")?;
        let max_items = match obj.get("maxItems") {
            None | Some(Value::Null) => MAX_ITEMS,
            Some(v) => match v.as_i64() {
                Some(n) if n >= 0 => (n as usize).min(MAX_ITEMS),
                _ => return Err("Invalid maxItems.".into()),
            },
        };
        if obj.get("sortByObjectID").is_some_and(|v| !v.is_null() && !v.is_boolean()) {
            return Err("Invalid sortByObjectID.".into());
        }
        let tests = match obj.get("searchCriteria") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|c| c.as_object().ok_or_else(|| "Invalid search criteria.".to_owned()).and_then(criterion::<T>))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("Invalid searchCriteria: expected an array.".into()),
        };
        Ok(Self { max_items, tests })
    }

    /// The matching items, by ascending ID, at most `maxItems`.
    pub(super) fn apply<'a, T: Searchable>(&self, items: impl IntoIterator<Item = &'a T>) -> Vec<&'a T> {
        let mut out: Vec<&T> = items.into_iter().filter(|item| self.tests.iter().all(|t| matches(t, *item))).collect();
        out.sort_by_key(|i| i.object_id());
        out.truncate(self.max_items);
        out
    }
}

fn criterion<T: Searchable>(c: &Map<String, Value>) -> Result<Test, String> {
    let present = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
    if present("idTest") || present("idValue") {
        let value = c.get("idValue").and_then(Value::as_i64).ok_or("Invalid idValue.")?;
        return Ok(Test::Id { cmp: Cmp::parse(c.get("idTest").filter(|v| !v.is_null()), "idTest")?, value });
    }
    let field = c.get("fieldName").and_then(Value::as_str).ok_or("Search criteria require a fieldName.")?.to_owned();
    let field_type = T::field_type(&field).ok_or_else(|| format!("Invalid search field: {field}."))?;
    let given = [
        ("String", present("stringValue") || present("stringTest") || present("stringWildcards")),
        ("Numeric", present("numericValue") || present("numericTest")),
        ("Boolean", present("booleanTest")),
        ("Date", present("firstDateValue") || present("lastDateValue")),
        ("Choice", present("choiceValue") || present("choiceTest")),
        ("Version", present("versionValue") || present("versionTest")),
    ];
    let expected = match field_type {
        FieldType::String => "String",
        FieldType::Numeric => "Numeric",
        FieldType::Boolean => "Boolean",
        FieldType::Date => "Date",
    };
    if let Some((kind, _)) = given.iter().find(|(kind, set)| *set && *kind != expected) {
        return Err(format!("The field {field} cannot be searched as {kind}."));
    }
    let has_value = given.iter().any(|(kind, set)| *set && *kind == expected);
    if !has_value && let Some(is_null) = c.get("nullTest").and_then(Value::as_bool) {
        return Ok(Test::Null { field, is_null });
    }
    let bool_of = |k: &str, default: bool| -> Result<bool, String> {
        match c.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| format!("Invalid {k}.")),
        }
    };
    match field_type {
        FieldType::String => {
            let value = c.get("stringValue").and_then(Value::as_str).ok_or("Invalid stringValue.")?.to_owned();
            let equal = match c.get("stringTest").and_then(|v| if v.is_null() { None } else { Some(v.as_str()) }) {
                None | Some(Some("equal")) => true,
                Some(Some("not-equal")) => false,
                _ => return Err("Invalid stringTest.".into()),
            };
            Ok(Test::String { field, equal, value, wildcards: bool_of("stringWildcards", true)? })
        }
        FieldType::Numeric => {
            let value = c.get("numericValue").and_then(Value::as_f64).ok_or("Invalid numericValue.")?;
            Ok(Test::Numeric {
                field,
                cmp: Cmp::parse(c.get("numericTest").filter(|v| !v.is_null()), "numericTest")?,
                value,
            })
        }
        FieldType::Boolean => Ok(Test::Boolean { field, value: bool_of("booleanTest", true)? }),
        FieldType::Date => {
            let bound = |value: &str, inclusive: &str| -> Result<Option<(i64, bool)>, String> {
                match c.get(value) {
                    None | Some(Value::Null) => Ok(None),
                    Some(v) => {
                        Ok(Some((v.as_i64().ok_or_else(|| format!("Invalid {value}."))?, bool_of(inclusive, true)?)))
                    }
                }
            };
            let first = bound("firstDateValue", "firstDateInclusive")?;
            let last = bound("lastDateValue", "lastDateInclusive")?;
            if first.is_none() && last.is_none() {
                return Err(format!(
                    "Search criteria for the date field {field} require firstDateValue or lastDateValue."
                ));
            }
            Ok(Test::Date { field, first, last })
        }
    }
}

fn matches<T: Searchable>(test: &Test, item: &T) -> bool {
    match test {
        Test::Id { cmp, value } => cmp.holds(item.object_id(), *value),
        Test::Null { field, is_null } => item.field(field).is_null() == *is_null,
        Test::String { field, equal, value, wildcards } => match item.field(field) {
            FieldValue::String(Some(s)) => {
                let hit = if *wildcards { like(value, s) } else { value == s };
                hit == *equal
            }
            _ => false,
        },
        Test::Numeric { field, cmp, value } => match item.field(field) {
            FieldValue::Numeric(Some(n)) => cmp.holds(n, *value),
            _ => false,
        },
        Test::Boolean { field, value } => item.field(field) == FieldValue::Boolean(Some(*value)),
        Test::Date { field, first, last } => match item.field(field) {
            FieldValue::Date(Some(d)) => {
                first.is_none_or(|(f, incl)| if incl { d >= f } else { d > f })
                    && last.is_none_or(|(l, incl)| if incl { d <= l } else { d < l })
            }
            _ => false,
        },
    }
}

/// SQL `LIKE` without escapes: `%` matches any run of characters, `_` exactly one.
pub(super) fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || (p[pi] != '%' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '%' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((bp, bt)) = backtrack {
            pi = bp + 1;
            ti = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    struct Item {
        id: i64,
        name: &'static str,
        role: i64,
        active: bool,
        expiry: Option<i64>,
    }

    impl Searchable for Item {
        fn field_type(name: &str) -> Option<FieldType> {
            Some(match name {
                "keyName" => FieldType::String,
                "roleID" => FieldType::Numeric,
                "active" => FieldType::Boolean,
                "expiryDate" => FieldType::Date,
                _ => return None,
            })
        }
        fn object_id(&self) -> i64 {
            self.id
        }
        fn field(&self, name: &str) -> FieldValue<'_> {
            match name {
                "keyName" => FieldValue::String(Some(self.name)),
                "roleID" => FieldValue::Numeric(Some(self.role as f64)),
                "active" => FieldValue::Boolean(Some(self.active)),
                _ => FieldValue::Date(self.expiry),
            }
        }
    }

    fn items() -> Vec<Item> {
        vec![
            Item { id: 3, name: "app_1", role: 2, active: true, expiry: Some(100) },
            Item { id: 1, name: "admin", role: 1, active: true, expiry: None },
            Item { id: 2, name: "appX1", role: 2, active: false, expiry: Some(200) },
            Item { id: 4, name: "app_1-r2", role: 2, active: true, expiry: Some(300) },
        ]
    }

    fn ids(filter: serde_json::Value) -> Result<Vec<i64>, String> {
        let f = Filter::parse::<Item>(filter.to_string().as_bytes())?;
        let items = items();
        Ok(f.apply(&items).into_iter().map(|i| i.id).collect())
    }

    #[test]
    fn like_handles_wildcards() {
        assert!(like("app_1", "appX1"));
        assert!(like("app%", "app_1-r2"));
        assert!(like("%1", "app_1"));
        assert!(like("a%_%2", "app_1-r2"));
        assert!(like("%", ""));
        assert!(!like("app_1", "app_1-r2"));
        assert!(!like("_", ""));
    }

    #[test]
    fn wildcards_default_on_and_can_be_turned_off() {
        let crit = |extra: serde_json::Value| {
            let mut c = json!({"fieldName": "keyName", "stringTest": "equal", "stringValue": "app_1"});
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({"searchCriteria": [c]})
        };
        assert_eq!(ids(crit(json!({}))).unwrap(), vec![2, 3]);
        assert_eq!(ids(crit(json!({"stringWildcards": false}))).unwrap(), vec![3]);
        assert_eq!(ids(crit(json!({"stringWildcards": false, "stringTest": "not-equal"}))).unwrap(), vec![1, 2, 4]);
    }

    #[test]
    fn empty_filter_returns_everything_by_id_up_to_max_items() {
        assert_eq!(ids(json!({})).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(Filter::parse::<Item>(b"").unwrap().apply(&items()).len(), 4);
        assert_eq!(ids(json!({"maxItems": 2, "sortByObjectID": true})).unwrap(), vec![1, 2]);
        assert!(ids(json!({"maxItems": -1})).is_err());
    }

    #[test]
    fn id_numeric_boolean_date_and_null_tests() {
        assert_eq!(ids(json!({"searchCriteria": [{"idTest": "greater-than", "idValue": 2}]})).unwrap(), vec![3, 4]);
        assert_eq!(ids(json!({"searchCriteria": [{"idValue": 2}]})).unwrap(), vec![2]);
        assert_eq!(
            ids(json!({"searchCriteria": [{"fieldName": "roleID", "numericTest": "equal", "numericValue": 1}]}))
                .unwrap(),
            vec![1]
        );
        assert_eq!(ids(json!({"searchCriteria": [{"fieldName": "active"}]})).unwrap(), vec![1, 3, 4]);
        assert_eq!(ids(json!({"searchCriteria": [{"fieldName": "active", "booleanTest": false}]})).unwrap(), vec![2]);
        assert_eq!(
            ids(json!({"searchCriteria": [{"fieldName": "expiryDate", "firstDateValue": 100, "firstDateInclusive": false,
                "lastDateValue": 300}]}))
            .unwrap(),
            vec![2, 4]
        );
        assert_eq!(ids(json!({"searchCriteria": [{"fieldName": "expiryDate", "nullTest": true}]})).unwrap(), vec![1]);
        // Criteria are ANDed.
        assert_eq!(
            ids(json!({"searchCriteria": [{"fieldName": "active"}, {"fieldName": "roleID", "numericValue": 2},
                {"idTest": "less-than", "idValue": 4}]}))
            .unwrap(),
            vec![3]
        );
    }

    #[test]
    fn malformed_criteria_are_refused() {
        for bad in [
            json!({"searchCriteria": [{"fieldName": "nope", "stringValue": "x"}]}),
            json!({"searchCriteria": [{"fieldName": "roleID", "stringValue": "2"}]}),
            json!({"searchCriteria": [{"fieldName": "keyName", "stringValue": "x", "stringTest": "like"}]}),
            json!({"searchCriteria": [{"stringValue": "x"}]}),
            json!({"searchCriteria": [{"idTest": "between", "idValue": 1}]}),
            json!({"searchCriteria": {"fieldName": "keyName"}}),
            json!([1]),
        ] {
            assert!(ids(bad.clone()).is_err(), "{bad}");
        }
    }
}
