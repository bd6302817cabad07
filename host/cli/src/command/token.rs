//! `wulf token create|list|revoke` and `wulf dashboard`: admin access to the API.

use std::collections::BTreeSet;

use anyhow::Context as _;
use wulf_site::{Scope, TokenInfo, parse_lifetime, scope_list};

use crate::command::image::timestamp;
use crate::context::Context;
use crate::table;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token for the API; it is printed once (only its hash is kept)
    Create {
        /// Who or what uses it; audit lines name it
        #[arg(long, default_value = "admin")]
        name: String,
        /// What it may do: read, write, power, admin (all), comma-separated
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "read",
            value_name = "SCOPES"
        )]
        scope: Vec<String>,
        /// How long it lives: 90m, 12h, 30d, 8w [default: never expires]
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never their secrets)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: refused from the next request on
    Revoke { id: String },
}

#[derive(Debug, clap::Args)]
pub(crate) struct DashboardArgs {
    /// How long the link's read-only token lives: 90m, 12h, 30d
    #[arg(long, default_value = "12h", value_name = "DURATION")]
    expires: String,
}

/// The local user, as audit lines name whoever runs a command here.
fn local_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    match std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")) {
        Ok(name) if !name.is_empty() => format!("local user {name} (uid {uid})"),
        _ => format!("local user uid {uid}"),
    }
}

fn lifetime(text: &str) -> anyhow::Result<std::time::Duration> {
    parse_lifetime(text).with_context(|| {
        format!("--expires {text:?}: expected a duration such as 90m, 12h, 30d or 8w")
    })
}

fn token_json(info: &TokenInfo) -> serde_json::Value {
    serde_json::to_value(info).unwrap_or_default()
}

pub(crate) fn run(ctx: &Context, command: TokenCommand) -> anyhow::Result<()> {
    let site = &ctx.site;
    match command {
        TokenCommand::Create {
            name,
            scope,
            expires,
            json,
        } => {
            let scopes = scope
                .iter()
                .map(|s| Scope::parse(s.trim()))
                .collect::<Result<BTreeSet<_>, _>>()?;
            let lifetime = expires.as_deref().map(lifetime).transpose()?;
            let (token, info) = site.create_token(&name, scopes, lifetime, &local_user())?;
            print_created(&token, &info, json);
        }
        TokenCommand::List { json } => print_tokens(&site.list_tokens()?, json),
        TokenCommand::Revoke { id } => {
            let revoked = site.revoke_token(&id, &local_user())?;
            println!("revoked token {} ({})", revoked.id, revoked.name);
        }
    }
    Ok(())
}

/// A new token: printed once, with what it may do on stderr.
fn print_created(token: &str, info: &TokenInfo, json: bool) {
    if json {
        let mut value = token_json(info);
        value["token"] = serde_json::Value::String(token.to_owned());
        table::print_json(&value);
        return;
    }
    println!("{token}");
    eprintln!(
        "token {} ({}) with scopes {}, {}: keep it safe, it is not shown again",
        info.id,
        info.name,
        scope_list(&info.scopes),
        info.expires
            .map_or("never expires".to_owned(), |at| format!(
                "expires {}",
                timestamp(at)
            ))
    );
}

/// Tokens as `token list` shows them.
fn print_tokens(tokens: &[TokenInfo], json: bool) {
    if json {
        table::print_json(&tokens.iter().map(token_json).collect());
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                scope_list(&t.scopes),
                timestamp(t.created),
                match t.expires {
                    None => "never".to_owned(),
                    Some(at) if at <= now => format!("expired {}", timestamp(at)),
                    Some(at) => timestamp(at),
                },
            ]
        })
        .collect();
    table::print(&["id", "name", "scopes", "created", "expires"], rows);
}

/// Makes a read-only token and prints the link that opens the dashboard with it.
pub(crate) fn dashboard(ctx: &Context, args: DashboardArgs) -> anyhow::Result<()> {
    let lifetime = lifetime(&args.expires)?;
    let (token, info) = ctx.site.create_token(
        "dashboard",
        BTreeSet::from([Scope::Read]),
        Some(lifetime),
        &local_user(),
    )?;
    println!("{}", ctx.site.dashboard_link(&token));
    eprintln!(
        "a read-only link, valid until {} (token {}; `wulf token revoke {}` ends it sooner)",
        info.expires.map(timestamp).unwrap_or_default(),
        info.id,
        info.id
    );
    Ok(())
}

/// `token create|list|revoke` against a remote server (an admin token).
pub(crate) fn run_remote(
    remote: &crate::remote::Remote,
    command: TokenCommand,
) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        TokenCommand::Create {
            name,
            scope,
            expires,
            json,
        } => {
            let made: serde_json::Value = remote.send(
                Method::POST,
                "/tokens",
                Some(&serde_json::json!({"name": name, "scopes": scope, "expires": expires})),
            )?;
            let info: TokenInfo = serde_json::from_value(made["info"].clone())?;
            print_created(made["token"].as_str().unwrap_or_default(), &info, json);
        }
        TokenCommand::List { json } => {
            let answer: serde_json::Value = remote.get("/tokens")?;
            let tokens: Vec<TokenInfo> = serde_json::from_value(answer["tokens"].clone())?;
            print_tokens(&tokens, json);
        }
        TokenCommand::Revoke { id } => {
            remote.send::<serde_json::Value>(
                Method::DELETE,
                &format!("/tokens/{id}"),
                None::<&()>,
            )?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

/// A dashboard link for a remote server: a read-only token made there (an admin token).
pub(crate) fn dashboard_remote(
    remote: &crate::remote::Remote,
    args: DashboardArgs,
) -> anyhow::Result<()> {
    lifetime(&args.expires)?;
    let made: serde_json::Value = remote.send(
        reqwest::Method::POST,
        "/tokens",
        Some(
            &serde_json::json!({"name": "dashboard", "scopes": ["read"], "expires": args.expires}),
        ),
    )?;
    println!(
        "{}/#token={}",
        remote.base(),
        made["token"].as_str().unwrap_or_default()
    );
    Ok(())
}
