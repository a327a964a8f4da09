//! Asking a running mcsd (`mcsd run`, `mcsd sandbox`, `tests/kube/up.sh`) for an explanation.

use std::{fmt::Write as _, net::SocketAddr};

use crate::core::why::Explanation;

/// Asks the mcsd whose admin listener is at `admin` to explain `name`.
pub async fn fetch(admin: SocketAddr, name: &str) -> anyhow::Result<Explanation> {
    use anyhow::Context as _;
    let path = format!("/why?name={}", percent_encode(name));
    let reply =
        crate::commands::admin_client::get(admin, &path, crate::commands::admin_client::TIMEOUT).await?;
    anyhow::ensure!(
        reply.status == 200,
        "mcsd at {admin} answered {}: {} (is it an mcsd run or mcsd sandbox admin listener?)",
        reply.status,
        reply.body.trim()
    );
    serde_json::from_str(&reply.body)
        .with_context(|| format!("mcsd at {admin} sent an unreadable explanation"))
}

/// `%`-encodes everything but unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The admin listener of `cluster`'s mcsd, from `DIR/sandbox.json` (as `mcsd sandbox` and
/// `tests/kube/up.sh` write it).
pub fn admin_of(dir: &std::path::Path, cluster: &str) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;
    let path = dir.join(crate::core::sandbox_file::FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (is `mcsd sandbox --dir {}` or `tests/kube/up.sh --dir {}` running?)",
            path.display(),
            dir.display(),
            dir.display()
        )
    })?;
    let members =
        crate::core::sandbox_file::parse(&text).with_context(|| format!("reading {}", path.display()))?;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let member = members.iter().find(|m| m.name == cluster).with_context(|| {
        format!(
            "no cluster {cluster} in {} (it has {})",
            path.display(),
            names.join(", ")
        )
    })?;
    Ok(member.admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_percent_encoding() {
        assert_eq!(
            percent_encode("hello.demo.svc.clusterset.local."),
            "hello.demo.svc.clusterset.local."
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }
}
