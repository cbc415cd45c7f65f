//! A real pseudo-terminal for driving interactive `ssh` sessions: the child gets the slave side
//! as its controlling terminal; the test reads and writes the master, and resizes it.

use std::{
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub struct Pty {
    master: std::fs::File,
    pub child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    pub fn spawn(mut cmd: Command, cols: u16, rows: u16) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let ws = winsize(cols, rows);
        // SAFETY: openpty writes two descriptors we then own.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty failed");
        // SAFETY: both descriptors were just returned by openpty and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: between fork and exec we only call async-signal-safe functions.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(slave);
        let master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            master,
            child,
            screen,
        }
    }

    pub fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Everything the terminal has shown so far, lossily as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the output after byte offset `from` contains `needle`.
    pub fn expect_from(&self, from: usize, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.output();
            if out.get(from..).is_some_and(|o| o.contains(needle)) {
                return out;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {needle:?}; terminal showed:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn expect(&self, needle: &str) -> String {
        self.expect_from(0, needle, Duration::from_secs(20))
    }

    pub fn len(&self) -> usize {
        self.screen.lock().unwrap().len()
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ on our own master descriptor with a valid winsize.
        unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
