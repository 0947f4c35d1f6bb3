"""The published docs: the site builds; every page loads in headless Chromium with the network off, with its formulas
typeset (no raw TeX), nothing clipped without a scrollbar, wide tables and formulas scrolling with a hint, every figure
loaded, no JavaScript error; every internal link resolves; search finds the analysis page; the conventions of nbdev
sites hold (copy buttons, previous/next links, an API index of every module, figure captions, a menu button on narrow
screens, favicon and description, source and issue links); README.md is what nbs/index.ipynb generates; every public
name has a documented `show_doc` entry; LICENSE and CITATION.cff are there. Screenshots go to test-output/."""
import ast, base64, functools, http.server, importlib, importlib.util, inspect, json, posixpath, re, shutil, subprocess, sys
import os, signal, tempfile, threading, time, urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from bs4 import BeautifulSoup

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
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network but this machine: remote loads fail fast
                  "--window-size=1400,1000", "--remote-debugging-port=0"]


class Chromium:
    "Headless Chromium driven through the DevTools protocol (one page)."
    def __init__(self, exe:str, user_data_dir:Path, timeout:float=300):  # generous: only a hung browser reaches it
        import websocket  # websocket-client
        self.timeout, self.msg_id = timeout, 0
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # its own group: see close
        port_file, deadline = user_data_dir/"DevToolsActivePort", time.time() + timeout
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.proc.poll() is not None: raise RuntimeError(f"chromium did not start in {timeout:g} s (hung?)")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout))
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.errors = []   # uncaught JavaScript exceptions of the current page
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _recv_until(self, done):
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("method") == "Runtime.exceptionThrown":
                d = msg["params"]["exceptionDetails"]
                self.errors.append((d.get("exception") or {}).get("description") or d.get("text", "?"))
            if done(msg): return msg
        raise TimeoutError(f"chromium: no answer in {self.timeout:g} s (hung?)")

    def send(self, method:str, **params)->dict:
        self.msg_id += 1
        self.ws.send(json.dumps({"id": self.msg_id, "method": method, "params": params}))
        msg = self._recv_until(lambda m: m.get("id") == self.msg_id)
        if "error" in msg: raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    def goto(self, url:str):
        "Open `url` and wait for its load event and for every image to finish (or fail) loading."
        self.errors = []
        self.send("Page.navigate", url=url)
        self._recv_until(lambda m: m.get("method") == "Page.loadEventFired")
        self.eval("Promise.all([...document.images].map(i => i.complete ? 0 : "
                  "new Promise(r => { i.onload = i.onerror = r; })))")

    def eval(self, js:str):
        res = self.send("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res: raise RuntimeError(f"javascript: {res['exceptionDetails']}")
        return res["result"].get("value")

    def viewport(self, width:int, height:int):
        "Emulate a window of `width` x `height` CSS pixels (`reset_viewport` goes back to the window's own)."
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def reset_viewport(self): self.send("Emulation.clearDeviceMetricsOverride")

    def screenshot(self, path:Path):
        "A full-page PNG screenshot."
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 12000), "scale": 1}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self):
        "End the browser and every process it started: its helpers write to the profile until they exit."
        self.ws.close()
        self.proc.terminate()
        try: self.proc.wait(timeout=30)
        finally:
            try: os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError: pass  # the whole group had already exited


PAGE_REPORT = r"""(async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;   // formulas typeset (or failed)
  const main = document.querySelector('main') || document.body, right = main.getBoundingClientRect().right;
  const scrolls = el => { for (let a = el.parentElement; a && a !== main.parentElement; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
  const name = el => el.tagName.toLowerCase() + (el.className && typeof el.className === 'string' && el.className
      ? '.' + el.className.trim().split(/\s+/).slice(0, 2).join('.') : '');
  const clipped = [];
  for (const el of main.querySelectorAll('*')) {
    if (el.closest('mjx-container') && el.tagName !== 'MJX-CONTAINER') continue;
    const cs = getComputedStyle(el), r = el.getBoundingClientRect();
    if (cs.display !== 'inline' && el.scrollWidth > el.clientWidth + 1 && ['hidden', 'clip'].includes(cs.overflowX))
      clipped.push(`${name(el)} hides ${el.scrollWidth - el.clientWidth} px`);
    else if (r.width && r.right > right + 1 && !scrolls(el))
      clipped.push(`${name(el)} runs ${Math.round(r.right - right)} px past the page`);
  }
  const prose = document.body.cloneNode(true);   // text a reader sees as prose: code (except math-in-code) removed
  prose.querySelectorAll('pre:not(.math-in-code), code, script, style, mjx-container, .jp-CodeCell .jp-InputArea').forEach(e => e.remove());
  return {
    title: document.title,
    h1: (document.querySelector('h1') || {}).textContent || '',
    headings: [...document.querySelectorAll('main h1, main h2, main h3, main h4')].map(h => h.textContent.replace('¶', '').trim()),
    text: document.body.innerText.length,
    images: [...document.images].map(i => ({src: i.currentSrc || i.src, loaded: i.complete && i.naturalWidth > 0})),
    nav: [...document.querySelectorAll('header a[href], nav a[href]')].map(a => a.href),
    remote: [...document.querySelectorAll('script[src], link[href][rel=stylesheet], img[src]')]
      .map(e => e.src || e.href).filter(u => /^https?:/.test(u) && !u.startsWith(location.origin)),
    math: document.querySelectorAll('mjx-container').length,
    math_errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent).slice(0, 5),
    raw_tex: [...prose.textContent.matchAll(/\$\$[^$]+\$\$|\$[^$\n]+\$|\\\(.+?\\\)|\\\[.+?\\\]/gs)].map(m => m[0].slice(0, 60)).slice(0, 5),
    clipped: clipped.slice(0, 8), n_clipped: clipped.length,
    search_box: !!document.querySelector('#site-search input'),
  };
})()"""


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
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # a helper killed mid-write may leave a file behind
        b = Chromium(exe, Path(profile))
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(site):
    "The built site over HTTP on 127.0.0.1 (search needs HTTP: browsers refuse its modules and index from file://)."
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    failed = []   # the paths it answered with an error (4xx, 5xx)
    def log_message(self, *args): pass
    def log_request(self, code="-", size="-"):
        try: bad = int(code) >= 400
        except (TypeError, ValueError): bad = False
        if bad: _QuietHandler.failed.append(self.path)


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


def _built_pages()->list[str]:
    "Every page the site builds (relative to the site root), from the notebooks `_quarto.yml` renders."
    pages = build_site._site_pages_by_out()
    return sorted(pages)


GUIDES = ["index.html", "tutorial.html", "byom.html", "benchmark.html", "analysis.html", "validity.html", "the_paper.html"]
SCREENSHOTS = {"index.html", "tutorial.html", "byom.html", "benchmark.html", "analysis.html",   # home, the guides,
               "advisor.html", "bounds.html"}                                                   # two API pages

# Tables and display formulas: each fits its container, or scrolls inside a wrapper that fits the page and says it
# scrolls (the builder's "scroll →" note); `scrolling` counts those that scroll at this width.
WIDE_REPORT = r"""(async () => {
  if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
  const main = document.querySelector('main'), right = main.getBoundingClientRect().right;
  const scroller = el => { for (let a = el; a && a !== main; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return a; } return null; };
  const bad = [];
  let scrolling = 0;
  for (const el of main.querySelectorAll('table, mjx-container[display="true"] > svg')) {
    const what = el.tagName === 'TABLE' ? 'table' : 'formula', s = scroller(el.parentElement);
    const r = el.getBoundingClientRect(), box = el.parentElement.getBoundingClientRect();
    if (!s) {
      if (r.width > box.width + 1 || r.right > right + 1) bad.push(`${what} ${Math.round(r.width)} px wide in ${Math.round(box.width)} px, no scrolling wrapper`);
      continue;
    }
    if (s.getBoundingClientRect().right > right + 1) bad.push(`${what}: its scrolling wrapper runs past the page`);
    if (s.scrollWidth <= s.clientWidth + 1) continue;
    scrolling++;
    const hint = s.closest('.scroll-box');
    if (!hint || !hint.classList.contains('overflows') || !getComputedStyle(hint, '::before').content.includes('scroll'))
      bad.push(`${what} scrolls ${s.scrollWidth - s.clientWidth} px without a "scroll" hint`);
  }
  return {bad: bad.slice(0, 6), n_bad: bad.length, scrolling};
})()"""


def test_site_config_is_single():
    "`_quarto.yml` is the one site configuration: nbs/ holds no second copy."
    assert not any((NBS/f).exists() for f in ("_quarto.yml", "nbdev.yml", "sidebar.yml"))


@pytest.mark.parametrize("src", _site_pages())
def test_navigation_page_exists(src):
    assert (NBS/src).exists(), f"_quarto.yml names nbs/{src}, which does not exist"


@pytest.mark.parametrize("page", _built_pages())
def test_page_in_browser(site, browser, page):
    "With the network off: formulas typeset from the site's own MathJax, no raw TeX, nothing clipped, every figure loaded."
    path = site/page
    assert path.exists(), f"{page} was not built"
    browser.goto(path.as_uri())
    r = browser.eval(PAGE_REPORT)
    if page in SCREENSHOTS:
        SHOTS.mkdir(exist_ok=True)
        browser.screenshot(SHOTS/page.replace(".html", ".png"))
    assert r["h1"].strip() and r["text"] > 500, f"{page}: rendered almost nothing"
    assert not r["remote"], f"{page}: loads from the network: {r['remote'][:3]}"
    assert not r["raw_tex"], f"{page}: TeX left untypeset: {r['raw_tex']}"
    assert not r["math_errors"], f"{page}: MathJax could not typeset: {r['math_errors']}"
    assert not r["clipped"], f"{page}: {r['n_clipped']} elements clipped without a scrollbar, e.g. {r['clipped']}"
    broken = [i["src"][:120] for i in r["images"] if not i["loaded"]]
    assert not broken, f"{page}: figures that did not load: {broken}"
    dashed = [h for h in r["headings"] if h.endswith(" -")]
    assert not dashed, f"{page}: headings with nbdev's trailing ' -': {dashed}"
    assert r["search_box"], f"{page}: no search box"
    local = {_local_file(u) for u in r["nav"]} - {None}
    assert len(local) >= 5, f"{page}: navigation has {len(local)} local links"
    dangling = sorted(str(p.relative_to(site)) if p.is_relative_to(site) else str(p) for p in local if not p.is_file())
    assert not dangling, f"{page}: navigation links to missing pages {dangling}"
    wide = browser.eval(WIDE_REPORT)
    assert not wide["bad"], f"{page}: {wide['n_bad']} tables or formulas wider than their container, e.g. {wide['bad']}"
    assert not browser.errors, f"{page}: JavaScript errors {browser.errors[:3]}"


def test_formulas_are_typeset(site, browser):
    "The pages with the most TeX render it: prose, display equations with the paper's numbers, and show_doc comments."
    counts = {}
    for page in ("bounds.html", "deviation.html", "the_paper.html"):
        browser.goto((site/page).as_uri())
        counts[page] = browser.eval("MathJax.startup.promise.then(() => ["
                                    "document.querySelectorAll('main mjx-container').length,"
                                    "document.querySelectorAll('pre.math-in-code mjx-container').length])")
    assert all(n > 50 for n, _ in counts.values()), counts
    assert counts["deviation.html"][1] > 0, "no formula typeset in a show_doc signature's parameter comments"
    browser.goto((site/"the_paper.html").as_uri())
    shown = browser.eval("MathJax.startup.promise.then(() => [...document.querySelectorAll('mjx-container[display=true]')]"
                         ".map(m => m.textContent).join(' '))")  # the MathML copy MathJax adds for screen readers
    numbers = [f"(3.{i})" for i in range(1, 14) if i != 7]   # the thesis's eqs. 3.1-3.13 (3.7 is not used)
    missing = [n for n in numbers if n not in shown]
    assert not missing, f"the_paper.html: equations not shown with their numbers: {missing}"


def _html_files(site:Path)->list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.relative_to(site).parts[0] not in ("pagefind", "assets"))


def test_internal_links_resolve(site):
    "Every relative link and anchor on every page resolves inside the site; none points at the research notes."
    ids, soups = {}, {}
    for f in _html_files(site):
        soups[f] = BeautifulSoup(f.read_text(), "html.parser")
        ids[f] = {t["id"] for t in soups[f].find_all(id=True)} | {t["name"] for t in soups[f].find_all("a", attrs={"name": True})}
    bad = []
    for f, soup in soups.items():
        main = BeautifulSoup(str(soup.find("main")), "html.parser")   # prose and code comments, not code
        text = " ".join(c.get_text() for c in main.select("pre span.c1"))
        for pre in main.find_all("pre"): pre.decompose()
        if raw := re.findall(r"\[[^\]\n]*\]\([^)\s]+\)", text + main.get_text()):
            bad.append(f"{f.relative_to(site)}: markdown link left as text: {raw[0][:80]}")
        for a in soup.find_all("a", href=True):
            href = a["href"]
            if "PAPER.md" in href: bad.append(f"{f.relative_to(site)}: links to PAPER.md")
            if re.match(r"^[a-z]+:", href) or href.startswith("//"): continue
            path, _, frag = href.partition("#")
            target = (f.parent/unquote(path)).resolve() if path else f
            if not target.is_file() or not target.is_relative_to(site.resolve()):
                bad.append(f"{f.relative_to(site)}: {href} (no such file)")
            elif frag and target.suffix == ".html" and unquote(frag) not in ids.get(target, set()):
                bad.append(f"{f.relative_to(site)}: {href} (no such anchor)")
    assert not bad, f"{len(bad)} broken internal links:\n  " + "\n  ".join(bad[:20])


SEARCH_API = """(async () => {   // Pagefind's own API, where the search box finds it: every result, unranked
  const box = document.querySelector('#site-search'), base = new URL((box ? box.dataset.root : '.') + '/', location.href);
  const pagefind = await import(new URL('pagefind/pagefind.js', base).href);
  await pagefind.options({baseUrl: base.pathname});
  await pagefind.init?.();
  const r = await pagefind.search(%s);
  return (await Promise.all(r.results.map(x => x.data()))).map(d => new URL(d.url, location.href).href.split('#')[0]);
})()"""


def test_search_finds_the_analysis(site, browser, served):
    "Pagefind's index, on the site served over HTTP: among all the results for 'Net Deviation' is the analysis page."
    assert (site/"pagefind"/"pagefind.js").is_file(), "the search index was not built (pip install 'pagefind[bin]')"
    browser.goto(f"{served}/index.html")
    urls = browser.eval(SEARCH_API % json.dumps("Net Deviation"))
    print(f"search 'Net Deviation': {len(urls)} pages")
    assert f"{served}/analysis.html" in urls, f"search for 'Net Deviation' found {urls}"


def test_search_box_lists_results(site, browser, served):
    "The search box itself works: typing 'Net Deviation' into it lists results (which, and in what order, is Pagefind's)."
    browser.goto(f"{served}/index.html")
    n = browser.eval("""(async () => {   // no deadline here: only the browser client's (generous) one for a hang
      const sleep = ms => new Promise(r => setTimeout(r, ms));
      let input;
      while (!(input = document.querySelector('.pagefind-ui__search-input'))) await sleep(50);
      input.value = 'Net Deviation';
      input.dispatchEvent(new Event('input', {bubbles: true}));
      while (!document.querySelector('a.pagefind-ui__result-link')) await sleep(50);
      return document.querySelectorAll('a.pagefind-ui__result-link').length;
    })()""")
    assert n >= 1


def test_search_offline_says_how(site, browser):
    "From file://, where browsers refuse search, the search box says to serve the site instead."
    browser.goto((site/"index.html").as_uri())
    browser.send("Emulation.setFocusEmulationEnabled", enabled=True)   # headless: let the page take focus
    r = browser.eval("""(() => { const i = document.querySelector('#site-search .search-offline'); i.focus();
      const n = document.querySelector('#site-search .search-note');
      return {visible: !i.hidden && i.offsetWidth > 0, note: n.offsetWidth > 0 ? n.textContent : ''}; })()""")
    assert r["visible"] and "http.server" in r["note"], r


# ---------------------------------------------------------------- conventions of nbdev / fastai documentation sites

def _soup(site:Path, page:str)->BeautifulSoup: return BeautifulSoup((site/page).read_text(), "html.parser")


def _sidebar_order()->list[str]:
    "The pages of the sidebar of `_quarto.yml`, in order, each once (as site paths)."
    src_to_out = {src: out for out, src in build_site._site_pages_by_out().items()}
    def hrefs(items):
        for it in items or []:
            if isinstance(it, str): yield it
            elif "section" in it: yield from hrefs(it.get("contents"))
            else: yield it["href"]
    contents = yaml.safe_load((ROOT/"_quarto.yml").read_text())["website"]["sidebar"]["contents"]
    return list(dict.fromkeys(src_to_out[s] for s in hrefs(contents) if s in src_to_out))


@pytest.mark.parametrize("page", _built_pages())
def test_copy_buttons(site, page):
    "Every code block (code cell, fenced code, show_doc signature) has a copy button; outputs have none."
    main = _soup(site, page).find("main")
    blocks = main.select(".jp-InputArea pre, .jp-RenderedMarkdown pre")
    missing = [pre.get_text()[:60] for pre in blocks
               if not ((box := pre.find_parent(class_="code-block")) and box.find("button", class_="copy-code", recursive=False))]
    assert not missing, f"{page}: {len(missing)} code blocks without a copy button, e.g. {missing[:3]}"
    on_outputs = [b for b in main.select(".jp-RenderedText .copy-code")]
    assert not on_outputs, f"{page}: copy buttons on text outputs"


def test_copy_button_copies(site, browser, served):
    "Clicking a code block's copy button puts its code on the clipboard."
    browser.send("Browser.grantPermissions", origin=served, permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    browser.send("Emulation.setFocusEmulationEnabled", enabled=True)   # headless: the clipboard needs a focused page
    browser.goto(f"{served}/tutorial.html")
    r = browser.eval("""(async () => {
      const box = document.querySelector('main .jp-InputArea .code-block'), btn = box.querySelector('.copy-code');
      const want = box.querySelector('pre').textContent.replace(/\\n$/, '');
      const done = new Promise(res => new MutationObserver(() => {   // the button says how it went
        if (btn.classList.contains('copied') || btn.classList.contains('copy-failed')) res(btn.className); })
        .observe(btn, {attributes: true}));
      btn.click();
      const state = await done;
      return {state, want, have: await navigator.clipboard.readText()};
    })()""")
    assert "copied" in r["state"], r
    assert r["have"] == r["want"] and r["want"].strip(), r


@pytest.mark.parametrize("page", _sidebar_order())
def test_prev_next(site, page):
    "Each page links to the pages before and after it in the sidebar of `_quarto.yml` (the first has no previous, the last no next)."
    order, nav = _sidebar_order(), _soup(site, page).find("nav", class_="page-nav")
    assert nav, f"{page}: no previous/next links"
    i = order.index(page)
    for cls, j in (("page-prev", i-1), ("page-next", i+1)):
        a = nav.find("a", class_=cls)
        want = order[j] if 0 <= j < len(order) else None
        have = posixpath.normpath(posixpath.join(posixpath.dirname(page), a["href"])) if a else None
        assert have == want, f"{page}: {cls} links to {have}, the sidebar says {want}"


def _plain(md:str)->str:
    "Markdown as the text a reader sees (code marks, emphasis and link targets removed), whitespace collapsed."
    return " ".join(re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", re.sub(r"[`*]", "", md)).split())


def test_api_index_lists_every_module(site):
    "api.html lists every module notebook `nbs/NN*_*.ipynb`, linked to its page with its notebook's subtitle; the navbar's API goes there."
    soup = _soup(site, "api.html")
    main = soup.find("main")
    items = {posixpath.normpath(a["href"]): " ".join(a.find_parent("li").get_text().split())
             for a in main.select("li > a[href]")}
    problems = []
    for module, nb in _module_notebooks().items():
        text = items.get(f"{module}.html")
        if text is None: problems.append(f"{module}: not listed")
        elif _plain(build_site.full_subtitle(nb) or "") not in text: problems.append(f"{module}: listed without its subtitle: {text[:80]}")
    assert not problems, "api.html:\n  " + "\n  ".join(problems)
    api = [a["href"] for a in soup.select("header.site-navbar a[href]") if a.get_text().strip() == "API"]
    assert api == ["api.html"], f"the navbar's API link goes to {api}"


def _fig_caps()->list[tuple[str, str]]:
    "(notebook, caption) for every `#| fig-cap` of a notebook the site renders."
    res = []
    for out, src in build_site._site_pages_by_out().items():
        for cell in json.loads((NBS/src).read_text())["cells"]:
            if cell["cell_type"] == "code" and (cap := build_site.cell_options("".join(cell["source"]))[0].get("fig-cap")):
                res.append((src, cap))
    return res


@pytest.mark.parametrize("src,caption", _fig_caps())
def test_figure_captions(site, src, caption):
    "Every `#| fig-cap` renders as the <figcaption> of a <figure> whose image is above it."
    out = {s: o for o, s in build_site._site_pages_by_out().items()}[src]
    figs = [f for f in _soup(site, out).find("main").find_all("figure") if f.figcaption]
    found = [f for f in figs if " ".join(f.figcaption.get_text().split()) == _plain(caption)]
    assert found, f"{out}: no figcaption {caption[:60]!r}; figcaptions: {[f.figcaption.get_text()[:60] for f in figs]}"
    first = found[0].find(["img", "svg"])
    assert first and first.find_next("figcaption") is found[0].figcaption, f"{out}: the caption is not under its image"


NARROW_REPORT = """(() => {
  const shown = el => !!el && el.offsetWidth > 0 && el.offsetHeight > 0, root = document.documentElement;
  const btn = document.querySelector('.nav-toggle'), side = document.querySelector('.site-sidebar'),
        links = document.querySelector('.site-navbar .nav-left');
  const r = {top: document.querySelector('main').getBoundingClientRect().top + scrollY, screen: innerHeight,
             overflow: root.scrollWidth - root.clientWidth, button: shown(btn), closed: !shown(side) && !shown(links)};
  btn.click();
  r.open = shown(side) && shown(links) && btn.getAttribute('aria-expanded') === 'true';
  btn.click();
  r.closed_again = !shown(side) && !shown(links);
  return r;
})()"""


def test_narrow_screen(site, browser):
    "At 500 px wide the page's content starts on the first screen: the navbar links and the sidebar fold behind a menu button."
    SHOTS.mkdir(exist_ok=True)
    browser.viewport(500, 900)
    try:
        for page in ("index.html", "analysis.html", "bounds.html", "sweeps/corpus.html"):
            browser.goto((site/page).as_uri())
            r = browser.eval(NARROW_REPORT)
            if page == "index.html": browser.screenshot(SHOTS/"index-500.png")
            assert r["top"] < r["screen"], f"{page}: the content starts at y={r['top']:.0f}, below the first screen ({r['screen']} px)"
            assert r["overflow"] <= 0, f"{page}: the page is {r['overflow']} px wider than the screen"
            assert r["button"] and r["closed"], f"{page}: no menu button, or the sidebar shows before it is pressed: {r}"
            assert r["open"] and r["closed_again"], f"{page}: the menu button does not open and close the navigation: {r}"
            wide = browser.eval(WIDE_REPORT)
            assert not wide["bad"], f"{page} at 500 px: {wide['bad']}"
    finally: browser.reset_viewport()


def test_wide_tables_scroll(site, browser):
    "At 500 px the analysis page's wide tables (ours | paper) scroll in their wrapper with a hint; none is cut or spills."
    browser.viewport(500, 900)
    try:
        browser.goto((site/"analysis.html").as_uri())
        wide = browser.eval(WIDE_REPORT)
    finally: browser.reset_viewport()
    assert not wide["bad"], wide["bad"]
    assert wide["scrolling"] > 0, "no table scrolls at 500 px (the test would check nothing)"


# pandas' marks of a table it did not print whole, in every output cell (nbconvert's static site or Quarto's): a table
# cell cut short ("text..." / "text…", max_colwidth) or elided ("..." alone, max_columns / max_rows), the "N rows × M
# columns" footer it adds when it elides; in printed tables, a row of "..." alone, a "..." column between two-space
# gaps, a cell cut short before a column gap, the "[N rows x M columns]" footer.
TRUNCATION_REPORT = r"""(() => {
  const outs = [...document.querySelectorAll('.jp-OutputArea, .cell-output')], found = [];
  const cut = /(\.\.\.|…)$/, elided = /^\s*((\.\.\.|…)\s*)+$|\s{2}(\.\.\.|…)(\s{2}|\s*$)|\S(\.\.\.|…)(\s{2}|\s*\\?$)|^\s*\[\d+ rows x \d+ columns\]\s*$/;
  for (const out of outs) {
    const hits = [];
    for (const c of out.querySelectorAll('td, th')) if (cut.test(c.textContent.trim())) hits.push(`table cell ${JSON.stringify(c.textContent.trim().slice(-50))}`);
    for (const p of out.querySelectorAll('p')) if (/^\d+ rows × \d+ columns$/.test(p.textContent.trim())) hits.push(`footer "${p.textContent.trim()}"`);
    for (const pre of out.querySelectorAll('pre')) {
      if (pre.closest('.jp-RenderedMarkdown, .cell-output-markdown')) continue;   // show_doc signatures: prose, not tables
      for (const line of pre.textContent.split('\n')) if (elided.test(line)) hits.push(`printed line ${JSON.stringify(line.trim().slice(0, 70))}`);
    }
    if (hits.length) found.push(hits[0] + (hits.length > 1 ? ` (and ${hits.length - 1} more in the cell)` : ''));
  }
  return {outputs: outs.length, truncated: found};
})()"""


def _truncation_report(browser, html:str, tmp:Path)->dict:
    page = tmp/"t.html"
    page.write_text(f"<html><body><main>{html}</main></body></html>")
    browser.goto(page.as_uri())
    return browser.eval(TRUNCATION_REPORT)


def test_truncation_report_finds_pandas_marks(browser, tmp_path):
    "The check below sees each mark pandas leaves (a cut cell, an elided row and column, its footer), HTML and printed, and nothing in a whole table."
    import pandas as pd
    df = pd.DataFrame({f"c{i}": [f"a long status text number {j}" for j in range(10)] for i in range(6)})
    cell = lambda kind, body: f'<div class="jp-OutputArea"><div class="{kind}">{body}</div></div>'
    with pd.option_context("display.max_colwidth", 12, "display.max_columns", None, "display.max_rows", None, "display.width", 10_000):
        cut_html, cut_text = df._repr_html_(), repr(df)
    with pd.option_context("display.max_colwidth", None, "display.max_columns", 4, "display.max_rows", 6, "display.width", 10_000):
        elided_html, elided_text = df._repr_html_(), repr(df)
    with pd.option_context("display.max_colwidth", None, "display.max_columns", None, "display.max_rows", None, "display.width", 10_000):
        whole_html, whole_text = df._repr_html_(), repr(df)
    import html as h
    pre = lambda t: cell("jp-RenderedText", f"<pre>{h.escape(t)}</pre>")
    r = _truncation_report(browser, cell("jp-RenderedHTMLCommon", cut_html) + pre(cut_text) + cell("jp-RenderedHTMLCommon", elided_html)
                           + pre(elided_text) + cell("jp-RenderedHTMLCommon", whole_html) + pre(whole_text), tmp_path)
    assert r["outputs"] == 6 and len(r["truncated"]) == 4, r
    one_line = pre(df.iloc[:, :2].to_string(max_colwidth=12))   # a cut cell on the last column of a printed line
    assert len(_truncation_report(browser, one_line, tmp_path)["truncated"]) == 1


@pytest.mark.parametrize("page", _built_pages())
def test_no_truncated_tables(site, browser, page):
    "No output cell shows a table pandas printed only in part (`report.display_options` prints them whole)."
    browser.goto((site/page).as_uri())
    r = browser.eval(TRUNCATION_REPORT)
    assert not r["truncated"], f"{page}: {len(r['truncated'])} of {r['outputs']} output cells show a truncated table: {r['truncated'][:4]}"


@pytest.mark.parametrize("page", _built_pages())
def test_favicon_and_description(site, page):
    "Every page links the site's SVG favicon and has a <meta name=description>: its subtitle, else the site's description."
    head = _soup(site, page).find("head")
    icon = head.find("link", rel="icon")
    assert icon and (site/page).parent.joinpath(icon["href"]).resolve().is_file(), f"{page}: no favicon link, or it is missing"
    assert (site/page).parent.joinpath(icon["href"]).read_text().lstrip().startswith("<svg"), f"{page}: the favicon is not an SVG"
    meta = head.find("meta", attrs={"name": "description"})
    w = yaml.safe_load((ROOT/"_quarto.yml").read_text())["website"]
    want = _plain(build_site.full_subtitle(NBS/build_site._site_pages_by_out()[page]) or w["description"])
    assert meta and meta["content"] == want, f"{page}: description {meta and meta['content']!r}, expected {want!r}"


def test_nothing_missing_over_http(site, browser, served):
    "Served over HTTP, pages ask for no file the site lacks (browsers ask for a favicon), and their icon loads."
    _QuietHandler.failed.clear()
    for page in ("index.html", "bounds.html", "sweeps/corpus.html"):
        browser.goto(f"{served}/{page}")
        icon = browser.eval("fetch(document.querySelector('link[rel=icon]').href).then(r => r.ok ? r.headers.get('content-type') : '')")
        assert "svg" in icon, f"{page}: the favicon did not load ({icon!r})"
    assert not _QuietHandler.failed, f"requests the site could not answer: {sorted(set(_QuietHandler.failed))}"


@pytest.mark.parametrize("page", _built_pages())
def test_repo_actions(site, page):
    "Every page links to a new issue of the repository (`repo-actions: [issue]`), in the TOC column and the footer."
    repo = yaml.safe_load((ROOT/"_quarto.yml").read_text())["website"]["repo-url"].rstrip("/")
    soup = _soup(site, page)
    for where in ("nav.site-toc", "footer.site-footer"):
        links = [a.get_text().strip() for a in soup.select(f"{where} a[href='{repo}/issues/new']")]
        assert links == ["Report an issue"], f"{page}: {where} has issue links {links}"


def test_source_links_float_right(site, browser):
    "show_doc's `source` link sits at the right end of its definition's heading, small, as on nbdev sites."
    browser.goto((site/"bounds.html").as_uri())
    r = browser.eval("""[...document.querySelectorAll('main p.source-link')].map(p => {
      const h = p.nextElementSibling, a = p.querySelector('a'), pr = a.getBoundingClientRect(), hr = h.getBoundingClientRect();
      return {float: getComputedStyle(p).float, heading: /^H[2-4]$/.test(h.tagName),
              beside: pr.top < hr.bottom && pr.bottom > hr.top,
              smaller: parseFloat(getComputedStyle(a).fontSize) < parseFloat(getComputedStyle(h).fontSize)};
    })""")
    assert len(r) > 5, f"bounds.html: {len(r)} source links"
    bad = [x for x in r if not (x["float"] == "right" and x["heading"] and x["beside"] and x["smaller"])]
    assert not bad, f"bounds.html: source links not beside their heading: {bad[:3]}"


def _only_assertions(code:str)->bool:
    lines = [l for l in code.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    return bool(lines) and all(l.lstrip().startswith(("test_", "assert ")) or l.startswith((" ", ")")) for l in lines)


@pytest.mark.parametrize("page", GUIDES)
def test_guides_hide_bookkeeping(site, page):
    "Guide pages show no cell of bare assertions (they are `#| hide`: they still run in nbdev_test)."
    soup = BeautifulSoup((site/page).read_text(), "html.parser")
    shown = [pre.get_text()[:80] for pre in soup.select(".jp-InputArea pre") if _only_assertions(pre.get_text())]
    assert not shown, f"{page}: bookkeeping assertion cells shown: {shown}"


@pytest.mark.parametrize("page", _built_pages())
def test_subtitle_whole(site, page):
    "A page's subtitle is its notebook's whole first `>` blockquote, not only the first line."
    src = build_site._site_pages_by_out()[page]
    want = build_site.full_subtitle(NBS/src)
    if not want: return
    bq = BeautifulSoup((site/page).read_text(), "html.parser").find("main").find("blockquote")
    have = " ".join(bq.get_text().split()) if bq else ""
    want = " ".join(re.sub(r"[`*]", "", want).split())
    assert have == want, f"{page}: subtitle {have!r}, expected {want!r}"


def test_no_notebook_cites_the_research_notes():
    "PAPER.md is research material a reader cannot open: notebooks link to sections of the paper page instead."
    cites = []
    for nb in sorted(NBS.rglob("*.ipynb")):
        if any(s[0] in "_." for s in nb.relative_to(NBS).parts): continue
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if "PAPER.md" in "".join(cell["source"]): cites.append(f"{nb.relative_to(NBS)} cell {i}")
    assert not cites, "cells that cite PAPER.md (link to a section of nbs/the_paper.ipynb instead):\n  " + "\n  ".join(cites)


def test_paper_page_anchors():
    "The paper page gives every section a stable `{#id}`, and the links into it from the other notebooks name one of them."
    text = "".join("".join(c["source"]) for c in json.loads((NBS/"the_paper.ipynb").read_text())["cells"])
    headings = re.findall(r"^#{2,3} .*$", text, re.M)
    missing = [h for h in headings if not re.search(r"\{#[\w-]+\}\s*$", h)]
    assert not missing, f"the_paper.ipynb sections without an explicit id: {missing}"
    anchors = set(re.findall(r"\{#([\w-]+)\}", text))
    links = set()
    for nb in NBS.rglob("*.ipynb"):
        links |= set(re.findall(r"(?<![\w-])the_paper\.ipynb#([\w.-]+)", nb.read_text()))
    assert links and links <= anchors, f"links to missing sections of the paper page: {sorted(links - anchors)}"


# ---------------------------------------------------------------- license and citation

def test_license_and_citation():
    "LICENSE is the Apache-2.0 text settings.ini declares; CITATION.cff cites the paper and the package."
    cfg = (ROOT/"settings.ini").read_text()
    assert re.search(r"^license\s*=\s*apache2\s*$", cfg, re.M)
    lic = (ROOT/"LICENSE").read_text()
    assert "Apache License" in lic and "Version 2.0, January 2004" in lic and "END OF TERMS AND CONDITIONS" in lic
    cff = yaml.safe_load((ROOT/"CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0" and cff["type"] == "software"
    assert cff["version"] == re.search(r"^version\s*=\s*(\S+)", cfg, re.M)[1], "CITATION.cff version differs from settings.ini"
    paper = cff["preferred-citation"]
    assert paper["doi"] == "10.1007/978-3-030-34869-4_17" and paper["year"] == 2019
    assert [a["family-names"] for a in paper["authors"]] == ["John", "Mishra", "Sheeba Rani"]
    assert (ROOT/"CHANGELOG.md").read_text().startswith("# Changelog")


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
    for nb in sorted(NBS.glob("[0-9][0-9]*_*.ipynb")):
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
