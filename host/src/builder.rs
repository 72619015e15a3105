//! [`Silo::builder`]: one way to open a `Silo` from a configuration file,
//! TOML text, a loaded [`Config`] or the built-in default, and to start it
//! serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::ObjectStore;
use crate::{Background, Config, Silo, SiloError, Stores};

/// Where the configuration comes from.
enum Source {
    File(PathBuf),
    Toml { text: String, base: PathBuf },
    Config(Box<Config>),
    Builtin(PathBuf),
}

/// Opens a [`Silo`]; see [`Silo::builder`].
#[must_use = "a builder opens nothing until `open` or `serve`"]
pub struct SiloBuilder {
    source: Source,
    plugins: bool,
    stores: Stores,
}

impl Silo {
    /// A builder on the built-in default configuration under `base`
    /// (local volumes `public` and `private` in `base/silo-data`, SQLite,
    /// the bundled plugins), unless told another:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), silo_host::SiloError> {
    /// let (silo, _background) = silo_host::Silo::builder("/srv/cms".as_ref())
    ///     .config_file("/etc/silo/silo.toml")
    ///     .serve()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(base: &Path) -> SiloBuilder {
        SiloBuilder {
            source: Source::Builtin(base.to_owned()),
            plugins: true,
            stores: Stores::new(),
        }
    }
}

impl SiloBuilder {
    /// Read the configuration from this TOML file; its relative paths are
    /// taken from the file's directory.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Source::File(path.into());
        self
    }

    /// Take the configuration from TOML text; relative paths are taken
    /// from `base`.
    pub fn config_toml(mut self, text: impl Into<String>, base: impl Into<PathBuf>) -> Self {
        self.source = Source::Toml {
            text: text.into(),
            base: base.into(),
        };
        self
    }

    /// Take a configuration already loaded (and validated by
    /// [`Config::load`] or [`Config::parse`]).
    pub fn config(mut self, config: Config) -> Self {
        self.source = Source::Config(Box::new(config));
        self
    }

    /// Run no plugin: uploads are judged by the content policy alone.
    pub fn without_plugins(mut self) -> Self {
        self.plugins = false;
        self
    }

    /// Keep `volume`'s objects in `store`, a backend of the embedder's own,
    /// instead of the one the configuration declares for it. The volume
    /// must be declared; its other settings (visibility, cache, quotas,
    /// images) still come from the configuration. Opening fails if no
    /// configured volume has this name.
    pub fn store(mut self, volume: impl Into<String>, store: Arc<dyn ObjectStore>) -> Self {
        self.stores.insert(volume.into(), store);
        self
    }

    /// The configuration this builder stands for, validated.
    pub fn build_config(self) -> Result<Config, SiloError> {
        let mut config = match self.source {
            Source::File(path) => Config::load(&path)?,
            Source::Toml { text, base } => Config::parse(&text, &base, None)?,
            Source::Config(config) => *config,
            Source::Builtin(base) => Config::builtin_default(&base),
        };
        if !self.plugins {
            config.plugins.clear();
        }
        Ok(config)
    }

    /// Open the volumes and the metadata cache, start the runtime and load
    /// the plugins ([`Silo::open`]).
    pub async fn open(mut self) -> Result<Silo, SiloError> {
        let stores = std::mem::take(&mut self.stores);
        Silo::open_with(self.build_config()?, &stores).await
    }

    /// Open it and start its background work ([`Silo::start_background`]),
    /// as a node that serves clients does; the work stops when the handle
    /// is dropped.
    pub async fn serve(self) -> Result<(Arc<Silo>, Background), SiloError> {
        let silo = Arc::new(self.open().await?);
        let background = silo.start_background().await?;
        Ok((silo, background))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::ReadRequest;
    use crate::{Caller, Outcome, PutRequest};

    #[tokio::test]
    async fn a_builder_opens_a_silo_that_stores_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let (silo, _background) = Silo::builder(dir.path()).without_plugins().serve().await.unwrap();
        assert!(silo.stages().is_empty());
        let body = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"built"))]);
        let report = silo
            .put(&Caller::Host("test"), "public", "a.txt", body, PutRequest::default())
            .await
            .unwrap();
        assert_eq!(report.outcome(), Outcome::Stored, "{report:?}");
        let served = silo
            .read(&Caller::Anonymous, "public", "a.txt", &ReadRequest::default())
            .await
            .unwrap();
        assert_eq!(served.headers.content_length, Some(5));
        assert!(dir.path().join("silo-data/public/a.txt").is_file());
        // A bad configuration is an error naming it, not a default.
        let bad = Silo::builder(dir.path())
            .config_toml("volumes = 3", dir.path())
            .open()
            .await;
        assert!(matches!(bad, Err(SiloError::Config(_))), "{:?}", bad.err());
    }
}
