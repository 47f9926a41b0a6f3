//! deploy/README.md shows operators the configuration to install: every TOML block in it must be one
//! the node accepts. Each is loaded with the node's own parser (`NodeConfig::load`, which refuses
//! unknown keys), as `exchange-node run --config` would load it.

use std::path::PathBuf;

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start().starts_with("```toml") => current = Some((n + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => blocks.push(current.take().expect("open block")),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```toml block");
    blocks
}

#[test]
fn every_sample_configuration_in_deploy_readme_loads() {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/README.md");
    let text = std::fs::read_to_string(&readme).expect("read deploy/README.md");
    let blocks = toml_blocks(&text);
    assert!(!blocks.is_empty(), "deploy/README.md shows no ```toml configuration");
    let dir = tempfile::tempdir().unwrap();
    for (line, body) in &blocks {
        let path = dir.path().join(format!("sample-{line}.toml"));
        std::fs::write(&path, body).unwrap();
        let cfg = exchange_node_core::config::NodeConfig::load(&path)
            .unwrap_or_else(|e| panic!("deploy/README.md line {line}: the node refuses this configuration: {e:#}\n{body}"));
        // The sample is for a district node under systemd: absolute paths, a parent to connect to.
        assert!(cfg.key_file.is_absolute() && cfg.data_dir.is_absolute(), "line {line}: paths on the host are absolute");
        assert!(cfg.parent_address.is_some() || cfg.directory.tree_seed.is_some(), "line {line}: a node needs a parent, or a tree seed as the root");
    }
}

/// The parser used above does refuse what the old sample had (`directory_file`).
#[test]
fn an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.toml");
    std::fs::write(
        &path,
        "node_id = \"gz.yuexiu\"\nkey_file = \"/k\"\ndata_dir = \"/d\"\n\
         root_key = \"3ada911031d8e6e77892d1d56134bd88883e74603eda778a55260d4a99671aa5\"\n\
         directory_file = \"/etc/exchange/directory.toml\"\n",
    )
    .unwrap();
    let err = exchange_node_core::config::NodeConfig::load(&path).expect_err("directory_file is not a key of the configuration");
    assert!(format!("{err:#}").contains("directory_file"), "the error names the key: {err:#}");
}
