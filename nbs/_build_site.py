"""Build the documentation site (into `_docs/`) and README.md from the notebooks.

    python nbs/_build_site.py docs [--static] [--force]   # the site: Quarto where installed, else static HTML
    python nbs/_build_site.py readme [--check]            # README.md from nbs/index.ipynb (--check: fail on drift)

The top-level `_quarto.yml` is the one site configuration. Both builds start from nbdev's processed notebooks
(`nbdev.serve.proc_nbs`, the step `nbdev_proc_nbs` runs, cached in `_proc/`): only exported code, imports and
`show_doc` cells are executed, every other cell keeps its stored output, so a docs build never trains anything.
We call `proc_nbs` rather than the `nbdev_proc_nbs` command because the command also writes `nbs/_quarto.yml`,
`nbs/nbdev.yml` and `nbs/sidebar.yml` (second copies of the site configuration) and tries to install Quarto with sudo.

- With Quarto: `_quarto.yml` is copied into `_proc/` at build time and `quarto render` builds the site, which is then
  moved to `_docs/` (what `nbdev_docs` does, minus its generated configuration).
- Without Quarto: every processed notebook is converted by nbconvert's `HTMLExporter` (lab template). The Quarto cell
  options nbdev writes (`#| echo: false`, `#| output: false`, `#| include: false`) are applied to the cells, the Quarto
  markdown extensions it emits (link attributes, heading attributes, fenced divs) become plain markdown/HTML, headings
  get Quarto's lower-case ids (so nbdev's cross-links like `models.html#get_model` resolve), links to the hosted site
  and to `.ipynb` files become relative links between the built pages, and every page gets the navbar and sidebar of
  `_quarto.yml` plus an "On this page" table of contents.
- Both: headings lose nbdev's trailing " -" (its `## Title -` convention) and a page's subtitle is its whole first
  `>` blockquote (nbdev keeps only the first line); Quarto's `{#id}` on a heading is kept as the heading's id.
- Conventions of nbdev/fastai sites (static site; Quarto has its own): a copy button on every code block (not on
  outputs); previous / next links under each page in the sidebar's order (`page-navigation: true`); `#| fig-cap`
  (and `#| fig-alt`) as a <figure> with its <figcaption> under the cell's last image; nbdev's `[source]` link floated
  right of its `show_doc` heading, small; the `repo-actions` (e.g. "Report an issue", `<repo-url>/issues/new`) in the
  TOC column, and in the footer where the TOC is hidden; an SVG favicon (`website.favicon`, written by the builder for
  both builds) and a `<meta name="description">` per page (its subtitle, else the site's description).
- API index: the cell `<!-- api-index -->` of `nbs/api.ipynb` becomes, in the processed copy (both builds), one line
  per module notebook `nbs/NN*_*.ipynb`: the module, linked to its page, and its notebook's subtitle (else the module's
  docstring); the navbar's "API" goes there.
- Layout (static site): below 800 px the navbar links and the sidebar fold behind a menu button (so the page starts on
  the first screen); below 1100 px the TOC goes; from 1400 px the main column widens. Tables and display formulas
  wider than the column scroll inside a `.scroll-box`, which says so with a "scroll →" note and a shadow at its right
  edge until scrolled to the end (set by a small script after MathJax typesets and on resize). Nothing from a CDN.
- Formulas (static site): MathJax 3 from the npm package `mathjax` (installed on first use into `build/site-assets/`,
  the single-file TeX-to-SVG component copied into `_docs/assets/mathjax/`), so pages render their formulas offline and
  from `file://`; also in the parameter comments of `show_doc` signatures. Code, tables and formulas scroll instead of clipping.
- Search (static site): Pagefind (the `pagefind` wheel, which ships its binary) indexes `_docs/` after the build. Its
  search box needs the site served over HTTP (`python -m http.server --directory _docs`); from `file://` it says so.
- README.md: nbconvert's `MarkdownExporter` on the processed `nbs/index.ipynb` (nbdev's title cell becomes `# title`
  and `> subtitle`; links and images relative to `nbs/` are re-rooted at the top level). `nbdev_readme` needs Quarto.
"""
from __future__ import annotations
import argparse, json, os, posixpath, re, shutil, subprocess, sys, time
from dataclasses import dataclass
from html import escape
from pathlib import Path

import nbformat, yaml
from bs4 import BeautifulSoup
from jinja2 import DictLoader
from nbconvert import HTMLExporter, MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
NBS, PROC, SITE_YML, README = ROOT/"nbs", ROOT/"_proc", ROOT/"_quarto.yml", ROOT/"README.md"
ASSETS = ROOT/"build"/"site-assets"    # npm packages the static site copies from (gitignored, reinstalled when missing)
MATHJAX_VERSION = "3.2.2"              # npm `mathjax`: the last MathJax 3 release
MATHJAX_FILE = "tex-svg-full.js"       # one file: TeX input, every TeX extension, SVG output (no fonts to load)


def load_site(path:Path=SITE_YML)->dict:
    "The parsed `_quarto.yml`."
    return yaml.safe_load(path.read_text())


def process_notebooks(force:bool=False, n_workers:int=2)->Path:
    "Run nbdev's docs processing of every notebook under nbs/ into `_proc/` (cached by modification time)."
    from nbdev.serve import proc_nbs
    old = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = "ignore"  # nbdev's warnings on cells mixing imports and code: tests/test_docs.py checks those
    try: return Path(proc_nbs(str(NBS), n_workers=n_workers, force=force))
    finally:
        if old is None: del os.environ["PYTHONWARNINGS"]
        else: os.environ["PYTHONWARNINGS"] = old


# ---------------------------------------------------------------- Quarto output -> plain notebooks

_FRONTMATTER = re.compile(r"^---\s*\n(.*?)\n---\s*$", re.S)
_OPTION = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")
_LINK_ATTRS = re.compile(r"(\]\([^)\s]*\))\{[^}\n]*\}")           # [source](url){target="_blank" ...}
_HEADING_ATTRS = re.compile(r"^(#{1,6} .*?)\s*\{([#.][^}\n]*)\}\s*$", re.M)  # ## Title {#id .class}
_HEADING_DASH = re.compile(r"^(#{1,6} .*?\S)\s+-\s*$", re.M)        # nbdev's "## Title -"
_BLOCKQUOTE = re.compile(r"^>[ \t]?(.*)$")
_FENCED_DIV = re.compile(r"^:::+[ \t]*(.*?)[ \t]*$", re.M)         # ::: {.callout-note} ... :::
_MD_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)")                 # [text](path) and ![alt](path)
_HTML_IMG = re.compile(r"(<img\b[^>]*\bsrc=[\"'])([^\"']+)")
_MD_CODE_LINK = re.compile(r"\[`([^`\]]+)`\]\(([^)\s]+)\)")  # [`name`](url), as nbdev links a name in a docment


WIDGET_NOTE = "*An interactive widget: run this notebook in JupyterLab to use it.*"


def strip_heading_dashes(text:str)->str:
    "Markdown with nbdev's trailing \" -\" removed from every heading (`## Title -` renders as `## Title`)."
    return _HEADING_DASH.sub(r"\1", text)


def _heading_attrs(m)->str:
    "A heading's Quarto attributes as a marker span `_finish_page` turns into the heading's id (classes dropped)."
    ids = re.findall(r"#([\w.:-]+)", m[2])
    return m[1] + (f' <span class="heading-id" data-id="{ids[0]}"></span>' if ids else "")


def quarto_md_to_md(text:str)->str:
    "Plain CommonMark for the Quarto extensions nbdev writes: link attributes dropped, heading ids kept, fenced divs as <div>."
    text = _LINK_ATTRS.sub(r"\1", _HEADING_ATTRS.sub(_heading_attrs, strip_heading_dashes(text)))
    def div(m):
        if not m[1]: return "\n</div>\n"
        classes = re.findall(r"\.([\w-]+)", m[1]) or m[1].strip("{} ").split()
        return f'\n<div class="{" ".join(classes)}">\n'
    return _FENCED_DIV.sub(div, text)


def option_value(text:str)->str:
    "A cell option's value as text: YAML quotes removed, booleans as `true`/`false` (`#| echo: False` is `false`)."
    try: v = yaml.safe_load(text)
    except yaml.YAMLError: return text
    return str(v).lower() if isinstance(v, bool) else v if isinstance(v, str) else text


def cell_options(source:str)->tuple[dict, str]:
    "The leading Quarto cell options (`#| key: value`) of a code cell, and the code without them."
    lines, opts = source.splitlines(), {}
    while lines and (m := _OPTION.match(lines[0])):
        opts[m[1]] = option_value(m[2])
        lines.pop(0)
    return opts, "\n".join(lines)


def _md_text(v)->str: return "".join(v) if isinstance(v, list) else v


def full_subtitle(src:Path)->str|None:
    "The whole subtitle of a notebook: every line of the `>` blockquote after its `# title` (nbdev keeps only the first)."
    for cell in nbformat.read(src, as_version=4).cells:
        if cell.cell_type != "markdown" or not re.search(r"^#\s+\S", cell.source, re.M): continue
        lines, quote = cell.source.splitlines(), []
        start = next(i for i, l in enumerate(lines) if re.match(r"^#\s+\S", l)) + 1
        for line in lines[start:]:
            if m := _BLOCKQUOTE.match(line): quote.append(m[1].strip())
            elif quote or line.strip(): break
        return " ".join(q for q in quote if q) or None
    return None


# ---------------------------------------------------------------- the API index

API_MARKER = "<!-- api-index -->"   # the cell of nbs/api.ipynb that the list of modules replaces at build time


def default_exp(src:Path)->str|None:
    "The module a notebook exports to (its `#| default_exp`), if any."
    code = "\n".join(c.source for c in nbformat.read(src, as_version=4).cells if c.cell_type == "code")
    return m[1] if (m := re.search(r"^#\|\s*default_exp\s+(\S+)", code, re.M)) else None


def module_notebooks()->dict[str, str]:
    "Module name -> its notebook (relative to nbs/), for every module notebook `nbs/NN*_*.ipynb`."
    return {m: p.name for p in sorted(NBS.glob("[0-9][0-9]*_*.ipynb")) if (m := default_exp(p))}


def notebook_title(src:Path)->str|None:
    "The `# title` of a notebook's first markdown cell."
    cell = next((c for c in nbformat.read(src, as_version=4).cells if c.cell_type == "markdown"), None)
    return m[1].strip() if cell and (m := re.search(r"^#\s+(.+)$", cell.source, re.M)) else None


def module_purpose(module:str, src:Path)->str:
    "What a module is for: its notebook's subtitle, else the exported module's docstring, else the notebook's title."
    import ast
    if sub := full_subtitle(src): return sub
    py = ROOT/settings_lib()/(module.replace(".", "/") + ".py")
    doc = ast.get_docstring(ast.parse(py.read_text())) if py.exists() else None
    return " ".join(doc.split()) if doc else notebook_title(src) or module


def settings_lib()->str:
    "The package folder, `lib_path` of settings.ini."
    return re.search(r"^lib_path\s*=\s*(\S+)", (ROOT/"settings.ini").read_text(), re.M)[1]


def api_index_markdown()->str:
    "The API index: every module, linked to its page, with what it is for."
    pkg = settings_lib()
    return "\n".join(f"- [`{pkg}.{m}`]({src}): {module_purpose(m, NBS/src)}" for m, src in module_notebooks().items())


def tidy_notebook(nb:nbformat.NotebookNode, src:Path)->bool:
    "Headings without nbdev's trailing \" -\", the whole subtitle in the front matter and the API index filled in, in place; True if it changed."
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "markdown" and (new := strip_heading_dashes(cell.source)) != cell.source:
            cell.source, changed = new, True
        if cell.cell_type == "markdown" and API_MARKER in cell.source: cell.source, changed = api_index_markdown(), True
    desc = full_subtitle(src)
    for cell in nb.cells[:1]:
        if desc and cell.cell_type == "raw" and (m := _FRONTMATTER.match(cell.source.strip())):
            fm = yaml.safe_load(m[1]) or {}
            if fm.get("description") != desc:
                fm["description"] = desc
                cell.source = "---\n" + yaml.safe_dump(fm, allow_unicode=True, sort_keys=False, width=10**6) + "---\n"
                changed = True
    return changed


_IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")


def inline_markdown(text:str)->str:
    "HTML of one paragraph of markdown, without its <p> (a caption)."
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return re.sub(r"^\s*<p>(.*)</p>\s*$", r"\1", markdown2html_mistune(text), flags=re.S)


def figure_html(mime:str, data, caption:str, alt:str|None=None)->str:
    "An image output as an HTML <figure> with `caption` (markdown) as its <figcaption>."
    data, alt = _md_text(data), escape(alt or re.sub(r"[`*_]", "", caption), quote=True)
    img = data if mime == "image/svg+xml" else f'<img src="data:{mime};base64,{"".join(data.split())}" alt="{alt}">'
    return f'<figure class="figure">{img}<figcaption>{inline_markdown(caption)}</figcaption></figure>'


def caption_figure(cell:nbformat.NotebookNode, caption:str, alt:str|None=None):
    "The last image output of a code cell as a <figure> under which `caption` is shown (Quarto's `#| fig-cap`), in place."
    for out in reversed(cell.get("outputs", [])):
        if mime := next((m for m in _IMAGE_TYPES if m in out.get("data", {})), None):
            out.data, out.metadata = {"text/html": figure_html(mime, out.data[mime], caption, alt)}, {}
            return


def plain_notebook(nb:nbformat.NotebookNode)->tuple[nbformat.NotebookNode, dict]:
    "A processed notebook with its Quarto front matter, cell options and markdown extensions applied; and the front matter."
    fm, cells = {}, []
    for cell in nb.cells:
        if cell.cell_type == "raw" and not fm and (m := _FRONTMATTER.match(cell.source.strip())):
            fm = yaml.safe_load(m[1]) or {}
            if "title" in fm:
                desc = f"\n\n> {fm['description']}" if fm.get("description") else ""
                cells.append(nbformat.v4.new_markdown_cell(f"# {fm['title']}{desc}"))
            continue
        if cell.cell_type == "markdown": cell.source = quarto_md_to_md(cell.source)
        if cell.cell_type == "code":
            opts, cell.source = cell_options(cell.source)
            if opts.get("include") == "false": continue
            if opts.get("echo") == "false" or not cell.source.strip():
                cell.metadata.setdefault("transient", {})["remove_source"] = True
            if opts.get("output") == "false": cell.outputs = []
            if opts.get("fig-cap"): caption_figure(cell, opts["fig-cap"], opts.get("fig-alt"))
            for out in cell.get("outputs", []):
                if "text/markdown" in out.get("data", {}):
                    out.data["text/markdown"] = quarto_md_to_md(_md_text(out.data["text/markdown"]))
                if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):  # live widgets need a kernel
                    out.data = {"text/markdown": WIDGET_NOTE}
            if not cell.source.strip() and not cell.get("outputs"): continue
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb, fm


# ---------------------------------------------------------------- pages and navigation

@dataclass
class Page:
    "One page of the site: its notebook (relative to nbs/), its HTML file (relative to the site root) and its title."
    src:str
    out:str
    title:str


def page_description(fm:dict, site:dict)->str:
    "A page's `<meta name=description>`: its subtitle as plain text, else the site's description."
    text = fm.get("description") or site["website"].get("description", "")
    return " ".join(re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", re.sub(r"[`*]", "", text)).split())


def _output_file(src:str, fm:dict)->str:
    "Where Quarto writes the page of notebook `src`: beside it, named by nbdev's `output-file` (else the stem)."
    name = fm.get("output-file") or posixpath.splitext(posixpath.basename(src))[0] + ".html"
    return posixpath.join(posixpath.dirname(src), name)


def _sources(site:dict)->list[str]:
    "Notebooks to render: those matching `project.render` of `_quarto.yml`, minus names starting with _ or . (as nbdev)."
    globs = site["project"].get("render", ["**/*.ipynb"])
    return sorted(p.relative_to(NBS).as_posix() for g in globs for p in NBS.glob(g)
                  if not any(part[0] in "_." for part in p.relative_to(NBS).parts))


def _nav_items(items:list, pages:dict, missing:list)->list:
    "Navbar/sidebar items as ('link', text, out) and ('section', title, [items]), dropping notebooks that do not exist."
    res = []
    for it in items or []:
        if isinstance(it, dict) and "section" in it:
            res.append(("section", it["section"], _nav_items(it.get("contents"), pages, missing)))
            continue
        href, text = (it, None) if isinstance(it, str) else (it.get("href"), it.get("text"))
        if href not in pages:
            missing.append(href)
            continue
        res.append(("link", text or pages[href].title, pages[href].out))
    return res


def _rel(target:str, page_out:str)->str:
    "Relative link from the page at `page_out` to `target` (both relative to the site root)."
    return posixpath.relpath(target.split("#")[0], posixpath.dirname(page_out) or ".") + (
        "#" + target.split("#", 1)[1] if "#" in target else "")


def _links_html(items:list, page_out:str)->str:
    html = []
    for kind, text, val in items:
        if kind == "section":
            html.append(f'<li class="section"><span class="section-title">{text}</span><ul>{_links_html(val, page_out)}</ul></li>')
        else:
            active = ' class="active"' if val == page_out else ""
            html.append(f'<li><a href="{_rel(val, page_out)}"{active}>{text}</a></li>')
    return "".join(html)


def _root(page_out:str)->str:
    "The site root as seen from the page at `page_out` (`.` or `..`, ...)."
    return posixpath.relpath(".", posixpath.dirname(page_out) or ".")


SEARCH_BOX = """<div class="site-search" id="site-search" data-pagefind-ignore>
<input class="search-offline" type="search" placeholder="Search" aria-label="Search" hidden>
<div class="search-note" hidden>Search runs when the site is served over HTTP, e.g.
<code>python -m http.server --directory _docs 8000</code> and then <code>http://localhost:8000</code>.</div></div>"""


NAV_TOGGLE = """<button class="nav-toggle" type="button" aria-label="Menu" aria-expanded="false"
aria-controls="site-menu site-sidebar"><span></span><span></span><span></span></button>"""


def nav_html(site:dict, navbar:list, sidebar:list, page_out:str)->dict:
    "The navbar (with the search box and the menu button of narrow screens) and sidebar HTML of one page."
    w, home = site["website"], _rel("index.html", page_out)
    bar = (f'<header class="site-navbar"><a class="brand" href="{home}">{w["title"]}</a>'
           f'<ul class="nav-left" id="site-menu">{_links_html(navbar, page_out)}</ul>{SEARCH_BOX}{NAV_TOGGLE}'
           f'<a class="repo" href="{w["repo-url"]}">GitHub</a></header>')
    side = f'<nav class="site-sidebar" id="site-sidebar" aria-label="sidebar"><ul>{_links_html(sidebar, page_out)}</ul></nav>'
    return {"navbar": bar, "sidebar": side}


def reading_order(items:list)->list[tuple[str, str]]:
    "The pages of navigation items as (text, out), in order, each once (the sidebar's order: previous / next)."
    res = []
    for kind, text, val in items:
        res.extend(reading_order(val) if kind == "section" else [(text, val)])
    first = {}
    for text, out in res: first.setdefault(out, text)
    return [(text, out) for out, text in first.items()]


def page_nav_html(order:list, page_out:str)->str:
    "Links to the previous and next pages of `order` (empty where the page is not in it)."
    outs = [out for _, out in order]
    if page_out not in outs: return ""
    i, links = outs.index(page_out), []
    for j, cls, arrow in ((i-1, "prev", "←"), (i+1, "next", "→")):
        if 0 <= j < len(order):
            text, out = order[j]
            label = f"{arrow} {text}" if cls == "prev" else f"{text} {arrow}"
            links.append(f'<a class="page-{cls}" rel="{cls}" href="{_rel(out, page_out)}">'
                         f'<span class="page-nav-dir">{"Previous" if cls == "prev" else "Next"}</span>{label}</a>')
        else: links.append(f'<span class="page-{cls}"></span>')
    return f'<nav class="page-nav" aria-label="previous and next page" data-pagefind-ignore>{"".join(links)}</nav>'


REPO_ACTIONS = {"edit": ("Edit this page", "{repo}/edit/{branch}/nbs/{src}"),
                "source": ("View source", "{repo}/blob/{branch}/nbs/{src}"),
                "issue": ("Report an issue", "{repo}/issues/new")}


def repo_actions_html(site:dict, src:str)->str:
    "The `repo-actions` of `_quarto.yml` (edit, source, issue) as links to the repository."
    w = site["website"]
    links = [f'<li><a class="repo-action-{a}" href="{url.format(repo=w["repo-url"].rstrip("/"), branch=w.get("repo-branch", "main"), src=src)}">{text}</a></li>'
             for a in w.get("repo-actions") or [] if a in REPO_ACTIONS for text, url in [REPO_ACTIONS[a]]]
    return f'<ul class="repo-actions" data-pagefind-ignore>{"".join(links)}</ul>' if links else ""


# ---------------------------------------------------------------- static HTML

CSS = """
body.site { margin: 0; padding: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.site-navbar { position: sticky; top: 0; z-index: 10; display: flex; align-items: center; gap: 1rem;
  background: #2780e3; padding: .55rem 1.2rem; }
.site-navbar a { color: #fff; text-decoration: none; } .site-navbar a:hover { text-decoration: underline; }
.site-navbar .brand { font-size: 1.25rem; font-weight: 600; margin-right: 1rem; }
.site-navbar ul { display: flex; flex-wrap: wrap; gap: .3rem 1.1rem; list-style: none; margin: 0; padding: 0; }
.site-navbar a.active { font-weight: 700; border-bottom: 2px solid #fff; }
.site-navbar .repo { margin-left: 0; }
.site-search { margin-left: auto; position: relative; width: 17rem; --pagefind-ui-scale: .75;
  --pagefind-ui-border-width: 1px; --pagefind-ui-border-radius: 4px; --pagefind-ui-font: inherit; }
.site-search .pagefind-ui__form { margin: 0; }
.site-search .pagefind-ui__drawer { position: absolute; right: 0; width: min(38rem, 90vw); max-height: 75vh;
  overflow-y: auto; background: #fff; border: 1px solid #ccc; border-radius: 4px; padding: 0 1rem;
  box-shadow: 0 6px 18px rgba(0,0,0,.18); }
.site-search .pagefind-ui__drawer:empty, .site-search .pagefind-ui__drawer:not(:has(*)) { display: none; }
.site-search .search-offline { width: 100%; box-sizing: border-box; padding: .3rem .5rem; border: 1px solid #ccc;
  border-radius: 4px; font: inherit; }
.site-search .search-note { position: absolute; right: 0; width: 24rem; background: #fff; color: #222;
  border: 1px solid #ccc; border-radius: 4px; padding: .6rem .8rem; font-size: .85rem; margin-top: .3rem;
  box-shadow: 0 6px 18px rgba(0,0,0,.18); }
.site-layout { display: flex; align-items: flex-start; }
.site-sidebar, .site-toc { position: sticky; top: 3.2rem; max-height: calc(100vh - 4rem); overflow-y: auto;
  padding: 1.2rem 1rem; font-size: .9rem; }
.site-sidebar { flex: 0 0 13rem; border-right: 1px solid #e5e5e5; }
.site-sidebar ul, .site-toc ul { list-style: none; margin: 0; padding: 0; }
.site-sidebar li { margin: .25rem 0; } .site-sidebar ul ul { padding-left: .7rem; }
.site-sidebar .section-title { display: block; margin-top: .8rem; font-weight: 600; color: #555; }
.site-sidebar a, .site-toc a { color: #333; text-decoration: none; }
.site-sidebar a.active { color: #2780e3; font-weight: 700; }
.site-main { flex: 1 1 auto; min-width: 0; max-width: 64rem; padding: 1rem 2rem 4rem; }
.site-toc { flex: 0 0 13rem; } .site-toc h2 { font-size: .95rem; margin: 0 0 .5rem; }
.site-toc li { margin: .2rem 0; } .site-toc li.toc-h3 { padding-left: .8rem; }
.site-main img { max-width: 100%; height: auto; }
.site-main a code { color: #2780e3; }
.site-main blockquote { border-left: 4px solid #2780e3; margin: .5rem 0 1rem; padding: .2rem 1rem; color: #555; }
.site-main table { border-collapse: collapse; } .site-main th, .site-main td { padding: .2rem .6rem; }
.site-main .jp-RenderedMarkdown pre { background: #f5f5f5; padding: .5rem .8rem; margin: .4rem 0 .9rem; border-radius: 4px; }
.callout { border-left: 4px solid #2780e3; background: #f3f8fe; padding: .4rem 1rem; margin: 1rem 0; }
/* never clip: code scrolls sideways, tables scroll in their own box, wide formulas too */
.site-main .jp-Cell, .site-main .jp-InputArea, .site-main .jp-InputArea-editor, .site-main .jp-OutputArea,
.site-main .jp-OutputArea-child, .site-main .jp-OutputArea-output { min-width: 0; max-width: 100%; }
.site-main .jp-InputArea, .site-main .jp-InputArea-editor, .site-main .cm-editor { overflow: visible; }
.site-main pre { overflow-x: auto; max-width: 100%; box-sizing: border-box; }
.site-main .jp-RenderedMarkdown pre { white-space: pre; }   /* code keeps its lines; it scrolls */
.site-main .jp-OutputArea-output { overflow-x: auto; }
.site-main .table-wrap { overflow-x: auto; max-width: 100%; }
.site-main .table-wrap > table { margin: 0; }
.site-main mjx-container[display="true"] { overflow-x: auto; overflow-y: hidden; max-width: 100%; padding: .2rem 0; }
.site-main mjx-container[display="true"][width="full"] { min-width: 0 !important; }  /* numbered: the SVG keeps its min-width and scrolls */
/* what scrolls says so: a note above and a shadow at the right edge until scrolled to the end (set by SITE_JS) */
.site-main .scroll-box { position: relative; max-width: 100%; margin: .4rem 0 .9rem; }
.site-main .scroll-box.math-box { margin: 0; }
.site-main .scroll-box.overflows::before { content: "scroll →"; display: block; height: 1.2rem; line-height: 1.2rem;
  text-align: right; font-size: .72rem; color: #6c757d; }
.site-main .scroll-box.overflows::after { content: ""; position: absolute; top: 1.2rem; right: 0; bottom: 0; width: 1.6rem;
  pointer-events: none; background: linear-gradient(to left, rgba(0,0,0,.18), rgba(0,0,0,0)); }
.site-main .scroll-box.overflows.at-end::after { opacity: 0; }
/* figures with a caption (#| fig-cap) */
.site-main figure.figure { margin: .4rem 0 1rem; }
.site-main figure.figure figcaption { margin-top: .3rem; font-size: .9rem; color: #555; }
/* copy buttons on code blocks */
.site-main .code-block { position: relative; }
.copy-code { position: absolute; top: .25rem; right: .25rem; z-index: 1; display: flex; align-items: center; gap: .25rem;
  padding: .2rem .3rem; border: 1px solid #ccc; border-radius: 4px; background: #fff; color: #555; font-size: .72rem;
  line-height: 1; cursor: pointer; opacity: .5; }
.code-block:hover .copy-code, .copy-code:focus-visible { opacity: 1; }
.copy-code svg { width: 14px; height: 14px; }
.copy-code.copied { opacity: 1; color: #1a7f37; border-color: #1a7f37; }
.copy-code.copied::after { content: "Copied"; }
.copy-code.copy-failed::after { content: "Select and copy"; }
/* nbdev's [source] link: small, right of the heading it belongs to */
.site-main p.source-link { float: right; margin: .35rem 0 0 1rem; font-size: .8rem; }
.site-main p.source-link a { color: #6c757d; }
/* previous / next page, repository actions */
.page-nav { display: flex; justify-content: space-between; gap: 1rem; clear: both; margin-top: 3rem; padding-top: 1rem;
  border-top: 1px solid #e5e5e5; }
.page-nav a { display: flex; flex-direction: column; max-width: 48%; color: #2780e3; text-decoration: none; }
.page-nav a:hover { text-decoration: underline; }
.page-nav .page-next { margin-left: auto; text-align: right; }
.page-nav .page-nav-dir { font-size: .75rem; color: #6c757d; }
.repo-actions { list-style: none; margin: 1rem 0 0; padding: .6rem 0 0; border-top: 1px solid #e5e5e5; font-size: .85rem; }
.repo-actions a { color: #6c757d; }
.site-footer .repo-actions { display: none; border-top: 0; }
/* narrow screens: the table of contents goes; below 800 px the navbar links and the sidebar fold behind a menu button */
.nav-toggle { display: none; flex-direction: column; justify-content: center; gap: 4px; padding: .4rem .45rem;
  background: none; border: 1px solid rgba(255,255,255,.6); border-radius: 4px; cursor: pointer; }
.nav-toggle span { display: block; width: 20px; height: 2px; background: #fff; }
@media (max-width: 1100px) { .site-toc { display: none; } .site-footer .repo-actions { display: block; } }
@media (max-width: 800px) {
  .site-navbar { flex-wrap: wrap; gap: .5rem .8rem; padding: .5rem .8rem; }
  .site-navbar .brand { order: 0; margin-right: 0; }
  .site-search { order: 1; flex: 1 1 6rem; width: auto; max-width: 17rem; }
  .nav-toggle { order: 2; display: flex; }
  .site-navbar .nav-left { order: 3; display: none; flex-basis: 100%; padding: .2rem 0; }
  .site-navbar .repo { order: 4; display: none; }
  body.nav-open .site-navbar .nav-left, body.nav-open .site-navbar .repo { display: flex; }
  .site-layout { display: block; }
  .site-sidebar { display: none; position: static; max-height: none; border-right: 0; border-bottom: 1px solid #e5e5e5; }
  body.nav-open .site-sidebar { display: block; }
  .site-main { padding: .8rem 1rem 3rem; }
}
/* wide screens: a wider main column */
@media (min-width: 1400px) { .site-main { max-width: 80rem; } }
"""

# The favicon (written to the site root): a curve that drops when the network is pruned and recovers as it retrains.
FAVICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#2780e3"/>
<path d="M5 8 L12 23 C15 28 19 13 27 9" fill="none" stroke="#fff" stroke-width="3" stroke-linecap="round" stroke-linejoin="round"/></svg>
"""

COPY_ICON = ('<svg viewBox="0 0 16 16" aria-hidden="true"><path fill="currentColor" d="M4 1.5A1.5 1.5 0 0 1 5.5 0h7A1.5 1.5 0 0 1 14 '
             '1.5v9a1.5 1.5 0 0 1-1.5 1.5h-7A1.5 1.5 0 0 1 4 10.5zM5.5 1a.5.5 0 0 0-.5.5v9a.5.5 0 0 0 .5.5h7a.5.5 0 0 0 .5-.5v-9a.5.5 '
             '0 0 0-.5-.5zM2 4.5a.5.5 0 0 1 1 0v10a.5.5 0 0 0 .5.5h7a.5.5 0 0 1 0 1h-7A1.5 1.5 0 0 1 2 14.5z"/></svg>')

# The menu button, copy buttons and scroll hints. It runs before MathJax (deferred) typesets, so a copy button copies
# the code as written, not the formulas in a signature's comments; MathJax calls `markWide` once it has typeset.
SITE_JS = """(function () {
  var body = document.body, toggle = document.querySelector('.nav-toggle');
  if (toggle) toggle.addEventListener('click', function () {
    toggle.setAttribute('aria-expanded', String(body.classList.toggle('nav-open')));
  });
  function flash(btn, cls) { btn.classList.add(cls); setTimeout(function () { btn.classList.remove(cls); }, 1500); }
  function legacyCopy(text) {   // where the Clipboard API is missing or refused
    var ta = document.createElement('textarea'), ok = false;
    ta.value = text; ta.setAttribute('readonly', ''); ta.style.position = 'fixed'; ta.style.opacity = '0';
    body.appendChild(ta); ta.select();
    try { ok = document.execCommand('copy'); } catch (e) {}
    ta.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error('copy refused'));
  }
  function copy(text) {
    if (!navigator.clipboard || !window.isSecureContext) return legacyCopy(text);
    return navigator.clipboard.writeText(text).catch(function () { return legacyCopy(text); });
  }
  document.querySelectorAll('.code-block').forEach(function (box) {
    var pre = box.querySelector('pre'), btn = box.querySelector('.copy-code');
    if (!pre || !btn) return;
    var text = pre.textContent.replace(/\\n$/, '');
    btn.addEventListener('click', function () {
      copy(text).then(function () { flash(btn, 'copied'); }, function () { flash(btn, 'copy-failed'); });
    });
  });
  function update(box) {
    var s = box.firstElementChild;
    if (!s) return;
    box.classList.toggle('overflows', s.scrollWidth > s.clientWidth + 1);
    box.classList.toggle('at-end', s.scrollLeft + s.clientWidth >= s.scrollWidth - 1);
  }
  window.markWide = function () {   // display formulas get the tables' scroll box; every box says if it scrolls
    document.querySelectorAll('main mjx-container[display="true"]').forEach(function (m) {
      if (m.parentElement.classList.contains('scroll-box')) return;
      var box = document.createElement('div');
      box.className = 'scroll-box math-box';
      m.parentNode.insertBefore(box, m);
      box.appendChild(m);
    });
    document.querySelectorAll('main .scroll-box').forEach(update);
  };
  document.addEventListener('scroll', function (e) {   // scroll events do not bubble: listen while they descend
    var box = e.target.parentElement;
    if (box && box.classList && box.classList.contains('scroll-box')) update(box);
  }, true);
  window.addEventListener('resize', window.markWide);
  window.markWide();
})();"""

# MathJax 3 options: TeX between $...$, \(...\), $$...$$ and \[...\], AMS numbering for \tag; `math-in-code` marks the
# code blocks (show_doc signatures) whose comments hold TeX, which MathJax would otherwise skip like every <pre>.
MATHJAX_CONFIG = r"""window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  options: {processHtmlClass: 'math-in-code'},
  svg: {fontCache: 'global'},
  startup: {pageReady: () => MathJax.startup.defaultPageReady().then(() => window.markWide && window.markWide())}
};"""

SEARCH_JS = """(function () {
  var box = document.getElementById('site-search');
  if (!box) return;
  if (location.protocol === 'file:' || typeof PagefindUI === 'undefined') {
    var input = box.querySelector('.search-offline'), note = box.querySelector('.search-note');
    input.hidden = false;   // from file:// browsers refuse the search's modules: say how to serve the site instead
    input.addEventListener('focus', function () { note.hidden = false; });
    input.addEventListener('blur', function () { note.hidden = true; });
    return;
  }
  box.innerHTML = '';
  new PagefindUI({element: '#site-search', showSubResults: true, showImages: false, resetStyles: false,
                  baseUrl: new URL(box.dataset.root + '/', location.href).pathname});
})();"""

TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.site.mathjax -%}
<script>{{ resources.site.mathjax_config }}</script>
<script defer src="{{ resources.site.mathjax }}"></script>
{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{% block extra_css %}<meta name="description" content="{{ resources.site.description | e }}">
<link rel="icon" type="image/svg+xml" href="{{ resources.site.favicon }}">
<style>{{ resources.site.css }}</style>
{%- if resources.site.pagefind %}<link rel="stylesheet" href="{{ resources.site.pagefind }}/pagefind-ui.css">{% endif -%}
{% endblock extra_css %}
{%- block body_header -%}
<body class="jp-Notebook site" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
{{ resources.site.navbar }}
<div class="site-layout">
{{ resources.site.sidebar }}
<main class="site-main" data-pagefind-body>
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.site.page_nav }}
<footer class="site-footer" data-pagefind-ignore>{{ resources.site.repo_actions }}</footer>
</main>
<nav class="site-toc" aria-label="on this page">{{ resources.site.repo_actions }}</nav>
</div>
{%- if resources.site.pagefind %}
<script src="{{ resources.site.pagefind }}/pagefind-ui.js"></script>
{%- endif %}
<script>{{ resources.site.search_js }}</script>
<script>{{ resources.site.site_js }}</script>
</body>
{% endblock body_footer %}
"""


def quarto_id(text:str)->str:
    "Pandoc's automatic identifier of a heading (what Quarto and nbdev's doc links use)."
    text = re.sub(r"[^\w\s.-]", "", text.replace("¶", "").strip().lower())
    return re.sub(r"\s+", "-", text).lstrip("0123456789.-") or "section"


def _finish_page(html:str, page:Page, pages_by_src:dict, site_url:str)->BeautifulSoup:
    "Heading ids (Quarto's, or a `{#id}` given), relative links between pages, scrolling tables, math in show_doc signatures, the TOC."
    soup = BeautifulSoup(html, "html.parser")
    main, toc = soup.find("main"), []
    for h in main.find_all(["h1", "h2", "h3", "h4", "h5"]):
        given = h.find("span", class_="heading-id")
        new = given["data-id"] if given else quarto_id(h.get_text())
        if given: given.decompose()
        for a in h.find_all("a", class_="anchor-link"): a["href"] = f"#{new}"
        h["id"] = new
        if h.name in ("h2", "h3"): toc.append((h.name, new, h.get_text().replace("¶", "").strip()))
    for span in main.select(".jp-RenderedMarkdown pre span.c1"):  # nbdev's doc links inside signature comments
        text = span.get_text()
        if not _MD_CODE_LINK.search(text): continue
        span.clear()
        for i, part in enumerate(_MD_CODE_LINK.split(text)):
            if i % 3 == 0: span.append(part)
            elif i % 3 == 1: name = part
            else:
                a = soup.new_tag("a", href=part)
                a.append(soup.new_tag("code")); a.code.string = name
                span.append(a)
    for a in main.find_all("a", href=True):
        href = a["href"]
        if href.startswith(site_url + "/"): a["href"] = _rel(href[len(site_url)+1:], page.out)
        elif not re.match(r"^[a-z]+:|^#", href) and (src := href.split("#")[0]).endswith(".ipynb"):
            target = pages_by_src.get(posixpath.normpath(posixpath.join(posixpath.dirname(page.src), src)))
            if target: a["href"] = _rel(target.out + href[len(src):], page.out)
    for table in main.find_all("table"):  # tables scroll in their own box instead of spilling out of the page
        if not (table.parent and "table-wrap" in (table.parent.get("class") or [])):
            table.wrap(soup.new_tag("div", attrs={"class": "table-wrap"})).wrap(soup.new_tag("div", attrs={"class": "scroll-box"}))
    style_source_links(main)
    add_copy_buttons(soup, main)
    for pre in main.select(".jp-RenderedMarkdown pre"):  # show_doc signatures: TeX in the parameter comments
        if any("$" in c.get_text() for c in pre.select("span.c1")): pre["class"] = [*pre.get("class", []), "math-in-code"]
    for el in main.select(".jp-CodeCell .jp-InputArea, a.anchor-link"): el["data-pagefind-ignore"] = ""  # search prose, not code
    box = soup.find(id="site-search")
    if box: box["data-root"] = _root(page.out)
    nav = soup.find("nav", class_="site-toc")
    if toc:
        items = "".join(f'<li class="toc-{lvl}"><a href="#{i}">{t}</a></li>' for lvl, i, t in toc)
        nav.insert(0, BeautifulSoup(f"<h2>On this page</h2><ul>{items}</ul>", "html.parser"))
    return soup


def style_source_links(main):
    "nbdev's `[source](url)` paragraph before a `show_doc` heading as a small link floated right of that heading."
    for a in main.find_all("a", href=True):
        p = a.parent
        if a.get_text().strip() == "source" and p.name == "p" and p.get_text().strip() == "source":
            p["class"], p["data-pagefind-ignore"] = [*p.get("class", []), "source-link"], ""
            a["title"] = "The source of this definition"


def add_copy_buttons(soup:BeautifulSoup, main):
    "A copy button on every code block: code cells, fenced code and `show_doc` signatures (not on outputs)."
    for pre in main.select(".jp-InputArea pre, .jp-RenderedMarkdown pre"):
        box = pre.parent
        if not (box.name == "div" and "highlight" in (box.get("class") or []) and len(box.find_all("pre")) == 1):
            box = pre.wrap(soup.new_tag("div"))
        box["class"] = [*box.get("class", []), "code-block"]
        btn = BeautifulSoup(f'<button class="copy-code" type="button" title="Copy to clipboard" aria-label="Copy code" '
                            f'data-pagefind-ignore>{COPY_ICON}</button>', "html.parser")
        box.append(btn)


def fix_api_links(soups:dict[str, BeautifulSoup]):
    "nbdev's links from an API name to an anchor no page has (a class's attribute, a private helper): to the class, else unlinked."
    ids = {out: {t["id"] for t in soup.find_all(id=True)} for out, soup in soups.items()}
    for out, soup in soups.items():
        for a in soup.find("main").find_all("a", href=True):
            path, _, frag = a["href"].partition("#")
            target = posixpath.normpath(posixpath.join(posixpath.dirname(out), path)) if path else out
            if not frag or target not in ids or frag in ids[target] or not (a.code and len(a.contents) == 1): continue
            if (owner := frag.split(".")[0]) in ids[target]: a["href"] = f"{path}#{owner}"
            else: a.unwrap()


def write_favicon(folder:Path, site:dict)->str:
    "Write the SVG favicon into `folder`, named as `website.favicon` of `_quarto.yml` says (else favicon.svg); the name."
    name = site["website"].get("favicon", "favicon.svg")
    (folder/name).write_text(FAVICON)
    return name


def install_mathjax()->Path|None:
    "MathJax's single-file component, from the npm package `mathjax` installed into `build/site-assets/` on first use (None without npm)."
    pkg = ASSETS/"node_modules"/"mathjax"
    if not (pkg/"es5"/MATHJAX_FILE).exists() or json.loads((pkg/"package.json").read_text()).get("version") != MATHJAX_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            print("npm not found: formulas stay as TeX source (install Node.js with npm to render them)")
            return None
        ASSETS.mkdir(parents=True, exist_ok=True)
        print(f"installing MathJax {MATHJAX_VERSION} (npm package mathjax) into {ASSETS.relative_to(ROOT)}/")
        r = subprocess.run([npm, "install", "--prefix", str(ASSETS), "--no-audit", "--no-fund", "--no-package-lock",
                            "--loglevel=error", f"mathjax@{MATHJAX_VERSION}"], stdout=subprocess.DEVNULL)
        if r.returncode or not (pkg/"es5"/MATHJAX_FILE).exists():
            print(f"npm could not install mathjax@{MATHJAX_VERSION}: formulas stay as TeX source (see npm's message above)")
            return None
    return pkg


def build_search(out:Path)->bool:
    "The Pagefind index of the built site in `out/pagefind/` (False, with one line, where the `pagefind` wheel is missing)."
    import importlib.util
    if importlib.util.find_spec("pagefind") is None:
        print("pagefind not installed: the site has no search (pip install 'pagefind[bin]')")
        return False
    subprocess.run([sys.executable, "-m", "pagefind", "--site", str(out), "--force-language", "en", "--silent"], check=True)
    return (out/"pagefind"/"pagefind-ui.js").exists()


def render_static(out:Path, force:bool=False):
    "The static HTML site: every processed notebook through nbconvert, with the navigation of `_quarto.yml`."
    site, proc = load_site(), process_notebooks(force)
    nbs = {src: nbformat.read(proc/src, as_version=4) for src in _sources(site)}
    for src, nb in nbs.items(): tidy_notebook(nb, NBS/src)
    plain = {src: plain_notebook(nb) for src, nb in nbs.items()}
    pages = {src: Page(src, _output_file(src, fm), str(fm.get("title", Path(src).stem))) for src, (_, fm) in plain.items()}
    outs = {}
    for p in pages.values():
        if p.out in outs: raise ValueError(f"nbs/{outs[p.out]} and nbs/{p.src} both render to {p.out}: rename one (or its default_exp)")
        outs[p.out] = p.src
    missing = []
    navbar = _nav_items(site["website"]["navbar"].get("left"), pages, missing)
    sidebar = _nav_items(site["website"]["sidebar"].get("contents"), pages, missing)
    for m in dict.fromkeys(missing): print(f"_quarto.yml names nbs/{m}, which does not exist: left out of the navigation")
    exporter = HTMLExporter(template_name="lab", extra_loaders=[DictLoader({"site.html.j2": TEMPLATE})],
                            template_file="site.html.j2", exclude_input_prompt=True, exclude_output_prompt=True)
    shutil.rmtree(out, ignore_errors=True)
    for p in NBS.rglob("*"):  # figures and results, as nbdev copies them beside the notebooks
        rel = p.relative_to(NBS)
        if p.is_file() and p.suffix != ".ipynb" and not any(part[0] in "_." for part in rel.parts):
            (out/rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, out/rel)
    icon = write_favicon(out, site)
    order = reading_order(sidebar) if site["website"].get("page-navigation") else []
    if mathjax := install_mathjax():
        (out/"assets"/"mathjax").mkdir(parents=True, exist_ok=True)
        for f in (f"es5/{MATHJAX_FILE}", "LICENSE"): shutil.copy2(mathjax/f, out/"assets"/"mathjax"/Path(f).name)
    soups = {}
    for src, (nb, fm) in plain.items():
        page = pages[src]
        root = _root(page.out)
        name = site["website"]["title"]
        nb.metadata["title"] = page.title if page.title == name else f"{page.title} – {name}"
        resources = {"site": {"css": CSS, **nav_html(site, navbar, sidebar, page.out), "search_js": SEARCH_JS,
                              "site_js": SITE_JS, "mathjax": mathjax and f"{root}/assets/mathjax/{MATHJAX_FILE}",
                              "mathjax_config": MATHJAX_CONFIG, "pagefind": f"{root}/pagefind",
                              "favicon": f"{root}/{icon}", "description": page_description(fm, site),
                              "page_nav": page_nav_html(order, page.out), "repo_actions": repo_actions_html(site, src)}}
        html, _ = exporter.from_notebook_node(nb, resources=resources)
        soups[page.out] = _finish_page(html, page, pages, site["website"]["site-url"].rstrip("/"))
    fix_api_links(soups)
    for name, soup in soups.items():
        (out/name).parent.mkdir(parents=True, exist_ok=True)
        (out/name).write_text(str(soup))
    build_search(out)


def render_quarto(out:Path, force:bool=False):
    "The Quarto site, as `nbdev_docs` renders it, from the processed notebooks and a build-time copy of `_quarto.yml`."
    proc = process_notebooks(force)
    for src in _sources(load_site()):
        nb = nbformat.read(proc/src, as_version=4)
        if tidy_notebook(nb, NBS/src): nbformat.write(nb, proc/src)
    shutil.copy2(SITE_YML, proc/"_quarto.yml")
    write_favicon(proc, load_site())
    subprocess.run(["quarto", "render", "--no-cache"], cwd=proc, check=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.move(proc/load_site()["project"]["output-dir"], out)


def build_docs(static:bool=False, force:bool=False)->Path:
    "Build the site into the output folder of `_quarto.yml`; returns it."
    out = ROOT/load_site()["project"]["output-dir"]
    if shutil.which("quarto") and not static: render_quarto(out, force)
    else:
        if not static: print("quarto not found: building the static HTML site with nbconvert instead (install Quarto for the full site)")
        render_static(out, force)
    return out


# ---------------------------------------------------------------- README

def _reroot(m)->str:
    "A link or image path relative to nbs/ as seen from the top level (URLs and anchors unchanged)."
    path = m[2]
    return m[1] + (path if re.match(r"^[a-z]+:|^[/#]", path) else posixpath.normpath(posixpath.join("nbs", path)))


def _site_pages_by_out()->dict[str, str]:
    "Site page (relative to the site root) -> its notebook (relative to nbs/), for every notebook the site renders."
    res = {}
    for src in _sources(load_site()):
        m = default_exp(NBS/src)
        res[_output_file(src, {"output-file": f"{m}.html"} if m else {})] = src
    return res


def _unhost(text:str, site_url:str, pages:dict)->str:
    "Links to pages of the (not necessarily hosted) docs site, as nbdev writes for API names, as links to their notebooks."
    def sub(m):
        page, _, frag = m[2].partition("#")
        return m[1] + (posixpath.join("nbs", pages[page]) + (f"#{frag}" if frag else "") if page in pages else m[0][len(m[1]):])
    return re.sub(rf"(\]\(){re.escape(site_url)}/([^)\s]+)", sub, text)


def readme_markdown(index:Path=NBS/"index.ipynb")->str:
    "README.md text: nbdev's docs processing of `index`, then nbconvert's markdown exporter."
    from execnb.nbio import read_nb, nb2str
    from nbdev.processors import FilterDefaults
    cwd = os.getcwd()
    os.chdir(ROOT)  # nbdev finds settings.ini from the working directory
    try:
        nb = read_nb(index)
        FilterDefaults()(nb)
    finally: os.chdir(cwd)
    nb, _ = plain_notebook(nbformat.reads(nb2str(nb), as_version=4))
    nb.metadata["language_info"] = {"name": "python"}  # fences as ```python (nbdev_clean drops language_info)
    for cell in nb.cells:
        if cell.cell_type == "markdown": cell.source = _HTML_IMG.sub(_reroot, _MD_LINK.sub(_reroot, cell.source))
    body, _ = MarkdownExporter(exclude_raw=True).from_notebook_node(nb)
    body = _unhost(re.sub(r"[ \t]+\n", "\n", body), load_site()["website"]["site-url"].rstrip("/"), _site_pages_by_out())
    return re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"


def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["docs", "readme"], help="build the site into _docs/, or write README.md")
    p.add_argument("--static", action="store_true", help="docs: build the static nbconvert site even if quarto exists")
    p.add_argument("--force", action="store_true", help="docs: reprocess every notebook (ignore the _proc/ cache)")
    p.add_argument("--check", action="store_true", help="readme: only check README.md is up to date (exit 1 if not)")
    a = p.parse_args(argv)
    start = time.time()
    if a.what == "docs":
        out = build_docs(a.static, a.force)
        print(f"docs: {out.relative_to(ROOT)}/index.html ({time.time()-start:.0f} s)")
        return 0
    text = readme_markdown()
    if a.check:
        if README.read_text() == text: return 0
        print("README.md is out of date with nbs/index.ipynb: run `python nbs/_build_site.py readme`")
        return 1
    README.write_text(text)
    print(f"README.md written from nbs/index.ipynb ({time.time()-start:.0f} s)")
    return 0


if __name__ == "__main__": sys.exit(main())
