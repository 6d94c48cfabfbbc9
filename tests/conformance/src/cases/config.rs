//! Cases about the plugin's identity and options.

use cairn_plugin_api::{ErrorKind, API_VERSION};

use super::expect_kind;
use crate::{
    ensure,
    suite::{CaseResult, Ctx},
};

/// The manifest is usable and the info consistent.
pub fn manifest_is_sane(ctx: &Ctx) -> CaseResult {
    let m = &ctx.subject.manifest;
    m.validate().map_err(crate::suite::Fail)?;
    ensure!(
        API_VERSION.accepts(m.api_version).is_ok(),
        "API version {} is not loadable by this host ({API_VERSION})",
        m.api_version
    );
    ensure!(!m.description.trim().is_empty(), "the description is empty");
    if let Some(max) = ctx.info.max_state_size {
        ensure!(
            ctx.info.inline_threshold <= max,
            "inline threshold {} is above the maximum state size {max}",
            ctx.info.inline_threshold
        );
    }
    ensure!(
        !ctx.info.location.trim().is_empty(),
        "info().location is empty"
    );
    Ok(None)
}

/// The suite's options open an instance, twice.
pub fn valid_options_open_twice(ctx: &Ctx) -> CaseResult {
    let second = ctx.reopen()?;
    ensure!(
        second.info() == ctx.info,
        "two instances opened with the same options report different info: {:?} vs {:?}",
        second.info(),
        ctx.info
    );
    Ok(None)
}

/// A misspelt option is an error that names it.
pub fn unknown_option_is_named(ctx: &Ctx) -> CaseResult {
    let name = "cairn-verify-no-such-option";
    let mut doc = ctx.subject.options.clone();
    if !doc.is_empty() && !doc.ends_with('\n') {
        doc.push('\n');
    }
    // Put the key first, so it belongs to the top-level table whatever tables follow.
    let doc = format!("{name} = 1\n{doc}");
    let msg = expect_kind(
        (ctx.subject.open)(&doc),
        ErrorKind::InvalidConfig,
        "opening with an unknown option",
    )?;
    ensure!(
        msg.contains(name),
        "the InvalidConfig error does not name the option: {msg}"
    );
    Ok(None)
}
