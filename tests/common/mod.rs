//! What the multi-process tests share: the repository root, processes whose JSON log lines
//! are collected as they run, and a tiny student that trains in seconds.

#![allow(dead_code)] // each test crate uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use dgr_model::bert::BertConfig;
use dgr_model::bert2bert::Bert2BertConfig;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `dgr` process (started with `--log-format json`): its log lines arrive on
/// `lines` and are kept in `log` as they are read.
pub struct Logged {
    pub child: Child,
    pub lines: mpsc::Receiver<serde_json::Value>,
    pub log: Vec<serde_json::Value>,
    pub name: String,
}

impl Logged {
    pub fn spawn(mut command: Command, name: &str) -> Self {
        let mut child = command.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str::<serde_json::Value>(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "fields": { "message": line } }));
                if send.send(value).is_err() {
                    break;
                }
            }
        });
        Logged { child, lines, log: Vec::new(), name: name.to_string() }
    }

    /// The first log line (from now) that `matches`, collecting the log on the way.
    pub fn wait_for(&mut self, matches: impl Fn(&serde_json::Value) -> bool, seconds: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("{} never logged the expected line; log so far: {:#?}", self.name, self.log),
            }
        }
    }

    /// Waits for the process to exit (killing it after `seconds`), collecting the rest of its log.
    pub fn wait_exit(&mut self, seconds: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                self.log.extend(self.lines.try_iter());
                return status;
            }
            self.log.extend(self.lines.try_iter());
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit within {seconds} s; log: {:#?}", self.name, self.log);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves the lines read so far into `log`.
    pub fn collect_log(&mut self) {
        self.log.extend(self.lines.try_iter());
    }

    /// Whether a collected log line's message contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.iter().any(|l| l.to_string().contains(text))
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small BERT2BERT on MiniLM's vocabulary with fresh weights, saved where `train_gen.init`
/// can continue it: stage 1 and 2 run in seconds and their checkpoints are small.
pub fn tiny_student(dir: &Path) {
    let minilm = root().join("assets/minilm");
    assert!(minilm.join("config.json").is_file(), "MiniLM missing: run scripts/fetch-assets.sh");
    let bert = BertConfig {
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 128,
        ..BertConfig::from_file(&minilm.join("config.json")).unwrap()
    };
    let config = Bert2BertConfig { encoder: bert.clone(), decoder: bert, decoder_start_token_id: 101, pad_token_id: 0 };
    let device = Device::flex();
    device.seed(3);
    config.init(&device).save(dir, &config).unwrap();
}

/// Every parameter of the student saved in `dir`, in visiting order.
pub fn weights(dir: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::tensor::Tensor<D>>) {
            self.0.extend(param.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap());
        }
    }
    let (model, _) = dgr_model::student::Student::load(dir, &Device::flex()).unwrap();
    let mut collect = Collect(Vec::new());
    burn::module::Module::visit(&model, &mut collect);
    collect.0
}

/// The largest difference between two weight vectors of one architecture.
pub fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Sends `signal` (`-TERM`, `-STOP`, ...) to a process.
pub fn signal(signal: &str, pid: u32) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}
