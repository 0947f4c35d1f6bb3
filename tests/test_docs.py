"""The published docs: the site builds, its pages load in headless Chromium with every figure and navigation link,
README.md is what nbs/index.ipynb generates, and every public name has a documented `show_doc` entry."""
import ast, base64, importlib, importlib.util, inspect, json, re, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NBS, SHOTS = ROOT/"nbs", ROOT/"test-output"


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_site", NBS/"_build_site.py")
    mod = sys.modules["build_site"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

build_site = _load_builder()


# ---------------------------------------------------------------- a minimal DevTools-protocol client

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: CDN scripts (MathJax) fail fast, pages still load
                  "--hide-scrollbars", "--window-size=1400,1000", "--remote-debugging-port=0"]


class Chromium:
    "Headless Chromium driven through the DevTools protocol (one page)."
    def __init__(self, exe:str, user_data_dir:Path, timeout:float=60):
        import websocket  # websocket-client
        self.timeout, self.msg_id = timeout, 0
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, deadline = user_data_dir/"DevToolsActivePort", time.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None: raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.send("Page.enable")

    def _recv_until(self, done):
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if done(msg): return msg
        raise TimeoutError("chromium: no answer")

    def send(self, method:str, **params)->dict:
        self.msg_id += 1
        self.ws.send(json.dumps({"id": self.msg_id, "method": method, "params": params}))
        msg = self._recv_until(lambda m: m.get("id") == self.msg_id)
        if "error" in msg: raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    def goto(self, url:str):
        "Open `url` and wait for its load event and for every image to finish (or fail) loading."
        self.send("Page.navigate", url=url)
        self._recv_until(lambda m: m.get("method") == "Page.loadEventFired")
        self.eval("Promise.all([...document.images].map(i => i.complete ? 0 : "
                  "new Promise(r => { i.onload = i.onerror = r; })))")

    def eval(self, js:str):
        res = self.send("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res: raise RuntimeError(f"javascript: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path:Path):
        "A full-page PNG screenshot."
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000), "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        self.ws.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


PAGE_REPORT = """(() => ({
  title: document.title,
  h1: (document.querySelector('h1') || {}).textContent || '',
  text: document.body.innerText.length,
  images: [...document.images].map(i => ({src: i.currentSrc || i.src, loaded: i.complete && i.naturalWidth > 0})),
  nav: [...document.querySelectorAll('header a[href], nav a[href]')].map(a => a.href),
}))()"""


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def site():
    "The built site (Quarto where installed, else static), built once for this module."
    start = time.time()
    out = build_site.build_docs()
    print(f"docs build: {time.time()-start:.0f} s")
    return out


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None: pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        b = Chromium(exe, Path(profile))
        yield b
        b.close()


def _local_file(url:str)->Path|None:
    u = urlparse(url)
    return Path(unquote(u.path)) if u.scheme == "file" else None


# ---------------------------------------------------------------- the site

def _site_pages()->list[str]:
    "Every notebook `_quarto.yml` puts in the navbar or sidebar."
    w = yaml.safe_load((ROOT/"_quarto.yml").read_text())["website"]
    def hrefs(items):
        for it in items or []:
            if isinstance(it, str): yield it
            elif "section" in it: yield from hrefs(it.get("contents"))
            else: yield it["href"]
    return list(dict.fromkeys([*hrefs(w["navbar"].get("left")), *hrefs(w["sidebar"].get("contents"))]))


def test_site_config_is_single():
    "`_quarto.yml` is the one site configuration: nbs/ holds no second copy."
    assert not any((NBS/f).exists() for f in ("_quarto.yml", "nbdev.yml", "sidebar.yml"))


@pytest.mark.parametrize("src", _site_pages())
def test_navigation_page_exists(src):
    assert (NBS/src).exists(), f"_quarto.yml names nbs/{src}, which does not exist"


@pytest.mark.parametrize("page", ["index.html", "analysis.html"])
def test_page_in_browser(site, browser, page):
    "The page renders, every figure loaded, every local navigation link resolves; a screenshot is saved."
    path = site/page
    assert path.exists(), f"{page} was not built"
    browser.goto(path.as_uri())
    r = browser.eval(PAGE_REPORT)
    SHOTS.mkdir(exist_ok=True)
    browser.screenshot(SHOTS/page.replace(".html", ".png"))
    assert r["h1"].strip() and r["text"] > 500, f"{page}: rendered almost nothing"
    assert r["images"], f"{page}: has no figure"
    broken = [i["src"][:120] for i in r["images"] if not i["loaded"]]
    assert not broken, f"{page}: figures that did not load: {broken}"
    local = {_local_file(u) for u in r["nav"]} - {None}
    assert len(local) >= 5, f"{page}: navigation has {len(local)} local links"
    dangling = sorted(str(p.relative_to(site)) if p.is_relative_to(site) else str(p) for p in local if not p.is_file())
    assert not dangling, f"{page}: navigation links to missing pages {dangling}"


# ---------------------------------------------------------------- README

def test_readme_in_sync():
    "README.md is exactly what nbs/index.ipynb generates."
    want = build_site.readme_markdown()
    have = (ROOT/"README.md").read_text()
    assert have == want, "README.md is out of date with nbs/index.ipynb: run `python nbs/_build_site.py readme`"


def test_readme_figure_and_links():
    "README.md shows a committed PNG from nbs/, and every relative link in it resolves in the repository."
    text = (ROOT/"README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert images, "README.md shows no figure"
    for img in images:
        assert img.startswith("nbs/") and img.endswith(".png"), f"{img}: expected a committed PNG under nbs/"
        assert (ROOT/img).is_file() and (ROOT/img).stat().st_size > 1000, f"{img} is missing or empty"
    links = [l.split("#")[0] for l in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:|^#", l)]
    missing = [l for l in links if not (ROOT/l).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


# ---------------------------------------------------------------- API docs

def _module_notebooks()->dict[str, Path]:
    "module name -> the notebook it is exported from (`#| default_exp`)."
    res = {}
    for nb in sorted(NBS.glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if m := re.search(r"^#\|\s*default_exp\s+(\S+)", "".join(cell["source"]), re.M):
                res[m[1]] = nb
                break
    return res


def _undocumented_params(obj)->list[str]:
    from fastcore.docments import docments
    if inspect.isclass(obj) and not inspect.isfunction(obj.__init__): return []  # e.g. exceptions: builtin __init__
    docs, var = docments(obj, full=True), (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    # *args/**kwargs are exempt: fastcore's docments cannot attach a comment to them (say what they take in the docstring)
    return [k for k, v in docs.items() if k not in ("self", "cls", "return") and v.get("kind") not in var and not v["docment"]]


@pytest.mark.parametrize("module", sorted(_module_notebooks()))
def test_public_api_documented(module):
    "Every public function/class has a `show_doc` cell in its notebook, and every one of its parameters a docment."
    mod = importlib.import_module(f"netdeviation.{module}")
    source = "".join("".join(c["source"]) for c in json.loads(_module_notebooks()[module].read_text())["cells"]
                     if c["cell_type"] == "code")
    problems = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)): continue
        if not re.search(rf"show_doc\(\s*{re.escape(name)}\s*[,)]", source): problems.append(f"{name}: no show_doc({name})")
        if params := _undocumented_params(obj): problems.append(f"{name}: parameters without a docment {params}")
    assert not problems, f"netdeviation.{module}:\n  " + "\n  ".join(problems)


def _docs_time_cells(nb:Path)->list[str]:
    "Cells that nbdev runs at docs time (they import) but that also compute something."
    bad = []
    for cell in json.loads(nb.read_text())["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] != "code" or re.search(r"^#\|\s*(export|exports|exporti)\b", src, re.M): continue
        code = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("#|", "%", "!")))
        try: nodes = list(ast.walk(ast.parse(code)))
        except SyntaxError: continue
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes):
            bad.append(src.splitlines()[0][:80])
    return bad


@pytest.mark.parametrize("nb", sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob("*.ipynb")
                                      if not any(s[0] in "_." for s in p.relative_to(NBS).parts)))
def test_docs_build_runs_no_lesson_code(nb):
    "nbdev executes every cell that imports at docs time: such cells must only import, so docs never compute or train."
    bad = _docs_time_cells(NBS/nb)
    assert not bad, f"{nb}: cells mixing imports with other code run at docs time: {bad}"
