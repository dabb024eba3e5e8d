//! `evident-collector user …`: reviewers' accounts and their API tokens.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{DataDirArg, open_store};
use crate::accounts::{self, Role};
use crate::model::{format_unix_ms, now_unix_ms};
use crate::store::AuditEntry;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an account. The password is read from --password-file, else from the first line of
    /// standard input (so it never appears in the process list or shell history).
    Add {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "NAME")]
        name: String,
        /// viewer (reads everything), reviewer (also moves corrective actions), admin (also
        /// creates enrolment tokens).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
    },
    /// List accounts.
    List(DataDirArg),
    /// Disable an account: its sessions and API tokens end at once.
    Disable {
        #[command(flatten)]
        data_dir: DataDirArg,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Create an API token for scripts; it acts as the user, with the user's role. Printed once.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[arg(value_name = "NAME")]
    name: String,
    /// What the token is for, e.g. "nightly export".
    #[arg(long, default_value = "api")]
    label: String,
    /// Days until it expires.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=730))]
    days: u32,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text)
        .ok_or_else(|| format!("{text:?} is not a role: use viewer, reviewer or admin"))
}

fn audit(
    store: &crate::store::Store,
    action: &str,
    target: &str,
    detail: &str,
) -> anyhow::Result<()> {
    store.append_audit(&AuditEntry {
        at_ms: now_unix_ms(),
        actor: "cli",
        role: None,
        channel: "cli",
        action,
        target,
        ok: true,
        detail,
        remote_addr: None,
    })?;
    Ok(())
}

pub fn user_command(command: UserCommand) -> anyhow::Result<u8> {
    match command {
        UserCommand::Add {
            data_dir,
            name,
            role,
            password_file,
        } => {
            let password = match password_file {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("read the password file {}", path.display()))?,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("read the password from standard input")?;
                    line
                }
            };
            let password = password.trim_end_matches(['\r', '\n']);
            let store = open_store(&data_dir.data_dir)?;
            accounts::add_user(&store, &name, role, password, now_unix_ms())?;
            audit(
                &store,
                "user.add",
                &name,
                &format!("role {}", role.as_str()),
            )?;
            println!("added {name} ({})", role.as_str());
            Ok(0)
        }
        UserCommand::List(data_dir) => {
            let store = open_store(&data_dir.data_dir)?;
            for user in store.users()? {
                let state = user.disabled_at_ms.map_or_else(
                    || "enabled".to_owned(),
                    |ms| format!("disabled {}", format_unix_ms(ms)),
                );
                println!("{}\t{}\t{}", user.name, user.role, state);
            }
            Ok(0)
        }
        UserCommand::Disable { data_dir, name } => {
            let store = open_store(&data_dir.data_dir)?;
            if !store.disable_user(&name, now_unix_ms())? {
                anyhow::bail!("no user {name:?}: `evident-collector user list` shows them");
            }
            audit(
                &store,
                "user.disable",
                &name,
                "disabled; sessions and tokens ended",
            )?;
            println!("disabled {name}");
            Ok(0)
        }
        UserCommand::Token(args) => {
            let store = open_store(&args.data_dir.data_dir)?;
            let now = now_unix_ms();
            let expires = now + i64::from(args.days) * 86_400_000;
            let token = accounts::create_api_token(&store, &args.name, &args.label, now, expires)?;
            audit(
                &store,
                "api-token.create",
                &args.name,
                &format!("{:?}, valid until {}", args.label, format_unix_ms(expires)),
            )?;
            println!("{token}");
            eprintln!(
                "API token for {} valid until {}; it is not shown again",
                args.name,
                format_unix_ms(expires)
            );
            Ok(0)
        }
    }
}
