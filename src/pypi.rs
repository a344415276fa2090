//! A locked PyPI file, fetched by ferry itself from the package index pip
//! is configured with: the project's page of the simple API (PEP 691 JSON,
//! or the PEP 503 HTML page) gives the file's URL, the file streams into
//! the cache and is checked against the locked size and sha256 before
//! anything reads it. No pip, setuptools or Python runs at build time, so
//! the build machine's Python version, pip version or PEP 668 marking
//! cannot change or break what is fetched, and a locked sdist's own code
//! never runs. Which index is pip's choice, asked of pip once
//! (`PIP_INDEX_URL`, then `pip config`, then pip's own default), so no
//! index's host name is written here.

use std::io::Read;
use std::sync::OnceLock;

use crate::cache::fetch;
use crate::cache::{Cache, FetchError, Progress};
use crate::image::lock::Artifact;

/// The most a project page may hold (numpy's JSON page is a few MB).
const MAX_PAGE: u64 = 64 << 20;

/// The index URL pip uses for downloads, asked once.
fn index_url() -> Result<String, FetchError> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(u) = std::env::var("PIP_INDEX_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
        {
            return Ok(u.trim().to_string());
        }
        let out = std::process::Command::new("python3")
            .args(["-m", "pip", "config", "list"])
            .output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            for key in ["download.index-url", "global.index-url"] {
                if let Some(v) = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}=")))
                {
                    return Ok(v.trim().trim_matches(['\'', '"']).to_string());
                }
            }
        }
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "from pip._internal.models.index import PyPI; print(PyPI.simple_url)",
            ])
            .output()
            .map_err(|e| format!("cannot ask pip for its index: {e}"))?;
        let u = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || u.is_empty() {
            return Err(
                "cannot ask pip for its index (is pip installed?): set PIP_INDEX_URL".into(),
            );
        }
        Ok(u)
    })
    .clone()
    .map_err(|reason| FetchError::Tool {
        tool: "pip".into(),
        what: "the package index".into(),
        reason,
    })
}

/// PEP 503 name normalisation: lower case, runs of `-_.` as one `-`.
fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// One file a project page lists.
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    url: String,
    sha256: Option<String>,
}

/// Finds `file` on a project page (JSON or HTML).
fn find(page: &str, json: bool, file: &str) -> Option<Listed> {
    if json {
        let v: serde_json::Value = serde_json::from_str(page).ok()?;
        let f = v
            .get("files")?
            .as_array()?
            .iter()
            .find(|f| f.get("filename").and_then(|n| n.as_str()) == Some(file))?;
        return Some(Listed {
            url: f.get("url")?.as_str()?.to_string(),
            sha256: f
                .get("hashes")
                .and_then(|h| h.get("sha256"))
                .and_then(|h| h.as_str())
                .map(str::to_ascii_lowercase),
        });
    }
    // <a href="URL#sha256=HEX" ...>FILE</a>
    for anchor in page.split("<a ").skip(1) {
        let Some((attrs, rest)) = anchor.split_once('>') else {
            continue;
        };
        let text = rest.split("</a>").next().unwrap_or("").trim();
        if text != file {
            continue;
        }
        let href = attrs.split_once("href=\"")?.1.split('"').next()?;
        let href = href.replace("&amp;", "&");
        let (url, frag) = href.split_once('#').unwrap_or((&href, ""));
        return Some(Listed {
            url: url.to_string(),
            sha256: frag.strip_prefix("sha256=").map(str::to_ascii_lowercase),
        });
    }
    None
}

/// Fetches the locked file `a` from pip's index into the cache; `Ok(None)`
/// when the index does not list it (pip then gets its chance, through
/// find-links say).
pub fn fetch(
    a: &Artifact,
    cache: &Cache,
    progress: Progress,
) -> Result<Option<std::path::PathBuf>, FetchError> {
    let index = index_url()?;
    if !(index.starts_with("https://") || index.starts_with("http://")) {
        // a local index (file://) is pip's to read
        return Ok(None);
    }
    let page_url = format!("{}/{}/", index.trim_end_matches('/'), normalize(&a.name));
    let Some((r, json)) = fetch::open_page(
        &page_url,
        "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
    )?
    else {
        return Ok(None);
    };
    let mut page = String::new();
    r.take(MAX_PAGE + 1)
        .read_to_string(&mut page)
        .map_err(|e| FetchError::Http {
            url: page_url.clone(),
            reason: e.to_string(),
        })?;
    if page.len() as u64 > MAX_PAGE {
        return Err(FetchError::Http {
            url: page_url,
            reason: format!("a project page of more than {MAX_PAGE} bytes"),
        });
    }
    let Some(listed) = find(&page, json, &a.file) else {
        return Ok(None);
    };
    if let Some(h) = &listed.sha256
        && *h != a.sha256
    {
        return Err(FetchError::Mismatch {
            file: format!("{page_url} ({})", a.file),
            name: a.name.clone(),
            expected: a.sha256.clone(),
            found: h.clone(),
        });
    }
    let url = fetch::join_url(&page_url, &listed.url)?;
    let Some((mut r, _)) = fetch::open_optional(&url)? else {
        return Ok(None);
    };
    fetch::fetch_verified(cache, &mut r, &a.file, &url, a.size, &a.sha256, progress).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("Python_Dateutil"), "python-dateutil");
        assert_eq!(normalize("a.-_b"), "a-b");
    }

    #[test]
    fn finds_a_file_on_either_page() {
        let json = r#"{"files":[{"filename":"six-1.16.0.tar.gz","url":"../../f/six-1.16.0.tar.gz","hashes":{"sha256":"AB"}},{"filename":"six-1.16.0-py2.py3-none-any.whl","url":"https://files.test/six.whl","hashes":{}}]}"#;
        assert_eq!(
            find(json, true, "six-1.16.0.tar.gz"),
            Some(Listed {
                url: "../../f/six-1.16.0.tar.gz".into(),
                sha256: Some("ab".into())
            })
        );
        assert_eq!(
            find(json, true, "six-1.16.0-py2.py3-none-any.whl")
                .unwrap()
                .sha256,
            None
        );
        let html = r#"<html><body><a href="https://files.test/a/six-1.16.0.tar.gz#sha256=CD" data-requires-python="&gt;=2.7">six-1.16.0.tar.gz</a><br/><a href="x.whl">six-1.16.0-py3-none-any.whl</a></body></html>"#;
        let l = find(html, false, "six-1.16.0.tar.gz").unwrap();
        assert_eq!(l.url, "https://files.test/a/six-1.16.0.tar.gz");
        assert_eq!(l.sha256.as_deref(), Some("cd"));
        assert!(find(html, false, "other.whl").is_none());
    }
}
