//! The `--config` file: one flat TOML table keyed like the flags
//! (`segment-duration = "2s"`; `segment_duration` is read the same). Each
//! key belongs to the part of [`Config`] whose serde field names it: the
//! table is split among the parts and each part is deserialized from its own
//! keys, so a wrong key or a bad value is reported with its name.

use std::path::Path;

use serde::de::{DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use super::{
    AuthConfig, ClusterConfig, Config, ConfigError, EngineConfig, HttpLimits, RecordConfig,
    ServerConfig, SessionDefaults, Shutdown, TlsFiles,
};

/// Reads and parses the file at `path`; an error names the file.
pub(super) fn read(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
    let mut config = parse(&text).map_err(|mut e| {
        e.reason = format!("{} (in {})", e.reason, path.display());
        e
    })?;
    config.config_file = Some(path.to_path_buf());
    Ok(config)
}

/// A config file's settings over the defaults, not yet validated.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| format!("line {}: ", line_of(text, s.start)))
            .unwrap_or_default();
        ConfigError::new("config", format!("not valid TOML: {at}{}", e.message()))
    })?;
    let known = keys();
    let mut settings = toml::Table::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if !known.contains(&name.as_str()) {
            return Err(ConfigError {
                key: key.into(),
                reason: "unknown setting".into(),
            });
        }
        if settings.contains_key(&name) {
            return Err(ConfigError {
                key: key.into(),
                reason: format!("set twice (as {name} too)"),
            });
        }
        settings.insert(name, value);
    }
    Ok(Config {
        server: part(&mut settings)?,
        http: part(&mut settings)?,
        engine: part(&mut settings)?,
        session: part(&mut settings)?,
        auth: part(&mut settings)?,
        tls: part(&mut settings)?,
        shutdown: part(&mut settings)?,
        record: part(&mut settings)?,
        cluster: part(&mut settings)?,
        ladder: part(&mut settings)?,
        jobs: part(&mut settings)?,
        config_file: None,
        print_config: false,
        mint_token: None,
    })
}

/// Every key a config file may set, part by part.
pub(super) fn parts() -> [&'static [&'static str]; 11] {
    [
        keys_of::<ServerConfig>(),
        keys_of::<HttpLimits>(),
        keys_of::<EngineConfig>(),
        keys_of::<SessionDefaults>(),
        keys_of::<AuthConfig>(),
        keys_of::<TlsFiles>(),
        keys_of::<Shutdown>(),
        keys_of::<RecordConfig>(),
        keys_of::<ClusterConfig>(),
        keys_of::<crate::ladder::LadderConfig>(),
        keys_of::<crate::jobs::JobConfig>(),
    ]
}

fn keys() -> Vec<&'static str> {
    parts().concat()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Takes `T`'s keys out of `settings` and deserializes `T` from them (the
/// keys it does not find keep `T`'s defaults).
fn part<T: DeserializeOwned>(settings: &mut toml::Table) -> Result<T, ConfigError> {
    let mut mine = toml::Table::new();
    for key in keys_of::<T>() {
        if let Some((k, v)) = settings.remove_entry(*key) {
            mine.insert(k, v);
        }
    }
    T::deserialize(Part(mine))
}

/// The field names (keys) a derived `Deserialize` struct reads: what it
/// passes to `deserialize_struct`.
fn keys_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("probed"))
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

/// One part's keys as a serde map whose errors name the key.
struct Part(toml::Table);

impl<'de> serde::Deserializer<'de> for Part {
    type Error = ConfigError;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConfigError> {
        visitor.visit_map(Entries {
            iter: self.0.into_iter(),
            value: None,
        })
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct Entries {
    iter: <toml::Table as IntoIterator>::IntoIter,
    /// The key just read and its value, for `next_value_seed`.
    value: Option<(String, toml::Value)>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = ConfigError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConfigError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        let de: serde::de::value::StrDeserializer<'_, ConfigError> =
            key.as_str().into_deserializer();
        let k = seed.deserialize(de).map_err(|e| ConfigError {
            key: key.clone().into(),
            reason: e.reason,
        })?;
        self.value = Some((key, value));
        Ok(Some(k))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ConfigError> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| ConfigError::new("config", "a value without its key"))?;
        seed.deserialize(value).map_err(|e| ConfigError {
            key: key.into(),
            reason: e.message().to_string(),
        })
    }
}
