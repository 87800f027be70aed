//! Configuration layering: embedded defaults < user TOML < DGR_ environment < flags.

use dgr_core::config::load;
use figment::Figment;

// Environment variables are process-wide: the cases run in one test, in order.
#[test]
fn layers_apply_in_order_and_unknown_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();

    let defaults = load(None, Figment::new()).unwrap();
    assert_eq!(defaults.bm25.top_k, 100);
    assert_eq!(defaults.prepare.format, dgr_core::import::DatasetFormat::WikiVital);

    let user = dir.path().join("user.toml");
    std::fs::write(&user, "[bm25]\ntop_k = 50\nthreads = 3\n").unwrap();
    let config = load(Some(&user), Figment::new()).unwrap();
    assert_eq!((config.bm25.top_k, config.bm25.threads), (50, 3));
    assert_eq!(config.bm25.memory_mb, defaults.bm25.memory_mb, "untouched keys keep defaults");

    // SAFETY: no other thread of this test binary reads the environment.
    unsafe { std::env::set_var("DGR_BM25__TOP_K", "70") };
    let config = load(Some(&user), Figment::new()).unwrap();
    assert_eq!(config.bm25.top_k, 70, "environment beats the file");
    let config = load(Some(&user), Figment::new().merge(("bm25.top_k", 90))).unwrap();
    assert_eq!(config.bm25.top_k, 90, "flags beat the environment");
    unsafe { std::env::remove_var("DGR_BM25__TOP_K") };

    std::fs::write(&user, "[bm25]\ntop_kk = 50\n").unwrap();
    let err = load(Some(&user), Figment::new()).unwrap_err().to_string();
    assert!(err.contains("top_kk"), "{err}");
    assert!(err.contains("user.toml"), "{err}");

    std::fs::write(&user, "[prepare]\nformat = \"trec-cd\"\n").unwrap();
    let err = load(Some(&user), Figment::new()).unwrap_err().to_string();
    assert!(err.contains("trec-cd") && err.contains("user.toml"), "{err}");

    std::fs::write(&user, "[prepare.split]\ntrain = 90\ndev = 10\ntest = 10\n").unwrap();
    let err = load(Some(&user), Figment::new()).unwrap_err().to_string();
    assert!(err.contains("add up to 100"), "{err}");

    let err = load(Some(&dir.path().join("missing.toml")), Figment::new()).unwrap_err().to_string();
    assert!(err.contains("missing.toml"), "{err}");
}
