#!/usr/bin/env python3
"""Opens a `qkv inspect` report in headless Chromium and checks it as a person would see it.

Drives Debian's chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages separated by NUL bytes on file descriptors 3 and 4), with the standard library only:
  - every heatmap canvas is drawn (has non-white pixels);
  - hovering an attention map shows the tooltip with both tokens and the weight;
  - clicking a map opens the large view, itself drawn;
  - no console errors and no uncaught exceptions;
  - a screenshot of the page (and one with the large view open) is saved.
Usage: check_report.py REPORT.html SCREENSHOT.png     (exit 0 when every check passes)
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            sys.exit("check_report: chromium is not installed (scripts/setup.sh --test installs it)")
        self.profile = tempfile.mkdtemp(prefix="qkv-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        args = [exe, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--window-size=1400,1000", f"--user-data-dir={self.profile}", "about:blank"]
        # Chromium reads commands from its fd 3 and writes replies to fd 4: the shell places our
        # pipe ends there (Debian's chromium is itself a launcher script).
        cmd = 'exec "$@" 3<&{} 4>&{}'.format(to_browser_r, from_browser_w)
        self.proc = subprocess.Popen(["/bin/sh", "-c", cmd, "sh"] + args,
                                     pass_fds=(to_browser_r, from_browser_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def send(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.read()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)
        raise TimeoutError(method)

    def read(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def wait_event(self, method, timeout=30):
        deadline = time.time() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while time.time() < deadline:
            e = self.read()
            if e.get("method") == method:
                return e
            self.events.append(e)
        raise TimeoutError(method)

    def eval(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluate failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def mouse(self, kind, x, y):
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                               "clickCount": 1 if kind != "mouseMoved" else 0})

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# JavaScript run in the page: how many heatmap canvases, and which of them are blank.
BLANK = """(() => {
  const out = {count: 0, blank: []};
  document.querySelectorAll(SELECTOR).forEach((c, i) => {
    out.count++;
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let k = 0; k < d.length; k += 4) if (d[k] < 250 || d[k + 1] < 250 || d[k + 2] < 250) ink++;
    if (ink === 0) out.blank.push(i);
  });
  return out;
})()"""


def main():
    report, shot = os.path.abspath(sys.argv[1]), sys.argv[2]
    failures = []
    b = Browser()
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        b.session = b.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                           session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            b.send(domain + ".enable")
        b.send("Page.navigate", {"url": "file://" + report})
        b.wait_event("Page.loadEventFired")
        maps = b.eval(BLANK.replace("SELECTOR", "'#maps canvas'"))
        every = b.eval(BLANK.replace("SELECTOR", "'canvas.hm'"))
        n_expected = b.eval("JSON.parse(document.getElementById('data').textContent).attention.length")
        if maps["count"] != n_expected or maps["count"] == 0:
            failures.append(f"{maps['count']} attention maps drawn, the data has {n_expected}")
        if every["blank"]:
            failures.append(f"blank heatmaps: {every['blank']} of {every['count']}")
        # Hover the middle of the first map: the tooltip names two tokens and a weight.
        box = b.eval("(() => { const r = document.querySelector('#maps canvas').getBoundingClientRect();"
                     " return [r.left + r.width * 0.75, r.top + r.height * 0.8]; })()")
        b.mouse("mouseMoved", box[0], box[1])
        tip = b.eval("(() => { const t = document.getElementById('tip');"
                     " return [getComputedStyle(t).display, t.textContent]; })()")
        if tip[0] == "none" or "query" not in tip[1] or "key" not in tip[1] or "weight" not in tip[1]:
            failures.append(f"hover tooltip not shown as expected: {tip}")
        b.screenshot(shot)
        # Click it open: the large view appears and is drawn.
        b.mouse("mousePressed", box[0], box[1])
        b.mouse("mouseReleased", box[0], box[1])
        opened = b.eval("getComputedStyle(document.getElementById('modal')).display")
        big = b.eval(BLANK.replace("SELECTOR", "'#modalbox canvas'"))
        if opened != "flex" or big["count"] != 1 or big["blank"]:
            failures.append(f"click did not open a drawn large view: display {opened}, {big}")
        root, ext = os.path.splitext(shot)
        b.screenshot(root + "_open" + ext)
        # Console errors and uncaught exceptions, from every event seen so far.
        for e in b.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                failures.append("uncaught exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                failures.append("console error: " + json.dumps(p.get("args", []))[:300])
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                failures.append("log error: " + p["entry"].get("text", "")[:300])
    finally:
        b.close()
    for f in failures:
        print("check_report:", f, file=sys.stderr)
    print(json.dumps({"maps": maps["count"], "heatmaps": every["count"], "failures": len(failures)}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
