//! `cairn plugins list|info`: what is in the plugin search path, and what one plugin is.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use cairn_host::loader::{self, LoadError, ManifestSource, Plugin};
use cairn_plugin_api::{Manifest, API_VERSION};
use clap::Subcommand;
use serde_json::json;

use super::{term, ConfigArg};

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// List the plugins in the search path ([plugins] search-path; by default ./plugins and the
    /// directory of the cairn executable), and the files that were refused and why. A plugin's
    /// manifest is read from its manifest section without loading it; plugins without one
    /// (built for API 1.0) are loaded to ask them.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Also load every plugin and run every check a use would (ABI layout, initialisation,
        /// section against code); plugins that fail them are listed as refused.
        #[arg(long)]
        load: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the conformance suite against a plugin (by name or path) through the real loading
    /// path: one PASS, FAIL or SKIP line per case, a summary, and exit code 1 on any failure.
    Verify {
        #[command(flatten)]
        args: super::verify::VerifyArgs,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show one plugin's manifest: by name (from the search path) or by file path, with the
    /// [storage.options] it accepts and their defaults.
    Info {
        /// A plugin name such as `filesystem`, or the path of a plugin library.
        plugin: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: PluginsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginsCommand::List { config, json, load } => list(&config, json, load),
        PluginsCommand::Info {
            plugin,
            config,
            json,
        } => info(&plugin, &config, json),
        PluginsCommand::Verify { args, config } => {
            let plugin = load(&args.plugin, &config)?;
            super::verify::verify(plugin, &args)
        }
    }
}

fn manifest_json(m: &Manifest, path: &Path, source: ManifestSource) -> serde_json::Value {
    json!({
        "name": m.name,
        "version": m.version,
        "api_version": m.api_version.to_string(),
        "description": m.description,
        "capabilities": m.capabilities.names(),
        "path": path,
        "manifest_source": source,
    })
}

fn plugin_json(p: &Plugin) -> anyhow::Result<serde_json::Value> {
    let mut v = manifest_json(p.manifest(), p.path(), p.manifest_source());
    v["sha256"] = json!(p.sha256()?);
    // `null` for a plugin without an option list (API 1.0).
    v["options"] = json!(options_of(p)?);
    Ok(v)
}

/// The options the plugin's manifest lists; `None` for a plugin built against API 1.0, which
/// has no option list.
fn options_of(p: &Plugin) -> anyhow::Result<Option<Vec<cairn_plugin_api::OptionInfo>>> {
    match p.options() {
        Ok(options) => Ok(Some(options)),
        Err(cairn_plugin_api::StorageError::Unsupported(_)) => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "plugin '{}' could not list its options: {e}",
            p.manifest().name
        )),
    }
}

fn refusal_json(path: &Path, e: &LoadError) -> serde_json::Value {
    json!({ "path": path, "kind": e.kind(), "error": e.to_string() })
}

fn list(config: &ConfigArg, as_json: bool, load: bool) -> anyhow::Result<ExitCode> {
    let config = config.load()?;
    let search = config.plugins.search_path();
    let mut found = loader::discover(&search);
    if load {
        let mut loaded = Vec::new();
        for f in std::mem::take(&mut found.plugins) {
            let path = f.path().to_path_buf();
            match f.clone().load() {
                Ok(_) => loaded.push(f),
                Err(e) => found.refused.push((path, e)),
            }
        }
        found.plugins = loaded;
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        let doc = json!({
            "host_api_version": API_VERSION.to_string(),
            "search_path": search.dirs(),
            "plugins": found.plugins.iter().map(|f| manifest_json(f.manifest(), f.path(), f.manifest_source())).collect::<Vec<_>>(),
            "refused": found.refused.iter().map(|(p, e)| refusal_json(p, e)).collect::<Vec<_>>(),
        });
        crate::cli::output::print_json(&mut out, &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "search path: {search}")?;
    if found.plugins.is_empty() {
        writeln!(out, "no plugins found")?;
    } else {
        let mut table = term::table(&["name", "version", "api", "capabilities", "path"]);
        for p in &found.plugins {
            let m = p.manifest();
            table.add_row(vec![
                m.name.clone(),
                m.version.clone(),
                m.api_version.to_string(),
                m.capabilities.to_string(),
                p.path().display().to_string(),
            ]);
        }
        writeln!(out, "{}", term::render(&table))?;
    }
    if !found.refused.is_empty() {
        writeln!(out, "\nrefused:")?;
        for (_, e) in &found.refused {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether the argument names a file rather than a plugin.
fn is_path(arg: &str) -> bool {
    arg.contains(std::path::MAIN_SEPARATOR)
        || arg.contains('/')
        || Path::new(arg).extension().and_then(|e| e.to_str())
            == Some(std::env::consts::DLL_EXTENSION)
}

/// Load a plugin named on the command line, by path or by name from the config's search path.
fn load(arg: &str, config: &ConfigArg) -> anyhow::Result<Plugin> {
    let config = config.load()?;
    load_from(arg, &config.plugins.search_path())
}

/// Load a plugin named on the command line: a library path if it looks like one, else a
/// manifest name in `search`.
pub(super) fn load_from(arg: &str, search: &loader::SearchPath) -> anyhow::Result<Plugin> {
    Ok(if is_path(arg) {
        loader::load_path(&PathBuf::from(arg), None)?
    } else {
        loader::load_by_name(search, arg, None)?
    })
}

fn info(arg: &str, config: &ConfigArg, as_json: bool) -> anyhow::Result<ExitCode> {
    let plugin = load(arg, config)?;
    let mut out = std::io::stdout().lock();
    if as_json {
        crate::cli::output::print_json(&mut out, &plugin_json(&plugin)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let m = plugin.manifest();
    writeln!(out, "name:          {}", m.name)?;
    writeln!(out, "version:       {}", m.version)?;
    writeln!(
        out,
        "api version:   {} (this host: {API_VERSION})",
        m.api_version
    )?;
    writeln!(out, "description:   {}", m.description)?;
    writeln!(out, "capabilities:  {}", m.capabilities)?;
    writeln!(out, "path:          {}", plugin.path().display())?;
    writeln!(out, "manifest from: {}", plugin.manifest_source().as_str())?;
    writeln!(out, "sha256:        {}", plugin.sha256()?)?;
    match options_of(&plugin)? {
        None => writeln!(
            out,
            "options:       not listed (built against plugin API {}, which has no option list)",
            m.api_version
        )?,
        Some(options) if options.is_empty() => {
            writeln!(out, "options:       none listed in the manifest")?
        }
        Some(options) => {
            writeln!(out, "options ([storage.options]):")?;
            let name_width = options.iter().map(|o| o.name.len()).max().unwrap_or(0);
            let shown: Vec<String> = options
                .iter()
                .map(|o| match &o.default {
                    Some(d) => format!("default {d}"),
                    None => "no default".to_string(),
                })
                .collect();
            let default_width = shown.iter().map(String::len).max().unwrap_or(0);
            for (o, default) in options.iter().zip(&shown) {
                writeln!(
                    out,
                    "  {:name_width$}  {:default_width$}  {}",
                    o.name, default, o.description
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
