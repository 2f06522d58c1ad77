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


def test_a_typographic_dash_in_a_command_is_found_and_one_in_an_output_is_not(tmp_path):
    command = "<div class='highlight-console'><pre>$ workings train \u2013profile a100-bf16</pre></div>"
    output = "<div class='cell_output'><pre>accuracy 74.8\u201383.8</pre></div>"
    assert kinds(tmp_path, GOOD + output) == []
    assert kinds(tmp_path, GOOD + command) == ["non-ASCII dash or quote in code"]
    assert kinds(tmp_path, GOOD + "<p>Run <code>workings export \u2014to x</code>.</p>") == ["non-ASCII dash or quote in code"]


def test_an_index_header_and_a_float_with_too_many_decimals_are_found(tmp_path):
    table = "<table><tr><th>index</th><th>loss</th></tr><tr><td>train_loss</td><td>0.5026001099497079</td></tr></table>"
    assert kinds(tmp_path, GOOD + table) == ["a number printed with more than 6 decimals", "an index column header"]
    fine = "<table><tr><th>model</th><th>loss</th></tr><tr><td>SFT</td><td>0.503</td></tr></table>"
    assert kinds(tmp_path, GOOD + fine) == []


def test_a_word_broken_across_lines_in_a_narrow_cell_is_found(tmp_path):
    narrow = ("<table style='table-layout:fixed;width:120px'><tr><td style='width:12px;overflow-wrap:anywhere'>False</td>"
              "<td>synthetic data</td></tr></table>")
    assert kinds(tmp_path, GOOD + narrow) == ["a word broken inside a table cell"]
    wrapped = "<table style='width:120px'><tr><td style='width:60px'>two words wrap here</td></tr></table>"
    assert kinds(tmp_path, GOOD + wrapped) == []


def test_tables_numbered_across_the_book_are_found(tmp_path):
    caption = "<table><caption><span class='caption-number'>Table {} </span>a table</caption><tr><td>1</td></tr></table>"
    assert kinds(tmp_path, GOOD + caption.format(44)) == ["table numbers do not start at 1 on this page"]
    assert kinds(tmp_path, GOOD + caption.format(1) + caption.format(2)) == []
    assert kinds(tmp_path, GOOD + caption.format("5.1")) == []
