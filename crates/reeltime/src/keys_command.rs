//! `reeltime keys create|list|revoke`: the operator's side of server API
//! keys, on the database the server's own settings name.

use anyhow::Context;

use crate::auth::ServerKeys;
use crate::config::KeysCommand;

/// Runs one keys command against `database_url`; what it prints is for
/// people (and `create`'s secret line for scripts: the secret alone on
/// stdout, everything else on stderr).
pub async fn run(database_url: &str, action: KeysCommand) -> anyhow::Result<()> {
    let store = crate::store::open(database_url)
        .await
        .context("opening the database (REELTIME_DATABASE_URL)")?;
    let keys = ServerKeys::new(store);
    match action {
        KeysCommand::Create { name } => {
            let created = keys.create(&name).await?;
            eprintln!(
                "created server API key {:?}; its secret follows and is shown only this once:",
                created.record.name
            );
            println!("{}", created.secret);
        }
        KeysCommand::List => {
            let listed = keys.list().await?;
            if listed.is_empty() {
                eprintln!("no server API keys (reeltime keys create --name NAME)");
            }
            println!(
                "{:<24} {:<20} {:<20} STATUS",
                "NAME", "CREATED", "LAST USED"
            );
            let show = |at: Option<chrono::DateTime<chrono::Utc>>| {
                at.map_or_else(
                    || "never".to_string(),
                    |at| at.format("%Y-%m-%d %H:%M:%S").to_string(),
                )
            };
            for key in listed {
                let status = match key.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M:%S")),
                    None => "active".to_string(),
                };
                println!(
                    "{:<24} {:<20} {:<20} {status}",
                    key.name,
                    show(Some(key.created_at)),
                    show(key.last_used_at)
                );
            }
        }
        KeysCommand::Revoke { name } => {
            keys.revoke(&name).await?;
            eprintln!("revoked server API key {name:?}");
        }
    }
    Ok(())
}
