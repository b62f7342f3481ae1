//! Build-time chores.
//!
//! - `cargo run -p xtask -- assets DIR` writes the man pages (section 8, one per
//!   subcommand) and the bash, zsh and fish completions that the packages install
//!   (packaging/build.sh calls it). Generated from `hostbeat::cli::Cli`, the
//!   definition the binary parses, so they never drift from `--help`.
//! - `cargo run -p xtask -- reliability DIR OUT` renders docs/reliability.md from the
//!   figures scripts/reliability gathered in DIR (see `reliability`).

mod reliability;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["assets", out] => assets(out),
        ["reliability", figures, out] => {
            match reliability::render(Path::new(figures), Path::new(out)) {
                Ok(()) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask: reliability: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo run -p xtask -- assets DIR\n       \
                 cargo run -p xtask -- reliability FIGURES_DIR OUT.md"
            );
            ExitCode::from(2)
        }
    }
}

fn assets(out: &str) -> ExitCode {
    match write_assets(Path::new(out)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xtask: writing assets to {out}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes `man/*.8` and `completions/{hostbeat.bash,_hostbeat,hostbeat.fish}` under
/// `out`; returns every file written.
fn write_assets(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = write_man_pages(&out.join("man"))?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cli = hostbeat::cli::Cli::command();
        written.push(clap_complete::generate_to(
            shell,
            &mut cli,
            "hostbeat",
            &completions,
        )?);
    }
    Ok(written)
}

/// hostbeat(8) and hostbeat-SUBCOMMAND(8): a daemon and its tools are system
/// administration commands. hostbeat(8) gets FILES, EXIT STATUS and SEE ALSO as real
/// man sections, from the same tables as `--help`.
fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut root = hostbeat::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut written = Vec::new();
    for command in root.get_subcommands().filter(|c| !c.is_hide_set()) {
        written.push(man(command.clone()).generate_to(dir)?);
    }
    // The sections below replace the plain-text epilogue of `--help`.
    let page = man(root.clone().after_long_help(None::<&str>));
    let path = dir.join(page.get_filename());
    let mut file = std::fs::File::create(&path)?;
    page.render_title(&mut file)?;
    page.render_name_section(&mut file)?;
    page.render_synopsis_section(&mut file)?;
    page.render_description_section(&mut file)?;
    page.render_options_section(&mut file)?;
    page.render_subcommands_section(&mut file)?;
    operator_sections().to_writer(&mut file)?;
    page.render_version_section(&mut file)?;
    written.push(path);
    Ok(written)
}

fn man(command: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(command)
        .section("8")
        .manual("System Administration")
        .source(format!("hostbeat {}", env!("CARGO_PKG_VERSION")))
}

fn operator_sections() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["FILES"]);
    for (path, what) in hostbeat::cli::FILES {
        roff.control("TP", [])
            .text([bold(*path)])
            .text([roman(*what)]);
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in hostbeat::cli::EXIT_STATUS {
        roff.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(*what)]);
    }
    roff.control("SH", ["DIAGNOSTICS"])
        .text([roman(hostbeat::cli::LOGS)]);
    roff.control("SH", ["SEE ALSO"]).text([roman(
        "systemctl(1), journalctl(1), systemd.exec(5), systemd.service(5), sysusers.d(5)",
    )]);
    roff
}
