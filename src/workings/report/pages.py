"""The built book as a reader sees it: each HTML page opened in a real headless Chromium at 1280 px.

:func:`check_pages` finds what a reader should never meet: an element wider than the content
column (or text cut off inside a scrolled box), an image without a caption, an error or warning
output, a path of the build machine, a typographic dash or quote in code a reader would copy, an
``index`` column header, a number printed with more than 6 decimals, a word broken across lines in a
table cell, and table numbers that do not start at 1 (or at the chapter's N.1) on a page. It saves a full-page screenshot of every page beside the book.

``workings check-book`` runs it and exits 1 when a page has a problem.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 1280, 900
# Text that shows a path of the machine that built the book.
LOCAL_PATH_MARKERS = ("/tmp/", "/home/", "/root/", "/work/", "/Users/", "/.venv/", "site-packages", "C:\\")

# Runs in the page: returns a list of [kind, detail] problems.
_PAGE_CHECK = """
(markers) => {
  const problems = [];
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const column = article.getBoundingClientRect();
  const describe = (el) => {
    const text = (el.innerText || el.getAttribute('src') || '').trim().replace(/\\s+/g, ' ').slice(0, 80);
    return `${el.tagName.toLowerCase()}${el.className ? '.' + String(el.className).split(' ').join('.') : ''}: ${text}`;
  };
  for (const el of article.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    if (r.right > column.right + 2 || r.left < column.left - 2) {
      problems.push(['wider than the column', `${Math.round(r.width)} px > ${Math.round(column.width)} px: ${describe(el)}`]);
    }
  }
  for (const el of article.querySelectorAll('pre, .output, .cell_output, table, .table-wrapper')) {
    if (el.scrollWidth > el.clientWidth + 2 && getComputedStyle(el).overflowX !== 'visible') {
      problems.push(['cut off inside a scrolled box', `${el.scrollWidth} px in ${el.clientWidth} px: ${describe(el)}`]);
    }
  }
  for (const cell of article.querySelectorAll('td, th')) {
    if (cell.scrollWidth > cell.clientWidth + 1) {
      problems.push(['text spills out of a table cell', `${cell.scrollWidth} px in ${cell.clientWidth} px: ${describe(cell)}`]);
    }
  }
  for (const img of article.querySelectorAll('img')) {
    const figure = img.closest('figure');
    if (!figure || !figure.querySelector('figcaption')) problems.push(['image without a caption', describe(img)]);
  }
  for (const el of article.querySelectorAll('.stderr, .output.error, .output.traceback, .cell_output .ansi-red-fg')) {
    problems.push(['error or warning output', describe(el)]);
  }
  for (const el of article.querySelectorAll('.cell_output')) {
    if (!el.innerText.trim() && !el.querySelector('img, svg, table')) problems.push(['empty output box', describe(el.parentElement)]);
  }
  // What a reader copies must run: a typographic dash or quote in code fails in a shell or in Python.
  const typographic = /[\u2010-\u2015\u2018\u2019\u201C\u201D\u2212]/;
  for (const el of article.querySelectorAll('pre, code')) {
    if (el.closest('.cell_output') || (el.tagName === 'CODE' && el.parentElement.closest('pre'))) continue;  // outputs are not copied as code
    const found = el.textContent.match(typographic);
    if (found) {
      const code = found[0].codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
      problems.push(['non-ASCII dash or quote in code', `U+${code} in ${describe(el)}`]);
    }
  }
  for (const th of article.querySelectorAll('th')) {
    if (th.innerText.trim() === 'index') problems.push(['an index column header', describe(th.closest('table'))]);
  }
  for (const el of article.querySelectorAll('td, th, .cell_output pre')) {
    const found = el.innerText.match(/\d\.\d{7,}/);
    if (found) problems.push(['a number printed with more than 6 decimals', `${found[0]} in ${describe(el)}`]);
  }
  // A word the browser broke across two lines of a narrow cell ("Fals e"): its letters lie on two lines.
  for (const cell of article.querySelectorAll('td, th')) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const word of node.textContent.matchAll(/[A-Za-z0-9_]{2,}/g)) {  // letters, digits, underscores: one word
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (tops.size > 1) problems.push(['a word broken inside a table cell', `${word[0]} in ${describe(cell)}`]);
      }
    }
  }
  // Tables are numbered per page (1, 2, ...) or per chapter (5.1, 5.2, ...): the first on a page is 1 or N.1.
  const first = article.querySelector('table caption .caption-number');
  if (first) {
    const number = first.innerText.trim().replace(/^Table\s+/, '');
    if (!/^(\d+\.)?1$/.test(number)) problems.push(['table numbers do not start at 1 on this page', first.innerText.trim()]);
  }
  const text = article.innerText;
  for (const marker of markers) {
    const at = text.indexOf(marker);
    if (at >= 0) problems.push(['path of the build machine', text.slice(Math.max(0, at - 30), at + 50).replace(/\\s+/g, ' ')]);
  }
  return problems;
}
"""


@dataclass(frozen=True)
class Problem:
    page: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


def browser_path() -> str:
    """The system Chromium (Debian's ``chromium``); Playwright's own browser download is not used."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no chromium on PATH: install Debian's chromium (apt-get install chromium)")


def book_pages(html_dir: Path) -> list[Path]:
    """The chapters' pages of a built book (search, genindex and the like left out)."""
    skip = {"search.html", "genindex.html", "py-modindex.html"}
    return sorted(p for p in html_dir.rglob("*.html") if p.name not in skip and "_static" not in p.parts
                  and "_sources" not in p.parts and "jupyter_execute" not in p.parts
                  and 'http-equiv="Refresh"' not in p.read_text(errors="ignore")[:2000]
                  and 'http-equiv="refresh"' not in p.read_text(errors="ignore")[:2000])


def check_pages(html_dir: str | Path, screenshots: str | Path) -> list[Problem]:
    """Open every page of the book in headless Chromium; return the problems and save screenshots."""
    from playwright.sync_api import sync_playwright

    html_dir, screenshots = Path(html_dir), Path(screenshots)
    screenshots.mkdir(parents=True, exist_ok=True)
    pages = book_pages(html_dir)
    if not pages:
        raise FileNotFoundError(f"{html_dir}: no HTML pages; build the book first (make book)")
    problems: list[Problem] = []
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path(), args=flags)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        for path in pages:
            name = str(path.relative_to(html_dir))
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            for kind, detail in page.evaluate(_PAGE_CHECK, list(LOCAL_PATH_MARKERS)):
                problems.append(Problem(name, kind, detail))
            page.screenshot(path=str(screenshots / (name.replace("/", "_").removesuffix(".html") + ".png")), full_page=True)
            log.info("%s: checked", name)
        browser.close()
    return problems
