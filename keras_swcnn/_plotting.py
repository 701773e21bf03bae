"""matplotlib's pyplot on its file-only backend, for the PNGs this package writes.

Example:
    >>> plt = pyplot("plot_densities")  # doctest: +SKIP
"""


def pyplot(caller):
    """``matplotlib.pyplot`` with the ``Agg`` backend (no display needed); a clear error without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(f"{caller} needs matplotlib: pip install matplotlib") from error
    return plt
