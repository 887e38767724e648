//! The JSON form of the built-in triggers, as serde types.
//!
//! Each built-in trigger converts to and from one spec struct here; the
//! [`BuiltinSpec`] enum adds the `"type"` tag. Reading goes through
//! [`read_builtin`], which dispatches on the tag itself (serde's internally
//! tagged enums buffer their content and lose the path of a bad field) and
//! turns serde's errors into [`Error::InvalidTrigger`] naming the field.
//! The run loop first tries [`read_plain_builtin`] on the stored text, which
//! reads the form this build writes without building a JSON value.

use serde::de::value::MapDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The JSON format version this build reads and writes (`"v"`, optional).
const FORMAT_VERSION: u64 = 1;

/// A built-in trigger's JSON form, tagged by `"type"`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BuiltinSpec {
    Date(DateSpec),
    Interval(IntervalSpec),
    Cron(CronSpec),
    CalendarInterval(CalendarIntervalSpec),
    And(CombinedSpec),
    Or(CombinedSpec),
}

impl BuiltinSpec {
    /// The JSON value of this spec.
    pub(crate) fn to_json(&self) -> Value {
        // Serialising these structs (string keys, plain fields) cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The compact JSON text of this spec.
    pub(crate) fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("null"))
    }
}

/// `{"type": "date"}`: one fire time.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DateSpec {
    pub run_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `{"type": "interval"}`: a fixed elapsed time.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IntervalSpec {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weeks: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub days: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hours: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minutes: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<u64>,
}

/// `{"type": "cron"}`: cron fields or one crontab line.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CronSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crontab: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_week: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hour: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second: Option<CronField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<u64>,
}

/// `{"type": "calendar_interval"}`: calendar steps at a wall-clock time.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalendarIntervalSpec {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub years: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub months: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub weeks: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub days: u32,
    #[serde(default)]
    pub hour: u32,
    #[serde(default)]
    pub minute: u32,
    #[serde(default)]
    pub second: u32,
    /// A date (`2026-01-31`), not an instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// A date (`2026-12-31`), not an instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `{"type": "and" | "or"}`: child triggers (any registered type).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CombinedSpec {
    pub triggers: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<u64>,
}

/// A cron field: an expression, or a plain number (`"hour": 9`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CronField(pub String);

impl Serialize for CronField {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CronField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = CronField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a non-negative integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<CronField, E> {
                Ok(CronField(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<CronField, E> {
                Ok(CronField(v.to_string()))
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Reads a single built-in trigger's JSON text in the form this build
/// writes it (`"type":"<kind>"` with no space inside, no `"v"`, no `null`
/// field that is not optional, keys in any order); `None` for anything else
/// (another layout or type, an error), which [`read_builtin`] reads or
/// explains from the JSON value.
pub(crate) fn read_plain_builtin(text: &str) -> Option<BuiltinSpec> {
    let (kind, fields) = split_tag(text)?;
    Some(match kind {
        "date" => BuiltinSpec::Date(serde_json::from_str(&fields).ok()?),
        "interval" => BuiltinSpec::Interval(serde_json::from_str(&fields).ok()?),
        "cron" => BuiltinSpec::Cron(serde_json::from_str(&fields).ok()?),
        "calendar_interval" => BuiltinSpec::CalendarInterval(serde_json::from_str(&fields).ok()?),
        _ => return None,
    })
}

/// The value of an object's first `"type":"…"` member, and the object's text
/// without that member.
///
/// The member is found as `"type":"` right after `{` or `,`: inside a JSON
/// string a quote is always escaped, so there it is a key of the object or of
/// an object nested in it. A nested one is harmless here: the object left
/// still has its own `type` (or a nested object), which the built-in specs
/// (plain string and number fields, unknown fields denied) refuse.
fn split_tag(text: &str) -> Option<(&str, String)> {
    const KEY: &str = "\"type\":\"";
    let mut from = 0;
    // This build writes the tag first: no search.
    let at = if text.strip_prefix('{').is_some_and(|t| t.starts_with(KEY)) {
        1
    } else {
        loop {
            let i = from + text[from..].find(KEY)?;
            if i > 0 && matches!(text.as_bytes()[i - 1], b'{' | b',') {
                break i;
            }
            from = i + 1;
        }
    };
    let start = at + KEY.len();
    let kind = &text[start..start + text[start..].find('"')?];
    let (before, after) = (&text[..at], &text[start + kind.len() + 1..]);
    // The member goes with one comma beside it, if any.
    let (before, after) = match (before.strip_suffix(','), after.strip_prefix(',')) {
        (Some(b), _) => (b, after),
        (None, Some(a)) => (before, a),
        (None, None) => (before, after),
    };
    let mut fields = String::with_capacity(before.len() + after.len());
    fields.push_str(before);
    fields.push_str(after);
    Some((kind, fields))
}

/// Reads a built-in trigger's JSON (`kind` is its `type`); `None` when
/// `kind` is not a built-in type.
pub(crate) fn read_builtin(kind: &str, value: &Value) -> Result<Option<BuiltinSpec>> {
    Ok(Some(match kind {
        "date" => BuiltinSpec::Date(read(value, kind)?),
        "interval" => BuiltinSpec::Interval(read(value, kind)?),
        "cron" => BuiltinSpec::Cron(read(value, kind)?),
        "calendar_interval" => BuiltinSpec::CalendarInterval(read(value, kind)?),
        "and" => BuiltinSpec::And(read(value, kind)?),
        "or" => BuiltinSpec::Or(read(value, kind)?),
        _ => return Ok(None),
    }))
}

/// Reads the spec of one built-in trigger type from its JSON.
pub(crate) fn read<T: DeserializeOwned>(value: &Value, kind: &str) -> Result<T> {
    read_fields(checked_object(value, kind)?)
}

/// The object of a trigger's JSON, after checking its `type` and `v`.
fn checked_object<'a>(value: &'a Value, kind: &str) -> Result<&'a Map<String, Value>> {
    let obj = value
        .as_object()
        .ok_or_else(|| Error::invalid_trigger(kind, value, "trigger JSON must be an object"))?;
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if t == kind => {}
        _ => {
            return Err(Error::invalid_trigger(
                "type",
                obj.get("type").unwrap_or(&Value::Null),
                format!("expected \"{kind}\""),
            ))
        }
    }
    if let Some(v) = obj.get("v") {
        if v.as_u64() != Some(FORMAT_VERSION) {
            return Err(Error::invalid_trigger(
                "v",
                v,
                "unsupported trigger format version (this build reads version 1)",
            ));
        }
    }
    Ok(obj)
}

/// Deserialises `T` from the object's keys other than `type` and `v`; a `null`
/// value of one of `T`'s fields counts as absent. An error names the field and
/// the value it had.
fn read_fields<T: DeserializeOwned>(obj: &Map<String, Value>) -> Result<T> {
    // The field names are looked up only when some value is null.
    let known = if obj.values().any(Value::is_null) {
        field_names::<T>()
    } else {
        &[]
    };
    let fields = obj
        .iter()
        .filter(|(k, v)| {
            let k = k.as_str();
            k != "type" && k != "v" && !(v.is_null() && known.contains(&k))
        })
        .map(|(k, v)| (k.as_str(), v));
    // Read once without tracking the path (the common case: valid JSON);
    // only a failed read is repeated to find the field that failed.
    if let Ok(spec) = T::deserialize(MapDeserializer::<_, serde_json::Error>::new(fields.clone())) {
        return Ok(spec);
    }
    let de = MapDeserializer::<_, serde_json::Error>::new(fields);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
            _ => None,
        };
        let reason = e.into_inner().to_string();
        // A missing field is reported at the object itself: serde names it
        // in backticks.
        let field = key.or_else(|| backticked(&reason)).unwrap_or_default();
        let value = obj
            .get(&field)
            .map_or_else(|| "null".to_string(), Value::to_string);
        Error::invalid_trigger(field, value, reason)
    })
}

/// The field names of a struct deriving `Deserialize`, as its derived code
/// hands them to the deserializer.
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only records the field list it is asked for.
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(
            self,
            _: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields recorded"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The first `` `name` `` in a serde message.
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(value: Value) -> (String, String) {
        let kind = value["type"].as_str().unwrap_or_default().to_string();
        match read_builtin(&kind, &value).map(|s| s.expect("a built-in type")) {
            Err(Error::InvalidTrigger { field, value, .. }) => (field, value),
            other => panic!("expected an invalid trigger, got {other:?}"),
        }
    }

    #[test]
    fn the_tag_is_split_off_wherever_it_stands() {
        let cases = [
            (r#"{"type":"x"}"#, Some(("x", "{}"))),
            (r#"{"type":"x","a":1}"#, Some(("x", r#"{"a":1}"#))),
            (r#"{"a":1,"type":"x"}"#, Some(("x", r#"{"a":1}"#))),
            (
                r#"{"a":1,"type":"x","b":"c"}"#,
                Some(("x", r#"{"a":1,"b":"c"}"#)),
            ),
            (
                r#"{"a":"\"type\":\"y","type":"x"}"#,
                Some(("x", r#"{"a":"\"type\":\"y"}"#)),
            ),
            (r#"{ "type": "x" }"#, None),
            (r#"{"type":"x" ,"a":1}"#, Some(("x", r#"{ ,"a":1}"#))),
            (
                r#"{"a":{"type":"y"},"type":"x"}"#,
                Some(("y", r#"{"a":{},"type":"x"}"#)),
            ),
            (r#"{"a":1}"#, None),
        ];
        for (text, want) in cases {
            let got = split_tag(text);
            assert_eq!(got.as_ref().map(|(k, f)| (*k, f.as_str())), want, "{text}");
        }
    }

    #[test]
    fn errors_name_the_field_and_its_value() {
        let cases = [
            (json!({"type": "interval", "minutes": -5}), "minutes", "-5"),
            (
                json!({"type": "interval", "minutes": 5, "jitter": "x"}),
                "jitter",
                "\"x\"",
            ),
            (json!({"type": "cron", "hour": true}), "hour", "true"),
            (json!({"type": "cron", "minuet": "5"}), "minuet", "\"5\""),
            (json!({"type": "date"}), "run_date", "null"),
            (json!({"type": "and", "triggers": "x"}), "triggers", "\"x\""),
            (
                json!({"type": "calendar_interval", "hour": 99999999999u64}),
                "hour",
                "99999999999",
            ),
        ];
        for (json, field, value) in cases {
            assert_eq!(
                field_of(json.clone()),
                (field.to_string(), value.to_string()),
                "{json}"
            );
        }
    }

    #[test]
    fn an_unknown_field_is_refused_even_when_null() {
        assert_eq!(
            field_of(json!({"type": "cron", "hour": "9", "minuet": null})),
            ("minuet".to_string(), "null".to_string())
        );
        assert_eq!(
            field_of(json!({"type": "interval", "minutes": 1, "a.b": 7})),
            ("a.b".to_string(), "7".to_string())
        );
        assert!(field_names::<CronSpec>().contains(&"day_of_week"));
    }

    #[test]
    fn null_is_absent() {
        let json = json!({"type": "interval", "minutes": 5, "hours": null, "jitter": null});
        let BuiltinSpec::Interval(spec) = read_builtin("interval", &json)
            .expect("valid")
            .expect("built in")
        else {
            panic!("not an interval spec");
        };
        assert_eq!((spec.minutes, spec.hours, spec.jitter), (5, 0, None));
        assert_eq!(
            field_of(json!({"type": "date", "run_date": null})),
            ("run_date".to_string(), "null".to_string())
        );
    }

    #[test]
    fn reads_and_writes_the_documented_shape() {
        let json =
            json!({"type": "cron", "hour": 9, "timezone": "Asia/Shanghai", "jitter": 3, "v": 1});
        let BuiltinSpec::Cron(spec) = read_builtin("cron", &json)
            .expect("valid")
            .expect("built in")
        else {
            panic!("not a cron spec");
        };
        assert_eq!(spec.hour, Some(CronField("9".into())));
        assert_eq!(spec.timezone.as_deref(), Some("Asia/Shanghai"));
        assert_eq!(spec.jitter, Some(3));
        assert_eq!(
            BuiltinSpec::Cron(spec).to_json(),
            json!({"type": "cron", "hour": "9", "timezone": "Asia/Shanghai", "jitter": 3})
        );
    }
}
