//! `[server]`: how each program's HTTP server treats connections. Both programs read the same
//! section (the receiver takes this type from here), and [`crate::serve`] applies it.
//!
//! Durations are humane strings as elsewhere in the sidecar's file (`"30s"`, `"500ms"`). Every
//! field has a default, so the section may be left out. It applies at start only.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// How long a connection may take to deliver a request's complete headers, counted from the
    /// moment it is ready for one: from accept, and on a kept-alive connection from the end of
    /// the previous response. So it is also the keep-alive idle timeout: a connection that sends
    /// nothing, or dribbles its headers, is closed when it runs out. Default 30s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// The most connections served at once. Beyond it new connections are not accepted: they wait
    /// in the listen backlog until a served one closes. Lowered at start to what the open-files
    /// limit leaves room for. Default 4096.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
        }
    }
}

impl ServerConfig {
    /// Every problem with the section, one line each, for the configuration's own report.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.header_read_timeout.is_zero() {
            problems.push("server.header_read_timeout must be more than 0".to_owned());
        }
        if self.max_connections == 0 {
            problems.push("server.max_connections must be at least 1".to_owned());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_section_gives_the_defaults_and_they_are_valid() {
        let config: ServerConfig = toml::from_str("").unwrap();
        assert_eq!(config, ServerConfig::default());
        assert!(config.problems().is_empty());
    }

    #[test]
    fn bad_values_are_refused() {
        let config: ServerConfig =
            toml::from_str("header_read_timeout = \"0s\"\nmax_connections = 0").unwrap();
        assert_eq!(
            config.problems(),
            [
                "server.header_read_timeout must be more than 0",
                "server.max_connections must be at least 1"
            ]
        );
        let err = toml::from_str::<ServerConfig>("max_conections = 1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections"), "{err}");
    }
}
