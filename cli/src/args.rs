//! The command line, shaped like kubectl's: global flags usable anywhere, one subcommand per
//! verb.
//!
//! `--node` and `--token` read `SHOAL_NODE` and `SHOAL_TOKEN` in [`crate::config`], not through
//! clap's `env`: `config set-context` reuses the same flags and must store only what was typed,
//! never a value that leaked in from the environment.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;

/// shoal: the command-line client of a shoal cluster.
///
/// Talks to any node's HTTP API. The node, token and namespace come from flags or the
/// environment, else from the current context of the config file, else from defaults
/// (http://127.0.0.1:7070 and the local node's admin token).
#[derive(Debug, Parser)]
#[command(name = "shoal", version = shoal_protocol::VERSION, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// URL of the node's API [env: SHOAL_NODE] [default: the context's, else
    /// http://127.0.0.1:7070]
    #[arg(long, global = true, value_name = "URL")]
    pub node: Option<String>,

    /// Bearer token for the API [env: SHOAL_TOKEN] [default: the context's, else the local
    /// node's admin.token]
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Context of the config file to use instead of its current-context
    #[arg(long, global = true, value_name = "NAME", env = "SHOAL_CONTEXT")]
    pub context: Option<String>,

    /// Namespace [default: the context's, else "default"]
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub namespace: Option<String>,

    /// Config file [default: $XDG_CONFIG_HOME/shoal/config.toml or
    /// ~/.config/shoal/config.toml]
    #[arg(long, global = true, value_name = "FILE", env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Show Secret values (base64 in -o yaml/json, decoded in describe) instead of their sizes
    #[arg(long, global = true)]
    pub show_secrets: bool,

    /// Seconds to wait for an answer from the node
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 30)]
    pub request_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from manifests (all-or-nothing)
    Apply(ApplyArgs),
    /// Create an object from flags: `create secret generic|docker-registry`
    #[command(subcommand)]
    Create(CreateCommand),
    /// List objects, or show named ones
    Get(GetArgs),
    /// Move images between the local Docker engine and the cluster: `image push`
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show objects in detail
    Describe(DescribeArgs),
    /// Delete objects by name, selector or manifest
    Delete(DeleteArgs),
    /// Print the logs of a pod's container
    Logs(LogsArgs),
    /// Run a command in a pod's container
    Exec(ExecArgs),
    /// Set the number of replicas of a deployment or statefulset
    Scale(ScaleArgs),
    /// Manage the rollout of a deployment
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Show the node's view of the cluster: identity, state digest, roles and members
    Status(StatusArgs),
    /// Print the command that joins a new node to this node's cluster
    JoinToken(JoinTokenArgs),
    /// Print the routes a LAN machine needs to reach pods by their addresses (one per node)
    PodRoutes,
    /// Write a backup of the desired state (every object; Secrets stay sealed) to stdout or -o
    Backup(BackupArgs),
    /// Restore the objects of a backup, all or nothing; objects it lacks are left alone
    Restore(RestoreArgs),
    /// Mark a node unschedulable: its pods stay, new ones go elsewhere
    Cordon(NodeArgs),
    /// Mark a node schedulable again
    Uncordon(NodeArgs),
    /// Cordon a node and move its pods elsewhere, within each workload's maxUnavailable
    Drain(DrainArgs),
    /// Print the client's and the node's versions
    Version,
    /// Print a shell completion script
    Completion {
        /// bash, zsh, fish, elvish or powershell
        shell: Shell,
    },
    /// Manage the contexts of the config file
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// Manifest inputs shared by `apply -f` and `delete -f`.
#[derive(Debug, Clone, Default, Args)]
pub struct FileArgs {
    /// Manifest file, directory (its *.yaml, *.yml, *.json) or - for stdin; repeatable
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<String>,

    /// Also read the subdirectories of directories given with -f
    #[arg(short = 'R', long)]
    pub recursive: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FileArgs,
}

/// A flag value that may be secret (a password, a literal): its `Debug` form is hidden, so
/// that printing the parsed command line never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

impl From<String> for Hidden {
    fn from(s: String) -> Hidden {
        Hidden(s)
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Send images from this machine's Docker engine to the node (`docker save`, streamed);
    /// pods on that node can then run them without a registry
    Push(ImagePushArgs),
}

#[derive(Debug, Args)]
pub struct ImagePushArgs {
    /// Images as the local engine names them (`app:v1`); one or more
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Do not show progress
    #[arg(long, short)]
    pub quiet: bool,
    /// Have every other node fetch the images at once (otherwise each fetches them from this
    /// node when a pod there needs them)
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// Create a Secret from literals, files or a Docker registry's credentials
    #[command(subcommand)]
    Secret(CreateSecretCommand),
}

#[derive(Debug, Subcommand)]
pub enum CreateSecretCommand {
    /// A Secret whose keys come from literals and files (type Opaque unless --type)
    Generic(GenericSecretArgs),
    /// A Secret of type kubernetes.io/dockerconfigjson holding a registry's credentials
    DockerRegistry(DockerRegistrySecretArgs),
}

#[derive(Debug, Args)]
pub struct GenericSecretArgs {
    /// Name of the Secret
    pub name: String,

    /// A key and its value; repeatable
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    pub from_literal: Vec<Hidden>,

    /// A file (its key is the file's name unless KEY is given) or a directory (a key per
    /// regular file in it); repeatable, or comma-separated
    #[arg(long = "from-file", value_name = "[KEY=]PATH", value_delimiter = ',')]
    pub from_file: Vec<String>,

    /// The Secret's type [default: Opaque]
    #[arg(long = "type", value_name = "TYPE")]
    pub type_: Option<String>,

    #[command(flatten)]
    pub output: CreateOutputArgs,
}

#[derive(Debug, Args)]
pub struct DockerRegistrySecretArgs {
    /// Name of the Secret
    pub name: String,

    /// The registry, as the key of the config's `auths`
    #[arg(
        long,
        value_name = "SERVER",
        default_value = "https://index.docker.io/v1/"
    )]
    pub docker_server: String,

    /// User name for the registry
    #[arg(long, value_name = "USER")]
    pub docker_username: Option<String>,

    /// Password for the registry
    #[arg(long, value_name = "PASSWORD")]
    pub docker_password: Option<Hidden>,

    /// Email for the registry (left out of the config when not given)
    #[arg(long, value_name = "EMAIL")]
    pub docker_email: Option<String>,

    /// An existing docker config.json instead of the --docker-* flags (which are then
    /// ignored, as by kubectl); its key is .dockerconfigjson unless KEY is given
    #[arg(long = "from-file", value_name = "[KEY=]PATH", value_delimiter = ',')]
    pub from_file: Vec<String>,

    #[command(flatten)]
    pub output: CreateOutputArgs,
}

/// Whether `create` sends the object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Create the object
    #[default]
    None,
    /// Only print the object that would be sent
    Client,
}

/// Output formats of `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CreateFormat {
    /// The object as YAML
    Yaml,
    /// The object as JSON
    Json,
    /// kind/name
    Name,
}

/// Flags shared by the `create` commands.
#[derive(Debug, Clone, Default, Args)]
pub struct CreateOutputArgs {
    /// `client`: print the object instead of sending it (`--dry-run` alone means client)
    #[arg(long, value_name = "STRATEGY", default_value = "none", num_args = 0..=1,
          require_equals = true, default_missing_value = "client")]
    pub dry_run: DryRun,

    /// Print the object as YAML or JSON (Secret values in base64), or its kind/name
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<CreateFormat>,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The table with more columns
    Wide,
    /// The objects as YAML
    Yaml,
    /// The objects as JSON
    Json,
    /// kind/name, one a line
    Name,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: deployments, deploy, pods, po, services, svc, configmaps, cm, secrets,
    /// namespaces, ns, nodes, node, no, statefulsets, sts, persistentvolumeclaims, pvc,
    /// events, ev, images (the images each node holds)
    pub kind: String,

    /// Names of the objects; all of them when none
    pub names: Vec<String>,

    /// Output format
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,

    /// Label selector: app=web, tier!=db, env in (a,b), !legacy
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// List objects of every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// After the list, keep printing new events until interrupted (events only)
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// Output formats of commands that print one answer of the node (`status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RawFormat {
    /// The answer as YAML
    Yaml,
    /// The answer as JSON
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the node's answer as YAML or JSON instead of the summary
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<RawFormat>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's name (see `shoal get nodes`)
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node's name (see `shoal get nodes`)
    pub name: String,
    /// Move every pod at once, ignoring maxUnavailable
    #[arg(long)]
    pub force: bool,
    /// Give up waiting after this many seconds (the drain goes on in the cluster)
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Write the backup to FILE (mode 0600, replaced atomically) instead of stdout
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The file that `shoal backup` wrote, or - for stdin
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Print only the token, not the whole shoald command
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Kind, as for get
    pub kind: String,

    /// Names of the objects; all of the namespace (or selector) when none
    pub names: Vec<String>,

    /// Label selector
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,

    /// Describe objects of every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind, as for get (not with -f)
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub kind: Option<String>,

    /// Names of the objects to delete
    pub names: Vec<String>,

    #[command(flatten)]
    pub files: FileArgs,

    /// Delete the objects that match this label selector
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "files")]
    pub selector: Option<String>,

    /// Treat objects that do not exist as deleted: no error, exit code 0
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Name of the pod
    pub pod: String,

    /// Container name; may be left out when the pod has one container
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,

    /// Keep streaming new output
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Only the last N lines (-1: all)
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,

    /// Only output newer than this duration: 30s, 5m, 1h30m
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,

    /// Prefix each line with its RFC 3339 timestamp
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Name of the pod
    pub pod: String,

    /// Container name; may be left out when the pod has one container
    #[arg(short = 'c', long, value_name = "NAME")]
    pub container: Option<String>,

    /// Pass standard input to the command
    #[arg(short = 'i', long)]
    pub stdin: bool,

    /// Allocate a terminal for the command
    #[arg(short = 't', long)]
    pub tty: bool,

    /// The command and its arguments, after --
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// deploy/NAME, sts/NAME, or the kind and the name as two words
    #[arg(required = true, num_args = 1..=2, value_name = "KIND/NAME")]
    pub target: Vec<String>,

    /// The new number of replicas
    #[arg(long, value_name = "N")]
    pub replicas: u32,
}

/// A deployment named on the command line: deploy/NAME or deploy NAME.
#[derive(Debug, Args)]
pub struct RolloutTarget {
    /// deploy/NAME, or the kind and the name as two words
    #[arg(required = true, num_args = 1..=2, value_name = "deploy/NAME")]
    pub target: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Watch a rollout until it is done, exiting non-zero when it fails
    Status {
        #[command(flatten)]
        target: RolloutTarget,
        /// Give up after this long: 30s, 5m (0: wait forever)
        #[arg(long, value_name = "DURATION", default_value = "0")]
        timeout: String,
        /// Print the state once and exit instead of waiting
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set,
              value_name = "BOOL")]
        watch: bool,
    },
    /// List the revisions of a deployment
    History {
        #[command(flatten)]
        target: RolloutTarget,
    },
    /// Go back to the previous revision, or to --to-revision
    Undo {
        #[command(flatten)]
        target: RolloutTarget,
        /// The revision to go back to (0: the previous one)
        #[arg(long, value_name = "N", default_value_t = 0)]
        to_revision: i64,
    },
    /// Replace every pod of a deployment, one rollout step at a time
    Restart {
        #[command(flatten)]
        target: RolloutTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create or update a context (only the given fields change)
    SetContext {
        /// Name of the context
        name: String,
        /// Read the token from this file at each use instead of storing it (uses --node,
        /// --token and -n/--namespace for the other fields)
        #[arg(long, value_name = "FILE", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// Also make it the current context
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Make a context the current one
    UseContext {
        /// Name of the context
        name: String,
    },
    /// List the contexts
    GetContexts,
    /// Print the name of the current context
    CurrentContext,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).unwrap()
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn get_with_output_wide() {
        let cli = parse(&["shoal", "get", "deploy", "-o", "wide"]);
        match cli.command {
            Command::Get(g) => {
                assert_eq!(g.kind, "deploy");
                assert!(g.names.is_empty());
                assert_eq!(g.output, Some(OutputFormat::Wide));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn apply_takes_several_files() {
        let cli = parse(&["shoal", "apply", "-f", "x", "-f", "y"]);
        match cli.command {
            Command::Apply(a) => assert_eq!(a.files.files, vec!["x", "y"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse(&[
            "shoal",
            "get",
            "pods",
            "web",
            "-n",
            "prod",
            "--node",
            "http://h:1",
            "-A",
            "-l",
            "app=web",
        ]);
        assert_eq!(cli.global.namespace.as_deref(), Some("prod"));
        assert_eq!(cli.global.node.as_deref(), Some("http://h:1"));
        match cli.command {
            Command::Get(g) => {
                assert_eq!(g.names, vec!["web"]);
                assert!(g.all_namespaces);
                assert_eq!(g.selector.as_deref(), Some("app=web"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delete_needs_a_kind_or_files_but_not_both() {
        assert!(Cli::try_parse_from(["shoal", "delete"]).is_err());
        assert!(Cli::try_parse_from(["shoal", "delete", "deploy", "web", "-f", "x"]).is_err());
        let cli = parse(&["shoal", "delete", "-f", "x.yaml", "--ignore-not-found"]);
        match cli.command {
            Command::Delete(d) => {
                assert!(d.kind.is_none());
                assert_eq!(d.files.files, vec!["x.yaml"]);
                assert!(d.ignore_not_found);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_context_token_and_token_file_conflict() {
        assert!(
            Cli::try_parse_from([
                "shoal",
                "config",
                "set-context",
                "home",
                "--token",
                "t",
                "--token-file",
                "f"
            ])
            .is_err()
        );
        let cli = parse(&[
            "shoal",
            "config",
            "set-context",
            "home",
            "--node",
            "http://h:7070",
            "--token-file",
            "/t",
            "--use",
        ]);
        assert_eq!(cli.global.node.as_deref(), Some("http://h:7070"));
        match cli.command {
            Command::Config(ConfigCommand::SetContext {
                name,
                token_file,
                use_it,
            }) => {
                assert_eq!(name, "home");
                assert_eq!(token_file, Some(PathBuf::from("/t")));
                assert!(use_it);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_and_join_token_parse() {
        match parse(&["shoal", "status", "-o", "yaml"]).command {
            Command::Status(a) => assert_eq!(a.output, Some(RawFormat::Yaml)),
            other => panic!("{other:?}"),
        }
        match parse(&["shoal", "join-token", "-q"]).command {
            Command::JoinToken(a) => assert!(a.quiet),
            other => panic!("{other:?}"),
        }
        // A table makes no sense for one answer.
        assert!(Cli::try_parse_from(["shoal", "status", "-o", "wide"]).is_err());
    }

    #[test]
    fn completion_knows_every_command() {
        let mut out = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "shoal", &mut out);
        let script = String::from_utf8(out).unwrap();
        for word in ["status", "join-token", "--quiet"] {
            assert!(
                script.contains(word),
                "{word} missing from the bash completion"
            );
        }
    }

    #[test]
    fn backup_and_restore_parse() {
        match parse(&["shoal", "backup"]).command {
            Command::Backup(a) => assert_eq!(a.output, None),
            other => panic!("{other:?}"),
        }
        match parse(&["shoal", "backup", "-o", "b.json"]).command {
            Command::Backup(a) => assert_eq!(a.output, Some(PathBuf::from("b.json"))),
            other => panic!("{other:?}"),
        }
        match parse(&["shoal", "restore", "b.json"]).command {
            Command::Restore(a) => assert_eq!(a.file, "b.json"),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["shoal", "restore"]).is_err());
    }

    #[test]
    fn create_secret_parses_like_kubectl() {
        let cli = parse(&[
            "shoal",
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "--docker-username=u",
            "--docker-password=hunter2",
            "--dry-run=client",
            "-o",
            "yaml",
            "-n",
            "ci",
        ]);
        assert_eq!(cli.global.namespace.as_deref(), Some("ci"));
        let printed = format!("{:?}", cli.command);
        assert!(!printed.contains("hunter2"), "{printed}");
        match cli.command {
            Command::Create(CreateCommand::Secret(CreateSecretCommand::DockerRegistry(a))) => {
                assert_eq!(a.name, "regcred");
                assert_eq!(a.docker_server, "https://index.docker.io/v1/");
                assert_eq!(a.docker_username.as_deref(), Some("u"));
                assert_eq!(a.docker_password, Some(Hidden("hunter2".into())));
                assert_eq!(a.docker_email, None);
                assert_eq!(a.output.dry_run, DryRun::Client);
                assert_eq!(a.output.output, Some(CreateFormat::Yaml));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "shoal",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=a=b",
            "--from-literal",
            "c=d,e",
            "--from-file=x,k=y",
            "--type=kubernetes.io/basic-auth",
            "--dry-run",
        ]);
        match cli.command {
            Command::Create(CreateCommand::Secret(CreateSecretCommand::Generic(a))) => {
                assert_eq!(a.name, "s");
                // Literals are not split at commas, files are (kubectl's StringArray and
                // StringSlice).
                assert_eq!(
                    a.from_literal,
                    vec![Hidden("a=b".into()), Hidden("c=d,e".into())]
                );
                assert_eq!(a.from_file, vec!["x", "k=y"]);
                assert_eq!(a.type_.as_deref(), Some("kubernetes.io/basic-auth"));
                assert_eq!(a.output.dry_run, DryRun::Client);
                assert_eq!(a.output.output, None);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["shoal", "create", "secret", "generic", "s"]).command {
            Command::Create(CreateCommand::Secret(CreateSecretCommand::Generic(a))) => {
                assert_eq!(a.output.dry_run, DryRun::None);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &["shoal", "create", "secret", "generic"][..],
            &[
                "shoal",
                "create",
                "secret",
                "generic",
                "s",
                "--dry-run=server",
            ],
            &["shoal", "create", "secret", "generic", "s", "-o", "wide"],
            &["shoal", "create", "secret", "tls", "s"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_output_format_is_a_usage_error() {
        assert!(Cli::try_parse_from(["shoal", "get", "pods", "-o", "xml"]).is_err());
    }
}
