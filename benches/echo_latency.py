#!/usr/bin/env python3
"""Keystroke echo latency through an interactive ssh session.

Usage: echo_latency.py N -- ssh ARGS... (the command must open an interactive shell).
Runs the command in a pseudo-terminal, waits for a prompt, then N times types one character
and measures the time until the terminal shows it; prints "p50 p99" in milliseconds.
"""
import os, pty, select, sys, time

def main():
    n = int(sys.argv[1])
    cmd = sys.argv[sys.argv.index("--") + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)

    def read_until(token, timeout=20.0):
        buf = b""
        end = time.monotonic() + timeout
        while token not in buf:
            left = end - time.monotonic()
            if left <= 0:
                raise SystemExit(f"timed out waiting for {token!r}; saw {buf[-200:]!r}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                buf += os.read(fd, 65536)
        return buf

    os.write(fd, b"export PS1='READY> '\r")
    read_until(b"READY> ")
    time.sleep(0.3)
    samples = []
    def drain():
        while True:
            r, _, _ = select.select([fd], [], [], 0.01)
            if not r:
                return
            os.read(fd, 65536)

    for i in range(n):
        ch = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
        drain()  # nothing earlier may be taken for this key's echo
        t0 = time.perf_counter()
        os.write(fd, ch)
        read_until(ch)
        samples.append((time.perf_counter() - t0) * 1000.0)
        if i % 40 == 39:
            os.write(fd, b"\x15")  # Ctrl-U keeps the line short
            time.sleep(0.05)
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                os.read(fd, 65536)
    os.write(fd, b"\x15exit\r")
    samples.sort()
    p50 = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{p50:.3f} {p99:.3f}")

main()
