"""How a chapter presents what it computed: quiet libraries, figures sized for the page, numbered tables.

Every chapter starts with :func:`setup_chapter`. Tables go through :func:`numbered_table`, which
renders a frame as a MyST ``{table}`` with a caption and a label (the book renders Markdown
outputs as MyST), so prose refers to "Table 3" by ``{numref}`` instead of "the table above".
Figures are glued and placed with ``{glue:figure}`` for the same reason.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from workings.config.schema import Profile
from workings.report.tables import markdown_table

# Figures are drawn at the width of the book's text column (about 750 px at 1280 px wide).
PAGE_WIDTH_INCHES = 7.0
FIGURE_STYLE = {
    "figure.figsize": (PAGE_WIDTH_INCHES, 3.2),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 10,
}


def quiet_libraries() -> None:
    """Nothing on standard error while a chapter runs: no progress bars from transformers (weights)
    or datasets (map, filter), and no tqdm warning that a notebook has no widget library."""
    from tqdm import TqdmExperimentalWarning, TqdmWarning

    warnings.filterwarnings("ignore", category=TqdmWarning)
    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def setup_chapter() -> Profile:
    """Quiet libraries, page-sized figures and plain tables; the profile this build runs."""
    import matplotlib

    from workings.config.loading import active_profile

    quiet_libraries()
    matplotlib.rcParams.update(FIGURE_STYLE)
    pd.set_option("display.max_colwidth", 60)
    return active_profile()


def numbered_table(table: pd.DataFrame, caption: str, name: str, *, wrap: bool = False) -> Any:
    """``table`` as a numbered MyST table with ``caption``, referable as ``{numref}`name```.

    Cells keep a number and its interval on one line; ``wrap`` lets text cells (questions,
    replies) wrap instead.
    """
    from IPython.display import Markdown

    options = f":name: {name}\n" + (":class: wrap\n" if wrap else "")
    # A tilde fence: a caption may quote code in backticks, which a backtick fence's info string cannot hold.
    return Markdown(f"~~~{{table}} {caption}\n{options}\n{markdown_table(table)}\n~~~")


def glued_figure(name: str, fig: Any) -> None:
    """Glue a figure for a ``{glue:figure}`` with a caption, and close it so the cell shows nothing."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)
