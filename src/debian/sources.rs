//! The Debian mirrors a build machine's apt already uses: the URIs of its
//! `sources.list` (one-line) and `*.sources` (deb822) entries whose suites
//! are Debian releases. Only the URI is taken: which suites an image uses is
//! the definition's business, never the machine's.

use std::path::Path;

/// Debian's release code names and aliases, with which a source entry is
/// taken as Debian's (an Ubuntu or third-party entry is not).
const DEBIAN_SUITES: &[&str] = &[
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldoldstable",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// Whether `suite` (`bookworm-security`, `trixie-updates`, `stable`) is Debian's.
pub fn is_debian_suite(suite: &str) -> bool {
    let base = suite.split(['-', '/']).next().unwrap_or(suite);
    DEBIAN_SUITES.contains(&base)
}

/// The Debian mirror URIs of the apt sources under `root` (`/` in real use),
/// in the order apt reads them, each once.
pub fn apt_mirrors(root: &Path) -> Vec<String> {
    let mut files = vec![root.join("etc/apt/sources.list")];
    let d = root.join("etc/apt/sources.list.d");
    let mut more: Vec<_> = std::fs::read_dir(&d)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    more.sort();
    files.extend(more);
    let mut out: Vec<String> = Vec::new();
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { continue };
        // a sources file is small; a huge one is not read
        let text = match std::fs::metadata(&f) {
            Ok(m) if m.is_file() && m.len() <= 1 << 20 => {
                std::fs::read_to_string(&f).unwrap_or_default()
            }
            _ => continue,
        };
        let found = if name.ends_with(".sources") {
            deb822(&text)
        } else if name.ends_with(".list") {
            one_line(&text)
        } else {
            continue;
        };
        for u in found {
            let u = u.trim_end_matches('/').to_string();
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

fn usable(uri: &str) -> bool {
    (uri.starts_with("http://") || uri.starts_with("https://") || uri.starts_with("file:/"))
        && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `deb [options] URI suite component...`
fn one_line(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            // options run to the word that ends with `]`
            let end = rest
                .iter()
                .position(|w| w.ends_with(']'))
                .unwrap_or(rest.len());
            rest.drain(..=end.min(rest.len().saturating_sub(1)));
        }
        if let [uri, suite, ..] = rest.as_slice()
            && usable(uri)
            && is_debian_suite(suite)
        {
            out.push(uri.to_string());
        }
    }
    out
}

/// deb822 stanzas: `Types`, `URIs`, `Suites`, `Enabled`.
fn deb822(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = "";
        let mut uris = "";
        let mut suites = "";
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k.trim() {
                "Types" => types = v,
                "URIs" => uris = v,
                "Suites" => suites = v,
                "Enabled" => enabled = !v.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if !enabled
            || !types.split_ascii_whitespace().any(|t| t == "deb")
            || !suites.split_ascii_whitespace().any(is_debian_suite)
        {
            continue;
        }
        out.extend(
            uris.split_ascii_whitespace()
                .filter(|u| usable(u))
                .map(str::to_string),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_formats_and_only_debian_entries() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            root.path().join("etc/apt/sources.list"),
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://mirror.test/debian trixie main\ndeb-src http://src.test/debian trixie main\ndeb http://ubuntu.test/ubuntu noble main\n",
        )
        .unwrap();
        std::fs::write(
            d.join("debian.sources"),
            "Types: deb\nURIs: http://mirror.test/debian/\nSuites: trixie trixie-updates\nComponents: main\n\nTypes: deb\nURIs: http://security.test/debian-security\nSuites: trixie-security\nComponents: main\n\nTypes: deb\nURIs: http://off.test/debian\nSuites: trixie\nEnabled: no\n",
        )
        .unwrap();
        std::fs::write(
            d.join("vendor.sources"),
            "Types: deb\nURIs: https://vendor.test/apt\nSuites: nodistro\nComponents: main\n",
        )
        .unwrap();
        assert_eq!(
            apt_mirrors(root.path()),
            vec![
                "http://mirror.test/debian".to_string(),
                "http://security.test/debian-security".to_string()
            ]
        );
    }

    #[test]
    fn debian_suites() {
        for s in [
            "bookworm",
            "bookworm-security",
            "trixie-updates",
            "stable",
            "sid",
        ] {
            assert!(is_debian_suite(s), "{s}");
        }
        for s in ["noble", "jammy-security", "nodistro", ""] {
            assert!(!is_debian_suite(s), "{s}");
        }
    }
}
