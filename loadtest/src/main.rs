fn main() {
    eprintln!("tailgate-loadtest: not built yet (issue 7)");
    std::process::exit(69);
}
