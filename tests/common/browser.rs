//! A real headless Chromium for the console's tests: Debian's `chromium` driven through its
//! `chromedriver` over WebDriver (fantoccini), with waits on what the page shows and
//! screenshots written under `target/console-screenshots/` for review.
//!
//! CI installs both packages (`.ci/run`); a machine without them fails these tests with a
//! message saying what to install rather than skipping them.

use super::binary::free_port;
use fantoccini::{Client, ClientBuilder, Locator};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page may take to show what a test waits for: two busy cores run the gateway,
/// the receivers and the browser at once.
pub const PAGE_WAIT: Duration = Duration::from_secs(20);
/// A laptop's window.
const WIDTH: u32 = 1366;
const HEIGHT: u32 = 900;

pub struct Browser {
    pub client: Client,
    _driver: DriverGroup,
}

/// chromedriver in a process group of its own, with the browsers it starts: a test that
/// fails before closing its session leaves no Chromium behind.
struct DriverGroup(std::process::Child);

impl Drop for DriverGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

impl Browser {
    pub async fn start() -> Browser {
        Self::launch(&[]).await
    }

    /// A browser whose system colour scheme is dark.
    pub async fn start_dark() -> Browser {
        Self::launch(&[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ])
        .await
    }

    async fn launch(extra_args: &[&str]) -> Browser {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install Debian's {package} (apt-get install chromium chromium-driver; .ci/run does)"
            );
        }
        let port = free_port();
        let driver = DriverGroup(
            std::process::Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts"),
        );
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            "--no-first-run".to_owned(),
            "--disable-extensions".to_owned(),
        ];
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let deadline = Instant::now() + PAGE_WAIT;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver never took a session: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            _driver: driver,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Wait until `css` matches an element, and return it.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(PAGE_WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("{css} never appeared: {error}"))
    }

    /// Wait until the element `css` shows text containing `wanted`; return all its text.
    pub async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        self.wait_for_text_where(css, wanted, |text| text.contains(wanted))
            .await
    }

    /// Wait until the element `css` shows exactly `wanted` (surrounding space aside).
    pub async fn wait_for_exact_text(&self, css: &str, wanted: &str) {
        self.wait_for_text_where(css, wanted, |text| text.trim() == wanted)
            .await;
    }

    async fn wait_for_text_where(
        &self,
        css: &str,
        wanted: &str,
        shown: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if shown(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {wanted:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until nothing matches `css`.
    pub async fn wait_until_gone(&self, css: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        while !self.all(css).await.is_empty() {
            assert!(Instant::now() < deadline, "{css} never went away");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every element matching `css`.
    pub async fn all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Replace the value of the input or textarea `css` with `text`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap();
    }

    /// Save the whole page as `target/console-screenshots/<name>.png`: the window grows to
    /// the page's height for the shot, then returns to a laptop's.
    pub async fn screenshot(&self, name: &str) {
        let height = self
            .client
            .execute(
                "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight",
                vec![],
            )
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(900)
            .clamp(u64::from(HEIGHT), 4000);
        self.client
            .set_window_size(WIDTH, height as u32)
            .await
            .unwrap();
        let png = self.client.screenshot().await.unwrap();
        self.client.set_window_size(WIDTH, HEIGHT).await.unwrap();
        let folder = screenshot_dir();
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{name}.png")), png).unwrap();
    }
}

pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder holds tmp")
        .join("console-screenshots")
}

impl Browser {
    /// End the session, which closes the browser.
    pub async fn close(self) {
        self.client.close().await.unwrap();
    }
}
