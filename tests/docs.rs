//! The documents a reader starts from stay true to the tree: every relative link in `README.md` and `docs/*.md`
//! resolves (and an anchor into a Markdown file names one of its headings), and every path the README's Layout
//! section names exists. Plain std: no cluster, no features.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The Markdown files whose links are checked: the README and every file of `docs/`.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let docs = repo().join("docs");
    for entry in std::fs::read_dir(&docs).unwrap_or_else(|e| panic!("read {}: {e}", docs.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines outside fenced code blocks, with their 1-based numbers, inline code spans blanked (a link target or a
/// heading inside code is not one).
fn prose_lines(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(open), Some(m)) if open == m => fence = None,
            (None, None) => out.push((i + 1, without_code_spans(line))),
            _ => {}
        }
    }
    out
}

/// `line` with the text of each inline code span replaced by `x`s (the backticks kept).
fn without_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_code = false;
    for c in line.chars() {
        if c == '`' {
            in_code = !in_code;
            out.push(c);
        } else {
            out.push(if in_code { 'x' } else { c });
        }
    }
    out
}

/// The target of every inline link and image on a line: `[text](target)` and `[text](target "title")`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        let target = target.trim_start_matches('<').trim_end_matches('>');
        if !target.is_empty() {
            targets.push(target.to_owned());
        }
        rest = &after[end.min(after.len())..];
    }
    targets
}

/// Whether a link leaves the repository (checked by nobody here).
fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    ["http://", "https://", "mailto:"].iter().any(|scheme| lower.starts_with(scheme))
}

/// The anchor GitHub gives a heading: lower case, spaces to `-`, every other character that is not alphanumeric,
/// `-` or `_` dropped (so `Platform team / app team` becomes `platform-team--app-team`).
fn anchor_of(heading: &str) -> String {
    let text = heading_text(heading);
    let mut anchor = String::new();
    for c in text.trim().chars() {
        if c == ' ' {
            anchor.push('-');
        } else if c.is_alphanumeric() || c == '-' || c == '_' {
            anchor.extend(c.to_lowercase());
        }
    }
    anchor
}

/// A heading's text as rendered: a link keeps its text, not its target.
fn heading_text(heading: &str) -> String {
    let mut out = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else { break };
        let Some(close) = rest[open + mid..].find(')') else { break };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every anchor the headings of a Markdown document produce (a repeated heading gets `-1`, `-2`, ... as on GitHub).
fn anchors(markdown: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fence: Option<&str> = None;
    for line in markdown.lines() {
        let trimmed = line.trim_start();
        if let Some(m) = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m)) {
            fence = match fence {
                None => Some(m),
                Some(open) if open == m => None,
                other => other,
            };
            continue;
        }
        if fence.is_some() {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = anchor_of(&line[hashes..]);
            let mut anchor = base.clone();
            let mut n = 0;
            while seen.contains(&anchor) {
                n += 1;
                anchor = format!("{base}-{n}");
            }
            seen.insert(anchor);
        }
    }
    seen
}

/// What is wrong with each relative link of the document at `path` (its text given), one line each.
fn broken_links(path: &Path, markdown: &str) -> Vec<String> {
    let dir = path.parent().expect("a document is in a folder");
    let mut problems = Vec::new();
    for (number, line) in prose_lines(markdown) {
        for target in link_targets(&line) {
            if is_external(&target) {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let where_ = format!("{}:{number}: {target}", path.display());
            let resolved = if file.is_empty() { path.to_path_buf() } else { dir.join(file) };
            if !resolved.exists() {
                problems.push(format!("{where_}: {} does not exist", resolved.display()));
                continue;
            }
            let Some(anchor) = anchor.filter(|a| !a.is_empty()) else { continue };
            if resolved.extension().is_some_and(|e| e == "md") {
                let text = if file.is_empty() { markdown.to_owned() } else { read(&resolved) };
                if !anchors(&text).contains(anchor) {
                    problems.push(format!("{where_}: no heading of {} makes the anchor #{anchor}", resolved.display()));
                }
            }
        }
    }
    problems
}

#[test]
fn links_in_the_readme_and_docs_resolve() {
    let files = documents();
    assert!(files.len() >= 5, "found the README and the docs: {files:?}");
    let problems: Vec<String> = files.iter().flat_map(|f| broken_links(f, &read(f))).collect();
    assert!(problems.is_empty(), "broken links:\n{}", problems.join("\n"));
}

/// Extensions that make a backticked word in the Layout a path.
const PATH_EXTENSIONS: &[&str] = &[".rs", ".md", ".yaml", ".yml", ".toml", ".py", ".json", ".txt", ".sh", ".lock"];

/// The section of `markdown` under the heading `## <title>`, up to the next `## ` heading.
fn section<'a>(markdown: &'a str, title: &str) -> Option<&'a str> {
    let heading = format!("## {title}\n");
    let start = markdown.find(&heading)? + heading.len();
    let rest = &markdown[start..];
    let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
    Some(&rest[..end])
}

/// The backticked words of `text`, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Whether a backticked word names a path: it has a `/`, ends in a known extension, or names a top-level entry of
/// the repository (`top_level`). Words with spaces, options, placeholders and URLs are not paths.
fn looks_like_path(word: &str, top_level: &HashSet<String>) -> bool {
    if word.is_empty() || word.contains(char::is_whitespace) || word.starts_with('-') || word.contains("://") {
        return false;
    }
    if word.contains(['<', '>', '{', '}', '*', '=', '$']) {
        return false;
    }
    word.contains('/') || PATH_EXTENSIONS.iter().any(|e| word.ends_with(e)) || top_level.contains(word)
}

/// Every path the Layout section names: the first cell of each table row (always a path, so a renamed entry cannot
/// slip through as "not a path"), and every other backticked word that looks like one.
fn layout_paths(layout: &str, top_level: &HashSet<String>) -> Vec<String> {
    let mut paths = Vec::new();
    for line in layout.lines() {
        let line = line.trim();
        let mut rest = line;
        if let Some(row) = line.strip_prefix('|') {
            let first = row.split('|').next().unwrap_or("");
            let words = code_spans(first);
            let is_separator = first.trim().chars().all(|c| c == '-' || c == ':' || c == ' ');
            if !is_separator && !words.is_empty() {
                paths.extend(words.iter().map(|w| w.to_string()));
                rest = &row[first.len()..];
            }
        }
        paths.extend(code_spans(rest).into_iter().filter(|w| looks_like_path(w, top_level)).map(str::to_owned));
    }
    paths
}

/// The names at the top of the repository, files and folders, hidden ones included.
fn top_level_entries() -> HashSet<String> {
    std::fs::read_dir(repo()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// A named path that does not exist, or a folder named with a trailing `/` that is not a folder.
fn missing(path: &str) -> Option<String> {
    let on_disk = repo().join(path.trim_end_matches('/'));
    if !on_disk.exists() {
        return Some(format!("{path}: does not exist"));
    }
    if path.ends_with('/') && !on_disk.is_dir() {
        return Some(format!("{path}: is not a folder"));
    }
    None
}

#[test]
fn the_readme_layout_names_only_paths_that_exist() {
    let readme = read(&repo().join("README.md"));
    let layout = section(&readme, "Layout").expect("the README has a `## Layout` section");
    let paths = layout_paths(layout, &top_level_entries());
    assert!(paths.len() >= 8, "the Layout names at least 8 paths, found {paths:?}");
    for expected in ["src/controller/", "Makefile", "tests/"] {
        assert!(paths.iter().any(|p| p == expected), "the parser finds {expected} in the Layout: {paths:?}");
    }
    let problems: Vec<String> = paths.iter().filter_map(|p| missing(p)).collect();
    assert!(problems.is_empty(), "the README's Layout names paths that are not in the tree:\n{}", problems.join("\n"));
}

#[test]
fn the_layout_parser_finds_paths_and_the_check_catches_a_renamed_one() {
    let top: HashSet<String> = ["Makefile", "Dockerfile", "src"].into_iter().map(str::to_owned).collect();
    let layout = "\
| path | what |
| --- | --- |
| `src/api/` | types; no I/O |
| `src/clients/` | `src/clients/trend/`, `src/clients/cisco/` and `make crds`, `--watch-namespace` |
| `Makefile` | `make demo`, `Makefile` again |
| `renamed-away.rs` | a file that is gone |
| `docs/` | see `docs/architecture.md`, not `<kind>.rs`, nor `https://example.com/x` |
";
    let paths = layout_paths(layout, &top);
    assert_eq!(
        paths,
        [
            "src/api/",
            "src/clients/",
            "src/clients/trend/",
            "src/clients/cisco/",
            "Makefile",
            "Makefile",
            "renamed-away.rs",
            "docs/",
            "docs/architecture.md",
        ]
    );
    assert!(missing("renamed-away.rs").is_some(), "a path that is not in the tree is reported");
    assert!(missing("src/api/").is_none());
    assert!(missing("Cargo.toml/").is_some(), "a file named as a folder is reported");
}

#[test]
fn the_link_checker_sees_links_anchors_and_skips_code() {
    assert_eq!(
        link_targets("see [a](docs/x.md#y) and ![i](img.png \"t\") and [b](https://e.com)"),
        ["docs/x.md#y", "img.png", "https://e.com"]
    );
    assert_eq!(anchor_of(" Platform team / app team"), "platform-team--app-team");
    assert_eq!(
        anchor_of(" 5a. Trend Cloud One and Vision One: account-level API keys"),
        "5a-trend-cloud-one-and-vision-one-account-level-api-keys"
    );
    assert_eq!(anchor_of(" WorkloadApiKey (`wak`): Trend, Cloud One"), "workloadapikey-wak-trend-cloud-one");
    assert_eq!(anchor_of(" See [the guide](docs/g.md)"), "see-the-guide");
    let doc =
        "# T\n## Same\n## Same\n```\n## Not a heading\n[x](nowhere.md)\n```\nText `[y](nowhere.md)` [z](#same-1)\n";
    let found = anchors(doc);
    assert!(found.contains("same") && found.contains("same-1") && !found.contains("not-a-heading"), "{found:?}");
    let problems = broken_links(&repo().join("README.md"), doc);
    assert!(problems.is_empty(), "links in code are not links, and #same-1 exists: {problems:?}");
    let problems =
        broken_links(&repo().join("README.md"), "[a](docs/none.md) [b](#nothing) [c](docs/architecture.md#no)");
    assert_eq!(problems.len(), 3, "{problems:?}");
}
