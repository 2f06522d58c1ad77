"""The built book as a reader sees it: the page check finds what a reader should never meet."""

import shutil

import pytest

from workings.report.pages import check_pages

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (make check-book installs it)")

PAGE = """<!DOCTYPE html><html><body style="margin:0"><main><article class="bd-article" style="width:700px">
<h1>A chapter</h1>
{body}
</article></main></body></html>"""

GOOD = """<p>Prose that fits.</p>
<figure><img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
 width="300" height="100"><figcaption>Figure 1: a caption.</figcaption></figure>
<div class="cell_output"><pre>a short output</pre></div>"""


def build(tmp_path, body):
    (tmp_path / "html" / "book").mkdir(parents=True, exist_ok=True)
    (tmp_path / "html" / "book" / "page.html").write_text(PAGE.format(body=body))
    return tmp_path / "html"


def kinds(tmp_path, body):
    return sorted({p.kind for p in check_pages(build(tmp_path, body), tmp_path / "shots")})


def test_a_clean_page_passes_and_leaves_a_screenshot(tmp_path):
    assert check_pages(build(tmp_path, GOOD), tmp_path / "shots") == []
    assert (tmp_path / "shots" / "book_page.png").stat().st_size > 0


def test_a_table_wider_than_the_column_is_found(tmp_path):
    table = "<table><tr>" + "".join(f"<td style='white-space:nowrap'>column number {i}</td>" for i in range(20)) + "</tr></table>"
    assert kinds(tmp_path, GOOD + table) == ["wider than the column"]


def test_code_cut_off_in_a_scrolled_box_is_found(tmp_path):
    code = "<div class='highlight'><pre style='overflow-x:auto;white-space:pre'>" + "x = 1  # " * 60 + "</pre></div>"
    assert kinds(tmp_path, GOOD + code) == ["cut off inside a scrolled box"]


def test_an_image_without_a_caption_is_found(tmp_path):
    assert kinds(tmp_path, GOOD + '<p><img src="x.png" width="10" height="10"></p>') == ["image without a caption"]


def test_a_warning_output_and_a_local_path_are_found(tmp_path):
    stderr = "<div class='output stderr'><pre>/home/me/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning</pre></div>"
    assert kinds(tmp_path, GOOD + stderr) == ["error or warning output", "path of the build machine"]


def test_text_spilling_out_of_a_table_cell_is_found(tmp_path):
    table = ("<table style='table-layout:fixed;width:300px'><colgroup><col style='width:50%'><col style='width:50%'></colgroup>"
             "<tr><td style='white-space:nowrap;overflow:visible'>100.0 (98.7–100.0) and more text</td><td>b</td></tr></table>")
    assert kinds(tmp_path, GOOD + table) == ["text spills out of a table cell"]
