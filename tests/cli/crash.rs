//! Crash at every step: a real `rotor run` is paused at a failpoint between two steps (or
//! between a step's side effect and its save), SIGKILLed, and restarted. Afterwards exactly one
//! current credential exists, it verifies, the previous one was retired only after grace, no
//! pending version is orphaned, and the run completed.

#[cfg(not(feature = "failpoints"))]
#[test]
fn crash_tests_need_the_failpoints_feature() {
    panic!("the crash tests need the worker's failpoints: run `cargo test --features failpoints`");
}

#[cfg(feature = "failpoints")]
mod with_failpoints {
    use std::time::Duration;

    use rotor::store::Store;
    use rotor_rotators::Credential;
    use secrecy::SecretString;

    use crate::generated_config;
    use crate::rotation::read_document;
    use crate::support::{Rotor, spawn_until};

    const GRACE_MS: i64 = 2000;

    fn crash_at(point: &str) {
        let rotor = Rotor::new(&generated_config(1, "2s"));
        rotor.ok(&["rotate", "app/key0", "--emergency"]);
        let v1 = read_document(&rotor, "app/key0")["value"]
            .as_str()
            .unwrap()
            .to_owned();
        rotor.ok(&["rotate", "app/key0", "--no-wait"]);

        // Points after promotion are reached once grace has elapsed: run until one is.
        let mut child = None;
        for _ in 0..40 {
            let mut cmd = rotor.command(&["run", "--once", "--lease", "1s"]);
            cmd.env("ROTOR_FAILPOINT", point);
            match spawn_until(cmd, &format!("FAILPOINT {point}"), Duration::from_secs(60)) {
                Ok((c, _)) => {
                    child = Some(c);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
        let mut child = child.unwrap_or_else(|| panic!("{point} was never reached"));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Right after the crash consumers read a verified credential: the old one, or the new
        // one with the old one beside it.
        let doc = read_document(&rotor, "app/key0");
        match doc["_rotor"]["version"].as_str().unwrap() {
            "1" => assert_eq!(doc["value"], v1.as_str(), "{point}"),
            "2" => assert!(
                doc["previous"]["value"] == v1.as_str() || point.starts_with("retire"),
                "{point}: {doc}"
            ),
            other => panic!("{point}: unexpected version {other}"),
        }

        let mut state = String::new();
        for _ in 0..60 {
            rotor.ok(&["run", "--once", "--lease", "1s"]);
            let history = rotor.json(&["history", "app/key0", "--json"]);
            state = history[0]["state"].as_str().unwrap().to_owned();
            if state == "completed" {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(state, "completed", "{point}: the run resumes and completes");

        let doc = read_document(&rotor, "app/key0");
        let v2 = doc["value"].as_str().unwrap();
        assert_eq!(
            doc["_rotor"]["version"], "2",
            "{point}: exactly one new current version"
        );
        assert_ne!(v2, v1, "{point}");
        assert!(
            v2.len() == 40 && v2.chars().all(|c| c.is_ascii_alphanumeric()),
            "{point}: current verifies"
        );
        assert!(doc.get("previous").is_none(), "{point}: previous retired");
        assert!(
            !rotor.path("vault/app/key0.age.pending").exists(),
            "{point}: no orphaned pending version"
        );

        let fingerprint = Credential::new()
            .with("value", SecretString::from(v2))
            .fingerprint()
            .to_hex();
        let status = rotor.json(&["status", "--json"]);
        assert_eq!(
            status[0]["current_fingerprint"],
            format!("sha256:{fingerprint}"),
            "{point}"
        );
        assert_eq!(status[0]["state"], "idle", "{point}");

        let url = rotor.store_url();
        let steps = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let store = Store::connect(&url, None).await.unwrap();
                let run = store.runs(Some("app/key0"), 1).await.unwrap().remove(0);
                store.steps(&run.id).await.unwrap()
            });
        let promoted_at = steps
            .iter()
            .filter(|s| s.step == "promote" && s.outcome == "ok")
            .map(|s| s.finished_at.unwrap())
            .max()
            .unwrap();
        let retire_started = steps
            .iter()
            .filter(|s| s.step == "retire")
            .map(|s| s.started_at)
            .min()
            .unwrap();
        assert!(
            retire_started >= promoted_at + GRACE_MS - 5,
            "{point}: retired {}ms after promotion, grace is {GRACE_MS}ms",
            retire_started - promoted_at
        );
        assert_eq!(
            steps
                .iter()
                .filter(|s| s.step == "promote" && s.outcome == "ok")
                .count(),
            1,
            "{point}: promoted once"
        );
        rotor.ok(&["audit", "verify"]);
    }

    macro_rules! crash_points {
        ($($name:ident => $point:literal,)*) => {$(
            #[test]
            fn $name() {
                crash_at($point);
            }
        )*};
    }

    crash_points! {
        mint_before => "mint:before",
        mint_effect => "mint:effect",
        mint_after => "mint:after",
        apply_before => "apply:before",
        apply_effect => "apply:effect",
        apply_after => "apply:after",
        verify_before => "verify:before",
        verify_effect => "verify:effect",
        verify_after => "verify:after",
        promote_before => "promote:before",
        promote_effect => "promote:effect",
        promote_after => "promote:after",
        grace_before => "grace:before",
        grace_effect => "grace:effect",
        grace_after => "grace:after",
        retire_before => "retire:before",
        retire_effect => "retire:effect",
        retire_after => "retire:after",
    }
}
