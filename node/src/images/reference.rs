//! Image references as Docker reads them: `[registry/]repository[:tag][@digest]`.
//!
//! Pure: the node needs the registry of an image (to pick credentials and to check that it
//! may pull from there) and its repository and tag or digest (to ask the engine to pull
//! exactly that). Docker's normalisation applies: a first component that has no `.` or `:` and
//! is not `localhost` is part of the repository on Docker Hub, and a Hub repository without a
//! `/` is under `library/`.

use std::fmt;

/// Docker Hub, as image names spell it after normalisation.
pub const DOCKER_HUB: &str = "docker.io";

/// One parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, lower-cased; [`DOCKER_HUB`] when the name has none.
    pub registry: String,
    /// The repository within the registry, e.g. `library/nginx` or `team/echo`.
    pub repository: String,
    /// `None` when the reference names a digest only; `latest` when it names neither.
    pub tag: Option<String>,
    /// `sha256:...` when the reference pins one.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {image:?}: {why}")]
pub struct BadReference {
    pub image: String,
    pub why: &'static str,
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<ImageRef, BadReference> {
        let bad = |why| BadReference {
            image: image.to_string(),
            why,
        };
        if image.is_empty() {
            return Err(bad("it is empty"));
        }
        if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace"));
        }
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => {
                if !d.contains(':') || d.ends_with(':') {
                    return Err(bad("the digest must read algorithm:hex"));
                }
                (n, Some(d.to_string()))
            }
            None => (image, None),
        };
        // A tag is after the last `:` that follows the last `/` (a `:` before it is a port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                let tag = &name[at + 1..];
                if tag.is_empty() {
                    return Err(bad("the tag after ':' is empty"));
                }
                (&name[..at], Some(tag.to_string()))
            }
            None => (name, None),
        };
        if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(bad(
                "the repository name is empty or has an empty component",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names must be lower case"));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The name the engine pulls: registry and repository, without tag or digest.
    pub fn name(&self) -> String {
        if self.registry == DOCKER_HUB {
            let short = self
                .repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository);
            return short.to_string();
        }
        format!("{}/{}", self.registry, self.repository)
    }

    /// What the engine pulls beside [`ImageRef::name`]: the digest when pinned, else the tag.
    pub fn tag_or_digest(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_docker_reads_them() {
        let cases: &[(&str, &str, &str, Option<&str>, Option<&str>)] = &[
            ("nginx", "docker.io", "library/nginx", Some("latest"), None),
            (
                "nginx:1.27",
                "docker.io",
                "library/nginx",
                Some("1.27"),
                None,
            ),
            (
                "bitnami/redis:7",
                "docker.io",
                "bitnami/redis",
                Some("7"),
                None,
            ),
            (
                "127.0.0.1:5000/team/echo:v1",
                "127.0.0.1:5000",
                "team/echo",
                Some("v1"),
                None,
            ),
            (
                "registry.lan/echo",
                "registry.lan",
                "echo",
                Some("latest"),
                None,
            ),
            ("localhost/x:2", "localhost", "x", Some("2"), None),
            (
                "ghcr.io/org/app@sha256:abcd",
                "ghcr.io",
                "org/app",
                None,
                Some("sha256:abcd"),
            ),
            (
                "reg:5000/app:1@sha256:ef",
                "reg:5000",
                "app",
                Some("1"),
                Some("sha256:ef"),
            ),
            (
                "Registry.LAN/app",
                "registry.lan",
                "app",
                Some("latest"),
                None,
            ),
        ];
        for (input, registry, repo, tag, digest) in cases {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.registry, *registry, "{input}");
            assert_eq!(r.repository, *repo, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(r.digest.as_deref(), *digest, "{input}");
        }
    }

    #[test]
    fn names_and_tags_for_the_engine() {
        let cases = [
            ("nginx", "nginx", "latest"),
            ("library/nginx:1", "nginx", "1"),
            ("reg:5000/a/b:v1", "reg:5000/a/b", "v1"),
            ("reg:5000/a@sha256:00", "reg:5000/a", "sha256:00"),
        ];
        for (input, name, tag) in cases {
            let r = ImageRef::parse(input).unwrap();
            assert_eq!(r.name(), name, "{input}");
            assert_eq!(r.tag_or_digest(), tag, "{input}");
        }
    }

    #[test]
    fn bad_references_say_why() {
        for input in [
            "",
            "a b",
            "x:",
            "/x",
            "x//y",
            "Upper/Case",
            "x@sha256",
            "reg/x/",
        ] {
            let e = ImageRef::parse(input).unwrap_err();
            assert_eq!(e.image, input);
        }
    }
}
