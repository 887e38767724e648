//! The `sundial` command-line tool.

fn main() {
    eprintln!("sundial: no commands yet");
    std::process::exit(2);
}
