"""kdcore: the kdflow library. All maths and file I/O live here; it never imports prefect or dvc."""

__version__ = "0.1.0"
