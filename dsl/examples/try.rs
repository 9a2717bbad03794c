fn main() {
    for arg in std::env::args().skip(1) {
        match dsl::parse(&arg) {
            Ok(s) => println!("{s}"),
            Err(e) => println!("{e}"),
        }
    }
}
